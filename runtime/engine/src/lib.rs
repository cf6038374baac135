//! The crewgraph engine: JSON state with typed channels and reducers, the graph
//! model, and the superstep executor that runs a graph durably through a
//! [`Checkpointer`].
//!
//! This crate owns the traits at the storage and observation seams
//! ([`Checkpointer`], [`RunStore`], [`EventSink`]) and knows nothing of
//! databases, HTTP or YAML: `crewgraph-store` implements the traits and
//! `crewgraph-spec` builds [`Graph`]s from definitions.

pub mod api;
pub mod channel;
pub mod checkpoint;
pub mod error;
pub mod event;
pub mod executor;
pub mod graph;
pub mod memory;
pub mod node;
pub mod retry;
pub mod runs;
pub mod runtime;
pub mod state;
pub mod task;
pub mod tool;
pub mod usage;

pub use channel::{ChannelSpec, Reducer};
pub use checkpoint::{Blob, ChannelBlob, Checkpoint, CheckpointSource, Checkpointer, Retention};
pub use error::{EngineError, NodeError, StorageError};
pub use event::{Event, EventSink, NullSink};
pub use executor::{Executor, Outcome};
pub use graph::{END, Edge, Graph, GraphBuilder, Limits, NodeSpec, StructureError};
pub use memory::MemoryStore;
pub use node::{Node, NodeContext, NodeOutput};
pub use retry::RetryPolicy;
pub use runs::{Approval, ApprovalStatus, DEFAULT_TENANT, Decision, DecisionAction, Run, RunStatus, RunStore};
pub use runtime::Runtime;
pub use state::State;
pub use task::{Interrupt, InterruptKind, TaskResult, TaskSpec};
pub use tool::{Tool, ToolCall};

/// Milliseconds since the Unix epoch, the one timestamp format of the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
