//! The `VectorStore` seam: collections of chunks with their vectors, kept per
//! tenant and per source document. Retrieval logic (fusion, MMR, budgets)
//! lives above it in `retrieve`, so every backend answers the same two
//! primitive questions: nearest by vector, best by terms.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::MemoryError;

/// Tenant used when a caller names none.
pub const DEFAULT_TENANT: &str = "default";

/// Namespace of point ids (uuid5), so ids are stable across processes and backends.
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1c_4a57_2f0e_4b8e_9a57_0c9f_3e2b_7d41);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub name: String,
    pub dimension: usize,
    /// The embedder that wrote the vectors: vectors of another model are refused.
    pub model: String,
}

impl CollectionInfo {
    /// Refuses a collection made by another embedding model or of another
    /// dimension: their vectors do not compare.
    pub fn check_fits(&self, dimension: usize, model: &str) -> Result<(), MemoryError> {
        if self.model != model {
            return Err(MemoryError::ModelMismatch {
                collection: self.name.clone(),
                existing: self.model.clone(),
                requested: model.to_string(),
            });
        }
        if self.dimension != dimension {
            return Err(MemoryError::Dimension {
                collection: self.name.clone(),
                expected: self.dimension,
                got: dimension,
                model: self.model.clone(),
            });
        }
        Ok(())
    }
}

/// One chunk as stored. `vector: None` keeps the vector already stored under
/// the same id (the text is unchanged, so re-embedding it would be waste).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: Uuid,
    pub title: String,
    pub position: usize,
    pub tokens: usize,
    pub content_hash: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub vector: Option<Vec<f32>>,
}

impl Record {
    /// The id of a chunk: its collection, tenant, source, content hash and
    /// which occurrence of that text it is in the source. Position is left
    /// out, so inserting a paragraph does not change the ids of the rest.
    pub fn point_id(collection: &str, tenant: &str, source: &str, content_hash: &str, occurrence: usize) -> Uuid {
        let key = format!("{collection}\u{0}{tenant}\u{0}{source}\u{0}{content_hash}\u{0}{occurrence}");
        Uuid::new_v5(&POINT_NAMESPACE, key.as_bytes())
    }
}

/// A stored chunk found by a search; `score` is the backend's own
/// (cosine similarity for vectors, BM25 for terms), higher is better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub id: Uuid,
    pub source: String,
    pub title: String,
    pub position: usize,
    pub tokens: usize,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub score: f32,
    #[serde(skip)]
    pub vector: Vec<f32>,
}

/// What changed when a source's chunks were replaced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceChange {
    pub added: usize,
    pub kept: usize,
    pub removed: usize,
}

/// Payload filter: every key must match. A key is `source`, `title` or a
/// metadata field; a value matches by equality, an array matches any of its
/// elements (`{"lang": ["en", "de"]}`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Filter(pub BTreeMap<String, Value>);

/// Deserialising validates as [`Filter::from_json`] does: a request body cannot smuggle in a bad key.
impl<'de> Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Filter::from_json(&Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a filter from JSON, refusing keys no backend could index safely.
    pub fn from_json(value: &Value) -> Result<Self, MemoryError> {
        let Value::Object(map) = value else {
            return Err(MemoryError::Filter(format!("a filter is an object of field: value, got {value}")));
        };
        let mut out = BTreeMap::new();
        for (key, v) in map {
            if key.is_empty() || !key.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                return Err(MemoryError::Filter(format!("field `{key}`: letters, digits, `_` and `-` only")));
            }
            let values = match v {
                Value::Array(items) => items.as_slice(),
                other => std::slice::from_ref(other),
            };
            if values.is_empty() || values.iter().any(|x| x.is_array() || x.is_object() || x.is_null()) {
                return Err(MemoryError::Filter(format!(
                    "field `{key}`: a string, number or boolean, or a non-empty list of them"
                )));
            }
            out.insert(key.clone(), v.clone());
        }
        Ok(Self(out))
    }

    /// The accepted values of each key.
    pub fn alternatives(&self) -> impl Iterator<Item = (&str, &[Value])> {
        self.0.iter().map(|(k, v)| {
            let values = match v {
                Value::Array(items) => items.as_slice(),
                other => std::slice::from_ref(other),
            };
            (k.as_str(), values)
        })
    }
}

/// Where collections of chunks are kept. Implemented by the embedded SQLite
/// store (the default) and by Qdrant.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// `embedded` or `qdrant`, for messages.
    fn backend(&self) -> &'static str;

    /// Creates the collection, or returns it if it exists with the same
    /// dimension and model; any difference is an error, never a silent reuse.
    async fn create_collection(&self, name: &str, dimension: usize, model: &str)
    -> Result<CollectionInfo, MemoryError>;

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, MemoryError>;

    async fn collections(&self) -> Result<Vec<CollectionInfo>, MemoryError>;

    /// Removes a collection and every chunk in it; false if there was none.
    async fn drop_collection(&self, name: &str) -> Result<bool, MemoryError>;

    /// Ids stored for one source, so ingestion embeds only new text.
    async fn stored_ids(&self, collection: &str, tenant: &str, source: &str) -> Result<HashSet<Uuid>, MemoryError>;

    /// Makes the source's chunks exactly `records`, in one transaction where
    /// the backend has them: new ids are added, known ids updated in place,
    /// the rest removed.
    async fn replace_source(
        &self,
        collection: &str,
        tenant: &str,
        source: &str,
        records: Vec<Record>,
    ) -> Result<SourceChange, MemoryError>;

    /// Removes every chunk of a source; returns how many there were.
    async fn delete_source(&self, collection: &str, tenant: &str, source: &str) -> Result<usize, MemoryError>;

    /// Chunks in the collection, for one tenant or all.
    async fn count(&self, collection: &str, tenant: Option<&str>) -> Result<usize, MemoryError>;

    /// Nearest chunks by cosine similarity.
    async fn dense(
        &self,
        collection: &str,
        tenant: &str,
        vector: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError>;

    /// Best chunks by a BM25-style lexical score.
    async fn lexical(
        &self,
        collection: &str,
        tenant: &str,
        text: &str,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError>;
}

/// Refuses a vector that does not fit the collection.
pub(crate) fn check_dimension(info: &CollectionInfo, vector: &[f32]) -> Result<(), MemoryError> {
    if vector.len() != info.dimension {
        return Err(MemoryError::Dimension {
            collection: info.name.clone(),
            expected: info.dimension,
            got: vector.len(),
            model: info.model.clone(),
        });
    }
    Ok(())
}

/// Collection names become table names and Qdrant collection names.
pub fn check_collection_name(name: &str) -> Result<(), MemoryError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(MemoryError::InvalidName(name.to_string())) }
}
