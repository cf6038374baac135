//! What this process observed, for `/metrics`: step latency (from
//! `node.finished` events), LLM tokens by model (from `llm.usage`), and runs
//! settled by outcome. The database-wide figures (runs by status, queue,
//! pending approvals) are read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crewgraph_engine::Event;
use serde_json::Value;

/// Upper bounds (ms) of the step latency histogram's buckets.
const BUCKETS_MS: [f64; 13] =
    [1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0];

#[derive(Default)]
pub struct Metrics {
    step_buckets: [AtomicU64; BUCKETS_MS.len()],
    step_count: AtomicU64,
    /// Sum of step latencies in microseconds.
    step_sum_us: AtomicU64,
    /// (model, kind) -> tokens.
    tokens: Mutex<BTreeMap<(String, &'static str), u64>>,
    settled: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn observe(&self, event: &Event) {
        match event.kind.as_str() {
            "node.finished" => {
                if let Some(ms) = event.data.get("ms").and_then(Value::as_f64) {
                    for (bound, bucket) in BUCKETS_MS.iter().zip(&self.step_buckets) {
                        if ms <= *bound {
                            bucket.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    self.step_count.fetch_add(1, Ordering::Relaxed);
                    self.step_sum_us.fetch_add((ms * 1000.0) as u64, Ordering::Relaxed);
                }
            }
            "llm.usage" => {
                let d = &event.data;
                let model = d.get("model").and_then(Value::as_str).unwrap_or("unknown").to_string();
                if let Ok(mut tokens) = self.tokens.lock() {
                    for kind in ["prompt_tokens", "completion_tokens"] {
                        let n = d.get(kind).and_then(Value::as_u64).unwrap_or(0);
                        *tokens
                            .entry((model.clone(), if kind == "prompt_tokens" { "prompt" } else { "completion" }))
                            .or_default() += n;
                    }
                }
            }
            "run.succeeded" | "run.failed" | "run.cancelled" | "run.waiting" => {
                if let Ok(mut settled) = self.settled.lock() {
                    *settled.entry(event.kind.trim_start_matches("run.").to_string()).or_default() += 1;
                }
            }
            _ => {}
        }
    }

    /// Appends this process's series in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP crewgraph_step_duration_seconds Time a node took, per attempt.");
        let _ = writeln!(out, "# TYPE crewgraph_step_duration_seconds histogram");
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.step_buckets) {
            let _ = writeln!(
                out,
                "crewgraph_step_duration_seconds_bucket{{le=\"{}\"}} {}",
                bound / 1000.0,
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.step_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "crewgraph_step_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "crewgraph_step_duration_seconds_sum {:.6}",
            self.step_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "crewgraph_step_duration_seconds_count {count}");
        let _ = writeln!(out, "# HELP crewgraph_llm_tokens_total LLM tokens used by runs of this process.");
        let _ = writeln!(out, "# TYPE crewgraph_llm_tokens_total counter");
        if let Ok(tokens) = self.tokens.lock() {
            for ((model, kind), n) in tokens.iter() {
                let model = model.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(out, "crewgraph_llm_tokens_total{{model=\"{model}\",kind=\"{kind}\"}} {n}");
            }
        }
        let _ = writeln!(out, "# HELP crewgraph_runs_settled_total Runs this process settled, by outcome.");
        let _ = writeln!(out, "# TYPE crewgraph_runs_settled_total counter");
        if let Ok(settled) = self.settled.lock() {
            for (outcome, n) in settled.iter() {
                let _ = writeln!(out, "crewgraph_runs_settled_total{{outcome=\"{outcome}\"}} {n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        for ms in [0.5, 7.0, 7.0, 400.0] {
            m.observe(&Event::new("node.finished", "r", "t").data(json!({"ms": ms})));
        }
        m.observe(
            &Event::new("llm.usage", "r", "t").data(json!({"model": "m", "prompt_tokens": 3, "completion_tokens": 2})),
        );
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("crewgraph_step_duration_seconds_bucket{le=\"0.001\"} 1"), "{out}");
        assert!(out.contains("crewgraph_step_duration_seconds_bucket{le=\"0.01\"} 3"), "{out}");
        assert!(out.contains("crewgraph_step_duration_seconds_bucket{le=\"0.5\"} 4"), "{out}");
        assert!(out.contains("crewgraph_step_duration_seconds_count 4"), "{out}");
        assert!(out.contains("crewgraph_llm_tokens_total{model=\"m\",kind=\"prompt\"} 3"), "{out}");
    }
}
