//! Crews (`crews/*.yaml`): agents and tasks, compiled to a graph so that
//! checkpoints, approvals, streaming and the API work for crews unchanged.
//!
//! Each task becomes an agent node writing a channel named after the task. A
//! task depends on the tasks in its `context`, or else on the task before it;
//! tasks whose dependencies are met together run in the same step (so
//! independent tasks and `async_execution: true` run in parallel). A task with
//! `human_input: true` is followed by an approval of its output: approve goes
//! on, edit replaces the output, reject runs the task again with the
//! reviewer's comment in its prompt. `{topic}` and `{{ topic }}` in texts are
//! the crew's inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crewgraph_engine::graph::Condition;
use crewgraph_engine::{ChannelSpec, GraphBuilder, NodeSpec, Reducer};
use crewgraph_llm::tools::ToolMode;
use crewgraph_llm::{ChatModel, ModelProfile};
use serde_json::json;

use crate::error::{SpecError, SpecErrors};
use crate::graph_file::GraphDef;
use crate::nodes::agent::{AgentNode, AgentSpec};
use crate::nodes::approval::ApprovalNode;
use crate::nodes::builtin_tool;
use crate::recall::Recall;
use crate::template::{Expr, ValueTemplate};
use crate::yaml::{Fields, Kind, Loc, Yaml};

pub(crate) struct Agent {
    role: String,
    goal: String,
    backstory: Option<String>,
    model: Arc<dyn ChatModel>,
    tools: Vec<String>,
    max_iter: u32,
    max_rpm: Option<u32>,
    /// `memory:` of the agent; the crew's when absent.
    memory: Option<bool>,
    /// Collections searched for every task of this agent, beside the crew's.
    knowledge: Vec<String>,
}

pub(crate) struct Task {
    file: String,
    name: String,
    loc: Loc,
    description: String,
    expected_output: String,
    agent: String,
    agent_loc: Loc,
    context: Option<Vec<String>>,
    human_input: bool,
    async_execution: bool,
    tools: Option<Vec<String>>,
    output_schema: Option<serde_json::Value>,
    max_repairs: u32,
    /// A requirement the output must meet, checked by the model.
    guardrail: Option<String>,
    guardrail_max_retries: u32,
}

