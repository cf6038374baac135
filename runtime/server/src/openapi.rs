//! The OpenAPI document (`GET /openapi.json`), generated from the handlers'
//! `#[utoipa::path]` attributes as the router is built, so the document and
//! the routes cannot drift apart. The objects below describe the JSON the
//! handlers write (`crewgraph_engine::api`); they are documentation only.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `queued`, `running`, `waiting`, `succeeded`, `failed` or `cancelled`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatusDoc {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

/// A run.
#[derive(Serialize, ToSchema)]
#[schema(as = Run)]
pub struct RunDoc {
    pub id: String,
    pub status: RunStatusDoc,
    pub graph: String,
    pub thread_id: String,
    pub input: Value,
    /// The graph's output channels once it succeeded.
    pub output: Value,
    /// `{"message", "node"}` when it failed or was cancelled.
    pub error: Value,
    /// Tokens by node and model.
    pub usage: Value,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
#[schema(as = RunPage)]
pub struct RunPageDoc {
    pub runs: Vec<RunDoc>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A human step: pending until decided.
#[derive(Serialize, ToSchema)]
#[schema(as = Approval)]
pub struct ApprovalDoc {
    pub id: String,
    pub run_id: String,
    pub thread_id: String,
    pub node: String,
    /// What the reviewer is shown.
    pub payload: Value,
    /// Allowed actions: `approve`, `reject`, `edit`, `respond`.
    pub actions: Vec<String>,
    /// `pending`, `decided` or `expired`.
    pub status: String,
    pub decision: Option<Value>,
    pub created_at: String,
    pub decided_at: Option<String>,
    pub expires_at: Option<String>,
}

/// A checkpoint of a thread.
#[derive(Serialize, ToSchema)]
#[schema(as = Checkpoint)]
pub struct CheckpointDoc {
    pub thread_id: String,
    pub checkpoint_id: String,
    pub parent_id: Option<String>,
    pub step: i64,
    /// `input`, `loop`, `update` or `fork`.
    pub source: String,
    /// The state's channels.
    pub values: Value,
    pub versions: Value,
    /// Nodes that run next.
    pub next: Vec<String>,
    pub metadata: Value,
    pub created_at: String,
}

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorDoc {
    pub error: ErrorDetailDoc,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
pub struct ErrorDetailDoc {
    /// Machine-readable: `not_found`, `graph_not_found`, `invalid_input`, `thread_busy`, ...
    pub code: String,
    pub message: String,
    /// `path` of an invalid field, the conflicting `run_id`, ...
    pub details: Option<Value>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "crewgraph", description = "Durable agent runs: submit, stream, approve."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(RunDoc, RunPageDoc, ApprovalDoc, CheckpointDoc, ErrorDoc, ErrorDetailDoc, RunStatusDoc))
)]
pub struct ApiDoc;
