//! The HTTP API against a real `crewgraph serve` process: submission,
//! tenants and roles, approvals decided once, SSE replay, JSON errors.

use crewgraph_tests::server::{Api, Server, make_key};
use crewgraph_tests::{Cli, TestDb, redis_url};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn scenario(cli: &Cli) {
    let server = Server::start(cli, &["--workers", "2"]);
    let owner = Api::new(&server.base, &make_key(cli, "acme", "submit,approve"));
    let reader = Api::new(&server.base, &make_key(cli, "acme", "read"));
    let other = Api::new(&server.base, &make_key(cli, "globex", "admin"));

    let (status, run) = owner.post("/v1/runs", json!({"graph": "review-publish", "input": {"topic": "leases"}})).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "queued");
    let id = run["id"].as_str().unwrap().to_string();

    let (status, waiting) = owner.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(waiting["status"], "waiting", "{waiting}");

    let (_, pending) = reader.get(&format!("/v1/approvals?status=pending&run_id={id}")).await;
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["payload"]["draft"], "First draft about leases");
    let approval = pending[0]["id"].as_str().unwrap().to_string();

    // Another tenant sees nothing of it; a read-only key cannot decide.
    assert_eq!(other.get(&format!("/v1/runs/{id}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        other.get(&format!("/v1/threads/{}/state", run["thread_id"].as_str().unwrap())).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = other.post(&format!("/v1/approvals/{approval}"), json!({"action": "approve"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(other.get("/v1/approvals?status=pending").await.1, json!([]));
    let (status, body) = reader.post(&format!("/v1/approvals/{approval}"), json!({"action": "approve"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    // Two decisions at once: exactly one wins.
    let path = format!("/v1/approvals/{approval}");
    let (a, b) = tokio::join!(
        owner.post(&path, json!({"action": "edit", "value": "Edited by A"})),
        owner.post(&path, json!({"action": "edit", "value": "Edited by B"})),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{} / {}", a.1, b.1);
    let winner = if a.0 == StatusCode::OK { "Edited by A" } else { "Edited by B" };

    let (_, done) = owner.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["published"], winner);

    // The whole stream, then a reconnection from the middle: every event once, in order.
    let all = reader.events(&id, None).await;
    let ids: Vec<i64> = all.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=all.len() as i64).collect::<Vec<_>>(), "{all:?}");
    let kinds: Vec<&str> = all.iter().map(|e| e.1.as_str()).collect();
    for kind in ["run.queued", "run.started", "approval.requested", "run.waiting", "approval.decided", "run.resumed"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"run.succeeded"));
    let middle = all.len() as i64 / 2;
    let rest = reader.events(&id, Some(middle)).await;
    assert_eq!(rest, all[middle as usize..].to_vec());

    let (_, page) = reader.get("/v1/runs?status=succeeded&limit=10").await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 1);
    assert_eq!(other.get("/v1/runs").await.1["runs"], json!([]));
    let thread = done["thread_id"].as_str().unwrap();
    let (_, history) = reader.get(&format!("/v1/threads/{thread}/history")).await;
    let history = history.as_array().unwrap();
    assert!(history.len() >= 4, "{history:?}");

    // Time travel: fork from the input checkpoint with another topic.
    let first = history.last().unwrap();
    assert_eq!(first["next"], json!(["draft"]));
    let fork = json!({"checkpoint_id": first["checkpoint_id"], "patch": {"topic": "forks"}});
    assert_eq!(reader.post(&format!("/v1/threads/{thread}/fork"), fork.clone()).await.0, StatusCode::FORBIDDEN);
    assert_eq!(other.post(&format!("/v1/threads/{thread}/fork"), fork.clone()).await.0, StatusCode::NOT_FOUND);
    let (status, forked) = owner.post(&format!("/v1/threads/{thread}/fork"), fork).await;
    assert_eq!(status, StatusCode::CREATED, "{forked}");
    assert_ne!(forked["thread_id"], done["thread_id"]);
    let (_, forked) = owner.get(&format!("/v1/runs/{}/wait?timeout_s=30", forked["id"].as_str().unwrap())).await;
    assert_eq!(forked["status"], "waiting", "{forked}");
    let (_, pending) =
        owner.get(&format!("/v1/approvals?status=pending&run_id={}", forked["id"].as_str().unwrap())).await;
    assert_eq!(pending[0]["payload"]["draft"], "First draft about forks");
}

#[tokio::test]
async fn runs_approvals_and_events_over_http_on_postgres() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    scenario(&cli).await;
}

