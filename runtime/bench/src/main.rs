//! `crewgraph-bench`: the engine's workloads on Postgres with a durable
//! checkpoint after every step. One JSON line per workload on stdout.
//!
//! W1  10-node linear graph (append + counter per node), runs one after another.
//! W2  draft -> approval -> publish: park N threads at the approval, then approve each.
//! W3  W1 with many runs in flight.
//! W4  checkpoint bytes per step on one thread whose `messages` channel grows every step.
//! W5  crewgraph time per crew task beyond the model's HTTP round trips (scripted server).
//! W6  token counting of a 100 KB prompt.
//! W7  local embedding throughput (all-MiniLM-L6-v2, CPU).
//! W8-W10 RAG memory: retrieval quality, search latency at 100k chunks, ingestion (see `rag`).

mod llm_overhead;
mod rag;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use crewgraph_engine::{Decision, DecisionAction, Graph, NullSink, RunStatus, Runtime};
use crewgraph_spec::{Registry, parse_graph};
use crewgraph_store::PgStore;
use serde_json::{Map, json};

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
    W7,
    W8,
    W9,
    W10,
    All,
}

#[derive(Parser)]
#[command(about = "crewgraph engine benchmarks on Postgres")]
struct Args {
    /// Postgres URL; `memory:` runs W1 and W3 on the in-memory store (engine cost alone).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// W1, W2, W3, W4 or all (any case).
    #[arg(long, value_enum, ignore_case = true, default_value = "all")]
    workload: Workload,
    /// Runs for W1 and W3.
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Runs in flight for W3.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Threads parked at the approval for W2.
    #[arg(long, default_value_t = 500)]
    parked: usize,
    /// Steps of the W4 thread.
    #[arg(long, default_value_t = 10_000)]
    long_steps: usize,
    /// Chunks stored for W9.
    #[arg(long, default_value_t = 100_000)]
    chunks: usize,
    /// Queries timed for W9.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// SQLite file for W9 (default: in memory).
    #[arg(long)]
    store_path: Option<std::path::PathBuf>,
    /// Megabytes of Markdown ingested by W10.
    #[arg(long, default_value_t = 10.0)]
    megabytes: f64,
}

fn linear_yaml() -> String {
    let mut s = String::from(
        "name: w1-linear\nstate:\n  items: { reducer: append }\n  count: { reducer: sum }\nentry: n0\nnodes:\n",
    );
    for i in 0..10 {
        s.push_str(&format!("  n{i}: {{ kind: set, values: {{ items: \"item {i}\", count: 1 }} }}\n"));
    }
    s.push_str("edges:\n");
    for i in 1..10 {
        s.push_str(&format!("  - {{ from: n{}, to: n{i} }}\n", i - 1));
    }
    s
}

const APPROVAL_YAML: &str = "name: w2-approval
state:
  topic: { type: string }
  draft: { type: string }
  review: { type: object }
  published: { type: string }
