//! What every handler and worker shares.

use std::sync::Arc;

use crewgraph_engine::Runtime;
use crewgraph_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::ServerConfig;
use crate::definitions::Definitions;
use crate::events::Bus;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub runtime: Runtime,
    pub definitions: Arc<Definitions>,
    pub bus: Bus,
    /// Wakes this process's idle workers when a run becomes ready.
    pub wake: Arc<tokio::sync::Notify>,
    pub key_cache: Arc<KeyCache>,
    pub limiter: Arc<crate::ratelimit::RateLimiter>,
    pub config: Arc<ServerConfig>,
    /// The runtime's event sink, for flushing at shutdown.
    pub recorder: Arc<crate::events::Recorder>,
    /// Cancelled at shutdown: SSE streams and waits end, workers stop claiming.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// How often a stream or a wait looks in the database for events it was not
    /// woken for. With Redis every replica's events wake it, and an embedded
    /// (SQLite) service is one process: polling is only a safety net there.
    pub fn poll_interval(&self, without_wakeups: std::time::Duration) -> std::time::Duration {
        if self.store.redis.is_some() || self.store.backend == "sqlite" {
            std::time::Duration::from_secs(5)
        } else {
            without_wakeups
        }
    }
}
