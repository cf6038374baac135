//! `llm`: renders a prompt, asks a model, writes the answer to a channel.
//! Tokens stream as `llm.token` events and usage is reported as `llm.usage`.
//! The prompt is fitted to the model's context window before it is sent.

use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput};
use crewgraph_llm::{ChatModel, ChatRequest, Message, TokenSink, structured};
use serde_json::{Map, Value, json};

use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::Fields;

pub struct LlmNode {
    model: Arc<dyn ChatModel>,
    system: Option<ValueTemplate>,
    prompt: ValueTemplate,
    into: String,
    output_schema: Option<Value>,
    max_repairs: u32,
}

/// Reads `output_schema` (checked to be a valid JSON Schema) and `max_repairs`.
pub(crate) fn read_output_schema(f: &mut Fields<'_>) -> Result<(Option<Value>, u32), SpecError> {
    let schema = match f.opt("output_schema") {
        None => None,
        Some(at) => {
            let schema = at.to_json();
            jsonschema::validator_for(&schema)
                .map_err(|e| f.err(at, format!("`output_schema` is not a valid JSON Schema: {e}")))?;
            Some(schema)
        }
    };
    let repairs = f.opt_u64("max_repairs")?.unwrap_or(2).min(10) as u32;
    Ok((schema, repairs))
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let model = pick_model(f, ctx)?;
    let system = match f.opt("system") {
        Some(s) => Some(template(f, s, ctx.channels)?),
        None => None,
    };
    let prompt_at = f.req("prompt")?;
    let prompt = template(f, prompt_at, ctx.channels)?;
    let into_at = f.req("into")?;
    let into = f.req_str("into")?.to_string();
    if !ctx.channels.contains(&into) {
        return Err(f.err(into_at, format!("`into` names unknown channel `{into}`")));
    }
    let (output_schema, max_repairs) = read_output_schema(f)?;
    Ok(BuiltNode::new(Arc::new(LlmNode { model, system, prompt, into, output_schema, max_repairs })))
}

/// The node's `model:`, or the file's only model.
pub(crate) fn pick_model(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<Arc<dyn ChatModel>, SpecError> {
    let declared = || ctx.models.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
    match f.opt("model") {
        Some(at) => {
            let name = at.as_str().ok_or_else(|| f.err(at, "`model`: expected a model name from `models:`"))?;
            ctx.models
                .get(name)
                .cloned()
                .ok_or_else(|| f.err(at, format!("unknown model `{name}` (declared in `models:`: [{}])", declared())))
        }
        None if ctx.models.len() == 1 => Ok(ctx.models.values().next().cloned().unwrap_or_else(|| unreachable!())),
        None => {
            Err(f.err(f.node, format!("this node needs `model:` naming one of the file's models ([{}])", declared())))
        }
    }
}

/// Reports a model call's tokens as an `llm.usage` event (summed on the run).
pub(crate) fn report_usage(ctx: &NodeContext, model: &str, u: crewgraph_llm::Usage) {
    ctx.emit(
        "llm.usage",
        json!({"model": model, "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "estimated": u.estimated}),
    );
}

/// Streams tokens to the run's events.
pub(crate) struct Tokens<'a>(pub(crate) &'a NodeContext);

impl TokenSink for Tokens<'_> {
    fn token(&self, text: &str) {
        self.0.emit("llm.token", json!({"text": text}));
    }
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[async_trait]
impl Node for LlmNode {
    fn kind(&self) -> &str {
        "llm"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let scope = Scope::of_task(&ctx);
        let mut messages = Vec::new();
        if let Some(s) = &self.system {
            messages.push(Message::system(text_of(s.render(&scope).map_err(NodeError::fatal)?)));
        }
        messages.push(Message::user(text_of(self.prompt.render(&scope).map_err(NodeError::fatal)?)));
        let profile = self.model.profile();
        let reserve = profile.max_tokens.map(|m| m as usize).unwrap_or(profile.context_window / 4);
        let trimmed = crewgraph_llm::budget::fit(&mut messages, profile.context_window.saturating_sub(reserve));
        if trimmed.dropped_messages + trimmed.truncated_messages > 0 {
            ctx.emit(
                "llm.trimmed",
                json!({"tokens_before": trimmed.tokens_before, "tokens_after": trimmed.tokens_after}),
            );
        }
        ctx.emit("llm.started", json!({"model": profile.name}));
        let (value, usage) = match &self.output_schema {
            Some(schema) => {
                structured::complete(self.model.as_ref(), messages, schema, self.max_repairs, Some(&Tokens(&ctx)))
                    .await?
            }
            None => {
                let request = ChatRequest { messages, ..Default::default() };
                let r = self.model.chat(&request, Some(&Tokens(&ctx))).await?;
                (Value::String(r.message.content), r.usage)
            }
        };
        report_usage(&ctx, &profile.name, usage);
        let mut writes = Map::new();
        writes.insert(self.into.clone(), value);
        Ok(NodeOutput::writes(writes))
    }
}
