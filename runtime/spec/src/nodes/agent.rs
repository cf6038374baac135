//! `agent`: a ReAct loop. The model reasons with the agent's role, goal and
//! backstory, calls tools until it gives a final answer, and writes it to a
//! channel.
//!
//! - `max_iter` is strict: at the limit the model is asked for its final
//!   answer with no tools offered.
//! - A repeated identical call is refused (the model is told to use the result
//!   it has); results are cached within the run, failures never are.
//! - Arguments are checked against the tool's JSON Schema first; a bad call goes
//!   back to the model as an error message.
//! - A tool with `requires_approval` pauses the run with the exact call. The
//!   conversation travels in the interrupt, so the resumed agent carries on
//!   from the decision without asking the model again.
//! - `max_rpm` limits this agent's model calls per minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput, Tool, ToolCall as EngineToolCall};
use crewgraph_llm::ratelimit::RateLimiter;
use crewgraph_llm::tools::{Choice, NativeSupport, ToolMode, check_call, choose};
use crewgraph_llm::{ChatModel, ChatRequest, Message, ToolCall, ToolSpec, structured};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::tool::builtin_tool;
use super::{BuildCtx, BuiltNode, template};
use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::Fields;

pub struct AgentNode {
    model: Arc<dyn ChatModel>,
    role: ValueTemplate,
    /// The role as written, for approval payloads.
    role_label: String,
    goal: ValueTemplate,
    backstory: Option<ValueTemplate>,
    task: ValueTemplate,
    expected_output: Option<ValueTemplate>,
    tools: Vec<Arc<dyn Tool>>,
    max_iter: u32,
    mode: ToolMode,
    limiter: RateLimiter,
    support: NativeSupport,
    /// (run, tool, arguments) -> result, for successful calls only.
    cache: Mutex<HashMap<(String, String, String), Value>>,
    into: String,
    output_schema: Option<Value>,
    max_repairs: u32,
    /// For a manager: the agents it can delegate to, by role.
    coworkers: Vec<(String, Arc<AgentNode>)>,
    /// A requirement the final answer is checked against (by the model), with retries.
    guardrail: Option<ValueTemplate>,
    guardrail_max_retries: u32,
    recall: Option<crate::recall::Recall>,
}

/// How the loop ended: an answer, or a pause for a person.
enum Ending {
    Answer(String),
    Stop(NodeOutput),
}

const DELEGATE: &str = "delegate_work";
const ASK: &str = "ask_question";

/// The conversation so far; saved in a tool-approval interrupt.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    messages: Vec<Message>,
    iterations: u32,
    /// `(tool, arguments)` already called.
    called: Vec<(String, String)>,
    /// Calls of the current turn not yet answered, the first awaiting approval.
    pending: Vec<ToolCall>,
    /// Whether this turn's calls came natively (answered with `tool` messages).
    native: bool,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let model = super::llm::pick_model(f, ctx)?;
    let role_at = f.req("role")?;
    let role = template(f, role_at, ctx.channels)?;
    let goal_at = f.req("goal")?;
    let goal = template(f, goal_at, ctx.channels)?;
    let backstory = match f.opt("backstory") {
        Some(b) => Some(template(f, b, ctx.channels)?),
        None => None,
    };
    let task_at = f.req("task")?;
    let task = template(f, task_at, ctx.channels)?;
    let expected_output = match f.opt("expected_output") {
        Some(e) => Some(template(f, e, ctx.channels)?),
        None => None,
    };
    let mut tools = Vec::new();
    for name in f.opt_strings("tools")?.unwrap_or_default() {
        let tool = ctx.tools.get(&name).cloned().or_else(|| builtin_tool(&name)).ok_or_else(|| {
            let at = f.node.get("tools").unwrap_or(f.node);
            f.err(at, format!("unknown tool `{name}` (declare it under `tools:` or use a built-in)"))
        })?;
        tools.push(tool);
    }
    let max_iter = f.opt_u64("max_iter")?.unwrap_or(15).clamp(1, 100) as u32;
    let max_rpm = f.opt_u64("max_rpm")?.map(|r| r.min(u32::MAX as u64) as u32);
    let mode = match f.opt("tool_calling") {
        None => ToolMode::Auto,
        Some(at) => match at.as_str() {
            Some("auto") => ToolMode::Auto,
            Some("native") => ToolMode::Native,
            Some("json_schema") => ToolMode::Schema,
            _ => return Err(f.err(at, "`tool_calling`: expected `auto`, `native` or `json_schema`")),
        },
    };
    let into_at = f.req("into")?;
    let into = f.req_str("into")?.to_string();
    if !ctx.channels.contains(&into) {
        return Err(f.err(into_at, format!("`into` names unknown channel `{into}`")));
    }
    let (output_schema, max_repairs) = super::llm::read_output_schema(f)?;
    let spec = AgentSpec {
        model,
        role,
        goal,
        backstory,
        task,
        expected_output,
        tools,
        max_iter,
        max_rpm,
        mode,
        into,
        output_schema,
        max_repairs,
        coworkers: vec![],
        guardrail: None,
        guardrail_max_retries: 0,
        recall: None,
    };
    Ok(BuiltNode::new(Arc::new(AgentNode::new(spec))))
}

