//! `map`: fan-out. One task per item of a list (LangGraph's `Send`); each
//! task runs the inline `node` with `item` and `index`, and their writes
//! reduce into the channels they write (use an `append` channel to collect).

use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput};
use serde_json::Value;

use super::{BuildCtx, BuiltNode};
use crate::error::SpecError;
use crate::template::{Expr, Scope};
use crate::yaml::Fields;

pub struct MapNode {
    over: Expr,
    over_source: String,
    body: Arc<dyn Node>,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let over_at = f.req("over")?;
    let over_source = f.req_str("over")?.trim().trim_start_matches("{{").trim_end_matches("}}").trim().to_string();
    let over = Expr::compile(&over_source, ctx.channels).map_err(|m| f.err(over_at, m))?;
    let body_at = f.req("node")?;
    let mut body_fields = Fields::new(f.file, body_at, "the `map` body")?;
    let kind = body_fields.req("kind")?;
    if kind.as_str() == Some("map") {
        return Err(body_fields.err(kind, "a `map` body cannot itself be a `map`; use a subgraph"));
    }
    let built = ctx.registry.build(kind, &mut body_fields, ctx)?;
    body_fields.finish()?;
    Ok(BuiltNode { node: Arc::new(MapNode { over, over_source, body: built.node }), may_goto: built.may_goto })
}

#[async_trait]
impl Node for MapNode {
    fn kind(&self) -> &str {
        "map"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        self.body.run(ctx).await
    }

    fn fan_out(&self, state: &Arc<Value>) -> Result<Option<Vec<Value>>, NodeError> {
        let v = self.over.eval(&Scope { state: Some(state), ..Default::default() }).map_err(NodeError::fatal)?;
        match v {
            Value::Array(items) => Ok(Some(items)),
            other => Err(NodeError::fatal(format!(
                "`over: {}` must be a list, but it is {}",
                self.over_source,
                crewgraph_engine::channel::kind_of(&other)
            ))),
        }
    }
}
