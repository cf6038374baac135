//! A YAML tree in which every node knows its line and column, so errors found
//! after parsing (unknown node names, bad conditions) can still point at the
//! text that caused them.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::error::SpecError;

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Vec<(Key, Yaml)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Yaml {
    pub loc: Loc,
    pub kind: Kind,
}

struct RawKind(Kind);

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor).map(RawKind)
    }
}

fn located(s: Spanned<RawKind>) -> Yaml {
    let loc = Loc { line: s.referenced.line(), column: s.referenced.column() };
    Yaml { loc, kind: s.value.0 }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Kind, E> {
        Ok(i64::try_from(v).map(Kind::Int).unwrap_or(Kind::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawKind>>()? {
            items.push(located(item));
        }
        Ok(Kind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries: Vec<(Key, Yaml)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKind>>()? {
            let key = located(key);
            let name = match &key.kind {
                Kind::Str(s) => s.clone(),
                Kind::Int(i) => i.to_string(),
                Kind::Bool(b) => b.to_string(),
                Kind::Float(f) => f.to_string(),
                Kind::Null => "null".to_string(),
                _ => {
                    return Err(de::Error::custom(format!("line {}: a mapping key must be a scalar", key.loc.line)));
                }
            };
            if entries.iter().any(|(k, _)| k.name == name) {
                return Err(de::Error::custom(format!("duplicate key `{name}` at line {}", key.loc.line)));
            }
            let value = located(map.next_value::<Spanned<RawKind>>()?);
            entries.push((Key { name, loc: key.loc }, value));
        }
        Ok(Kind::Map(entries))
    }
}

/// Parses YAML text into a located tree; syntax errors carry their position.
pub fn parse(file: &str, text: &str) -> Result<Yaml, SpecError> {
    if text.trim().is_empty() {
        return Err(SpecError::at(file, Loc { line: 1, column: 1 }, "the file is empty; expected a YAML mapping"));
    }
    // YAML 1.2 booleans only: a node called `n` or `on` stays a string.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    match serde_saphyr::from_str_with_options::<Spanned<RawKind>>(text, options) {
        Ok(v) => Ok(located(v)),
        Err(e) => {
            let loc =
                e.location().map(|l| Loc { line: l.line(), column: l.column() }).unwrap_or(Loc { line: 1, column: 1 });
            let msg = e.to_string();
            // The rendered error may include a source snippet; the first line is the message.
            let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid YAML").trim();
            let first = first.trim_start_matches("error: ");
            Err(SpecError::at(file, loc, format!("invalid YAML: {first}")))
        }
    }
}

impl Yaml {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn entries(&self) -> Option<&[(Key, Yaml)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.entries()?.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The plain JSON value of this subtree.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map(Value::Number).unwrap_or(Value::Null),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Yaml::to_json).collect()),
            Kind::Map(m) => Value::Object(m.iter().map(|(k, v)| (k.name.clone(), v.to_json())).collect()),
        }
    }
}