/// Everything an agent node is made of (crews build these directly).
pub struct AgentSpec {
    pub model: Arc<dyn ChatModel>,
    pub role: ValueTemplate,
    pub goal: ValueTemplate,
    pub backstory: Option<ValueTemplate>,
    pub task: ValueTemplate,
    pub expected_output: Option<ValueTemplate>,
    pub tools: Vec<Arc<dyn Tool>>,
    pub max_iter: u32,
    pub max_rpm: Option<u32>,
    pub mode: ToolMode,
    pub into: String,
    /// The final answer must be JSON valid against this schema.
    pub output_schema: Option<Value>,
    pub max_repairs: u32,
    /// Coworkers a manager delegates to with `delegate_work` / `ask_question`.
    pub coworkers: Vec<(String, Arc<AgentNode>)>,
    pub guardrail: Option<ValueTemplate>,
    pub guardrail_max_retries: u32,
    /// Knowledge collections and long-term memory (crews).
    pub recall: Option<crate::recall::Recall>,
}

impl AgentNode {
    pub fn new(s: AgentSpec) -> Self {
        AgentNode {
            model: s.model,
            role_label: match &s.role {
                ValueTemplate::Literal(Value::String(r)) | ValueTemplate::Text(r) => r.clone(),
                other => format!("{other:?}"),
            },
            role: s.role,
            goal: s.goal,
            backstory: s.backstory,
            task: s.task,
            expected_output: s.expected_output,
            tools: s.tools,
            max_iter: s.max_iter.clamp(1, 100),
            mode: s.mode,
            limiter: RateLimiter::new(s.max_rpm),
            support: NativeSupport::default(),
            cache: Mutex::new(HashMap::new()),
            into: s.into,
            output_schema: s.output_schema,
            max_repairs: s.max_repairs,
            coworkers: s.coworkers,
            guardrail: s.guardrail,
            guardrail_max_retries: s.guardrail_max_retries,
            recall: s.recall.filter(|r| !r.is_empty()),
        }
    }
}

