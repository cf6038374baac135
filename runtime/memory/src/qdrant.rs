//! The Qdrant backend (gRPC through qdrant-client), for production. A
//! collection holds a named dense vector `dense` (cosine) and a sparse
//! vector `bm25` whose IDF Qdrant computes (`idf` modifier); the tenant is a
//! keyword payload field indexed as Qdrant's tenant key. The embedding model
//! is kept in the collection's metadata, so another model is refused.
//!
//! Qdrant has no multi-operation transactions: `replace_source` upserts the
//! new chunks before it deletes the stale ones, so a failure in between
//! leaves extra chunks (removed by the next ingest), never missing ones.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use qdrant_client::qdrant::{
    self as q, Condition, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeletePointsBuilder, FieldType, KeywordIndexParamsBuilder, Modifier, NamedVectors, PointStruct, PointsIdsList,
    QueryPointsBuilder, ScrollPointsBuilder, SetPayloadPointsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder, VectorsConfigBuilder,
};
use qdrant_client::{Payload, Qdrant};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::error::MemoryError;
use crate::sparse;
use crate::store::{
    CollectionInfo, Filter, Hit, Record, SourceChange, VectorStore, check_collection_name, check_dimension,
};

const BACKEND: &str = "qdrant";
const DENSE: &str = "dense";
const SPARSE: &str = "bm25";
const MODEL_KEY: &str = "crewgraph_model";
/// Points written per upsert request.
const UPSERT_BATCH: usize = 256;

pub struct QdrantStore {
    client: Qdrant,
}

fn err(e: impl std::fmt::Display) -> MemoryError {
    MemoryError::store(BACKEND, e)
}

fn scope(tenant: &str, source: Option<&str>) -> Vec<Condition> {
    let mut conditions = vec![Condition::matches("tenant", tenant.to_string())];
    if let Some(source) = source {
        conditions.push(Condition::matches("source", source.to_string()));
    }
    conditions
}

/// Our filter as Qdrant conditions: `source` and `title` are payload fields,
/// everything else lives under `metadata.`.
fn conditions(tenant: &str, filter: &Filter) -> Result<q::Filter, MemoryError> {
    let mut must = scope(tenant, None);
    for (key, values) in filter.alternatives() {
        let field = match key {
            "source" | "title" => key.to_string(),
            _ => format!("metadata.{key}"),
        };
        let mut any = Vec::with_capacity(values.len());
        for v in values {
            any.push(match v {
                Value::String(s) => Condition::matches(field.clone(), s.clone()),
                Value::Bool(b) => Condition::matches(field.clone(), *b),
                Value::Number(n) if n.is_i64() => Condition::matches(field.clone(), n.as_i64().unwrap_or_default()),
                other => {
                    return Err(MemoryError::Filter(format!(
                        "field `{key}`: Qdrant matches strings, integers and booleans, not {other}"
                    )));
                }
            });
        }
        must.push(Condition::from(q::Filter::should(any)));
    }
    Ok(q::Filter::must(must))
}

fn point_uuid(id: Option<&q::PointId>) -> Option<Uuid> {
    match id?.point_id_options.as_ref()? {
        q::point_id::PointIdOptions::Uuid(s) => Uuid::parse_str(s).ok(),
        q::point_id::PointIdOptions::Num(_) => None,
    }
}

fn payload(tenant: &str, source: &str, r: &Record) -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("tenant".into(), json!(tenant));
    p.insert("source".into(), json!(source));
    p.insert("title".into(), json!(r.title));
    p.insert("position".into(), json!(r.position));
    p.insert("tokens".into(), json!(r.tokens));
    p.insert("content_hash".into(), json!(r.content_hash));
    p.insert("text".into(), json!(r.text));
    p.insert("metadata".into(), Value::Object(r.metadata.clone()));
    p
}

fn hit(
    id: Option<&q::PointId>,
    payload: HashMap<String, q::Value>,
    vectors: Option<q::VectorsOutput>,
    score: f32,
) -> Option<Hit> {
    let mut p: Map<String, Value> = payload.into_iter().map(|(k, v)| (k, v.into_json())).collect();
    let text = |p: &mut Map<String, Value>, k: &str| match p.remove(k) {
        Some(Value::String(s)) => s,
        _ => String::new(),
    };
    let number = |p: &Map<String, Value>, k: &str| p.get(k).and_then(Value::as_u64).unwrap_or_default() as usize;
    let vector = vectors
        .and_then(|v| v.get_vector_by_name(DENSE))
        .and_then(|v| match v {
            q::vector_output::Vector::Dense(d) => Some(d.data),
            _ => None,
        })
        .unwrap_or_default();
    Some(Hit {
        id: point_uuid(id)?,
        source: text(&mut p, "source"),
        title: text(&mut p, "title"),
        position: number(&p, "position"),
        tokens: number(&p, "tokens"),
        text: text(&mut p, "text"),
        metadata: match p.remove("metadata") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        },
        score,
        vector,
    })
}

