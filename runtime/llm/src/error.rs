//! Errors of model calls, split by whether trying again can help.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum LlmError {
    /// The server answered with an error status (after any retries).
    #[error("model server answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("model call timed out after {after_s} s")]
    Timeout { after_s: f64 },
    #[error("cannot reach the model server: {0}")]
    Connect(String),
    /// The server's answer could not be read as a chat completion.
    #[error("malformed answer from the model server: {0}")]
    Malformed(String),
    #[error("model profile `{profile}`: {message}")]
    Config { profile: String, message: String },
    /// A structured answer stayed invalid after the allowed repairs.
    #[error("structured output: {0}")]
    Schema(String),
    /// A scripted model ran out of replies.
    #[error("scripted model `{0}` has no replies left")]
    ScriptExhausted(String),
}

impl LlmError {
    /// Whether the same call may succeed later (rate limits, overload, network).
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Http { status, .. } => *status == 429 || *status >= 500,
            LlmError::Timeout { .. } | LlmError::Connect(_) | LlmError::Malformed(_) => true,
            LlmError::Config { .. } | LlmError::ScriptExhausted(_) | LlmError::Schema(_) => false,
        }
    }
}

impl From<LlmError> for crewgraph_engine::NodeError {
    fn from(e: LlmError) -> Self {
        crewgraph_engine::NodeError { retryable: e.is_retryable(), message: e.to_string() }
    }
}
