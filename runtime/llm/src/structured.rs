//! Structured output: an answer that must be JSON valid against a schema. The
//! schema goes to the server as `response_format` (llama-server and OpenAI
//! enforce it); the answer is validated here anyway, and an invalid one is
//! sent back with the errors for a bounded number of repairs.

use serde_json::Value;

use crate::error::LlmError;
use crate::model::{ChatModel, TokenSink};
use crate::types::{ChatRequest, Message, ResponseFormat, Usage};

/// Why an answer does not fit `schema`, or `None` when it does.
pub fn violations(schema: &Value, answer: &Value) -> Option<String> {
    let validator = match jsonschema::validator_for(schema) {
        Ok(v) => v,
        Err(e) => return Some(format!("the schema itself is invalid: {e}")),
    };
    let errors: Vec<String> = validator
        .iter_errors(answer)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
        })
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The text of an answer as JSON, tolerating a Markdown code fence around it.
pub fn parse_json(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).unwrap_or(t);
    let t = t.strip_suffix("```").unwrap_or(t).trim();
    serde_json::from_str(t).map_err(|e| format!("the answer is not JSON ({e})"))
}

/// Asks until the answer is valid JSON for `schema`, repairing at most `max_repairs` times.
pub async fn complete(
    model: &dyn ChatModel,
    mut messages: Vec<Message>,
    schema: &Value,
    max_repairs: u32,
    sink: Option<&dyn TokenSink>,
) -> Result<(Value, Usage), LlmError> {
    let mut usage = Usage::default();
    let mut repairs = 0;
    loop {
        let request = ChatRequest {
            messages: messages.clone(),
            tools: vec![],
            response_format: Some(ResponseFormat::JsonSchema { name: "output".into(), schema: schema.clone() }),
        };
        let r = model.chat(&request, sink).await?;
        usage.prompt_tokens += r.usage.prompt_tokens;
        usage.completion_tokens += r.usage.completion_tokens;
        usage.estimated |= r.usage.estimated;
        let problem = match parse_json(&r.message.content) {
            Ok(v) => match violations(schema, &v) {
                None => return Ok((v, usage)),
                Some(p) => p,
            },
            Err(p) => p,
        };
        if repairs >= max_repairs {
            return Err(LlmError::Schema(format!("no valid answer after {} repairs: {problem}", max_repairs)));
        }
        repairs += 1;
        messages.push(r.message);
        messages.push(Message::user(format!(
            "Your answer does not match the required JSON Schema: {problem}. Answer again with JSON only, matching this schema: {schema}"
        )));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fenced_json_parses_and_violations_name_the_path() {
        assert_eq!(parse_json("```json\n{\"a\": 1}\n```").unwrap(), json!({"a": 1}));
        let schema = json!({"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]});
        assert!(violations(&schema, &json!({"score": 3})).is_none());
        let v = violations(&schema, &json!({"score": "high"})).unwrap();
        assert!(v.starts_with("/score:"), "{v}");
    }
}
