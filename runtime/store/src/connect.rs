//! Opening the configured store: `DATABASE_URL` (postgres:// or sqlite://,
//! default a SQLite file under `.crewgraph/`) plus optional `REDIS_URL`.

use std::sync::Arc;

use crewgraph_engine::{Checkpointer, RunStore};

use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::redis::{HotCheckpointer, RedisCache};
use crate::service::{EventLog, KeyStore, RunQueue};
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
    pub backend: &'static str,
    /// Where it connected (Postgres workers LISTEN there for new runs).
    pub database_url: String,
    pub redis: Option<RedisCache>,
}

impl Store {
    /// Connects to `database_url`, applies migrations, and puts the Redis hot
    /// tier in front when `redis_url` is given.
    pub async fn open(database_url: &str, redis_url: Option<&str>, redis_prefix: &str) -> Result<Self, StoreError> {
        type Opened = (
            Arc<dyn Checkpointer>,
            Arc<dyn RunStore>,
            Arc<dyn RunQueue>,
            Arc<dyn EventLog>,
            Arc<dyn KeyStore>,
            &'static str,
        );
        let (checkpointer, runs, queue, events, keys, backend): Opened =
            if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
                let pg = PgStore::connect(database_url, 32).await?;
                pg.migrate().await?;
                let pg = Arc::new(pg);
                (pg.clone(), pg.clone(), pg.clone(), pg.clone(), pg, "postgres")
            } else if database_url.starts_with("sqlite:") {
                let lite = SqliteStore::connect(database_url).await?;
                lite.migrate().await?;
                let lite = Arc::new(lite);
                (lite.clone(), lite.clone(), lite.clone(), lite.clone(), lite, "sqlite")
            } else {
                return Err(StoreError::UnsupportedUrl(database_url.to_string()));
            };
        let (checkpointer, redis) = match redis_url {
            Some(url) => {
                let cache = RedisCache::connect(url, redis_prefix).await?;
                let hot: Arc<dyn Checkpointer> = Arc::new(HotCheckpointer::new(checkpointer, cache.clone()));
                (hot, Some(cache))
            }
            None => (checkpointer, None),
        };
        Ok(Self { checkpointer, runs, queue, events, keys, backend, database_url: database_url.to_string(), redis })
    }

    /// Applies migrations only.
    pub async fn migrate(database_url: &str) -> Result<&'static str, StoreError> {
        Self::open(database_url, None, "").await.map(|s| s.backend)
    }
}
