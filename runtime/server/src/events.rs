//! Run events on their way to the log and to live subscribers.
//!
//! The engine emits without waiting; [`Recorder`] queues events and one task
//! appends them in order to the store's event log, then wakes every SSE
//! stream of this process. A stream reads only from the log, so what a
//! client sees is in order and never twice, whichever replica it talks to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crewgraph_engine::{Event, EventSink};
use crewgraph_store::{EventLog, RedisCache};
use tokio::sync::{broadcast, mpsc, watch};

/// The `EventSink` of every run this process executes or decides.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Event>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Events emitted so far (the writer writes them in this order).
    emitted: AtomicU64,
    /// How many of them are written.
    written: watch::Receiver<u64>,
}

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        self.metrics.observe(&event);
        if self.tx.send(event).is_ok() {
            self.emitted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Recorder {
    /// Waits until every event emitted before the call is written, or `limit` passes.
    pub async fn flushed(&self, limit: Duration) {
        let target = self.emitted.load(Ordering::SeqCst);
        let mut written = self.written.clone();
        let _ = tokio::time::timeout(limit, written.wait_for(|n| *n >= target)).await;
    }
}

/// Wake-ups for SSE streams and `wait` calls: the id of a run that has new events.
pub type Bus = broadcast::Sender<Arc<str>>;

/// Starts the writer task; it ends when every `Recorder` clone is dropped
/// and the queue is drained.
pub fn recorder(
    log: Arc<dyn EventLog>,
    bus: Bus,
    redis: Option<RedisCache>,
) -> (Recorder, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let (written_tx, written) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            // A database that is down for a moment delays events; it does not drop them.
            let mut delay = Duration::from_millis(50);
            while let Err(e) = log.append(&batch).await {
                tracing::warn!(error = %e, events = batch.len(), "cannot record run events; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            written_tx.send_modify(|n| *n += batch.len() as u64);
            let mut runs: Vec<&str> = batch.iter().map(|e| e.run_id.as_str()).collect();
            runs.dedup();
            for run in &runs {
                let _ = bus.send(Arc::from(*run));
            }
            // Other replicas' streams learn of them through Redis (or by polling without it).
            if let Some(redis) = &redis
                && let Err(e) = redis.publish_events(&runs).await
            {
                tracing::debug!(error = %e, "cannot announce events through Redis; other replicas poll");
            }
            batch.clear();
        }
    });
    (Recorder { tx, metrics: Arc::default(), emitted: AtomicU64::new(0), written }, task)
}

/// Kinds after which a run's stream has nothing more to say.
pub fn is_terminal(kind: &str) -> bool {
    matches!(kind, "run.succeeded" | "run.failed" | "run.cancelled")
}