/// Rewrites CrewAI's `{topic}` and Jinja's `{{ topic }}` to `{{ state.topic }}`,
/// collecting the input names it meets.
pub fn interpolate(text: &str, inputs: &mut BTreeSet<String>) -> String {
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(inner) = tail.strip_prefix("{{") {
            if let Some(end) = inner.find("}}") {
                let name = inner[..end].trim();
                if ident(name) {
                    inputs.insert(name.to_string());
                    out.push_str(&format!("{{{{ state.{name} }}}}"));
                } else {
                    out.push_str(&tail[..end + 4]);
                }
                rest = &inner[end + 2..];
                continue;
            }
        } else if let Some(end) = tail[1..].find('}') {
            let name = &tail[1..1 + end];
            if ident(name) {
                inputs.insert(name.to_string());
                out.push_str(&format!("{{{{ state.{name} }}}}"));
                rest = &tail[end + 2..];
                continue;
            }
        }
        out.push('{');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

/// The model used when a crew declares none: the `OPENAI_MODEL_NAME` (or
/// `MODEL`) model on the server of `OPENAI_BASE_URL`, as CrewAI does.
fn default_model() -> Result<Arc<dyn ChatModel>, String> {
    let name =
        std::env::var("OPENAI_MODEL_NAME").or_else(|_| std::env::var("MODEL")).unwrap_or_else(|_| "gpt-4o-mini".into());
    crewgraph_llm::connect(&ModelProfile::new("default", &name)).map_err(|e| e.to_string())
}

pub fn compile(file: &str, root: &Yaml, registry: &crate::nodes::Registry) -> Result<GraphDef, SpecErrors> {
    let mut f = Fields::new(file, root, "the crew")?;
    let name = f.req_str("name")?.to_string();
    let description = f.opt_str("description")?.map(str::to_string);
    let _ = f.opt_bool("verbose")?;
    let hierarchical = match f.opt("process") {
        None => false,
        Some(p) => match p.as_str() {
            Some("sequential") => false,
            Some("hierarchical") => true,
            _ => return Err(f.err(p, "`process`: expected `sequential` or `hierarchical`").into()),
        },
    };
    let models = match f.opt("models") {
        Some(section) => crate::models::read(file, section)?,
        None => Default::default(),
    };
    // A hierarchical crew's manager: `manager_llm` names its model (default: the crew's only model).
    let manager = match (hierarchical, f.opt("manager_llm")) {
        (false, Some(at)) => return Err(f.err(at, "`manager_llm` needs `process: hierarchical`").into()),
        (false, None) => None,
        (true, Some(at)) => {
            let m = at.as_str().unwrap_or_default();
            Some(models.get(m).cloned().ok_or_else(|| f.err(at, format!("unknown model `{m}` in `manager_llm`")))?)
        }
        (true, None) if models.len() == 1 => models.values().next().cloned(),
        (true, None) if models.is_empty() => Some(default_model().map_err(|m| f.err(root, m))?),
        (true, None) => return Err(f.err(root, "a hierarchical crew with several models needs `manager_llm`").into()),
    };
    let mut inputs: BTreeSet<String> = BTreeSet::new();
    let mut typed_inputs: Vec<ChannelSpec> = Vec::new();
    if let Some(section) = f.opt("inputs") {
        let entries = section
            .entries()
            .ok_or_else(|| f.err(section, "`inputs`: expected a mapping of input name to {type, default}"))?;
        for (k, v) in entries {
            let mut c = ChannelSpec::new(&k.name, Reducer::Replace);
            match &v.kind {
                Kind::Str(t) => c.r#type = Some(t.clone()),
                Kind::Map(_) => {
                    let what = format!("input `{}`", k.name);
                    let mut i = Fields::new(file, v, &what)?;
                    c.r#type = i.opt_str("type")?.map(str::to_string);
                    c.default = i.opt("default").map(Yaml::to_json);
                    i.opt("description");
                    i.finish()?;
                }
                Kind::Null => {}
                _ => return Err(f.err(v, "an input is a type name or {type, default}").into()),
            }
            inputs.insert(k.name.clone());
            typed_inputs.push(c);
        }
    }
    let mut tools = BTreeMap::new();
    if let Some(section) = f.opt("tools") {
        for (k, v) in
            section.entries().ok_or_else(|| f.err(section, "`tools`: expected a mapping of tool name to tool"))?
        {
            let tool = if v.get("retrieve").is_some() {
                crate::retrieve::declare_tool(file, &k.name, v, registry.memory())?
            } else {
                crate::http_tool::declare(file, &k.name, v, &BTreeSet::new())?
            };
            tools.insert(k.name.clone(), tool);
        }
    }

    let agents_at = f.req("agents")?;
    let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
    for (k, v) in
        agents_at.entries().ok_or_else(|| f.err(agents_at, "`agents`: expected a mapping of agent name to agent"))?
    {
        agents.insert(k.name.clone(), read_agent(file, &k.name, v, &models, &tools, Dialect::Crew, &mut vec![])?);
    }
    let memory = f.opt_bool("memory")?.unwrap_or(false);
    let knowledge = read_knowledge(&mut f)?;
    let tasks_at = f.req("tasks")?;
    let mut tasks: Vec<Task> = Vec::new();
    for (k, v) in
        tasks_at.entries().ok_or_else(|| f.err(tasks_at, "`tasks`: expected a mapping of task name to task"))?
    {
        tasks.push(read_task(file, &k.name, k.loc, v, Dialect::Crew, &mut vec![])?);
    }
    if tasks.is_empty() {
        return Err(f.err(tasks_at, "the crew has no tasks").into());
    }
    f.finish()?;

    let parts = Parts {
        name,
        description,
        inputs,
        typed_inputs,
        agents,
        tasks,
        tools,
        warnings: vec![],
        manager,
        memory,
        knowledge,
        handle: registry.memory(),
    };
    assemble(file, root.loc, parts)
}

/// A crew read from YAML (a crew file, or CrewAI's two files).
pub(crate) struct Parts {
    pub name: String,
    pub description: Option<String>,
    pub inputs: BTreeSet<String>,
    pub typed_inputs: Vec<ChannelSpec>,
    pub agents: BTreeMap<String, Agent>,
    pub tasks: Vec<Task>,
    pub tools: BTreeMap<String, Arc<dyn crewgraph_engine::Tool>>,
    pub warnings: Vec<SpecError>,
    /// The manager's model, for `process: hierarchical`.
    pub manager: Option<Arc<dyn ChatModel>>,
    /// Long-term memory for every agent that does not say otherwise.
    pub memory: bool,
    /// Collections searched for every task.
    pub knowledge: Vec<String>,
    /// Where knowledge and long-term memory are kept.
    pub handle: crewgraph_memory::MemoryHandle,
}

/// `knowledge:` a collection name or a list of them.
fn read_knowledge(f: &mut Fields<'_>) -> Result<Vec<String>, SpecError> {
    let at = f.opt("knowledge");
    let names = f.opt_strings("knowledge")?.unwrap_or_default();
    for n in &names {
        if let (Err(e), Some(at)) = (crewgraph_memory::store::check_collection_name(n), at) {
            return Err(f.err(at, format!("`knowledge`: {e}")));
        }
    }
    Ok(names)
}

/// Compiles a crew's parts into a graph.
pub(crate) fn assemble(file: &str, root_loc: Loc, parts: Parts) -> Result<GraphDef, SpecErrors> {
    let Parts {
        name,
        description,
        mut inputs,
        typed_inputs,
        agents,
        tasks,
        tools,
        warnings,
        manager,
        memory,
        knowledge,
        handle: memory_handle,
    } = parts;
    // Check references and find each task's dependencies.
    let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut previous: Option<String> = None;
    for t in &tasks {
        if !agents.contains_key(&t.agent) {
            let known: Vec<&str> = agents.keys().map(String::as_str).collect();
            return Err(SpecError::at(
                file,
                t.agent_loc,
                format!("task `{}` names unknown agent `{}` (agents: {})", t.name, t.agent, known.join(", ")),
            )
            .into());
        }
        let d = match &t.context {
            Some(ctx) => {
                for c in ctx {
                    if !names.contains(c) || c == &t.name {
                        return Err(SpecError::at(
                            file,
                            t.loc,
                            format!("task `{}`: `context` names unknown task `{c}`", t.name),
                        )
                        .into());
                    }
                }
                ctx.clone()
            }
            None if t.async_execution => vec![],
            None => previous.clone().into_iter().collect(),
        };
        deps.insert(t.name.clone(), d);
        if !t.async_execution {
            previous = Some(t.name.clone());
        }
    }

    // Texts -> templates over the state; inputs found there become channels.
    let mut texts: BTreeMap<String, (String, String)> = BTreeMap::new();
    for t in &tasks {
        texts.insert(
            t.name.clone(),
            (interpolate(&t.description, &mut inputs), interpolate(&t.expected_output, &mut inputs)),
        );
    }
    let mut agent_texts: BTreeMap<String, (String, Option<String>, String)> = BTreeMap::new();
    for (k, a) in &agents {
        agent_texts.insert(
            k.clone(),
            (
                interpolate(&a.goal, &mut inputs),
                a.backstory.as_ref().map(|b| interpolate(b, &mut inputs)),
                interpolate(&a.role, &mut inputs),
            ),
        );
    }

    let mut builder = GraphBuilder::new(&name);
    let mut channels: BTreeSet<String> = BTreeSet::new();
    for input in &inputs {
        if names.contains(input) {
            return Err(SpecError::at(
                file,
                root_loc,
                format!("input `{input}` has the name of a task; rename one of them"),
            )
            .into());
        }
        let spec = typed_inputs
            .iter()
            .find(|c| &c.name == input)
            .cloned()
            .unwrap_or_else(|| ChannelSpec::new(input, Reducer::Replace));
        channels.insert(input.clone());
        builder = builder.channel(spec);
    }
    for t in &tasks {
        channels.insert(t.name.clone());
        builder = builder.channel(ChannelSpec { r#type: None, ..ChannelSpec::new(&t.name, Reducer::Replace) });
        if t.human_input {
            channels.insert(review(&t.name));
            builder = builder.channel(ChannelSpec::new(review(&t.name), Reducer::Replace));
        }
    }
    let compile_text = |text: &str, at: Loc| {
        ValueTemplate::compile(&json!(text), &channels).map_err(|m| SpecErrors::from(SpecError::at(file, at, m)))
    };
    let human: BTreeSet<&str> = tasks.iter().filter(|t| t.human_input).map(|t| t.name.as_str()).collect();
    let done = |t: &str| if human.contains(t) { review(t) } else { t.to_string() };

    // In a hierarchical crew every task goes to the manager, who delegates to these.
    let mut coworkers: Vec<(String, Arc<AgentNode>)> = Vec::new();
    if manager.is_some() {
        for (key, a) in &agents {
            let (goal, backstory, role) = &agent_texts[key];
            let mut own_tools = Vec::new();
            for n in &a.tools {
                own_tools.extend(tools.get(n).cloned().or_else(|| builtin_tool(n)));
            }
            let coworker = AgentNode::new(AgentSpec {
                model: a.model.clone(),
                role: compile_text(role, root_loc)?,
                goal: compile_text(goal, root_loc)?,
                backstory: backstory.as_deref().map(|b| compile_text(b, root_loc)).transpose()?,
                task: ValueTemplate::Literal(json!("")),
                expected_output: None,
                tools: own_tools,
                max_iter: a.max_iter,
                max_rpm: a.max_rpm,
                mode: ToolMode::Auto,
                into: String::new(),
                output_schema: None,
                max_repairs: 0,
                coworkers: vec![],
                guardrail: None,
                guardrail_max_retries: 0,
                recall: None,
            });
            coworkers.push((a.role.clone(), Arc::new(coworker)));
        }
    }
    for t in &tasks {
        let agent = &agents[&t.agent];
        let (description, expected) = &texts[&t.name];
        let mut prompt = description.clone();
        for c in &deps[&t.name] {
            prompt.push_str(&format!("\n\nContext from the task `{c}`:\n{{{{ state.{c} }}}}"));
        }
        if t.human_input {
            let r = review(&t.name);
            prompt.push_str(&format!(
                "{{% if state.{r} and state.{r}.action == 'reject' %}}\n\nA reviewer rejected your previous answer:\n{{{{ state.{} }}}}\nTheir comment: {{{{ state.{r}.comment }}}}\nWrite a new answer that addresses it.{{% endif %}}",
                t.name
            ));
        }
        let (goal, backstory, _) = &agent_texts[&t.agent];
        let tool_names = t.tools.clone().unwrap_or_else(|| agent.tools.clone());
        let mut agent_tools = Vec::new();
        for n in &tool_names {
            agent_tools.push(tools.get(n).cloned().or_else(|| builtin_tool(n)).ok_or_else(|| {
                SpecErrors::from(SpecError::at(&t.file, t.loc, format!("task `{}` uses unknown tool `{n}`", t.name)))
            })?);
        }
        let mut spec = AgentSpec {
            model: agent.model.clone(),
            role: compile_text(&agent_texts[&t.agent].2, t.loc)?,
            goal: compile_text(goal, t.loc)?,
            backstory: backstory.as_deref().map(|b| compile_text(b, t.loc)).transpose()?,
            task: compile_text(&prompt, t.loc)?,
            expected_output: Some(compile_text(expected, t.loc)?),
            tools: agent_tools,
            max_iter: agent.max_iter,
            max_rpm: agent.max_rpm,
            mode: ToolMode::Auto,
            into: t.name.clone(),
            output_schema: t.output_schema.clone(),
            max_repairs: t.max_repairs,
            coworkers: vec![],
            guardrail: t
                .guardrail
                .as_deref()
                .map(|g| compile_text(&interpolate(g, &mut BTreeSet::new()), t.loc))
                .transpose()?,
            guardrail_max_retries: t.guardrail_max_retries,
            recall: Some(Recall {
                memory: memory_handle.clone(),
                knowledge: knowledge.iter().chain(&agent.knowledge).cloned().collect(),
                long_term: agent.memory.unwrap_or(memory).then(|| (name.clone(), t.agent.clone())),
            }),
        };
        if let Some(model) = &manager {
            let roles: Vec<&str> = coworkers.iter().map(|(r, _)| r.as_str()).collect();
            spec.model = model.clone();
            spec.role = ValueTemplate::Literal(json!("Crew Manager"));
            spec.goal = ValueTemplate::Literal(json!(
                "Get each task done well by delegating it to the right coworker and checking their result"
            ));
            spec.backstory = Some(ValueTemplate::Literal(json!(format!(
                "You lead a team of: {}. Delegate with `delegate_work`, ask with `ask_question`, then answer with the final result.",
                roles.join(", ")
            ))));
            spec.tools = vec![];
            spec.max_iter = 10;
            spec.coworkers = coworkers.clone();
        }
        let node = AgentNode::new(spec);
        builder = builder.node(NodeSpec::new(&t.name, Arc::new(node)));
        if t.human_input {
            let r = review(&t.name);
            let approval = ApprovalNode {
                // The reviewer sees the task and its output.
                payload: Some(ValueTemplate::Object(vec![
                    ("task".into(), ValueTemplate::Literal(json!(t.name))),
                    ("output".into(), ValueTemplate::Expr(format!("state.{}", t.name))),
                ])),
                actions: vec!["approve".into(), "reject".into(), "edit".into()],
                into: r.clone(),
                edit_into: Some(t.name.clone()),
                expires_in_s: None,
                on_expiry: None,
            };
            builder = builder.node(NodeSpec::new(&r, Arc::new(approval)));
            builder = builder.edge(&t.name, &r);
            let redo = Expr::compile(&format!("state.{r}.action == 'reject'"), &channels)
                .map_err(|m| SpecError::at(&t.file, t.loc, m))?;
            builder = builder.conditional_edge(&r, &t.name, Arc::new(redo));
        }
        if deps[&t.name].is_empty() {
            builder = builder.entry(&t.name);
        }
        // Runs once every dependency is done (and approved, where a person reviews it).
        let ready: Vec<String> = deps[&t.name]
            .iter()
            .map(|d| {
                if human.contains(d.as_str()) {
                    format!("(state.{} is not none and state.{}.action != 'reject')", review(d), review(d))
                } else {
                    format!("state.{d} is not none")
                }
            })
            .collect();
        for d in &deps[&t.name] {
            let cond: Arc<dyn Condition> =
                Arc::new(Expr::compile(&ready.join(" and "), &channels).map_err(|m| SpecError::at(&t.file, t.loc, m))?);
            builder = builder.conditional_edge(&done(d), &t.name, cond);
        }
    }
    builder = builder.output(names.clone());
    let graph = builder
        .build()
        .map_err(|errs| SpecErrors(errs.into_iter().map(|e| SpecError::at(file, root_loc, e.message)).collect()))?;
    let required_inputs =
        inputs.iter().filter(|i| !typed_inputs.iter().any(|c| &&c.name == i && c.default.is_some())).cloned().collect();
    Ok(GraphDef { graph: Arc::new(graph), file: file.to_string(), description, required_inputs, warnings })
}

fn review(task: &str) -> String {
    format!("review_{task}")
}

/// Which YAML a crew comes from: crewgraph's crew files are strict; CrewAI's
/// own files accept the fields CrewAI documents, warning about those ignored here.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Crew,
    CrewAi,
}

const CREWAI_AGENT_IGNORED: &[&str] = &[
    "function_calling_llm",
    "max_execution_time",
    "step_callback",
    "cache",
    "system_template",
    "prompt_template",
    "response_template",
    "allow_code_execution",
    "max_retry_limit",
    "respect_context_window",
    "code_execution_mode",
    "multimodal",
    "inject_date",
    "date_format",
    "reasoning",
    "max_reasoning_attempts",
    "embedder",
    "knowledge_sources",
    "use_system_prompt",
    "memory",
    "tools",
];
const CREWAI_TASK_IGNORED: &[&str] = &[
    "markdown",
    "config",
    "output_file",
    "create_directory",
    "output_json",
    "output_pydantic",
    "callback",
    "guardrails",
    "name",
    "tools",
];

/// Turns present CrewAI fields that do nothing here into warnings.
fn ignore_crewai(f: &mut Fields<'_>, keys: &'static [&'static str], what: &str, warnings: &mut Vec<SpecError>) {
    for key in keys {
        if let Some(at) = f.opt(key) {
            warnings.push(f.err(at, format!("{what}: `{key}` is a CrewAI field crewgraph ignores")));
        }
    }
}

pub(crate) fn read_agent(
    file: &str,
    name: &str,
    v: &Yaml,
    models: &crate::models::Models,
    tools: &BTreeMap<String, Arc<dyn crewgraph_engine::Tool>>,
    dialect: Dialect,
    warnings: &mut Vec<SpecError>,
) -> Result<Agent, SpecError> {
    let what = format!("agent `{name}`");
    let mut f = Fields::new(file, v, &what)?;
    let role = f.req_str("role")?.trim().to_string();
    let goal = f.req_str("goal")?.trim().to_string();
    let backstory = f.opt_str("backstory")?.map(|b| b.trim().to_string());
    if dialect == Dialect::CrewAi {
        ignore_crewai(&mut f, CREWAI_AGENT_IGNORED, &what, warnings);
    }
    let model = match f.opt("llm") {
        // CrewAI names a model directly, `provider/model` or `model`: use it on the configured server.
        Some(at) if dialect == Dialect::CrewAi && at.as_str().is_some() => {
            let m = at.as_str().unwrap_or_default();
            let model = m.split_once('/').map(|(_, m)| m).unwrap_or(m);
            crewgraph_llm::connect(&ModelProfile::new(name, model)).map_err(|e| f.err(at, e.to_string()))?
        }
        Some(at) => {
            let m = at.as_str().ok_or_else(|| f.err(at, "`llm`: expected a model name from `models:`"))?;
            models.get(m).cloned().ok_or_else(|| {
                let known: Vec<&str> = models.keys().map(String::as_str).collect();
                f.err(at, format!("unknown model `{m}` (models: [{}])", known.join(", ")))
            })?
        }
        None if models.len() == 1 => models.values().next().cloned().unwrap_or_else(|| unreachable!()),
        None if models.is_empty() => default_model().map_err(|m| f.err(v, m))?,
        None => return Err(f.err(v, format!("{what} needs `llm:` naming one of the crew's models"))),
    };
    // CrewAI assigns tools in Python: its YAML `tools` are reported as ignored above.
    let tool_names = if dialect == Dialect::CrewAi { vec![] } else { f.opt_strings("tools")?.unwrap_or_default() };
    for t in &tool_names {
        if !tools.contains_key(t) && builtin_tool(t).is_none() {
            let at = v.get("tools").unwrap_or(v);
            return Err(f.err(at, format!("unknown tool `{t}` (declare it under `tools:` or use a built-in)")));
        }
    }
    let max_iter = f.opt_u64("max_iter")?.unwrap_or(20).clamp(1, 100) as u32;
    let max_rpm = f.opt_u64("max_rpm")?.map(|r| r.min(u32::MAX as u64) as u32);
    let _ = f.opt_bool("allow_delegation")?;
    let _ = f.opt_bool("verbose")?;
    let (memory, knowledge) = match dialect {
        Dialect::Crew => (f.opt_bool("memory")?, read_knowledge(&mut f)?),
        Dialect::CrewAi => (None, vec![]),
    };
    f.finish()?;
    Ok(Agent { role, goal, backstory, model, tools: tool_names, max_iter, max_rpm, memory, knowledge })
}

pub(crate) fn read_task(
    file: &str,
    name: &str,
    loc: Loc,
    v: &Yaml,
    dialect: Dialect,
    warnings: &mut Vec<SpecError>,
) -> Result<Task, SpecError> {
    let what = format!("task `{name}`");
    let mut f = Fields::new(file, v, &what)?;
    if dialect == Dialect::CrewAi {
        ignore_crewai(&mut f, CREWAI_TASK_IGNORED, &what, warnings);
    }
    let description = f.req_str("description")?.trim().to_string();
    let expected_output = f.req_str("expected_output")?.trim().to_string();
    let agent_at = f.req("agent")?;
    let agent = f.req_str("agent")?.to_string();
    let context = f.opt_strings("context")?;
    let human_input = f.opt_bool("human_input")?.unwrap_or(false);
    let async_execution = f.opt_bool("async_execution")?.unwrap_or(false);
    let tools = if dialect == Dialect::CrewAi { None } else { f.opt_strings("tools")? };
    let (output_schema, max_repairs) = crate::nodes::llm::read_output_schema(&mut f)?;
    let guardrail = f.opt_str("guardrail")?.map(|g| g.trim().to_string());
    let guardrail_max_retries = f.opt_u64("guardrail_max_retries")?.unwrap_or(2).min(10) as u32;
    f.finish()?;
    Ok(Task {
        guardrail,
        guardrail_max_retries,
        file: file.to_string(),
        output_schema,
        max_repairs,
        name: name.to_string(),
        loc,
        description,
        expected_output,
        agent,
        agent_loc: agent_at.loc,
        context,
        human_input,
        async_execution,
        tools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crewai_and_jinja_placeholders_become_state_reads() {
        let mut inputs = BTreeSet::new();
        let t = interpolate(
            "About {topic} for {{ audience }}; keep {{ state.x }} and {not an input} and {{'{'}}",
            &mut inputs,
        );
        assert_eq!(
            t,
            "About {{ state.topic }} for {{ state.audience }}; keep {{ state.x }} and {not an input} and {{'{'}}"
        );
        assert_eq!(inputs.into_iter().collect::<Vec<_>>(), ["audience", "topic"]);
    }
}
