//! The graph model: channels, nodes, edges, limits, and its structural checks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use crate::channel::ChannelSpec;
use crate::node::Node;
use crate::retry::RetryPolicy;

/// The pseudo-node an edge points to when the run should end on that path.
pub const END: &str = "END";

/// A condition on an edge, evaluated against the state after a step.
pub trait Condition: Send + Sync {
    fn eval(&self, state: &Arc<Value>) -> Result<bool, String>;
    /// The condition as written, for diagrams and errors.
    fn source(&self) -> &str;
}

/// A node of the graph with its execution settings.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub node: Arc<dyn Node>,
    pub retry: RetryPolicy,
    pub timeout: Option<Duration>,
    pub interrupt_before: bool,
    pub interrupt_after: bool,
    /// Nodes this node may `goto`, so that reachability checks know them; names
    /// that are not nodes are ignored here (a `goto` to them fails at run time).
    pub may_goto: Vec<String>,
}

impl NodeSpec {
    pub fn new(name: impl Into<String>, node: Arc<dyn Node>) -> Self {
        Self {
            name: name.into(),
            node,
            retry: RetryPolicy::default(),
            timeout: None,
            interrupt_before: false,
            interrupt_after: false,
            may_goto: vec![],
        }
    }
}

/// An edge; without a condition it always fires after `from` runs.
#[derive(Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub condition: Option<Arc<dyn Condition>>,
}

/// Run limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Supersteps a run may take before it fails (LangGraph's recursion limit).
    pub max_steps: u32,
    /// Wall-clock budget of one execution (waiting for a person does not count).
    pub deadline: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_steps: 100, deadline: None }
    }
}

/// A compiled graph, ready to execute.
#[derive(Clone)]
pub struct Graph {
    pub name: String,
    pub channels: Vec<ChannelSpec>,
    /// Nodes in declaration order (the order writes are applied in).
    pub nodes: Vec<NodeSpec>,
    pub edges: Vec<Edge>,
    pub entry: Vec<String>,
    pub limits: Limits,
    /// Channels returned as the run's output; all channels when empty.
    pub output: Vec<String>,
    index: HashMap<String, usize>,
}

/// A structural defect of a graph; `edge` / `node` say where, so the spec
/// layer can point at the line that declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructureError {
    pub message: String,
    pub node: Option<String>,
    pub edge: Option<usize>,
}

impl std::fmt::Display for StructureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Collects the parts of a [`Graph`].
#[derive(Default)]
pub struct GraphBuilder {
    name: String,
    channels: Vec<ChannelSpec>,
    nodes: Vec<NodeSpec>,
    edges: Vec<Edge>,
    entry: Vec<String>,
    limits: Limits,
    output: Vec<String>,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), ..Default::default() }
    }

    pub fn channel(mut self, channel: ChannelSpec) -> Self {
        self.channels.push(channel);
        self
    }

    pub fn node(mut self, node: NodeSpec) -> Self {
        self.nodes.push(node);
        self
    }

    pub fn edge(mut self, from: &str, to: &str) -> Self {
        self.edges.push(Edge { from: from.into(), to: to.into(), condition: None });
        self
    }

    pub fn conditional_edge(mut self, from: &str, to: &str, condition: Arc<dyn Condition>) -> Self {
        self.edges.push(Edge { from: from.into(), to: to.into(), condition: Some(condition) });
        self
    }

    pub fn entry(mut self, node: &str) -> Self {
        self.entry.push(node.into());
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn output(mut self, channels: Vec<String>) -> Self {
        self.output = channels;
        self
    }

    /// Builds the graph after checking its structure; every defect is reported.
    pub fn build(self) -> Result<Graph, Vec<StructureError>> {
        let index = self.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let graph = Graph {
            name: self.name,
            channels: self.channels,
            nodes: self.nodes,
            edges: self.edges,
            entry: self.entry,
            limits: self.limits,
            output: self.output,
            index,
        };
        let errors = graph.check();
        if errors.is_empty() { Ok(graph) } else { Err(errors) }
    }
}

