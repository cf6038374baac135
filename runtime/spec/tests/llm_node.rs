//! `llm` nodes against a scripted OpenAI-compatible server over real HTTP:
//! streamed tokens, usage on the run, failures that name the node, resume
//! without repeating finished calls, prompts fitted to the context window.

use std::sync::Arc;

use crewgraph_engine::event::CollectSink;
use crewgraph_engine::{MemoryStore, RunStatus, Runtime};
use crewgraph_spec::{Registry, parse_graph};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::{Map, json};

fn graph(base_url: &str, extra_model_keys: &str) -> Arc<crewgraph_engine::Graph> {
    let yaml = format!(
        "name: write
models:
  local: {{ base_url: \"{base_url}\", model: scripted-model, max_retries: 2, backoff_ms: 5, timeout_s: 5{extra_model_keys} }}
state:
  topic: {{ type: string }}
  outline: {{ type: string }}
  text: {{ type: string }}
entry: outline
nodes:
  outline:
    kind: llm
    system: You plan articles.
    prompt: \"Outline an article about {{{{ state.topic }}}}.\"
    into: outline
  write:
    kind: llm
    model: local
    prompt: \"Write it from this outline: {{{{ state.outline }}}}\"
    into: text
edges:
  - {{ from: outline, to: write }}
"
    );
    parse_graph("write.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph
}

fn input(topic: &str) -> Map<String, serde_json::Value> {
    json!({"topic": topic}).as_object().cloned().unwrap()
}

#[tokio::test]
async fn llm_nodes_stream_tokens_and_record_usage() {
    let server = OpenAiServer::start(vec![
        Reply::streamed_text(&["1. ", "Why"]),
        Reply::streamed_text(&["Rust ", "is ", "fast."]),
    ])
    .await;
    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(CollectSink::default());
    let rt = Runtime::new(store.clone(), store, sink.clone());
    let run = rt.start(graph(&server.base_url, ""), input("rust"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["outline"], "1. Why");
    assert_eq!(run.output["text"], "Rust is fast.");
    let tokens: Vec<String> = sink
        .events()
        .iter()
        .filter(|e| e.kind == "llm.token")
        .map(|e| format!("{}:{}", e.node.as_deref().unwrap_or(""), e.data["text"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(tokens, ["outline:1. ", "outline:Why", "write:Rust ", "write:is ", "write:fast."]);
    assert_eq!(run.usage["prompt_tokens"], 40, "20 reported per call");
    assert_eq!(run.usage["completion_tokens"], 5);
    assert_eq!(run.usage["by_node"]["write"]["completion_tokens"], 3);
    assert_eq!(run.usage["by_model"]["local"]["prompt_tokens"], 40);
    let sent = server.requests.lock().unwrap()[1].clone();
    assert_eq!(sent["messages"][0]["content"], "Write it from this outline: 1. Why");
}

#[tokio::test]
async fn a_failing_server_fails_the_run_at_the_node_and_resume_does_not_repeat_finished_calls() {
    let mut replies = vec![Reply::text("an outline")];
    replies.extend(std::iter::repeat_n(Reply::error(500, None), 3));
    let server = OpenAiServer::start(replies).await;
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone(), store, Arc::new(CollectSink::default()));
    let g = graph(&server.base_url, ", stream: false");
    let run = rt.start(g.clone(), input("durability"), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.error["node"], "write");
    assert!(run.error["message"].as_str().unwrap().contains("HTTP 500"), "{}", run.error);
    assert_eq!(server.request_count(), 4, "one outline call, then the first write attempt and two retries");

    server.push(Reply::text("the article"));
    let run = rt.execute(g, &run.id, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["text"], "the article");
    assert_eq!(server.request_count(), 5, "the finished outline call was not repeated");
}

#[tokio::test]
async fn a_prompt_beyond_the_context_window_is_trimmed_before_sending() {
    let server = OpenAiServer::start(vec![Reply::text("short"), Reply::text("done")]).await;
    let store = Arc::new(MemoryStore::new());
    let sink = Arc::new(CollectSink::default());
    let rt = Runtime::new(store.clone(), store, sink.clone());
    let g = graph(&server.base_url, ", stream: false, context_window: 300, max_tokens: 50");
    let huge = "lorem ipsum ".repeat(2000);
    let run = rt.start(g, input(&huge), None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    let sent = server.requests.lock().unwrap()[0].clone();
    let text = sent["messages"][1]["content"].as_str().unwrap();
    assert!(text.ends_with("[trimmed to fit the context window]"), "{}", &text[text.len() - 60..]);
    assert!(text.len() < 2000, "{} bytes sent", text.len());
    assert!(sink.kinds().iter().any(|k| k == "llm.trimmed"));
}

#[test]
fn model_declarations_are_checked_with_locations() {
    let check = |models: &str, node: &str| {
        let yaml = format!(
            "name: m\nmodels:\n{models}\nstate:\n  out: {{}}\nentry: n\nnodes:\n  n: {{ kind: llm, prompt: hi, into: out{node} }}\n"
        );
        parse_graph("m.yaml", &yaml, &Registry::builtin(), None, 0).err().map(|e| e.to_string()).unwrap_or_default()
    };
    assert!(check("  a: { model: x, api_key: sk-123 }", "").contains("api_key_env"));
    assert!(check("  a: { model: x, provider: claude }", "").contains("expected `openai`"));
    assert!(check("  a: { provider: scripted, model: x }", "").contains("needs `script:`"));
    let e = check("  a: { model: x }\n  b: { model: y }", "");
    assert!(e.starts_with("m.yaml:9:6:") && e.contains("needs `model:`"), "{e}");
    assert!(check("  a: { model: x }", ", model: zz").contains("unknown model `zz`"));
    assert!(check("  a: { model: x, temprature: 1 }", "").contains("unknown key `temprature`"));
}

#[tokio::test]
async fn structured_output_is_validated_and_repaired() {
    let server =
        OpenAiServer::start(vec![Reply::text(r#"{"score": "high"}"#), Reply::text(r#"{"score": 4, "why": "clear"}"#)])
            .await;
    let yaml = format!(
        "name: grade
models:
  local: {{ base_url: \"{}\", model: m, stream: false, max_retries: 0 }}
state:
  essay: {{ type: string }}
  grade: {{ type: object }}
entry: grade
nodes:
  grade:
    kind: llm
    prompt: \"Grade: {{{{ state.essay }}}}\"
    into: grade
    output_schema:
      type: object
      properties: {{ score: {{ type: integer, minimum: 1, maximum: 5 }}, why: {{ type: string }} }}
      required: [score]
",
        server.base_url
    );
    let g = parse_graph("grade.yaml", &yaml, &Registry::builtin(), None, 0).unwrap_or_else(|e| panic!("{e}")).graph;
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone(), store, Arc::new(CollectSink::default()));
    let input = json!({"essay": "short"}).as_object().cloned().unwrap();
    let run = rt.start(g, input, None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["grade"], json!({"score": 4, "why": "clear"}));
    let r = server.requests.lock().unwrap().clone();
    assert_eq!(r[0]["response_format"]["json_schema"]["schema"]["required"], json!(["score"]));
    let repair = r[1]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap().to_string();
    assert!(repair.contains("/score") && repair.contains("does not match the required JSON Schema"), "{repair}");
}
