//! `Memory`: an embedder and a vector store together, with the two things
//! callers do: ingest documents and search collections. Search is hybrid by
//! default (dense and lexical lists fused by relative score fusion, or by
//! reciprocal rank fusion on request), then
//! filtered by similarity, diversified by MMR on request and fitted into a
//! token budget.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::chunk::{ChunkOptions, chunk_text};
use crate::embed::Embedder;
use crate::error::MemoryError;
use crate::fusion::{cosine, mmr, reciprocal_rank_fusion};
use crate::ingest::Document;
use crate::store::{CollectionInfo, DEFAULT_TENANT, Filter, Hit, Record, SourceChange, VectorStore};

/// The constant of reciprocal rank fusion (the value of the original paper and of Qdrant).
const RRF_K: f32 = 60.0;
/// Texts embedded per call: large enough to batch, small enough for steady progress.
const EMBED_BATCH: usize = 16;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Dense and lexical lists fused (see [`Fusion`]).
    #[default]
    Hybrid,
    /// Vectors only (cosine similarity).
    Dense,
    /// Terms only (BM25).
    Sparse,
}

fn default_top_k() -> usize {
    5
}

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

/// A search, as the API, the CLI and the `retrieve` node send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub mode: SearchMode,
    #[serde(default)]
    pub fusion: Fusion,
    /// Weight of the dense side in relative fusion (0.0 lexical only, 1.0 dense only).
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Least cosine similarity between query and chunk; chunks below it are dropped.
    #[serde(default)]
    pub score_threshold: Option<f32>,
    /// MMR trade-off (1.0 pure relevance, 0.0 pure diversity); off when absent.
    #[serde(default)]
    pub mmr_lambda: Option<f32>,
    /// Most tokens the results may hold together; chunks that do not fit are left out.
    #[serde(default)]
    pub token_budget: Option<usize>,
}

impl SearchRequest {
    pub fn new(query: impl Into<String>, top_k: usize) -> Self {
        Self {
            query: query.into(),
            top_k,
            tenant: default_tenant(),
            filter: Filter::default(),
            mode: SearchMode::Hybrid,
            fusion: Fusion::default(),
            alpha: default_alpha(),
            score_threshold: None,
            mmr_lambda: None,
            token_budget: None,
        }
    }
}

/// How hybrid search combines its dense and lexical lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fusion {
    /// Reciprocal rank fusion (k = 60): ranks only, no tuning.
    Rrf,
    /// Relative score fusion (Weaviate's `relativeScoreFusion`): each side's
    /// scores min-max normalised over the candidates, weighted by `alpha`.
    /// The default: it keeps how far ahead a passage is, which ranks throw away
    /// (W8: 0.75 against RRF's 0.70).
    #[default]
    Relative,
}

fn default_alpha() -> f32 {
    0.5
}

/// One result. `score` is the fused score for hybrid search (1.0 means first
/// in both lists), cosine similarity for dense, BM25 for sparse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredChunk {
    pub source: String,
    pub text: String,
    pub score: f32,
    pub title: String,
    pub position: usize,
    pub tokens: usize,
    /// Cosine similarity to the query, when the query was embedded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    pub id: Uuid,
    pub metadata: Map<String, Value>,
}

/// A document chunked and matched against what is stored: only the chunks
/// not stored yet need vectors.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub collection: String,
    pub tenant: String,
    pub source: String,
    records: Vec<Record>,
    missing: Vec<usize>,
}

impl Prepared {
    pub fn chunks(&self) -> usize {
        self.records.len()
    }
    /// Chunks that will be embedded (new or changed text).
    pub fn to_embed(&self) -> usize {
        self.missing.len()
    }

    /// The point ids of the document's chunks, in order.
    pub fn ids(&self) -> Vec<Uuid> {
        self.records.iter().map(|r| r.id).collect()
    }
}

#[derive(Clone)]
pub struct Memory {
    store: Arc<dyn VectorStore>,
    embedder: Arc<dyn Embedder>,
    chunking: ChunkOptions,
}

/// What is embedded for a chunk: its heading path gives the passage the
/// context a reader has (a section named "Overriding dependencies" says what
/// a bare `[patch]` example is about).
fn embedding_text(r: &Record) -> String {
    if r.title.is_empty() { r.text.clone() } else { format!("{}\n\n{}", r.title, r.text) }
}

impl Memory {
    pub fn new(store: Arc<dyn VectorStore>, embedder: Arc<dyn Embedder>) -> Self {
        Self { store, embedder, chunking: ChunkOptions::default() }
    }

    pub fn with_chunking(mut self, chunking: ChunkOptions) -> Self {
        self.chunking = chunking;
        self
    }

    pub fn store(&self) -> &Arc<dyn VectorStore> {
        &self.store
    }

    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// The collection, created for this embedder if new; refused if it was
    /// made by another embedder.
    pub async fn ensure_collection(&self, name: &str) -> Result<CollectionInfo, MemoryError> {
        self.store.create_collection(name, self.embedder.dimension(), self.embedder.model_id()).await
    }

