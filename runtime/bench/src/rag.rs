//! RAG memory workloads on the embedded store.
//!
//! W8  retrieval quality: the Cargo Book from the toolchain's docs, 40
//!     questions that paraphrase their answers, recall@5 for dense, sparse
//!     and hybrid search (a hit: a top-5 chunk of the right page holding the
//!     answer's key phrase).
//! W9  search latency over 100k chunks: clustered synthetic 384-dimensional
//!     unit vectors with text, dense and hybrid p50/p99 (query embedding
//!     excluded), recall@10 of the quantised search against exact search.
//! W10 ingestion end to end: Markdown made from the toolchain's HTML books,
//!     read, chunked, embedded with the local model and stored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use crewgraph_memory::{
    Document, EmbeddedStore, Embedder, Filter, Fusion, LocalEmbedder, Memory, Record, SearchMode, SearchRequest,
    VectorStore, default_model_dir, ingest::html_text,
};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Question {
    q: String,
    page: String,
    answer: String,
}

fn docs_dir() -> Result<PathBuf> {
    let out = std::process::Command::new("rustc").args(["--print", "sysroot"]).output()?;
    let root = String::from_utf8(out.stdout)?.trim().to_string();
    let dir = Path::new(&root).join("share/doc/rust/html");
    anyhow::ensure!(dir.is_dir(), "{} not found: install the rust-docs component", dir.display());
    Ok(dir)
}

fn local_embedder() -> Result<Arc<dyn Embedder>> {
    let dir = default_model_dir().context("set CREWGRAPH_EMBEDDING_MODEL_DIR to all-MiniLM-L6-v2")?;
    Ok(Arc::new(LocalEmbedder::load(&dir)?))
}

/// HTML pages of the given book folders, as Markdown documents, skipping redirect stubs.
fn book_documents(root: &Path, folders: &[&str]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for folder in folders {
        let mut files: Vec<PathBuf> = crewgraph_memory::collect_files(&[root.join(folder)])?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "html"))
            .collect();
        files.sort();
        for path in files {
            let text = html_text(&std::fs::read_to_string(&path)?);
            if text.len() < 200 || text.starts_with("Redirecting") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            docs.push(Document::new(rel, text));
        }
    }
    Ok(docs)
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * p).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

