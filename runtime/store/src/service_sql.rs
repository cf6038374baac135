//! [`RunQueue`](crate::service::RunQueue), [`EventLog`](crate::service::EventLog)
//! and [`KeyStore`](crate::service::KeyStore), written once for both SQL
//! backends. What differs is passed in: how a write transaction begins, how
//! submissions on one thread are serialised, how a claim skips rows other
//! workers hold, and how workers are woken.

macro_rules! impl_service {
    (
        $store:ty,
        $pool:ty,
        $conn:ty,
        begin: $begin:expr,
        thread_lock: $thread_lock:expr,
        skip_locked: $skip_locked:expr,
        notify: $notify:expr $(,)?
    ) => {
        mod service_impl {
            use async_trait::async_trait;
            use crewgraph_engine::{Approval, Event, Run, RunStatus, StorageError};
            use sqlx::Row;
            use sqlx::types::Json;

            use super::run_store_impl::{APPROVAL_COLUMNS, RUN_COLUMNS, approval_from, run_from};
            use crate::error::db;
            use crate::service::*;

            const ACTIVE: &str = "('queued', 'running', 'waiting')";

            fn is_unique_violation(e: &sqlx::Error) -> bool {
                matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
            }

            fn sql(s: String) -> sqlx::AssertSqlSafe<String> {
                sqlx::AssertSqlSafe(s)
            }

            /// Cancels an active run: at once when no worker holds it, else by
            /// asking its worker (heartbeat, or `release` if it stops to wait).
            /// Statement by statement, because a lease can end in between:
            /// each conditional update sees the latest committed row.
            async fn cancel_active(conn: &mut $conn, id: &str, error: &Json<serde_json::Value>) -> Result<bool, sqlx::Error> {
                for _ in 0..3 {
                    let now_cancelled = sqlx::query(sql(format!(
                        "UPDATE runs SET status = 'cancelled', queue_state = NULL, error = $1, updated_at = $2
                         WHERE id = $3 AND status IN {ACTIVE} AND (queue_state IS NULL OR queue_state = 'ready')"
                    )))
                    .bind(error)
                    .bind(crewgraph_engine::now_ms())
                    .bind(id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                        == 1;
                    if now_cancelled {
                        sqlx::query("UPDATE approvals SET status = 'expired' WHERE run_id = $1 AND status = 'pending'")
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                        return Ok(true);
                    }
                    let asked = sqlx::query(sql(format!(
                        "UPDATE runs SET cancel_requested = TRUE
                         WHERE id = $1 AND status IN {ACTIVE} AND queue_state = 'leased'"
                    )))
                    .bind(id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected()
                        == 1;
                    if asked {
                        return Ok(false);
                    }
                    let active: Option<(String,)> =
                        sqlx::query_as(sql(format!("SELECT id FROM runs WHERE id = $1 AND status IN {ACTIVE}")))
                            .bind(id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    if active.is_none() {
                        return Ok(false);
                    }
                }
                Ok(false)
            }

            impl $store {
                async fn by_idempotency_key(&self, run: &Run, key: &str) -> Result<Option<(Run, Option<String>)>, StorageError> {
                    let row = sqlx::query(sql(format!(
                        "SELECT {RUN_COLUMNS}, request_hash FROM runs WHERE tenant = $1 AND idempotency_key = $2"
                    )))
                    .bind(&run.tenant)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    match row {
                        Some(r) => Ok(Some((run_from(&r).map_err(db)?, r.try_get("request_hash").map_err(db)?))),
                        None => Ok(None),
                    }
                }

                /// Wakes every worker waiting for runs (Postgres NOTIFY; in memory on SQLite).
                async fn wake_workers(&self, run_id: &str) -> Result<(), StorageError> {
                    sqlx::query($notify).bind(run_id).execute(&self.pool).await.map_err(db)?;
                    Ok(())
                }

                /// One transaction per batch: one commit (one fsync) for many events.
                async fn try_append(&self, events: &[Event]) -> Result<(), sqlx::Error> {
                    if events.is_empty() {
                        return Ok(());
                    }
                    let mut tx = self.pool.begin_with($begin).await?;
                    let mut next: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
                    let mut rows = Vec::with_capacity(events.len());
                    for e in events {
                        let seq = match next.get_mut(e.run_id.as_str()) {
                            Some(n) => n,
                            None => {
                                let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM run_events WHERE run_id = $1")
                                    .bind(&e.run_id)
                                    .fetch_one(&mut *tx)
                                    .await?;
                                next.entry(e.run_id.as_str()).or_insert(max.unwrap_or(0))
                            }
                        };
                        *seq += 1;
                        rows.push((*seq, e));
                    }
                    for chunk in rows.chunks(500) {
                        let values: Vec<String> = (0..chunk.len())
                            .map(|i| format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
                            .collect();
                        let statement =
                            format!("INSERT INTO run_events (run_id, seq, body, created_at) VALUES {}", values.join(", "));
                        let mut q = sqlx::query(sql(statement));
                        for (seq, e) in chunk {
                            q = q.bind(&e.run_id).bind(*seq).bind(Json(*e)).bind(e.at);
                        }
                        q.execute(&mut *tx).await?;
                    }
                    tx.commit().await
                }

                async fn try_submit(&self, s: &Submission) -> Result<Submitted, sqlx::Error> {
                    let run = &s.run;
                    let mut tx = self.pool.begin_with($begin).await?;
                    sqlx::query($thread_lock).bind(&run.thread_id).execute(&mut *tx).await?;
                    if let Some(key) = &s.idempotency_key {
                        let row = sqlx::query(sql(format!(
                            "SELECT {RUN_COLUMNS}, request_hash FROM runs WHERE tenant = $1 AND idempotency_key = $2"
                        )))
                        .bind(&run.tenant)
                        .bind(key)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(r) = row {
                            let hash: Option<String> = r.try_get("request_hash")?;
                            let existing = run_from(&r)?;
                            return Ok(if hash.as_deref() == Some(s.request_hash.as_str()) {
                                Submitted::Replayed(existing)
                            } else {
                                Submitted::KeyReused { run_id: existing.id }
                            });
                        }
                    }
                    let active: Vec<(String, String, Option<String>)> = sqlx::query_as(sql(format!(
                        "SELECT id, status, queue_state FROM runs WHERE thread_id = $1 AND status IN {ACTIVE}
                         ORDER BY created_at, id"
                    )))
                    .bind(&run.thread_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut cancelled_now = Vec::new();
                    match (s.multitask, active.first()) {
                        (Multitask::Reject, Some((id, _, _))) => {
                            return Ok(Submitted::ThreadBusy { run_id: id.clone() });
                        }
                        (Multitask::Interrupt | Multitask::Rollback, Some(_)) => {
                            let rollback = s.multitask == Multitask::Rollback;
                            let verb = if rollback { "rolled back" } else { "interrupted" };
                            let error = Json(serde_json::json!({"message": format!("{verb} by run {}", run.id)}));
                            for (id, _, _) in &active {
                                if rollback {
                                    sqlx::query("UPDATE runs SET rolled_back_by = $1 WHERE id = $2")
                                        .bind(&run.id)
                                        .bind(id)
                                        .execute(&mut *tx)
                                        .await?;
                                }
                                if cancel_active(&mut *tx, id, &error).await? {
                                    cancelled_now.push(id.clone());
                                }
                            }
                        }
                        _ => {}
                    }
                    sqlx::query(
                        "INSERT INTO runs (id, tenant, graph, thread_id, status, input, output, error, usage, definition,
                                           created_at, updated_at, queue_state, max_attempts, idempotency_key,
                                           request_hash, webhook, traceparent)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'ready', $13, $14, $15, $16, $17)",
                    )
                    .bind(&run.id)
                    .bind(&run.tenant)
                    .bind(&run.graph)
                    .bind(&run.thread_id)
                    .bind(run.status.as_str())
                    .bind(Json(&run.input))
                    .bind(Json(&run.output))
                    .bind(Json(&run.error))
                    .bind(Json(&run.usage))
                    .bind(run.definition.clone())
                    .bind(run.created_at)
                    .bind(run.updated_at)
                    .bind(s.max_attempts)
                    .bind(s.idempotency_key.clone())
                    .bind(&s.request_hash)
                    .bind(s.webhook.clone())
                    .bind(s.traceparent.clone())
                    .execute(&mut *tx)
                    .await?;
                    // The log starts with the submission, whoever executes the run.
                    let queued = Event::new("run.queued", &run.id, &run.thread_id)
                        .data(serde_json::json!({"graph": run.graph}));
                    sqlx::query(
                        "INSERT INTO run_events (run_id, seq, body, created_at)
                         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3 FROM run_events WHERE run_id = $4",
                    )
                    .bind(&run.id)
                    .bind(Json(&queued))
                    .bind(queued.at)
                    .bind(&run.id)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query($notify).bind(&run.id).execute(&mut *tx).await?;
                    tx.commit().await?;
                    let mut cancelled = Vec::new();
                    for id in &cancelled_now {
                        let row = sqlx::query(sql(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
                            .bind(id)
                            .fetch_one(&self.pool)
                            .await?;
                        cancelled.push(run_from(&row)?);
                    }
                    Ok(Submitted::Created { run: run.clone(), cancelled })
                }
            }

            impl $store {
                async fn try_rollback(&self, run: &Run) -> Result<u64, sqlx::Error> {
                    let rolled: Vec<String> = sqlx::query_scalar("SELECT id FROM runs WHERE rolled_back_by = $1")
                        .bind(&run.id)
                        .fetch_all(&self.pool)
                        .await?;
                    if rolled.is_empty() {
                        return Ok(0);
                    }
                    let mut tx = self.pool.begin_with($begin).await?;
                    // Subgraph threads are `<thread>/<task id>`.
                    let prefix = format!("{}/", run.thread_id);
                    let rows: Vec<(String, i64, String)> = sqlx::query_as(
                        "SELECT thread_id, step, metadata FROM checkpoints
                         WHERE thread_id = $1 OR substr(thread_id, 1, $2) = $3",
                    )
                    .bind(&run.thread_id)
                    .bind(i32::try_from(prefix.len()).unwrap_or(i32::MAX))
                    .bind(&prefix)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut first: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
                    for (thread, step, metadata) in rows {
                        let by: Option<String> = serde_json::from_str::<serde_json::Value>(&metadata)
                            .ok()
                            .and_then(|m| m.get("run_id").and_then(|v| v.as_str()).map(str::to_string));
                        if by.is_some_and(|by| rolled.contains(&by)) {
                            let at = first.entry(thread).or_insert(step);
                            *at = (*at).min(step);
                        }
                    }
                    // Their approvals go too: the new run's interrupts at the same steps
                    // have the same (deterministic) ids.
                    for id in &rolled {
                        sqlx::query("DELETE FROM approvals WHERE run_id = $1").bind(id).execute(&mut *tx).await?;
                    }
                    let mut deleted = 0;
                    for (thread, step) in &first {
                        sqlx::query(
                            "DELETE FROM checkpoint_writes WHERE thread_id = $1 AND checkpoint_id IN
                               (SELECT checkpoint_id FROM checkpoints WHERE thread_id = $2 AND step >= $3)",
                        )
                        .bind(thread)
                        .bind(thread)
                        .bind(step)
                        .execute(&mut *tx)
                        .await?;
                        deleted += sqlx::query("DELETE FROM checkpoints WHERE thread_id = $1 AND step >= $2")
                            .bind(thread)
                            .bind(step)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        // Versions are steps: the new run writes these versions again.
                        sqlx::query("DELETE FROM checkpoint_blobs WHERE thread_id = $1 AND version >= $2")
                            .bind(thread)
                            .bind(step)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok(deleted)
                }
            }

            #[async_trait]
            impl RunQueue for $store {
                async fn submit(&self, s: &Submission) -> Result<Submitted, StorageError> {
                    match self.try_submit(s).await {
                        Ok(done) => Ok(done),
                        // Two submissions with one new key raced: the loser answers with the winner's run.
                        Err(e) if is_unique_violation(&e) && s.idempotency_key.is_some() => {
                            let key = s.idempotency_key.as_deref().unwrap_or_default();
                            match self.by_idempotency_key(&s.run, key).await? {
                                Some((run, hash)) if hash.as_deref() == Some(s.request_hash.as_str()) => {
                                    Ok(Submitted::Replayed(run))
                                }
                                Some((run, _)) => Ok(Submitted::KeyReused { run_id: run.id }),
                                None => Err(db(e)),
                            }
                        }
                        Err(e) => Err(db(e)),
                    }
                }

                async fn apply_rollback(&self, run: &Run) -> Result<u64, StorageError> {
                    self.try_rollback(run).await.map_err(db)
                }

                async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<Lease>, StorageError> {
                    let now = crewgraph_engine::now_ms();
                    let row = sqlx::query(sql(format!(
                        "UPDATE runs SET queue_state = 'leased', lease_owner = $1, lease_expires_at = $2,
                                         attempts = attempts + 1
                         WHERE id = (
                           SELECT r.id FROM runs r
                           WHERE (r.queue_state = 'ready' OR (r.queue_state = 'leased' AND r.lease_expires_at < $3))
                             AND NOT EXISTS (
                               SELECT 1 FROM runs o WHERE o.thread_id = r.thread_id AND o.id <> r.id
                                 AND (o.status IN ('running', 'waiting') OR (o.status = 'queued' AND o.created_at < r.created_at)))
                           ORDER BY r.created_at, r.id LIMIT 1 {}
                         )
                         RETURNING {RUN_COLUMNS}, attempts, max_attempts, webhook, traceparent",
                        $skip_locked
                    )))
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    match row {
                        Some(r) => Ok(Some(Lease {
                            run: run_from(&r).map_err(db)?,
                            attempts: r.try_get("attempts").map_err(db)?,
                            max_attempts: r.try_get("max_attempts").map_err(db)?,
                            webhook: r.try_get("webhook").map_err(db)?,
                            traceparent: r.try_get("traceparent").map_err(db)?,
                        })),
                        None => Ok(None),
                    }
                }

                async fn heartbeat(&self, run_id: &str, worker: &str, lease_ms: i64) -> Result<Heartbeat, StorageError> {
                    let row: Option<(bool,)> = sqlx::query_as(
                        "UPDATE runs SET lease_expires_at = $1
                         WHERE id = $2 AND lease_owner = $3 AND queue_state = 'leased'
                         RETURNING cancel_requested",
                    )
                    .bind(crewgraph_engine::now_ms() + lease_ms)
                    .bind(run_id)
                    .bind(worker)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(match row {
                        None => Heartbeat::Lost,
                        Some((true,)) => Heartbeat::CancelRequested,
                        Some((false,)) => Heartbeat::Extended,
                    })
                }

                async fn release(&self, run_id: &str, worker: &str) -> Result<Option<Run>, StorageError> {
                    // The common case, one statement. It leaves alone a run that waits with a
                    // cancellation requested; a request that comes after it finds the run
                    // no longer leased and cancels it itself (`cancel_active`).
                    let released = sqlx::query(
                        "UPDATE runs SET lease_owner = NULL, lease_expires_at = NULL, attempts = 0,
                           queue_state = CASE WHEN status = 'waiting' AND NOT EXISTS (
                               SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.status = 'pending')
                             THEN 'ready' ELSE NULL END
                         WHERE id = $1 AND lease_owner = $2 AND NOT (cancel_requested AND status = 'waiting')",
                    )
                    .bind(run_id)
                    .bind(worker)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?
                    .rows_affected();
                    if released == 1 {
                        self.wake_workers(run_id).await?;
                        return Ok(None);
                    }
                    // The heartbeat that would have carried the cancellation came too late.
                    let mut tx = self.pool.begin_with($begin).await.map_err(db)?;
                    let rolled_back_by: Option<(Option<String>,)> = sqlx::query_as(
                        "SELECT rolled_back_by FROM runs
                         WHERE id = $1 AND lease_owner = $2 AND cancel_requested AND status = 'waiting'",
                    )
                    .bind(run_id)
                    .bind(worker)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                    let Some((rolled_back_by,)) = rolled_back_by else {
                        // Not ours any more: another worker holds it, or it was settled.
                        return Ok(None);
                    };
                    let message = match rolled_back_by {
                        Some(by) => format!("rolled back by run {by}"),
                        None => "run was cancelled".to_string(),
                    };
                    sqlx::query(
                        "UPDATE runs SET status = 'cancelled', queue_state = NULL, lease_owner = NULL,
                           lease_expires_at = NULL, attempts = 0, error = $1, updated_at = $2
                         WHERE id = $3 AND lease_owner = $4 AND cancel_requested AND status = 'waiting'",
                    )
                    .bind(Json(serde_json::json!({"message": message})))
                    .bind(crewgraph_engine::now_ms())
                    .bind(run_id)
                    .bind(worker)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    sqlx::query("UPDATE approvals SET status = 'expired' WHERE run_id = $1 AND status = 'pending'")
                        .bind(run_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db)?;
                    tx.commit().await.map_err(db)?;
                    self.wake_workers(run_id).await?;
                    let row = sqlx::query(sql(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1")))
                        .bind(run_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                    row.map(|r| run_from(&r)).transpose().map_err(db)
                }

                async fn hand_back(&self, run_id: &str, worker: &str) -> Result<(), StorageError> {
                    sqlx::query(
                        "UPDATE runs SET queue_state = 'ready', lease_owner = NULL, lease_expires_at = NULL,
                           attempts = attempts - 1
                         WHERE id = $1 AND lease_owner = $2",
                    )
                    .bind(run_id)
                    .bind(worker)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    self.wake_workers(run_id).await?;
                    Ok(())
                }

                async fn requeue(&self, run_id: &str) -> Result<bool, StorageError> {
                    let done = sqlx::query(
                        "UPDATE runs SET queue_state = 'ready'
                         WHERE id = $1 AND status = 'waiting' AND queue_state IS NULL AND NOT EXISTS (
                           SELECT 1 FROM approvals a WHERE a.run_id = runs.id AND a.status = 'pending')",
                    )
                    .bind(run_id)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    if done.rows_affected() == 1 {
                        self.wake_workers(run_id).await?;
                    }
                    Ok(done.rows_affected() == 1)
                }

                async fn cancel(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, StorageError> {
                    let error = Json(serde_json::json!({"message": "run was cancelled"}));
                    let mut tx = self.pool.begin_with($begin).await.map_err(db)?;
                    let owned: Option<(String,)> = sqlx::query_as("SELECT id FROM runs WHERE id = $1 AND tenant = $2")
                        .bind(run_id)
                        .bind(tenant)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(db)?;
                    if owned.is_some() {
                        cancel_active(&mut *tx, run_id, &error).await.map_err(db)?;
                    }
                    tx.commit().await.map_err(db)?;
                    self.run_of(tenant, run_id).await
                }

                async fn run_of(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, StorageError> {
                    let row = sqlx::query(sql(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND tenant = $2")))
                        .bind(run_id)
                        .bind(tenant)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                    row.map(|r| run_from(&r)).transpose().map_err(db)
                }

                async fn runs(&self, q: &RunQuery) -> Result<Vec<Run>, StorageError> {
                    let status = q.status.map(RunStatus::as_str);
                    let (after_at, after_id) = match &q.after {
                        Some((at, id)) => (Some(*at), Some(id.clone())),
                        None => (None, None),
                    };
                    let rows = sqlx::query(sql(format!(
                        "SELECT {RUN_COLUMNS} FROM runs
                         WHERE tenant = $1 AND ($2 IS NULL OR status = $3) AND ($4 IS NULL OR graph = $5)
                           AND ($6 IS NULL OR thread_id = $7)
                           AND ($8 IS NULL OR created_at < $9 OR (created_at = $10 AND id < $11))
                         ORDER BY created_at DESC, id DESC LIMIT $12"
                    )))
                    .bind(&q.tenant)
                    .bind(status)
                    .bind(status)
                    .bind(q.graph.clone())
                    .bind(q.graph.clone())
                    .bind(q.thread_id.clone())
                    .bind(q.thread_id.clone())
                    .bind(after_at)
                    .bind(after_at)
                    .bind(after_at)
                    .bind(after_id)
                    .bind(i64::from(q.limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(run_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn webhook_of(&self, run_id: &str) -> Result<Option<String>, StorageError> {
                    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT webhook FROM runs WHERE id = $1")
                        .bind(run_id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(db)?;
                    Ok(row.and_then(|r| r.0))
                }

                async fn owns_thread(&self, tenant: &str, thread_id: &str) -> Result<bool, StorageError> {
                    let row: Option<(String,)> =
                        sqlx::query_as("SELECT id FROM runs WHERE thread_id = $1 AND tenant = $2 LIMIT 1")
                            .bind(thread_id)
                            .bind(tenant)
                            .fetch_optional(&self.pool)
                            .await
                            .map_err(db)?;
                    Ok(row.is_some())
                }

                async fn approvals(&self, q: &ApprovalQuery) -> Result<Vec<Approval>, StorageError> {
                    let columns: Vec<String> = APPROVAL_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect();
                    let status = q.status.map(|s| s.as_str());
                    let rows = sqlx::query(sql(format!(
                        "SELECT {} FROM approvals a JOIN runs r ON r.id = a.run_id
                         WHERE r.tenant = $1 AND ($2 IS NULL OR a.status = $3) AND ($4 IS NULL OR a.run_id = $5)
                           AND ($6 IS NULL OR r.graph = $7)
                         ORDER BY a.created_at, a.id LIMIT 1000",
                        columns.join(", ")
                    )))
                    .bind(&q.tenant)
                    .bind(status)
                    .bind(status)
                    .bind(q.run_id.clone())
                    .bind(q.run_id.clone())
                    .bind(q.graph.clone())
                    .bind(q.graph.clone())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(approval_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn approval_of(&self, tenant: &str, id: &str) -> Result<Option<Approval>, StorageError> {
                    let columns: Vec<String> = APPROVAL_COLUMNS.split(", ").map(|c| format!("a.{c}")).collect();
                    let row = sqlx::query(sql(format!(
                        "SELECT {} FROM approvals a JOIN runs r ON r.id = a.run_id WHERE a.id = $1 AND r.tenant = $2",
                        columns.join(", ")
                    )))
                    .bind(id)
                    .bind(tenant)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    row.map(|r| approval_from(&r)).transpose().map_err(db)
                }

                async fn expired_approvals(&self, now: i64, limit: u32) -> Result<Vec<Approval>, StorageError> {
                    let rows = sqlx::query(sql(format!(
                        "SELECT {APPROVAL_COLUMNS} FROM approvals
                         WHERE status = 'pending' AND expires_at IS NOT NULL AND expires_at < $1
                         ORDER BY expires_at LIMIT $2"
                    )))
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(approval_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn stats(&self) -> Result<QueueStats, StorageError> {
                    let (ready, leased, oldest): (i64, i64, Option<i64>) = sqlx::query_as(
                        "SELECT COUNT(*) FILTER (WHERE queue_state = 'ready'),
                                COUNT(*) FILTER (WHERE queue_state = 'leased'),
                                MIN(CASE WHEN queue_state = 'ready' THEN updated_at END)
                         FROM runs WHERE queue_state IS NOT NULL",
                    )
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)?;
                    let approvals_pending: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM approvals WHERE status = 'pending'")
                            .fetch_one(&self.pool)
                            .await
                            .map_err(db)?;
                    let now = crewgraph_engine::now_ms();
                    Ok(QueueStats {
                        ready,
                        leased,
                        oldest_ready_ms: oldest.map(|t| (now - t).max(0)).unwrap_or(0),
                        approvals_pending,
                    })
                }

                async fn status_counts(&self) -> Result<Vec<(String, i64)>, StorageError> {
                    sqlx::query_as("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db)
                }
            }

            #[async_trait]
            impl EventLog for $store {
                async fn append(&self, events: &[Event]) -> Result<(), StorageError> {
                    // Another process may append to the same run at the same moment
                    // (a decision while a worker settles): the loser numbers its batch again.
                    let mut tries = 0;
                    loop {
                        match self.try_append(events).await {
                            Ok(()) => return Ok(()),
                            Err(e) if is_unique_violation(&e) && tries < 8 => tries += 1,
                            Err(e) => return Err(db(e)),
                        }
                    }
                }

                async fn events_after(&self, run_id: &str, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, StorageError> {
                    let rows: Vec<(i64, Json<Event>)> = sqlx::query_as(
                        "SELECT seq, body FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    )
                    .bind(run_id)
                    .bind(after_seq)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(rows.into_iter().map(|(seq, body)| StoredEvent { seq, event: body.0 }).collect())
                }
            }

            const DELIVERY_COLUMNS: &str = "id, run_id, tenant, url, event, body, status, attempts, next_attempt_at,
                last_status, last_error, created_at, delivered_at";

            fn delivery_from<R: Row>(r: &R) -> Result<Delivery, sqlx::Error>
            where
                for<'a> &'a str: sqlx::ColumnIndex<R>,
                for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
                for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
                for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<i32>: sqlx::Decode<'a, R::Database>,
                for<'a> Json<serde_json::Value>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            {
                Ok(Delivery {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    tenant: r.try_get("tenant")?,
                    url: r.try_get("url")?,
                    event: r.try_get("event")?,
                    body: r.try_get::<Json<serde_json::Value>, _>("body")?.0,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    next_attempt_at: r.try_get("next_attempt_at")?,
                    last_status: r.try_get("last_status")?,
                    last_error: r.try_get("last_error")?,
                    created_at: r.try_get("created_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                })
            }

            #[async_trait]
            impl WebhookQueue for $store {
                async fn enqueue_delivery(&self, d: &Delivery) -> Result<(), StorageError> {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, run_id, tenant, url, event, body, status, attempts,
                                                         next_attempt_at, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&d.id)
                    .bind(&d.run_id)
                    .bind(&d.tenant)
                    .bind(&d.url)
                    .bind(&d.event)
                    .bind(Json(&d.body))
                    .bind(d.next_attempt_at)
                    .bind(d.created_at)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(())
                }

                async fn claim_deliveries(&self, limit: u32, lease_ms: i64) -> Result<Vec<Delivery>, StorageError> {
                    let now = crewgraph_engine::now_ms();
                    let rows = sqlx::query(sql(format!(
                        "UPDATE webhook_deliveries SET lease_expires_at = $1, attempts = attempts + 1
                         WHERE id IN (
                           SELECT id FROM webhook_deliveries
                           WHERE status = 'pending' AND next_attempt_at <= $2
                             AND (lease_expires_at IS NULL OR lease_expires_at < $3)
                           ORDER BY next_attempt_at LIMIT $4 {}
                         )
                         RETURNING {DELIVERY_COLUMNS}",
                        $skip_locked
                    )))
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(delivery_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn record_attempt(&self, id: &str, attempt: &Attempt) -> Result<(), StorageError> {
                    let now = crewgraph_engine::now_ms();
                    let q = match attempt {
                        Attempt::Delivered { status } => sqlx::query(
                            "UPDATE webhook_deliveries SET status = 'delivered', last_status = $1, last_error = NULL,
                               delivered_at = $2, lease_expires_at = NULL WHERE id = $3",
                        )
                        .bind(*status)
                        .bind(now)
                        .bind(id),
                        Attempt::Failed { status, error, retry_at } => sqlx::query(
                            "UPDATE webhook_deliveries SET status = $1, last_status = $2, last_error = $3,
                               next_attempt_at = $4, lease_expires_at = NULL WHERE id = $5",
                        )
                        .bind(if retry_at.is_some() { "pending" } else { "failed" })
                        .bind(*status)
                        .bind(error.clone())
                        .bind(retry_at.unwrap_or(now))
                        .bind(id),
                    };
                    q.execute(&self.pool).await.map_err(db)?;
                    Ok(())
                }

                async fn deliveries(&self, tenant: &str, run_id: &str) -> Result<Vec<Delivery>, StorageError> {
                    let rows = sqlx::query(sql(format!(
                        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE tenant = $1 AND run_id = $2
                         ORDER BY created_at, id"
                    )))
                    .bind(tenant)
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(delivery_from).collect::<Result<_, _>>().map_err(db)
                }
            }

            #[async_trait]
            impl KeyStore for $store {
                async fn create_key(&self, key: &ApiKey, key_hash: &str) -> Result<(), StorageError> {
                    sqlx::query(
                        "INSERT INTO api_keys (id, tenant, key_hash, roles, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&key.id)
                    .bind(&key.tenant)
                    .bind(key_hash)
                    .bind(Json(&key.roles))
                    .bind(key.created_at)
                    .bind(key.revoked_at)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(())
                }

                async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StorageError> {
                    let row: Option<(String, String, Json<Vec<String>>, i64, Option<i64>)> = sqlx::query_as(
                        "SELECT id, tenant, roles, created_at, revoked_at FROM api_keys
                         WHERE key_hash = $1 AND revoked_at IS NULL",
                    )
                    .bind(key_hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(row.map(|(id, tenant, roles, created_at, revoked_at)| ApiKey {
                        id,
                        tenant,
                        roles: roles.0,
                        created_at,
                        revoked_at,
                    }))
                }
            }

            const GRAPH_COLUMNS: &str = "tenant, name, version, source, digest, created_at";

            fn graph_from<R: Row>(r: &R) -> Result<RegisteredGraph, sqlx::Error>
            where
                for<'a> &'a str: sqlx::ColumnIndex<R>,
                for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> i32: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            {
                Ok(RegisteredGraph {
                    tenant: r.try_get("tenant")?,
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    source: r.try_get("source")?,
                    digest: r.try_get("digest")?,
                    created_at: r.try_get("created_at")?,
                })
            }

            impl $store {
                async fn try_register(&self, tenant: &str, name: &str, source: &str, digest: &str) -> Result<Registered, sqlx::Error> {
                    let mut tx = self.pool.begin_with($begin).await?;
                    // Serialises registrations of one name, as submissions on one thread are.
                    sqlx::query($thread_lock).bind(format!("graph:{tenant}/{name}")).execute(&mut *tx).await?;
                    let latest = sqlx::query(sql(format!(
                        "SELECT {GRAPH_COLUMNS} FROM graph_definitions WHERE tenant = $1 AND name = $2
                         ORDER BY version DESC LIMIT 1"
                    )))
                    .bind(tenant)
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| graph_from(&r))
                    .transpose()?;
                    if let Some(latest) = latest.as_ref().filter(|l| l.digest == digest) {
                        return Ok(Registered::Unchanged(latest.clone()));
                    }
                    let graph = RegisteredGraph {
                        tenant: tenant.to_string(),
                        name: name.to_string(),
                        version: latest.map_or(1, |l| l.version + 1),
                        source: source.to_string(),
                        digest: digest.to_string(),
                        created_at: crewgraph_engine::now_ms(),
                    };
                    sqlx::query(
                        "INSERT INTO graph_definitions (tenant, name, version, source, digest, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(&graph.tenant)
                    .bind(&graph.name)
                    .bind(graph.version)
                    .bind(&graph.source)
                    .bind(&graph.digest)
                    .bind(graph.created_at)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Registered::Created(graph))
                }
            }

            #[async_trait]
            impl GraphRegistry for $store {
                async fn register_graph(&self, tenant: &str, name: &str, source: &str, digest: &str) -> Result<Registered, StorageError> {
                    self.try_register(tenant, name, source, digest).await.map_err(db)
                }

                async fn registered_graph(&self, tenant: &str, name: &str, version: Option<i32>) -> Result<Option<RegisteredGraph>, StorageError> {
                    let row = sqlx::query(sql(format!(
                        "SELECT {GRAPH_COLUMNS} FROM graph_definitions
                         WHERE tenant = $1 AND name = $2 AND ($3 IS NULL OR version = $4)
                         ORDER BY version DESC LIMIT 1"
                    )))
                    .bind(tenant)
                    .bind(name)
                    .bind(version)
                    .bind(version)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?;
                    row.map(|r| graph_from(&r)).transpose().map_err(db)
                }

                async fn registered_graphs(&self, tenant: &str) -> Result<Vec<RegisteredGraph>, StorageError> {
                    let rows = sqlx::query(sql(format!(
                        "SELECT {GRAPH_COLUMNS} FROM graph_definitions g
                         WHERE tenant = $1 AND version = (
                           SELECT MAX(version) FROM graph_definitions l WHERE l.tenant = g.tenant AND l.name = g.name)
                         ORDER BY name"
                    )))
                    .bind(tenant)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db)?;
                    rows.iter().map(graph_from).collect::<Result<_, _>>().map_err(db)
                }
            }
        }
    };
}

pub(crate) use impl_service;
