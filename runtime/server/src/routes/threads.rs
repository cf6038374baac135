//! `/v1/threads/{id}`: a thread's latest state and its history.

use axum::Json;
use axum::extract::{Path, State};
use crewgraph_engine::api;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiQuery;
use crate::state::AppState;

async fn owned(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    if state.store.queue.owns_thread(&caller.tenant, id).await? {
        Ok(())
    } else {
        Err(ApiError::not_found("thread", id))
    }
}

pub async fn state(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    owned(&state, &caller, &id).await?;
    let latest = state.store.checkpointer.get(&id, None).await?.ok_or_else(|| ApiError::not_found("thread", &id))?;
    Ok(Json(api::checkpoint(&latest)))
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub limit: Option<u32>,
}

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
