//! Graph files: `name`, `state`, `entry`, `nodes`, `edges`, `limits`, `output`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crewgraph_engine::graph::{Condition, Limits};
use crewgraph_engine::{ChannelSpec, Graph, GraphBuilder, NodeSpec, Reducer, RetryPolicy};
use serde_json::{Map, Value};

use crate::catalog::Catalog;
use crate::error::{SpecError, SpecErrors};
use crate::nodes::{BuildCtx, Registry};
use crate::template::Expr;
use crate::yaml::{self, Fields, Kind, Loc, Yaml};

const TYPES: &[&str] = &["string", "number", "integer", "boolean", "array", "object", "any"];

/// A compiled graph definition with what the engine graph does not carry.
#[derive(Clone)]
pub struct GraphDef {
    pub graph: Arc<Graph>,
    pub file: String,
    pub description: Option<String>,
    /// Inputs a run must give (a crew's placeholders without a default).
    pub required_inputs: Vec<String>,
    /// Things accepted but ignored (fields of CrewAI's format that do nothing here).
    pub warnings: Vec<SpecError>,
}

impl GraphDef {
    /// Checks a run's input against the declared channels and their types;
    /// the error names the offending key.
    pub fn validate_input(&self, input: &Map<String, Value>) -> Result<(), String> {
        if let Some(missing) = self.required_inputs.iter().find(|k| !input.contains_key(*k)) {
            return Err(format!(
                "input.{missing}: required (the definition uses `{{{missing}}}`), e.g. --input {missing}=..."
            ));
        }
        for (k, v) in input {
            let Some(ch) = self.graph.channel(k) else {
                let names: Vec<&str> = self.graph.channels.iter().map(|c| c.name.as_str()).collect();
                return Err(format!("input.{k}: unknown channel (declared: {})", names.join(", ")));
            };
            if let Some(t) = &ch.r#type
                && !type_matches(t, v)
            {
                return Err(format!("input.{k}: expected {t}, got {}", crewgraph_engine::channel::kind_of(v)));
            }
        }
        Ok(())
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

/// Reads and compiles a graph file.
pub fn load_graph_file(path: &Path, registry: &Registry, catalog: Option<&Catalog>) -> Result<GraphDef, SpecErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::at(&file, Loc { line: 1, column: 1 }, format!("cannot read the file: {e}")))?;
    parse_graph(&file, &text, registry, catalog, 0)
}

