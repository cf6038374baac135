//! Liveness, readiness and Prometheus metrics (no key needed: they say nothing of any tenant).

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations", security(()), responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers (and Redis, when configured).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations", security(()),
    responses((status = 200, description = "database (and Redis) reachable", body = Object),
              (status = 503, description = "not ready", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.queue.stats()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".to_string()),
    };
    let redis = match &state.store.redis {
        None => None,
        Some(cache) => Some(match tokio::time::timeout(std::time::Duration::from_secs(2), cache.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2 s".to_string()),
        }),
    };
    let ok = database.is_ok() && redis.as_ref().is_none_or(Result::is_ok);
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(e),
    };
    let mut checks = json!({"database": describe(&database)});
    if let Some(r) = &redis {
        checks["redis"] = describe(r);
    }
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ok { "ready" } else { "unavailable" }, "checks": checks}))).into_response()
}

/// Prometheus text exposition: runs by status, queue depth and age, pending approvals.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut out = String::new();
    let counts = state.store.queue.status_counts().await;
    let stats = state.store.queue.stats().await;
    let up = counts.is_ok() && stats.is_ok();
    let _ = writeln!(out, "# HELP crewgraph_up Whether the database answered this scrape.\n# TYPE crewgraph_up gauge");
    let _ = writeln!(out, "crewgraph_up {}", u8::from(up));
    if let Ok(counts) = counts {
        let _ = writeln!(out, "# HELP crewgraph_runs Runs by status.\n# TYPE crewgraph_runs gauge");
        for (status, n) in counts {
            let _ = writeln!(out, "crewgraph_runs{{status=\"{status}\"}} {n}");
        }
    }
    if let Ok(s) = stats {
        let _ =
            writeln!(out, "# HELP crewgraph_queue_ready Runs ready for a worker.\n# TYPE crewgraph_queue_ready gauge");
        let _ = writeln!(out, "crewgraph_queue_ready {}", s.ready);
        let _ =
            writeln!(out, "# HELP crewgraph_queue_leased Runs held by workers.\n# TYPE crewgraph_queue_leased gauge");
        let _ = writeln!(out, "crewgraph_queue_leased {}", s.leased);
        let _ = writeln!(
            out,
            "# HELP crewgraph_queue_oldest_seconds Age of the oldest ready run.\n# TYPE crewgraph_queue_oldest_seconds gauge"
        );
        let _ = writeln!(out, "crewgraph_queue_oldest_seconds {:.3}", s.oldest_ready_ms as f64 / 1000.0);
        let _ = writeln!(
            out,
            "# HELP crewgraph_approvals_pending Approvals waiting for a decision.\n# TYPE crewgraph_approvals_pending gauge"
        );
        let _ = writeln!(out, "crewgraph_approvals_pending {}", s.approvals_pending);
    }
    state.recorder.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
