//! What a crew agent brings to a task beyond its prompt: passages from the
//! crew's `knowledge` collections, and with `memory: true` the results of
//! its earlier runs (long-term memory), which it stores again when done.
//!
//! Long-term memory lives in the `crewgraph_memory` collection, one source
//! per run and task (so a retried task replaces, never duplicates, what it
//! stored), with the crew, agent, task and run recorded, and per tenant: the
//! run's `tenant` input when the crew has one, else the default tenant.

use crewgraph_engine::{NodeContext, NodeError};
use crewgraph_memory::{DEFAULT_TENANT, Document, Filter, MemoryHandle, SearchRequest};
use serde_json::{Value, json};

/// The collection of agents' long-term memory.
pub const MEMORY_COLLECTION: &str = "crewgraph_memory";
/// Passages taken from each source per task.
const TOP_K: usize = 3;
/// Tokens of recalled text per source, so recall cannot crowd out the task.
const BUDGET: usize = 1200;

#[derive(Debug, Clone)]
pub struct Recall {
    pub memory: MemoryHandle,
    /// Collections searched with the task's text.
    pub knowledge: Vec<String>,
    /// `(crew, agent)` when the agent keeps long-term memory.
    pub long_term: Option<(String, String)>,
}

fn tenant(ctx: &NodeContext) -> String {
    ctx.state.get("tenant").and_then(Value::as_str).filter(|t| !t.is_empty()).unwrap_or(DEFAULT_TENANT).to_string()
}

fn fail(e: crewgraph_memory::MemoryError) -> NodeError {
    match e {
        crewgraph_memory::MemoryError::Store { .. } => NodeError::transient(e.to_string()),
        crewgraph_memory::MemoryError::NoCollection(name) => NodeError::fatal(format!(
            "knowledge collection `{name}` does not exist (create it with `crewgraph ingest {name} PATH...`)"
        )),
        other => NodeError::fatal(other.to_string()),
    }
}

impl Recall {
    pub fn is_empty(&self) -> bool {
        self.knowledge.is_empty() && self.long_term.is_none()
    }

    /// Text to add to the task: knowledge passages, then earlier results.
    pub async fn context(&self, ctx: &NodeContext, task: &str) -> Result<String, NodeError> {
        let memory = self.memory.get().await.map_err(fail)?;
        let tenant = tenant(ctx);
        let mut out = String::new();
        let mut request = SearchRequest::new(task, TOP_K);
        request.tenant = tenant.clone();
        request.token_budget = Some(BUDGET);
        for collection in &self.knowledge {
            let hits = memory.search(collection, &request).await.map_err(fail)?;
            ctx.emit("memory.retrieved", json!({"collection": collection, "results": hits.len()}));
            if hits.is_empty() {
                continue;
            }
            out.push_str(&format!("\n\nRelevant knowledge from `{collection}`:"));
            for h in hits {
                out.push_str(&format!("\n[{}] {}", h.source, h.text.trim()));
            }
        }
        if let Some((crew, agent)) = &self.long_term {
            memory.ensure_collection(MEMORY_COLLECTION).await.map_err(fail)?;
            let filter = Filter::from_json(&json!({"crew": crew, "agent": agent})).map_err(fail)?;
            let recalled =
                memory.search(MEMORY_COLLECTION, &SearchRequest { filter, ..request.clone() }).await.map_err(fail)?;
            ctx.emit("memory.recalled", json!({"results": recalled.len()}));
            if !recalled.is_empty() {
                out.push_str("\n\nWhat you produced in earlier runs (use it where it helps):");
                for h in recalled {
                    let task = h.metadata.get("task").and_then(Value::as_str).unwrap_or("a task");
                    out.push_str(&format!("\n- for `{task}`: {}", h.text.trim()));
                }
            }
        }
        Ok(out)
    }

    /// Stores a task's result as long-term memory. A failure is reported as
    /// an event, not as the task's failure: the result itself is already safe
    /// in the run's checkpoint.
    pub async fn remember(&self, ctx: &NodeContext, task: &str, result: &str) {
        let Some((crew, agent)) = &self.long_term else { return };
        if result.trim().is_empty() {
            return;
        }
        let stored = async {
            let memory = self.memory.get().await?;
            let mut doc = Document::new(format!("run/{}/{task}", ctx.run_id), result);
            for (k, v) in [("crew", crew.as_str()), ("agent", agent.as_str()), ("task", task), ("run_id", &ctx.run_id)]
            {
                doc.metadata.insert(k.into(), json!(v));
            }
            memory.ingest(MEMORY_COLLECTION, &tenant(ctx), &doc).await
        }
        .await;
        match stored {
            Ok(change) => ctx.emit("memory.stored", json!({"task": task, "chunks": change.added + change.kept})),
            Err(e) => ctx.emit("memory.error", json!({"task": task, "error": e.to_string()})),
        }
    }
}
