//! Errors of the engine, split by who can act on them.

use thiserror::Error;

/// A failure of a storage backend (database, cache), boxed so the engine stays
/// independent of any driver.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct StorageError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StorageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), source: None }
    }

    pub fn wrap(context: &str, err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { message: format!("{context}: {err}"), source: Some(Box::new(err)) }
    }
}

/// What a node returns when it cannot produce writes.
#[derive(Debug, Error, Clone)]
#[error("{message}")]
pub struct NodeError {
    pub message: String,
    /// Whether a retry policy may run the node again (timeouts, 5xx, 429 are).
    pub retryable: bool,
}

impl NodeError {
    pub fn fatal(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
}

/// Errors of running a graph.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("node `{node}` failed: {message}")]
    Node { node: String, message: String },
    #[error("node `{node}` timed out after {after_ms} ms")]
    Timeout { node: String, after_ms: u64 },
    #[error("invalid write to channel `{channel}`: {message}")]
    InvalidWrite { channel: String, message: String },
    #[error("channel `{channel}` has reducer `replace` but was written by {writers} in one step")]
    ConflictingWrites { channel: String, writers: String },
    #[error("node `{node}` wrote unknown channel `{channel}`")]
    UnknownChannel { node: String, channel: String },
    #[error("`goto` from `{from}` names unknown node `{to}`")]
    UnknownGoto { from: String, to: String },
    #[error("fan-out of `{node}`: {message}")]
    FanOut { node: String, message: String },
    #[error("edge condition from `{from}`: {message}")]
    Condition { from: String, message: String },
    #[error("run exceeded max_steps ({max_steps}) without finishing")]
    MaxSteps { max_steps: u32 },
    #[error("run deadline of {deadline_ms} ms passed")]
    Deadline { deadline_ms: u64 },
    #[error("run was cancelled")]
    Cancelled,
    #[error("run `{0}` not found")]
    RunNotFound(String),
    #[error("approval `{0}` not found")]
    ApprovalNotFound(String),
    #[error("approval `{id}` was already decided ({status})")]
    AlreadyDecided { id: String, status: String },
    #[error("action `{action}` is not allowed for approval `{id}` (allowed: {allowed})")]
    ActionNotAllowed { id: String, action: String, allowed: String },
    #[error("checkpoint `{checkpoint}` not found in thread `{thread}`")]
    CheckpointNotFound { thread: String, checkpoint: String },
    #[error("run `{id}` is {status} and cannot be {what}")]
    InvalidRunState { id: String, status: String, what: String },
    #[error("{0}")]
    Invalid(String),
}

impl EngineError {
    /// The node the error belongs to, when there is one.
    pub fn node(&self) -> Option<&str> {
        match self {
            EngineError::Node { node, .. }
            | EngineError::Timeout { node, .. }
            | EngineError::UnknownChannel { node, .. }
            | EngineError::FanOut { node, .. } => Some(node),
            _ => None,
        }
    }
}
