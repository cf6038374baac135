//! `/v1/threads/{id}`: a thread's latest state, its history, and forks from it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use crewgraph_engine::api;
use crewgraph_store::{Multitask, RunQuery, Submission, Submitted};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use crate::trace::TraceParent;

async fn owned(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    if state.store.queue.owns_thread(&caller.tenant, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("thread", id))
    }
}

#[utoipa::path(get, path = "/v1/threads/{id}/state", operation_id = "thread_state", tag = "threads", params(("id" = String, Path)),
    responses((status = 200, description = "the latest checkpoint", body = crate::openapi::CheckpointDoc), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn state(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    owned(&state, &caller, &id).await?;
    let latest = state.store.checkpointer.get(&id, None).await?.ok_or_else(|| ApiError::not_found("thread", &id))?;
    Ok(Json(api::checkpoint(&latest)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    pub limit: Option<u32>,
}

#[utoipa::path(get, path = "/v1/threads/{id}/history", operation_id = "thread_history", tag = "threads", params(("id" = String, Path), HistoryQuery),
    responses((status = 200, description = "checkpoints, newest first", body = Vec<crate::openapi::CheckpointDoc>), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<Value>> {
    owned(&state, &caller, &id).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let list = state.store.checkpointer.list(&id, Some(limit)).await?;
    Ok(Json(Value::Array(list.iter().map(api::checkpoint).collect())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkBody {
    pub checkpoint_id: String,
    #[serde(default)]
    pub patch: Map<String, Value>,
}

/// Time travel: a new thread from a checkpoint of this one, with `patch`
/// applied to its state, and a queued run that continues it.
#[utoipa::path(post, path = "/v1/threads/{id}/fork", operation_id = "fork_thread", tag = "threads", params(("id" = String, Path)),
    request_body = ForkBody,
    responses((status = 201, description = "a new thread and its queued run", body = crate::openapi::RunDoc), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    trace: Option<Extension<TraceParent>>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Submit)?;
    let body: ForkBody = crate::extract::parse_body(body)?;
    let checkpoint = uuid::Uuid::parse_str(&body.checkpoint_id).map_err(|_| {
        ApiError::invalid("`checkpoint_id` is not a checkpoint id").details(json!({"path": "checkpoint_id"}))
    })?;
    let query =
        RunQuery { tenant: caller.tenant.clone(), thread_id: Some(id.clone()), limit: 1, ..RunQuery::default() };
    let latest =
        state.store.queue.runs(&query).await?.into_iter().next().ok_or_else(|| ApiError::not_found("thread", &id))?;
    let def = match state.definitions.of_run(&latest).await? {
        crate::Lookup::Found(def) => def,
        _ => return Err(ApiError::conflict("graph_unavailable", format!("graph `{}` is not loaded", latest.graph))),
    };
    let mut run =
        state.runtime.fork_thread(def.graph.clone(), &id, checkpoint, body.patch, Some(def.file.clone())).await?;
    run.tenant = caller.tenant.clone();
    // The fork's own events (its checkpoint) come first in the new run's log.
    state.recorder.flushed(std::time::Duration::from_secs(5)).await;
    let submission = Submission {
        run,
        idempotency_key: None,
        request_hash: String::new(),
        webhook: None,
        traceparent: trace.map(|Extension(t)| t.header()),
        multitask: Multitask::Reject,
        max_attempts: state.config.max_attempts,
    };
    match crate::routes::runs::detached(crate::routes::runs::submit(state.clone(), submission)).await? {
        Submitted::Created { run, .. } => {
            state.wake.notify_waiters();
            Ok((StatusCode::CREATED, Json(api::run(&run))))
        }
        other => Err(ApiError::conflict("thread_busy", format!("the forked thread is busy: {other:?}"))),
    }
}
