//! Store errors.

use crewgraph_engine::StorageError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported database URL `{0}` (expected postgres://, postgresql:// or sqlite://)")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        StorageError::wrap("store", e)
    }
}

pub(crate) fn db(e: sqlx::Error) -> StorageError {
    StorageError::wrap("database", e)
}

pub(crate) fn json(e: serde_json::Error) -> StorageError {
    StorageError::wrap("stored JSON", e)
}
