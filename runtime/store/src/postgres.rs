//! The Postgres checkpointer and run store.
//!
//! A step is saved by one statement (checkpoint row plus the changed channels'
//! blobs in a CTE), so a durable step costs one commit.

use async_trait::async_trait;
use crewgraph_engine::{ChannelBlob, Checkpoint, Checkpointer, Retention, StorageError, TaskResult};
use sqlx::Row;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use uuid::Uuid;

use crate::codec::{self, BlobRow, CheckpointRow};
use crate::error::{StoreError, db};

#[derive(Clone)]
pub struct PgStore {
    pub pool: PgPool,
    /// Connections with `synchronous_commit = off`, for run status updates:
    /// a run's status can always be rebuilt from its checkpoints (which are
    /// committed synchronously, flushing every earlier commit with them), so
    /// waiting for their fsync buys nothing.
    pub status_pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        // No ping before each use: a broken connection fails its query, which
        // the caller sees as a storage error and retries from the checkpoint.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options.clone())
            .await?;
        let status_pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .max_connections(max_connections.div_ceil(4).max(2))
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await?;
        Ok(Self { pool, status_pool })
    }

    /// A store on an existing pool (tests); every commit is synchronous.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { status_pool: pool.clone(), pool }
    }

    fn status_pool(&self) -> &PgPool {
        &self.status_pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../../migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    async fn rows(&self, thread_id: &str, id: Option<Uuid>, limit: i64) -> Result<Vec<CheckpointRow>, StorageError> {
        let rows = match id {
            Some(id) => {
                sqlx::query(
                    "SELECT thread_id, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at
                 FROM checkpoints WHERE thread_id = $1 AND checkpoint_id = $2",
                )
                .bind(thread_id)
                .bind(id)
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(
                    "SELECT thread_id, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at
                 FROM checkpoints WHERE thread_id = $1 ORDER BY step DESC, checkpoint_id DESC LIMIT $2",
                )
                .bind(thread_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }
        }
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                Ok(CheckpointRow {
                    thread_id: r.try_get("thread_id")?,
                    id: r.try_get("checkpoint_id")?,
                    parent_id: r.try_get("parent_id")?,
                    step: r.try_get("step")?,
                    source: r.try_get("source")?,
                    versions: r.try_get("versions")?,
                    next: r.try_get("next")?,
                    metadata: r.try_get("metadata")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    /// The blobs one checkpoint needs: per channel, from its last full value up to its version.
    async fn blobs_for(&self, thread_id: &str, versions: &str) -> Result<Vec<BlobRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT b.channel, b.version, b.kind, b.body
             FROM checkpoint_blobs b
             JOIN jsonb_each_text($2::jsonb) v(channel, ver) ON b.channel = v.channel
             WHERE b.thread_id = $1 AND b.version <= v.ver::bigint
               AND b.version >= COALESCE((
                   SELECT max(f.version) FROM checkpoint_blobs f
                   WHERE f.thread_id = $1 AND f.channel = v.channel AND f.kind = 'full' AND f.version <= v.ver::bigint), 0)
             ORDER BY b.channel, b.version",
        )
        .bind(thread_id)
        .bind(versions)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        blob_rows(rows)
    }

    async fn all_blobs(&self, thread_id: &str, max_version: i64) -> Result<Vec<BlobRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT channel, version, kind, body FROM checkpoint_blobs
             WHERE thread_id = $1 AND version <= $2 ORDER BY channel, version",
        )
        .bind(thread_id)
        .bind(max_version)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        blob_rows(rows)
    }
}

/// The statement that saves a checkpoint with `n` changed channels: one
/// statement (one commit), with the blobs as a plain `VALUES` list, which
/// Postgres inserts faster than an `UNNEST` of arrays. Built once per `n`.
fn put_statement(n: usize) -> sqlx::AssertSqlSafe<&'static str> {
    static CACHE: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    const CHECKPOINT: &str = "INSERT INTO checkpoints (thread_id, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    while cache.len() <= n {
        let k = cache.len();
        // Leaked once per distinct blob count (a handful per process).
        let sql: &'static str = if k == 0 {
            CHECKPOINT
        } else {
            let rows: Vec<String> = (0..k)
                .map(|i| format!("($1, ${}, ${}, ${}, ${})", 10 + 4 * i, 11 + 4 * i, 12 + 4 * i, 13 + 4 * i))
                .collect();
            Box::leak(
                format!(
                    "WITH new_blobs AS (INSERT INTO checkpoint_blobs (thread_id, channel, version, kind, body) VALUES {}) {CHECKPOINT}",
                    rows.join(", ")
                )
                .into_boxed_str(),
            )
        };
        cache.push(sql);
    }
    sqlx::AssertSqlSafe(cache[n])
}

