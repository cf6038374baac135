//! The [`Node`] trait: what a graph node does when its task runs.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpointer;
use crate::error::NodeError;
use crate::event::{Event, EventSink};
use crate::runs::DecisionAction;

/// Everything a running task may look at.
#[derive(Clone)]
pub struct NodeContext {
    pub run_id: String,
    pub thread_id: String,
    /// Deterministic task id; pass it to tools as an idempotency key.
    pub task_id: String,
    pub node: String,
    pub step: i64,
    /// The state at the start of the step, as one JSON object.
    pub state: Arc<Value>,
    /// The fan-out item, for tasks of a `map` node.
    pub input: Option<Value>,
    pub index: u32,
    /// The reviewer's decision when the task resumes after an interrupt.
    pub resume: Option<Value>,
    /// The payload of the interrupt the decision answers: what the node asked
    /// with, so it can pick up where it stopped without redoing work.
    pub asked: Option<Value>,
    pub attempt: u32,
    pub cancel: CancellationToken,
    pub events: Arc<dyn EventSink>,
    /// For nodes that run graphs of their own (subgraphs) durably.
    pub checkpointer: Arc<dyn Checkpointer>,
}

impl NodeContext {
    /// Emits an event attributed to this node.
    pub fn emit(&self, kind: &str, data: Value) {
        self.events.emit(Event::new(kind, &self.run_id, &self.thread_id).node(&self.node).step(self.step).data(data));
    }
}

/// What a task produced.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeOutput {
    /// Channel writes, and optionally the nodes to run next instead of following edges.
    Writes { writes: Map<String, Value>, goto: Option<Vec<String>> },
    /// Stop and ask a person; the task runs again with the decision as `resume`.
    /// `on_expiry` is the decision taken for the reviewer once `expires_in_s` has passed (default: reject).
    Interrupt { payload: Value, actions: Vec<String>, expires_in_s: Option<u64>, on_expiry: Option<DecisionAction> },
}

impl NodeOutput {
    pub fn writes(writes: Map<String, Value>) -> Self {
        NodeOutput::Writes { writes, goto: None }
    }
}

#[async_trait]
pub trait Node: Send + Sync {
    /// A short name of the node kind (`set`, `approval`, `map`, ...), for events and diagrams.
    fn kind(&self) -> &str;

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError>;

    /// For fan-out nodes: the items to run one task each on, read from the
    /// state when the node is scheduled. `None` for ordinary nodes.
    fn fan_out(&self, _state: &Arc<Value>) -> Result<Option<Vec<Value>>, NodeError> {
        Ok(None)
    }
}

/// A node made from a closure, for tests and programmatic graphs.
pub struct FnNode<F>(pub F);

#[async_trait]
impl<F, Fut> Node for FnNode<F>
where
    F: Fn(NodeContext) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<NodeOutput, NodeError>> + Send,
{
    fn kind(&self) -> &str {
        "fn"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        (self.0)(ctx).await
    }
}
