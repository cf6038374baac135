//! Task writes and whole-thread maintenance (copy, delete, retention) written
//! once for both SQL backends; each statement is portable SQL with
//! placeholders in order, only the pool type and how a checkpoint id is bound differ.

macro_rules! thread_statements {
    ($pool:ty, $conn:ty, $bind_id:expr) => {
        /// Saves one finished task's result against the checkpoint its step started from.
        pub(crate) async fn save_result(
            pool: &$pool,
            thread_id: &str,
            checkpoint_id: uuid::Uuid,
            result: &crewgraph_engine::TaskResult,
        ) -> Result<(), crewgraph_engine::StorageError> {
            let body = serde_json::to_string(result).map_err(crate::error::json)?;
            sqlx::query(
                "INSERT INTO checkpoint_writes (thread_id, checkpoint_id, task_id, result, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (thread_id, checkpoint_id, task_id) DO UPDATE SET result = excluded.result",
            )
            .bind(thread_id)
            .bind($bind_id(checkpoint_id))
            .bind(&result.task_id)
            .bind(body)
            .bind(crewgraph_engine::now_ms())
            .execute(pool)
            .await
            .map_err(crate::error::db)?;
            Ok(())
        }

        /// Task results saved against a checkpoint, in the order they finished.
        pub(crate) async fn load_results(
            pool: &$pool,
            thread_id: &str,
            checkpoint_id: uuid::Uuid,
        ) -> Result<Vec<crewgraph_engine::TaskResult>, crewgraph_engine::StorageError> {
            let bodies: Vec<String> = sqlx::query_scalar(
                "SELECT result FROM checkpoint_writes WHERE thread_id = $1 AND checkpoint_id = $2 ORDER BY created_at, task_id",
            )
            .bind(thread_id)
            .bind($bind_id(checkpoint_id))
            .fetch_all(pool)
            .await
            .map_err(crate::error::db)?;
            bodies.iter().map(|b| serde_json::from_str(b).map_err(crate::error::json)).collect()
        }

        /// Copies `from`'s history up to checkpoint `up_to` (all of it when `None`) to `to`.
        pub(crate) async fn copy_rows(
            conn: &mut $conn,
            from: &str,
            to: &str,
            up_to: Option<uuid::Uuid>,
        ) -> Result<(), crewgraph_engine::StorageError> {
            let max_step: Option<i64> = match up_to {
                Some(id) => {
                    sqlx::query_scalar("SELECT step FROM checkpoints WHERE thread_id = $1 AND checkpoint_id = $2")
                        .bind(from)
                        .bind($bind_id(id))
                        .fetch_optional(&mut *conn)
                        .await
                        .map_err(crate::error::db)?
                }
                None => sqlx::query_scalar("SELECT max(step) FROM checkpoints WHERE thread_id = $1")
                    .bind(from)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(crate::error::db)?,
            };
            let max_step = max_step.ok_or_else(|| {
                crewgraph_engine::StorageError::new(format!("nothing to copy: no such checkpoint in thread `{from}`"))
            })?;
            for sql in [
                "INSERT INTO checkpoints (thread_id, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at)
                 SELECT $1, checkpoint_id, parent_id, step, source, versions, next, metadata, created_at
                 FROM checkpoints WHERE thread_id = $2 AND step <= $3",
                "INSERT INTO checkpoint_blobs (thread_id, channel, version, kind, body)
                 SELECT $1, channel, version, kind, body FROM checkpoint_blobs WHERE thread_id = $2 AND version <= $3",
            ] {
                sqlx::query(sql).bind(to).bind(from).bind(max_step).execute(&mut *conn).await.map_err(crate::error::db)?;
            }
            Ok(())
        }

        /// Deletes a thread and its subgraph threads (`<thread>/<task>`).
        pub(crate) async fn delete_rows(conn: &mut $conn, thread_id: &str) -> Result<(), crewgraph_engine::StorageError> {
            let child = format!("{thread_id}/%");
            for sql in [
                "DELETE FROM checkpoint_writes WHERE thread_id = $1 OR thread_id LIKE $2",
                "DELETE FROM checkpoint_blobs WHERE thread_id = $1 OR thread_id LIKE $2",
                "DELETE FROM checkpoints WHERE thread_id = $1 OR thread_id LIKE $2",
            ] {
                sqlx::query(sql).bind(thread_id).bind(&child).execute(&mut *conn).await.map_err(crate::error::db)?;
            }
            Ok(())
        }

        /// Deletes checkpoints outside the retention policy, never a thread's latest one.
        pub(crate) async fn prune_checkpoints(
            conn: &mut $conn,
            retention: &crewgraph_engine::Retention,
        ) -> Result<u64, crewgraph_engine::StorageError> {
            let keep = retention.keep_last.map(i64::from).unwrap_or(i64::MAX);
            let cutoff =
                retention.max_age_s.map(|s| crewgraph_engine::now_ms() - s as i64 * 1000).unwrap_or(i64::MIN);
            let done = sqlx::query(
                "DELETE FROM checkpoints WHERE EXISTS (
                     SELECT 1 FROM (
                         SELECT thread_id AS t, checkpoint_id AS c, created_at AS at,
                                row_number() OVER (PARTITION BY thread_id ORDER BY step DESC, checkpoint_id DESC) AS rn
                         FROM checkpoints) r
                     WHERE r.t = checkpoints.thread_id AND r.c = checkpoints.checkpoint_id
                       AND r.rn > 1 AND (r.rn > $1 OR r.at < $2))",
            )
            .bind(keep)
            .bind(cutoff)
            .execute(&mut *conn)
            .await
            .map_err(crate::error::db)?;
            Ok(done.rows_affected())
        }

        /// Deletes task writes whose checkpoint is gone.
        pub(crate) async fn prune_orphan_writes(conn: &mut $conn) -> Result<(), crewgraph_engine::StorageError> {
            sqlx::query(
                "DELETE FROM checkpoint_writes WHERE NOT EXISTS (
                     SELECT 1 FROM checkpoints c
                     WHERE c.thread_id = checkpoint_writes.thread_id AND c.checkpoint_id = checkpoint_writes.checkpoint_id)",
            )
            .execute(&mut *conn)
            .await
            .map_err(crate::error::db)?;
            Ok(())
        }
    };
}

pub(crate) use thread_statements;
