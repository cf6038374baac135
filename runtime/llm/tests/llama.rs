//! The end-to-end tier: a real llama.cpp server with SmolLM2-135M, started by
//! `tests/run.sh` (`CREWGRAPH_LLM_URL`). Asserts what a small model can be held
//! to: answers arrive and stream, and a tool choice through the schema
//! fallback reaches a known tool with schema-valid arguments.

use crewgraph_llm::openai::OpenAiModel;
use crewgraph_llm::tools::{Choice, NativeSupport, ToolMode, check_call, choose};
use crewgraph_llm::{ChatModel, ChatRequest, Message, ModelProfile, TokenSink, ToolSpec};
use serde_json::json;

fn model() -> Option<OpenAiModel> {
    let Ok(url) = std::env::var("CREWGRAPH_LLM_URL") else {
        eprintln!("skipped: CREWGRAPH_LLM_URL is not set (tests/run.sh starts llama.cpp's server and sets it)");
        return None;
    };
    let mut p = ModelProfile::new("smollm2", "smollm2");
    p.base_url = Some(url);
    p.api_key_env = "CG_NO_KEY".into();
    p.max_tokens = Some(96);
    p.temperature = Some(0.0);
    p.context_window = 2048;
    p.timeout_s = 120.0;
    Some(OpenAiModel::new(p).expect("profile"))
}

struct Count(std::sync::atomic::AtomicUsize);
impl TokenSink for Count {
    fn token(&self, _: &str) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn smollm2_answers_and_streams() {
    let Some(model) = model() else { return };
    let tokens = Count(Default::default());
    let r = model
        .chat(&ChatRequest { messages: vec![Message::user("Say hello.")], ..Default::default() }, Some(&tokens))
        .await
        .unwrap();
    assert!(!r.message.content.trim().is_empty());
    assert!(tokens.0.load(std::sync::atomic::Ordering::Relaxed) > 1, "the answer streamed");
    assert!(r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0);
}

#[tokio::test]
async fn smollm2_picks_a_tool_with_valid_arguments_through_the_schema() {
    let Some(model) = model() else { return };
    let tools = [ToolSpec {
        name: "weather".into(),
        description: "Current weather for a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    }];
    let messages = [Message::system("You can call tools."), Message::user("Use the weather tool for Paris.")];
    let (choice, _, _) =
        choose(&model, &NativeSupport::default(), ToolMode::Schema, &messages, &tools, None).await.unwrap();
    match choice {
        Choice::Calls(calls) => {
            assert_eq!(calls[0].name, "weather");
            check_call(&calls[0], &tools).unwrap();
        }
        Choice::Final(text) => assert!(!text.is_empty(), "a final answer is a valid shape too"),
    }
}
