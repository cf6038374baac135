//! A catalog of definitions found in directories (`CREWGRAPH_DEFINITIONS`,
//! default `crews:graphs`), looked up by name or by file path, plus
//! definitions held as text (registered over the API).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{SpecError, SpecErrors};
use crate::graph_file::{GraphDef, parse_graph};
use crate::nodes::Registry;
use crate::yaml::Loc;

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Graph name -> file that defines it.
    files: BTreeMap<String, PathBuf>,
    /// Graph name -> (where it came from, its text). Files win over these.
    texts: BTreeMap<String, (String, Arc<str>)>,
}

impl Catalog {
    /// Indexes every `*.yaml` / `*.yml` file in `dirs` by its `name:`. Files
    /// that do not parse are skipped here; they fail when used or validated.
    pub fn scan(dirs: &[PathBuf]) -> Self {
        let mut files = BTreeMap::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                if !matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                    continue;
                }
                if let Some(name) = std::fs::read_to_string(&p).ok().and_then(|t| declared_name(&t)) {
                    files.entry(name).or_insert(p);
                }
            }
        }
        Self { files, texts: BTreeMap::new() }
    }

    /// Adds a definition held as text; `origin` names it in errors.
    pub fn with_text(mut self, name: &str, origin: &str, text: &str) -> Self {
        self.texts.insert(name.to_string(), (origin.to_string(), Arc::from(text)));
        self
    }

    /// Names of the file definitions, then of the text ones not shadowed by a file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let texts = self.texts.keys().filter(|n| !self.files.contains_key(*n));
        self.files.keys().chain(texts).map(String::as_str)
    }

    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }

    /// Resolves `name_or_path`: an existing file path, else a graph name.
    pub fn resolve(&self, name_or_path: &str) -> Option<PathBuf> {
        let p = Path::new(name_or_path);
        if p.is_file() || crate::crewai::is_project(p) {
            return Some(p.to_path_buf());
        }
        self.path_of(name_or_path).map(Path::to_path_buf)
    }

    /// Loads and compiles a graph by name or path.
    pub fn load(&self, name_or_path: &str, registry: &Registry) -> Result<GraphDef, SpecErrors> {
        self.load_at(name_or_path, registry, 0)
    }

    pub(crate) fn compile_nested(
        &self,
        name: &str,
        registry: &Registry,
        depth: u32,
    ) -> Result<crewgraph_engine::Graph, SpecErrors> {
        self.load_at(name, registry, depth).map(|d| (*d.graph).clone())
    }

    fn load_at(&self, name_or_path: &str, registry: &Registry, depth: u32) -> Result<GraphDef, SpecErrors> {
        if let (None, Some((origin, text))) = (self.path_of(name_or_path), self.texts.get(name_or_path)) {
            return parse_graph(origin, text, registry, Some(self), depth);
        }
        let path = self.resolve(name_or_path).ok_or_else(|| {
            let known: Vec<&str> = self.names().collect();
            let known = if known.is_empty() {
                "none found in the definition directories".to_string()
            } else {
                known.join(", ")
            };
            SpecError::at(
                name_or_path,
                Loc { line: 1, column: 1 },
                format!("unknown graph `{name_or_path}` (known: {known})"),
            )
        })?;
        if path.is_dir() {
            return crate::crewai::load_project(&path);
        }
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| SpecError::at(&file, Loc { line: 1, column: 1 }, format!("cannot read: {e}")))?;
        parse_graph(&file, &text, registry, Some(self), depth)
    }
}

/// The top-level `name:` of a definition, read without a full parse.
fn declared_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("name:"))
        .map(|n| n.trim().trim_matches(['"', '\'']).to_string())
        .filter(|n| !n.is_empty())
}
