//! RAG memory for crewgraph: token-aware chunking of text and Markdown that
//! keeps headings and paragraphs together, embedders (a local
//! all-MiniLM-L6-v2 run by candle, or any OpenAI-compatible endpoint), the
//! `VectorStore` seam with an embedded SQLite store and Qdrant, and hybrid
//! retrieval (dense + BM25 fused by relative score or reciprocal rank fusion, MMR, budgets).

pub mod bm25;
pub mod chunk;
pub mod config;
pub mod embed;
pub mod embedded;
pub mod error;
pub mod fusion;
pub mod ingest;
pub mod openai_embed;
pub mod qdrant;
pub mod retrieve;
pub mod sparse;
pub mod store;

pub use bm25::Bm25;
pub use chunk::{Chunk, ChunkOptions, chunk_text};
pub use config::MemoryHandle;
pub use embed::{Embedder, HashingEmbedder, LocalEmbedder, default_model_dir};
pub use embedded::EmbeddedStore;
pub use error::MemoryError;
pub use fusion::{mmr, reciprocal_rank_fusion};
pub use ingest::{Document, collect_files, read_document};
pub use openai_embed::OpenAiEmbedder;
pub use qdrant::QdrantStore;
pub use retrieve::{Fusion, Memory, Prepared, ScoredChunk, SearchMode, SearchRequest};
pub use store::{CollectionInfo, DEFAULT_TENANT, Filter, Hit, Record, SourceChange, VectorStore};
