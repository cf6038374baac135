//! [`ChatModel`] for any OpenAI-compatible server, through async-openai with
//! our own request and response JSON (`byot`): servers such as llama-server
//! omit or add fields that strict types reject. Streaming joins tool-call
//! fragments by index; usage is counted with tiktoken when not reported.

use std::collections::BTreeMap;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::ReqwestService;
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::error::LlmError;
use crate::model::{ChatModel, TokenSink};
use crate::profile::ModelProfile;
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;
use crate::tokens;
use crate::types::{ChatRequest, ChatResponse, Message, ResponseFormat, Role, ToolCall, Usage};

/// An async-openai client for the profile's server: its timeouts, and our
/// retry policy (429, 5xx, timeouts; `Retry-After` honoured) as middleware.
/// Shared by chat models and embedders.
pub fn client(profile: &ModelProfile) -> Result<Client<OpenAIConfig>, LlmError> {
    // One TLS stack (ring) for the whole binary; installing twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config_err = |message: String| LlmError::Config { profile: profile.name.clone(), message };
    if !profile.timeout_s.is_finite() || profile.timeout_s <= 0.0 {
        return Err(config_err("timeout_s must be positive".into()));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs_f64(profile.timeout_s))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| config_err(format!("HTTP client: {e}")))?;
    let policy = RetryPolicy::new(
        profile.max_retries,
        profile.backoff_ms,
        profile.max_backoff_ms,
        Duration::from_secs(profile.max_retry_after_s),
    );
    let service = tower::ServiceBuilder::new().retry(policy).service(ReqwestService::new(http));
    let config = OpenAIConfig::new()
        .with_api_base(profile.base_url())
        .with_api_key(profile.api_key().unwrap_or_else(|| "no-key".into()));
    Ok(Client::with_config(config).with_http_service(service))
}

pub struct OpenAiModel {
    profile: ModelProfile,
    client: Client<OpenAIConfig>,
    limiter: RateLimiter,
}

impl OpenAiModel {
    pub fn new(profile: ModelProfile) -> Result<Self, LlmError> {
        let client = client(&profile)?;
        Ok(Self { limiter: RateLimiter::new(profile.max_rpm), profile, client })
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let mut body = json!({
            "model": self.profile.model,
            "messages": request.messages.iter().map(wire_message).collect::<Vec<_>>(),
            "stream": stream,
        });
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(t) = self.profile.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = self.profile.max_tokens {
            body["max_tokens"] = json!(m);
        }
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
        }
        if let Some(ResponseFormat::JsonSchema { name, schema }) = &request.response_format {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": true}});
        }
        body
    }

    async fn once(&self, request: &ChatRequest, tokens: Option<&dyn TokenSink>) -> Result<ChatResponse, LlmError> {
        self.limiter.acquire().await;
        let mut response = if self.profile.stream {
            self.streamed(request, tokens).await?
        } else {
            let value: Value =
                self.client.chat().create_byot(self.body(request, false)).await.map_err(|e| self.error(e))?;
            parse_completion(&value)?
        };
        if response.usage.prompt_tokens == 0 && response.usage.completion_tokens == 0 {
            response.usage = Usage {
                prompt_tokens: tokens::count_messages(&request.messages) as u64,
                completion_tokens: (tokens::count(&response.message.content)
                    + response
                        .message
                        .tool_calls
                        .iter()
                        .map(|c| tokens::count(&c.arguments.to_string()))
                        .sum::<usize>()) as u64,
                estimated: true,
            };
        }
        Ok(response)
    }

    async fn streamed(&self, request: &ChatRequest, sink: Option<&dyn TokenSink>) -> Result<ChatResponse, LlmError> {
        let mut stream = self
            .client
            .chat()
            .create_stream_byot::<Value, Value>(self.body(request, true))
            .await
            .map_err(|e| self.error(e))?;
        let mut content = String::new();
        // Tool calls arrive in fragments keyed by index: id and name once, arguments in pieces.
        let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
        let mut finish_reason = None;
        let mut usage = Usage::default();
        let mut model = self.profile.model.clone();
        let mut received = false;
        let started = std::time::Instant::now();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                // A body cut off at the client's deadline surfaces as a decoding error.
                if started.elapsed().as_secs_f64() >= self.profile.timeout_s * 0.95 {
                    LlmError::Timeout { after_s: self.profile.timeout_s }
                } else {
                    self.error(e)
                }
            })?;
            received = true;
            if let Some(m) = chunk.get("model").and_then(Value::as_str) {
                model = m.to_string();
            }
            if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
                usage = read_usage(u);
            }
            let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
                continue;
            };
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                finish_reason = Some(r.to_string());
            }
            let Some(delta) = choice.get("delta") else { continue };
            if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                content.push_str(text);
                if let Some(s) = sink {
                    s.token(text);
                }
            }
            for (n, frag) in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
                let index = frag.get("index").and_then(Value::as_u64).unwrap_or(n as u64);
                let entry = calls.entry(index).or_default();
                if let Some(id) = frag.get("id").and_then(Value::as_str) {
                    entry.0 = id.to_string();
                }
                if let Some(f) = frag.get("function") {
                    if let Some(name) = f.get("name").and_then(Value::as_str) {
                        entry.1.push_str(name);
                    }
                    if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                        entry.2.push_str(args);
                    }
                }
            }
        }
        if !received {
            return Err(LlmError::Malformed("the server answered a streamed request without any event".into()));
        }
        let tool_calls = calls
            .into_iter()
            .map(|(i, (id, name, args))| ToolCall {
                id: if id.is_empty() { format!("call_{i}") } else { id },
                name,
                arguments: parse_arguments(&args),
            })
            .collect();
        Ok(ChatResponse {
            message: Message { role: Role::Assistant, content, tool_calls, tool_call_id: None },
            usage,
            finish_reason,
            model,
        })
    }

    fn error(&self, e: OpenAIError) -> LlmError {
        match e {
            OpenAIError::ApiError(r) => LlmError::Http { status: r.status_code.as_u16(), message: r.api_error.message },
            OpenAIError::Reqwest(e) if e.is_timeout() => LlmError::Timeout { after_s: self.profile.timeout_s },
            OpenAIError::Reqwest(e) => match e.status() {
                Some(s) => LlmError::Http { status: s.as_u16(), message: e.to_string() },
                None => LlmError::Connect(e.to_string()),
            },
            OpenAIError::JSONDeserialize(err, content) => LlmError::Malformed(format!(
                "{err}; the answer began: {}",
                content.chars().take(200).collect::<String>()
            )),
            OpenAIError::StreamError(s) => {
                let text = s.to_string();
                if text.contains("timed out") || text.contains("operation timed out") {
                    LlmError::Timeout { after_s: self.profile.timeout_s }
                } else {
                    LlmError::Malformed(format!("stream: {text}"))
                }
            }
            other => LlmError::Connect(other.to_string()),
        }
    }
}

