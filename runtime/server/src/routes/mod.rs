//! The routes of DESIGN.md's API table.

pub mod approvals;
pub mod collections;
pub mod events;
pub mod graphs;
pub mod health;
pub mod runs;
pub mod threads;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::routing::get;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::openapi::ApiDoc;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let (router, _) = router_and_document(state);
    router
}

/// What a worker-only process serves: health, readiness and its metrics.
pub fn operations_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state)
}

/// The routes and the OpenAPI document describing exactly them.
pub fn router_and_document(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let timeout = TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, state.config.request_timeout);
    // Streams and waits carry their own time limits.
    let long = OpenApiRouter::new().routes(routes!(events::stream)).routes(routes!(runs::wait));
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(runs::create, runs::list))
        .routes(routes!(runs::get))
        .routes(routes!(runs::cancel))
        .routes(routes!(runs::webhooks))
        .routes(routes!(approvals::list))
        .routes(routes!(approvals::get, approvals::decide))
        .routes(routes!(threads::state))
        .routes(routes!(threads::history))
        .routes(routes!(threads::fork))
        .routes(routes!(graphs::list, graphs::register))
        .routes(routes!(graphs::get))
        .routes(routes!(graphs::validate))
        .routes(routes!(collections::add_documents))
        .routes(routes!(collections::query))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .layer(timeout);
    let (router, document) = api.merge(long).split_for_parts();
    let json: Arc<str> = Arc::from(document.to_pretty_json().unwrap_or_default());
    let router = router
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json.to_string()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::ratelimit::limit))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn(crate::trace::requests))
        .with_state(state);
    (router, document)
}
