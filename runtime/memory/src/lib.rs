//! RAG memory for crewgraph. This first part holds what retrieval needs
//! before any store or model: token-aware chunking of text and Markdown that
//! keeps headings and paragraphs together, a BM25 lexical index, and the
//! ways of combining ranked lists (reciprocal rank fusion, MMR), and the
//! `Embedder` trait with a local all-MiniLM-L6-v2 embedder run by candle.
//!
//! Depends on nothing of crewgraph; embedders and vector stores come on top.

pub mod bm25;
pub mod chunk;
pub mod embed;
pub mod error;
pub mod fusion;

pub use bm25::Bm25;
pub use chunk::{Chunk, ChunkOptions, chunk_text};
pub use embed::{Embedder, LocalEmbedder, default_model_dir};
pub use error::MemoryError;
pub use fusion::{mmr, reciprocal_rank_fusion};
