//! `/v1/approvals`: what waits for people, and their decisions.

use axum::Json;
use axum::extract::{Path, State};
use crewgraph_engine::{ApprovalStatus, Decision, DecisionAction, api};
use crewgraph_store::ApprovalQuery;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListApprovals {
    pub status: Option<String>,
    pub run_id: Option<String>,
    pub graph: Option<String>,
}

#[utoipa::path(get, path = "/v1/approvals", operation_id = "list_approvals", tag = "approvals", params(ListApprovals),
    responses((status = 200, body = Vec<crate::openapi::ApprovalDoc>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListApprovals>,
) -> ApiResult<Json<Value>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            ApprovalStatus::parse(s)
                .ok_or_else(|| ApiError::invalid(format!("status `{s}`: expected pending, decided or expired")))?,
        ),
    };
    let approvals = state
        .store
        .queue
        .approvals(&ApprovalQuery { tenant: caller.tenant, status, run_id: q.run_id, graph: q.graph })
        .await?;
    Ok(Json(Value::Array(approvals.iter().map(api::approval).collect())))
}

#[utoipa::path(get, path = "/v1/approvals/{id}", operation_id = "get_approval", tag = "approvals", params(("id" = String, Path)),
    responses((status = 200, body = crate::openapi::ApprovalDoc), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let approval = approval_for(&state, &caller, &id).await?;
    Ok(Json(api::approval(&approval)))
}

/// The caller's tenant's approval, or 404.
async fn approval_for(state: &AppState, caller: &Caller, id: &str) -> ApiResult<crewgraph_engine::Approval> {
    state.store.queue.approval_of(&caller.tenant, id).await?.ok_or_else(|| ApiError::not_found("approval", id))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    /// `approve`, `reject`, `edit` or `respond`.
    pub action: String,
    /// The edited output (`edit`) or the answer (`respond`).
    pub value: Option<Value>,
    pub comment: Option<String>,
}

/// Records the decision (exactly one wins: the others get 409) and puts the
/// run back on the queue once nothing else of it is pending.
#[utoipa::path(post, path = "/v1/approvals/{id}", operation_id = "decide_approval", tag = "approvals", params(("id" = String, Path)),
    request_body = DecideBody,
    responses((status = 200, description = "decided; the run resumes", body = crate::openapi::ApprovalDoc),
              (status = 403, description = "the key lacks `approve`", body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "already decided, or expired", body = crate::openapi::ErrorDoc),
              (status = 422, description = "an action the approval does not allow", body = crate::openapi::ErrorDoc)))]
pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    caller.require(Role::Approve)?;
    let body: DecideBody = crate::extract::parse_body(body)?;
    let action = DecisionAction::parse(&body.action).ok_or_else(|| {
        ApiError::invalid(format!("action `{}`: expected approve, reject, edit or respond", body.action))
            .details(json!({"path": "action"}))
    })?;
    if matches!(action, DecisionAction::Edit | DecisionAction::Respond) && body.value.is_none() {
        return Err(ApiError::invalid(format!("`{}` needs a `value`", body.action)).details(json!({"path": "value"})));
    }
    let approval = approval_for(&state, &caller, &id).await?;
    if let Some(expires) = approval.expires_at
        && approval.status == ApprovalStatus::Pending
        && expires < crewgraph_engine::now_ms()
    {
        return Err(ApiError::conflict("expired", format!("approval `{id}` expired")));
    }
    let decision = Decision { action, value: body.value, comment: body.comment };
    let decided = crate::routes::runs::detached(async move {
        let decided = state.runtime.decide(&id, decision).await?;
        if state.store.queue.requeue(&decided.run_id).await? {
            state.wake.notify_waiters();
        }
        Ok(decided)
    })
    .await?;
    Ok(Json(api::approval(&decided)))
}
