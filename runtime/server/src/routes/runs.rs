//! `/v1/runs`: submit, read, list, wait for, cancel, and stream runs.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crewgraph_engine::{ApprovalStatus, Event, Run, RunStatus, api};
use crewgraph_store::{ApprovalQuery, Multitask, RunQuery, Submission, Submitted};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::trace::TraceParent;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRun {
    pub graph: String,
    #[serde(default)]
    pub input: Map<String, Value>,
    pub thread_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub webhook: Option<String>,
    /// What to do when the thread already has an active run: `reject` (409), `enqueue`,
    /// `interrupt` (cancel it), `rollback` (cancel it and delete its checkpoints).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "reject")]
    pub multitask_strategy: Multitask,
}

fn check_id(what: &str, id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!("`{what}` must be 1 to 200 printable characters")));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/runs", operation_id = "create_run", tag = "runs", request_body = CreateRun,
    params(("Idempotency-Key" = Option<String>, Header, description = "the same as `idempotency_key`")),
    responses(
        (status = 201, description = "queued", body = crate::openapi::RunDoc),
        (status = 200, description = "the run an earlier request with this idempotency key and body made", body = crate::openapi::RunDoc),
        (status = 400, description = "malformed JSON", body = crate::openapi::ErrorDoc),
        (status = 403, description = "the key lacks `submit`", body = crate::openapi::ErrorDoc),
        (status = 404, description = "unknown graph", body = crate::openapi::ErrorDoc),
        (status = 409, description = "idempotency key reused with another body, or the thread is busy", body = crate::openapi::ErrorDoc),
        (status = 413, description = "body over the limit", body = crate::openapi::ErrorDoc),
        (status = 422, description = "invalid input (`details.path`)", body = crate::openapi::ErrorDoc)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    trace: Option<Extension<TraceParent>>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    caller.require(Role::Submit)?;
    // The digest of the body as sent decides whether a reused key is a replay.
    let request_hash = crate::auth::hex(&Sha256::digest(body.to_string().as_bytes())[..16]);
    let req: CreateRun = crate::extract::parse_body(body)?;
    let header_key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let idempotency_key = req.idempotency_key.clone().or(header_key);
    if let Some(k) = &idempotency_key {
        check_id("idempotency_key", k)?;
    }
    if let Some(t) = &req.thread_id {
        check_id("thread_id", t)?;
    }
    if let Some(url) = &req.webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ApiError::invalid("`webhook` must be an http:// or https:// URL"));
    }
    if req.webhook.is_some() && state.config.webhook_secret.is_none() {
        return Err(ApiError::invalid(
            "this server signs webhooks with CREWGRAPH_WEBHOOK_SECRET, which is not set: webhooks are off",
        ));
    }
    let def = super::graphs::for_new_run(&state, &caller.tenant, &req.graph).await?;
    if let Err(message) = def.validate_input(&req.input) {
        let path = message.split(':').next().unwrap_or("input").to_string();
        return Err(
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message).details(json!({"path": path}))
        );
    }
    let thread = req.thread_id.clone().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let mut run = Run::new(&def.graph.name, &thread, Value::Object(req.input));
    run.tenant = caller.tenant.clone();
    run.definition = Some(def.file.clone());
    let submission = Submission {
        run,
        idempotency_key,
        request_hash,
        webhook: req.webhook,
        traceparent: trace.map(|Extension(t)| t.header()),
        multitask: req.multitask_strategy,
        max_attempts: state.config.max_attempts,
    };
    match detached(submit(state.clone(), submission)).await? {
        Submitted::Created { run, cancelled } => {
            state.wake.notify_waiters();
            for old in cancelled {
                settled_by_cancel(&state, &old).await;
            }
            Ok((StatusCode::CREATED, Json(api::run(&run))).into_response())
        }
        Submitted::Replayed(run) => Ok((StatusCode::OK, Json(api::run(&run))).into_response()),
        Submitted::KeyReused { run_id } => {
            Err(ApiError::conflict("idempotency_key_reused", "this idempotency key was used for a different request")
                .details(json!({"run_id": run_id})))
        }
        Submitted::ThreadBusy { run_id } => Err(ApiError::conflict(
            "thread_busy",
            format!("thread `{thread}` has an active run; set multitask_strategy to enqueue, interrupt or rollback"),
        )
        .details(json!({"run_id": run_id}))),
    }
}

/// Queues a submission (owned, so it can run [`detached`]).
pub(crate) async fn submit(state: AppState, submission: Submission) -> ApiResult<Submitted> {
    Ok(state.store.queue.submit(&submission).await?)
}

/// Runs a write to the end even if the client hangs up meanwhile: it either
/// happens whole or not at all, never cancelled halfway.
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work).await.map_err(|e| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("the request's work stopped: {e}"))
    })?
}

