//! Memory errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MemoryError {
    #[error("embedding model at {dir}: {message}")]
    Model { dir: String, message: String },
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error(
        "collection `{collection}` holds {expected}-dimensional vectors of model `{model}`; got a {got}-dimensional vector (use the embedder the collection was created with, or a new collection)"
    )]
    Dimension { collection: String, expected: usize, got: usize, model: String },
    #[error(
        "collection `{collection}` was created with embedding model `{existing}`, not `{requested}` (vectors of different models do not compare)"
    )]
    ModelMismatch { collection: String, existing: String, requested: String },
    #[error("no collection named `{0}`")]
    NoCollection(String),
    #[error("invalid collection name `{0}`: 1-64 ASCII letters, digits, `_` or `-`, starting with a letter or digit")]
    InvalidName(String),
    #[error("invalid filter: {0}")]
    Filter(String),
    #[error("{path}: {message}")]
    Document { path: String, message: String },
    #[error("{backend} vector store: {message}")]
    Store { backend: &'static str, message: String },
}

impl MemoryError {
    pub(crate) fn store(backend: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Store { backend, message: e.to_string() }
    }
}
