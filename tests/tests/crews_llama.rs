//! The example crew end to end against a real llama.cpp server (SmolLM2-135M,
//! started by tests/run.sh): the run completes to the human review, the
//! approval round trip finishes it from a new process, usage is recorded.

use crewgraph_tests::{Cli, TestDb, stderr};
use serde_json::Value;

#[tokio::test]
async fn the_research_crew_runs_on_llama_cpp_with_a_review() {
    let Ok(llm) = std::env::var("CREWGRAPH_LLM_URL") else {
        eprintln!("skipped: CREWGRAPH_LLM_URL is not set (tests/run.sh starts llama.cpp's server and sets it)");
        return;
    };
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("OPENAI_BASE_URL", &llm);
    let out = cli.run(&["run", "research-report", "--input", "topic=tide pools", "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(run["usage"]["by_node"]["research"]["completion_tokens"].as_u64().unwrap() > 0, "{}", run["usage"]);

    let pending = cli.json(&["approvals", "list", "--json"]);
    assert_eq!(pending[0]["payload"]["task"], "report");
    let draft = pending[0]["payload"]["output"].as_str().unwrap().to_string();
    assert!(!draft.trim().is_empty());
    let id = pending[0]["id"].as_str().unwrap();
    let out = cli.run(&["approvals", "approve", id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"]["report"], draft.as_str());
    assert!(!done["output"]["research"].as_str().unwrap().trim().is_empty());
}
