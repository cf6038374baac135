//! Retrieval in definitions: the `retrieve` node kind (query template ->
//! scored chunks in a channel) and `retrieve` tools bound to a collection
//! that agents call with a query of their own.
//!
//! ```yaml
//! nodes:
//!   find:
//!     kind: retrieve
//!     collection: docs
//!     query: "{{ state.question }}"
//!     top_k: 5                 # default 5
//!     mode: hybrid             # hybrid (default) | dense | sparse
//!     filter: {lang: en}       # payload fields; a list matches any of its values
//!     score_threshold: 0.2     # least cosine similarity
//!     mmr: 0.7                 # diversify (1.0 = pure relevance)
//!     token_budget: 1500       # results fit in this many tokens
//!     tenant: "{{ state.tenant }}"  # default `default`
//!     into: context
//! tools:
//!   search_docs:
//!     description: Search the product documentation
//!     retrieve: {collection: docs, top_k: 4}
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use crewgraph_engine::{Node, NodeContext, NodeError, NodeOutput, Tool, ToolCall};
use crewgraph_memory::{DEFAULT_TENANT, Filter, MemoryHandle, ScoredChunk, SearchMode, SearchRequest};
use serde_json::{Map, Value, json};

use crate::error::SpecError;
use crate::nodes::{BuildCtx, BuiltNode, template};
use crate::template::{Scope, ValueTemplate};
use crate::yaml::{Fields, Yaml};

/// The search settings a node or tool carries; the query comes at run time.
#[derive(Debug, Clone)]
pub struct Settings {
    pub collection: String,
    pub top_k: usize,
    pub mode: SearchMode,
    pub filter: Filter,
    pub score_threshold: Option<f32>,
    pub mmr: Option<f32>,
    pub token_budget: Option<usize>,
}

impl Settings {
    /// Reads the search keys of `f` (all but `query`, `tenant` and `into`).
    pub fn read(f: &mut Fields<'_>) -> Result<Self, SpecError> {
        let collection_at = f.req("collection")?;
        let collection = f.req_str("collection")?.to_string();
        crewgraph_memory::store::check_collection_name(&collection)
            .map_err(|e| f.err(collection_at, format!("`collection`: {e}")))?;
        let top_k = f.opt_u64("top_k")?.unwrap_or(5) as usize;
        let mode_at = f.opt("mode");
        let mode = match f.opt_str("mode")? {
            None | Some("hybrid") => SearchMode::Hybrid,
            Some("dense") => SearchMode::Dense,
            Some("sparse") => SearchMode::Sparse,
            Some(other) => {
                return Err(f.err(
                    mode_at.unwrap_or(f.node),
                    format!("unknown `mode` `{other}` (expected hybrid, dense or sparse)"),
                ));
            }
        };
        let filter = match f.opt("filter") {
            Some(at) => Filter::from_json(&at.to_json()).map_err(|e| f.err(at, e.to_string()))?,
            None => Filter::default(),
        };
        let score_threshold = f.opt_f64("score_threshold")?.map(|v| v as f32);
        let mmr_at = f.opt("mmr");
        let mmr = f.opt_f64("mmr")?.map(|v| v as f32);
        if let (Some(m), Some(at)) = (mmr, mmr_at)
            && !(0.0..=1.0).contains(&m)
        {
            return Err(f.err(at, "`mmr`: a trade-off between 0.0 (diverse) and 1.0 (relevant)"));
        }
        let token_budget = f.opt_u64("token_budget")?.map(|v| v as usize);
        Ok(Self { collection, top_k, mode, filter, score_threshold, mmr, token_budget })
    }

    fn request(&self, query: String, tenant: String, top_k: Option<usize>) -> SearchRequest {
        SearchRequest {
            tenant,
            filter: self.filter.clone(),
            mode: self.mode,
            score_threshold: self.score_threshold,
            mmr_lambda: self.mmr,
            token_budget: self.token_budget,
            ..SearchRequest::new(query, top_k.unwrap_or(self.top_k))
        }
    }

    /// Runs the search; a missing collection or store trouble is the node's failure.
    pub async fn search(
        &self,
        memory: &MemoryHandle,
        query: String,
        tenant: String,
        top_k: Option<usize>,
    ) -> Result<Vec<ScoredChunk>, NodeError> {
        let memory = memory.get().await.map_err(|e| NodeError::fatal(e.to_string()))?;
        memory.search(&self.collection, &self.request(query, tenant, top_k)).await.map_err(|e| match e {
            crewgraph_memory::MemoryError::Store { .. } => NodeError::transient(e.to_string()),
            other => NodeError::fatal(other.to_string()),
        })
    }
}

