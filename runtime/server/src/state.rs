//! What every handler and worker shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crewgraph_engine::Runtime;
use crewgraph_spec::{Catalog, GraphDef, Registry, SpecErrors};
use crewgraph_store::Store;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::ServerConfig;
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

/// Graphs by name, compiled once from the definition directories.
pub struct Definitions {
    catalog: RwLock<Catalog>,
    pub registry: Registry,
    compiled: RwLock<HashMap<String, Arc<GraphDef>>>,
}

impl Definitions {
    pub fn new(catalog: Catalog, registry: Registry) -> Self {
        Self { catalog: RwLock::new(catalog), registry, compiled: RwLock::new(HashMap::new()) }
    }

    pub fn catalog(&self) -> Catalog {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn names(&self) -> Vec<String> {
        self.catalog.read().map(|c| c.names().map(String::from).collect()).unwrap_or_default()
    }

    /// `None` when no definition has that name; `Some(Err)` when it does not compile.
    pub fn get(&self, name: &str) -> Option<Result<Arc<GraphDef>, SpecErrors>> {
        if let Some(def) = self.compiled.read().ok().and_then(|c| c.get(name).cloned()) {
            return Some(Ok(def));
        }
        let catalog = self.catalog.read().ok()?.clone();
        catalog.path_of(name)?;
        let result = catalog.load(name, &self.registry).map(Arc::new);
        if let (Ok(def), Ok(mut compiled)) = (&result, self.compiled.write()) {
            compiled.insert(name.to_string(), def.clone());
        }
        Some(result)
    }
}
