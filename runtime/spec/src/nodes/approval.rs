//! `approval`: stops the run until a reviewer decides, then writes the
//! decision (`{action, value, comment}`) to a channel for edges to route on.

use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{DecisionAction, Node, NodeContext, NodeError, NodeOutput};
use serde_json::{Map, Value, json};

use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::Fields;

const ACTIONS: &[&str] = &["approve", "reject", "edit", "respond"];

pub struct ApprovalNode {
    pub payload: Option<ValueTemplate>,
    pub actions: Vec<String>,
    pub into: String,
    /// On `edit`, the reviewer's value also replaces this channel.
    pub edit_into: Option<String>,
    pub expires_in_s: Option<u64>,
    pub on_expiry: Option<DecisionAction>,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let payload = match f.opt("payload") {
        Some(p) => Some(template(f, p, ctx.channels)?),
        None => None,
    };
    let actions = f.opt_strings("actions")?.unwrap_or_else(|| vec!["approve".into(), "reject".into(), "edit".into()]);
    if let Some(bad) = actions.iter().find(|a| !ACTIONS.contains(&a.as_str())) {
        let at = f.node.get("actions").unwrap_or(f.node);
        return Err(f.err(at, format!("unknown action `{bad}` (expected some of: {})", ACTIONS.join(", "))));
    }
    let into_at = f.req("into")?;
    let into = f.req_str("into")?.to_string();
    if !ctx.channels.contains(&into) {
        return Err(f.err(into_at, format!("`into` names unknown channel `{into}`")));
    }
    let expires_in_s = f.opt_u64("expires_in_s")?;
    let on_expiry = match f.opt("on_expiry") {
        None => None,
        Some(at) => {
            let action = at.as_str().unwrap_or_default();
            match DecisionAction::parse(action) {
                Some(a @ (DecisionAction::Approve | DecisionAction::Reject)) if actions.iter().any(|x| x == action) => {
                    Some(a)
                }
                _ => return Err(f.err(at, "`on_expiry`: approve or reject, one of the node's `actions`")),
            }
        }
    };
    if expires_in_s.is_some() && on_expiry.is_none() && !actions.iter().any(|a| a == "reject") {
        let at = f.node.get("expires_in_s").unwrap_or(f.node);
        return Err(f.err(at, "an expiring approval rejects when it expires: allow `reject` or set `on_expiry`"));
    }
    if on_expiry.is_some() && expires_in_s.is_none() {
        let at = f.node.get("on_expiry").unwrap_or(f.node);
        return Err(f.err(at, "`on_expiry` needs `expires_in_s`"));
    }
    let edit_into = match f.opt("edit_into") {
        None => None,
        Some(at) => {
            let c = at.as_str().unwrap_or_default();
            if !ctx.channels.contains(c) {
                return Err(f.err(at, format!("`edit_into` names unknown channel `{c}`")));
            }
            Some(c.to_string())
        }
    };
    Ok(BuiltNode::new(Arc::new(ApprovalNode { payload, actions, into, edit_into, expires_in_s, on_expiry })))
}

#[async_trait]
impl Node for ApprovalNode {
    fn kind(&self) -> &str {
        "approval"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        match &ctx.resume {
            None => {
                let scope = Scope::of_task(&ctx);
                let payload = match &self.payload {
                    Some(t) => t.render(&scope).map_err(NodeError::fatal)?,
                    None => ctx.state.as_ref().clone(),
                };
                Ok(NodeOutput::Interrupt {
                    payload,
                    actions: self.actions.clone(),
                    expires_in_s: self.expires_in_s,
                    on_expiry: self.on_expiry,
                })
            }
            Some(decision) => {
                let mut d = decision.clone();
                if let Value::Object(m) = &mut d {
                    m.entry("value").or_insert(Value::Null);
                    m.entry("comment").or_insert(Value::Null);
                }
                let mut writes = Map::new();
                if let (Some(target), Some("edit")) = (&self.edit_into, d.get("action").and_then(Value::as_str)) {
                    writes.insert(target.clone(), d.get("value").cloned().unwrap_or(Value::Null));
                }
                writes.insert(self.into.clone(), if d.is_object() { d } else { json!({"action": d}) });
                Ok(NodeOutput::writes(writes))
            }
        }
    }
}
