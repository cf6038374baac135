//! `/v1/graphs`: the definitions a tenant can run (the server's files and
//! its own registered ones), registration, and validation.
//!
//! Registering needs the `admin` role: a definition chooses which tools and
//! hosts its runs call. Names of file definitions are read-only; a registered
//! name gets a new version each time its text changes, and a run keeps the
//! version it started with.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crewgraph_spec::{GraphDef, SpecErrors, parse_graph};
use crewgraph_store::{Registered, RegisteredGraph};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::{Caller, Role};
use crate::definitions::Lookup;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiText;
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/graphs", operation_id = "list_graphs", tag = "graphs",
    responses((status = 200, description = "name, description, inputs, channels and nodes of each; `source` is `file` or `registered` (with `version`)", body = Vec<Object>)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let mut graphs = Vec::new();
    for name in state.definitions.file_names() {
        graphs.push(summary(&name, None, state.definitions.file(&name)));
    }
    for g in state.definitions.registered(&caller.tenant).await? {
        if !state.definitions.is_file(&g.name) {
            graphs.push(summary(&g.name, Some(&g), state.definitions.compile(&g).await?));
        }
    }
    Ok(Json(Value::Array(graphs)))
}

/// One definition, with its text when it was registered.
#[utoipa::path(get, path = "/v1/graphs/{name}", operation_id = "get_graph", tag = "graphs",
    params(("name" = String, Path, description = "graph name")),
    responses((status = 200, description = "as in the list, plus `definition` (the registered text)", body = Object),
              (status = 404, description = "no such graph for this tenant", body = crate::openapi::ErrorDoc)))]
pub async fn get(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    if state.definitions.is_file(&name) {
        return Ok(Json(summary(&name, None, state.definitions.file(&name))));
    }
    let Some(g) = state.definitions.store().registered_graph(&caller.tenant, &name, None).await? else {
        return Err(ApiError::not_found("graph", &name));
    };
    let mut body = summary(&name, Some(&g), state.definitions.compile(&g).await?);
    if let Value::Object(fields) = &mut body {
        fields.insert("definition".into(), Value::String(g.source));
    }
    Ok(Json(body))
}

/// Registers a YAML (or JSON, which is YAML) definition sent as the body.
#[utoipa::path(post, path = "/v1/graphs", operation_id = "register_graph", tag = "graphs",
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 201, description = "a new version: `{\"name\", \"version\", \"digest\", \"created_at\"}`", body = Object),
              (status = 200, description = "the latest version already has this text: that version", body = Object),
              (status = 403, description = "the key lacks the `admin` role", body = crate::openapi::ErrorDoc),
              (status = 409, description = "the name belongs to a definition file of the server", body = crate::openapi::ErrorDoc),
              (status = 422, description = "every error with line and column in `details.errors`", body = crate::openapi::ErrorDoc)))]
pub async fn register(State(state): State<AppState>, caller: Caller, ApiText(body): ApiText) -> ApiResult<Response> {
    caller.require(Role::Admin)?;
    let def = compile(&state, &caller.tenant, &body).await?;
    let name = def.graph.name.clone();
    check_name(&name)?;
    if state.definitions.is_file(&name) {
        return Err(ApiError::conflict(
            "graph_exists",
            format!("`{name}` is defined by the server's definition files; register it under another name"),
        ));
    }
    let digest = crate::auth::hex(&Sha256::digest(body.as_bytes()));
    let (status, graph) = match state.definitions.store().register_graph(&caller.tenant, &name, &body, &digest).await? {
        Registered::Created(g) => (StatusCode::CREATED, g),
        Registered::Unchanged(g) => (StatusCode::OK, g),
    };
    tracing::info!(graph = %name, version = graph.version, created = status == StatusCode::CREATED, "graph registered");
    let body =
        json!({"name": graph.name, "version": graph.version, "digest": graph.digest, "created_at": graph.created_at});
    Ok((status, Json(body)).into_response())
}

/// Validates a YAML (or JSON, which is YAML) definition sent as the body:
/// `{"valid": true, "name"}` or 422 with every error's line and column.
#[utoipa::path(post, path = "/v1/graphs/validate", operation_id = "validate_graph", tag = "graphs",
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, description = "`{\"valid\": true, \"name\"}`", body = Object),
              (status = 422, description = "every error with line and column in `details.errors`", body = crate::openapi::ErrorDoc)))]
pub async fn validate(State(state): State<AppState>, caller: Caller, ApiText(body): ApiText) -> ApiResult<Json<Value>> {
    let def = compile(&state, &caller.tenant, &body).await?;
    Ok(Json(json!({"valid": true, "name": def.graph.name})))
}

/// The definition a new run of `name` uses, or the API error that says why there is none.
pub(crate) async fn for_new_run(state: &AppState, tenant: &str, name: &str) -> ApiResult<Arc<GraphDef>> {
    match state.definitions.latest(tenant, name).await? {
        Lookup::Found(def) => Ok(def),
        Lookup::Unknown => {
            let mut known = state.definitions.file_names();
            known.extend(state.definitions.registered(tenant).await?.into_iter().map(|g| g.name));
            known.sort();
            known.dedup();
            Err(ApiError::new(StatusCode::NOT_FOUND, "graph_not_found", format!("graph `{name}` not found"))
                .details(json!({"graph": name, "known": known})))
        }
        Lookup::Invalid(errors) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "definition_invalid",
            format!("the definition of `{name}` does not compile"),
        )
        .details(json!({"errors": errors.to_string()}))),
    }
}

/// Compiles a definition from a request against the tenant's catalog (for its subgraphs).
async fn compile(state: &AppState, tenant: &str, body: &str) -> ApiResult<GraphDef> {
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("send the definition (YAML or JSON) as the request body"));
    }
    let catalog = state.definitions.catalog_of(tenant).await?;
    parse_graph("request", body, &state.definitions.registry, Some(&catalog), 0).map_err(spec_errors)
}

fn spec_errors(errors: SpecErrors) -> ApiError {
    ApiError::invalid(format!("{} error(s) in the definition", errors.0.len())).details(json!({
        "errors": errors.0.iter().map(|e| json!({"line": e.line, "column": e.column, "message": e.message})).collect::<Vec<_>>()
    }))
}

/// Names travel in URLs and in `registered:<name>@<version>` references.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "graph name `{name}`: use 1 to 128 letters, digits, `-`, `_` or `.` to register it"
        )))
    }
}

fn summary(name: &str, registered: Option<&RegisteredGraph>, lookup: Lookup) -> Value {
    let mut body = match lookup {
        Lookup::Found(def) => json!({
            "name": name,
            "description": def.description,
            "required_inputs": def.required_inputs,
            "channels": def.graph.channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            "nodes": def.graph.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
        }),
        Lookup::Invalid(errors) => json!({"name": name, "errors": errors.to_string()}),
        Lookup::Unknown => json!({"name": name}),
    };
    if let Value::Object(fields) = &mut body {
        match registered {
            Some(g) => {
                fields.insert("source".into(), json!("registered"));
                fields.insert("version".into(), json!(g.version));
                fields.insert("created_at".into(), json!(g.created_at));
            }
            None => {
                fields.insert("source".into(), json!("file"));
            }
        }
    }
    body
}
