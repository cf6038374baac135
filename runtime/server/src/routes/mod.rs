//! The routes of DESIGN.md's API table.

pub mod approvals;
pub mod collections;
pub mod events;
pub mod graphs;
pub mod health;
pub mod runs;
pub mod threads;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let timeout = TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, state.config.request_timeout);
    // Streams and waits carry their own time limits.
    let long =
        Router::new().route("/v1/runs/{id}/events", get(events::stream)).route("/v1/runs/{id}/wait", get(runs::wait));
    let api = Router::new()
        .route("/v1/runs", post(runs::create).get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/webhooks", get(runs::webhooks))
        .route("/v1/approvals", get(approvals::list))
        .route("/v1/approvals/{id}", get(approvals::get).post(approvals::decide))
        .route("/v1/threads/{id}/state", get(threads::state))
        .route("/v1/threads/{id}/history", get(threads::history))
        .route("/v1/threads/{id}/fork", post(threads::fork))
        .route("/v1/graphs", get(graphs::list))
        .route("/v1/graphs/validate", post(graphs::validate))
        .route("/v1/collections/{name}/documents", post(collections::add_documents))
        .route("/v1/collections/{name}/query", post(collections::query))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .layer(timeout);
    Router::new()
        .merge(api)
        .merge(long)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::limit))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}
