//! One suite, every backend: Postgres and SQLite (each test gets its own
//! database from `#[sqlx::test]`), the in-memory store, and Redis in front.

use std::sync::Arc;

use crewgraph_engine::event::NullSink;
use crewgraph_engine::node::FnNode;
use crewgraph_engine::*;
use crewgraph_store::{HotCheckpointer, PgStore, RedisCache, SqliteStore};
use serde_json::{Map, Value, json};
use sqlx::{PgPool, SqlitePool};

fn writes(v: Value) -> NodeOutput {
    NodeOutput::writes(v.as_object().cloned().unwrap_or_default())
}

/// `n` nodes in a line; each appends a message and bumps a counter.
fn chat_graph(n: usize) -> Arc<Graph> {
    let mut b = GraphBuilder::new("chat")
        .channel(ChannelSpec::new("messages", Reducer::Messages))
        .channel(ChannelSpec::new("count", Reducer::Sum))
        .channel(ChannelSpec::new("topic", Reducer::Replace));
    for i in 0..n {
        let name = format!("n{i}");
        b = b.node(NodeSpec::new(
            &name,
            Arc::new(FnNode(move |ctx: NodeContext| async move {
                let topic = ctx.state["topic"].as_str().unwrap_or("").to_string();
                Ok(writes(json!({"messages": {"id": format!("m{i}"), "text": format!("{topic} {i}")}, "count": 1})))
            })),
        ));
        if i > 0 {
            b = b.edge(&format!("n{}", i - 1), &name);
        }
    }
    Arc::new(b.entry("n0").build().unwrap_or_else(|e| panic!("{e:?}")))
}

