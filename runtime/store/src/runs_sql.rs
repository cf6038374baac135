//! The [`RunStore`](crewgraph_engine::RunStore) implementation, written once
//! for both SQL backends: the statements are portable (placeholders in
//! ascending order, JSON bound as `Json`), only the pool type differs.

macro_rules! impl_run_store {
    ($store:ty, $pool:ty) => {
        pub(crate) mod run_store_impl {
            use async_trait::async_trait;
            use crewgraph_engine::{Approval, ApprovalStatus, Decision, DecisionAction, Run, RunStatus, RunStore, StorageError};
            use serde_json::Value;
            use sqlx::Row;
            use sqlx::types::Json;

            use crate::error::db;

            pub(crate) const RUN_COLUMNS: &str =
                "id, tenant, graph, thread_id, status, input, output, error, usage, definition, created_at, updated_at";
            pub(crate) const APPROVAL_COLUMNS: &str = "id, run_id, thread_id, interrupt_id, node, payload, actions, status, decision, created_at, decided_at, expires_at, on_expiry";

            pub(crate) fn run_from<R: Row>(r: &R) -> Result<Run, sqlx::Error>
            where
                for<'a> &'a str: sqlx::ColumnIndex<R>,
                for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
                for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Json<Value>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            {
                let status: String = r.try_get("status")?;
                Ok(Run {
                    id: r.try_get("id")?,
                    tenant: r.try_get("tenant")?,
                    graph: r.try_get("graph")?,
                    thread_id: r.try_get("thread_id")?,
                    status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
                    input: r.try_get::<Json<Value>, _>("input")?.0,
                    output: r.try_get::<Json<Value>, _>("output")?.0,
                    error: r.try_get::<Json<Value>, _>("error")?.0,
                    usage: r.try_get::<Json<Value>, _>("usage")?.0,
                    definition: r.try_get("definition")?,
                    created_at: r.try_get("created_at")?,
                    updated_at: r.try_get("updated_at")?,
                })
            }

            pub(crate) fn approval_from<R: Row>(r: &R) -> Result<Approval, sqlx::Error>
            where
                for<'a> &'a str: sqlx::ColumnIndex<R>,
                for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<i64>: sqlx::Decode<'a, R::Database>,
                for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Json<Value>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
                for<'a> Option<Json<Value>>: sqlx::Decode<'a, R::Database>,
                for<'a> Option<String>: sqlx::Decode<'a, R::Database>,
            {
                let status: String = r.try_get("status")?;
                let decision: Option<Json<Value>> = r.try_get("decision")?;
                let actions: Value = r.try_get::<Json<Value>, _>("actions")?.0;
                Ok(Approval {
                    id: r.try_get("id")?,
                    run_id: r.try_get("run_id")?,
                    thread_id: r.try_get("thread_id")?,
                    interrupt_id: r.try_get("interrupt_id")?,
                    node: r.try_get("node")?,
                    payload: r.try_get::<Json<Value>, _>("payload")?.0,
                    actions: serde_json::from_value(actions).unwrap_or_default(),
                    status: ApprovalStatus::parse(&status).unwrap_or(ApprovalStatus::Pending),
                    decision: decision.and_then(|d| serde_json::from_value::<Decision>(d.0).ok()),
                    created_at: r.try_get("created_at")?,
                    decided_at: r.try_get("decided_at")?,
                    expires_at: r.try_get("expires_at")?,
                    on_expiry: r.try_get::<Option<String>, _>("on_expiry")?.as_deref().and_then(DecisionAction::parse),
                })
            }

            async fn insert_run(executor: &$pool, run: &Run) -> Result<(), StorageError>
            {
                sqlx::query(
                    "INSERT INTO runs (id, graph, thread_id, status, input, output, error, usage, definition, created_at, updated_at, tenant)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                )
                .bind(&run.id)
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
                .bind(&run.tenant)
                .execute(executor)
                .await
                .map_err(db)?;
                Ok(())
            }

            #[async_trait]
            impl RunStore for $store {
                async fn create_run(&self, run: &Run) -> Result<(), StorageError> {
                    insert_run(&self.pool, run).await
                }

                async fn create_run_deferred(&self, run: &Run) -> Result<(), StorageError> {
                    insert_run(self.status_pool(), run).await
                }

                async fn get_run(&self, id: &str) -> Result<Option<Run>, StorageError> {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"));
                    let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
                    row.map(|r| run_from(&r)).transpose().map_err(db)
                }

                async fn update_run(&self, run: &Run) -> Result<(), StorageError> {
                    sqlx::query(
                        "UPDATE runs SET status = $1, output = $2, error = $3, usage = $4, updated_at = $5 WHERE id = $6",
                    )
                    .bind(run.status.as_str())
                    .bind(Json(&run.output))
                    .bind(Json(&run.error))
                    .bind(Json(&run.usage))
                    .bind(run.updated_at)
                    .bind(&run.id)
                    .execute(self.status_pool())
                    .await
                    .map_err(db)?;
                    Ok(())
                }

                async fn list_runs(&self, status: Option<RunStatus>, limit: u32) -> Result<Vec<Run>, StorageError> {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE ($1 IS NULL OR status = $2) ORDER BY created_at DESC, id DESC LIMIT $3"
                    ));
                    let s = status.map(|s| s.as_str());
                    let rows = sqlx::query(sql).bind(s).bind(s).bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(db)?;
                    rows.iter().map(run_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn create_approval(&self, a: &Approval) -> Result<bool, StorageError> {
                    let done = sqlx::query(
                        "INSERT INTO approvals (id, run_id, thread_id, interrupt_id, node, payload, actions, status, decision, created_at, decided_at, expires_at, on_expiry)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                         ON CONFLICT (thread_id, interrupt_id) DO NOTHING",
                    )
                    .bind(&a.id)
                    .bind(&a.run_id)
                    .bind(&a.thread_id)
                    .bind(&a.interrupt_id)
                    .bind(&a.node)
                    .bind(Json(&a.payload))
                    .bind(Json(&a.actions))
                    .bind(a.status.as_str())
                    .bind(a.decision.as_ref().map(Json))
                    .bind(a.created_at)
                    .bind(a.decided_at)
                    .bind(a.expires_at)
                    .bind(a.on_expiry.map(DecisionAction::as_str))
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StorageError> {
                    let sql = sqlx::AssertSqlSafe(format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1"));
                    let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await.map_err(db)?;
                    row.map(|r| approval_from(&r)).transpose().map_err(db)
                }

                async fn list_approvals(
                    &self,
                    status: Option<ApprovalStatus>,
                    run_id: Option<&str>,
                ) -> Result<Vec<Approval>, StorageError> {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {APPROVAL_COLUMNS} FROM approvals
                         WHERE ($1 IS NULL OR status = $2) AND ($3 IS NULL OR run_id = $4)
                         ORDER BY created_at, id"
                    ));
                    let s = status.map(|s| s.as_str());
                    let rows = sqlx::query(sql).bind(s).bind(s).bind(run_id).bind(run_id).fetch_all(&self.pool).await.map_err(db)?;
                    rows.iter().map(approval_from).collect::<Result<_, _>>().map_err(db)
                }

                async fn decide_approval(&self, id: &str, decision: &Decision, at: i64) -> Result<bool, StorageError> {
                    let done = sqlx::query(
                        "UPDATE approvals SET status = 'decided', decision = $1, decided_at = $2 WHERE id = $3 AND status = 'pending'",
                    )
                    .bind(Json(decision))
                    .bind(at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(db)?;
                    Ok(done.rows_affected() == 1)
                }
            }
        }
    };
}

pub(crate) use impl_run_store;