/// What a prompt needs of a chunk.
pub fn chunk_json(c: &ScoredChunk) -> Value {
    json!({"source": c.source, "title": c.title, "text": c.text, "score": c.score})
}

pub struct RetrieveNode {
    settings: Settings,
    query: ValueTemplate,
    tenant: Option<ValueTemplate>,
    output: String,
    memory: MemoryHandle,
}

pub fn build(f: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
    let settings = Settings::read(f)?;
    let query_at = f.req("query")?;
    let query = template(f, query_at, ctx.channels)?;
    let tenant = match f.opt("tenant") {
        Some(at) => Some(template(f, at, ctx.channels)?),
        None => None,
    };
    let output_at = f.req("into")?;
    let output = f.req_str("into")?.to_string();
    check_channel(f, output_at, &output, ctx.channels)?;
    Ok(BuiltNode::new(Arc::new(RetrieveNode { settings, query, tenant, output, memory: ctx.registry.memory() })))
}

fn check_channel(f: &Fields<'_>, at: &Yaml, name: &str, channels: &BTreeSet<String>) -> Result<(), SpecError> {
    if channels.contains(name) { Ok(()) } else { Err(f.err(at, format!("`into` names unknown channel `{name}`"))) }
}

fn rendered_string(v: Value, what: &str) -> Result<String, NodeError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Null => Err(NodeError::fatal(format!("`{what}` rendered to null"))),
        other => Ok(other.to_string()),
    }
}

#[async_trait]
impl Node for RetrieveNode {
    fn kind(&self) -> &str {
        "retrieve"
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput, NodeError> {
        let scope = Scope::of_task(&ctx);
        let query = rendered_string(self.query.render(&scope).map_err(NodeError::fatal)?, "query")?;
        let tenant = match &self.tenant {
            Some(t) => rendered_string(t.render(&scope).map_err(NodeError::fatal)?, "tenant")?,
            None => DEFAULT_TENANT.to_string(),
        };
        let chunks = self.settings.search(&self.memory, query.clone(), tenant, None).await?;
        ctx.emit(
            "memory.retrieved",
            json!({"collection": self.settings.collection, "query": query, "results": chunks.len()}),
        );
        let mut writes = Map::new();
        writes.insert(self.output.clone(), Value::Array(chunks.iter().map(chunk_json).collect()));
        Ok(NodeOutput::Writes { writes, goto: None })
    }
}

/// A tool that searches one collection with the query the agent writes.
pub struct RetrieveTool {
    name: String,
    description: String,
    settings: Settings,
    memory: MemoryHandle,
}

impl RetrieveTool {
    pub fn new(name: &str, description: String, settings: Settings, memory: MemoryHandle) -> Self {
        Self { name: name.to_string(), description, settings, memory }
    }
}

/// Reads a `tools:` entry with a `retrieve:` section.
pub fn declare_tool(file: &str, name: &str, decl: &Yaml, memory: MemoryHandle) -> Result<Arc<dyn Tool>, SpecError> {
    let what = format!("tool `{name}`");
    let mut f = Fields::new(file, decl, &what)?;
    let description = f.opt_str("description")?.map(str::to_string);
    let section = f.req("retrieve")?;
    let mut r = Fields::new(file, section, "`retrieve`")?;
    let settings = Settings::read(&mut r)?;
    r.finish()?;
    f.finish()?;
    let description = description
        .unwrap_or_else(|| format!("Search the `{}` collection for passages about a query", settings.collection));
    Ok(Arc::new(RetrieveTool::new(name, description, settings, memory)))
}

#[async_trait]
impl Tool for RetrieveTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for, in your own words"},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 20}
            },
            "required": ["query"]
        })
    }

    async fn call(&self, args: Value, _call: &ToolCall) -> Result<Value, NodeError> {
        let query = args.get("query").and_then(Value::as_str).unwrap_or_default().to_string();
        if query.trim().is_empty() {
            return Err(NodeError::fatal("`query` must be a non-empty string"));
        }
        let top_k = args.get("top_k").and_then(Value::as_u64).map(|k| k.clamp(1, 20) as usize);
        let chunks = self.settings.search(&self.memory, query, DEFAULT_TENANT.to_string(), top_k).await?;
        Ok(Value::Array(chunks.iter().map(chunk_json).collect()))
    }
}
