//! Graphs by name: the server's definition directories, shared by every
//! tenant, and the definitions each tenant registered over the API (stored
//! in the database, so every replica sees them). Compiled once per version.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crewgraph_engine::{Run, StorageError};
use crewgraph_spec::{Catalog, GraphDef, Registry, SpecErrors, parse_graph};
use crewgraph_store::{GraphRegistry, RegisteredGraph, parse_reference};

/// What looking a definition up came to.
pub enum Lookup {
    Unknown,
    /// It exists but does not compile (a file edited on disk, say).
    Invalid(SpecErrors),
    Found(Arc<GraphDef>),
}

pub struct Definitions {
    files: Catalog,
    pub registry: Registry,
    graphs: Arc<dyn GraphRegistry>,
    /// By file graph name, or by [`registered_key`] (versions never change).
    compiled: RwLock<HashMap<String, Arc<GraphDef>>>,
}

impl Definitions {
    pub fn new(files: Catalog, registry: Registry, graphs: Arc<dyn GraphRegistry>) -> Self {
        Self { files, registry, graphs, compiled: RwLock::default() }
    }

    /// Names defined by the server's files: read-only for tenants.
    pub fn file_names(&self) -> Vec<String> {
        self.files.names().map(String::from).collect()
    }

    pub fn is_file(&self, name: &str) -> bool {
        self.files.path_of(name).is_some()
    }

    /// What a new run of `name` starts with: the file definition, else the
    /// tenant's latest registered version.
    pub async fn latest(&self, tenant: &str, name: &str) -> Result<Lookup, StorageError> {
        if self.is_file(name) {
            return Ok(self.file(name));
        }
        match self.graphs.registered_graph(tenant, name, None).await? {
            Some(graph) => self.compile(&graph).await,
            None => Ok(Lookup::Unknown),
        }
    }

    /// What `run` started with: the version its `definition` pins, or the file.
    pub async fn of_run(&self, run: &Run) -> Result<Lookup, StorageError> {
        let Some((name, version)) = run.definition.as_deref().and_then(parse_reference) else {
            return Ok(self.file(&run.graph));
        };
        // Versions never change: a compiled one needs no query (each claim of a run asks).
        if let Some(def) = self.cached(&registered_key(&run.tenant, name, version)) {
            return Ok(Lookup::Found(def));
        }
        match self.graphs.registered_graph(&run.tenant, name, Some(version)).await? {
            Some(graph) => self.compile(&graph).await,
            None => Ok(Lookup::Unknown),
        }
    }

    /// The file definitions plus the tenant's latest registered ones: what
    /// a subgraph node of a tenant's definition may name.
    pub async fn catalog_of(&self, tenant: &str) -> Result<Catalog, StorageError> {
        let mut catalog = self.files.clone();
        for g in self.graphs.registered_graphs(tenant).await? {
            catalog = catalog.with_text(&g.name, &g.reference(), &g.source);
        }
        Ok(catalog)
    }

    /// The tenant's registered definitions, latest version of each.
    pub async fn registered(&self, tenant: &str) -> Result<Vec<RegisteredGraph>, StorageError> {
        self.graphs.registered_graphs(tenant).await
    }

    pub fn store(&self) -> &dyn GraphRegistry {
        self.graphs.as_ref()
    }

    /// A file definition by name (`Unknown` if no file defines it).
    pub fn file(&self, name: &str) -> Lookup {
        if let Some(def) = self.cached(name) {
            return Lookup::Found(def);
        }
        if self.files.path_of(name).is_none() {
            return Lookup::Unknown;
        }
        self.remember(name.to_string(), self.files.load(name, &self.registry))
    }

    /// Subgraphs a registered definition names are resolved when it is first
    /// compiled in this process, against the tenant's latest versions then.
    pub async fn compile(&self, graph: &RegisteredGraph) -> Result<Lookup, StorageError> {
        let reference = graph.reference();
        let key = registered_key(&graph.tenant, &graph.name, graph.version);
        if let Some(def) = self.cached(&key) {
            return Ok(Lookup::Found(def));
        }
        let catalog = self.catalog_of(&graph.tenant).await?.with_text(&graph.name, &reference, &graph.source);
        Ok(self.remember(key, parse_graph(&reference, &graph.source, &self.registry, Some(&catalog), 0)))
    }

    fn cached(&self, key: &str) -> Option<Arc<GraphDef>> {
        self.compiled.read().ok().and_then(|c| c.get(key).cloned())
    }

    fn remember(&self, key: String, result: Result<GraphDef, SpecErrors>) -> Lookup {
        match result {
            Ok(def) => {
                let def = Arc::new(def);
                if let Ok(mut compiled) = self.compiled.write() {
                    compiled.insert(key, def.clone());
                }
                Lookup::Found(def)
            }
            Err(errors) => Lookup::Invalid(errors),
        }
    }
}

/// The cache key of a registered version (file names cannot contain `\0`).
fn registered_key(tenant: &str, name: &str, version: i32) -> String {
    format!("{tenant}\0{name}@{version}")
}
