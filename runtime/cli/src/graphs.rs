//! `crewgraph validate` and `crewgraph graph`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use crewgraph_spec::{Catalog, Registry, diagram, load_graph_file};

use crate::context::definition_dirs;

#[derive(Args)]
pub struct ValidateArgs {
    /// Definition files (graphs, crews) or CrewAI project folders.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Mermaid,
    Dot,
}

#[derive(Args)]
pub struct GraphArgs {
    /// Graph file or name.
    pub graph: String,
    #[arg(long, value_enum, default_value = "mermaid")]
    pub format: Format,
}

fn catalog_for(file: &std::path::Path) -> Catalog {
    let mut dirs = definition_dirs();
    if let Some(parent) = file.parent() {
        dirs.insert(0, parent.to_path_buf());
    }
    Catalog::scan(&dirs)
}

pub fn validate(a: ValidateArgs) -> Result<u8> {
    let registry = Registry::builtin();
    let mut failed = 0;
    for file in &a.files {
        let loaded = if crewgraph_spec::crewai::is_project(file) {
            crewgraph_spec::crewai::load_project(file)
        } else {
            load_graph_file(file, &registry, Some(&catalog_for(file)))
        };
        match loaded {
            Ok(def) => {
                for w in &def.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: ok (`{}`, {} nodes)", file.display(), def.graph.name, def.graph.nodes.len())
            }
            Err(errors) => {
                failed += 1;
                eprintln!("{errors}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} definition files have errors", a.files.len());
    }
    Ok(0)
}

pub fn graph(a: GraphArgs) -> Result<u8> {
    let path = PathBuf::from(&a.graph);
    let catalog = catalog_for(&path);
    let def = catalog.load(&a.graph, &Registry::builtin()).map_err(|e| anyhow::anyhow!("{e}"))?;
    print!(
        "{}",
        match a.format {
            Format::Mermaid => diagram::mermaid(&def.graph),
            Format::Dot => diagram::dot(&def.graph),
        }
    );
    Ok(0)
}
