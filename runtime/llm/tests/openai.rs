//! The OpenAI-compatible model against a scripted server over real HTTP.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crewgraph_llm::openai::OpenAiModel;
use crewgraph_llm::{ChatModel, ChatRequest, LlmError, Message, ModelProfile, ResponseFormat, TokenSink, ToolSpec};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::json;

fn profile(server: &OpenAiServer, stream: bool) -> ModelProfile {
    let mut p = ModelProfile::new("test", "scripted-model");
    p.base_url = Some(server.base_url.clone());
    p.api_key_env = "CG_TEST_NO_SUCH_KEY".into();
    p.stream = stream;
    p.backoff_ms = 10;
    p.max_backoff_ms = 50;
    p.timeout_s = 5.0;
    p.temperature = Some(0.2);
    p
}

fn ask(text: &str) -> ChatRequest {
    ChatRequest { messages: vec![Message::system("be brief"), Message::user(text)], ..Default::default() }
}

#[derive(Default)]
struct Collect(Mutex<Vec<String>>);
impl TokenSink for Collect {
    fn token(&self, text: &str) {
        self.0.lock().unwrap().push(text.to_string());
    }
}

#[tokio::test]
async fn a_completion_round_trips_in_the_wire_format() {
    let server = OpenAiServer::start(vec![Reply::text("Paris")]).await;
    let model = OpenAiModel::new(profile(&server, false)).unwrap();
    let mut req = ask("capital of France?");
    req.tools = vec![ToolSpec {
        name: "search".into(),
        description: "web search".into(),
        parameters: json!({"type": "object"}),
    }];
    req.response_format = Some(ResponseFormat::JsonSchema { name: "answer".into(), schema: json!({"type": "object"}) });
    let r = model.chat(&req, None).await.unwrap();
    assert_eq!(r.message.content, "Paris");
    assert_eq!((r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.estimated), (11, 7, false));
    let sent = server.requests.lock().unwrap()[0].clone();
    assert_eq!(sent["model"], "scripted-model");
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["messages"][1], json!({"role": "user", "content": "capital of France?"}));
    assert_eq!(sent["tools"][0]["function"]["name"], "search");
    assert_eq!(sent["response_format"]["type"], "json_schema");
    assert!((sent["temperature"].as_f64().unwrap() - 0.2).abs() < 1e-6);
}

#[tokio::test]
async fn streaming_delivers_tokens_and_joins_tool_call_fragments() {
    let server = OpenAiServer::start(vec![Reply::streamed_text(&["Hel", "lo ", "world"])]).await;
    let model = OpenAiModel::new(profile(&server, true)).unwrap();
    let sink = Collect::default();
    let r = model.chat(&ask("hi"), Some(&sink)).await.unwrap();
    assert_eq!(r.message.content, "Hello world");
    assert_eq!(*sink.0.lock().unwrap(), ["Hel", "lo ", "world"]);
    assert_eq!(r.usage.completion_tokens, 3);
    assert_eq!(server.requests.lock().unwrap()[0]["stream_options"]["include_usage"], true);

    let chunk = |delta: serde_json::Value| json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    server.push(Reply::Stream(vec![
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "search", "arguments": ""}}]})),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\": "}}]})),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"rust\"}"}}]})),
        chunk(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]})),
    ]));
    let r = model.chat(&ask("search"), None).await.unwrap();
    assert_eq!(r.message.tool_calls.len(), 2);
    assert_eq!(r.message.tool_calls[0].id, "call_a");
    assert_eq!(r.message.tool_calls[0].arguments, json!({"q": "rust"}));
    assert_eq!(r.message.tool_calls[1].name, "clock");
    assert!(r.usage.estimated, "no usage chunk: counted with tiktoken");
    assert!(r.usage.prompt_tokens > 0);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_honouring_retry_after() {
    let server =
        OpenAiServer::start(vec![Reply::error(429, Some("1")), Reply::error(503, None), Reply::text("ok")]).await;
    let model = OpenAiModel::new(profile(&server, false)).unwrap();
    let started = Instant::now();
    let r = model.chat(&ask("x"), None).await.unwrap();
    assert_eq!(r.message.content, "ok");
    assert_eq!(server.request_count(), 3);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited for Retry-After: {:?}", started.elapsed());

    // A Retry-After beyond what the profile accepts fails at once.
    server.push(Reply::error(429, Some("3600")));
    let err = model.chat(&ask("x"), None).await.unwrap_err();
    assert_eq!(err, LlmError::Http { status: 429, message: "scripted 429".into() });
}