    /// An existing collection, checked against this embedder.
    async fn existing(&self, name: &str) -> Result<CollectionInfo, MemoryError> {
        let info = self.store.collection(name).await?.ok_or_else(|| MemoryError::NoCollection(name.to_string()))?;
        info.check_fits(self.embedder.dimension(), self.embedder.model_id())?;
        Ok(info)
    }

    /// Chunks a document and finds which chunks the store already holds.
    pub async fn prepare(&self, collection: &str, tenant: &str, doc: &Document) -> Result<Prepared, MemoryError> {
        self.ensure_collection(collection).await?;
        let text = doc.text.clone();
        let opts = self.chunking;
        // Token counting runs at 10-15 MB/s: keep it off the async threads.
        let chunks = tokio::task::spawn_blocking(move || chunk_text(&text, opts))
            .await
            .map_err(|e| MemoryError::Embed(format!("chunking: {e}")))?;
        if chunks.is_empty() {
            return Err(MemoryError::Document { path: doc.source.clone(), message: "no text to ingest".into() });
        }
        let stored = self.store.stored_ids(collection, tenant, &doc.source).await?;
        let mut occurrences: HashMap<&str, usize> = HashMap::new();
        let mut records = Vec::with_capacity(chunks.len());
        let mut missing = Vec::new();
        for chunk in &chunks {
            let n = occurrences.entry(chunk.content_hash.as_str()).or_default();
            let id = Record::point_id(collection, tenant, &doc.source, &chunk.content_hash, *n);
            *n += 1;
            if !stored.contains(&id) {
                missing.push(records.len());
            }
            records.push(Record {
                id,
                title: chunk.title.clone(),
                position: chunk.position,
                tokens: chunk.tokens,
                content_hash: chunk.content_hash.clone(),
                text: chunk.text.clone(),
                metadata: doc.metadata.clone(),
                vector: None,
            });
        }
        Ok(Prepared {
            collection: collection.to_string(),
            tenant: tenant.to_string(),
            source: doc.source.clone(),
            records,
            missing,
        })
    }

    /// Embeds what is missing (calling `progress` with each batch's size) and
    /// replaces the source's chunks in the store.
    pub async fn store_prepared(
        &self,
        mut prepared: Prepared,
        progress: &(dyn Fn(usize) + Send + Sync),
    ) -> Result<SourceChange, MemoryError> {
        for batch in prepared.missing.chunks(EMBED_BATCH) {
            let texts: Vec<String> = batch.iter().map(|&i| embedding_text(&prepared.records[i])).collect();
            let vectors = self.embedder.embed(&texts).await?;
            if vectors.len() != batch.len() {
                return Err(MemoryError::Embed(format!("asked for {} vectors, got {}", batch.len(), vectors.len())));
            }
            for (&i, v) in batch.iter().zip(vectors) {
                prepared.records[i].vector = Some(v);
            }
            progress(batch.len());
        }
        self.store.replace_source(&prepared.collection, &prepared.tenant, &prepared.source, prepared.records).await
    }

    /// Ingests one document: chunk, embed what is new, store.
    pub async fn ingest(&self, collection: &str, tenant: &str, doc: &Document) -> Result<SourceChange, MemoryError> {
        let prepared = self.prepare(collection, tenant, doc).await?;
        self.store_prepared(prepared, &|_| {}).await
    }

    pub async fn delete_source(&self, collection: &str, tenant: &str, source: &str) -> Result<usize, MemoryError> {
        self.store.delete_source(collection, tenant, source).await
    }