impl QdrantStore {
    /// Connects to the server at `url` (gRPC, usually port 6334), with the API
    /// key from `QDRANT_API_KEY` when set, and checks it answers.
    pub async fn connect(url: &str) -> Result<Self, MemoryError> {
        let mut builder = Qdrant::from_url(url);
        if let Ok(key) = std::env::var("QDRANT_API_KEY") {
            builder = builder.api_key(key);
        }
        let client = builder.build().map_err(err)?;
        client.health_check().await.map_err(|e| err(format!("{url} does not answer: {e}")))?;
        Ok(Self { client })
    }

    async fn scroll_ids(&self, collection: &str, filter: q::Filter) -> Result<Vec<Uuid>, MemoryError> {
        let mut ids = Vec::new();
        let mut offset: Option<q::PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(collection)
                .filter(filter.clone())
                .limit(1024)
                .with_payload(false)
                .with_vectors(false);
            if let Some(o) = offset.take() {
                request = request.offset(o);
            }
            let page = self.client.scroll(request).await.map_err(err)?;
            ids.extend(page.result.iter().filter_map(|p| point_uuid(p.id.as_ref())));
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(ids),
            }
        }
    }

    async fn delete_ids(&self, collection: &str, ids: &[Uuid]) -> Result<(), MemoryError> {
        for chunk in ids.chunks(1024) {
            let list = PointsIdsList { ids: chunk.iter().map(|id| q::PointId::from(id.to_string())).collect() };
            self.client
                .delete_points(DeletePointsBuilder::new(collection).points(list).wait(true))
                .await
                .map_err(err)?;
        }
        Ok(())
    }

    /// The points nearest to `input` in the named vector, with payload and vectors.
    async fn nearest(
        &self,
        collection: &str,
        input: VectorInput,
        using: &str,
        tenant: &str,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(collection)
                    .query(q::Query::new_nearest(input))
                    .using(using)
                    .filter(conditions(tenant, filter)?)
                    .limit(limit as u64)
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(err)?;
        Ok(response.result.into_iter().filter_map(|p| hit(p.id.as_ref(), p.payload, p.vectors, p.score)).collect())
    }

    async fn require(&self, name: &str) -> Result<CollectionInfo, MemoryError> {
        self.collection(name).await?.ok_or_else(|| MemoryError::NoCollection(name.to_string()))
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create_collection(
        &self,
        name: &str,
        dimension: usize,
        model: &str,
    ) -> Result<CollectionInfo, MemoryError> {
        check_collection_name(name)?;
        if !self.client.collection_exists(name).await.map_err(err)? {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(DENSE, VectorParamsBuilder::new(dimension as u64, q::Distance::Cosine));
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(SPARSE, SparseVectorParamsBuilder::default().modifier(Modifier::Idf));
            let metadata: HashMap<String, Value> = HashMap::from([(MODEL_KEY.to_string(), json!(model))]);
            let created = self
                .client
                .create_collection(
                    CreateCollectionBuilder::new(name)
                        .vectors_config(vectors)
                        .sparse_vectors_config(sparse)
                        .metadata(metadata),
                )
                .await;
            // Another process may have created it meanwhile: re-read below either way.
            if let Err(e) = created
                && !self.client.collection_exists(name).await.map_err(err)?
            {
                return Err(err(e));
            }
            for field in ["tenant", "source"] {
                let params = KeywordIndexParamsBuilder::default().is_tenant(field == "tenant");
                self.client
                    .create_field_index(
                        CreateFieldIndexCollectionBuilder::new(name, field, FieldType::Keyword)
                            .field_index_params(params)
                            .wait(true),
                    )
                    .await
                    .map_err(err)?;
            }
        }
        let info = self.require(name).await?;
        info.check_fits(dimension, model)?;
        Ok(info)
    }

    async fn collection(&self, name: &str) -> Result<Option<CollectionInfo>, MemoryError> {
        check_collection_name(name)?;
        if !self.client.collection_exists(name).await.map_err(err)? {
            return Ok(None);
        }
        let info = self.client.collection_info(name).await.map_err(err)?;
        let config = info.result.and_then(|r| r.config).ok_or_else(|| err(format!("{name}: no configuration")))?;
        let dimension = config
            .params
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config)
            .and_then(|c| match c {
                q::vectors_config::Config::ParamsMap(m) => m.map.get(DENSE).map(|p| p.size as usize),
                q::vectors_config::Config::Params(_) => None,
            })
            .ok_or_else(|| {
                err(format!("collection `{name}` has no `{DENSE}` vector: it was not created by crewgraph"))
            })?;
        let model = config.metadata.get(MODEL_KEY).cloned().map(q::Value::into_json).and_then(|v| match v {
            Value::String(s) => Some(s),
            _ => None,
        });
        Ok(Some(CollectionInfo { name: name.to_string(), dimension, model: model.unwrap_or_default() }))
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, MemoryError> {
        let names = self.client.list_collections().await.map_err(err)?;
        let mut out = Vec::new();
        for c in names.collections {
            if let Ok(Some(info)) = self.collection(&c.name).await {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn drop_collection(&self, name: &str) -> Result<bool, MemoryError> {
        if !self.client.collection_exists(name).await.map_err(err)? {
            return Ok(false);
        }
        self.client.delete_collection(name).await.map_err(err)?;
        Ok(true)
    }

    async fn stored_ids(&self, collection: &str, tenant: &str, source: &str) -> Result<HashSet<Uuid>, MemoryError> {
        if !self.client.collection_exists(collection).await.map_err(err)? {
            return Ok(HashSet::new());
        }
        Ok(self.scroll_ids(collection, q::Filter::must(scope(tenant, Some(source)))).await?.into_iter().collect())
    }

    async fn replace_source(
        &self,
        collection: &str,
        tenant: &str,
        source: &str,
        records: Vec<Record>,
    ) -> Result<SourceChange, MemoryError> {
        let info = self.require(collection).await?;
        for r in &records {
            if let Some(v) = &r.vector {
                check_dimension(&info, v)?;
            }
        }
        let existing: HashSet<Uuid> = self.stored_ids(collection, tenant, source).await?;
        let mut change = SourceChange::default();
        let mut points = Vec::new();
        let mut keep = HashSet::new();
        for r in &records {
            keep.insert(r.id);
            let p = payload(tenant, source, r);
            if existing.contains(&r.id) {
                change.kept += 1;
                self.client
                    .set_payload(
                        SetPayloadPointsBuilder::new(collection, Payload::from(p))
                            .points_selector(PointsIdsList { ids: vec![q::PointId::from(r.id.to_string())] })
                            .wait(false),
                    )
                    .await
                    .map_err(err)?;
                continue;
            }
            let Some(vector) = &r.vector else {
                return Err(err(format!("chunk {} of {source} is new but came without a vector", r.position)));
            };
            let sparse: Vec<(u32, f32)> = sparse::document_vector(&format!("{} {}", r.title, r.text));
            let vectors = NamedVectors::default()
                .add_vector(DENSE, Vector::new_dense(vector.clone()))
                .add_vector(SPARSE, Vector::from(sparse.as_slice()));
            points.push(PointStruct::new(r.id.to_string(), vectors, Payload::from(p)));
            change.added += 1;
        }
        for batch in points.chunks(UPSERT_BATCH) {
            self.client
                .upsert_points(UpsertPointsBuilder::new(collection, batch.to_vec()).wait(true))
                .await
                .map_err(err)?;
        }
        let stale: Vec<Uuid> = existing.difference(&keep).copied().collect();
        change.removed = stale.len();
        self.delete_ids(collection, &stale).await?;
        Ok(change)
    }

    async fn delete_source(&self, collection: &str, tenant: &str, source: &str) -> Result<usize, MemoryError> {
        let ids: Vec<Uuid> = self.stored_ids(collection, tenant, source).await?.into_iter().collect();
        self.delete_ids(collection, &ids).await?;
        Ok(ids.len())
    }

    async fn count(&self, collection: &str, tenant: Option<&str>) -> Result<usize, MemoryError> {
        self.require(collection).await?;
        let mut request = CountPointsBuilder::new(collection).exact(true);
        if let Some(t) = tenant {
            request = request.filter(q::Filter::must(scope(t, None)));
        }
        let count = self.client.count(request).await.map_err(err)?;
        Ok(count.result.map(|r| r.count as usize).unwrap_or_default())
    }

    async fn dense(
        &self,
        collection: &str,
        tenant: &str,
        vector: &[f32],
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        let info = self.require(collection).await?;
        check_dimension(&info, vector)?;
        self.nearest(collection, VectorInput::new_dense(vector.to_vec()), DENSE, tenant, filter, limit).await
    }

    async fn lexical(
        &self,
        collection: &str,
        tenant: &str,
        text: &str,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Hit>, MemoryError> {
        self.require(collection).await?;
        let terms = sparse::query_vector(text);
        if terms.is_empty() || limit == 0 {
            return Ok(vec![]);
        }
        self.nearest(collection, VectorInput::from(terms.as_slice()), SPARSE, tenant, filter, limit).await
    }
}
