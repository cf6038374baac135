//! `kill -9` in the middle of a fan-out step: resuming re-runs only the tasks
//! whose writes were not saved, and no task that completed runs twice.

use std::time::Duration;

use crewgraph_tests::{Cli, TestDb, stderr, wait_for};
use serde_json::Value;

const FANOUT: &str = r#"
name: crash-fanout
state:
  jobs: { type: array }
  done: { type: array, reducer: append }
  total: { type: integer }
entry: work
nodes:
  work:
    kind: map
    over: state.jobs
    node:
      kind: subgraph
      graph: crash-job
      input: { name: "{{ item.name }}", ms: "{{ item.ms }}" }
      output: { done: "{{ result.name }}" }
  total:
    kind: set
    values: { total: "{{ state.done | length }}" }
edges:
  - { from: work, to: total }
"#;

/// One job: wait (the slow part), then record completion in a file exactly once per run of the node.
const JOB: &str = r#"
name: crash-job
state:
  name: { type: string }
  ms: { type: integer }
  slept: { type: object }
entry: wait
nodes:
  wait:
    kind: tool
    tool: sleep
    args: { ms: "{{ state.ms }}" }
    into: slept
  record:
    kind: tool
    tool: append_file
    args: { path: "done.log", line: "{{ state.name }}" }
edges:
  - { from: wait, to: record }
"#;

fn lines(cli: &Cli) -> Vec<String> {
    std::fs::read_to_string(cli.dir.join("done.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('\t').next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn kill_9_mid_fan_out_resumes_only_unfinished_tasks() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    cli.write("graphs/crash-fanout.yaml", FANOUT);
    cli.write("graphs/crash-job.yaml", JOB);
    let jobs = r#"jobs=[{"name":"a","ms":10},{"name":"b","ms":10},{"name":"c","ms":10},{"name":"x","ms":4000},{"name":"y","ms":4000}]"#;

    let mut child = cli.spawn(&["run", "crash-fanout", "--input", jobs, "--non-interactive"]);
    let fast_done = wait_for(Duration::from_secs(20), || lines(&cli).len() >= 3);
    assert!(fast_done, "the fast jobs never finished");
    std::thread::sleep(Duration::from_millis(500)); // their writes are saved right after the line
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    let before = lines(&cli);
    assert_eq!(before.len(), 3, "killed while the slow jobs were still sleeping: {before:?}");

    let runs = cli.json(&["runs", "list", "--json"]);
    let run = &runs.as_array().unwrap()[0];
    assert_eq!(run["status"], "running", "the killed process could not record anything");
    let run_id = run["id"].as_str().unwrap();

    let out = cli.run(&["runs", "resume", run_id, "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"]["total"], 5);
    let mut names: Vec<String> =
        done["output"]["done"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "x", "y"]);

    let mut after = lines(&cli);
    after.sort();
    assert_eq!(after, ["a", "b", "c", "x", "y"], "every job recorded exactly once");
    let log = stderr(&out);
    assert_eq!(log.matches("already done before a restart").count(), 3, "{log}");
}
