//! The node-kind registry: each kind reads its own keys from the YAML and
//! builds an engine [`Node`]. Later crates register `llm`, `agent`, `retrieve`.

pub mod agent;
pub mod approval;
pub(crate) mod llm;
mod map;
mod set;
mod subgraph;
mod tool;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crewgraph_engine::Node;

use crate::catalog::Catalog;
use crate::error::SpecError;
use crate::yaml::{Fields, Yaml};

pub use tool::builtin_tool;

/// What a node builder may consult.
pub struct BuildCtx<'a> {
    pub file: &'a str,
    pub channels: &'a BTreeSet<String>,
    pub registry: &'a Registry,
    pub catalog: Option<&'a Catalog>,
    /// Tools declared in the file's `tools:` section, by name.
    pub tools: &'a BTreeMap<String, Arc<dyn crewgraph_engine::Tool>>,
    /// Models declared in the file's `models:` section, by name.
    pub models: &'a crate::models::Models,
    /// Subgraph nesting depth, to refuse a graph that includes itself.
    pub depth: u32,
}

/// Reads the kind's keys from `fields` and builds the node.
pub type NodeKind = fn(&mut Fields<'_>, &BuildCtx<'_>) -> Result<BuiltNode, SpecError>;

/// A built node plus the node names it may `goto` (for reachability checks).
pub struct BuiltNode {
    pub node: Arc<dyn Node>,
    pub may_goto: Vec<String>,
}

impl BuiltNode {
    pub fn new(node: Arc<dyn Node>) -> Self {
        Self { node, may_goto: vec![] }
    }
}

/// Clones share the memory handle.
#[derive(Clone)]
pub struct Registry {
    kinds: BTreeMap<String, NodeKind>,
    /// The memory `retrieve` nodes and tools and crews with knowledge or
    /// `memory: true` search; opened on first use.
    memory: crewgraph_memory::MemoryHandle,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// The built-in kinds: `set`, `approval`, `map`, `subgraph`, `tool`, `llm`, `agent`, `retrieve`.
    pub fn builtin() -> Self {
        let mut r = Registry { kinds: BTreeMap::new(), memory: crewgraph_memory::MemoryHandle::from_env() };
        r.register("set", set::build);
        r.register("approval", approval::build);
        r.register("map", map::build);
        r.register("subgraph", subgraph::build);
        r.register("tool", tool::build);
        r.register("llm", llm::build);
        r.register("agent", agent::build);
        r.register("retrieve", crate::retrieve::build);
        r
    }

    /// Uses `memory` instead of the one configured by the environment.
    pub fn with_memory(mut self, memory: crewgraph_memory::MemoryHandle) -> Self {
        self.memory = memory;
        self
    }

    pub fn memory(&self) -> crewgraph_memory::MemoryHandle {
        self.memory.clone()
    }

    pub fn register(&mut self, kind: &str, build: NodeKind) {
        self.kinds.insert(kind.to_string(), build);
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Builds a node of kind `kind` from `fields`; the caller has read the common keys.
    pub fn build(&self, kind: &Yaml, fields: &mut Fields<'_>, ctx: &BuildCtx<'_>) -> Result<BuiltNode, SpecError> {
        let name = kind
            .as_str()
            .ok_or_else(|| fields.err(kind, format!("`kind`: expected a string, found {}", kind.type_name())))?;
        let build = self.kinds.get(name).ok_or_else(|| {
            fields.err(
                kind,
                format!(
                    "unknown node kind `{name}` (expected one of: {})",
                    self.kinds().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        build(fields, ctx)
    }
}

/// Compiles a value template at `at`, turning template errors into located ones.
pub(crate) fn template(
    fields: &Fields<'_>,
    at: &Yaml,
    channels: &BTreeSet<String>,
) -> Result<crate::template::ValueTemplate, SpecError> {
    crate::template::ValueTemplate::compile(&at.to_json(), channels).map_err(|m| fields.err(at, m))
}
