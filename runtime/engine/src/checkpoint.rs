//! Checkpoints and the [`Checkpointer`] trait that stores them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::StorageError;
use crate::task::{TaskResult, TaskSpec};

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointSource {
    /// The run's input was applied.
    Input,
    /// A superstep finished.
    Loop,
    /// State was edited from outside (a reviewer's `edit` after a node).
    Update,
    /// The first checkpoint of a thread forked from another.
    Fork,
}

/// The state of a thread after a step. History is a tree: `parent_id` links
/// each checkpoint to the one before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub thread_id: String,
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub step: i64,
    pub source: CheckpointSource,
    pub values: Map<String, Value>,
    pub versions: BTreeMap<String, i64>,
    /// Tasks the next step runs; empty when the run has finished.
    pub next: Vec<TaskSpec>,
    /// Free-form: run id, nodes that ran, interrupts after nodes, fork origin.
    pub metadata: Map<String, Value>,
    pub created_at: i64,
}

/// How a changed channel is stored: the full value, or only what the step
/// added to an `append` / `messages` channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Blob {
    Full(Value),
    Append(Vec<Value>),
    Messages(Vec<Value>),
}

impl Blob {
    pub fn kind(&self) -> &'static str {
        match self {
            Blob::Full(_) => "full",
            Blob::Append(_) => "append",
            Blob::Messages(_) => "messages",
        }
    }

    pub fn from_parts(kind: &str, body: Value) -> Result<Self, StorageError> {
        let items = |body: Value| match body {
            Value::Array(items) => Ok(items),
            other => Err(StorageError::new(format!("delta blob holds {other} instead of a list"))),
        };
        Ok(match kind {
            "full" => Blob::Full(body),
            "append" => Blob::Append(items(body)?),
            "messages" => Blob::Messages(items(body)?),
            other => return Err(StorageError::new(format!("unknown blob kind `{other}`"))),
        })
    }

    /// The JSON body to store for this blob, serialised without copying the value.
    pub fn body_json(&self) -> String {
        match self {
            Blob::Full(v) => v.to_string(),
            Blob::Append(items) | Blob::Messages(items) => serde_json::to_string(items).unwrap_or_else(|_| "[]".into()),
        }
    }
}

/// A channel changed by a step, stored at `version`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelBlob {
    pub channel: String,
    pub version: i64,
    pub blob: Blob,
}

/// Which checkpoints to keep when pruning.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Keep at most this many newest checkpoints per thread.
    pub keep_last: Option<u32>,
    /// Drop checkpoints older than this many seconds (the latest one of a thread is always kept).
    pub max_age_s: Option<u64>,
}

/// Durable storage of checkpoints and pending writes.
///
/// `put` receives the whole checkpoint (a cache may keep it) plus the blobs of
/// the channels that changed; a database stores only the blobs, so a step
/// writes bytes in proportion to what it changed, not to the state's size.
#[async_trait]
pub trait Checkpointer: Send + Sync {
    async fn put(&self, checkpoint: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), StorageError>;

    /// The checkpoint `id` of `thread_id`, or its latest when `id` is `None`.
    async fn get(&self, thread_id: &str, id: Option<Uuid>) -> Result<Option<Checkpoint>, StorageError>;

    /// The id of the latest checkpoint of a thread, without its values.
    async fn latest_id(&self, thread_id: &str) -> Result<Option<Uuid>, StorageError> {
        Ok(self.get(thread_id, None).await?.map(|c| c.id))
    }

    /// Checkpoints of a thread, newest first (values included).
    async fn list(&self, thread_id: &str, limit: Option<u32>) -> Result<Vec<Checkpoint>, StorageError>;

    /// Saves one finished task's result against the checkpoint its step started from.
    async fn put_writes(&self, thread_id: &str, checkpoint_id: Uuid, result: &TaskResult) -> Result<(), StorageError>;

    /// Task results saved against a checkpoint.
    async fn get_writes(&self, thread_id: &str, checkpoint_id: Uuid) -> Result<Vec<TaskResult>, StorageError>;

    /// Copies `from`'s history up to and including `up_to` (all when `None`) into the new thread `to`.
    async fn copy_thread(&self, from: &str, to: &str, up_to: Option<Uuid>) -> Result<(), StorageError>;

    async fn delete_thread(&self, thread_id: &str) -> Result<(), StorageError>;

    /// Deletes checkpoints outside the retention policy; returns how many were deleted.
    async fn prune(&self, retention: &Retention) -> Result<u64, StorageError>;
}

/// Rebuilds a channel value from its blobs in version order: a full blob
/// resets the value, a delta appends (or, for `messages`, upserts by id).
pub fn replay_blobs<'a>(blobs: impl IntoIterator<Item = &'a Blob>) -> Value {
    let mut value = Value::Null;
    for blob in blobs {
        let (reducer, items) = match blob {
            Blob::Full(v) => {
                value = v.clone();
                continue;
            }
            Blob::Append(items) => (crate::Reducer::Append, items),
            Blob::Messages(items) => (crate::Reducer::Messages, items),
        };
        // A list value and a list write: the reducer cannot fail here.
        if !value.is_array() {
            value = Value::Array(vec![]);
        }
        let _ = reducer.apply("", &mut value, Value::Array(items.clone()));
    }
    value
}