#[async_trait]
impl ChatModel for OpenAiModel {
    fn profile(&self) -> &ModelProfile {
        &self.profile
    }

    async fn chat(&self, request: &ChatRequest, tokens: Option<&dyn TokenSink>) -> Result<ChatResponse, LlmError> {
        // HTTP-level retries (429/5xx/timeouts) happen in the tower policy; this
        // loop retries answers that arrived but could not be read.
        let mut attempt = 0;
        loop {
            match self.once(request, tokens).await {
                Err(LlmError::Malformed(m)) if attempt < self.profile.max_retries => {
                    attempt += 1;
                    tracing::warn!(attempt, error = %m, "malformed model answer; asking again");
                    tokio::time::sleep(Duration::from_millis(self.profile.backoff_ms)).await;
                }
                other => return other,
            }
        }
    }
}

fn wire_message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut v = json!({"role": role, "content": m.content});
    if !m.tool_calls.is_empty() {
        v["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                let args = match &c.arguments {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": args}})
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    v
}

fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn read_usage(u: &Value) -> Usage {
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage { prompt_tokens: n("prompt_tokens"), completion_tokens: n("completion_tokens"), estimated: false }
}

/// A non-streamed chat completion, read leniently.
pub fn parse_completion(v: &Value) -> Result<ChatResponse, LlmError> {
    let choice = v.get("choices").and_then(|c| c.get(0)).ok_or_else(|| {
        LlmError::Malformed(format!("no `choices` in {}", v.to_string().chars().take(200).collect::<String>()))
    })?;
    let msg = choice.get("message").ok_or_else(|| LlmError::Malformed("a choice without `message`".into()))?;
    let tool_calls = msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let f = c.get("function").cloned().unwrap_or_default();
            let args = match f.get("arguments") {
                Some(Value::String(s)) => parse_arguments(s),
                Some(other) => other.clone(),
                None => json!({}),
            };
            ToolCall {
                id: c.get("id").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("call_{i}")),
                name: f.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
                arguments: args,
            }
        })
        .collect();
    Ok(ChatResponse {
        message: Message {
            role: Role::Assistant,
            content: msg.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
            tool_calls,
            tool_call_id: None,
        },
        usage: v.get("usage").map(read_usage).unwrap_or_default(),
        finish_reason: choice.get("finish_reason").and_then(Value::as_str).map(str::to_string),
        model: v.get("model").and_then(Value::as_str).unwrap_or_default().to_string(),
    })
}
