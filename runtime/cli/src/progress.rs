//! Progress lines on stderr as events arrive.

use std::io::Write;

use crewgraph_engine::{Event, EventSink};
use serde_json::Value;

pub struct Progress;

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
            other => format!("  {step}{other} {node}"),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}
