//! An in-memory [`Checkpointer`] and [`RunStore`] for tests and throwaway runs.
//! It stores blobs like the databases do, so it exercises the same replay path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use uuid::Uuid;

use crate::checkpoint::{Blob, ChannelBlob, Checkpoint, Checkpointer, Retention, replay_blobs};
use crate::error::StorageError;
use crate::runs::{Approval, ApprovalStatus, Decision, Run, RunStatus, RunStore};
use crate::task::TaskResult;

#[derive(Default)]
struct Inner {
    /// thread -> checkpoints in creation order (values emptied; rebuilt from blobs).
    checkpoints: HashMap<String, Vec<Checkpoint>>,
    /// (thread, channel) -> version -> blob
    blobs: HashMap<(String, String), BTreeMap<i64, Blob>>,
    writes: HashMap<(String, Uuid), Vec<TaskResult>>,
    runs: BTreeMap<String, Run>,
    approvals: BTreeMap<String, Approval>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StorageError> {
        self.inner.lock().map_err(|_| StorageError::new("memory store lock poisoned"))
    }
}

impl Inner {
    fn hydrate(&self, mut c: Checkpoint) -> Checkpoint {
        for (channel, version) in c.versions.clone() {
            let blobs = self.blobs.get(&(c.thread_id.clone(), channel.clone()));
            let value = replay_blobs(blobs.into_iter().flat_map(|m| m.range(..=version).map(|(_, b)| b)));
            c.values.insert(channel, value);
        }
        c
    }
}

#[async_trait]
impl Checkpointer for MemoryStore {
    async fn put(&self, checkpoint: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), StorageError> {
        let mut inner = self.lock()?;
        for b in blobs {
            inner
                .blobs
                .entry((checkpoint.thread_id.clone(), b.channel.clone()))
                .or_default()
                .insert(b.version, b.blob.clone());
        }
        let mut stored = checkpoint.clone();
        stored.values.clear();
        inner.checkpoints.entry(checkpoint.thread_id.clone()).or_default().push(stored);
        Ok(())
    }

    async fn get(&self, thread_id: &str, id: Option<Uuid>) -> Result<Option<Checkpoint>, StorageError> {
        let inner = self.lock()?;
        let list = inner.checkpoints.get(thread_id);
        let found = match id {
            None => list.and_then(|l| l.last()).cloned(),
            Some(id) => list.and_then(|l| l.iter().find(|c| c.id == id)).cloned(),
        };
        Ok(found.map(|c| inner.hydrate(c)))
    }

    async fn list(&self, thread_id: &str, limit: Option<u32>) -> Result<Vec<Checkpoint>, StorageError> {
        let inner = self.lock()?;
        let list = inner.checkpoints.get(thread_id).cloned().unwrap_or_default();
        let n = limit.map(|l| l as usize).unwrap_or(usize::MAX);
        Ok(list.into_iter().rev().take(n).map(|c| inner.hydrate(c)).collect())
    }

    async fn put_writes(&self, thread_id: &str, checkpoint_id: Uuid, result: &TaskResult) -> Result<(), StorageError> {
        let mut inner = self.lock()?;
        let list = inner.writes.entry((thread_id.to_string(), checkpoint_id)).or_default();
        list.retain(|r| r.task_id != result.task_id);
        list.push(result.clone());
        Ok(())
    }

    async fn get_writes(&self, thread_id: &str, checkpoint_id: Uuid) -> Result<Vec<TaskResult>, StorageError> {
        let inner = self.lock()?;
        Ok(inner.writes.get(&(thread_id.to_string(), checkpoint_id)).cloned().unwrap_or_default())
    }

