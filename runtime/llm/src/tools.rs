//! Choosing a tool: native `tools`/`tool_calls` when the server emits them,
//! and otherwise a JSON answer constrained by a schema (`response_format`),
//! which servers such as llama-server enforce with a grammar. Arguments are
//! checked against each tool's JSON Schema before anything runs; a bad call is
//! described so it can go back to the model.

use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Value, json};

use crate::error::LlmError;
use crate::model::{ChatModel, TokenSink};
use crate::types::{ChatRequest, Message, ResponseFormat, ToolCall, ToolSpec, Usage};

/// How tool calls are asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolMode {
    /// Native first; once a server answers tools with text but picks one when
    /// constrained, go straight to the schema for that model.
    #[default]
    Auto,
    Native,
    Schema,
}

/// What the model decided this turn. With the schema fallback the returned
/// message has no `tool_calls`; answer its calls with user messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Final(String),
    Calls(Vec<ToolCall>),
}

/// Remembers, per model, whether its server emits native tool calls.
#[derive(Default)]
pub struct NativeSupport(AtomicU8);

impl NativeSupport {
    /// Whether this model has been seen to pick tools only through the schema.
    pub fn schema_only(&self) -> bool {
        self.0.load(Ordering::Relaxed) == SCHEMA_ONLY
    }
}

const UNKNOWN: u8 = 0;
const NATIVE: u8 = 1;
const SCHEMA_ONLY: u8 = 2;

/// The schema of a constrained answer: one of the tools with its arguments, or a final answer.
pub fn choice_schema(tools: &[ToolSpec]) -> Value {
    let mut options: Vec<Value> = tools
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"tool": {"const": t.name}, "arguments": t.parameters},
                "required": ["tool", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    options.push(json!({
        "type": "object",
        "properties": {"final_answer": {"type": "string"}},
        "required": ["final_answer"],
        "additionalProperties": false
    }));
    json!({"anyOf": options})
}

fn describe_tools(tools: &[ToolSpec]) -> String {
    let mut s = String::from(
        "Answer with JSON only. To use a tool, answer {\"tool\": NAME, \"arguments\": {...}}. \
         When you have the final answer, answer {\"final_answer\": TEXT}.\nTools:\n",
    );
    for t in tools {
        s.push_str(&format!("- {}: {} Arguments schema: {}\n", t.name, t.description, t.parameters));
    }
    s
}

/// Reads a constrained answer into a choice.
pub fn parse_choice(text: &str) -> Result<Choice, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("the answer is not JSON ({e}): {text}"))?;
    if let Some(answer) = v.get("final_answer") {
        return Ok(Choice::Final(answer.as_str().map(str::to_string).unwrap_or_else(|| answer.to_string())));
    }
    let name = v.get("tool").and_then(Value::as_str).ok_or("the answer names neither `tool` nor `final_answer`")?;
    Ok(Choice::Calls(vec![ToolCall {
        id: "call_0".into(),
        name: name.to_string(),
        arguments: v.get("arguments").cloned().unwrap_or_else(|| json!({})),
    }]))
}

/// Checks a call against the tools: a known name and arguments valid against its schema.
pub fn check_call(call: &ToolCall, tools: &[ToolSpec]) -> Result<(), String> {
    let tool = tools.iter().find(|t| t.name == call.name).ok_or_else(|| {
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        format!("there is no tool `{}` (tools: {})", call.name, names.join(", "))
    })?;
    let validator = jsonschema::validator_for(&tool.parameters)
        .map_err(|e| format!("tool `{}` has an invalid schema: {e}", tool.name))?;
    let errors: Vec<String> = validator
        .iter_errors(&call.arguments)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("arguments for `{}` are invalid: {}", tool.name, errors.join("; ")))
    }
}