entry: draft
nodes:
  draft: { kind: set, values: { draft: \"About {{ state.topic }}\" } }
  review: { kind: approval, payload: { draft: \"{{ state.draft }}\" }, actions: [approve, reject], into: review }
  publish: { kind: set, values: { published: \"{{ state.draft }}\" } }
edges:
  - { from: draft, to: review }
  - { from: review, to: publish, when: \"state.review.action == 'approve'\" }
";

fn long_yaml(steps: usize) -> String {
    format!(
        "name: w4-long
state:
  messages: {{ reducer: messages }}
  turn: {{ reducer: sum }}
entry: chat
limits: {{ max_steps: {} }}
nodes:
  chat:
    kind: set
    values:
      messages: {{ id: \"m{{{{ state.turn }}}}\", role: assistant, content: \"reply number {{{{ state.turn }}}} with some text in it\" }}
      turn: 1
edges:
  - {{ from: chat, to: chat, when: \"state.turn < {steps}\" }}
",
        steps + 5
    )
}

fn compile(text: &str) -> Result<Arc<Graph>> {
    parse_graph("bench.yaml", text, &Registry::builtin(), None, 0).map(|d| d.graph).map_err(|e| anyhow::anyhow!("{e}"))
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

async fn one_run(rt: &Runtime, g: &Arc<Graph>) -> Result<f64> {
    let started = Instant::now();
    let run = rt.start(g.clone(), Map::new(), None, None, None).await?;
    anyhow::ensure!(run.status == RunStatus::Succeeded, "run failed: {}", run.error);
    Ok(ms(started.elapsed()))
}

async fn w1(rt: &Runtime, runs: usize) -> Result<()> {
    let g = compile(&linear_yaml())?;
    for _ in 0..runs.min(20) {
        one_run(rt, &g).await?; // warm-up
    }
    let started = Instant::now();
    let mut lat = Vec::with_capacity(runs);
    for _ in 0..runs {
        lat.push(one_run(rt, &g).await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = sorted(lat);
    println!(
        "{}",
        json!({"workload": "W1", "runs": runs, "steps": runs * 10, "steps_per_s": (runs * 10) as f64 / secs,
               "run_p50_ms": percentile(&lat, 0.5), "run_p99_ms": percentile(&lat, 0.99)})
    );
    Ok(())
}

async fn w3(rt: &Runtime, runs: usize, concurrency: usize) -> Result<()> {
    let g = compile(&linear_yaml())?;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..concurrency).map(|_| {
        let (rt, g, next) = (rt.clone(), g.clone(), next.clone());
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < runs {
                lat.push(one_run(&rt, &g).await?);
            }
            anyhow::Ok(lat)
        })
    });
    let mut lat = Vec::new();
    for r in futures::future::join_all(workers).await {
        lat.extend(r??);
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = sorted(lat);
    println!(
        "{}",
        json!({"workload": "W3", "runs": runs, "in_flight": concurrency, "steps": runs * 10, "steps_per_s": (runs * 10) as f64 / secs,
               "run_p50_ms": percentile(&lat, 0.5), "run_p99_ms": percentile(&lat, 0.99)})
    );
    Ok(())
}

async fn w2(rt: &Runtime, parked: usize) -> Result<()> {
    let g = compile(APPROVAL_YAML)?;
    let mut approvals = Vec::with_capacity(parked);
    let park_started = Instant::now();
    for i in 0..parked {
        let input = json!({"topic": format!("t{i}")}).as_object().cloned().unwrap_or_default();
        let run = rt.start(g.clone(), input, None, None, None).await?;
        anyhow::ensure!(run.status == RunStatus::Waiting, "expected waiting, got {:?}", run.status);
        let pending = rt.runs.list_approvals(Some(crewgraph_engine::ApprovalStatus::Pending), Some(&run.id)).await?;
        approvals.push((run.id, pending.first().context("no approval")?.id.clone()));
    }
    let park_s = park_started.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(parked);
    for (run_id, approval_id) in approvals {
        let started = Instant::now();
        rt.decide(&approval_id, Decision { action: DecisionAction::Approve, value: None, comment: None }).await?;
        let run = rt.execute(g.clone(), &run_id, None).await?;
        lat.push(ms(started.elapsed()));
        anyhow::ensure!(run.status == RunStatus::Succeeded, "resume failed: {}", run.error);
    }
    let lat = sorted(lat);
    println!(
        "{}",
        json!({"workload": "W2", "parked": parked, "park_runs_per_s": parked as f64 / park_s,
               "resume_p50_ms": percentile(&lat, 0.5), "resume_p99_ms": percentile(&lat, 0.99)})
    );
    Ok(())
}

async fn w4(rt: &Runtime, pg: &PgStore, steps: usize) -> Result<()> {
    let g = compile(&long_yaml(steps))?;
    let started = Instant::now();
    let run = rt.start(g, Map::new(), None, None, None).await?;
    anyhow::ensure!(run.status == RunStatus::Succeeded, "long run failed: {}", run.error);
    let secs = started.elapsed().as_secs_f64();
    let bytes_at = |step: i64| {
        let pool = pg.pool.clone();
        let thread = run.thread_id.clone();
        async move {
            let blobs: i64 = sqlx::query_scalar(
                "SELECT COALESCE(sum(length(channel) + length(kind) + length(body) + 8), 0)::int8 FROM checkpoint_blobs WHERE thread_id = $1 AND version = $2",
            )
            .bind(&thread)
            .bind(step)
            .fetch_one(&pool)
            .await?;
            let row: i64 = sqlx::query_scalar(
                "SELECT (length(versions) + length(next) + length(metadata) + length(source) + 16 + 16 + 16)::int8 FROM checkpoints WHERE thread_id = $1 AND step = $2",
            )
            .bind(&thread)
            .bind(step)
            .fetch_one(&pool)
            .await?;
            anyhow::Ok((blobs, row))
        }
    };
    let (b10, r10) = bytes_at(10).await?;
    let last = steps as i64;
    let (bn, rn) = bytes_at(last).await?;
    println!(
        "{}",
        json!({"workload": "W4", "steps": steps, "steps_per_s": steps as f64 / secs,
               "bytes_step_10": b10 + r10, "bytes_step_last": bn + rn, "last_step": last,
               "blob_bytes_step_10": b10, "blob_bytes_step_last": bn})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    // W5 and W6 need no database.
    if a.workload == Workload::W5 {
        return llm_overhead::w5(a.runs.min(200)).await;
    }
    if a.workload == Workload::W6 {
        llm_overhead::w6();
        return Ok(());
    }
    if a.workload == Workload::W7 {
        return llm_overhead::w7(a.runs.min(512)).await;
    }
    match a.workload {
        Workload::W8 => return rag::w8().await,
        Workload::W9 => return rag::w9(a.chunks, a.queries, a.store_path.clone()).await,
        Workload::W10 => return rag::w10(a.megabytes).await,
        _ => {}
    }
    if a.database_url == "memory:" {
        // The engine alone, without storage round trips: the floor the database adds to.
        let store = Arc::new(crewgraph_engine::MemoryStore::new());
        let rt = Runtime::new(store.clone(), store, Arc::new(NullSink));
        w1(&rt, a.runs).await?;
        return w3(&rt, a.runs, a.concurrency).await;
    }
    let pg = PgStore::connect(&a.database_url, (a.concurrency as u32 + 4).max(8)).await?;
    pg.migrate().await?;
    let store = Arc::new(pg.clone());
    let rt = Runtime::new(store.clone(), store, Arc::new(NullSink));
    let all = a.workload == Workload::All;
    if all || a.workload == Workload::W1 {
        w1(&rt, a.runs).await?;
    }
    if all || a.workload == Workload::W2 {
        w2(&rt, a.parked).await?;
    }
    if all || a.workload == Workload::W3 {
        w3(&rt, a.runs, a.concurrency).await?;
    }
    if all || a.workload == Workload::W4 {
        w4(&rt, &pg, a.long_steps).await?;
    }
    if all {
        llm_overhead::w5(a.runs.min(200)).await?;
        llm_overhead::w6();
    }
    Ok(())
}