async fn suite<S: Checkpointer + RunStore + 'static>(store: Arc<S>) {
    let rt = Runtime::new(store.clone(), store.clone(), Arc::new(NullSink));
    let g = chat_graph(6);
    let input: Map<String, Value> = json!({"topic": "cats"}).as_object().cloned().unwrap();
    let run = rt.create_run(&g, input, Some("thread-a".into()), Some("graphs/chat.yaml".into())).await.unwrap();
    let done = rt.execute(g.clone(), &run.id, None).await.unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{:?}", done.error);
    assert_eq!(done.output["count"], json!(6));

    // The run record round-trips.
    let stored = rt.get_run(&run.id).await.unwrap();
    assert_eq!(stored.status, RunStatus::Succeeded);
    assert_eq!(stored.output, done.output);
    assert_eq!(stored.definition.as_deref(), Some("graphs/chat.yaml"));
    assert_eq!(store.list_runs(Some(RunStatus::Succeeded), 10).await.unwrap().len(), 1);
    assert!(store.list_runs(Some(RunStatus::Failed), 10).await.unwrap().is_empty());

    // History: every checkpoint, newest first, each with the state of its step.
    let history = store.list("thread-a", None).await.unwrap();
    assert_eq!(history.len(), 7);
    for (i, c) in history.iter().enumerate() {
        let step = 6 - i as i64;
        assert_eq!(c.step, step);
        assert_eq!(c.values["count"], json!(step));
        assert_eq!(c.values["messages"].as_array().unwrap().len(), step as usize);
        assert_eq!(c.values["topic"], json!("cats"), "an unchanged channel is rebuilt from its one blob");
    }
    assert_eq!(history[0].parent_id, Some(history[1].id));
    let middle = store.get("thread-a", Some(history[3].id)).await.unwrap().unwrap();
    assert_eq!(middle.values, history[3].values);
    assert_eq!(store.latest_id("thread-a").await.unwrap(), Some(history[0].id));
    assert!(store.get("nope", None).await.unwrap().is_none());

    // Fork from the middle with a patch: the new thread diverges, the old is untouched.
    let patch = json!({"topic": "dogs"}).as_object().cloned().unwrap();
    let fork = rt.fork(g.clone(), "thread-a", history[3].id, patch, None).await.unwrap();
    let forked = rt.execute(g.clone(), &fork.id, None).await.unwrap();
    assert_eq!(forked.status, RunStatus::Succeeded, "{:?}", forked.error);
    let texts: Vec<&str> =
        forked.output["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["cats 0", "cats 1", "cats 2", "dogs 3", "dogs 4", "dogs 5"]);
    let orig = store.get("thread-a", None).await.unwrap().unwrap();
    assert_eq!(orig.values["messages"][5]["text"], json!("cats 5"));

    // Pending writes are kept per task, replaced on retry.
    let r = TaskResult {
        task_id: "t1".into(),
        node: "n1".into(),
        index: 0,
        writes: Map::new(),
        goto: None,
        interrupt: None,
    };
    store.put_writes("thread-a", orig.id, &r).await.unwrap();
    store.put_writes("thread-a", orig.id, &r).await.unwrap();
    assert_eq!(store.get_writes("thread-a", orig.id).await.unwrap(), vec![r]);

    // Copy, prune, delete.
    store.copy_thread("thread-a", "thread-b", None).await.unwrap();
    assert_eq!(store.list("thread-b", None).await.unwrap().len(), 7);
    let pruned = store.prune(&Retention { keep_last: Some(2), max_age_s: None }).await.unwrap();
    assert!(pruned >= 10, "pruned {pruned}");
    let kept = store.list("thread-b", None).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].values["count"], json!(6), "state survives pruning");
    assert_eq!(kept[1].values["messages"].as_array().unwrap().len(), 5);
    store.delete_thread("thread-b").await.unwrap();
    assert!(store.get("thread-b", None).await.unwrap().is_none());
    assert_eq!(store.list("thread-a", None).await.unwrap().len(), 2);

    // Approvals: created once per interrupt, decided once.
    let approval = Approval {
        id: "ap-1".into(),
        run_id: run.id.clone(),
        thread_id: "thread-a".into(),
        interrupt_id: "int-1".into(),
        node: "review".into(),
        payload: json!({"draft": "x"}),
        actions: vec!["approve".into(), "reject".into()],
        status: ApprovalStatus::Pending,
        decision: None,
        created_at: now_ms(),
        decided_at: None,
        expires_at: None,
        on_expiry: None,
    };
    assert!(store.create_approval(&approval).await.unwrap());
    assert!(!store.create_approval(&Approval { id: "ap-2".into(), ..approval.clone() }).await.unwrap());
    assert_eq!(store.list_approvals(Some(ApprovalStatus::Pending), Some(&run.id)).await.unwrap().len(), 1);
    let d = Decision { action: DecisionAction::Reject, value: None, comment: Some("shorter".into()) };
    let racers = (0..8).map(|_| {
        let s = store.clone();
        let d = d.clone();
        tokio::spawn(async move { s.decide_approval("ap-1", &d, now_ms()).await.unwrap() })
    });
    let wins = futures::future::join_all(racers).await.into_iter().filter(|w| *w.as_ref().unwrap()).count();
    assert_eq!(wins, 1, "exactly one concurrent decision wins");
    let decided = store.get_approval("ap-1").await.unwrap().unwrap();
    assert_eq!(decided.status, ApprovalStatus::Decided);
    assert_eq!(decided.decision, Some(d));
    assert!(store.list_approvals(Some(ApprovalStatus::Pending), None).await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_store_passes_the_suite() {
    suite(Arc::new(MemoryStore::new())).await;
}

#[sqlx::test(migrations = "../../migrations/postgres")]
async fn postgres_passes_the_suite(pool: PgPool) {
    suite(Arc::new(PgStore::from_pool(pool))).await;
}

#[sqlx::test(migrations = "../../migrations/sqlite")]
async fn sqlite_passes_the_suite(pool: SqlitePool) {
    suite(Arc::new(SqliteStore { pool })).await;
}

/// A store whose checkpoints go through Redis and whose runs go to Postgres.
struct Hot {
    cp: HotCheckpointer,
    pg: PgStore,
}

#[async_trait::async_trait]
impl Checkpointer for Hot {
    async fn put(&self, c: &Checkpoint, b: &[ChannelBlob]) -> Result<(), StorageError> {
        self.cp.put(c, b).await
    }
    async fn get(&self, t: &str, id: Option<uuid::Uuid>) -> Result<Option<Checkpoint>, StorageError> {
        self.cp.get(t, id).await
    }
    async fn latest_id(&self, t: &str) -> Result<Option<uuid::Uuid>, StorageError> {
        self.cp.latest_id(t).await
    }
    async fn list(&self, t: &str, l: Option<u32>) -> Result<Vec<Checkpoint>, StorageError> {
        self.cp.list(t, l).await
    }
    async fn put_writes(&self, t: &str, c: uuid::Uuid, r: &TaskResult) -> Result<(), StorageError> {
        self.cp.put_writes(t, c, r).await
    }
    async fn get_writes(&self, t: &str, c: uuid::Uuid) -> Result<Vec<TaskResult>, StorageError> {
        self.cp.get_writes(t, c).await
    }
    async fn copy_thread(&self, f: &str, t: &str, u: Option<uuid::Uuid>) -> Result<(), StorageError> {
        self.cp.copy_thread(f, t, u).await
    }
    async fn delete_thread(&self, t: &str) -> Result<(), StorageError> {
        self.cp.delete_thread(t).await
    }
    async fn prune(&self, r: &Retention) -> Result<u64, StorageError> {
        self.cp.prune(r).await
    }
}

#[async_trait::async_trait]
impl RunStore for Hot {
    async fn create_run(&self, r: &Run) -> Result<(), StorageError> {
        self.pg.create_run(r).await
    }
    async fn get_run(&self, id: &str) -> Result<Option<Run>, StorageError> {
        self.pg.get_run(id).await
    }
    async fn update_run(&self, r: &Run) -> Result<(), StorageError> {
        self.pg.update_run(r).await
    }
    async fn list_runs(&self, s: Option<RunStatus>, l: u32) -> Result<Vec<Run>, StorageError> {
        self.pg.list_runs(s, l).await
    }
    async fn create_approval(&self, a: &Approval) -> Result<bool, StorageError> {
        self.pg.create_approval(a).await
    }
    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StorageError> {
        self.pg.get_approval(id).await
    }
    async fn list_approvals(&self, s: Option<ApprovalStatus>, r: Option<&str>) -> Result<Vec<Approval>, StorageError> {
        self.pg.list_approvals(s, r).await
    }
    async fn decide_approval(&self, id: &str, d: &Decision, at: i64) -> Result<bool, StorageError> {
        self.pg.decide_approval(id, d, at).await
    }
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn prefix(test: &str) -> String {
    format!("cgtest:{test}:{}", uuid::Uuid::now_v7())
}

#[sqlx::test(migrations = "../../migrations/postgres")]
async fn redis_in_front_of_postgres_passes_the_suite(pool: PgPool) {
    let cache = RedisCache::connect(&redis_url(), &prefix("suite")).await.unwrap();
    let pg = PgStore::from_pool(pool);
    suite(Arc::new(Hot { cp: HotCheckpointer::new(Arc::new(pg.clone()), cache.clone()), pg })).await;
    cache.clear().await.unwrap();
}

#[sqlx::test(migrations = "../../migrations/postgres")]
async fn a_stale_or_flushed_cache_never_changes_what_is_read(pool: PgPool) {
    let cache = RedisCache::connect(&redis_url(), &prefix("stale")).await.unwrap();
    let pg = Arc::new(PgStore::from_pool(pool));
    let hot = Arc::new(HotCheckpointer::new(pg.clone(), cache.clone()));
    let rt = Runtime::new(hot.clone(), pg.clone(), Arc::new(NullSink));
    let g = chat_graph(3);
    let run = rt.create_run(&g, Map::new(), Some("t".into()), None).await.unwrap();
    rt.execute(g.clone(), &run.id, None).await.unwrap();
    let latest = hot.get("t", None).await.unwrap().unwrap();
    assert_eq!(latest.step, 3);

    // A step that reached Postgres but not Redis: the cache still holds step 3.
    let mut newer = latest.clone();
    newer.id = uuid::Uuid::now_v7();
    newer.parent_id = Some(latest.id);
    newer.step = 4;
    newer.values.insert("count".into(), json!(99));
    newer.versions.insert("count".into(), 4);
    pg.put(&newer, &[ChannelBlob { channel: "count".into(), version: 4, blob: Blob::Full(json!(99)) }]).await.unwrap();
    let read = hot.get("t", None).await.unwrap().unwrap();
    assert_eq!((read.step, &read.values["count"]), (4, &json!(99)), "the database decides what is latest");

    assert!(cache.clear().await.unwrap() >= 1);
    let read = hot.get("t", None).await.unwrap().unwrap();
    assert_eq!(read.id, newer.id, "a flushed cache falls back to the database");
}

#[sqlx::test(migrations = "../../migrations/postgres")]
async fn postgres_blobs_per_step_stay_flat_as_messages_grow(pool: PgPool) {
    let pg = Arc::new(PgStore::from_pool(pool.clone()));
    let rt = Runtime::new(pg.clone(), pg.clone(), Arc::new(NullSink));
    let g = chat_graph(60);
    let run = rt
        .create_run(&g, json!({"topic": "x"}).as_object().cloned().unwrap(), Some("long".into()), None)
        .await
        .unwrap();
    rt.execute(g, &run.id, None).await.unwrap();
    let bytes: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT version, sum(length(body))::int8 FROM checkpoint_blobs WHERE thread_id = 'long' GROUP BY version ORDER BY version",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let at = |v: i64| bytes.iter().find(|(s, _)| *s == v).map(|(_, b)| *b).unwrap();
    assert!(at(10) > 0 && at(59) - at(10) <= 2, "step 10: {} bytes, step 59: {} bytes", at(10), at(59));
    let latest = pg.get("long", None).await.unwrap().unwrap();
    assert_eq!(latest.values["messages"].as_array().unwrap().len(), 60);
}

#[tokio::test]
async fn redis_announces_runs_with_new_events_to_every_follower() {
    let cache = RedisCache::connect(&redis_url(), &prefix("events")).await.unwrap();
    let (tx, mut rx) = tokio::sync::broadcast::channel(16);
    let follower = cache.clone();
    let task = tokio::spawn(async move { follower.follow_events(tx).await });
    // The subscription is in place once a published id comes back.
    let mut got = Vec::new();
    for _ in 0..50 {
        cache.publish_events(&["run-a", "run-b"]).await.unwrap();
        if let Ok(Ok(id)) = tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await {
            got.push(id.to_string());
            got.push(rx.recv().await.unwrap().to_string());
            break;
        }
    }
    task.abort();
    assert_eq!(got, ["run-a", "run-b"]);
}
