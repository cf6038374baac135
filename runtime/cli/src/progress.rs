//! Progress lines on stderr as events arrive.

use std::io::Write;

use crewgraph_engine::{Event, EventSink};
use serde_json::Value;

/// Prints events as progress lines; model tokens stream inline under their node.
#[derive(Default)]
pub struct Progress {
    /// The node whose tokens are being printed, if a token line is open.
    streaming: std::sync::Mutex<Option<String>>,
}

fn short(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() > max { format!("{}…", s.chars().take(max).collect::<String>()) } else { s }
}

/// `[i]` for fan-out tasks after the first.
fn index_label(data: &Value) -> String {
    data.get("index").and_then(Value::as_u64).filter(|i| *i > 0).map(|i| format!("[{i}]")).unwrap_or_default()
}

impl EventSink for Progress {
    fn emit(&self, mut e: Event) {
        if e.kind.ends_with("llm.token") {
            let text = e.data.get("text").or_else(|| e.data.get("event").and_then(|d| d.get("text")));
            let text = text.and_then(Value::as_str).unwrap_or("");
            let node = e.node.clone().unwrap_or_default();
            let mut err = std::io::stderr().lock();
            if let Ok(mut open) = self.streaming.lock()
                && open.as_deref() != Some(node.as_str())
            {
                if open.is_some() {
                    let _ = writeln!(err);
                }
                let _ = write!(err, "  {node} ▸ ");
                *open = Some(node);
            }
            let _ = write!(err, "{}", text.replace('\n', " "));
            let _ = err.flush();
            return;
        }
        // A subgraph's events: shown as the parent's, indented, without its checkpoints.
        let nested = e.kind.strip_prefix("subgraph.").map(str::to_string);
        if let Some(kind) = nested {
            if kind == "checkpoint.saved" || kind.starts_with("run.") {
                return;
            }
            e.kind = kind;
            e.data = e.data.get("event").cloned().unwrap_or_default();
        }
        let node = e.node.as_deref().unwrap_or("");
        let step = e.step.map(|s| format!("[step {s}] ")).unwrap_or_default();
        let line = match e.kind.as_str() {
            "run.started" | "run.resumed" => {
                format!("▶ {} {} (thread {})", e.kind, e.run_id, e.thread_id)
            }
            "node.started" => {
                let idx = index_label(&e.data);
                format!("  {step}{node}{idx} started")
            }
            "node.finished" if e.data.get("interrupted").is_some() => {
                format!("  {step}{node} paused for a decision")
            }
            "tool.started" => {
                format!("  {step}{node} calls tool `{}`", e.data.get("tool").and_then(Value::as_str).unwrap_or(""))
            }
            "tool.finished" => return,
            "node.finished" => format!(
                "  {step}{node}{} finished in {:.1} ms → {}",
                index_label(&e.data),
                e.data.get("ms").and_then(Value::as_f64).unwrap_or(0.0),
                short(e.data.get("channels").unwrap_or(&Value::Null), 80)
            ),
            "node.skipped" => {
                format!("  {step}{node} already done before a restart; not run again")
            }
            "node.retry" => format!(
                "  {step}{node} failed ({}); retrying",
                e.data.get("error").and_then(Value::as_str).unwrap_or("")
            ),
            "node.failed" => {
                format!("✗ {step}{node} failed: {}", e.data.get("error").and_then(Value::as_str).unwrap_or(""))
            }
            "checkpoint.saved" => {
                format!("  {step}checkpoint saved ({} bytes)", e.data.get("bytes").and_then(Value::as_u64).unwrap_or(0))
            }
            "approval.requested" => format!(
                "⏸ approval {} requested at {node}: {}",
                e.data.get("approval_id").and_then(Value::as_str).unwrap_or(""),
                short(e.data.get("payload").unwrap_or(&Value::Null), 200)
            ),
            "approval.decided" => format!("  approval decided at {node}"),
            "run.waiting" => format!("⏸ run {} is waiting for a decision", e.run_id),
            "run.succeeded" => format!("✔ run {} succeeded", e.run_id),
            "run.failed" => {
                format!("✗ run {} failed: {}", e.run_id, e.data.get("message").and_then(Value::as_str).unwrap_or(""))
            }
            "run.cancelled" => {
                format!("■ run {} cancelled: {}", e.run_id, e.data.get("message").and_then(Value::as_str).unwrap_or(""))
            }
            "llm.usage" => format!(
                "  {step}{node} used {} prompt + {} completion tokens{}",
                e.data.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
                e.data.get("completion_tokens").and_then(Value::as_u64).unwrap_or(0),
                if e.data.get("estimated").and_then(Value::as_bool).unwrap_or(false) { " (estimated)" } else { "" }
            ),
            "llm.trimmed" => format!("  {step}{node} prompt trimmed to fit the context window"),
            "agent.delegated" => {
                format!("  {step}{node} delegates to {}", e.data.get("to").and_then(Value::as_str).unwrap_or(""))
            }
            "agent.guardrail" => format!(
                "  {step}{node} guardrail {}",
                if e.data.get("passed").and_then(Value::as_bool).unwrap_or(false) {
                    "passed"
                } else {
                    "failed; retrying"
                }
            ),
            "llm.started" | "agent.finished" | "tool.cached" => return,
            other => format!("  {step}{other} {node}"),
        };
        let mut err = std::io::stderr().lock();
        if let Ok(mut open) = self.streaming.lock()
            && open.take().is_some()
        {
            let _ = writeln!(err);
        }
        let _ = writeln!(err, "{line}");
    }
}
