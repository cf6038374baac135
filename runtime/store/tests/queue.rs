//! The run queue's lease rules on both SQL backends (a fresh database per test).

use crewgraph_engine::{Run, RunStatus, RunStore};
use crewgraph_store::{Multitask, PgStore, RunQueue, SqliteStore, Submission, Submitted};
use sqlx::{PgPool, SqlitePool};

fn submission(run: &Run) -> Submission {
    Submission {
        run: run.clone(),
        idempotency_key: None,
        request_hash: String::new(),
        webhook: None,
        traceparent: None,
        multitask: Multitask::Reject,
        max_attempts: 3,
    }
}

/// A cancellation that reaches a leased run after its last heartbeat, when the
/// run then stops to wait for a decision, takes effect as the worker releases it.
async fn a_late_cancellation_is_applied_at_release<S: RunQueue + RunStore>(store: S) {
    let run = Run::new("g", "t-1", serde_json::json!({}));
    assert!(matches!(store.submit(&submission(&run)).await.unwrap(), Submitted::Created { .. }));
    let lease = store.claim("w1", 30_000).await.unwrap().expect("claimed");
    let marked = store.cancel(&run.tenant, &run.id).await.unwrap().expect("found");
    assert_ne!(marked.status, RunStatus::Cancelled, "a leased run is only marked");
    let mut waiting = lease.run.clone();
    waiting.status = RunStatus::Waiting;
    store.update_run(&waiting).await.unwrap();
    let cancelled = store.release(&run.id, "w1").await.unwrap().expect("cancelled at release");
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(store.get_run(&run.id).await.unwrap().unwrap().status, RunStatus::Cancelled);

    // Without a cancellation, a waiting run is released as it is.
    let other = Run::new("g", "t-2", serde_json::json!({}));
    store.submit(&submission(&other)).await.unwrap();
    let lease = store.claim("w1", 30_000).await.unwrap().expect("claimed");
    let mut waiting = lease.run.clone();
    waiting.status = RunStatus::Waiting;
    store.update_run(&waiting).await.unwrap();
    assert_eq!(store.release(&other.id, "w1").await.unwrap(), None);
    assert_eq!(store.get_run(&other.id).await.unwrap().unwrap().status, RunStatus::Waiting);
    let mut behind = submission(&Run::new("g", "t-2", serde_json::json!({})));
    behind.multitask = Multitask::Enqueue;
    store.submit(&behind).await.unwrap();
    // With no approval pending (all decided meanwhile) the waiting run is ready again, ahead of the one behind it.
    let next = store.claim("w2", 30_000).await.unwrap().expect("claimed");
    assert_eq!(next.run.id, other.id);
    assert!(store.claim("w3", 30_000).await.unwrap().is_none(), "one run of a thread at a time");
}

#[sqlx::test(migrations = "../../migrations/postgres")]
async fn postgres_applies_a_late_cancellation_at_release(pool: PgPool) {
    a_late_cancellation_is_applied_at_release(PgStore::from_pool(pool)).await;
}

#[sqlx::test(migrations = "../../migrations/sqlite")]
async fn sqlite_applies_a_late_cancellation_at_release(pool: SqlitePool) {
    a_late_cancellation_is_applied_at_release(SqliteStore { pool }).await;
}
