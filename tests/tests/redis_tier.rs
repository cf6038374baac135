//! Redis is a cache: stopping it mid-run loses nothing, flushing it does not
//! break resume, and Postgres has every checkpoint throughout.

use std::time::Duration;

use crewgraph_tests::{Cli, RedisServer, TestDb, stderr, wait_for};
use serde_json::Value;

fn slow_chain(n: usize, ms: u64) -> String {
    let mut s = String::from(
        "name: slow-chain\nstate:\n  log: { type: array, reducer: append }\n  waited: { type: object }\nentry: s0\nnodes:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  s{i}:\n    kind: tool\n    tool: sleep\n    args: {{ ms: {ms}, step: {i} }}\n    into: waited\n"
        ));
    }
    s.push_str("edges:\n");
    for i in 1..n {
        s.push_str(&format!("  - {{ from: s{}, to: s{i} }}\n", i - 1));
    }
    s
}

#[tokio::test]
async fn stopping_redis_mid_run_loses_nothing() {
    let db = TestDb::new().await.unwrap();
    let mut redis = RedisServer::start();
    let prefix = format!("cg-e2e-{}", uuid::Uuid::now_v7().simple());
    let cli = Cli::new(&db.url).with_env("REDIS_URL", &redis.url).with_env("CREWGRAPH_REDIS_PREFIX", &prefix);
    cli.write("graphs/slow-chain.yaml", &slow_chain(20, 60));

    let child = cli.spawn(&["run", "slow-chain", "--non-interactive", "--json"]);
    let pool = db.pool().await.unwrap();
    let count = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM checkpoints").fetch_one(&pool).await.unwrap_or(0);
        n
    };
    let mut reached = false;
    for _ in 0..300 {
        if count().await >= 5 {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reached, "the run never got going");
    assert!(!redis.cli(&["--scan", "--pattern", &format!("{prefix}:*")]).is_empty(), "the hot tier was in use");
    redis.kill();

    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "succeeded");
    assert_eq!(count().await, 21, "Postgres has every checkpoint: input + 20 steps");
    let history = cli.json(&["threads", "history", run["thread_id"].as_str().unwrap(), "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 21);
}

#[tokio::test]
async fn flushing_redis_does_not_break_resume() {
    let db = TestDb::new().await.unwrap();
    let redis = RedisServer::start();
    let cli = Cli::new(&db.url).with_env("REDIS_URL", &redis.url);

    let out = cli.run(&["run", "review-publish", "--non-interactive", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(wait_for(Duration::from_secs(1), || !redis.cli(&["--scan"]).is_empty()), "the hot tier holds the thread");
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");

    let pending = cli.json(&["approvals", "list", "--json"]);
    let id = pending[0]["id"].as_str().unwrap();
    let out = cli.run(&["approvals", "approve", id, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["output"]["published"], "First draft about durable agents");
}
