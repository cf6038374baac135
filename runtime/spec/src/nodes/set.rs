//! `set`: writes rendered values to channels, optionally choosing where to go next.

use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput};
use serde_json::{Map, Value};

use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::{Fields, Kind};

pub struct SetNode {
    values: Vec<(String, ValueTemplate)>,
    goto: Option<ValueTemplate>,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let mut values = Vec::new();
    if let Some(v) = f.opt("values") {
        let entries = v.entries().ok_or_else(|| {
            f.err(v, format!("`values`: expected a mapping of channel to value, found {}", v.type_name()))
        })?;
        for (k, val) in entries {
            if !ctx.channels.contains(&k.name) {
                return Err(SpecError::at(f.file, k.loc, format!("`values` writes unknown channel `{}`", k.name)));
            }
            values.push((k.name.clone(), template(f, val, ctx.channels)?));
        }
    }
    let mut may_goto = Vec::new();
    let goto = match f.opt("goto") {
        None => None,
        Some(g) => {
            // Literal names, and quoted strings inside templates, are the possible targets.
            match &g.kind {
                Kind::Str(s) if !s.contains("{{") => may_goto.push(s.clone()),
                _ => {
                    for v in g.to_json().as_array().cloned().unwrap_or_else(|| vec![g.to_json()]) {
                        let text = v.as_str().unwrap_or_default();
                        may_goto.extend(text.split('\'').skip(1).step_by(2).map(str::to_string));
                    }
                }
            }
            Some(template(f, g, ctx.channels)?)
        }
    };
    Ok(BuiltNode { node: Arc::new(SetNode { values, goto }), may_goto })
}

#[async_trait]
impl Node for SetNode {
    fn kind(&self) -> &str {
        "set"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let scope = Scope::of_task(&ctx);
        let mut writes = Map::new();
        for (channel, t) in &self.values {
            writes.insert(channel.clone(), t.render(&scope).map_err(NodeError::fatal)?);
        }
        let goto = match &self.goto {
            None => None,
            Some(t) => Some(match t.render(&scope).map_err(NodeError::fatal)? {
                Value::String(s) => vec![s],
                Value::Array(items) => {
                    items.into_iter().map(|v| v.as_str().map(str::to_string).unwrap_or_default()).collect()
                }
                other => {
                    return Err(NodeError::fatal(format!(
                        "`goto` rendered to {other}, expected a node name or a list of names"
                    )));
                }
            }),
        };
        Ok(NodeOutput::Writes { writes, goto })
    }
}