impl Graph {
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Declaration position of a node, the order its writes are applied in.
    pub fn position(&self, name: &str) -> usize {
        self.index.get(name).copied().unwrap_or(usize::MAX)
    }

    pub fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|c| c.name == name)
    }

    pub fn edges_from<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Edge> + 'a {
        self.edges.iter().filter(move |e| e.from == node)
    }

    /// Structural checks: unknown names, edges out of `END`, nodes no path
    /// reaches, and cycles that can never stop (every edge on them unconditional).
    pub fn check(&self) -> Vec<StructureError> {
        let mut errors = Vec::new();
        let err = |message: String, node: Option<&str>, edge: Option<usize>| StructureError {
            message,
            node: node.map(str::to_string),
            edge,
        };
        let mut seen = HashSet::new();
        for n in &self.nodes {
            if n.name == END {
                errors.push(err(format!("`{END}` is reserved and cannot name a node"), Some(&n.name), None));
            }
            if !seen.insert(&n.name) {
                errors.push(err(format!("node `{}` is declared twice", n.name), Some(&n.name), None));
            }
        }
        if self.entry.is_empty() {
            errors.push(err("the graph has no entry node".into(), None, None));
        }
        for e in &self.entry {
            if self.node(e).is_none() {
                errors.push(err(format!("entry names unknown node `{e}`"), None, None));
            }
        }
        for (i, e) in self.edges.iter().enumerate() {
            if e.from == END {
                errors.push(err(format!("edge from `{END}`: nothing runs after the end"), None, Some(i)));
            } else if self.node(&e.from).is_none() {
                errors.push(err(format!("edge from unknown node `{}`", e.from), None, Some(i)));
            }
            if e.to != END && self.node(&e.to).is_none() {
                errors.push(err(format!("edge to unknown node `{}`", e.to), None, Some(i)));
            }
        }
        if !errors.is_empty() {
            return errors;
        }

        let mut g: DiGraph<&str, Option<usize>> = DiGraph::new();
        let idx: BTreeMap<&str, NodeIndex> =
            self.nodes.iter().map(|n| (n.name.as_str(), g.add_node(n.name.as_str()))).collect();
        for (i, e) in self.edges.iter().enumerate() {
            if e.to != END {
                g.add_edge(idx[e.from.as_str()], idx[e.to.as_str()], Some(i));
            }
        }
        for n in &self.nodes {
            for t in n.may_goto.iter().filter(|t| idx.contains_key(t.as_str())) {
                g.add_edge(idx[n.name.as_str()], idx[t.as_str()], None);
            }
        }

        let mut reached = HashSet::new();
        for e in &self.entry {
            let mut dfs = petgraph::visit::Dfs::new(&g, idx[e.as_str()]);
            while let Some(n) = dfs.next(&g) {
                reached.insert(n);
            }
        }
        for n in &self.nodes {
            if !reached.contains(&idx[n.name.as_str()]) {
                errors.push(err(format!("node `{}` is unreachable from the entry", n.name), Some(&n.name), None));
            }
        }

        for scc in petgraph::algo::tarjan_scc(&g) {
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            let internal: Vec<_> = g
                .edge_indices()
                .filter(|&ei| {
                    let (a, b) = g.edge_endpoints(ei).unwrap_or((NodeIndex::end(), NodeIndex::end()));
                    members.contains(&a) && members.contains(&b)
                })
                .collect();
            if internal.is_empty() {
                continue;
            }
            let can_stop = internal.iter().any(|&ei| match g[ei] {
                Some(i) => self.edges[i].condition.is_some(),
                None => true, // a goto is a decision made at run time
            });
            if !can_stop {
                let mut names: Vec<&str> = scc.iter().map(|&n| g[n]).collect();
                names.sort();
                let first = internal.iter().find_map(|&ei| g[ei]);
                errors.push(err(
                    format!(
                        "cycle {} has no exit condition: every edge on it is unconditional, so it never stops",
                        names.join(" -> ")
                    ),
                    None,
                    first,
                ));
            }
        }
        errors
    }
}
