//! Workers under failure: a worker process killed with SIGKILL mid-run.

use std::time::Duration;

use crewgraph_tests::server::{Api, Server, make_key};
use crewgraph_tests::{Cli, TestDb};
use reqwest::StatusCode;
use serde_json::json;

const FIVE_STEPS: &str = include_str!("../fixtures/five-steps.yaml");

#[tokio::test]
async fn a_killed_worker_loses_no_run_and_repeats_no_checkpointed_step() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_LEASE_S", "2").with_env("CREWGRAPH_RATE_LIMIT", "0");
    cli.write("graphs/five-steps.yaml", FIVE_STEPS);
    let api_server = Server::start(&cli, &["--no-workers"]);
    let api = Api::new(&api_server.base, &make_key(&cli, "acme", "submit"));

    let mut ids = Vec::new();
    for chunk in 0..10 {
        let posts =
            (0..20).map(|i| api.post("/v1/runs", json!({"graph": "five-steps", "input": {"n": chunk * 20 + i}})));
        for (status, run) in futures::future::join_all(posts).await {
            assert_eq!(status, StatusCode::CREATED, "{run}");
            ids.push(run["id"].as_str().unwrap().to_string());
        }
    }
    // Two workers share the queue; one is killed while it holds runs.
    let pool = db.pool().await.unwrap();
    let succeeded = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut doomed = cli.command(&["worker", "--workers", "4"]).env("CREWGRAPH_WORKER_NAME", "doomed").spawn().unwrap();
    let metrics_bind = format!("127.0.0.1:{}", crewgraph_tests::server::free_port());
    let mut survivor = cli
        .command(&["worker", "--workers", "4"])
        .env("CREWGRAPH_WORKER_NAME", "survivor")
        .env("CREWGRAPH_METRICS_BIND", &metrics_bind)
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if succeeded().await >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.kill().unwrap();
    doomed.wait().unwrap();
    let orphans: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.id, (SELECT COUNT(*) FROM checkpoints c WHERE c.thread_id = r.thread_id)
         FROM runs r WHERE r.queue_state = 'leased' AND r.lease_owner LIKE 'doomed-%'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!orphans.is_empty(), "the worker was killed holding runs");
    let mid_run = orphans.iter().filter(|(_, checkpoints)| *checkpoints > 0).count();
    eprintln!("killed holding {} runs, {mid_run} of them with checkpoints", orphans.len());

    // Done means every run succeeded and left the queue: a run the killed worker had
    // settled but not released is claimed again when its lease lapses, and that claim
    // writes its last event if the killed worker had not.
    let on_queue = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM runs WHERE queue_state IS NOT NULL")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let mut finished = 0;
    for _ in 0..600 {
        finished = succeeded().await;
        if finished == 200 && on_queue().await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A worker-only process serves its own metrics.
    let metrics = api.http.get(format!("http://{metrics_bind}/metrics")).send().await.unwrap().text().await.unwrap();
    let settled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("crewgraph_runs_settled_total{outcome=\"succeeded\"} "))
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(0);
    assert!(settled > 0, "{metrics}");
    // SIGTERM: the survivor shuts down gracefully, writing the events it holds.
    std::process::Command::new("kill").args(["-TERM", &survivor.id().to_string()]).status().unwrap();
    survivor.wait().unwrap();
    assert_eq!(finished, 200, "every run finishes");

    for id in &ids {
        let (_, run) = api.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(run["output"]["log"], json!(["s1", "s2", "s3", "s4", "s5"]), "{run}");
    }
    let twice: Vec<(String, i64)> = sqlx::query_as(
        "SELECT run_id, COUNT(*) FROM run_events WHERE body->>'kind' = 'run.succeeded' GROUP BY run_id
         HAVING COUNT(*) <> 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(twice, vec![], "one run.succeeded per run");
    let ended: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT run_id) FROM run_events WHERE body->>'kind' = 'run.succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(ended, 200);
}
