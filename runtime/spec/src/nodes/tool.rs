//! `tool`: calls a tool with rendered arguments and writes its result to a channel.
//! Built-in tools: `echo` (returns its arguments), `sleep` (`{ms}`), and
//! `append_file` (`{path, line}`, only under `CREWGRAPH_FILE_TOOL_DIR`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput, Tool, ToolCall};
use serde_json::{Map, Value, json};

use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::Fields;

const BUILTINS: &[&str] = &["echo", "sleep", "append_file"];

/// A built-in tool by name.
pub fn builtin_tool(name: &str) -> Option<Arc<dyn Tool>> {
    match name {
        "echo" => Some(Arc::new(Echo)),
        "sleep" => Some(Arc::new(Sleep)),
        "append_file" => Some(Arc::new(AppendFile)),
        _ => None,
    }
}

pub struct ToolNode {
    tool: Arc<dyn Tool>,
    args: Option<ValueTemplate>,
    into: Option<String>,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let name_at = f.req("tool")?;
    let name = f.req_str("tool")?;
    let tool = ctx.tools.get(name).cloned().or_else(|| builtin_tool(name)).ok_or_else(|| {
        let declared: Vec<&str> = ctx.tools.keys().map(String::as_str).collect();
        f.err(
            name_at,
            format!(
                "unknown tool `{name}` (declared in `tools:`: [{}]; built-in: {})",
                declared.join(", "),
                BUILTINS.join(", ")
            ),
        )
    })?;
    let args = match f.opt("args") {
        Some(a) => Some(template(f, a, ctx.channels)?),
        None => None,
    };
    let into = match f.opt("into") {
        None => None,
        Some(at) => {
            let c = at.as_str().ok_or_else(|| f.err(at, "`into`: expected a channel name"))?;
            if !ctx.channels.contains(c) {
                return Err(f.err(at, format!("`into` names unknown channel `{c}`")));
            }
            Some(c.to_string())
        }
    };
    Ok(BuiltNode::new(Arc::new(ToolNode { tool, args, into })))
}

#[async_trait]
impl Node for ToolNode {
    fn kind(&self) -> &str {
        "tool"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let scope = Scope::of_task(&ctx);
        let mut args = match &self.args {
            Some(t) => t.render(&scope).map_err(NodeError::fatal)?,
            None => Value::Object(Map::new()),
        };
        if self.tool.requires_approval() {
            // Ask before the call; the decision approves it, edits its arguments, or rejects it.
            let Some(decision) = &ctx.resume else {
                return Ok(NodeOutput::Interrupt {
                    payload: json!({"tool": self.tool.name(), "args": args}),
                    actions: vec!["approve".into(), "reject".into(), "edit".into()],
                    expires_in_s: None,
                    on_expiry: None,
                });
            };
            match decision.get("action").and_then(Value::as_str) {
                Some("edit") => args = decision.get("value").cloned().unwrap_or(Value::Null),
                Some("reject") => {
                    let mut writes = Map::new();
                    if let Some(into) = &self.into {
                        writes.insert(into.clone(), json!({"rejected": true, "comment": decision.get("comment")}));
                    }
                    return Ok(NodeOutput::writes(writes));
                }
                _ => {}
            }
        }
        let call =
            ToolCall { idempotency_key: ctx.task_id.clone(), run_id: ctx.run_id.clone(), node: ctx.node.clone() };
        ctx.emit("tool.started", json!({"tool": self.tool.name(), "args": args}));
        let result = self.tool.call(args, &call).await;
        ctx.emit("tool.finished", json!({"tool": self.tool.name(), "ok": result.is_ok()}));
        let result = result?;
        let mut writes = Map::new();
        if let Some(into) = &self.into {
            writes.insert(into.clone(), result);
        }
        Ok(NodeOutput::writes(writes))
    }
}

struct Echo;

#[async_trait]
impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "Returns its arguments unchanged."
    }
    fn schema(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, args: Value, _call: &ToolCall) -> Result<Value, NodeError> {
        Ok(args)
    }
}

struct Sleep;

#[async_trait]
impl Tool for Sleep {
    fn name(&self) -> &str {
        "sleep"
    }
    fn description(&self) -> &str {
        "Waits `ms` milliseconds, then returns its arguments (a stand-in for slow work)."
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]})
    }
    async fn call(&self, args: Value, _call: &ToolCall) -> Result<Value, NodeError> {
        let ms = args
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| NodeError::fatal("sleep: `ms` must be a non-negative integer"))?;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(args)
    }
}

struct AppendFile;

#[async_trait]
impl Tool for AppendFile {
    fn name(&self) -> &str {
        "append_file"
    }
    fn description(&self) -> &str {
        "Appends a line to a file under CREWGRAPH_FILE_TOOL_DIR."
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {"path": {"type": "string"}, "line": {"type": "string"}}, "required": ["path", "line"]})
    }
    async fn call(&self, args: Value, call: &ToolCall) -> Result<Value, NodeError> {
        let dir = std::env::var("CREWGRAPH_FILE_TOOL_DIR").map_err(|_| {
            NodeError::fatal("append_file: CREWGRAPH_FILE_TOOL_DIR is not set, so no file may be written")
        })?;
        let path = args
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| NodeError::fatal("append_file: `path` must be a string"))?;
        if path.contains("..") || path.starts_with('/') {
            return Err(NodeError::fatal(format!(
                "append_file: `{path}` must be a relative path inside the tool directory"
            )));
        }
        let line = args
            .get("line")
            .map(|l| l.as_str().map(str::to_string).unwrap_or_else(|| l.to_string()))
            .unwrap_or_default();
        let full = std::path::Path::new(&dir).join(path);
        let text = format!("{line}\t{}\n", call.idempotency_key);
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&full)
            .await
            .map_err(|e| NodeError::transient(format!("append_file: {}: {e}", full.display())))?;
        file.write_all(text.as_bytes()).await.map_err(|e| NodeError::transient(format!("append_file: {e}")))?;
        file.sync_data().await.map_err(|e| NodeError::transient(format!("append_file: {e}")))?;
        Ok(json!({"path": path, "line": line}))
    }
}
