//! `subgraph`: runs another graph as one node, durably, on a child thread
//! (`<thread>/<task id>`), so a crash inside it resumes inside it. An approval
//! inside the subgraph pauses the parent; the decision is passed down.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{
    Decision, Event, EventSink, Executor, Graph, Node, NodeContext, NodeError, NodeOutput, Outcome,
};
use serde_json::{Map, Value};

use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::Fields;

const MAX_DEPTH: u32 = 8;

pub struct SubgraphNode {
    graph: Arc<Graph>,
    input: Option<ValueTemplate>,
    /// Parent channel -> template over `result` (the subgraph's final state).
    output: Vec<(String, ValueTemplate)>,
    into: Option<String>,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let at = f.req("graph")?;
    let name = f.req_str("graph")?;
    if ctx.depth >= MAX_DEPTH {
        return Err(f.err(at, format!("subgraphs nest deeper than {MAX_DEPTH} levels (does `{name}` include itself?)")));
    }
    let catalog =
        ctx.catalog.ok_or_else(|| f.err(at, "subgraphs need a catalog of definitions to look `graph` up in"))?;
    let graph = catalog.compile_nested(name, ctx.registry, ctx.depth + 1).map_err(|e| {
        // An error inside the subgraph's file keeps its location; a missing graph is just named.
        let detail =
            e.0.first().map(|e| if e.file == name { e.message.clone() } else { e.to_string() }).unwrap_or_default();
        f.err(at, format!("subgraph `{name}`: {detail}"))
    })?;
    let input = match f.opt("input") {
        Some(i) => Some(template(f, i, ctx.channels)?),
        None => None,
    };
    let mut sub_channels = ctx.channels.clone();
    sub_channels.extend(graph.channels.iter().map(|c| c.name.clone()));
    let mut output = Vec::new();
    if let Some(o) = f.opt("output") {
        let entries = o
            .entries()
            .ok_or_else(|| f.err(o, "`output`: expected a mapping of parent channel to template over `result`"))?;
        for (k, v) in entries {
            if !ctx.channels.contains(&k.name) {
                return Err(SpecError::at(f.file, k.loc, format!("`output` writes unknown channel `{}`", k.name)));
            }
            output.push((k.name.clone(), template(f, v, &sub_channels)?));
        }
    }
    let into = f.opt_str("into")?.map(str::to_string);
    if let Some(c) = &into
        && !ctx.channels.contains(c)
    {
        let at = f.node.get("into").unwrap_or(f.node);
        return Err(f.err(at, format!("`into` names unknown channel `{c}`")));
    }
    Ok(BuiltNode::new(Arc::new(SubgraphNode { graph: Arc::new(graph), input, output, into })))
}

/// Reports a subgraph's events as the parent's: on the parent thread, with
/// nodes named `parent/child`.
struct Nested {
    inner: Arc<dyn EventSink>,
    parent: String,
    thread: String,
}

impl EventSink for Nested {
    fn emit(&self, mut event: Event) {
        event.data = serde_json::json!({"subgraph_thread": event.thread_id, "event": event.data});
        event.thread_id = self.thread.clone();
        event.node = Some(match &event.node {
            Some(n) => format!("{}/{n}", self.parent),
            None => self.parent.clone(),
        });
        event.step = None;
        event.kind = format!("subgraph.{}", event.kind);
        self.inner.emit(event);
    }
}

#[async_trait]
impl Node for SubgraphNode {
    fn kind(&self) -> &str {
        "subgraph"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let thread = format!("{}/{}", ctx.thread_id, ctx.task_id);
        let storage = |e: crewgraph_engine::StorageError| NodeError::transient(format!("subgraph storage: {e}"));
        let latest = ctx.checkpointer.get(&thread, None).await.map_err(storage)?;
        let label = if ctx.input.is_some() { format!("{}[{}]", ctx.node, ctx.index) } else { ctx.node.clone() };
        let events = Arc::new(Nested { inner: ctx.events.clone(), parent: label, thread: ctx.thread_id.clone() });
        let mut exec = Executor::new(self.graph.clone(), ctx.checkpointer.clone(), events, &ctx.run_id);
        exec.cancel = ctx.cancel.clone();
        let mut resume: HashMap<String, Decision> = HashMap::new();
        let input = match &latest {
            None => {
                let scope = Scope::of_task(&ctx);
                match &self.input {
                    Some(t) => match t.render(&scope).map_err(NodeError::fatal)? {
                        Value::Object(m) => Some(m),
                        other => {
                            return Err(NodeError::fatal(format!(
                                "subgraph `input` must render to a mapping, got {other}"
                            )));
                        }
                    },
                    None => Some(Map::new()),
                }
            }
            Some(c) => {
                // Resuming: answer every interrupt the child is waiting on with the parent's decision.
                if let Some(d) = ctx.resume.as_ref().and_then(|r| serde_json::from_value::<Decision>(r.clone()).ok()) {
                    for w in ctx.checkpointer.get_writes(&thread, c.id).await.map_err(storage)? {
                        if let Some(i) = w.interrupt {
                            resume.insert(i.id, d.clone());
                        }
                    }
                    for i in c.metadata.get("interrupt_after").and_then(Value::as_array).into_iter().flatten() {
                        if let Some(id) = i.get("id").and_then(Value::as_str) {
                            resume.insert(id.to_string(), d.clone());
                        }
                    }
                    for t in &c.next {
                        resume.insert(format!("{}:before", t.id(&thread, c.step)), d.clone());
                    }
                }
                None
            }
        };
        match exec.invoke(&thread, input.as_ref(), &resume).await {
            Ok(Outcome::Finished(done)) => {
                let result = Value::Object(done.values);
                let scope = Scope { state: Some(&ctx.state), result: Some(&result), ..Default::default() };
                let mut writes = Map::new();
                for (channel, t) in &self.output {
                    writes.insert(channel.clone(), t.render(&scope).map_err(NodeError::fatal)?);
                }
                if let Some(into) = &self.into {
                    writes.insert(into.clone(), result);
                }
                Ok(NodeOutput::writes(writes))
            }
            Ok(Outcome::Waiting { interrupts, .. }) => {
                let first = interrupts.into_iter().next();
                Ok(NodeOutput::Interrupt {
                    payload: first
                        .as_ref()
                        .map(|i| serde_json::json!({"subgraph": self.graph.name, "node": i.node, "payload": i.payload}))
                        .unwrap_or(Value::Null),
                    actions: first.map(|i| i.actions).unwrap_or_default(),
                    expires_in_s: None,
                    on_expiry: None,
                })
            }
            Ok(Outcome::Rejected { node, comment, .. }) => Err(NodeError::fatal(format!(
                "subgraph `{}` was rejected at `{node}`{}",
                self.graph.name,
                comment.map(|c| format!(": {c}")).unwrap_or_default()
            ))),
            Err(e) => Err(NodeError { message: format!("subgraph `{}`: {e}", self.graph.name), retryable: false }),
        }
    }
}
