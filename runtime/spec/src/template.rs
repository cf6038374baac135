//! Templates and conditions in minijinja: `{{ state.topic }}` in values,
//! `state.review.action == 'approve'` in `when:`. One environment, strict
//! about undefined names so a typo fails loudly instead of rendering empty.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use crewgraph_engine::graph::Condition;

/// Names a template may use besides `state`.
pub const SCOPE: &[&str] = &["state", "item", "index", "resume", "result", "args"];

pub fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env
    })
}

/// The variables a template or condition sees.
#[derive(Debug, Default, Clone)]
pub struct Scope<'a> {
    pub state: Option<&'a Arc<Value>>,
    pub item: Option<&'a Value>,
    pub index: Option<u32>,
    pub resume: Option<&'a Value>,
    pub result: Option<&'a Value>,
    /// A tool's arguments, in an HTTP tool's URL.
    pub args: Option<&'a Value>,
}

impl<'a> Scope<'a> {
    /// What a running task's templates see: the state, its fan-out item and index,
    /// and the decision it resumes with.
    pub fn of_task(ctx: &'a crewgraph_engine::NodeContext) -> Self {
        Scope {
            state: Some(&ctx.state),
            item: ctx.input.as_ref(),
            index: Some(ctx.index),
            resume: ctx.resume.as_ref(),
            ..Default::default()
        }
    }

    fn context(&self) -> minijinja::Value {
        let json = |v: &Value| minijinja::Value::from(minijinja::value::Serde(v));
        let empty = Arc::new(Value::Object(Map::new()));
        let state = self.state.cloned().unwrap_or(empty);
        let mut pairs: Vec<(&str, minijinja::Value)> = vec![("state", LazyJson::wrap(state, Vec::new()))];
        if let Some(i) = self.item {
            pairs.push(("item", json(i)));
        }
        if let Some(i) = self.index {
            pairs.push(("index", minijinja::Value::from(i)));
        }
        if let Some(r) = self.resume {
            pairs.push(("resume", json(r)));
        }
        if let Some(r) = self.result {
            pairs.push(("result", json(r)));
        }
        if let Some(a) = self.args {
            pairs.push(("args", json(a)));
        }
        minijinja::Value::from(pairs.into_iter().collect::<std::collections::BTreeMap<_, _>>())
    }
}

/// A view of the JSON state that templates read without converting it: only
/// the values a template touches are turned into template values, so a step's
/// templating cost does not grow with a long `messages` history.
#[derive(Debug)]
struct LazyJson {
    root: Arc<Value>,
    path: Vec<PathStep>,
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

impl LazyJson {
    fn wrap(root: Arc<Value>, path: Vec<PathStep>) -> minijinja::Value {
        let node = Self::walk(&root, &path);
        match node {
            Some(Value::Object(_)) | Some(Value::Array(_)) => minijinja::Value::from_object(LazyJson { root, path }),
            Some(scalar) => minijinja::Value::from(minijinja::value::Serde(scalar)),
            None => minijinja::Value::UNDEFINED,
        }
    }

    fn walk<'v>(root: &'v Value, path: &[PathStep]) -> Option<&'v Value> {
        path.iter().try_fold(root, |v, step| match step {
            PathStep::Key(k) => v.get(k.as_str()),
            PathStep::Index(i) => v.get(*i),
        })
    }

    fn node(&self) -> &Value {
        Self::walk(&self.root, &self.path).unwrap_or(&Value::Null)
    }

    fn child(&self, step: PathStep) -> minijinja::Value {
        let mut path = self.path.clone();
        path.push(step);
        Self::wrap(self.root.clone(), path)
    }
}

