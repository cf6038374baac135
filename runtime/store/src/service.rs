//! What the service adds on top of the engine's stores: the run queue that
//! workers lease runs from, the per-run event log that SSE replays, and API
//! keys. Implemented once for Postgres and SQLite (`service_sql.rs`).

use async_trait::async_trait;
use crewgraph_engine::{Approval, ApprovalStatus, Event, Run, RunStatus, StorageError};
use serde::{Deserialize, Serialize};

/// What a new run does when its thread already has a queued, running or waiting run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Multitask {
    /// Refuse the new run (409).
    #[default]
    Reject,
    /// Queue it behind the thread's runs.
    Enqueue,
    /// Cancel the thread's active runs (a running one at its next heartbeat), then run.
    Interrupt,
    /// As `interrupt`, and the thread forgets them: their checkpoints (and
    /// their subgraphs') are deleted before the new run starts, so it starts
    /// from the state the thread had before them; their approvals go too.
    /// Their run records and events stay, cancelled, with `rolled back by run <id>`.
    Rollback,
}

/// A run to queue, with what makes its submission idempotent.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The run as it will be stored (status `queued`).
    pub run: Run,
    pub idempotency_key: Option<String>,
    /// A digest of the request body: the same key with another body is a conflict.
    pub request_hash: String,
    pub webhook: Option<String>,
    /// The W3C `traceparent` of the submitting request, for the run's executions.
    pub traceparent: Option<String>,
    pub multitask: Multitask,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created {
        run: Run,
        /// Runs of the thread this one cancelled at once (`interrupt`, `rollback`);
        /// a run a worker holds is cancelled by its worker instead.
        cancelled: Vec<Run>,
    },
    /// The idempotency key was used before with the same body: that run.
    Replayed(Run),
    /// The idempotency key was used before with another body.
    KeyReused { run_id: String },
    /// The thread has an active run and the strategy is `reject`.
    ThreadBusy { run_id: String },
}

/// A run a worker holds until `lease_expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub run: Run,
    /// How many times the run has been claimed, this claim included.
    pub attempts: i32,
    pub max_attempts: i32,
    /// Where the run's webhooks go, if it asked for them.
    pub webhook: Option<String>,
    /// The trace the run's executions join.
    pub traceparent: Option<String>,
}

/// What the heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Extended,
    /// Someone asked to cancel the run: stop it.
    CancelRequested,
    /// The lease expired and another worker may hold the run: stop at once.
    Lost,
}

/// A page of runs, newest first; `after` is the last run of the previous page.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub tenant: String,
    pub status: Option<RunStatus>,
    pub graph: Option<String>,
    pub thread_id: Option<String>,
    pub limit: u32,
    /// `(created_at, id)` of the last run already seen.
    pub after: Option<(i64, String)>,
}

/// The approvals a reviewer may see.
#[derive(Debug, Clone, Default)]
pub struct ApprovalQuery {
    pub tenant: String,
    pub status: Option<ApprovalStatus>,
    pub run_id: Option<String>,
    pub graph: Option<String>,
}

/// Queue depth and the age of the oldest ready run, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub ready: i64,
    pub leased: i64,
    pub oldest_ready_ms: i64,
    pub approvals_pending: i64,
}

/// Runs as the service sees them: submitted, leased by workers, scoped by tenant.
#[async_trait]
pub trait RunQueue: Send + Sync {
    /// Queues a run, honouring its idempotency key and the thread's multitask strategy.
    async fn submit(&self, submission: &Submission) -> Result<Submitted, StorageError>;
    /// Leases the oldest ready run (or one whose lease expired) whose thread
    /// has nothing older queued and nothing running or waiting.
    async fn claim(&self, worker: &str, lease_ms: i64) -> Result<Option<Lease>, StorageError>;
    async fn heartbeat(&self, run_id: &str, worker: &str, lease_ms: i64) -> Result<Heartbeat, StorageError>;
    /// Gives the run back: off the queue, or ready again when it waits and
    /// every approval has been decided meanwhile. A run that stopped to wait
    /// while a cancellation was requested (cancel, or a newer run's
    /// `interrupt`/`rollback`) is cancelled instead, and returned.
    async fn release(&self, run_id: &str, worker: &str) -> Result<Option<Run>, StorageError>;
    /// Puts a run back on the queue as it is (shutdown before it finished):
    /// the next worker resumes it from its last checkpoint.
    async fn hand_back(&self, run_id: &str, worker: &str) -> Result<(), StorageError>;
    /// Puts a waiting run whose approvals are all decided back on the queue;
    /// false when it is not waiting or still has pending approvals.
    async fn requeue(&self, run_id: &str) -> Result<bool, StorageError>;
    /// Deletes the checkpoints of the runs `run` rolled back (multitask
    /// `rollback`), on its thread and its subgraphs' threads, from the first
    /// each wrote, and their approvals. Called by the worker before it executes `run`, when none of
    /// them can be writing; a no-op the second time. Returns checkpoints deleted.
    async fn apply_rollback(&self, run: &Run) -> Result<u64, StorageError>;
    /// Cancels a queued or waiting run now; marks a leased one for its worker.
    /// `None` when the tenant has no such run.
    async fn cancel(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, StorageError>;
    async fn run_of(&self, tenant: &str, run_id: &str) -> Result<Option<Run>, StorageError>;
    async fn runs(&self, query: &RunQuery) -> Result<Vec<Run>, StorageError>;
    /// The webhook URL given at submission.
    async fn webhook_of(&self, run_id: &str) -> Result<Option<String>, StorageError>;
    /// Whether the tenant has a run on the thread (threads belong to their runs' tenant).
    async fn owns_thread(&self, tenant: &str, thread_id: &str) -> Result<bool, StorageError>;
    async fn approvals(&self, query: &ApprovalQuery) -> Result<Vec<Approval>, StorageError>;
    async fn approval_of(&self, tenant: &str, id: &str) -> Result<Option<Approval>, StorageError>;
    /// Pending approvals whose expiry has passed (any tenant), oldest first.
    async fn expired_approvals(&self, now: i64, limit: u32) -> Result<Vec<Approval>, StorageError>;
    async fn stats(&self) -> Result<QueueStats, StorageError>;
    /// Counts of runs by status, for metrics.
    async fn status_counts(&self) -> Result<Vec<(String, i64)>, StorageError>;
}

/// An event with its position in its run's log (the SSE id).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: Event,
}

