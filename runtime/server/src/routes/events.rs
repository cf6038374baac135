//! `GET /v1/runs/{id}/events`: the run's event log as server-sent events.
//!
//! Each event's SSE id is its position in the run's log, so a client that
//! reconnects with `Last-Event-ID` (or `?after=`) gets the rest, each event
//! once and in order. The stream ends after the run's last event; until
//! then it is woken by this process's recorder and polls for events
//! written by other processes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::events::is_terminal;
use crate::extract::ApiQuery;
use crate::routes::runs::wait_for;
use crate::state::AppState;

/// How often a stream looks for events written by other processes, when nothing wakes it.
const POLL: Duration = Duration::from_millis(500);
const PAGE: u32 = 256;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this event id (like `Last-Event-ID`).
    pub after: Option<i64>,
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", operation_id = "stream_run_events", tag = "runs",
    params(("id" = String, Path, description = "run id"), ("Last-Event-ID" = Option<String>, Header, description = "resume after this event"), StreamQuery),
    responses((status = 200, description = "server-sent events: `run.*`, `node.*`, `approval.*`, ...", content_type = "text/event-stream", body = String),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    crate::routes::runs::run_for(&state, &caller, &id).await?;
    let header = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let after = match header {
        Some(h) => h.trim().parse::<i64>().map_err(|_| ApiError::bad_request("Last-Event-ID must be an event id"))?,
        None => q.after.unwrap_or(0),
    };
    let wake = state.bus.subscribe();
    let tenant = caller.tenant;
    let stream = futures::stream::unfold(
        (state, id, tenant, after, wake, Vec::<SseEvent>::new(), false),
        |(state, id, tenant, mut after, mut wake, mut ready, mut done)| async move {
            loop {
                if let Some(next) = ready.pop() {
                    return Some((Ok(next), (state, id, tenant, after, wake, ready, done)));
                }
                if done || state.shutdown.is_cancelled() {
                    return None;
                }
                match state.store.events.events_after(&id, after, PAGE).await {
                    Ok(events) if !events.is_empty() => {
                        for e in events.iter().rev() {
                            let data = serde_json::to_string(&e.event).unwrap_or_default();
                            ready.push(SseEvent::default().id(e.seq.to_string()).event(&e.event.kind).data(data));
                        }
                        after = events.last().map(|e| e.seq).unwrap_or(after);
                        done = events.iter().any(|e| is_terminal(&e.event.kind));
                        continue;
                    }
                    Ok(_) => {
                        // A run that ended without its last event recorded (its process died) still ends the stream.
                        if let Ok(Some(run)) = state.store.queue.run_of(&tenant, &id).await
                            && run.status.is_terminal()
                            && run.updated_at + 5_000 < crewgraph_engine::now_ms()
                        {
                            return None;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, run_id = %id, "cannot read run events"),
                }
                tokio::select! {
                    _ = wait_for(&mut wake, &id) => {}
                    _ = tokio::time::sleep(state.poll_interval(POLL)) => {}
                    _ = state.shutdown.cancelled() => return None,
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
