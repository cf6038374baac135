//! One task attempt loop: timeout, retries with backoff, node events.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::error::{EngineError, NodeError};
use crate::event::{Event, EventSink};
use crate::graph::NodeSpec;
use crate::node::{NodeContext, NodeOutput};

/// Runs one task with its timeout and retry policy, emitting node events.
pub(super) async fn run_task(
    spec: NodeSpec,
    mut ctx: NodeContext,
    events: Arc<dyn EventSink>,
) -> Result<NodeOutput, EngineError> {
    let policy = &spec.retry;
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        let started = Instant::now();
        ctx.emit(
            "node.started",
            json!({"task_id": ctx.task_id, "index": ctx.index, "attempt": attempt, "kind": spec.node.kind()}),
        );
        let fut = spec.node.run(ctx.clone());
        let result: Result<NodeOutput, NodeError> = tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(EngineError::Cancelled),
            r = async {
                match spec.timeout {
                    Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                        Err(NodeError::transient(format!("timed out after {} ms", t.as_millis())))
                    }),
                    None => fut.await,
                }
            } => r,
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(out) => {
                let data = match &out {
                    NodeOutput::Writes { writes, goto } => json!({
                        "task_id": ctx.task_id, "index": ctx.index, "ms": elapsed_ms,
                        "channels": writes.keys().collect::<Vec<_>>(), "goto": goto,
                    }),
                    NodeOutput::Interrupt { .. } => {
                        json!({"task_id": ctx.task_id, "interrupted": true, "ms": elapsed_ms})
                    }
                };
                ctx.emit("node.finished", data);
                return Ok(out);
            }
            Err(e) if (e.retryable || policy.retry_all) && attempt < policy.max_attempts => {
                let wait = policy.backoff(attempt);
                ctx.emit(
                    "node.retry",
                    json!({"attempt": attempt, "error": e.message, "wait_ms": wait.as_millis() as u64}),
                );
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Err(EngineError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
            }
            Err(e) => {
                events.emit(
                    Event::new("node.failed", &ctx.run_id, &ctx.thread_id)
                        .node(&ctx.node)
                        .step(ctx.step)
                        .data(json!({"error": e.message, "attempts": attempt})),
                );
                if e.message.starts_with("timed out after") {
                    let after_ms = spec.timeout.map(|t| t.as_millis() as u64).unwrap_or(0);
                    return Err(EngineError::Timeout { node: ctx.node.clone(), after_ms });
                }
                return Err(EngineError::Node { node: ctx.node.clone(), message: e.message });
            }
        }
    }
}
