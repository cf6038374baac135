//! Memory errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("embedding model at {dir}: {message}")]
    Model { dir: String, message: String },
    #[error("embedding failed: {0}")]
    Embed(String),
}
