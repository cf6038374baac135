//! The [`Tool`] trait: an action a node or an agent can call with JSON arguments.

use async_trait::async_trait;
use serde_json::Value;

use crate::error::NodeError;

/// The call's identity: the task id doubles as an idempotency key, so a tool
/// re-run after a crash can recognise a call it already made.
#[derive(Debug, Clone)]
pub struct ToolCall {
    pub idempotency_key: String,
    pub run_id: String,
    pub node: String,
}

#[async_trait]
pub trait Tool: Send + Sync {
    fn name(&self) -> &str;
    fn description(&self) -> &str;
    /// JSON Schema of the arguments.
    fn schema(&self) -> Value;
    /// Whether a person must approve each call before it runs.
    fn requires_approval(&self) -> bool {
        false
    }
    async fn call(&self, args: Value, call: &ToolCall) -> Result<Value, NodeError>;
}
