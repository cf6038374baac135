//! Opening the configured store: `DATABASE_URL` (postgres:// or sqlite://,
//! default a SQLite file under `.crewgraph/`) plus optional `REDIS_URL`.

use std::sync::Arc;

use crewgraph_engine::{Checkpointer, RunStore};

use crate::error::StoreError;
use crate::postgres::PgStore;
use crate::redis::{HotCheckpointer, RedisCache};
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
    pub backend: &'static str,
    pub redis: Option<RedisCache>,
}

impl Store {
    /// Connects to `database_url`, applies migrations, and puts the Redis hot
    /// tier in front when `redis_url` is given.
    pub async fn open(database_url: &str, redis_url: Option<&str>, redis_prefix: &str) -> Result<Self, StoreError> {
        let (checkpointer, runs, backend): (Arc<dyn Checkpointer>, Arc<dyn RunStore>, _) =
            if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
                let pg = PgStore::connect(database_url, 32).await?;
                pg.migrate().await?;
                let pg = Arc::new(pg);
                (pg.clone(), pg, "postgres")
            } else if database_url.starts_with("sqlite:") {
                let lite = SqliteStore::connect(database_url).await?;
                lite.migrate().await?;
                let lite = Arc::new(lite);
                (lite.clone(), lite, "sqlite")
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
        Ok(Self { checkpointer, runs, backend, redis })
    }

    /// Applies migrations only.
    pub async fn migrate(database_url: &str) -> Result<&'static str, StoreError> {
        Self::open(database_url, None, "").await.map(|s| s.backend)
    }
}