    pub async fn search(&self, collection: &str, req: &SearchRequest) -> Result<Vec<ScoredChunk>, MemoryError> {
        self.existing(collection).await?;
        if req.top_k == 0 || req.query.trim().is_empty() {
            return Ok(vec![]);
        }
        // Each list reaches deeper than top_k so fusion and MMR have room.
        let depth = (req.top_k * 4).max(20);
        let query_vector = match req.mode {
            SearchMode::Sparse => None,
            _ => Some(
                self.embedder
                    .embed(std::slice::from_ref(&req.query))
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| MemoryError::Embed("the embedder returned no vector for the query".into()))?,
            ),
        };
        let dense = match &query_vector {
            Some(v) => self.store.dense(collection, &req.tenant, v, &req.filter, depth).await?,
            None => vec![],
        };
        let lexical = match req.mode {
            SearchMode::Dense => vec![],
            _ => self.store.lexical(collection, &req.tenant, &req.query, &req.filter, depth).await?,
        };
        let mut ranked: Vec<(Hit, f32)> = match req.mode {
            SearchMode::Dense => dense.into_iter().map(|h| (h.clone(), h.score)).collect(),
            SearchMode::Sparse => lexical.into_iter().map(|h| (h.clone(), h.score)).collect(),
            SearchMode::Hybrid => match (req.fusion, &query_vector) {
                (Fusion::Relative, Some(q)) => relative_fusion(q, dense, lexical, req.alpha.clamp(0.0, 1.0)),
                _ => {
                    let lists = [dense.iter().map(|h| h.id).collect(), lexical.iter().map(|h| h.id).collect()];
                    let best = 2.0 / (RRF_K + 1.0);
                    let mut by_id: HashMap<Uuid, Hit> = dense.into_iter().chain(lexical).map(|h| (h.id, h)).collect();
                    reciprocal_rank_fusion(&lists, RRF_K)
                        .into_iter()
                        .filter_map(|(id, s)| by_id.remove(&id).map(|h| (h, s / best)))
                        .collect()
                }
            },
        };
        let similarity = |h: &Hit| query_vector.as_ref().map(|q| cosine(q, &h.vector));
        if let Some(threshold) = req.score_threshold {
            ranked.retain(|(h, score)| similarity(h).unwrap_or(*score) >= threshold);
        }
        let picked: Vec<(Hit, f32)> = match req.mmr_lambda {
            Some(lambda) => {
                let candidates: Vec<(usize, f32, Vec<f32>)> =
                    ranked.iter().enumerate().map(|(i, (h, s))| (i, *s, h.vector.clone())).collect();
                let order = mmr(&candidates, req.top_k, lambda.clamp(0.0, 1.0));
                let mut slots: Vec<Option<(Hit, f32)>> = ranked.into_iter().map(Some).collect();
                order.into_iter().filter_map(|i| slots[i].take()).collect()
            }
            None => ranked.into_iter().take(req.top_k).collect(),
        };
        let mut used = 0;
        let mut out = Vec::with_capacity(picked.len());
        for (hit, score) in picked {
            if let Some(budget) = req.token_budget {
                if used + hit.tokens > budget {
                    continue;
                }
                used += hit.tokens;
            }
            out.push(ScoredChunk {
                similarity: similarity(&hit),
                source: hit.source,
                text: hit.text,
                score,
                title: hit.title,
                position: hit.position,
                tokens: hit.tokens,
                id: hit.id,
                metadata: hit.metadata,
            });
        }
        Ok(out)
    }
}

/// Relative score fusion over the union of both lists. Every candidate carries
/// its vector, so the dense side is its cosine to the query (not only the
/// dense list's); the lexical side is BM25, 0 for a chunk the lexical list
/// did not return. Each side is min-max normalised, so 1.0 = best on both.
fn relative_fusion(query: &[f32], dense: Vec<Hit>, lexical: Vec<Hit>, alpha: f32) -> Vec<(Hit, f32)> {
    let lexical_scores: HashMap<Uuid, f32> = lexical.iter().map(|h| (h.id, h.score)).collect();
    let mut union: HashMap<Uuid, Hit> = HashMap::new();
    for h in dense.into_iter().chain(lexical) {
        union.entry(h.id).or_insert(h);
    }
    let candidates: Vec<(Hit, f32, f32)> = union
        .into_values()
        .map(|h| {
            let lex = lexical_scores.get(&h.id).copied().unwrap_or(0.0);
            let cos = cosine(query, &h.vector);
            (h, cos, lex)
        })
        .collect();
    let span = |xs: &mut dyn Iterator<Item = f32>| {
        xs.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    };
    let (dlo, dhi) = span(&mut candidates.iter().map(|c| c.1));
    let (llo, lhi) = span(&mut candidates.iter().map(|c| c.2));
    let norm = |x: f32, lo: f32, hi: f32| if hi > lo { (x - lo) / (hi - lo) } else { 1.0 };
    let mut ranked: Vec<(Hit, f32)> = candidates
        .into_iter()
        .map(|(h, d, l)| {
            let s = alpha * norm(d, dlo, dhi) + (1.0 - alpha) * norm(l, llo.min(0.0), lhi);
            (h, s)
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(n: u128, score: f32, vector: [f32; 2]) -> Hit {
        Hit {
            id: Uuid::from_u128(n),
            source: format!("s{n}"),
            title: String::new(),
            position: 0,
            tokens: 1,
            text: String::new(),
            metadata: Map::new(),
            score,
            vector: vector.to_vec(),
        }
    }

    #[test]
    fn relative_fusion_weighs_both_sides_over_the_union() {
        let query = [1.0, 0.0];
        // 1: best vector, no lexical match; 2: strong on both; 3: best lexical, poor vector.
        let dense = vec![hit(1, 1.0, [1.0, 0.0]), hit(2, 0.8, [0.8, 0.6])];
        let lexical = vec![hit(3, 9.0, [0.0, 1.0]), hit(2, 8.0, [0.8, 0.6])];
        let order = |alpha| -> Vec<u128> {
            relative_fusion(&query, dense.clone(), lexical.clone(), alpha).iter().map(|(h, _)| h.id.as_u128()).collect()
        };
        assert_eq!(order(0.5), vec![2, 1, 3]);
        assert_eq!(order(1.0), vec![1, 2, 3]);
        assert_eq!(order(0.0), vec![3, 2, 1]);
        let best = relative_fusion(&query, dense.clone(), lexical.clone(), 0.5)[0].1;
        assert!(best <= 1.0 && best > 0.8, "{best}");
    }
}
