//! Language models for crewgraph: model profiles, the [`ChatModel`] trait, an
//! OpenAI-compatible implementation (async-openai) for OpenAI, vLLM, Ollama and
//! llama.cpp's llama-server, a scripted model for tests and offline demos,
//! retries that honour `Retry-After`, per-profile rate limits, and token
//! counting with tiktoken-rs for usage and context budgets.
//!
//! Depends on the engine only (for its error and tool types); knows nothing of
//! YAML, storage or HTTP serving.

pub mod budget;
pub mod error;
pub mod model;
pub mod openai;
pub mod profile;
pub mod ratelimit;
pub mod retry;
pub mod scripted;
pub mod structured;
pub mod tokens;
pub mod tools;
pub mod types;

pub use error::LlmError;
pub use model::{ChatModel, TokenSink, connect};
pub use profile::{ModelProfile, Provider};
pub use scripted::ScriptedModel;
pub use types::{ChatRequest, ChatResponse, Message, ResponseFormat, Role, ToolCall, ToolSpec, Usage};
