//! `agent` nodes (ReAct) against a scripted OpenAI-compatible server.

use std::sync::Arc;

use crewgraph_engine::event::CollectSink;
use crewgraph_engine::{ApprovalStatus, Decision, DecisionAction, MemoryStore, RunStatus, RunStore, Runtime};
use crewgraph_spec::{Registry, parse_graph};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::{Map, Value, json};

fn graph(base_url: &str, agent_extra: &str, tools_section: &str) -> Arc<crewgraph_engine::Graph> {
    let yaml = format!(
        "name: agent
models:
  local: {{ base_url: \"{base_url}\", model: scripted-model, stream: false, max_retries: 0 }}
{tools_section}
state:
  question: {{ type: string }}
  answer: {{ type: any }}
entry: researcher
nodes:
  researcher:
    kind: agent
    role: Researcher
    goal: \"Answer {{{{ state.question }}}}\"
    backstory: You double-check facts.
    task: \"{{{{ state.question }}}}\"
    expected_output: One sentence.
    into: answer
{agent_extra}
"
    );
    parse_graph("agent.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph
}

fn runtime() -> (Runtime, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Runtime::new(store.clone(), store.clone(), Arc::new(CollectSink::default())), store)
}

fn input() -> Map<String, Value> {
    json!({"question": "What is 2+2?"}).as_object().cloned().unwrap()
}

fn requests(server: &OpenAiServer) -> Vec<Value> {
    server.requests.lock().unwrap().clone()
}

#[tokio::test]
async fn the_agent_calls_tools_until_it_answers() {
    let server =
        OpenAiServer::start(vec![Reply::tool_call("echo", json!({"text": "4"})), Reply::text("It is 4.")]).await;
    let (rt, _) = runtime();
    let run = rt.start(graph(&server.base_url, "    tools: [echo]", ""), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["answer"], "It is 4.");
    let r = requests(&server);
    assert_eq!(
        r[0]["messages"][0]["content"],
        "You are Researcher. Your goal: Answer What is 2+2?\nYou double-check facts."
    );
    assert_eq!(r[0]["messages"][1]["content"], "What is 2+2?\n\nExpected output: One sentence.");
    assert_eq!(r[0]["tools"][0]["function"]["name"], "echo");
    let last = r[1]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last, json!({"role": "tool", "content": "{\"text\":\"4\"}", "tool_call_id": "call_echo"}));
    assert_eq!(run.usage["by_node"]["researcher"]["prompt_tokens"], 41, "30 + 11 reported");
}

#[tokio::test]
async fn bad_arguments_and_repeated_calls_go_back_to_the_model() {
    let server = OpenAiServer::start(vec![
        Reply::tool_call("sleep", json!({"ms": "soon"})),
        Reply::tool_call("sleep", json!({"ms": 1})),
        Reply::tool_call("sleep", json!({"ms": 1})),
        Reply::text("done"),
    ])
    .await;
    let (rt, _) = runtime();
    let run = rt.start(graph(&server.base_url, "    tools: [sleep]", ""), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    let r = requests(&server);
    let last = |i: usize| r[i]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    assert!(last(1).contains("arguments for `sleep` are invalid") && last(1).contains("/ms"), "{}", last(1));
    assert_eq!(last(2), "{\"ms\":1}", "the valid call ran");
    assert!(last(3).starts_with("You already called `sleep`"), "{}", last(3));
}

#[tokio::test]
async fn max_iter_forces_a_final_answer_without_tools() {
    let server = OpenAiServer::start(vec![
        Reply::tool_call("echo", json!({"n": 1})),
        Reply::tool_call("echo", json!({"n": 2})),
        Reply::text("my final answer"),
    ])
    .await;
    let (rt, _) = runtime();
    let run = rt
        .start(graph(&server.base_url, "    tools: [echo]\n    max_iter: 3", ""), input(), None, None, None)
        .await
        .unwrap();
    assert_eq!(run.output["answer"], "my final answer");
    let r = requests(&server);
    assert_eq!(r.len(), 3);
    assert!(r[2].get("tools").is_none(), "no tools on the last iteration");
    let last = r[2]["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], "You have used your iterations. Give your final answer now.");
}

#[tokio::test]
async fn a_call_needing_approval_pauses_and_resumes_without_asking_the_model_again() {
    // The scripted server answers the model and the HTTP tool alike, in order.
    let server = OpenAiServer::start(vec![
        Reply::tool_call("create_ticket", json!({"title": "refund"})),
        Reply::Json { status: 201, body: json!({"ticket": 7}), headers: vec![] },
        Reply::text("Filed ticket 7."),
    ])
    .await;
    unsafe { std::env::set_var("CREWGRAPH_HTTP_ALLOW", "127.0.0.1") };
    let tools = format!(
        "tools:
  create_ticket:
    description: Opens a ticket.
    requires_approval: true
    args_schema: {{ type: object, properties: {{ title: {{ type: string }} }}, required: [title] }}
    http: {{ method: POST, url: \"{}/tickets\" }}",
        server.base_url
    );
    let g = graph(&server.base_url, "    tools: [create_ticket]", &tools);
    let (rt, store) = runtime();
    let run = rt.start(g.clone(), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Waiting);
    let pending = store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap();
    assert_eq!(pending[0].payload["tool"], "create_ticket");
    assert_eq!(pending[0].payload["args"], json!({"title": "refund"}));
    assert_eq!(server.request_count(), 1, "only the model's proposal so far");

    let edited = Decision { action: DecisionAction::Edit, value: Some(json!({"title": "refund #2"})), comment: None };
    rt.decide(&pending[0].id, edited).await.unwrap();
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["answer"], "Filed ticket 7.");
    let r = requests(&server);
    assert_eq!(r.len(), 3, "model, tool, model: the proposing call was not repeated");
    assert_eq!(r[1], json!({"title": "refund #2"}), "the tool got the reviewer's arguments");
}

#[tokio::test]
async fn an_agent_with_an_output_schema_returns_json() {
    let server = OpenAiServer::start(vec![Reply::text("The answer is four."), Reply::text(r#"{"answer": 4}"#)]).await;
    let extra = "    output_schema: { type: object, properties: { answer: { type: integer } }, required: [answer] }";
    let (rt, _) = runtime();
    let run = rt.start(graph(&server.base_url, extra, ""), input(), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["answer"], json!({"answer": 4}));
    let r = requests(&server);
    assert_eq!(r[1]["response_format"]["type"], "json_schema");
}