/// Compiles graph YAML. `file` is used in error locations.
pub fn parse_graph(
    file: &str,
    text: &str,
    registry: &Registry,
    catalog: Option<&Catalog>,
    depth: u32,
) -> Result<GraphDef, SpecErrors> {
    let root = yaml::parse(file, text)?;
    if root.get("tasks").is_some() && root.get("nodes").is_none() {
        return crate::crew::compile(file, &root, registry);
    }
    let mut f = Fields::new(file, &root, "the graph")?;
    let name = f.req_str("name")?.to_string();
    let description = f.opt_str("description")?.map(str::to_string);

    let mut builder = GraphBuilder::new(&name);
    let channels = read_channels(&mut f)?;
    let channel_names: BTreeSet<String> = channels.iter().map(|c| c.name.clone()).collect();
    for c in channels {
        builder = builder.channel(c);
    }

    let entry_at = f.req("entry")?;
    for e in f.opt_strings("entry")?.unwrap_or_default() {
        builder = builder.entry(&e);
    }
    if let Some(out) = f.opt_strings("output")? {
        if let Some(bad) = out.iter().find(|o| !channel_names.contains(*o)) {
            let at = root.get("output").unwrap_or(&root);
            return Err(f.err(at, format!("`output` names unknown channel `{bad}`")).into());
        }
        builder = builder.output(out);
    }
    builder = builder.limits(read_limits(&mut f)?);

    let mut errors = Vec::new();
    let mut node_locs: Vec<(String, Loc)> = Vec::new();
    let nodes = f.req("nodes")?;
    let entries = nodes.entries().ok_or_else(|| {
        f.err(nodes, format!("`nodes`: expected a mapping of node name to node, found {}", nodes.type_name()))
    })?;
    let mut tools = std::collections::BTreeMap::new();
    if let Some(section) = f.opt("tools") {
        let entries =
            section.entries().ok_or_else(|| f.err(section, "`tools`: expected a mapping of tool name to tool"))?;
        for (key, decl) in entries {
            let declared = if decl.get("retrieve").is_some() {
                crate::retrieve::declare_tool(file, &key.name, decl, registry.memory())
            } else {
                crate::http_tool::declare(file, &key.name, decl, &channel_names)
            };
            match declared {
                Ok(t) => {
                    tools.insert(key.name.clone(), t);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let models = match f.opt("models") {
        Some(section) => match crate::models::read(file, section) {
            Ok(m) => m,
            Err(e) => {
                errors.push(e);
                Default::default()
            }
        },
        None => Default::default(),
    };
    let ctx = BuildCtx { file, channels: &channel_names, registry, catalog, depth, tools: &tools, models: &models };
    for (key, decl) in entries {
        node_locs.push((key.name.clone(), key.loc));
        match read_node(&key.name, decl, &ctx) {
            Ok(spec) => builder = builder.node(spec),
            Err(e) => errors.push(e),
        }
    }

    let mut edge_locs = Vec::new();
    if let Some(edges) = f.opt("edges") {
        let Kind::Seq(items) = &edges.kind else {
            return Err(f
                .err(edges, format!("`edges`: expected a list of {{from, to, when}}, found {}", edges.type_name()))
                .into());
        };
        for item in items {
            edge_locs.push(item.loc);
            match read_edge(file, item, &channel_names) {
                Ok((from, to, Some(cond))) => builder = builder.conditional_edge(&from, &to, cond),
                Ok((from, to, None)) => builder = builder.edge(&from, &to),
                Err(e) => errors.push(e),
            }
        }
    }
    if let Err(e) = f.finish() {
        errors.push(e);
    }
    if !errors.is_empty() {
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(SpecErrors(errors));
    }
    let graph = builder.build().map_err(|structural| {
        SpecErrors(
            structural
                .into_iter()
                .map(|s| {
                    let loc = s
                        .edge
                        .and_then(|i| edge_locs.get(i).copied())
                        .or_else(|| {
                            s.node.as_ref().and_then(|n| node_locs.iter().find(|(k, _)| k == n).map(|(_, l)| *l))
                        })
                        .unwrap_or(entry_at.loc);
                    SpecError::at(file, loc, s.message)
                })
                .collect(),
        )
    })?;
    Ok(GraphDef {
        graph: Arc::new(graph),
        file: file.to_string(),
        description,
        required_inputs: vec![],
        warnings: vec![],
    })
}

fn read_channels(f: &mut Fields<'_>) -> Result<Vec<ChannelSpec>, SpecError> {
    let Some(state) = f.opt("state") else {
        return Ok(vec![]);
    };
    let entries = state.entries().ok_or_else(|| {
        f.err(
            state,
            format!(
                "`state`: expected a mapping of channel name to {{type, reducer, default}}, found {}",
                state.type_name()
            ),
        )
    })?;
    let mut out = Vec::new();
    for (key, decl) in entries {
        let mut spec = ChannelSpec::new(&key.name, Reducer::Replace);
        match &decl.kind {
            Kind::Null => {}
            Kind::Str(t) => spec.r#type = Some(check_type(f, decl, t)?),
            Kind::Map(_) => {
                let what = format!("channel `{}`", key.name);
                let mut c = Fields::new(f.file, decl, &what)?;
                if let Some(t) = c.opt_str("type")? {
                    spec.r#type = Some(check_type(f, decl, t)?);
                }
                if let Some(r) = c.opt("reducer") {
                    let name = r.as_str().unwrap_or_default();
                    spec.reducer = Reducer::parse(name).ok_or_else(|| {
                        c.err(
                            r,
                            format!(
                                "unknown reducer `{name}` (expected one of: replace, append, messages, merge, sum, max)"
                            ),
                        )
                    })?;
                }
                spec.default = c.opt("default").map(Yaml::to_json);
                c.opt("description");
                c.finish()?;
            }
            _ => {
                return Err(f.err(
                    decl,
                    format!("channel `{}`: expected a type name or a mapping, found {}", key.name, decl.type_name()),
                ));
            }
        }
        out.push(spec);
    }
    Ok(out)
}

fn check_type(f: &Fields<'_>, at: &Yaml, t: &str) -> Result<String, SpecError> {
    if TYPES.contains(&t) {
        Ok(t.to_string())
    } else {
        Err(f.err(at, format!("unknown type `{t}` (expected one of: {})", TYPES.join(", "))))
    }
}

fn read_limits(f: &mut Fields<'_>) -> Result<Limits, SpecError> {
    let mut limits = Limits::default();
    if let Some(l) = f.opt("limits") {
        let mut lf = Fields::new(f.file, l, "`limits`")?;
        if let Some(m) = lf.opt_u64("max_steps")? {
            limits.max_steps = m.min(u32::MAX as u64) as u32;
        }
        limits.deadline = lf.opt_f64("deadline_s")?.map(Duration::from_secs_f64);
        lf.finish()?;
    }
    Ok(limits)
}

fn read_node(name: &str, decl: &Yaml, ctx: &BuildCtx<'_>) -> Result<NodeSpec, SpecError> {
    let what = format!("node `{name}`");
    let mut f = Fields::new(ctx.file, decl, &what)?;
    let kind = f.req("kind")?;
    f.opt_str("description")?;
    let retry = read_retry(&mut f)?;
    let timeout = f.opt_f64("timeout_s")?.map(Duration::from_secs_f64);
    let interrupt_before = f.opt_bool("interrupt_before")?.unwrap_or(false);
    let interrupt_after = f.opt_bool("interrupt_after")?.unwrap_or(false);
    let built = ctx.registry.build(kind, &mut f, ctx)?;
    f.finish()?;
    let mut spec = NodeSpec::new(name, built.node);
    spec.retry = retry;
    spec.timeout = timeout;
    spec.interrupt_before = interrupt_before;
    spec.interrupt_after = interrupt_after;
    spec.may_goto = built.may_goto;
    Ok(spec)
}

fn read_retry(f: &mut Fields<'_>) -> Result<RetryPolicy, SpecError> {
    let mut p = RetryPolicy::default();
    if let Some(r) = f.opt("retry") {
        let mut rf = Fields::new(f.file, r, "`retry`")?;
        if let Some(n) = rf.opt_u64("max_attempts")? {
            p.max_attempts = n.clamp(1, 100) as u32;
        }
        if let Some(ms) = rf.opt_u64("backoff_ms")? {
            p.initial_backoff_ms = ms;
        }
        if let Some(ms) = rf.opt_u64("max_backoff_ms")? {
            p.max_backoff_ms = ms;
        }
        if let Some(m) = rf.opt_f64("multiplier")? {
            p.multiplier = m;
        }
        if let Some(j) = rf.opt_bool("jitter")? {
            p.jitter = j;
        }
        if let Some(all) = rf.opt_bool("retry_all")? {
            p.retry_all = all;
        }
        rf.finish()?;
    }
    Ok(p)
}

type ReadEdge = (String, String, Option<Arc<dyn Condition>>);

fn read_edge(file: &str, item: &Yaml, channels: &BTreeSet<String>) -> Result<ReadEdge, SpecError> {
    let mut f = Fields::new(file, item, "edge")?;
    let from = f.req_str("from")?.to_string();
    let to = f.req_str("to")?.to_string();
    let cond: Option<Arc<dyn Condition>> = match f.opt("when") {
        None => None,
        Some(w) => {
            let src = w
                .as_str()
                .ok_or_else(|| f.err(w, "`when`: expected a condition such as \"state.review.action == 'approve'\""))?;
            Some(Arc::new(Expr::compile(src, channels).map_err(|m| f.err(w, m))?))
        }
    };
    f.finish()?;
    Ok((from, to, cond))
}
