//! Model profiles: which server and model to call, and how patiently.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Any OpenAI-compatible `/v1/chat/completions` server.
    #[default]
    Openai,
    /// Canned replies, for tests and offline demos; never chosen by default.
    Scripted,
}

/// A named model configuration. `base_url` and the key are overridden by
/// `OPENAI_BASE_URL` / the variable named by `api_key_env` when those are set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelProfile {
    pub name: String,
    #[serde(default)]
    pub provider: Provider,
    pub base_url: Option<String>,
    /// Environment variable holding the API key (never the key itself).
    pub api_key_env: String,
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// Per-request timeout, including a streamed answer.
    pub timeout_s: f64,
    /// Retries after the first attempt, on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// A `Retry-After` longer than this fails the call instead of waiting.
    pub max_retry_after_s: u64,
    /// Requests per minute this process sends with this profile.
    pub max_rpm: Option<u32>,
    /// The model's context window in tokens, for budgeting prompts.
    pub context_window: usize,
    /// Stream the answer (tokens become `llm.token` events).
    pub stream: bool,
    /// Canned replies of a `scripted` profile.
    #[serde(default)]
    pub script: Vec<serde_json::Value>,
}

impl ModelProfile {
    pub fn new(name: &str, model: &str) -> Self {
        Self {
            name: name.to_string(),
            provider: Provider::Openai,
            base_url: None,
            api_key_env: "OPENAI_API_KEY".into(),
            model: model.to_string(),
            temperature: None,
            max_tokens: None,
            timeout_s: 120.0,
            max_retries: 3,
            backoff_ms: 500,
            max_backoff_ms: 20_000,
            max_retry_after_s: 120,
            max_rpm: None,
            context_window: 8192,
            stream: true,
            script: vec![],
        }
    }

    /// The server base URL: `OPENAI_BASE_URL`, else the profile's, else OpenAI's.
    pub fn base_url(&self) -> String {
        std::env::var("OPENAI_BASE_URL")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| self.base_url.clone())
            .unwrap_or_else(|| "https://api.openai.com/v1".into())
            .trim_end_matches('/')
            .to_string()
    }

    /// The API key from `api_key_env` (or `OPENAI_API_KEY`); local servers need none.
    pub fn api_key(&self) -> Option<String> {
        std::env::var(&self.api_key_env).ok().or_else(|| std::env::var("OPENAI_API_KEY").ok()).filter(|s| !s.is_empty())
    }
}
