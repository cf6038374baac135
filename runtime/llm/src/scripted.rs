//! A model that replays canned replies: deterministic tests and offline
//! demos. Never the default: a profile must say `provider: scripted`.
//!
//! A reply is a string (the answer), or `{"tool_call": {"name", "arguments"}}`,
//! or `{"tool_calls": [...]}`, or `{"error": {"status", "message"}}`.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::LlmError;
use crate::model::{ChatModel, TokenSink};
use crate::profile::ModelProfile;
use crate::tokens;
use crate::types::{ChatRequest, ChatResponse, Message, Role, ToolCall, Usage};

pub struct ScriptedModel {
    profile: ModelProfile,
    replies: Mutex<VecDeque<Value>>,
    /// Every request received, for assertions in tests.
    pub requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedModel {
    pub fn new(profile: ModelProfile, replies: Vec<Value>) -> Self {
        Self { profile, replies: Mutex::new(replies.into()), requests: Mutex::new(vec![]) }
    }

    pub fn from_profile(profile: &ModelProfile) -> Result<Self, LlmError> {
        if profile.script.is_empty() {
            return Err(LlmError::Config {
                profile: profile.name.clone(),
                message: "a scripted profile needs `script` replies".into(),
            });
        }
        Ok(Self::new(profile.clone(), profile.script.clone()))
    }

    fn next_reply(&self) -> Option<Value> {
        self.replies.lock().ok()?.pop_front()
    }
}

fn tool_call(i: usize, v: &Value) -> ToolCall {
    ToolCall {
        id: format!("call_{i}"),
        name: v.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
        arguments: v.get("arguments").cloned().unwrap_or_default(),
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn profile(&self) -> &ModelProfile {
        &self.profile
    }

    async fn chat(&self, request: &ChatRequest, sink: Option<&dyn TokenSink>) -> Result<ChatResponse, LlmError> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        let reply = self.next_reply().ok_or_else(|| LlmError::ScriptExhausted(self.profile.name.clone()))?;
        let mut message = Message::assistant("");
        match &reply {
            Value::String(text) => message.content = text.clone(),
            Value::Object(o) if o.contains_key("error") => {
                let e = &o["error"];
                return Err(LlmError::Http {
                    status: e.get("status").and_then(Value::as_u64).unwrap_or(500) as u16,
                    message: e.get("message").and_then(Value::as_str).unwrap_or("scripted error").to_string(),
                });
            }
            Value::Object(o) if o.contains_key("tool_call") => message.tool_calls = vec![tool_call(0, &o["tool_call"])],
            Value::Object(o) if o.contains_key("tool_calls") => {
                message.tool_calls =
                    o["tool_calls"].as_array().into_iter().flatten().enumerate().map(|(i, c)| tool_call(i, c)).collect()
            }
            other => message.content = other.to_string(),
        }
        if let Some(s) = sink {
            for word in message.content.split_inclusive(' ') {
                s.token(word);
            }
        }
        let usage = Usage {
            prompt_tokens: tokens::count_messages(&request.messages) as u64,
            completion_tokens: tokens::count(&message.content) as u64,
            estimated: true,
        };
        let finish = if message.tool_calls.is_empty() { "stop" } else { "tool_calls" };
        Ok(ChatResponse {
            message: Message { role: Role::Assistant, ..message },
            usage,
            finish_reason: Some(finish.into()),
            model: format!("scripted:{}", self.profile.name),
        })
    }
}
