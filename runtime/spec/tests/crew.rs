//! Crews compile to graphs: sequential tasks with context, parallel tasks in
//! one step, human review with reject-and-redo, placeholders from inputs.

use std::sync::Arc;

use crewgraph_engine::event::CollectSink;
use crewgraph_engine::{
    ApprovalStatus, Checkpointer, Decision, DecisionAction, MemoryStore, RunStatus, RunStore, Runtime,
};
use crewgraph_spec::{Registry, parse_graph};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::{Map, Value, json};

fn crew(base_url: &str, tasks: &str) -> Arc<crewgraph_engine::Graph> {
    let yaml = format!(
        "name: test-crew
models:
  local: {{ base_url: \"{base_url}\", model: scripted-model, stream: false, max_retries: 0 }}
agents:
  researcher: {{ role: Researcher, goal: \"Research {{topic}}\", backstory: Careful. }}
  writer: {{ role: Writer, goal: \"Write about {{{{ topic }}}}\" }}
tasks:
{tasks}"
    );
    parse_graph("crew.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph
}

fn runtime() -> (Runtime, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Runtime::new(store.clone(), store.clone(), Arc::new(CollectSink::default())), store)
}

fn topic(t: &str) -> Map<String, Value> {
    json!({"topic": t}).as_object().cloned().unwrap()
}

fn last_user(request: &Value) -> String {
    request["messages"].as_array().unwrap().iter().rev().find(|m| m["role"] == "user").unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string()
}

const SEQUENTIAL: &str = "  research:
    description: Find facts about {topic}.
    expected_output: Three facts.
    agent: researcher
  report:
    description: Write a report on {topic}.
    expected_output: A paragraph.
    agent: writer
    human_input: true
";

#[tokio::test]
async fn a_sequential_crew_with_review_redoes_on_reject_and_finishes_on_approve() {
    let server =
        OpenAiServer::start(vec![Reply::text("fact 1, fact 2"), Reply::text("draft one"), Reply::text("draft two")])
            .await;
    let g = crew(&server.base_url, SEQUENTIAL);
    let (rt, store) = runtime();
    let run = rt.start(g.clone(), topic("tides"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting, "{}", run.error);
    let r = server.requests.lock().unwrap().clone();
    assert_eq!(r[0]["messages"][0]["content"], "You are Researcher. Your goal: Research tides\nCareful.");
    assert!(last_user(&r[1]).contains("Write a report on tides."));
    assert!(last_user(&r[1]).contains("Context from the task `research`:\nfact 1, fact 2"), "{}", last_user(&r[1]));

    let pending = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(pending[0].payload, json!({"task": "report", "output": "draft one"}));
    let reject = Decision { action: DecisionAction::Reject, value: None, comment: Some("mention the moon".into()) };
    rt.decide(&pending[0].id, reject).await.unwrap();
    let run = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    let redo = last_user(&server.requests.lock().unwrap()[2]);
    assert!(
        redo.contains("A reviewer rejected your previous answer:\ndraft one\nTheir comment: mention the moon"),
        "{redo}"
    );

    let pending = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(pending[0].payload["output"], "draft two");
    rt.decide(&pending[0].id, Decision { action: DecisionAction::Approve, value: None, comment: None }).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output, json!({"research": "fact 1, fact 2", "report": "draft two"}));
    assert_eq!(server.request_count(), 3, "the research task ran once");
    let history = store.list(&run.thread_id, None).await.unwrap();
    let steps: Vec<Value> =
        history.iter().rev().map(|c| c.metadata.get("nodes").cloned().unwrap_or_default()).collect();
    let expected = [
        Value::Null,
        json!(["research"]),
        json!(["report"]),
        json!(["review_report"]),
        json!(["report"]),
        json!(["review_report"]),
    ];
    assert_eq!(steps, expected, "the history shows each step");
}

#[tokio::test]
async fn independent_tasks_run_in_one_step_and_their_dependent_once() {
    let tasks =
        "  a: { description: \"Part A of {topic}.\", expected_output: text, agent: researcher, async_execution: true }
  b: { description: \"Part B of {topic}.\", expected_output: text, agent: researcher, async_execution: true }
  c: { description: Combine., expected_output: text, agent: writer, context: [a, b] }
";
    let server = OpenAiServer::start(vec![Reply::text("x"), Reply::text("y"), Reply::text("both")]).await;
    let (rt, store) = runtime();
    let run = rt.start(crew(&server.base_url, tasks), topic("t"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["c"], "both");
    let history = store.list(&run.thread_id, None).await.unwrap();
    let ran: Vec<Value> =
        history.iter().rev().map(|c| c.metadata.get("nodes").cloned().unwrap_or(Value::Null)).collect();
    assert_eq!(ran, [Value::Null, json!(["a", "b"]), json!(["c"])]);
    let combine = last_user(&server.requests.lock().unwrap()[2]);
    assert!(
        combine.contains("Context from the task `a`") && combine.contains("Context from the task `b`"),
        "{combine}"
    );
}

#[test]
fn crew_mistakes_are_located() {
    let err = |tasks: &str| {
        let yaml =
            format!("name: c\nmodels:\n  m: {{ model: x }}\nagents:\n  a: {{ role: R, goal: G }}\ntasks:\n{tasks}");
        parse_graph("c.yaml", &yaml, &Registry::builtin(), None, 0).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let e = err("  t: { description: d, expected_output: o, agent: a, extra: 1 }\n");
    assert!(e.starts_with("c.yaml:7:54: task `t`: unknown key `extra`"), "{e}");
    let e = err("  t: { description: d, expected_output: o, agent: nobody }\n");
    assert!(e.contains("unknown agent `nobody`") && e.starts_with("c.yaml:7:"), "{e}");
    let e = err("  t: { description: d, expected_output: o, agent: a, context: [ghost] }\n");
    assert!(e.contains("`context` names unknown task `ghost`"), "{e}");
}

#[test]
fn the_example_crew_compiles() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crews");
    let catalog = crewgraph_spec::Catalog::scan(&[dir]);
    let def = catalog.load("research-report", &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = def.graph.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["research", "report", "review_report"]);
    let def = catalog.load("launch-plan", &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.graph.nodes.len(), 2);
}

#[tokio::test]
async fn a_hierarchical_crew_has_its_manager_delegate_to_coworkers() {
    let server = OpenAiServer::start(vec![
        Reply::tool_call("delegate_work", json!({"task": "Find facts about tides", "coworker": "Researcher"})),
        Reply::text("tides follow the moon"),
        Reply::text("Final: tides follow the moon."),
    ])
    .await;
    let yaml = format!(
        "name: h
process: hierarchical
models:
  local: {{ base_url: \"{}\", model: scripted-model, stream: false, max_retries: 0 }}
agents:
  researcher: {{ role: Researcher, goal: \"Research {{topic}}\" }}
  writer: {{ role: Writer, goal: Write }}
tasks:
  facts: {{ description: \"Facts about {{topic}}.\", expected_output: One line., agent: researcher }}
",
        server.base_url
    );
    let g = parse_graph("h.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph;
    let (rt, _) = runtime();
    let run = rt.start(g, topic("tides"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["facts"], "Final: tides follow the moon.");
    let r = server.requests.lock().unwrap().clone();
    assert!(r[0]["messages"][0]["content"].as_str().unwrap().starts_with("You are Crew Manager."));
    let tools: Vec<&str> =
        r[0]["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(tools, ["delegate_work", "ask_question"]);
    assert_eq!(
        r[0]["tools"][0]["function"]["parameters"]["properties"]["coworker"]["enum"],
        json!(["Researcher", "Writer"])
    );
    assert_eq!(r[1]["messages"][0]["content"], "You are Researcher. Your goal: Research tides");
    assert_eq!(r[1]["messages"][1]["content"], "Find facts about tides");
    let back = r[2]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(back["content"], "tides follow the moon", "the coworker's answer went back to the manager");
    assert!(run.usage["by_node"]["facts/Researcher"]["prompt_tokens"].as_u64().unwrap() > 0, "{}", run.usage);
}

#[tokio::test]
async fn a_guardrail_sends_a_failing_answer_back_with_feedback() {
    let server = OpenAiServer::start(vec![
        Reply::text("tides are water moving"),
        Reply::text(r#"{"passed": false, "feedback": "say what causes them"}"#),
        Reply::text("the moon's pull causes tides"),
        Reply::text(r#"{"passed": true, "feedback": ""}"#),
    ])
    .await;
    let tasks = "  facts:
    description: \"Explain {topic}.\"
    expected_output: One sentence.
    agent: researcher
    guardrail: \"The answer names the cause of {topic}.\"
";
    let (rt, _) = runtime();
    let run = rt.start(crew(&server.base_url, tasks), topic("tides"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["facts"], "the moon's pull causes tides");
    let r = server.requests.lock().unwrap().clone();
    assert!(last_user(&r[1]).starts_with("Requirement: The answer names the cause of tides."), "{}", last_user(&r[1]));
    assert!(last_user(&r[2]).contains("Feedback: say what causes them"), "{}", last_user(&r[2]));
}

async fn memory() -> crewgraph_memory::Memory {
    let store = crewgraph_memory::EmbeddedStore::in_memory().await.unwrap();
    crewgraph_memory::Memory::new(Arc::new(store), Arc::new(crewgraph_memory::HashingEmbedder::new(64)))
}

#[tokio::test]
async fn knowledge_is_in_the_prompt_and_memory_is_recalled_in_the_next_run() {
    let mem = memory().await;
    mem.ingest(
        "facts",
        "default",
        &crewgraph_memory::Document::new("tides.md", "# Tides\n\nTides follow the moon's gravity."),
    )
    .await
    .unwrap();
    let registry = Registry::builtin().with_memory(crewgraph_memory::MemoryHandle::fixed(mem.clone()));
    let server = OpenAiServer::start(vec![Reply::text("Slogan: ride the moon"), Reply::text("Slogan: second")]).await;
    let yaml = format!(
        "name: slogans
memory: true
knowledge: [facts]
models:
  local: {{ base_url: \"{}\", model: scripted-model, stream: false, max_retries: 0 }}
agents:
  writer: {{ role: Writer, goal: Write slogans }}
tasks:
  slogan:
    description: Write a slogan about {{topic}} tides.
    expected_output: One line.
    agent: writer
",
        server.base_url
    );
    let g = parse_graph("crew.yaml", &yaml, &registry, None, 0).unwrap_or_else(|e| panic!("{e}")).graph;
    let (rt, _) = runtime();
    let first = rt.start(g.clone(), topic("spring"), None, None, None).await.unwrap();
    assert_eq!(first.status, RunStatus::Succeeded, "{}", first.error);
    let prompt = last_user(&server.requests.lock().unwrap()[0]);
    assert!(
        prompt.contains("Relevant knowledge from `facts`:\n[tides.md] Tides follow the moon's gravity."),
        "{prompt}"
    );
    assert!(!prompt.contains("earlier runs"), "nothing to recall yet: {prompt}");

    let second = rt.start(g.clone(), topic("spring"), None, None, None).await.unwrap();
    assert_eq!(second.status, RunStatus::Succeeded, "{}", second.error);
    let prompt = last_user(&server.requests.lock().unwrap()[1]);
    assert!(prompt.contains("What you produced in earlier runs"), "{prompt}");
    assert!(prompt.contains("- for `slogan`: Slogan: ride the moon"), "{prompt}");
    // Stored with who produced it, once per run and task.
    let hits = mem
        .search(crewgraph_spec::recall::MEMORY_COLLECTION, &crewgraph_memory::SearchRequest::new("slogan", 10))
        .await
        .unwrap();
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert!(hits.iter().all(|h| h.metadata["crew"] == "slogans" && h.metadata["agent"] == "writer"));
    assert!(hits.iter().any(|h| h.metadata["run_id"] == json!(first.id)));
}

#[tokio::test]
async fn a_missing_knowledge_collection_fails_the_task_clearly() {
    let registry = Registry::builtin().with_memory(crewgraph_memory::MemoryHandle::fixed(memory().await));
    let server = OpenAiServer::start(vec![Reply::text("unused")]).await;
    let yaml = format!(
        "name: k
knowledge: nope
models:
  local: {{ base_url: \"{}\", model: scripted-model, stream: false, max_retries: 0 }}
agents:
  writer: {{ role: Writer, goal: Write }}
tasks:
  t: {{ description: Do it., expected_output: Done., agent: writer }}
",
        server.base_url
    );
    let g = parse_graph("crew.yaml", &yaml, &registry, None, 0).unwrap_or_else(|e| panic!("{e}")).graph;
    let (rt, _) = runtime();
    let run = rt.start(g, Map::new(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(run.error.to_string().contains("knowledge collection `nope` does not exist"), "{}", run.error);
    assert_eq!(server.request_count(), 0);
}
