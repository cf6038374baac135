//! A run parked at an approval by `--non-interactive` finishes in a new
//! process; a second decision is refused; reject loops with the comment.

use crewgraph_tests::{Cli, TestDb, stderr};
use serde_json::json;

#[tokio::test]
async fn approval_resumes_in_a_new_process_and_refuses_a_second_decision() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);

    let out = cli.run(&["run", "review-publish", "--input", "topic=durability", "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "waiting");
    let run_id = run["id"].as_str().unwrap().to_string();

    let shown = cli.json(&["runs", "show", &run_id, "--json"]);
    assert_eq!(shown["status"], "waiting");

    let pending = cli.json(&["approvals", "list", "--json"]);
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["node"], "review");
    assert_eq!(pending[0]["payload"]["draft"], "First draft about durability");
    let first = pending[0]["id"].as_str().unwrap().to_string();

    // Reject with a comment: the draft node runs again and sees it.
    let out = cli.run(&["approvals", "reject", &first, "--comment", "cite sources", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let pending = cli.json(&["approvals", "list", "--json"]);
    assert_eq!(pending[0]["payload"]["draft"], "Revised draft about durability (cite sources)");
    let second = pending[0]["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    let out = cli.run(&["approvals", "edit", &second, "--value", "\"Final text\"", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"]["published"], "Final text");
    assert_eq!(done["output"]["log"], json!(["drafted v1", "drafted v2", "published"]));

    // Both approvals are decided; deciding either again is refused and changes nothing.
    for id in [&first, &second] {
        let out = cli.run(&["approvals", "approve", id]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("already decided"), "{}", stderr(&out));
    }
    let after = cli.json(&["runs", "show", &run_id, "--json"]);
    assert_eq!(after["output"], done["output"]);
    let all = cli.json(&["approvals", "list", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert!(all.as_array().unwrap().iter().all(|a| a["status"] == "decided"));
}

#[tokio::test]
async fn interactive_run_asks_on_the_terminal() {
    use std::io::Write;
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let mut child = cli
        .command(&["run", "review-publish", "--input", "topic=tty", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"approve\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"]["published"], "First draft about tty");
    assert!(stderr(&out).contains("decide [approve/reject/edit]"));
}