/// One turn: asks the model what to do next with `tools` available.
pub async fn choose(
    model: &dyn ChatModel,
    support: &NativeSupport,
    mode: ToolMode,
    messages: &[Message],
    tools: &[ToolSpec],
    sink: Option<&dyn TokenSink>,
) -> Result<(Choice, Message, Usage), LlmError> {
    let state = support.0.load(Ordering::Relaxed);
    let native_first = match mode {
        ToolMode::Native => true,
        ToolMode::Schema => false,
        ToolMode::Auto => state != SCHEMA_ONLY,
    };
    let mut usage = Usage::default();
    if native_first {
        let request = ChatRequest { messages: messages.to_vec(), tools: tools.to_vec(), response_format: None };
        let r = model.chat(&request, sink).await?;
        add(&mut usage, r.usage);
        if !r.message.tool_calls.is_empty() {
            support.0.store(NATIVE, Ordering::Relaxed);
            return Ok((Choice::Calls(r.message.tool_calls.clone()), r.message, usage));
        }
        if mode == ToolMode::Native || state == NATIVE || tools.is_empty() {
            return Ok((Choice::Final(r.message.content.clone()), r.message, usage));
        }
    }
    // Constrained: the schema leaves the model only valid shapes.
    let mut constrained = messages.to_vec();
    constrained.push(Message::system(describe_tools(tools)));
    let request = ChatRequest {
        messages: constrained,
        tools: vec![],
        response_format: Some(ResponseFormat::JsonSchema { name: "next_action".into(), schema: choice_schema(tools) }),
    };
    let r = model.chat(&request, sink).await?;
    add(&mut usage, r.usage);
    let choice = parse_choice(&r.message.content).map_err(LlmError::Malformed)?;
    if matches!(choice, Choice::Calls(_)) && mode == ToolMode::Auto && state == UNKNOWN {
        // Native was offered and declined, yet the model wanted a tool: this server
        // does not emit tool calls, so skip straight to the schema from now on.
        support.0.store(SCHEMA_ONLY, Ordering::Relaxed);
    }
    // The message stays plain text (the JSON the model wrote): a server without
    // native tool calls may not accept `tool_calls` / `tool` messages back.
    Ok((choice, r.message, usage))
}

fn add(total: &mut Usage, more: Usage) {
    total.prompt_tokens += more.prompt_tokens;
    total.completion_tokens += more.completion_tokens;
    total.estimated |= more.estimated;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "weather".into(),
            description: "Weather for a city.".into(),
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}),
        }
    }

    #[test]
    fn calls_are_checked_against_the_schema() {
        let call = |args: Value| ToolCall { id: "c".into(), name: "weather".into(), arguments: args };
        assert!(check_call(&call(json!({"city": "Paris"})), &[weather()]).is_ok());
        let e = check_call(&call(json!({"days": 0})), &[weather()]).unwrap_err();
        assert!(e.contains("\"city\" is a required property"), "{e}");
        assert!(e.contains("/days"), "{e}");
        let e = check_call(&ToolCall { name: "news".into(), ..call(json!({})) }, &[weather()]).unwrap_err();
        assert!(e.contains("no tool `news`"), "{e}");
    }

    #[test]
    fn constrained_answers_parse_into_choices() {
        assert_eq!(parse_choice(r#"{"final_answer": "42"}"#).unwrap(), Choice::Final("42".into()));
        let Choice::Calls(c) = parse_choice(r#" {"tool": "weather", "arguments": {"city": "Oslo"}} "#).unwrap() else {
            panic!("not a call")
        };
        assert_eq!(c[0].arguments, json!({"city": "Oslo"}));
        assert!(parse_choice("sure!").is_err());
        let schema = choice_schema(&[weather()]);
        assert_eq!(schema["anyOf"].as_array().unwrap().len(), 2);
        let v = jsonschema::validator_for(&schema).unwrap();
        assert!(v.is_valid(&json!({"tool": "weather", "arguments": {"city": "Rome"}})));
        assert!(!v.is_valid(&json!({"tool": "weather", "arguments": {}})));
        assert!(v.is_valid(&json!({"final_answer": "done"})));
    }
}
