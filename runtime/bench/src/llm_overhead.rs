//! W5 and W6: what crewgraph adds around model calls.
//!
//! W5  a 3-task sequential crew against a scripted OpenAI-compatible server
//!     with no latency: crewgraph time per task beyond the HTTP round trips
//!     (measured directly with the same client), on the in-memory store.
//! W6  tiktoken-rs counting of a 100 KB prompt.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use crewgraph_engine::{MemoryStore, NullSink, RunStatus, Runtime};
use crewgraph_llm::openai::OpenAiModel;
use crewgraph_llm::{ChatModel, ChatRequest, Message, ModelProfile};
use crewgraph_spec::{Registry, parse_graph};
use crewgraph_tests::openai_server::{OpenAiServer, Reply};
use serde_json::json;

use crate::{ms, percentile, sorted};

const CREW: &str = "name: bench-crew
models:
  local: { base_url: BASE, model: scripted-model, stream: false, max_retries: 0 }
agents:
  a: { role: Analyst, goal: \"Study {topic}\" }
tasks:
  one: { description: \"Step one on {topic}.\", expected_output: text, agent: a }
  two: { description: Step two., expected_output: text, agent: a }
  three: { description: Step three., expected_output: text, agent: a }
";

pub async fn w5(runs: usize) -> Result<()> {
    let server = OpenAiServer::start(vec![]).await;
    let mut profile = ModelProfile::new("direct", "scripted-model");
    profile.base_url = Some(server.base_url.clone());
    profile.stream = false;
    let direct = OpenAiModel::new(profile)?;
    let request = ChatRequest { messages: vec![Message::user("hello")], ..Default::default() };
    let mut http = Vec::new();
    for _ in 0..runs * 3 {
        server.push(Reply::text("an answer of a few words"));
        let t = Instant::now();
        direct.chat(&request, None).await?;
        http.push(ms(t.elapsed()));
    }
    let http = sorted(http);

    let yaml = CREW.replace("BASE", &format!("\"{}\"", server.base_url));
    let graph =
        parse_graph("bench-crew.yaml", &yaml, &Registry::builtin(), None, 0).map_err(|e| anyhow::anyhow!("{e}"))?.graph;
    let store = Arc::new(MemoryStore::new());
    let rt = Runtime::new(store.clone(), store, Arc::new(NullSink));
    let mut per_run = Vec::new();
    for _ in 0..runs {
        for _ in 0..3 {
            server.push(Reply::text("an answer of a few words"));
        }
        let input = json!({"topic": "tides"}).as_object().cloned().unwrap_or_default();
        let t = Instant::now();
        let run = rt.start(graph.clone(), input, None, None, None).await?;
        per_run.push(ms(t.elapsed()));
        anyhow::ensure!(run.status == RunStatus::Succeeded, "crew failed: {}", run.error);
    }
    let per_run = sorted(per_run);
    let http_p50 = percentile(&http, 0.5);
    let overhead = (percentile(&per_run, 0.5) - 3.0 * http_p50) / 3.0;
    println!(
        "{}",
        json!({"workload": "W5", "runs": runs, "crew_run_p50_ms": percentile(&per_run, 0.5),
               "http_round_trip_p50_ms": http_p50, "overhead_per_task_ms": overhead})
    );
    Ok(())
}

pub fn w6() {
    let prompt: String = "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(1600);
    let prompt = &prompt[..100 * 1024];
    crewgraph_llm::tokens::count("warm up");
    let mut times = Vec::new();
    let mut tokens = 0;
    for _ in 0..20 {
        let t = Instant::now();
        tokens = crewgraph_llm::tokens::count(prompt);
        times.push(ms(t.elapsed()));
    }
    let times = sorted(times);
    println!(
        "{}",
        json!({"workload": "W6", "bytes": prompt.len(), "tokens": tokens,
               "count_p50_ms": percentile(&times, 0.5), "count_max_ms": times.last().copied().unwrap_or(0.0)})
    );
}

/// W7: local embedding throughput (all-MiniLM-L6-v2 on the CPU), in chunks of
/// about 200 tokens per second, batches of 32.
pub async fn w7(chunks: usize) -> Result<()> {
    use crewgraph_memory::{Embedder, LocalEmbedder, default_model_dir};
    let dir =
        default_model_dir().ok_or_else(|| anyhow::anyhow!("set CREWGRAPH_EMBEDDING_MODEL_DIR to all-MiniLM-L6-v2"))?;
    let embedder = LocalEmbedder::load(&dir)?;
    let text = |i: usize| {
        format!(
            "Chunk {i}. {}",
            "Checkpoints are written after every superstep so that a crashed run resumes where it stopped. ".repeat(9)
        )
    };
    let all: Vec<String> = (0..chunks).map(text).collect();
    embedder.embed(&all[..4]).await?; // warm-up
    let started = Instant::now();
    for batch in all.chunks(32) {
        embedder.embed(batch).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let tokens = crewgraph_llm::tokens::count(&all[0]);
    println!(
        "{}",
        json!({"workload": "W7", "chunks": chunks, "tokens_per_chunk": tokens, "chunks_per_s": chunks as f64 / secs})
    );
    Ok(())
}
