//! `/v1/graphs`: the definitions this server runs, and validation of new ones.

use axum::Json;
use axum::extract::State;
use crewgraph_spec::parse_graph;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[utoipa::path(get, path = "/v1/graphs", operation_id = "list_graphs", tag = "graphs",
    responses((status = 200, description = "name, description, inputs, channels and nodes of each", body = Vec<Object>)))]
pub async fn list(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<Value>> {
    let mut graphs = Vec::new();
    for name in state.definitions.names() {
        match state.definitions.get(&name) {
            Some(Ok(def)) => graphs.push(json!({
                "name": name,
                "description": def.description,
                "required_inputs": def.required_inputs,
                "channels": def.graph.channels.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
                "nodes": def.graph.nodes.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
            })),
            Some(Err(errors)) => graphs.push(json!({"name": name, "errors": errors.to_string()})),
            None => {}
        }
    }
    Ok(Json(Value::Array(graphs)))
}

/// Validates a YAML (or JSON, which is YAML) definition sent as the body:
/// `{"valid": true, "name"}` or 422 with every error's line and column.
#[utoipa::path(post, path = "/v1/graphs/validate", operation_id = "validate_graph", tag = "graphs",
    request_body(content = String, content_type = "application/yaml"),
    responses((status = 200, description = "`{\"valid\": true, \"name\"}`", body = Object),
              (status = 422, description = "every error with line and column in `details.errors`", body = crate::openapi::ErrorDoc)))]
pub async fn validate(State(state): State<AppState>, _caller: Caller, body: String) -> ApiResult<Json<Value>> {
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("send the definition (YAML or JSON) as the request body"));
    }
    match parse_graph("request", &body, &state.definitions.registry, Some(&state.definitions.catalog()), 0) {
        Ok(def) => Ok(Json(json!({"valid": true, "name": def.graph.name}))),
        Err(errors) => Err(ApiError::invalid(format!("{} error(s) in the definition", errors.0.len())).details(
            json!({"errors": errors.0.iter().map(|e| json!({"line": e.line, "column": e.column, "message": e.message})).collect::<Vec<_>>()}),
        )),
    }
}