/// Every run's events, in order.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Appends in the given order, numbering each run's events 1, 2, ...
    async fn append(&self, events: &[Event]) -> Result<(), StorageError>;
    /// Events of `run_id` after `after_seq`, oldest first.
    async fn events_after(&self, run_id: &str, after_seq: i64, limit: u32) -> Result<Vec<StoredEvent>, StorageError>;
}

/// An API key as stored (the key itself is never stored, only its SHA-256).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn create_key(&self, key: &ApiKey, key_hash: &str) -> Result<(), StorageError>;
    /// The live key with this hash.
    async fn key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StorageError>;
}

/// A webhook call to make (or made): one row of the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub run_id: String,
    pub tenant: String,
    pub url: String,
    /// `run.succeeded`, `run.failed`, `run.cancelled` or `approval.requested`.
    pub event: String,
    pub body: serde_json::Value,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered {
        status: i32,
    },
    /// Try again at `retry_at`, or give up when it is `None`.
    Failed {
        status: Option<i32>,
        error: String,
        retry_at: Option<i64>,
    },
}

/// Webhook deliveries, sent at least once by whichever worker claims them.
#[async_trait]
pub trait WebhookQueue: Send + Sync {
    async fn enqueue_delivery(&self, delivery: &Delivery) -> Result<(), StorageError>;
    /// Leases up to `limit` due deliveries for `lease_ms`.
    async fn claim_deliveries(&self, limit: u32, lease_ms: i64) -> Result<Vec<Delivery>, StorageError>;
    async fn record_attempt(&self, id: &str, attempt: &Attempt) -> Result<(), StorageError>;
    /// The delivery log of a run, oldest first.
    async fn deliveries(&self, tenant: &str, run_id: &str) -> Result<Vec<Delivery>, StorageError>;
}

/// One version of a definition registered over the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisteredGraph {
    pub tenant: String,
    pub name: String,
    pub version: i32,
    pub source: String,
    /// SHA-256 of `source`, hex.
    pub digest: String,
    pub created_at: i64,
}

impl RegisteredGraph {
    /// What a run records in `definition` to pin this version.
    pub fn reference(&self) -> String {
        format!("{REGISTERED_PREFIX}{}@{}", self.name, self.version)
    }
}

/// `runs.definition` of a run of a registered graph: `registered:<name>@<version>`.
pub const REGISTERED_PREFIX: &str = "registered:";

/// The name and version a `registered:` reference pins, if it is one.
pub fn parse_reference(definition: &str) -> Option<(&str, i32)> {
    let (name, version) = definition.strip_prefix(REGISTERED_PREFIX)?.rsplit_once('@')?;
    Some((name, version.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Registered {
    /// A new version.
    Created(RegisteredGraph),
    /// The latest version already has this text.
    Unchanged(RegisteredGraph),
}

/// Definitions registered over the API, shared by every replica.
#[async_trait]
pub trait GraphRegistry: Send + Sync {
    /// Stores `source` as the next version of `name`, unless the latest has the same digest.
    async fn register_graph(
        &self,
        tenant: &str,
        name: &str,
        source: &str,
        digest: &str,
    ) -> Result<Registered, StorageError>;
    /// A version of `name`, the latest when `version` is `None`.
    async fn registered_graph(
        &self,
        tenant: &str,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<RegisteredGraph>, StorageError>;
    /// The latest version of each of the tenant's definitions, by name.
    async fn registered_graphs(&self, tenant: &str) -> Result<Vec<RegisteredGraph>, StorageError>;
}
