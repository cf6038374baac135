//! The service through a PostgreSQL restart and a Redis flush: not ready
//! while the database is gone, ready again after, no run lost or repeated.

use std::time::Duration;

use crewgraph_tests::server::{Api, Server, make_key};
use crewgraph_tests::{Cli, PgServer, RedisServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CHAIN: &str = include_str!("../fixtures/counted-chain.yaml");

async fn ready(api: &Api) -> StatusCode {
    match api.http.get(format!("{}/readyz", api.base)).send().await {
        Ok(r) => r.status(),
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

async fn until(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn submit(api: &Api, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let (status, run) = api.post("/v1/runs", json!({"graph": "counted-chain"})).await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    ids
}

/// Every run succeeded with each step applied once: the log in order, one checkpoint per step.
async fn all_exactly_once(api: &Api, ids: &[String]) {
    until("every run to succeed", 90, async || {
        let (status, page) = api.get("/v1/runs?status=succeeded&limit=500").await;
        status == StatusCode::OK && page["runs"].as_array().map(Vec::len) == Some(ids.len())
    })
    .await;
    for id in ids {
        let (_, run) = api.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(run["output"]["log"], json!(["one", "two", "three", "four"]), "{run}");
        let (_, history) = api.get(&format!("/v1/threads/{}/history", run["thread_id"].as_str().unwrap())).await;
        let steps: Vec<i64> = history.as_array().unwrap().iter().map(|c| c["step"].as_i64().unwrap()).collect();
        assert_eq!(steps, (0..9).rev().collect::<Vec<i64>>(), "input + 8 steps, none twice");
    }
}

#[tokio::test]
async fn a_postgres_restart_and_a_redis_flush_lose_no_run() {
    let Some(pg) = PgServer::start() else {
        eprintln!("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
        return;
    };
    let redis = RedisServer::start();
    let cli = Cli::new(&pg.url)
        .with_env("REDIS_URL", &redis.url)
        .with_env("CREWGRAPH_LEASE_S", "3")
        .with_env("CREWGRAPH_RATE_LIMIT", "0");
    cli.write("graphs/counted-chain.yaml", CHAIN);
    let key = make_key(&cli, "acme", "submit");
    let server = Server::start(&cli, &["--workers", "4"]);
    let api = Api::new(&server.base, &key);
    assert_eq!(ready(&api).await, StatusCode::OK);

    let ids = submit(&api, 12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.kill();
    until("readyz to report the database gone", 15, async || ready(&api).await == StatusCode::SERVICE_UNAVAILABLE)
        .await;
    let (status, body) = api.get(&format!("/v1/runs/{}", ids[0])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.restart();
    until("readyz to recover", 30, async || ready(&api).await == StatusCode::OK).await;
    all_exactly_once(&api, &ids).await;

    // Redis holds nothing Postgres does not: flushing it mid-run loses nothing.
    let more = submit(&api, 6).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    let mut all = ids.clone();
    all.extend(more);
    all_exactly_once(&api, &all).await;
    let (_, metrics) = api.get("/metrics").await;
    let metrics = match metrics {
        Value::String(s) => s,
        other => other.to_string(),
    };
    assert!(metrics.contains("crewgraph_runs{status=\"succeeded\"} 18"), "{metrics}");
    assert!(metrics.contains("crewgraph_approvals_pending 0"), "{metrics}");
    assert!(metrics.contains("crewgraph_step_duration_seconds_bucket{le=\"0.25\"}"), "{metrics}");
}

#[tokio::test]
async fn shutdown_hands_unfinished_runs_back_to_the_next_worker() {
    let db = crewgraph_tests::TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_RATE_LIMIT", "0").with_env("CREWGRAPH_SHUTDOWN_GRACE_S", "0");
    cli.write("graphs/counted-chain.yaml", CHAIN);
    let key = make_key(&cli, "acme", "submit");
    let first = Server::start(&cli, &["--workers", "4"]);
    let api = Api::new(&first.base, &key);
    let ids = submit(&api, 4).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // SIGTERM with no grace: the steps in flight are abandoned and their runs handed back at once.
    let pid = first.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let pool = db.pool().await.unwrap();
    until("the server to hand its runs back", 15, async || {
        let leased: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE queue_state = 'leased'")
            .fetch_one(&pool)
            .await
            .unwrap();
        leased == 0
    })
    .await;
    let unfinished: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM runs WHERE status <> 'succeeded'").fetch_one(&pool).await.unwrap();
    assert!(unfinished > 0, "the runs were still in flight at SIGTERM");
    // A new server picks them up at once (no lease to wait out) and finishes each step once.
    let second = Server::start(&cli, &["--workers", "4"]);
    let api = Api::new(&second.base, &key);
    all_exactly_once(&api, &ids).await;
    drop(first);
}