fn blob_rows(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<BlobRow>, StorageError> {
    rows.into_iter()
        .map(|r| {
            Ok(BlobRow {
                channel: r.try_get("channel")?,
                version: r.try_get("version")?,
                kind: r.try_get("kind")?,
                body: r.try_get("body")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(db)
}

#[async_trait]
impl Checkpointer for PgStore {
    async fn put(&self, c: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), StorageError> {
        let (versions, next, metadata) = codec::encode(c)?;
        let mut query = sqlx::query(put_statement(blobs.len()))
            .bind(&c.thread_id)
            .bind(c.id)
            .bind(c.parent_id)
            .bind(c.step)
            .bind(codec::source_name(c.source))
            .bind(versions)
            .bind(next)
            .bind(metadata)
            .bind(c.created_at);
        for b in blobs {
            query = query.bind(&b.channel).bind(b.version).bind(b.blob.kind()).bind(b.blob.body_json());
        }
        query.execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn get(&self, thread_id: &str, id: Option<Uuid>) -> Result<Option<Checkpoint>, StorageError> {
        let Some(row) = self.rows(thread_id, id, 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let blobs = self.blobs_for(thread_id, &row.versions).await?;
        Ok(codec::hydrate(vec![row], blobs)?.into_iter().next())
    }

    async fn latest_id(&self, thread_id: &str) -> Result<Option<Uuid>, StorageError> {
        sqlx::query_scalar(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = $1 ORDER BY step DESC, checkpoint_id DESC LIMIT 1",
        )
        .bind(thread_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn list(&self, thread_id: &str, limit: Option<u32>) -> Result<Vec<Checkpoint>, StorageError> {
        let rows = self.rows(thread_id, None, limit.map(i64::from).unwrap_or(i64::MAX)).await?;
        let max = rows.iter().map(|r| r.step).max().unwrap_or(0);
        let blobs = self.all_blobs(thread_id, max).await?;
        codec::hydrate(rows, blobs)
    }

    async fn put_writes(&self, thread_id: &str, checkpoint_id: Uuid, result: &TaskResult) -> Result<(), StorageError> {
        save_result(&self.pool, thread_id, checkpoint_id, result).await
    }

    async fn get_writes(&self, thread_id: &str, checkpoint_id: Uuid) -> Result<Vec<TaskResult>, StorageError> {
        load_results(&self.pool, thread_id, checkpoint_id).await
    }

    async fn copy_thread(&self, from: &str, to: &str, up_to: Option<Uuid>) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        copy_rows(&mut tx, from, to, up_to).await?;
        tx.commit().await.map_err(db)
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        delete_rows(&mut tx, thread_id).await?;
        tx.commit().await.map_err(db)
    }

    async fn prune(&self, retention: &Retention) -> Result<u64, StorageError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let deleted = prune_checkpoints(&mut tx, retention).await?;
        if deleted > 0 {
            // Blobs older than the last full value the oldest kept checkpoint needs are unreachable.
            sqlx::query(
                "WITH oldest AS (
                     SELECT DISTINCT ON (thread_id) thread_id, versions FROM checkpoints ORDER BY thread_id, step ASC
                 ), base AS (
                     SELECT o.thread_id, v.channel,
                            (SELECT max(f.version) FROM checkpoint_blobs f
                             WHERE f.thread_id = o.thread_id AND f.channel = v.channel AND f.kind = 'full'
                               AND f.version <= v.ver::bigint) AS version
                     FROM oldest o, jsonb_each_text(o.versions::jsonb) v(channel, ver)
                 )
                 DELETE FROM checkpoint_blobs d USING base
                 WHERE d.thread_id = base.thread_id AND d.channel = base.channel AND d.version < base.version",
            )
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            prune_orphan_writes(&mut tx).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(deleted)
    }
}

crate::runs_sql::impl_run_store!(crate::PgStore, sqlx::PgPool);

crate::thread_sql::thread_statements!(sqlx::PgPool, sqlx::PgConnection, |id: uuid::Uuid| id);
crate::service_sql::impl_service!(
    crate::PgStore,
    sqlx::PgPool,
    sqlx::PgConnection,
    begin: "BEGIN",
    // Submissions to one thread queue behind each other until commit.
    thread_lock: "SELECT pg_advisory_xact_lock(hashtext($1))",
    skip_locked: "FOR UPDATE SKIP LOCKED",
    // Delivered at commit to every `crewgraph worker` listening.
    notify: "SELECT pg_notify('crewgraph_runs', $1)",
);
