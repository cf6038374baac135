//! Run events and the [`EventSink`] they go through.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Something that happened in a run: `run.started`, `node.started`, `node.finished`,
/// `node.retry`, `checkpoint.saved`, `approval.requested`, `approval.decided`,
/// `run.waiting`, `run.succeeded`, `run.failed`, `run.cancelled`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub kind: String,
    pub run_id: String,
    pub thread_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    #[serde(default)]
    pub data: Value,
    pub at: i64,
}

impl Event {
    pub fn new(kind: &str, run_id: &str, thread_id: &str) -> Self {
        Self {
            kind: kind.to_string(),
            run_id: run_id.to_string(),
            thread_id: thread_id.to_string(),
            node: None,
            step: None,
            data: Value::Null,
            at: crate::now_ms(),
        }
    }

    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    pub fn step(mut self, step: i64) -> Self {
        self.step = Some(step);
        self
    }

    pub fn data(mut self, data: Value) -> Self {
        self.data = data;
        self
    }
}

/// Receives events as they happen. Emitting must not block the run: sinks
/// that do I/O hand events to a queue.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// Drops every event.
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: Event) {}
}

impl EventSink for tokio::sync::mpsc::UnboundedSender<Event> {
    fn emit(&self, event: Event) {
        let _ = self.send(event);
    }
}

/// Keeps every event in memory (tests, short CLI runs).
#[derive(Default)]
pub struct CollectSink(pub Mutex<Vec<Event>>);

impl CollectSink {
    pub fn kinds(&self) -> Vec<String> {
        self.0.lock().map(|v| v.iter().map(|e| e.kind.clone()).collect()).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl EventSink for CollectSink {
    fn emit(&self, event: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

/// Sends each event to several sinks.
pub struct Tee(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Tee {
    fn emit(&self, event: Event) {
        for sink in &self.0 {
            sink.emit(event.clone());
        }
    }
}