fn text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl AgentNode {
    fn specs(&self) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self
            .tools
            .iter()
            .map(|t| ToolSpec { name: t.name().into(), description: t.description().into(), parameters: t.schema() })
            .collect();
        if !self.coworkers.is_empty() {
            let roles: Vec<&str> = self.coworkers.iter().map(|(r, _)| r.as_str()).collect();
            let params = |what: &str| {
                json!({"type": "object", "properties": {
                    what: {"type": "string"},
                    "context": {"type": "string"},
                    "coworker": {"type": "string", "enum": roles},
                }, "required": [what, "coworker"]})
            };
            specs.push(ToolSpec {
                name: DELEGATE.into(),
                description: "Give a coworker a piece of work, with all the context they need; returns their result."
                    .into(),
                parameters: params("task"),
            });
            specs.push(ToolSpec {
                name: ASK.into(),
                description: "Ask a coworker a question, with the context they need; returns their answer.".into(),
                parameters: params("question"),
            });
        }
        specs
    }

    /// The agent's introduction: role, goal, backstory.
    fn persona(&self, ctx: &NodeContext) -> Result<String, NodeError> {
        let scope = Scope::of_task(ctx);
        let render = |t: &ValueTemplate| t.render(&scope).map(text).map_err(NodeError::fatal);
        let mut persona = format!("You are {}. Your goal: {}", render(&self.role)?, render(&self.goal)?);
        if let Some(b) = &self.backstory {
            persona.push_str(&format!("\n{}", render(b)?));
        }
        Ok(persona)
    }

    /// Runs this agent on work handed over by a manager, as part of the manager's node.
    fn delegate<'a>(
        &'a self,
        ctx: &'a NodeContext,
        work: String,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, NodeError>> + Send + 'a>> {
        Box::pin(async move {
            let mut own = ctx.clone();
            own.node = format!("{}/{}", ctx.node, self.role_label.trim());
            own.resume = None;
            own.asked = None;
            let mut p = Progress {
                messages: vec![Message::system(self.persona(&own)?), Message::user(work)],
                ..Default::default()
            };
            match self.drive(&own, &mut p).await? {
                Ending::Answer(a) => Ok(a),
                Ending::Stop(_) => Err(NodeError::fatal("delegated work cannot use a tool that needs approval")),
            }
        })
    }

    async fn delegate_call(&self, ctx: &NodeContext, call: &ToolCall) -> String {
        let arg = |k: &str| call.arguments.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let who = arg("coworker");
        let Some((_, coworker)) = self.coworkers.iter().find(|(r, _)| r.trim().eq_ignore_ascii_case(who.trim())) else {
            let roles: Vec<&str> = self.coworkers.iter().map(|(r, _)| r.as_str()).collect();
            return format!("Error: there is no coworker `{who}` (coworkers: {})", roles.join(", "));
        };
        let what = if call.name == DELEGATE { arg("task") } else { arg("question") };
        let context = arg("context");
        let work = if context.is_empty() { what } else { format!("{what}\n\nContext:\n{context}") };
        ctx.emit("agent.delegated", json!({"to": who, "kind": call.name}));
        match coworker.delegate(ctx, work).await {
            Ok(answer) => answer,
            Err(e) => format!("Error: {}", e.message),
        }
    }

    async fn opening(&self, ctx: &NodeContext) -> Result<Vec<Message>, NodeError> {
        let persona = self.persona(ctx)?;
        let scope = Scope::of_task(ctx);
        let render = |t: &ValueTemplate| t.render(&scope).map(text).map_err(NodeError::fatal);
        let mut task = render(&self.task)?;
        if let Some(recall) = &self.recall {
            let found = recall.context(ctx, &task).await?;
            task.push_str(&found);
        }
        if let Some(e) = &self.expected_output {
            task.push_str(&format!("\n\nExpected output: {}", render(e)?));
        }
        Ok(vec![Message::system(persona), Message::user(task)])
    }

    fn answer(&self, p: &mut Progress, call: &ToolCall, content: String) {
        if p.native {
            p.messages.push(Message::tool(&call.id, content));
        } else {
            p.messages.push(Message::user(format!("Result of `{}`: {content}", call.name)));
        }
    }

    async fn call_tool(&self, ctx: &NodeContext, p: &Progress, call: &ToolCall, index: usize) -> String {
        if !self.coworkers.is_empty() && (call.name == DELEGATE || call.name == ASK) {
            return self.delegate_call(ctx, call).await;
        }
        let Some(tool) = self.tools.iter().find(|t| t.name() == call.name) else {
            return format!("Error: there is no tool `{}`", call.name);
        };
        let key = (ctx.run_id.clone(), call.name.clone(), call.arguments.to_string());
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            ctx.emit("tool.cached", json!({"tool": call.name}));
            return text(hit);
        }
        let id = EngineToolCall {
            idempotency_key: format!("{}:{}:{index}", ctx.task_id, p.iterations),
            run_id: ctx.run_id.clone(),
            node: ctx.node.clone(),
        };
        ctx.emit("tool.started", json!({"tool": call.name, "args": call.arguments}));
        let result = tool.call(call.arguments.clone(), &id).await;
        ctx.emit("tool.finished", json!({"tool": call.name, "ok": result.is_ok()}));
        match result {
            Ok(v) => {
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(key, v.clone());
                }
                text(v)
            }
            Err(e) => format!("Error: {}", e.message),
        }
    }

    /// Answers the pending calls in order; stops at one that needs approval.
    async fn work_through(&self, ctx: &NodeContext, p: &mut Progress) -> Result<Option<NodeOutput>, NodeError> {
        let specs = self.specs();
        while !p.pending.is_empty() {
            let call = p.pending[0].clone();
            let key = (call.name.clone(), call.arguments.to_string());
            let reply = if p.called.contains(&key) {
                format!(
                    "You already called `{}` with these arguments; the result is above. Use it, or give your final answer.",
                    call.name
                )
            } else if let Err(e) = check_call(&call, &specs) {
                format!("Error: {e}. Call the tool again with valid arguments.")
            } else if self.tools.iter().any(|t| t.name() == call.name && t.requires_approval()) {
                return Ok(Some(NodeOutput::Interrupt {
                    payload: json!({
                        "tool": call.name,
                        "args": call.arguments,
                        "agent": self.role_label,
                        "progress": p,
                    }),
                    actions: vec!["approve".into(), "reject".into(), "edit".into()],
                    expires_in_s: None,
                    on_expiry: None,
                }));
            } else {
                p.called.push(key);
                self.call_tool(ctx, p, &call, p.called.len()).await
            };
            p.pending.remove(0);
            self.answer(p, &call, reply);
        }
        Ok(None)
    }

    /// After a decision on a call that needed approval: run it (approved or edited) or report the rejection.
    async fn apply_decision(&self, ctx: &NodeContext, p: &mut Progress, decision: &Value) {
        if p.pending.is_empty() {
            return;
        }
        let mut call = p.pending.remove(0);
        let reply = match decision.get("action").and_then(Value::as_str) {
            Some("reject") => format!(
                "A reviewer rejected this call{}.",
                decision.get("comment").and_then(Value::as_str).map(|c| format!(": {c}")).unwrap_or_default()
            ),
            action => {
                if action == Some("edit") {
                    call.arguments = decision.get("value").cloned().unwrap_or(Value::Null);
                }
                match check_call(&call, &self.specs()) {
                    Err(e) => format!("Error: {e}"),
                    Ok(()) => {
                        p.called.push((call.name.clone(), call.arguments.to_string()));
                        self.call_tool(ctx, p, &call, p.called.len()).await
                    }
                }
            }
        };
        self.answer(p, &call, reply);
    }

    async fn finish(&self, ctx: &NodeContext, answer: String, p: &Progress) -> Result<NodeOutput, NodeError> {
        let value = match &self.output_schema {
            None => Value::String(answer),
            Some(schema) => {
                match structured::parse_json(&answer).ok().filter(|v| structured::violations(schema, v).is_none()) {
                    Some(v) => v,
                    None => {
                        // Ask for the same answer in the required shape.
                        let mut messages = p.messages.clone();
                        messages.push(Message::assistant(answer));
                        messages.push(Message::user("Give your final answer as JSON matching the required schema."));
                        let (v, usage) =
                            structured::complete(self.model.as_ref(), messages, schema, self.max_repairs, None).await?;
                        self.usage(ctx, usage);
                        v
                    }
                }
            }
        };
        ctx.emit("agent.finished", json!({"iterations": p.iterations}));
        let mut writes = Map::new();
        writes.insert(self.into.clone(), value);
        Ok(NodeOutput::writes(writes))
    }

    /// Finishes the task, then stores its result as long-term memory.
    async fn complete(&self, ctx: &NodeContext, answer: String, p: &Progress) -> Result<NodeOutput, NodeError> {
        let out = self.finish(ctx, answer, p).await?;
        if let (Some(recall), NodeOutput::Writes { writes, .. }) = (&self.recall, &out)
            && let Some(value) = writes.get(&self.into)
        {
            recall.remember(ctx, &self.into, &text(value.clone())).await;
        }
        Ok(out)
    }

    /// The conversation as sent: fitted into the model's context window.
    fn fitted(&self, ctx: &NodeContext, messages: &[Message]) -> Vec<Message> {
        let profile = self.model.profile();
        let reserve = profile.max_tokens.map(|m| m as usize).unwrap_or(profile.context_window / 4);
        let mut sent = messages.to_vec();
        let t = crewgraph_llm::budget::fit(&mut sent, profile.context_window.saturating_sub(reserve));
        if t.dropped_messages + t.truncated_messages > 0 {
            ctx.emit("llm.trimmed", json!({"tokens_before": t.tokens_before, "tokens_after": t.tokens_after}));
        }
        sent
    }

    /// Asks the model whether `answer` meets the guardrail; `None` when it does.
    async fn guardrail_feedback(
        &self,
        ctx: &NodeContext,
        requirement: &str,
        answer: &str,
    ) -> Result<Option<String>, NodeError> {
        let schema = json!({"type": "object", "properties": {"passed": {"type": "boolean"}, "feedback": {"type": "string"}}, "required": ["passed", "feedback"]});
        let messages = vec![
            Message::system("You check an answer against a requirement and say whether it meets it."),
            Message::user(format!(
                "Requirement: {requirement}\n\nAnswer:\n{answer}\n\nDoes the answer meet the requirement? If not, say what to change."
            )),
        ];
        let (verdict, usage) = structured::complete(self.model.as_ref(), messages, &schema, 1, None).await?;
        self.usage(ctx, usage);
        let passed = verdict["passed"].as_bool().unwrap_or(false);
        let feedback = verdict["feedback"].as_str().unwrap_or_default().to_string();
        ctx.emit("agent.guardrail", json!({"passed": passed, "feedback": feedback}));
        Ok((!passed).then_some(feedback))
    }

    /// The ReAct loop from where `p` stands, to an answer or a pause.
    async fn drive(&self, ctx: &NodeContext, p: &mut Progress) -> Result<Ending, NodeError> {
        if let Some(stop) = self.work_through(ctx, p).await? {
            return Ok(Ending::Stop(stop));
        }
        let specs = self.specs();
        loop {
            self.limiter.acquire().await;
            if p.iterations + 1 >= self.max_iter {
                // The last iteration: no tools, a final answer.
                p.messages.push(Message::user("You have used your iterations. Give your final answer now."));
                p.iterations += 1;
                if self.mode == ToolMode::Schema || self.support.schema_only() {
                    // A model that answers in JSON here: hold it to the final-answer shape.
                    let schema = json!({"type": "object", "properties": {"final_answer": {"type": "string"}}, "required": ["final_answer"]});
                    // An answer cut off by the token limit is not JSON: then take the plain answer below.
                    if let Ok((v, usage)) =
                        structured::complete(self.model.as_ref(), p.messages.clone(), &schema, 1, None).await
                    {
                        self.usage(ctx, usage);
                        return Ok(Ending::Answer(v["final_answer"].as_str().unwrap_or_default().to_string()));
                    }
                }
                let r =
                    self.model.chat(&ChatRequest { messages: p.messages.clone(), ..Default::default() }, None).await?;
                self.usage(ctx, r.usage);
                return Ok(Ending::Answer(r.message.content));
            }
            let (choice, message, usage) = choose(
                self.model.as_ref(),
                &self.support,
                self.mode,
                &self.fitted(ctx, &p.messages),
                &specs,
                Some(&super::llm::Tokens(ctx)),
            )
            .await?;
            self.usage(ctx, usage);
            p.iterations += 1;
            match choice {
                Choice::Final(answer) => return Ok(Ending::Answer(answer)),
                Choice::Calls(calls) => {
                    p.native = !message.tool_calls.is_empty();
                    p.messages.push(message);
                    p.pending = calls;
                    if let Some(stop) = self.work_through(ctx, p).await? {
                        return Ok(Ending::Stop(stop));
                    }
                }
            }
        }
    }

    fn usage(&self, ctx: &NodeContext, u: crewgraph_llm::Usage) {
        super::llm::report_usage(ctx, &self.model.profile().name, u);
    }
}