/// Reads a mapping field by field, and reports keys nobody asked for.
pub struct Fields<'a> {
    pub file: &'a str,
    pub node: &'a Yaml,
    what: &'a str,
    used: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// `what` names the mapping in messages ("node `draft`", "the graph").
    pub fn new(file: &'a str, node: &'a Yaml, what: &'a str) -> Result<Self, SpecError> {
        if node.entries().is_none() {
            return Err(SpecError::at(
                file,
                node.loc,
                format!("{what}: expected a mapping, found {}", node.type_name()),
            ));
        }
        Ok(Self { file, node, what, used: Vec::new() })
    }

    pub fn err(&self, at: &Yaml, message: impl Into<String>) -> SpecError {
        SpecError::at(self.file, at.loc, message)
    }

    pub fn opt(&mut self, key: &'a str) -> Option<&'a Yaml> {
        self.used.push(key);
        self.node.get(key)
    }

    pub fn req(&mut self, key: &'a str) -> Result<&'a Yaml, SpecError> {
        self.opt(key).ok_or_else(|| {
            SpecError::at(self.file, self.node.loc, format!("{}: missing required key `{key}`", self.what))
        })
    }

    pub fn opt_str(&mut self, key: &'a str) -> Result<Option<&'a str>, SpecError> {
        match self.opt(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(v, format!("`{key}`: expected a string, found {}", v.type_name()))),
        }
    }

    pub fn req_str(&mut self, key: &'a str) -> Result<&'a str, SpecError> {
        let v = self.req(key)?;
        v.as_str().ok_or_else(|| self.err(v, format!("`{key}`: expected a string, found {}", v.type_name())))
    }

    pub fn opt_bool(&mut self, key: &'a str) -> Result<Option<bool>, SpecError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Yaml { kind: Kind::Bool(b), .. }) => Ok(Some(*b)),
            Some(v) => Err(self.err(v, format!("`{key}`: expected true or false, found {}", v.type_name()))),
        }
    }

    pub fn opt_u64(&mut self, key: &'a str) -> Result<Option<u64>, SpecError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Yaml { kind: Kind::Int(i), .. }) if *i >= 0 => Ok(Some(*i as u64)),
            Some(v) => Err(self.err(v, format!("`{key}`: expected a non-negative integer, found {}", v.type_name()))),
        }
    }

    pub fn opt_f64(&mut self, key: &'a str) -> Result<Option<f64>, SpecError> {
        match self.opt(key) {
            None => Ok(None),
            Some(Yaml { kind: Kind::Int(i), .. }) if *i >= 0 => Ok(Some(*i as f64)),
            Some(Yaml { kind: Kind::Float(f), .. }) if *f >= 0.0 => Ok(Some(*f)),
            Some(v) => Err(self.err(v, format!("`{key}`: expected a non-negative number, found {}", v.type_name()))),
        }
    }

    /// A string or a list of strings.
    pub fn opt_strings(&mut self, key: &'a str) -> Result<Option<Vec<String>>, SpecError> {
        let Some(v) = self.opt(key) else {
            return Ok(None);
        };
        match &v.kind {
            Kind::Str(s) => Ok(Some(vec![s.clone()])),
            Kind::Seq(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| self.err(i, format!("`{key}`: expected a string, found {}", i.type_name())))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => Err(self.err(v, format!("`{key}`: expected a string or a list of strings, found {}", v.type_name()))),
        }
    }

    /// Errors for every key that no reader asked for, naming the keys that are valid.
    pub fn finish(self) -> Result<(), SpecError> {
        for (k, _) in self.node.entries().unwrap_or_default() {
            if !self.used.contains(&k.name.as_str()) {
                let mut valid: Vec<&str> = self.used.clone();
                valid.sort();
                valid.dedup();
                return Err(SpecError::at(
                    self.file,
                    k.loc,
                    format!("{}: unknown key `{}` (expected one of: {})", self.what, k.name, valid.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_has_its_location() {
        let y = parse("f.yaml", "a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
        let b = y.get("b").unwrap();
        assert_eq!(b.loc.line, 3);
        let Kind::Seq(items) = &b.kind else { panic!("not a seq") };
        assert_eq!((items[1].loc.line, items[1].loc.column), (4, 5));
        assert_eq!(y.entries().unwrap()[1].0.loc, Loc { line: 2, column: 1 });
        assert_eq!(y.to_json(), serde_json::json!({"a": 1, "b": ["x", {"c": true}]}));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let y = parse("f.yaml", "a: n\nb: on\nc: yes\nd: true\n").unwrap();
        assert_eq!(y.to_json(), serde_json::json!({"a": "n", "b": "on", "c": "yes", "d": true}));
    }

    #[test]
    fn syntax_errors_point_at_the_text() {
        let e = parse("g.yaml", "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(e.file, "g.yaml");
        assert!(e.line >= 2, "{e}");
        assert!(e.message.starts_with("invalid YAML"), "{e}");
    }
}
