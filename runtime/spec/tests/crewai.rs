//! CrewAI's project format (config/agents.yaml + config/tasks.yaml) runs
//! unchanged: documented fields are accepted, ignored ones are warnings with
//! their location, placeholders are required inputs.

use std::path::PathBuf;
use std::sync::Arc;

use crewgraph_engine::event::CollectSink;
use crewgraph_engine::{MemoryStore, RunStatus, Runtime};
use crewgraph_spec::{Catalog, Registry};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::json;

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crews/ai-news-crewai")
}

#[tokio::test]
async fn a_crewai_project_runs_as_a_crew() {
    let server = OpenAiServer::start(vec![
        Reply::streamed_text(&["- fact one\n", "- fact two"]),
        Reply::streamed_text(&["# Report\n", "All about it."]),
    ])
    .await;
    // CrewAI reads the server and model from the environment; so do we.
    unsafe {
        std::env::set_var("OPENAI_BASE_URL", &server.base_url);
        std::env::set_var("OPENAI_MODEL_NAME", "scripted-model");
    }
    let path = project();
    let def = Catalog::default().load(path.to_str().unwrap(), &Registry::builtin()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(def.graph.name, "ai-news-crewai");
    let warnings: Vec<String> = def.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tasks.yaml:18:16:") && w.contains("`output_file` is a CrewAI field crewgraph ignores")),
        "{warnings:?}"
    );
    assert_eq!(def.required_inputs, ["current_year", "topic"]);
    let missing = def.validate_input(json!({"topic": "AI"}).as_object().unwrap()).unwrap_err();
    assert!(missing.contains("input.current_year: required"), "{missing}");

    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone(), store, Arc::new(CollectSink::default()));
    let input = json!({"topic": "AI agents", "current_year": 2026}).as_object().cloned().unwrap();
    let run = rt.start(def.graph.clone(), input, None, None, None).await.unwrap();
    assert_eq!(run.status, RunStatus::Succeeded, "{}", run.error);
    assert_eq!(run.output["reporting_task"], "# Report\nAll about it.", "{}", run.output);
    let r = server.requests.lock().unwrap().clone();
    let system = r[0]["messages"][0]["content"].as_str().unwrap().to_string();
    assert!(system.starts_with("You are AI agents Senior Data Researcher"), "{system}");
    let user = r[0]["messages"][1]["content"].as_str().unwrap().to_string();
    assert!(user.contains("the current year is 2026"), "{user}");
    assert!(r[1]["messages"][1]["content"].as_str().unwrap().contains("- fact one"), "context from the first task");
    assert_eq!(r[0]["model"], "scripted-model");
}

#[test]
fn unknown_fields_in_a_crewai_project_are_errors() {
    let dir = std::env::temp_dir().join(format!("crewai-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/agents.yaml"),
        "a:\n  role: R\n  goal: G\n  backstory: B\n  favourite_color: blue\n",
    )
    .unwrap();
    std::fs::write(dir.join("config/tasks.yaml"), "t:\n  description: D\n  expected_output: O\n  agent: a\n").unwrap();
    let e = Catalog::default().load(dir.to_str().unwrap(), &Registry::builtin()).err().unwrap().to_string();
    assert!(e.contains("agents.yaml:5:3: agent `a`: unknown key `favourite_color`"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}
