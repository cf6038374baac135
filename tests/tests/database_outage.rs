//! The database dying mid-run: the run stops with a clear error, nothing
//! stored is lost, and after a restart it resumes to the same result as an
//! uninterrupted run, every step applied once.

use std::time::Duration;

use crewgraph_tests::{Cli, PgServer, stderr, wait_for};
use serde_json::Value;

const CHAIN: &str = include_str!("../fixtures/counted-chain.yaml");

#[tokio::test]
async fn a_database_crash_mid_run_loses_nothing_and_the_run_resumes() {
    let Some(pg) = PgServer::start() else {
        eprintln!("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
        return;
    };
    let cli = Cli::new(&pg.url);
    cli.write("graphs/counted-chain.yaml", CHAIN);
    assert!(cli.run(&["migrate"]).status.success());

    let child = cli.spawn(&["run", "counted-chain", "--non-interactive", "--json"]);
    let count = || {
        let out = cli.run(&["runs", "list", "--json"]);
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        runs.as_array().map(|r| r.len()).unwrap_or(0)
    };
    assert!(wait_for(Duration::from_secs(10), || count() == 1), "the run never started");
    std::thread::sleep(Duration::from_millis(400)); // a few steps in
    pg.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("storage"), "a clear storage error: {}", stderr(&out));

    pg.restart();
    let runs = cli.json(&["runs", "list", "--json"]);
    let run_id = runs[0]["id"].as_str().unwrap().to_string();
    let thread = runs[0]["thread_id"].as_str().unwrap().to_string();
    let before = cli.json(&["threads", "history", &thread, "--json"]);
    let saved = before.as_array().unwrap().len();
    assert!((2..9).contains(&saved), "stopped mid-run with {saved} checkpoints");

    let out = cli.run(&["runs", "resume", &run_id, "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"]["log"], serde_json::json!(["one", "two", "three", "four"]), "each step applied once");
    let after = cli.json(&["threads", "history", &thread, "--json"]);
    assert_eq!(after.as_array().unwrap().len(), 9, "input + 8 steps");
    let steps: Vec<i64> = after.as_array().unwrap().iter().map(|c| c["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, (0..9).rev().collect::<Vec<i64>>());
}
