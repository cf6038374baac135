//! `crewgraph ingest`, `crewgraph query` and `crewgraph collections`: RAG
//! memory from the command line, on the store and embedder the environment
//! configures (the embedded store and local model by default).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use crewgraph_memory::{
    DEFAULT_TENANT, Filter, Fusion, Memory, SearchMode, SearchRequest, collect_files, read_document,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::context::print_json;

#[derive(Args)]
pub struct IngestArgs {
    /// Collection to add the documents to (created on first use).
    pub collection: String,
    /// Files and folders (walked recursively; names starting with `.` skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
    /// Extra metadata on every chunk, as KEY=VALUE (repeatable); filter on it when querying.
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Hybrid,
    Dense,
    Sparse,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FusionArg {
    Rrf,
    Relative,
}

#[derive(Args)]
pub struct QueryArgs {
    pub collection: String,
    pub text: String,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[arg(long, default_value = DEFAULT_TENANT)]
    pub tenant: String,
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
    /// Payload filter as JSON, e.g. '{"source": "docs/a.md"}'.
    #[arg(long)]
    pub filter: Option<String>,
    /// Least cosine similarity.
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Diversify results by MMR with this trade-off (1.0 = pure relevance).
    #[arg(long)]
    pub mmr: Option<f32>,
    /// Most tokens the results may hold together.
    #[arg(long)]
    pub token_budget: Option<usize>,
    /// How hybrid search combines its lists: reciprocal ranks or normalised scores.
    #[arg(long, value_enum, default_value_t = FusionArg::Relative)]
    pub fusion: FusionArg,
    /// Weight of the dense side in relative fusion (0.0 lexical only, 1.0 dense only).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Print the results as a JSON array (source, text, score, ...).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum CollectionsCommand {
    /// List collections with their model and dimension.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove one source document's chunks.
    DeleteSource {
        collection: String,
        source: String,
        #[arg(long, default_value = DEFAULT_TENANT)]
        tenant: String,
    },
    /// Remove a collection and all its chunks.
    Drop { collection: String },
}

async fn open() -> Result<Memory> {
    crewgraph_memory::config::open_from_env().await.context("cannot open the memory store")
}

pub async fn ingest(a: IngestArgs) -> Result<u8> {
    let mut metadata = serde_json::Map::new();
    for kv in &a.meta {
        let (k, v) = kv.split_once('=').with_context(|| format!("--meta `{kv}`: expected KEY=VALUE"))?;
        metadata.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let files = collect_files(&a.paths)?;
    let memory = open().await?;
    memory.ensure_collection(&a.collection).await?;
    // First chunk every file (fast) so the bar counts what really takes time: embedding.
    let mut prepared = Vec::new();
    let mut failed = 0usize;
    for path in &files {
        let result = async {
            let mut doc = read_document(path)?;
            doc.metadata.extend(metadata.clone());
            memory.prepare(&a.collection, &a.tenant, &doc).await
        }
        .await;
        match result {
            Ok(p) => prepared.push(p),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    let total: usize = prepared.iter().map(|p| p.to_embed()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} embedding [{bar:30}] {pos}/{len} chunks {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (mut added, mut kept, mut removed, mut chunks) = (0, 0, 0, 0);
    let tick = Arc::new(bar.clone());
    for p in prepared {
        bar.set_message(p.source.clone());
        let source = p.source.clone();
        chunks += p.chunks();
        let t = tick.clone();
        match memory.store_prepared(p, &move |n| t.inc(n as u64)).await {
            Ok(change) => {
                added += change.added;
                kept += change.kept;
                removed += change.removed;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("error: {source}: {e}"));
                failed += 1;
            }
        }
    }
    bar.finish_and_clear();
    let size = memory.store().count(&a.collection, Some(&a.tenant)).await?;
    let summary = serde_json::json!({
        "collection": a.collection, "tenant": a.tenant, "files": files.len() - failed, "failed": failed,
        "chunks": chunks, "added": added, "unchanged": kept, "removed": removed, "size": size,
    });
    if a.json {
        print_json(&summary)?;
    } else {
        eprintln!(
            "{}: {} files, {chunks} chunks ({added} new, {kept} unchanged, {removed} removed); collection holds {size} chunks{}",
            a.collection,
            files.len() - failed,
            if failed > 0 { format!("; {failed} files failed") } else { String::new() }
        );
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

pub async fn query(a: QueryArgs) -> Result<u8> {
    let filter = match &a.filter {
        Some(f) => Filter::from_json(&serde_json::from_str(f).context("--filter is not valid JSON")?)?,
        None => Filter::default(),
    };
    let memory = open().await?;
    let request = SearchRequest {
        tenant: a.tenant.clone(),
        filter,
        mode: match a.mode {
            Mode::Hybrid => SearchMode::Hybrid,
            Mode::Dense => SearchMode::Dense,
            Mode::Sparse => SearchMode::Sparse,
        },
        score_threshold: a.threshold,
        mmr_lambda: a.mmr,
        token_budget: a.token_budget,
        fusion: match a.fusion {
            FusionArg::Rrf => Fusion::Rrf,
            FusionArg::Relative => Fusion::Relative,
        },
        alpha: a.alpha,
        ..SearchRequest::new(a.text.clone(), a.top_k)
    };
    let results = memory.search(&a.collection, &request).await?;
    if a.json {
        print_json(&results)?;
        return Ok(0);
    }
    if results.is_empty() {
        eprintln!("no results");
    }
    for (i, r) in results.iter().enumerate() {
        let heading = if r.title.is_empty() { String::new() } else { format!(" — {}", r.title) };
        println!("{}. [{:.3}] {}{heading}", i + 1, r.score, r.source);
        for line in r.text.lines() {
            println!("   {line}");
        }
        println!();
    }
    Ok(0)
}

pub async fn collections(c: CollectionsCommand) -> Result<u8> {
    let memory = open().await?;
    match c {
        CollectionsCommand::List { json } => {
            let list = memory.store().collections().await?;
            if json {
                let mut out = Vec::new();
                for c in &list {
                    let size = memory.store().count(&c.name, None).await?;
                    out.push(
                        serde_json::json!({"name": c.name, "dimension": c.dimension, "model": c.model, "size": size}),
                    );
                }
                print_json(&out)?;
            } else {
                for c in &list {
                    let size = memory.store().count(&c.name, None).await?;
                    println!("{}\t{} chunks\t{} ({} dimensions)", c.name, size, c.model, c.dimension);
                }
            }
        }
        CollectionsCommand::DeleteSource { collection, source, tenant } => {
            let n = memory.delete_source(&collection, &tenant, &source).await?;
            eprintln!("removed {n} chunks of {source}");
        }
        CollectionsCommand::Drop { collection } => {
            if !memory.store().drop_collection(&collection).await? {
                anyhow::bail!("no collection named `{collection}`");
            }
            eprintln!("dropped {collection}");
        }
    }
    Ok(0)
}