/// The caller's tenant's run, or 404 (another tenant's run is as unknown as a missing one).
pub(crate) async fn run_for(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Run> {
    state.store.queue.run_of(&caller.tenant, id).await?.ok_or_else(|| ApiError::not_found("run", id))
}

#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = crate::openapi::RunDoc), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let run = run_for(&state, &caller, &id).await?;
    Ok(Json(api::run(&run)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRuns {
    pub status: Option<String>,
    pub thread_id: Option<String>,
    pub graph: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs", params(ListRuns),
    responses((status = 200, body = crate::openapi::RunPageDoc), (status = 422, body = crate::openapi::ErrorDoc)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListRuns>,
) -> ApiResult<Json<Value>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
            ApiError::invalid(format!(
                "status `{s}`: expected queued, running, waiting, succeeded, failed or cancelled"
            ))
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let after = match q.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            c.split_once('_')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| ApiError::invalid("`cursor` is not one this API gave out"))?,
        ),
    };
    let runs = state
        .store
        .queue
        .runs(&RunQuery { tenant: caller.tenant, status, graph: q.graph, thread_id: q.thread_id, limit, after })
        .await?;
    let next =
        (runs.len() == limit as usize).then(|| runs.last().map(|r| format!("{}_{}", r.created_at, r.id))).flatten();
    Ok(Json(json!({"runs": runs.iter().map(api::run).collect::<Vec<_>>(), "next_cursor": next})))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    pub timeout_s: Option<f64>,
}

/// Answers once the run is terminal or waits for a decision, or when the
/// timeout passes (then with the run as it is).
#[utoipa::path(get, path = "/v1/runs/{id}/wait", operation_id = "wait_for_run", tag = "runs", params(("id" = String, Path, description = "run id"), WaitQuery),
    responses((status = 200, description = "over, waiting for a decision, or as it is at the timeout", body = crate::openapi::RunDoc),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn wait(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<Value>> {
    let timeout = Duration::from_secs_f64(q.timeout_s.unwrap_or(30.0).clamp(0.0, state.config.max_wait.as_secs_f64()));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut wake = state.bus.subscribe();
    loop {
        let run = run_for(&state, &caller, &id).await?;
        if run.status.is_terminal() || tokio::time::Instant::now() >= deadline || asks_someone(&state, &run).await? {
            return Ok(Json(api::run(&run)));
        }
        // Events of runs executed elsewhere do not reach this process's bus: poll too.
        let poll = tokio::time::sleep(state.poll_interval(Duration::from_millis(250)));
        tokio::select! {
            _ = wait_for(&mut wake, &id) => {}
            _ = poll => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.shutdown.cancelled() => return Err(ApiError::unavailable("the server is shutting down")),
        }
    }
}

/// Whether the run waits for a decision (a waiting run whose approvals are
/// all decided is about to resume: still in progress).
async fn asks_someone(state: &AppState, run: &Run) -> ApiResult<bool> {
    if run.status != RunStatus::Waiting {
        return Ok(false);
    }
    let query = ApprovalQuery {
        tenant: run.tenant.clone(),
        status: Some(ApprovalStatus::Pending),
        run_id: Some(run.id.clone()),
        graph: None,
    };
    Ok(!state.store.queue.approvals(&query).await?.is_empty())
}

/// Returns when the bus announces new events of `run_id` (or lagged, which may hide one).
pub async fn wait_for(wake: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<str>>, run_id: &str) {
    loop {
        match wake.recv().await {
            Ok(id) if &*id == run_id => return,
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 200, description = "cancelled, or running until the worker's next heartbeat", body = crate::openapi::RunDoc),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn cancel(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    caller.require(Role::Submit)?;
    let before = run_for(&state, &caller, &id).await?;
    let run = state.store.queue.cancel(&caller.tenant, &id).await?.ok_or_else(|| ApiError::not_found("run", &id))?;
    if run.status == RunStatus::Cancelled && before.status != RunStatus::Cancelled {
        settled_by_cancel(&state, &run).await;
    }
    Ok(Json(api::run(&run)))
}

/// The end of a run cancelled by the API (not by its worker): its last event, which
/// ends its streams, and its webhook.
async fn settled_by_cancel(state: &AppState, run: &Run) {
    state.runtime.events.emit(Event::new("run.cancelled", &run.id, &run.thread_id).data(run.error.clone()));
    match state.store.queue.webhook_of(&run.id).await {
        Ok(webhook) => crate::webhooks::on_settled(state, run, webhook.as_deref()).await,
        Err(e) => tracing::warn!(error = %e, run_id = %run.id, "cannot read the cancelled run's webhook"),
    }
}

/// The run's webhook delivery log: every delivery with its attempts and last outcome.
#[utoipa::path(get, path = "/v1/runs/{id}/webhooks", operation_id = "run_webhooks", tag = "runs", params(("id" = String, Path, description = "run id")),
    responses((status = 200, description = "deliveries with their attempts and last outcome", body = Vec<Object>),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn webhooks(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    run_for(&state, &caller, &id).await?;
    let log = state.store.webhooks.deliveries(&caller.tenant, &id).await?;
    Ok(Json(serde_json::to_value(log).unwrap_or_default()))
}