#[async_trait]
impl Node for AgentNode {
    fn kind(&self) -> &str {
        "agent"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let mut p = match (&ctx.asked, &ctx.resume) {
            (Some(asked), Some(decision)) => {
                let mut p: Progress = serde_json::from_value(asked.get("progress").cloned().unwrap_or_default())
                    .map_err(|e| NodeError::fatal(format!("cannot resume the agent: {e}")))?;
                self.apply_decision(&ctx, &mut p, decision).await;
                p
            }
            _ => Progress { messages: self.opening(&ctx).await?, ..Default::default() },
        };
        let mut checks = 0;
        loop {
            let answer = match self.drive(&ctx, &mut p).await? {
                Ending::Answer(a) => a,
                Ending::Stop(out) => return Ok(out),
            };
            let requirement = match &self.guardrail {
                Some(g) => text(g.render(&Scope::of_task(&ctx)).map_err(NodeError::fatal)?),
                None => return self.complete(&ctx, answer, &p).await,
            };
            let Some(feedback) = self.guardrail_feedback(&ctx, &requirement, &answer).await? else {
                return self.complete(&ctx, answer, &p).await;
            };
            if checks >= self.guardrail_max_retries {
                return Err(NodeError::fatal(format!(
                    "the answer still fails the guardrail after {checks} retries: {feedback}"
                )));
            }
            checks += 1;
            p.messages.push(Message::assistant(answer));
            p.messages.push(Message::user(format!(
                "Your answer does not meet this requirement: {requirement}\nFeedback: {feedback}\nWrite a corrected final answer."
            )));
        }
    }
}
