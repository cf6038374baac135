//! The embedded SQLite checkpointer and run store: the default when no
//! `DATABASE_URL` is set. WAL mode; a killed process loses no committed step.

use std::str::FromStr;

use async_trait::async_trait;
use crewgraph_engine::{ChannelBlob, Checkpoint, Checkpointer, Retention, StorageError, TaskResult};
use serde_json::json;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::codec::{self, BlobRow, CheckpointRow};
use crate::error::{StoreError, db};

#[derive(Clone)]
pub struct SqliteStore {
    pub pool: SqlitePool,
}

impl SqliteStore {
    /// SQLite has one writer; status updates share the pool.
    fn status_pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn uuid_of(s: &str) -> Result<Uuid, StorageError> {
    Uuid::parse_str(s).map_err(|e| StorageError::wrap("stored checkpoint id", e))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new().max_connections(if memory { 1 } else { 4 }).connect_with(opts).await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../../migrations/sqlite").run(&self.pool).await?;
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
                .bind(id.to_string())
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
                let id: String = r.try_get("checkpoint_id").map_err(db)?;
                let parent: Option<String> = r.try_get("parent_id").map_err(db)?;
                Ok(CheckpointRow {
                    thread_id: r.try_get("thread_id").map_err(db)?,
                    id: uuid_of(&id)?,
                    parent_id: parent.as_deref().map(uuid_of).transpose()?,
                    step: r.try_get("step").map_err(db)?,
                    source: r.try_get("source").map_err(db)?,
                    versions: r.try_get("versions").map_err(db)?,
                    next: r.try_get("next").map_err(db)?,
                    metadata: r.try_get("metadata").map_err(db)?,
                    created_at: r.try_get("created_at").map_err(db)?,
                })
            })
            .collect()
    }

    async fn blobs_for(&self, thread_id: &str, versions: &str) -> Result<Vec<BlobRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT b.channel, b.version, b.kind, b.body
             FROM checkpoint_blobs b JOIN json_each($1) v ON b.channel = v.key
             WHERE b.thread_id = $2 AND b.version <= v.value
               AND b.version >= COALESCE((
                   SELECT max(f.version) FROM checkpoint_blobs f
                   WHERE f.thread_id = b.thread_id AND f.channel = v.key AND f.kind = 'full' AND f.version <= v.value), 0)
             ORDER BY b.channel, b.version",
        )
        .bind(versions)
        .bind(thread_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        blob_rows(rows)
    }
}

fn blob_rows(rows: Vec<sqlx::sqlite::SqliteRow>) -> Result<Vec<BlobRow>, StorageError> {
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
impl Checkpointer for SqliteStore {
    async fn put(&self, c: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), StorageError> {
        let (versions, next, metadata) = codec::encode(c)?;
        let blob_json = serde_json::Value::Array(
            blobs
                .iter()
                .map(|b| json!({"c": b.channel, "v": b.version, "k": b.blob.kind(), "b": b.blob.body_json()}))
                .collect(),
        )
        .to_string();
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO checkpoint_blobs (thread_id, channel, version, kind, body)
             SELECT $1, json_extract(value, '$.c'), json_extract(value, '$.v'), json_extract(value, '$.k'), json_extract(value, '$.b')
             FROM json_each($2)",
        )
        .bind(&c.thread_id)
        .bind(blob_json)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO checkpoints (thread_id, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&c.thread_id)
        .bind(c.id.to_string())
        .bind(c.parent_id.map(|p| p.to_string()))
        .bind(c.step)
        .bind(codec::source_name(c.source))
        .bind(versions)
        .bind(next)
        .bind(metadata)
        .bind(c.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let (Some(parent), crewgraph_engine::CheckpointSource::Loop) = (c.parent_id, c.source) {
            sqlx::query("DELETE FROM checkpoint_writes WHERE thread_id = $1 AND checkpoint_id = $2")
                .bind(&c.thread_id)
                .bind(parent.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn get(&self, thread_id: &str, id: Option<Uuid>) -> Result<Option<Checkpoint>, StorageError> {
        let Some(row) = self.rows(thread_id, id, 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let blobs = self.blobs_for(thread_id, &row.versions).await?;
        Ok(codec::hydrate(vec![row], blobs)?.into_iter().next())
    }

    async fn latest_id(&self, thread_id: &str) -> Result<Option<Uuid>, StorageError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT checkpoint_id FROM checkpoints WHERE thread_id = $1 ORDER BY step DESC, checkpoint_id DESC LIMIT 1",
        )
        .bind(thread_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        id.as_deref().map(uuid_of).transpose()
    }

    async fn list(&self, thread_id: &str, limit: Option<u32>) -> Result<Vec<Checkpoint>, StorageError> {
        let rows = self.rows(thread_id, None, limit.map(i64::from).unwrap_or(i64::MAX)).await?;
        let max = rows.iter().map(|r| r.step).max().unwrap_or(0);
        let blobs = sqlx::query("SELECT channel, version, kind, body FROM checkpoint_blobs WHERE thread_id = $1 AND version <= $2 ORDER BY channel, version")
            .bind(thread_id)
            .bind(max)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        codec::hydrate(rows, blob_rows(blobs)?)
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
            sqlx::query(
                "WITH oldest AS (
                     SELECT thread_id, versions FROM checkpoints c
                     WHERE step = (SELECT min(step) FROM checkpoints m WHERE m.thread_id = c.thread_id)
                 ), base AS (
                     SELECT o.thread_id AS thread_id, v.key AS channel,
                            (SELECT max(f.version) FROM checkpoint_blobs f
                             WHERE f.thread_id = o.thread_id AND f.channel = v.key AND f.kind = 'full' AND f.version <= v.value) AS version
                     FROM oldest o, json_each(o.versions) v
                 )
                 DELETE FROM checkpoint_blobs WHERE EXISTS (
                     SELECT 1 FROM base WHERE base.thread_id = checkpoint_blobs.thread_id
                       AND base.channel = checkpoint_blobs.channel AND checkpoint_blobs.version < base.version)",
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

crate::runs_sql::impl_run_store!(crate::SqliteStore, sqlx::SqlitePool);

crate::thread_sql::thread_statements!(sqlx::SqlitePool, sqlx::SqliteConnection, |id: uuid::Uuid| id.to_string());
crate::service_sql::impl_service!(
    crate::SqliteStore,
    sqlx::SqlitePool,
    sqlx::SqliteConnection,
    // The write lock up front: SQLite's one writer serialises submissions and claims.
    begin: "BEGIN IMMEDIATE",
    thread_lock: "SELECT $1",
    skip_locked: "",
    // Workers share the process: they are woken in memory.
    notify: "SELECT $1",
);
