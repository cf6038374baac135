//! The [`ChatModel`] trait and the factory from profiles.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::LlmError;
use crate::profile::{ModelProfile, Provider};
use crate::types::{ChatRequest, ChatResponse};

/// Receives streamed text as the model produces it.
pub trait TokenSink: Send + Sync {
    fn token(&self, text: &str);
}

#[async_trait]
pub trait ChatModel: Send + Sync {
    fn profile(&self) -> &ModelProfile;

    /// One chat completion. Retries, rate limiting and timeouts happen inside;
    /// an error means the call has failed for good (or is worth a later resume).
    async fn chat(&self, request: &ChatRequest, tokens: Option<&dyn TokenSink>) -> Result<ChatResponse, LlmError>;
}

/// The model a profile describes.
pub fn connect(profile: &ModelProfile) -> Result<Arc<dyn ChatModel>, LlmError> {
    Ok(match profile.provider {
        Provider::Openai => Arc::new(crate::openai::OpenAiModel::new(profile.clone())?),
        Provider::Scripted => Arc::new(crate::scripted::ScriptedModel::from_profile(profile)?),
    })
}