    async fn copy_thread(&self, from: &str, to: &str, up_to: Option<Uuid>) -> Result<(), StorageError> {
        let mut inner = self.lock()?;
        let list = inner.checkpoints.get(from).cloned().unwrap_or_default();
        let end = match up_to {
            Some(id) => {
                list.iter()
                    .position(|c| c.id == id)
                    .ok_or_else(|| StorageError::new(format!("checkpoint {id} not in thread {from}")))?
                    + 1
            }
            None => list.len(),
        };
        let max_step = list.get(end.wrapping_sub(1)).map(|c| c.step).unwrap_or(-1);
        let copied: Vec<Checkpoint> = list[..end]
            .iter()
            .cloned()
            .map(|mut c| {
                c.thread_id = to.to_string();
                c
            })
            .collect();
        let blobs: Vec<_> = inner
            .blobs
            .iter()
            .filter(|((t, _), _)| t == from)
            .map(|((_, ch), m)| {
                (ch.clone(), m.range(..=max_step).map(|(v, b)| (*v, b.clone())).collect::<BTreeMap<_, _>>())
            })
            .collect();
        for (ch, m) in blobs {
            inner.blobs.insert((to.to_string(), ch), m);
        }
        inner.checkpoints.insert(to.to_string(), copied);
        Ok(())
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), StorageError> {
        let mut inner = self.lock()?;
        inner.checkpoints.remove(thread_id);
        inner.blobs.retain(|(t, _), _| t != thread_id);
        inner.writes.retain(|(t, _), _| t != thread_id);
        Ok(())
    }

    async fn prune(&self, retention: &Retention) -> Result<u64, StorageError> {
        let mut inner = self.lock()?;
        let now = crate::now_ms();
        let mut deleted = 0;
        for list in inner.checkpoints.values_mut() {
            let n = list.len();
            let keep_from = retention.keep_last.map(|k| n.saturating_sub(k as usize)).unwrap_or(0);
            let mut kept = Vec::new();
            for (i, c) in list.drain(..).enumerate() {
                let too_old = retention.max_age_s.is_some_and(|s| now - c.created_at > s as i64 * 1000);
                if i + 1 == n || (i >= keep_from && !too_old) {
                    kept.push(c);
                } else {
                    deleted += 1;
                }
            }
            *list = kept;
        }
        Ok(deleted)
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create_run(&self, run: &Run) -> Result<(), StorageError> {
        self.lock()?.runs.insert(run.id.clone(), run.clone());
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<Option<Run>, StorageError> {
        Ok(self.lock()?.runs.get(id).cloned())
    }

    async fn update_run(&self, run: &Run) -> Result<(), StorageError> {
        self.lock()?.runs.insert(run.id.clone(), run.clone());
        Ok(())
    }

    async fn list_runs(&self, status: Option<RunStatus>, limit: u32) -> Result<Vec<Run>, StorageError> {
        let inner = self.lock()?;
        Ok(inner
            .runs
            .values()
            .rev()
            .filter(|r| status.is_none_or(|s| r.status == s))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn create_approval(&self, approval: &Approval) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        let exists = inner
            .approvals
            .values()
            .any(|a| a.thread_id == approval.thread_id && a.interrupt_id == approval.interrupt_id);
        if !exists {
            inner.approvals.insert(approval.id.clone(), approval.clone());
        }
        Ok(!exists)
    }

    async fn get_approval(&self, id: &str) -> Result<Option<Approval>, StorageError> {
        Ok(self.lock()?.approvals.get(id).cloned())
    }

    async fn list_approvals(
        &self,
        status: Option<ApprovalStatus>,
        run_id: Option<&str>,
    ) -> Result<Vec<Approval>, StorageError> {
        let inner = self.lock()?;
        let mut v: Vec<Approval> = inner
            .approvals
            .values()
            .filter(|a| status.is_none_or(|s| a.status == s) && run_id.is_none_or(|r| a.run_id == r))
            .cloned()
            .collect();
        v.sort_by_key(|a| a.created_at);
        Ok(v)
    }

    async fn decide_approval(&self, id: &str, decision: &Decision, at: i64) -> Result<bool, StorageError> {
        let mut inner = self.lock()?;
        match inner.approvals.get_mut(id) {
            Some(a) if a.status == ApprovalStatus::Pending => {
                a.status = ApprovalStatus::Decided;
                a.decision = Some(decision.clone());
                a.decided_at = Some(at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