impl minijinja::value::Object for LazyJson {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        match self.node() {
            Value::Array(_) => minijinja::value::ObjectRepr::Seq,
            _ => minijinja::value::ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        match self.node() {
            Value::Object(m) => {
                let k = key.as_str()?;
                m.contains_key(k).then(|| self.child(PathStep::Key(k.to_string())))
            }
            Value::Array(items) => {
                let i = key.as_i64()?;
                let i = if i < 0 { items.len() as i64 + i } else { i };
                (0..items.len() as i64).contains(&i).then(|| self.child(PathStep::Index(i as usize)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        match self.node() {
            Value::Object(m) => {
                minijinja::value::Enumerator::Values(m.keys().map(|k| minijinja::Value::from(k.as_str())).collect())
            }
            Value::Array(items) => minijinja::value::Enumerator::Seq(items.len()),
            _ => minijinja::value::Enumerator::Empty,
        }
    }
}

/// A compile error or an undeclared reference, with a message for the author.
fn check_references(
    vars: impl IntoIterator<Item = String>,
    channels: &BTreeSet<String>,
    extra: &[&str],
) -> Result<(), String> {
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        if root == "state" {
            if let Some(ch) = parts.next()
                && !channels.contains(ch)
            {
                let known: Vec<&str> = channels.iter().map(String::as_str).collect();
                return Err(format!(
                    "references `state.{ch}`, but the state has no channel `{ch}` (channels: {})",
                    known.join(", ")
                ));
            }
        } else if !SCOPE.contains(&root) && !extra.contains(&root) {
            return Err(format!("references unknown variable `{root}` (available: state, item, index, resume)"));
        }
    }
    Ok(())
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.to_string(),
    }
}

/// A `when:` condition: a minijinja expression evaluated for truthiness.
pub struct Expr {
    source: String,
}

impl Expr {
    /// Compiles and checks that every `state.X` it reads is a declared channel.
    pub fn compile(source: &str, channels: &BTreeSet<String>) -> Result<Self, String> {
        let expr =
            env().compile_expression(source).map_err(|e| format!("invalid condition `{source}`: {}", describe(&e)))?;
        check_references(expr.undeclared_variables(true), channels, &[])
            .map_err(|m| format!("condition `{source}` {m}"))?;
        Ok(Self { source: source.to_string() })
    }

    pub fn eval(&self, scope: &Scope) -> Result<Value, String> {
        let expr = env().compile_expression(&self.source).map_err(|e| describe(&e))?;
        let v = expr.eval(scope.context()).map_err(|e| format!("`{}`: {}", self.source, describe(&e)))?;
        serde_json::to_value(&v).map_err(|e| e.to_string())
    }
}

impl Condition for Expr {
    fn eval(&self, state: &Arc<Value>) -> Result<bool, String> {
        let expr = env().compile_expression(&self.source).map_err(|e| describe(&e))?;
        let v = expr
            .eval(Scope { state: Some(state), ..Default::default() }.context())
            .map_err(|e| format!("`{}`: {}", self.source, describe(&e)))?;
        Ok(v.is_true())
    }

    fn source(&self) -> &str {
        &self.source
    }
}

/// A JSON value whose strings may be templates. A string that is exactly one
/// `{{ expression }}` keeps the expression's type (a number stays a number);
/// other strings with `{{` render to text.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueTemplate {
    Literal(Value),
    Expr(String),
    Text(String),
    List(Vec<ValueTemplate>),
    Object(Vec<(String, ValueTemplate)>),
}

fn single_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

impl ValueTemplate {
    /// Compiles every template in `value`, checking references against `channels`.
    pub fn compile(value: &Value, channels: &BTreeSet<String>) -> Result<Self, String> {
        Ok(match value {
            Value::String(s) if s.contains("{{") || s.contains("{%") => match single_expression(s) {
                Some(e) => {
                    let expr = env()
                        .compile_expression(e)
                        .map_err(|err| format!("invalid template `{s}`: {}", describe(&err)))?;
                    check_references(expr.undeclared_variables(true), channels, &[])
                        .map_err(|m| format!("template `{s}` {m}"))?;
                    ValueTemplate::Expr(e.to_string())
                }
                None => {
                    let t = env()
                        .template_from_str(s)
                        .map_err(|err| format!("invalid template `{s}`: {}", describe(&err)))?;
                    check_references(t.undeclared_variables(true), channels, &[])
                        .map_err(|m| format!("template `{s}` {m}"))?;
                    ValueTemplate::Text(s.clone())
                }
            },
            Value::Array(items) => {
                ValueTemplate::List(items.iter().map(|i| Self::compile(i, channels)).collect::<Result<_, _>>()?)
            }
            Value::Object(m) => ValueTemplate::Object(
                m.iter().map(|(k, v)| Ok((k.clone(), Self::compile(v, channels)?))).collect::<Result<_, String>>()?,
            ),
            other => ValueTemplate::Literal(other.clone()),
        })
    }

