//! Bad definitions and bad runs fail clearly, with locations, and corrupt nothing.

use crewgraph_tests::{Cli, TestDb, stderr};
use serde_json::Value;

#[tokio::test]
async fn validate_reports_locations_and_accepts_the_examples() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let out = cli.run(&["validate", "graphs/review-publish.yaml", "graphs/triage.yaml", "graphs/research-digest.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    cli.write("broken.yaml", "name: broken\nentry: a\nnodes:\n  a: {kind: set\n");
    let out = cli.run(&["validate", "broken.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("broken.yaml:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid YAML"), "{}", stderr(&out));

    cli.write(
        "cond.yaml",
        "name: cond\nstate:\n  review: {}\nentry: a\nnodes:\n  a: {kind: set}\n  b: {kind: set}\nedges:\n  - {from: a, to: b, when: \"state.verdict == 'ok'\"}\n",
    );
    let out = cli.run(&["validate", "cond.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cond.yaml:9:"), "{}", stderr(&out));
    assert!(stderr(&out).contains("no channel `verdict`"), "{}", stderr(&out));

    let out = cli.run(&["graph", "graphs/triage.yaml", "--format", "dot"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph \"triage\""));
}

#[tokio::test]
async fn run_time_errors_fail_the_run_and_keep_the_store_intact() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    cli.write(
        "graphs/conflict.yaml",
        "name: conflict\nstate:\n  x: {}\nentry: [left, right]\nnodes:\n  left: {kind: set, values: {x: 1}}\n  right: {kind: set, values: {x: 2}}\n",
    );
    let out = cli.run(&["run", "conflict", "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "failed");
    let msg = run["error"]["message"].as_str().unwrap();
    assert!(msg.contains("`left` and `right`"), "{msg}");

    // The declared type catches a non-list before the run starts...
    let out = cli.run(&["run", "research-digest", "--input", "topics=\"not a list\"", "--non-interactive"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("input.topics: expected array"), "{}", stderr(&out));
    // ...and an untyped channel fails the fan-out step with a clear error.
    cli.write(
        "graphs/fan.yaml",
        "name: fan\nstate:\n  items: {}\n  out: {reducer: append}\nentry: each\nnodes:\n  each:\n    kind: map\n    over: state.items\n    node: {kind: set, values: {out: \"{{ item }}\"}}\n",
    );
    let out = cli.run(&["run", "fan", "--input", "items=\"not a list\"", "--non-interactive", "--json"]);
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "failed");
    assert!(run["error"]["message"].as_str().unwrap().contains("must be a list"), "{run}");

    let out = cli.run(&["run", "review-publish", "--input", "revision=\"x\"", "--non-interactive"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("input.revision: expected integer"), "{}", stderr(&out));

    let out = cli.run(&["run", "no-such-graph"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown graph `no-such-graph`"), "{}", stderr(&out));

    // The store still works and holds the failed runs as they were.
    let out = cli.run(&["run", "triage", "--input", "ticket=the app shows an error", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"]["category"], "bug");
    let failed = cli.json(&["runs", "list", "--status", "failed", "--json"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn history_is_newest_first_and_a_fork_diverges() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let run = cli.json(&["run", "triage", "--input", "ticket=please help, urgent", "--json"]);
    assert_eq!(run["output"]["route"]["escalated"], true);
    let thread = run["thread_id"].as_str().unwrap();
    let history = cli.json(&["threads", "history", thread, "--json"]);
    let steps: Vec<i64> = history.as_array().unwrap().iter().map(|c| c["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [3, 2, 1, 0]);

    // Fork right after the input with a different ticket: the later steps differ.
    let input_ckpt = history[3]["checkpoint_id"].as_str().unwrap();
    let out = cli.run(&[
        "threads",
        "fork",
        thread,
        "--checkpoint",
        input_ckpt,
        "--patch",
        r#"{"ticket": "I was charged twice"}"#,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let forked: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(forked["thread_id"], run["thread_id"]);
    assert_eq!(forked["output"]["category"], "billing");
    assert_eq!(forked["output"]["route"]["team"], "billing");
    let original = cli.json(&["threads", "state", thread, "--json"]);
    assert_eq!(original["values"]["category"], "general", "the original thread is unchanged");
}
