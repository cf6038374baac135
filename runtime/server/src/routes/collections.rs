//! `/v1/collections/{name}`: documents into a tenant's collection, and searches of it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use crewgraph_memory::{Document, MemoryError, SearchRequest};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;

fn memory_error(e: MemoryError) -> ApiError {
    match e {
        MemoryError::NoCollection(name) => ApiError::not_found("collection", &name),
        MemoryError::InvalidName(_) | MemoryError::Filter(_) | MemoryError::Document { .. } => {
            ApiError::invalid(e.to_string())
        }
        MemoryError::Dimension { .. } | MemoryError::ModelMismatch { .. } => {
            ApiError::conflict("embedding_mismatch", e.to_string())
        }
        MemoryError::Store { .. } | MemoryError::Embed(_) | MemoryError::Model { .. } => {
            tracing::warn!(error = %e, "memory unavailable");
            ApiError::unavailable(e.to_string())
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentIn {
    /// Names the document within the collection: the same source again replaces its chunks.
    pub source: String,
    pub text: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDocuments {
    pub documents: Vec<DocumentIn>,
}

/// Chunks, embeds and stores each document for the caller's tenant;
/// answers what changed per source.
#[utoipa::path(post, path = "/v1/collections/{name}/documents", operation_id = "add_documents", tag = "collections", params(("name" = String, Path)),
    request_body = AddDocuments,
    responses((status = 201, description = "per source: chunk `ids`, `added`, `unchanged`, `removed`", body = Object),
              (status = 409, description = "the collection holds another embedding model", body = crate::openapi::ErrorDoc),
              (status = 422, body = crate::openapi::ErrorDoc)))]
pub async fn add_documents(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require(Role::Submit)?;
    let body: AddDocuments = crate::extract::parse_body(body)?;
    if body.documents.is_empty() {
        return Err(ApiError::invalid("`documents` is empty"));
    }
    let memory = state.definitions.registry.memory();
    let memory = memory.get().await.map_err(memory_error)?;
    let mut results = Vec::new();
    for (i, d) in body.documents.into_iter().enumerate() {
        if d.source.trim().is_empty() || d.text.trim().is_empty() {
            return Err(ApiError::invalid(format!("documents[{i}]: `source` and `text` must not be empty"))
                .details(json!({"path": format!("documents[{i}]")})));
        }
        let doc = Document { source: d.source.clone(), text: d.text, metadata: d.metadata };
        let prepared = memory.prepare(&name, &caller.tenant, &doc).await.map_err(memory_error)?;
        let ids: Vec<String> = prepared.ids().iter().map(|id| id.to_string()).collect();
        let change = memory.store_prepared(prepared, &|_| {}).await.map_err(memory_error)?;
        results.push(json!({"source": d.source, "ids": ids, "added": change.added, "unchanged": change.kept,
                            "removed": change.removed}));
    }
    Ok((StatusCode::CREATED, Json(json!({"documents": results}))))
}

/// A search of the caller's tenant's chunks (the body's `tenant`, if any, is ignored).
#[utoipa::path(post, path = "/v1/collections/{name}/query", operation_id = "query_collection", tag = "collections", params(("name" = String, Path)),
    request_body(content = Object, description = "`query`, `top_k`, `filter`, `mode`, `fusion`, `alpha`, `score_threshold`, `mmr_lambda`, `token_budget`"),
    responses((status = 200, description = "`results`: chunks with `source`, `text`, `score`", body = Object),
              (status = 404, body = crate::openapi::ErrorDoc), (status = 422, body = crate::openapi::ErrorDoc)))]
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let mut req: SearchRequest = crate::extract::parse_body(body)?;
    req.tenant = caller.tenant.clone();
    req.top_k = req.top_k.min(100);
    let memory = state.definitions.registry.memory();
    let memory = memory.get().await.map_err(memory_error)?;
    let results = memory.search(&name, &req).await.map_err(memory_error)?;
    Ok(Json(json!({"results": results})))
}