    pub fn render(&self, scope: &Scope) -> Result<Value, String> {
        Ok(match self {
            ValueTemplate::Literal(v) => v.clone(),
            ValueTemplate::Expr(e) => {
                let expr = env().compile_expression(e).map_err(|err| describe(&err))?;
                let v = expr.eval(scope.context()).map_err(|err| format!("`{{{{ {e} }}}}`: {}", describe(&err)))?;
                if v.is_undefined() { Value::Null } else { serde_json::to_value(&v).map_err(|err| err.to_string())? }
            }
            ValueTemplate::Text(t) => {
                Value::String(env().render_str(t, scope.context()).map_err(|err| format!("`{t}`: {}", describe(&err)))?)
            }
            ValueTemplate::List(items) => {
                Value::Array(items.iter().map(|i| i.render(scope)).collect::<Result<_, _>>()?)
            }
            ValueTemplate::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| Ok((k.clone(), v.render(scope)?))).collect::<Result<_, String>>()?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channels(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn single_expressions_keep_their_type_and_text_renders() {
        let ch = channels(&["count", "topic"]);
        let t = ValueTemplate::compile(&json!({"n": "{{ state.count + 1 }}", "s": "About {{ state.topic }}!"}), &ch)
            .unwrap();
        let state = Arc::new(json!({"count": 2, "topic": "cats"}));
        let out = t.render(&Scope { state: Some(&state), ..Default::default() }).unwrap();
        assert_eq!(out, json!({"n": 3, "s": "About cats!"}));
    }

    #[test]
    fn missing_channels_and_unknown_names_are_caught_at_compile_time() {
        let ch = channels(&["review"]);
        let e = Expr::compile("state.reviw.action == 'approve'", &ch).err().unwrap();
        assert!(e.contains("no channel `reviw`"), "{e}");
        assert!(Expr::compile("state.review.action == 'approve'", &ch).is_ok());
        let e = ValueTemplate::compile(&json!("{{ stat.review }}"), &ch).unwrap_err();
        assert!(e.contains("unknown variable `stat`"), "{e}");
        assert!(Expr::compile("state.review ==", &ch).is_err());
    }

    #[test]
    fn templates_read_nested_state_lists_and_filters() {
        let ch = channels(&["log", "review", "nothing"]);
        let state = Arc::new(json!({"log": ["a", "b"], "review": {"action": "edit", "value": 3}, "nothing": null}));
        let scope = Scope { state: Some(&state), ..Default::default() };
        let t = |src: &str| ValueTemplate::compile(&json!(src), &ch).unwrap().render(&scope).unwrap();
        assert_eq!(t("{{ state.log | length }}"), json!(2));
        assert_eq!(t("{{ state.log | join('+') }}"), json!("a+b"));
        assert_eq!(t("{{ state.log[-1] }}"), json!("b"));
        assert_eq!(t("{{ state.review.value * 2 }}"), json!(6));
        assert_eq!(t("{{ state.review }}"), json!({"action": "edit", "value": 3}));
        assert_eq!(t("{{ 'yes' if state.nothing else 'no' }}"), json!("no"));
        assert_eq!(t("{% for x in state.log %}{{ x }}{% endfor %}"), json!("ab"));
        assert!(
            Condition::eval(&Expr::compile("state.review.action in ['edit', 'approve']", &ch).unwrap(), &state)
                .unwrap()
        );
    }

    #[test]
    fn conditions_are_truthy() {
        let e = Expr::compile("state.n > 2", &channels(&["n"])).unwrap();
        assert!(Condition::eval(&e, &Arc::new(json!({"n": 3}))).unwrap());
        assert!(!Condition::eval(&e, &Arc::new(json!({"n": 1}))).unwrap());
    }
}