#[tokio::test]
async fn failures_are_clear_after_the_retries_run_out() {
    let server = OpenAiServer::start(vec![Reply::error(500, None); 4]).await;
    let model = OpenAiModel::new(profile(&server, false)).unwrap();
    let err = model.chat(&ask("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 500, .. }), "{err}");
    assert!(err.is_retryable());
    assert_eq!(server.request_count(), 4, "the first attempt and three retries");

    server.push(Reply::error(400, None));
    let err = model.chat(&ask("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Http { status: 400, .. }) && !err.is_retryable(), "{err}");
    assert_eq!(server.request_count(), 5, "a client error is not retried");

    for _ in 0..4 {
        server.push(Reply::Raw { status: 200, body: "{not json".into() });
    }
    let err = model.chat(&ask("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Malformed(_)), "{err}");
    assert_eq!(server.request_count(), 9);
}

#[tokio::test]
async fn a_hanging_server_times_out() {
    let server = OpenAiServer::start(vec![Reply::Hang, Reply::Hang]).await;
    let mut p = profile(&server, true);
    p.timeout_s = 0.3;
    p.max_retries = 1;
    let model = OpenAiModel::new(p).unwrap();
    let started = Instant::now();
    let err = model.chat(&ask("x"), None).await.unwrap_err();
    assert!(matches!(err, LlmError::Timeout { .. }), "{err}");
    assert_eq!(server.request_count(), 2);
    assert!(started.elapsed() < Duration::from_secs(3));
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "weather".into(),
        description: "Weather for a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }
}

#[tokio::test]
async fn tool_choice_uses_native_calls_or_falls_back_to_a_schema() {
    use crewgraph_llm::tools::{Choice, NativeSupport, ToolMode, choose};
    let native = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "tool_calls": [{"id": "call_9", "type": "function",
        "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}, "finish_reason": "tool_calls"}]});
    let server = OpenAiServer::start(vec![Reply::Json { status: 200, body: native, headers: vec![] }]).await;
    let model = OpenAiModel::new(profile(&server, false)).unwrap();
    let support = NativeSupport::default();
    let msgs = [Message::user("weather in Oslo?")];
    let (choice, _, _) = choose(&model, &support, ToolMode::Auto, &msgs, &[weather_tool()], None).await.unwrap();
    let Choice::Calls(calls) = choice else { panic!("expected a call") };
    assert_eq!((calls[0].id.as_str(), &calls[0].arguments), ("call_9", &json!({"city": "Oslo"})));
    assert_eq!(server.request_count(), 1);

    // A server that answers tools with text (SmolLM2 on llama-server): the schema fallback picks the tool,
    // and from then on the model is asked with the schema straight away.
    let server = OpenAiServer::start(vec![
        Reply::text("I would check the weather."),
        Reply::text(r#"{"tool": "weather", "arguments": {"city": "Oslo"}}"#),
        Reply::text(r#"{"final_answer": "Sunny"}"#),
    ])
    .await;
    let model = OpenAiModel::new(profile(&server, false)).unwrap();
    let support = NativeSupport::default();
    let (choice, message, usage) =
        choose(&model, &support, ToolMode::Auto, &msgs, &[weather_tool()], None).await.unwrap();
    assert!(matches!(choice, Choice::Calls(ref c) if c[0].arguments == json!({"city": "Oslo"})), "{choice:?}");
    assert!(
        message.tool_calls.is_empty() && message.content.contains("\"tool\""),
        "plain text for servers without tools"
    );
    assert_eq!(usage.prompt_tokens, 22, "both calls counted");
    let constrained = server.requests.lock().unwrap()[1].clone();
    assert_eq!(constrained["response_format"]["json_schema"]["name"], "next_action");
    assert!(constrained.get("tools").is_none());
    let (choice, _, _) = choose(&model, &support, ToolMode::Auto, &msgs, &[weather_tool()], None).await.unwrap();
    assert_eq!(choice, Choice::Final("Sunny".into()));
    assert_eq!(server.request_count(), 3, "no native attempt once the server is known not to call tools");
}
