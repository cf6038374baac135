//! Configuration from the environment (twelve-factor) and the opened store.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use crewgraph_engine::{EventSink, Run, Runtime};
use crewgraph_server::{Definitions, Lookup};
use crewgraph_spec::{Catalog, GraphDef, Registry};
use crewgraph_store::{Store, default_database_url, parse_reference};

/// Everything a local command needs.
pub struct Local {
    pub store: Store,
    pub catalog: Catalog,
    pub registry: Registry,
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL").ok().filter(|s| !s.is_empty()).unwrap_or_else(default_database_url)
}

/// Definition directories from `CREWGRAPH_DEFINITIONS` (default `crews:graphs`).
pub fn definition_dirs() -> Vec<PathBuf> {
    let raw = std::env::var("CREWGRAPH_DEFINITIONS").unwrap_or_else(|_| "crews:graphs".into());
    std::env::split_paths(&raw).collect()
}

impl Local {
    pub async fn open() -> Result<Self> {
        let url = database_url();
        let redis = std::env::var("REDIS_URL").ok().filter(|s| !s.is_empty());
        let prefix = std::env::var("CREWGRAPH_REDIS_PREFIX").unwrap_or_else(|_| "crewgraph".into());
        let store = Store::open(&url, redis.as_deref(), &prefix)
            .await
            .with_context(|| format!("cannot open the store at {}", redact(&url)))?;
        Ok(Self { store, catalog: Catalog::scan(&definition_dirs()), registry: Registry::builtin() })
    }

    pub fn runtime(&self, events: Arc<dyn EventSink>) -> Runtime {
        Runtime::new(self.store.checkpointer.clone(), self.store.runs.clone(), events)
    }

    /// Loads the definition a stored run started with: the registered version
    /// it pins (API registrations), else its file, else its graph by name.
    pub async fn load_for_run(&self, run: &Run) -> Result<Arc<GraphDef>> {
        if run.definition.as_deref().and_then(parse_reference).is_some() {
            let definitions = Definitions::new(self.catalog.clone(), self.registry.clone(), self.store.graphs.clone());
            return match definitions.of_run(run).await? {
                Lookup::Found(def) => Ok(def),
                Lookup::Invalid(errors) => Err(anyhow::anyhow!("{errors}")),
                Lookup::Unknown => anyhow::bail!("run {} names a definition version that is not registered", run.id),
            };
        }
        let source =
            run.definition.clone().filter(|p| std::path::Path::new(p).is_file()).unwrap_or_else(|| run.graph.clone());
        Ok(Arc::new(self.load(&source)?))
    }

    /// Loads a graph by name or path; errors list every problem with its location.
    /// A file's own directory is searched first for the subgraphs it names.
    pub fn load(&self, name_or_path: &str) -> Result<GraphDef> {
        let path = std::path::Path::new(name_or_path);
        let beside = path.is_file().then(|| path.parent()).flatten().filter(|d| !d.as_os_str().is_empty());
        let result = match beside {
            Some(dir) => {
                let mut dirs = definition_dirs();
                dirs.insert(0, dir.to_path_buf());
                Catalog::scan(&dirs).load(name_or_path, &self.registry)
            }
            None => self.catalog.load(name_or_path, &self.registry),
        };
        let def = result.map_err(|e| anyhow::anyhow!("{e}"))?;
        for w in &def.warnings {
            eprintln!("warning: {w}");
        }
        Ok(def)
    }
}

/// The URL without its password, for messages.
/// What a run records to be resumed from another process: a registered
/// version's reference, or the definition file's absolute path.
pub fn definition_ref(def: &GraphDef) -> Option<String> {
    if def.file.starts_with(crewgraph_store::REGISTERED_PREFIX) {
        return Some(def.file.clone());
    }
    std::fs::canonicalize(&def.file).ok().map(|p| p.display().to_string())
}

pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

pub async fn migrate() -> Result<u8> {
    let url = database_url();
    let backend = Store::migrate(&url).await.with_context(|| format!("migrating {}", redact(&url)))?;
    eprintln!("migrations applied ({backend}: {})", redact(&url));
    Ok(0)
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
