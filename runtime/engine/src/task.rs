//! Tasks: one node invocation within a step, with a deterministic id.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A task scheduled for the next step: a node, and for fan-out the item it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub node: String,
    /// Position among the tasks of the same node in one step (fan-out index).
    #[serde(default)]
    pub index: u32,
    /// The fan-out item (LangGraph's `Send` argument), absent for plain tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

impl TaskSpec {
    pub fn node(node: impl Into<String>) -> Self {
        Self { node: node.into(), index: 0, input: None }
    }

    /// Deterministic id from (thread, step, node, index): the same task gets the
    /// same id after a crash, so it can serve as a tool idempotency key.
    pub fn id(&self, thread_id: &str, step: i64) -> String {
        let key = format!("{thread_id}\u{1f}{step}\u{1f}{}\u{1f}{}", self.node, self.index);
        Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()).to_string()
    }
}

/// Why a run stopped to wait for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptKind {
    /// An `approval` node (or any node) asked for a decision while running.
    Node,
    /// `interrupt_before`: the node has not run yet.
    Before,
    /// `interrupt_after`: the node ran and its writes are checkpointed.
    After,
}

/// A pause for a human decision; becomes an approval record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    /// Deterministic id, unique within the thread.
    pub id: String,
    pub node: String,
    pub kind: InterruptKind,
    pub payload: Value,
    pub actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// The decision taken when the approval expires (default: reject).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<crate::runs::DecisionAction>,
}

/// What a finished task produced; saved as a pending write before the step ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: String,
    pub node: String,
    pub index: u32,
    #[serde(default)]
    pub writes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goto: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt: Option<Interrupt>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_deterministic_and_distinct() {
        let a = TaskSpec { node: "n".into(), index: 0, input: None };
        let b = TaskSpec { node: "n".into(), index: 1, input: None };
        assert_eq!(a.id("t", 3), a.id("t", 3));
        assert_ne!(a.id("t", 3), b.id("t", 3));
        assert_ne!(a.id("t", 3), a.id("t", 4));
        assert_ne!(a.id("t", 3), a.id("u", 3));
    }
}
