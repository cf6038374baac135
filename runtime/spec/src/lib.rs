//! YAML definitions to engine graphs: graph files (`graphs/*.yaml`), templates
//! and `when:` conditions (minijinja), the node-kind registry, structural
//! validation, and diagrams.
//!
//! Every definition error carries file, line and column. This crate depends on
//! the engine only; it knows nothing of storage or HTTP.

pub mod catalog;
pub mod crew;
pub mod crewai;
pub mod diagram;
pub mod error;
pub mod graph_file;
pub mod http_tool;
pub mod models;
pub mod nodes;
pub mod recall;
pub mod retrieve;
pub mod template;
pub mod yaml;

pub use catalog::Catalog;
pub use error::{SpecError, SpecErrors};
pub use graph_file::{GraphDef, load_graph_file, parse_graph};
pub use nodes::{BuildCtx, NodeKind, Registry};