pub async fn w8() -> Result<()> {
    let root = docs_dir()?.join("cargo");
    let docs = book_documents(&root, &["getting-started", "guide", "reference", "appendix"])?;
    let questions: Vec<Question> = serde_json::from_str(include_str!("../data/cargo-book-questions.json"))?;
    let store: Arc<dyn VectorStore> = Arc::new(EmbeddedStore::in_memory().await?);
    let memory = Memory::new(store.clone(), local_embedder()?);
    let started = Instant::now();
    for d in &docs {
        memory.ingest("cargo-book", "default", d).await?;
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let chunks = store.count("cargo-book", None).await?;
    let mut recall = serde_json::Map::new();
    let variants: Vec<(String, SearchRequest)> = [
        ("dense".to_string(), SearchMode::Dense, Fusion::Rrf, 0.5),
        ("sparse".to_string(), SearchMode::Sparse, Fusion::Rrf, 0.5),
        ("hybrid".to_string(), SearchMode::Hybrid, Fusion::Rrf, 0.5),
    ]
    .into_iter()
    .chain(
        [0.3f32, 0.4, 0.5, 0.6, 0.7].map(|a| (format!("hybrid_relative_{a}"), SearchMode::Hybrid, Fusion::Relative, a)),
    )
    .map(|(name, mode, fusion, alpha)| (name, SearchRequest { mode, fusion, alpha, ..SearchRequest::new("", 5) }))
    .collect();
    for (name, template) in variants {
        let mut found = 0;
        let mut missed = Vec::new();
        for q in &questions {
            let request = SearchRequest { query: q.q.clone(), ..template.clone() };
            let hits = memory.search("cargo-book", &request).await?;
            if hits.iter().any(|h| h.source.ends_with(&q.page) && h.text.contains(&q.answer)) {
                found += 1;
            } else {
                missed.push(q.q.clone());
            }
        }
        eprintln!("{name}: missed {missed:#?}");
        recall.insert(format!("recall_at_5_{name}"), json!(found as f64 / questions.len() as f64));
    }
    let mut out = json!({"workload": "W8", "pages": docs.len(), "chunks": chunks, "questions": questions.len(),
                         "ingest_s": ingest_s});
    if let Some(o) = out.as_object_mut() {
        o.extend(recall);
    }
    println!("{out}");
    Ok(())
}

/// A deterministic generator (SplitMix64), so every run measures the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Roughly normal, from the sum of four uniforms.
    fn gauss(&mut self) -> f32 {
        (0..4).map(|_| (self.next() >> 11) as f32 / (1u64 << 53) as f32).sum::<f32>() - 2.0
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub async fn w9(chunks: usize, queries: usize, path: Option<PathBuf>) -> Result<()> {
    const DIM: usize = 384;
    const CLUSTERS: usize = 1000;
    const PER_SOURCE: usize = 1000;
    let mut rng = Rng(42);
    // Topics: cluster centres; a chunk is its centre plus noise, as embeddings of related passages are.
    let centres: Vec<Vec<f32>> = (0..CLUSTERS).map(|_| unit((0..DIM).map(|_| rng.gauss()).collect())).collect();
    let words: Vec<String> = (0..5000).map(|i| format!("w{i:x}")).collect();
    let point =
        |rng: &mut Rng, c: usize| -> Vec<f32> { unit(centres[c].iter().map(|x| x + 0.09 * rng.gauss()).collect()) };
    let store: Arc<dyn VectorStore> = match &path {
        Some(p) => {
            let _ = std::fs::remove_file(p);
            Arc::new(EmbeddedStore::open(p).await?)
        }
        None => Arc::new(EmbeddedStore::in_memory().await?),
    };
    store.create_collection("w9", DIM, "synthetic-384").await?;
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(chunks);
    let started = Instant::now();
    for s in 0..chunks.div_ceil(PER_SOURCE) {
        let mut records = Vec::with_capacity(PER_SOURCE);
        for i in 0..PER_SOURCE.min(chunks - s * PER_SOURCE) {
            let c = (rng.next() % CLUSTERS as u64) as usize;
            let v = point(&mut rng, c);
            let text: Vec<&str> =
                (0..40).map(|_| words[((c * 7 + (rng.next() % 60) as usize) * 13) % words.len()].as_str()).collect();
            let hash = format!("{s}-{i}");
            records.push(Record {
                id: Record::point_id("w9", "default", &format!("src{s}"), &hash, 0),
                title: format!("topic {c}"),
                position: i,
                tokens: 60,
                content_hash: hash,
                text: text.join(" "),
                metadata: Default::default(),
                vector: Some(v.clone()),
            });
            vectors.push(v);
        }
        store.replace_source("w9", "default", &format!("src{s}"), records).await?;
    }
    let load_s = started.elapsed().as_secs_f64();
    let mut dense_ms = Vec::new();
    let mut hybrid_ms = Vec::new();
    let mut recall_sum = 0.0;
    let filter = Filter::default();
    for _ in 0..queries {
        let c = (rng.next() % CLUSTERS as u64) as usize;
        let q = point(&mut rng, c);
        let text = format!("{} {}", words[(c * 7 * 13) % words.len()], words[((c * 7 + 5) * 13) % words.len()]);
        let t = Instant::now();
        let hits = store.dense("w9", "default", &q, &filter, 10).await?;
        dense_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let (d, l) = futures::join!(
            store.dense("w9", "default", &q, &filter, 20),
            store.lexical("w9", "default", &text, &filter, 20)
        );
        let lists = [d?.iter().map(|h| h.id).collect(), l?.iter().map(|h| h.id).collect()];
        let _fused = crewgraph_memory::reciprocal_rank_fusion(&lists, 60.0);
        hybrid_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // Exact top 10 by brute force, to grade the quantised search.
        let mut exact: Vec<(usize, f32)> = vectors.iter().enumerate().map(|(i, v)| (i, dot(&q, v))).collect();
        exact.select_nth_unstable_by(9, |a, b| b.1.total_cmp(&a.1));
        let threshold = exact[..10].iter().map(|e| e.1).fold(f32::INFINITY, f32::min);
        let got = hits.iter().filter(|h| dot(&q, &h.vector) >= threshold - 1e-6).count();
        recall_sum += got as f64 / 10.0;
    }
    dense_ms.sort_by(f64::total_cmp);
    hybrid_ms.sort_by(f64::total_cmp);
    println!(
        "{}",
        json!({"workload": "W9", "chunks": chunks, "queries": queries, "load_s": load_s,
               "dense_p50_ms": percentile(&dense_ms, 0.5), "dense_p99_ms": percentile(&dense_ms, 0.99),
               "hybrid_p50_ms": percentile(&hybrid_ms, 0.5), "hybrid_p99_ms": percentile(&hybrid_ms, 0.99),
               "recall_at_10_vs_exact": recall_sum / queries as f64})
    );
    Ok(())
}

pub async fn w10(megabytes: f64) -> Result<()> {
    let root = docs_dir()?;
    let folders = [
        "book",
        "reference",
        "cargo",
        "rustc",
        "edition-guide",
        "embedded-book",
        "rustdoc",
        "nomicon",
        "unstable-book",
    ];
    let limit = (megabytes * 1_000_000.0) as usize;
    let dir = std::env::temp_dir().join(format!("crewgraph-w10-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut written = 0usize;
    let mut files = 0usize;
    'outer: for folder in folders {
        for d in book_documents(&root, &[folder]).unwrap_or_default() {
            if written >= limit {
                break 'outer;
            }
            let name = d.source.replace('/', "_").replace(".html", ".md");
            std::fs::write(dir.join(name), &d.text)?;
            written += d.text.len();
            files += 1;
        }
    }
    let memory = Memory::new(Arc::new(EmbeddedStore::open(&dir.join("memory.db")).await?), local_embedder()?);
    let started = Instant::now();
    let mut chunks = 0usize;
    for path in crewgraph_memory::collect_files(std::slice::from_ref(&dir))? {
        if path.extension().is_some_and(|e| e == "md") {
            let doc = crewgraph_memory::read_document(&path)?;
            chunks += memory.ingest("w10", "default", &doc).await?.added;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        json!({"workload": "W10", "megabytes": written as f64 / 1e6, "files": files, "chunks": chunks, "seconds": secs,
               "mb_per_s": written as f64 / 1e6 / secs, "chunks_per_s": chunks as f64 / secs})
    );
    Ok(())
}
