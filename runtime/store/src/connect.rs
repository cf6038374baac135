//! Opening the configured store: `DATABASE_URL` (postgres:// or sqlite://,
//! default a SQLite file under `.crewgraph/`) plus optional `REDIS_URL`.

use std::sync::Arc;

use crewgraph_engine::{Checkpointer, RunStore};

use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::redis::{HotCheckpointer, RedisCache};
use crate::service::{EventLog, GraphRegistry, KeyStore, RunQueue, WebhookQueue};
use crate::sqlite::SqliteStore;

/// The embedded default: a SQLite file in `.crewgraph/` of the working directory.
pub fn default_database_url() -> String {
    "sqlite://.crewgraph/crewgraph.db".to_string()
}

/// The opened backends, as the engine's traits.
#[derive(Clone)]
pub struct Store {
    pub checkpointer: Arc<dyn Checkpointer>,
    pub runs: Arc<dyn RunStore>,
    pub queue: Arc<dyn RunQueue>,
    pub events: Arc<dyn EventLog>,
    pub keys: Arc<dyn KeyStore>,
    pub graphs: Arc<dyn GraphRegistry>,
    pub webhooks: Arc<dyn WebhookQueue>,
    pub backend: &'static str,
    /// Where it connected (Postgres workers LISTEN there for new runs).
    pub database_url: String,
    pub redis: Option<RedisCache>,
}

impl Store {
    /// Connects to `database_url`, applies migrations, and puts the Redis hot
    /// tier in front when `redis_url` is given.
    pub async fn open(database_url: &str, redis_url: Option<&str>, redis_prefix: &str) -> Result<Self, StoreError> {
        let mut store = if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
            let pg = PgStore::connect(database_url, 32).await?;
            pg.migrate().await?;
            Self::of(Arc::new(pg), "postgres", database_url)
        } else if database_url.starts_with("sqlite:") {
            let lite = SqliteStore::connect(database_url).await?;
            lite.migrate().await?;
            Self::of(Arc::new(lite), "sqlite", database_url)
        } else {
            return Err(StoreError::UnsupportedUrl(database_url.to_string()));
        };
        if let Some(url) = redis_url {
            let cache = RedisCache::connect(url, redis_prefix).await?;
            store.checkpointer = Arc::new(HotCheckpointer::new(store.checkpointer, cache.clone()));
            store.redis = Some(cache);
        }
        Ok(store)
    }

    /// Every seam served by one backend.
    fn of<B>(backend: Arc<B>, name: &'static str, database_url: &str) -> Self
    where
        B: Checkpointer + RunStore + RunQueue + EventLog + KeyStore + WebhookQueue + GraphRegistry + 'static,
    {
        Self {
            checkpointer: backend.clone(),
            runs: backend.clone(),
            queue: backend.clone(),
            events: backend.clone(),
            keys: backend.clone(),
            graphs: backend.clone(),
            webhooks: backend,
            backend: name,
            database_url: database_url.to_string(),
            redis: None,
        }
    }

    /// Applies migrations only.
    pub async fn migrate(database_url: &str) -> Result<&'static str, StoreError> {
        Self::open(database_url, None, "").await.map(|s| s.backend)
    }
}