#[tokio::test]
async fn runs_approvals_and_events_over_http_on_the_embedded_default() {
    // No DATABASE_URL: the SQLite file under `.crewgraph/`.
    let cli = Cli::new("");
    scenario(&cli).await;
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_MAX_BODY_BYTES", "4096");
    let server = Server::start(&cli, &["--no-workers"]);
    let api = Api::new(&server.base, &make_key(&cli, "acme", "submit"));
    let http = api.http.clone();
    let url = format!("{}/v1/runs", server.base);

    let (status, body) = api.post("/v1/runs", json!({"graph": "no-such-graph"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "graph_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("no-such-graph"));

    let (status, body) = api.post("/v1/runs", json!({"graph": "review-publish", "input": {"topic": 7}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"]["path"], "input.topic");

    let big = json!({"graph": "review-publish", "input": {"topic": "x".repeat(10_000)}});
    let resp = http.post(&url).bearer_auth(&api.key).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.json::<Value>().await.unwrap()["error"]["code"].is_string());

    let resp = http
        .post(&url)
        .bearer_auth(&api.key)
        .header("content-type", "application/json")
        .body("{\"graph\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "bad_request");

    let resp = http.get(format!("{}/v1/runs", server.base)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http.get(format!("{}/v1/runs", server.base)).bearer_auth("cg_wrong").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Idempotency: the same key and body give the same run; another body is a conflict.
    let body = json!({"graph": "review-publish", "input": {"topic": "a"}, "idempotency_key": "order-1"});
    let (first, a) = api.post("/v1/runs", body.clone()).await;
    let (again, b) = api.post("/v1/runs", body).await;
    assert_eq!((first, again), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(a["id"], b["id"]);
    let (status, c) = api
        .post("/v1/runs", json!({"graph": "review-publish", "input": {"topic": "b"}, "idempotency_key": "order-1"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(c["error"]["code"], "idempotency_key_reused");

    // One active run per thread: reject by default, enqueue on request.
    let thread = a["thread_id"].as_str().unwrap();
    let (status, busy) = api.post("/v1/runs", json!({"graph": "review-publish", "thread_id": thread})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(busy["error"]["details"]["run_id"], a["id"]);
    let (status, queued) = api
        .post("/v1/runs", json!({"graph": "review-publish", "thread_id": thread, "multitask_strategy": "enqueue"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{queued}");

    // Cancelling a queued run is immediate.
    let (status, cancelled) = api.post(&format!("/v1/runs/{}/cancel", queued["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn collections_over_http_are_per_tenant() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_EMBEDDING_MODEL", "hashing");
    let server = Server::start(&cli, &["--no-workers"]);
    let acme = Api::new(&server.base, &make_key(&cli, "acme", "submit"));
    let globex = Api::new(&server.base, &make_key(&cli, "globex", "submit"));
    let reader = Api::new(&server.base, &make_key(&cli, "acme", "read"));

    let docs = json!({"documents": [
        {"source": "refunds.md", "text": "# Refunds\n\nRefunds are paid to the original card within 14 days.",
         "metadata": {"lang": "en"}},
        {"source": "shipping.md", "text": "# Shipping\n\nParcels leave the warehouse every weekday at noon."}
    ]});
    assert_eq!(reader.post("/v1/collections/handbook/documents", docs.clone()).await.0, StatusCode::FORBIDDEN);
    let (status, added) = acme.post("/v1/collections/handbook/documents", docs.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["documents"][0]["added"], 1);
    assert_eq!(added["documents"][0]["ids"].as_array().unwrap().len(), 1);
    let (_, again) = acme.post("/v1/collections/handbook/documents", docs).await;
    assert_eq!(again["documents"][0]["added"], 0);
    assert_eq!(again["documents"][0]["unchanged"], 1);

    let (status, found) =
        reader.post("/v1/collections/handbook/query", json!({"query": "refund card", "top_k": 1})).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let top = &found["results"][0];
    assert_eq!(top["source"], "refunds.md");
    assert!(top["text"].as_str().unwrap().contains("14 days"));
    assert!(top["score"].as_f64().unwrap() > 0.0);

    // Another tenant's search of the same collection name finds none of acme's chunks, whatever it claims.
    let (_, theirs) =
        globex.post("/v1/collections/handbook/query", json!({"query": "refund card", "tenant": "acme"})).await;
    assert_eq!(theirs["results"], json!([]), "{theirs}");
    let (status, missing) = acme.post("/v1/collections/nowhere/query", json!({"query": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    let (status, bad) = acme.post("/v1/collections/handbook/query", json!({"query": "x", "filter": {"a b": 1}})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
}

async fn rate_limited(cli: Cli) {
    let cli = cli.with_env("CREWGRAPH_RATE_LIMIT", "0.5").with_env("CREWGRAPH_RATE_BURST", "3");
    let server = Server::start(&cli, &["--no-workers"]);
    let key = make_key(&cli, "acme", "read");
    let api = Api::new(&server.base, &key);
    let url = format!("{}/v1/runs", server.base);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = api.http.get(&url).bearer_auth(&key).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert!(resp.headers().contains_key("x-ratelimit-reset"));
        remaining.push(resp.headers()["x-ratelimit-remaining"].to_str().unwrap().to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let resp = api.http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    // Another key has its own bucket.
    let other = make_key(&cli, "acme", "read");
    assert_eq!(api.http.get(&url).bearer_auth(&other).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn rate_limits_per_key_in_process() {
    let db = TestDb::new().await.unwrap();
    rate_limited(Cli::new(&db.url)).await;
}

#[tokio::test]
async fn rate_limits_per_key_in_redis() {
    let db = TestDb::new().await.unwrap();
    let prefix = format!("cg-test-{}", uuid::Uuid::now_v7().simple());
    rate_limited(Cli::new(&db.url).with_env("REDIS_URL", &redis_url()).with_env("CREWGRAPH_REDIS_PREFIX", &prefix))
        .await;
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_logged() {
    use crewgraph_tests::openai_server::{OpenAiServer, Reply};
    let receiver = OpenAiServer::start(vec![
        Reply::error(500, None),
        Reply::Json { status: 200, body: json!({}), headers: vec![] },
        Reply::Json { status: 204, body: json!({}), headers: vec![] },
    ])
    .await;
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url).with_env("CREWGRAPH_WEBHOOK_SECRET", "s3cret");
    let server = Server::start(&cli, &["--workers", "1"]);
    let api = Api::new(&server.base, &make_key(&cli, "acme", "submit,approve"));

    let (status, bad) =
        api.post("/v1/runs", json!({"graph": "review-publish", "webhook": "ftp://example.com/hook"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let hook = format!("{}/hooks/crewgraph", receiver.base_url);
    let (_, run) = api.post("/v1/runs", json!({"graph": "review-publish", "webhook": hook})).await;
    let id = run["id"].as_str().unwrap().to_string();
    let (_, waiting) = api.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(waiting["status"], "waiting");
    // approval.requested: refused once (500), delivered on the retry.
    let delivered = |n: usize| {
        let receiver = &receiver;
        async move {
            for _ in 0..200 {
                if receiver.request_count() >= n {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(delivered(2).await, "approval.requested delivered after one retry");
    let (_, pending) = api.get(&format!("/v1/approvals?status=pending&run_id={id}")).await;
    api.post(&format!("/v1/approvals/{}", pending[0]["id"].as_str().unwrap()), json!({"action": "approve"})).await;
    assert!(delivered(3).await, "run.succeeded delivered");

    let bodies = receiver.requests.lock().unwrap().clone();
    let heads = receiver.heads.lock().unwrap().clone();
    assert_eq!(bodies[0]["event"], "approval.requested");
    assert_eq!(bodies[1], bodies[0], "the retry sends the same delivery");
    assert_eq!(bodies[1]["data"]["node"], "review");
    assert_eq!(bodies[2]["event"], "run.succeeded");
    assert_eq!(bodies[2]["run"]["output"]["published"], "First draft about durable agents");
    // The signature covers the timestamp and the exact body.
    for (head, body) in heads.iter().zip(&bodies) {
        let sig = head
            .lines()
            .find_map(|l| l.to_lowercase().strip_prefix("x-crewgraph-signature:").map(|v| v.trim().to_string()))
            .expect("signature header");
        let t: i64 = sig.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
        assert_eq!(sig, crewgraph_server::webhooks::signature("s3cret", t, &body.to_string()));
    }

    // The worker records an attempt after the receiver has answered: wait for the log to say so.
    let mut log = Value::Null;
    for _ in 0..100 {
        log = api.get(&format!("/v1/runs/{id}/webhooks")).await.1;
        if log.as_array().is_some_and(|l| l.len() == 2 && l.iter().all(|d| d["status"] == "delivered")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (log[0]["event"].as_str(), log[0]["status"].as_str(), log[0]["attempts"].as_i64()),
        (Some("approval.requested"), Some("delivered"), Some(2))
    );
    assert_eq!(
        (log[1]["event"].as_str(), log[1]["status"].as_str(), log[1]["last_status"].as_i64()),
        (Some("run.succeeded"), Some("delivered"), Some(204))
    );
}

#[tokio::test]
async fn the_openapi_document_validates_and_matches_the_routes() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let server = Server::start(&cli, &["--no-workers"]);
    let http = Api::new(&server.base, "").http;
    let doc: Value = http.get(format!("{}/openapi.json", server.base)).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();

    // DESIGN.md's table, every row.
    let design = [
        ("post", "/v1/runs"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{id}"),
        ("get", "/v1/runs/{id}/wait"),
        ("get", "/v1/runs/{id}/events"),
        ("post", "/v1/runs/{id}/cancel"),
        ("get", "/v1/approvals"),
        ("post", "/v1/approvals/{id}"),
        ("get", "/v1/threads/{id}/state"),
        ("get", "/v1/threads/{id}/history"),
        ("post", "/v1/threads/{id}/fork"),
        ("get", "/v1/graphs"),
        ("post", "/v1/graphs"),
        ("post", "/v1/graphs/validate"),
        ("post", "/v1/collections/{name}/documents"),
        ("post", "/v1/collections/{name}/query"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in design {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} is not documented");
    }
    // Every documented operation is served: without a key it is refused (401) or answered, never "no such route".
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", server.base, path.replace("{id}", "x").replace("{name}", "c"));
            let req = match method.as_str() {
                "get" => http.get(&url),
                "post" => http.post(&url).header("content-type", "application/json").body("{}"),
                other => panic!("unexpected method {other}"),
            };
            let status = req.send().await.unwrap().status();
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status}"
            );
        }
    }
    match std::env::var("CREWGRAPH_OPENAPI_VALIDATOR") {
        Ok(validator) => {
            let file = cli.write("openapi.json", &doc.to_string());
            let out = std::process::Command::new(validator).arg(&file).output().unwrap();
            assert!(
                out.status.success(),
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) => eprintln!(
            "skipped validation: CREWGRAPH_OPENAPI_VALIDATOR is not set (tests/run.sh installs openapi-spec-validator)"
        ),
    }
}

#[tokio::test]
async fn an_expired_approval_takes_its_default_action() {
    const EXPIRING: &str = "name: expiring
state:
  review: { type: object }
  done: { type: string }
entry: review
output: [review, done]
nodes:
  review: { kind: approval, actions: [approve, reject], into: review, expires_in_s: 1, on_expiry: approve }
  finish: { kind: set, values: { done: \"{{ state.review.action }}\" } }
edges:
  - { from: review, to: finish }
  - { from: finish, to: END }
";
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    cli.write("graphs/expiring.yaml", EXPIRING);
    let server = Server::start(&cli, &["--workers", "1"]);
    let api = Api::new(&server.base, &make_key(&cli, "acme", "submit,approve"));
    let (status, run) = api.post("/v1/runs", json!({"graph": "expiring"})).await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap();
    let (_, waiting) = api.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(waiting["status"], "waiting");
    let (_, pending) = api.get(&format!("/v1/approvals?run_id={id}")).await;
    assert!(pending[0]["expires_at"].is_string(), "{pending}");
    // Nobody decides: after a second the default action is taken and the run goes on.
    let mut done = Value::Null;
    for _ in 0..100 {
        done = api.get(&format!("/v1/runs/{id}")).await.1;
        if done["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["done"], "approve");
    assert_eq!(done["output"]["review"]["comment"], "expired: no decision in time");
    let (status, late) =
        api.post(&format!("/v1/approvals/{}", pending[0]["id"].as_str().unwrap()), json!({"action": "reject"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{late}");
}

#[tokio::test]
async fn a_replica_streams_events_another_replica_executes() {
    let db = TestDb::new().await.unwrap();
    let prefix = format!("cg-test-{}", uuid::Uuid::now_v7().simple());
    let cli = Cli::new(&db.url).with_env("REDIS_URL", &redis_url()).with_env("CREWGRAPH_REDIS_PREFIX", &prefix);
    let key = make_key(&cli, "acme", "submit,approve");
    let executor = Server::start(&cli, &["--workers", "2"]);
    let front = Server::start(&cli, &["--no-workers"]);
    let api = Api::new(&front.base, &key);
    let (_, run) = api.post("/v1/runs", json!({"graph": "review-publish"})).await;
    let id = run["id"].as_str().unwrap().to_string();
    // Follow the stream on the replica that does not execute, from before the approval to the end.
    let follower = api.clone();
    let stream_id = id.clone();
    let stream = tokio::spawn(async move { follower.events(&stream_id, None).await });
    let (_, waiting) = api.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(waiting["status"], "waiting");
    let (_, pending) = api.get(&format!("/v1/approvals?status=pending&run_id={id}")).await;
    api.post(&format!("/v1/approvals/{}", pending[0]["id"].as_str().unwrap()), json!({"action": "approve"})).await;
    let events = stream.await.unwrap();
    let ids: Vec<i64> = events.iter().map(|e| e.0).collect();
    assert_eq!(ids, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events.first().map(|e| e.1.as_str()), Some("run.queued"));
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("run.succeeded"));
    drop(executor);
}

#[tokio::test]
async fn the_cli_decides_approvals_on_a_server() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let server = Server::start(&cli, &["--workers", "1"]);
    let key = make_key(&cli, "acme", "submit,approve");
    let api = Api::new(&server.base, &key);
    let (_, run) = api.post("/v1/runs", json!({"graph": "review-publish", "input": {"topic": "remote"}})).await;
    let id = run["id"].as_str().unwrap().to_string();
    api.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    // Another database entirely: the CLI only talks to the server.
    let remote = Cli::new("postgres://nobody@127.0.0.1:1/none").with_env("CREWGRAPH_API_KEY", &key);
    let listed = remote.json(&["approvals", "list", "--url", &server.base, "--json", "--run", &id]);
    assert_eq!(listed[0]["payload"]["draft"], "First draft about remote", "{listed}");
    let approval = listed[0]["id"].as_str().unwrap();
    let out = remote.run(&["approvals", "approve", approval, "--url", &server.base, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", crewgraph_tests::stderr(&out));
    let (_, done) = api.get(&format!("/v1/runs/{id}/wait?timeout_s=30")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let again = remote.run(&["approvals", "reject", approval, "--url", &server.base]);
    assert_eq!(again.status.code(), Some(1));
    assert!(crewgraph_tests::stderr(&again).contains("409"), "{}", crewgraph_tests::stderr(&again));
}

const GREETER: &str = "name: greeter
description: says hello once approved
state:
  who: { type: string }
  review: { type: object }
  greeting: { type: string }
entry: review
output: [greeting]
nodes:
  review: { kind: approval, actions: [approve, reject], into: review }
  greet: { kind: set, values: { greeting: \"VERSION hello {{ state.who }}\" } }
edges:
  - { from: review, to: greet }
  - { from: greet, to: END }
";

#[tokio::test]
async fn graphs_registered_over_http_are_versioned_per_tenant() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    let server = Server::start(&cli, &["--workers", "1"]);
    let admin = Api::new(&server.base, &make_key(&cli, "acme", "admin"));
    let submitter = Api::new(&server.base, &make_key(&cli, "acme", "submit,approve"));
    let globex = Api::new(&server.base, &make_key(&cli, "globex", "admin"));
    let v1 = GREETER.replace("VERSION", "v1");
    let v2 = GREETER.replace("VERSION", "v2");

    let (status, denied) = submitter.post_text("/v1/graphs", &v1).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    let (status, bad) = admin.post_text("/v1/graphs", &v1.replace("entry: review", "entry: nowhere")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    assert_eq!(bad["error"]["details"]["errors"][0]["line"], 7, "{bad}");
    assert!(bad["error"]["details"]["errors"][0]["message"].as_str().unwrap().contains("nowhere"), "{bad}");
    let (status, taken) = admin.post_text("/v1/graphs", &v1.replace("name: greeter", "name: review-publish")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    assert_eq!(taken["error"]["code"], "graph_exists");

    let (status, first) = admin.post_text("/v1/graphs", &v1).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!((first["name"].as_str(), first["version"].as_i64()), (Some("greeter"), Some(1)));
    let (status, same) = admin.post_text("/v1/graphs", &v1).await;
    assert_eq!((status, same["version"].as_i64()), (StatusCode::OK, Some(1)), "{same}");

    // A run keeps the version it started with when a new one is registered meanwhile.
    let (status, early) = submitter.post("/v1/runs", json!({"graph": "greeter", "input": {"who": "ada"}})).await;
    assert_eq!(status, StatusCode::CREATED, "{early}");
    let early = early["id"].as_str().unwrap().to_string();
    assert_eq!(submitter.wait(&early).await["status"], "waiting");
    let (status, second) = admin.post_text("/v1/graphs", &v2).await;
    assert_eq!((status, second["version"].as_i64()), (StatusCode::CREATED, Some(2)), "{second}");
    submitter.decide(&early, "approve").await;
    let done = submitter.settled(&early).await;
    assert_eq!(done["output"]["greeting"], "v1 hello ada", "{done}");

    let (_, late) = submitter.post("/v1/runs", json!({"graph": "greeter", "input": {"who": "bob"}})).await;
    let late = late["id"].as_str().unwrap().to_string();
    assert_eq!(submitter.wait(&late).await["status"], "waiting");
    submitter.decide(&late, "approve").await;
    assert_eq!(submitter.settled(&late).await["output"]["greeting"], "v2 hello bob");

    // Listed and readable by its tenant, with the registered text; invisible to another.
    let (_, listed) = submitter.get("/v1/graphs").await;
    let greeter = listed.as_array().unwrap().iter().find(|g| g["name"] == "greeter").expect("listed");
    assert_eq!((greeter["source"].as_str(), greeter["version"].as_i64()), (Some("registered"), Some(2)));
    assert!(listed.as_array().unwrap().iter().any(|g| g["name"] == "review-publish" && g["source"] == "file"));
    let (status, one) = submitter.get("/v1/graphs/greeter").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["definition"], v2.as_str());
    assert_eq!(globex.get("/v1/graphs/greeter").await.0, StatusCode::NOT_FOUND);
    let (_, theirs) = globex.get("/v1/graphs").await;
    assert!(!theirs.as_array().unwrap().iter().any(|g| g["name"] == "greeter"), "{theirs}");
    let (status, missing) = globex.post("/v1/runs", json!({"graph": "greeter", "input": {"who": "eve"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    // The other tenant may register its own under the same name.
    let (status, own) = globex.post_text("/v1/graphs", &v1).await;
    assert_eq!((status, own["version"].as_i64()), (StatusCode::CREATED, Some(1)), "{own}");
}

const TALLY: &str = "name: tally
state:
  item: { type: string }
  log: { type: array, reducer: append }
  review: { type: object }
entry: add
output: [log]
nodes:
  add: { kind: set, values: { log: \"{{ state.item }}\" } }
  review: { kind: approval, actions: [approve, reject], into: review }
edges:
  - { from: add, to: review }
  - { from: review, to: END }
";

#[tokio::test]
async fn rollback_forgets_the_run_it_replaces_and_interrupt_keeps_it() {
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url);
    cli.write("graphs/tally.yaml", TALLY);
    let server = Server::start(&cli, &["--workers", "1"]);
    let api = Api::new(&server.base, &make_key(&cli, "acme", "submit,approve"));
    let submit = |item: &str, strategy: &str| {
        let body =
            json!({"graph": "tally", "thread_id": "t-1", "input": {"item": item}, "multitask_strategy": strategy});
        let api = api.clone();
        async move {
            let (status, run) = api.post("/v1/runs", body).await;
            assert_eq!(status, StatusCode::CREATED, "{run}");
            let id = run["id"].as_str().unwrap().to_string();
            let waiting = api.wait(&id).await;
            assert_eq!(waiting["status"], "waiting", "{waiting}");
            id
        }
    };
    let log = |api: Api| async move {
        let (_, state) = api.get("/v1/threads/t-1/state").await;
        state["values"]["log"].clone()
    };

    let one = submit("one", "reject").await;
    api.decide(&one, "approve").await;
    assert_eq!(api.settled(&one).await["status"], "succeeded");
    let two = submit("two", "reject").await;
    assert_eq!(log(api.clone()).await, json!(["one", "two"]));

    let three = submit("three", "rollback").await;
    let (_, two_now) = api.get(&format!("/v1/runs/{two}")).await;
    assert_eq!(two_now["status"], "cancelled");
    assert_eq!(two_now["error"]["message"], format!("rolled back by run {three}"));
    let two_events = api.events(&two, None).await;
    assert_eq!(two_events.last().map(|(_, kind)| kind.as_str()), Some("run.cancelled"), "{two_events:?}");
    let (_, approvals) = api.get(&format!("/v1/approvals?run_id={two}")).await;
    assert_eq!(approvals, json!([]), "run two's approval is forgotten with it");
    assert_eq!(log(api.clone()).await, json!(["one", "three"]), "run two's step is forgotten");
    let (_, history) = api.get("/v1/threads/t-1/history").await;
    assert!(
        !history.as_array().unwrap().iter().any(|c| c["metadata"]["run_id"] == two.as_str()),
        "no checkpoint of run two is left: {history}"
    );
    api.decide(&three, "approve").await;
    assert_eq!(api.settled(&three).await["output"]["log"], json!(["one", "three"]));

    // Interrupt cancels the active run but keeps what it wrote.
    let four = submit("four", "reject").await;
    let five = submit("five", "interrupt").await;
    assert_eq!(api.get(&format!("/v1/runs/{four}")).await.1["status"], "cancelled");
    let four_events = api.events(&four, None).await;
    assert_eq!(four_events.last().map(|(_, kind)| kind.as_str()), Some("run.cancelled"), "{four_events:?}");
    assert_eq!(log(api.clone()).await, json!(["one", "three", "four", "five"]));
    api.decide(&five, "approve").await;
    assert_eq!(api.settled(&five).await["status"], "succeeded");
}

// Multi-threaded: the collector must answer while the test blocks on the server's shutdown (its last export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_joins_the_trace_of_its_request_in_logs_and_in_otlp_export() {
    use crewgraph_tests::openai_server::{OpenAiServer, Reply};
    let collector =
        OpenAiServer::start((0..100).map(|_| Reply::Raw { status: 200, body: String::new() }).collect()).await;
    let endpoint = collector.base_url.trim_end_matches("/v1").to_string();
    let db = TestDb::new().await.unwrap();
    let cli = Cli::new(&db.url)
        .with_env("CREWGRAPH_LOG", "info")
        .with_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .with_env("OTEL_BSP_SCHEDULE_DELAY", "200");
    cli.write("graphs/five-steps.yaml", include_str!("../fixtures/five-steps.yaml"));
    let log_path = cli.dir.join("serve.log");
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut server = Server::start_logging_to(&cli, &["--workers", "1"], log_file.into());
    let api = Api::new(&server.base, &make_key(&cli, "acme", "submit"));

    // A trace id whose 16 bytes are printable, so it can be found in the protobuf body as text.
    let trace_id: String = b"crewgraph-trace!".iter().map(|b| format!("{b:02x}")).collect();
    let resp = api
        .http
        .post(format!("{}/v1/runs", server.base))
        .bearer_auth(&api.key)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"graph": "five-steps", "input": {"n": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let echoed = resp.headers()["traceparent"].to_str().unwrap().to_string();
    assert!(echoed.starts_with(&format!("00-{trace_id}-")) && !echoed.contains("00f067aa0ba902b7"), "{echoed}");
    let run: Value = resp.json().await.unwrap();
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(api.wait(&id).await["status"], "succeeded");
    // Without a traceparent a request starts its own trace.
    let (_, other) = api.post("/v1/runs", json!({"graph": "five-steps", "input": {"n": 0}})).await;
    assert_eq!(api.wait(other["id"].as_str().unwrap()).await["status"], "succeeded");
    server.stop();

    // The worker's log lines for the run carry the request's trace id.
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<Value> = logs.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let of_run: Vec<&Value> = lines.iter().filter(|l| l["span"]["run_id"] == id.as_str()).collect();
    assert!(!of_run.is_empty(), "no log line of the run:\n{logs}");
    assert!(of_run.iter().all(|l| l["span"]["trace_id"] == trace_id.as_str()), "{of_run:?}");
    let other_trace = lines
        .iter()
        .find(|l| l["span"]["run_id"] == other["id"])
        .and_then(|l| l["span"]["trace_id"].as_str())
        .expect("the second run logged its trace");
    assert_ne!(other_trace, trace_id);

    // Spans went to the collector over OTLP/HTTP, the run's execution in the request's trace.
    let heads = collector.heads.lock().unwrap().clone();
    assert!(heads.iter().any(|h| h.starts_with("POST /v1/traces")), "{heads:?}");
    let bodies: Vec<String> = collector.requests.lock().unwrap().iter().map(|b| b.to_string()).collect();
    let traced = bodies.iter().any(|b| b.contains("crewgraph-trace!") && b.contains(&id));
    assert!(traced, "no exported span of the run in the trace: {bodies:?}");
}
