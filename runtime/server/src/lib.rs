//! The crewgraph service: the HTTP API of DESIGN.md (axum) and the workers
//! that execute queued runs, in one process or split (`serve --no-workers`,
//! `worker`). State lives in the store; this crate holds none of its own, so
//! replicas scale out and any of them may die.

pub mod auth;
pub mod config;
pub mod definitions;
pub mod error;
pub mod events;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod routes;
pub mod state;
pub mod trace;
pub mod webhooks;
pub mod worker;

use std::sync::Arc;

use crewgraph_engine::{EventSink, Runtime};
use crewgraph_spec::{Catalog, Registry};
use crewgraph_store::Store;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use config::ServerConfig;
pub use definitions::{Definitions, Lookup};
pub use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {bind}: {source}")]
    Bind { bind: String, source: std::io::Error },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// What to start in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// API and `config.workers` workers.
    Serve,
    /// API only.
    ApiOnly,
    /// Workers only.
    WorkerOnly,
}

/// Builds the shared state; the recorder task ends when the state is dropped.
pub fn app_state(store: Store, catalog: Catalog, registry: Registry, config: ServerConfig) -> AppState {
    let (bus, _) = broadcast::channel(1024);
    let (recorder, _task) = events::recorder(store.events.clone(), bus.clone(), store.redis.clone());
    let recorder = Arc::new(recorder);
    let sink: Arc<dyn EventSink> = recorder.clone();
    let runtime = Runtime::new(store.checkpointer.clone(), store.runs.clone(), sink);
    let limiter = ratelimit::RateLimiter::new(config.rate_per_s, config.rate_burst, store.redis.clone());
    let definitions = Arc::new(Definitions::new(catalog, registry, store.graphs.clone()));
    AppState {
        store,
        runtime,
        definitions,
        bus,
        wake: Arc::new(Notify::new()),
        key_cache: Arc::default(),
        limiter: Arc::new(limiter),
        config: Arc::new(config),
        recorder,
        shutdown: CancellationToken::new(),
    }
}

/// Runs until `stop` resolves (SIGINT/SIGTERM in the binary), then shuts
/// down gracefully: stops accepting, ends streams, lets workers finish
/// their steps within the grace period and hands back the rest.
pub async fn run(
    state: AppState,
    mode: Mode,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    let workers = match mode {
        Mode::ApiOnly => None,
        _ if state.config.workers == 0 => None,
        _ => {
            if state.store.backend == "postgres" {
                tokio::spawn(listen_for_runs(state.clone()));
            }
            tokio::spawn(worker::expire_approvals(state.clone()));
            if let Some(secret) = &state.config.webhook_secret {
                tokio::spawn(webhooks::deliver_loop(state.clone(), Arc::from(secret.as_str())));
            }
            Some(tokio::spawn(worker::run_workers(state.clone(), state.config.workers, state.wake.clone())))
        }
    };
    if mode != Mode::WorkerOnly
        && let Some(redis) = state.store.redis.clone()
    {
        tokio::spawn(follow_events(state.clone(), redis));
    }
    let http = match mode {
        Mode::WorkerOnly => state.config.metrics_bind.clone().map(|b| (b, routes::operations_router(state.clone()))),
        _ => Some((state.config.bind.clone(), routes::router(state.clone()))),
    };
    match http {
        Some((bind, router)) => {
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .map_err(|source| ServerError::Bind { bind: bind.clone(), source })?;
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "listening");
            let shutdown = state.shutdown.clone();
            // `into_make_service` clones the router per connection (an `Arc`); serving the
            // router itself rebuilds its route table per connection (about 39 KB each).
            axum::serve(listener, router.into_make_service())
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await?;
        }
        None => state.shutdown.cancelled().await,
    }
    if let Some(w) = workers {
        let _ = w.await;
    }
    state.recorder.flushed(std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// Wakes this process's workers on every `NOTIFY crewgraph_runs` (a run was
/// queued or released anywhere); they still poll every second without it.
async fn listen_for_runs(state: AppState) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect(&state.store.database_url).await?;
            l.listen("crewgraph_runs").await?;
            loop {
                l.recv().await?;
                state.wake.notify_waiters();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            r = listener => if let Err(e) = r { tracing::warn!(error = %e, "LISTEN for new runs failed; polling until it reconnects") },
            _ = state.shutdown.cancelled() => return,
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Wakes this replica's SSE streams and waits when any replica records events
/// (Redis pub/sub); streams still poll, so a Redis outage only adds latency.
async fn follow_events(state: AppState, redis: crewgraph_store::RedisCache) {
    while !state.shutdown.is_cancelled() {
        tokio::select! {
            r = redis.follow_events(state.bus.clone()) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "cannot follow events through Redis; streams poll");
                }
            }
            _ = state.shutdown.cancelled() => return,
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}
