//! Run and approval records, and the [`RunStore`] that keeps them.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::StorageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "waiting" => RunStatus::Waiting,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }
}

/// One execution of a graph on a thread (the API's run object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    /// The owner: every API query is scoped by it.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    pub graph: String,
    pub thread_id: String,
    pub status: RunStatus,
    pub input: Value,
    pub output: Value,
    /// `{"message", "node"}` when the run failed.
    pub error: Value,
    pub usage: Value,
    /// Where the definition came from (file path), so a new process can resume it.
    pub definition: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Run {
    pub fn new(graph: &str, thread_id: &str, input: Value) -> Self {
        let now = crate::now_ms();
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            tenant: default_tenant(),
            graph: graph.to_string(),
            thread_id: thread_id.to_string(),
            status: RunStatus::Queued,
            input,
            output: Value::Null,
            error: Value::Null,
            usage: Value::Object(Default::default()),
            definition: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The tenant of runs made without one (the CLI, the embedded default).
pub const DEFAULT_TENANT: &str = "default";

fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionAction {
    Approve,
    Reject,
    Edit,
    Respond,
}

impl DecisionAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Approve => "approve",
            DecisionAction::Reject => "reject",
            DecisionAction::Edit => "edit",
            DecisionAction::Respond => "respond",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "approve" => DecisionAction::Approve,
            "reject" => DecisionAction::Reject,
            "edit" => DecisionAction::Edit,
            "respond" => DecisionAction::Respond,
            _ => return None,
        })
    }
}

/// A reviewer's decision; it is what the interrupted node sees as its resume value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub action: DecisionAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalStatus {
    Pending,
    Decided,
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Decided => "decided",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "decided" => ApprovalStatus::Decided,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// A pending or decided human step (the API's approval object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub run_id: String,
    pub thread_id: String,
    /// The interrupt this approval answers (unique per thread).
    pub interrupt_id: String,
    pub node: String,
    pub payload: Value,
    pub actions: Vec<String>,
    pub status: ApprovalStatus,
    pub decision: Option<Decision>,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    pub expires_at: Option<i64>,
    /// Taken for the reviewer at `expires_at`; reject when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_expiry: Option<DecisionAction>,
}

/// Durable run and approval records.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, run: &Run) -> Result<(), StorageError>;
    /// Like `create_run`, but the commit may complete asynchronously: for a
    /// caller that writes a checkpoint right after, whose synchronous commit
    /// makes this one durable too (Postgres flushes the WAL in order).
    async fn create_run_deferred(&self, run: &Run) -> Result<(), StorageError> {
        self.create_run(run).await
    }
    async fn get_run(&self, id: &str) -> Result<Option<Run>, StorageError>;
    /// Writes status, output, error, usage and `updated_at`.
    async fn update_run(&self, run: &Run) -> Result<(), StorageError>;
    /// Newest first.
    async fn list_runs(&self, status: Option<RunStatus>, limit: u32) -> Result<Vec<Run>, StorageError>;

    /// Inserts the approval unless one with the same `(thread_id, interrupt_id)`
    /// exists; returns whether it was created.
    async fn create_approval(&self, approval: &Approval) -> Result<bool, StorageError>;
    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StorageError>;
    /// Oldest first.
    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        run_id: Option<&str>,
    ) -> Result<Vec<Approval>, StorageError>;
    /// Records the decision if the approval is still pending, atomically;
    /// returns false when another decision got there first.
    async fn decide_approval(&self, id: &str, decision: &Decision, at: i64) -> Result<bool, StorageError>;
}
