//! The superstep executor: runs the tasks of a step concurrently, saves each
//! finished task's writes at once, applies all writes deterministically,
//! follows edges, and writes one checkpoint per step.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checkpoint::{Blob, ChannelBlob, Checkpoint, CheckpointSource, Checkpointer};
use crate::error::EngineError;
use crate::event::{Event, EventSink};
use crate::graph::{END, Graph};
use crate::runs::{Decision, DecisionAction};
use crate::state::State;
use crate::task::{Interrupt, TaskSpec};

mod attempt;
mod step;

use step::StepEnd;

/// How an execution stopped without an error.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// No tasks are left: the run is done.
    Finished(Checkpoint),
    /// Stopped for people to decide on these interrupts.
    Waiting { checkpoint: Checkpoint, interrupts: Vec<Interrupt> },
    /// A reviewer rejected an `interrupt_before`/`interrupt_after` step.
    Rejected { checkpoint: Checkpoint, node: String, comment: Option<String> },
}

/// Runs one graph on behalf of one run.
pub struct Executor {
    pub graph: Arc<Graph>,
    pub checkpointer: Arc<dyn Checkpointer>,
    pub events: Arc<dyn EventSink>,
    pub cancel: CancellationToken,
    pub run_id: String,
    /// The caller made up the thread id just now, so there is nothing to load.
    pub new_thread: bool,
}

impl Executor {
    pub fn new(
        graph: Arc<Graph>,
        checkpointer: Arc<dyn Checkpointer>,
        events: Arc<dyn EventSink>,
        run_id: &str,
    ) -> Self {
        Self {
            graph,
            checkpointer,
            events,
            cancel: CancellationToken::new(),
            new_thread: false,
            run_id: run_id.to_string(),
        }
    }

    fn event(&self, kind: &str, thread_id: &str) -> Event {
        Event::new(kind, &self.run_id, thread_id)
    }

    /// Executes `thread_id` until it finishes or waits.
    ///
    /// With `input`, the input is applied first: to a new thread as its first
    /// checkpoint, or to a finished thread as a new turn. Without it, the
    /// thread continues from its latest checkpoint; `resume` maps interrupt ids
    /// to the decisions that answer them.
    pub async fn invoke(
        &self,
        thread_id: &str,
        input: Option<&Map<String, Value>>,
        resume: &HashMap<String, Decision>,
    ) -> Result<Outcome, EngineError> {
        let latest = if self.new_thread { None } else { self.checkpointer.get(thread_id, None).await? };
        self.invoke_from(thread_id, latest, input, resume).await
    }

    /// [`Executor::invoke`] for a caller that has already read the thread's latest checkpoint.
    pub async fn invoke_from(
        &self,
        thread_id: &str,
        latest: Option<Checkpoint>,
        input: Option<&Map<String, Value>>,
        resume: &HashMap<String, Decision>,
    ) -> Result<Outcome, EngineError> {
        let started = Instant::now();
        // Only a checkpoint loaded from the store can have task writes saved
        // against it (by a process that died); the ones written here cannot.
        let mut loaded = input.is_none();
        let mut ckpt = match (input, latest) {
            (Some(input), latest) => self.apply_input(thread_id, input, latest).await?,
            (None, Some(c)) => c,
            (None, None) => {
                return Err(EngineError::Invalid(format!("thread `{thread_id}` has no checkpoint to resume")));
            }
        };

        loop {
            if self.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if let Some(deadline) = self.graph.limits.deadline
                && started.elapsed() > deadline
            {
                return Err(EngineError::Deadline { deadline_ms: deadline.as_millis() as u64 });
            }
            if let Some(stop) = self.pending_after_interrupts(&mut ckpt, resume, &mut loaded).await? {
                return Ok(stop);
            }
            if ckpt.next.is_empty() {
                return Ok(Outcome::Finished(ckpt));
            }
            if ckpt.step >= self.graph.limits.max_steps as i64 {
                return Err(EngineError::MaxSteps { max_steps: self.graph.limits.max_steps });
            }
            match self.superstep(&mut ckpt, resume, loaded).await? {
                StepEnd::Next(next) => {
                    ckpt = next;
                    loaded = false;
                }
                StepEnd::Stop(outcome) => return Ok(outcome),
            }
        }
    }

    async fn apply_input(
        &self,
        thread_id: &str,
        input: &Map<String, Value>,
        latest: Option<Checkpoint>,
    ) -> Result<Checkpoint, EngineError> {
        let (mut state, parent, step) = match &latest {
            None => (State::initial(&self.graph.channels), None, 0),
            Some(c) if c.next.is_empty() => {
                (State { values: c.values.clone(), versions: c.versions.clone() }, Some(c.id), c.step + 1)
            }
            Some(_) => {
                return Err(EngineError::Invalid(format!(
                    "thread `{thread_id}` has an unfinished run; resume it or fork the thread"
                )));
            }
        };
        let mut changed: Vec<String> = Vec::new();
        for (k, v) in input {
            let spec = self.graph.channel(k).ok_or_else(|| {
                EngineError::Invalid(format!("input names unknown channel `{k}` (declared: {})", self.channel_names()))
            })?;
            let cur = state.values.entry(k.clone()).or_insert_with(|| spec.initial());
            if spec.reducer.is_incremental() {
                spec.reducer.apply(k, cur, v.clone())?;
            } else {
                *cur = v.clone();
            }
            changed.push(k.clone());
        }
        let blobs: Vec<ChannelBlob> = if latest.is_none() {
            // The first checkpoint stores every channel in full.
            state
                .values
                .iter()
                .map(|(k, v)| ChannelBlob { channel: k.clone(), version: 0, blob: Blob::Full(v.clone()) })
                .collect()
        } else {
            changed
                .iter()
                .map(|k| ChannelBlob { channel: k.clone(), version: step, blob: Blob::Full(state.values[k].clone()) })
                .collect()
        };
        for b in &blobs {
            state.versions.insert(b.channel.clone(), b.version);
        }
        let next = self.schedule(self.graph.entry.iter().cloned(), &Arc::new(state.to_value()))?;
        let ckpt = Checkpoint {
            thread_id: thread_id.to_string(),
            id: Uuid::now_v7(),
            parent_id: parent,
            step,
            source: CheckpointSource::Input,
            values: state.values,
            versions: state.versions,
            next,
            metadata: self.metadata(vec![]),
            created_at: crate::now_ms(),
        };
        self.save(&ckpt, &blobs).await?;
        Ok(ckpt)
    }

    fn metadata(&self, nodes: Vec<String>) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("run_id".into(), json!(self.run_id));
        if !nodes.is_empty() {
            m.insert("nodes".into(), json!(nodes));
        }
        m
    }

    fn channel_names(&self) -> String {
        self.graph.channels.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    async fn save(&self, ckpt: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), EngineError> {
        self.checkpointer.put(ckpt, blobs).await?;
        let bytes: usize = blobs.iter().map(|b| b.blob.body_json().len()).sum();
        self.events.emit(
            self.event("checkpoint.saved", &ckpt.thread_id)
                .step(ckpt.step)
                .data(json!({"checkpoint_id": ckpt.id, "channels": blobs.len(), "bytes": bytes})),
        );
        Ok(())
    }

    /// Handles `interrupt_after` markers of the latest checkpoint: waits while
    /// undecided, cancels on reject, applies an edit as a state update.
    async fn pending_after_interrupts(
        &self,
        ckpt: &mut Checkpoint,
        resume: &HashMap<String, Decision>,
        loaded: &mut bool,
    ) -> Result<Option<Outcome>, EngineError> {
        let Some(Value::Array(pending)) = ckpt.metadata.get("interrupt_after").cloned() else {
            return Ok(None);
        };
        let interrupts: Vec<Interrupt> = pending.into_iter().filter_map(|v| serde_json::from_value(v).ok()).collect();
        let undecided: Vec<Interrupt> = interrupts.iter().filter(|i| !resume.contains_key(&i.id)).cloned().collect();
        if !undecided.is_empty() {
            return Ok(Some(Outcome::Waiting { checkpoint: ckpt.clone(), interrupts: undecided }));
        }
        let mut patch = Map::new();
        for i in &interrupts {
            let d = &resume[&i.id];
            match d.action {
                DecisionAction::Reject => {
                    return Ok(Some(Outcome::Rejected {
                        checkpoint: ckpt.clone(),
                        node: i.node.clone(),
                        comment: d.comment.clone(),
                    }));
                }
                DecisionAction::Edit => match &d.value {
                    Some(Value::Object(m)) => patch.extend(m.clone()),
                    _ => {
                        return Err(EngineError::Invalid(
                            "an `edit` after a node needs an object of channel values".into(),
                        ));
                    }
                },
                DecisionAction::Approve | DecisionAction::Respond => {}
            }
        }
        let mut next = self.update(ckpt, &patch, CheckpointSource::Update).await?;
        next.metadata.remove("interrupt_after");
        *ckpt = next;
        *loaded = false;
        Ok(None)
    }

    /// Writes a checkpoint that sets channels to new values (an edit or a fork
    /// patch), keeping the tasks that were due.
    pub async fn update(
        &self,
        base: &Checkpoint,
        patch: &Map<String, Value>,
        source: CheckpointSource,
    ) -> Result<Checkpoint, EngineError> {
        let step = base.step + 1;
        let mut values = base.values.clone();
        let mut versions = base.versions.clone();
        let mut blobs = Vec::new();
        for (k, v) in patch {
            if self.graph.channel(k).is_none() {
                return Err(EngineError::Invalid(format!(
                    "patch names unknown channel `{k}` (declared: {})",
                    self.channel_names()
                )));
            }
            values.insert(k.clone(), v.clone());
            versions.insert(k.clone(), step);
            blobs.push(ChannelBlob { channel: k.clone(), version: step, blob: Blob::Full(v.clone()) });
        }
        let mut metadata = base.metadata.clone();
        metadata.insert("run_id".into(), json!(self.run_id));
        metadata.remove("interrupt_after");
        let ckpt = Checkpoint {
            thread_id: base.thread_id.clone(),
            id: Uuid::now_v7(),
            parent_id: Some(base.id),
            step,
            source,
            values,
            versions,
            next: base.next.clone(),
            metadata,
            created_at: crate::now_ms(),
        };
        self.save(&ckpt, &blobs).await?;
        Ok(ckpt)
    }

    /// Turns triggered node names into tasks; fan-out nodes become one task per item.
    fn schedule(
        &self,
        targets: impl IntoIterator<Item = String>,
        state: &Arc<Value>,
    ) -> Result<Vec<TaskSpec>, EngineError> {
        let mut tasks = Vec::new();
        let mut seen = HashSet::new();
        let mut queue: Vec<String> = targets.into_iter().collect();
        queue.reverse();
        let mut expansions = 0;
        while let Some(name) = queue.pop() {
            if name == END || !seen.insert(name.clone()) {
                continue;
            }
            let spec = self.graph.node(&name).ok_or_else(|| EngineError::Invalid(format!("unknown node `{name}`")))?;
            match spec
                .node
                .fan_out(state)
                .map_err(|e| EngineError::FanOut { node: name.clone(), message: e.message })?
            {
                None => tasks.push(TaskSpec::node(name)),
                Some(items) if items.is_empty() => {
                    // Nothing to fan out over: continue as if the node had run.
                    expansions += 1;
                    if expansions > self.graph.nodes.len() {
                        break;
                    }
                    let after = self.follow_edges(&name, state)?;
                    queue.extend(after.into_iter().rev());
                }
                Some(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        tasks.push(TaskSpec { node: name.clone(), index: i as u32, input: Some(item) });
                    }
                }
            }
        }
        Ok(tasks)
    }

    fn follow_edges(&self, node: &str, state: &Arc<Value>) -> Result<Vec<String>, EngineError> {
        let mut out = Vec::new();
        for e in self.graph.edges_from(node) {
            let fire = match &e.condition {
                None => true,
                Some(c) => {
                    c.eval(state).map_err(|message| EngineError::Condition { from: node.to_string(), message })?
                }
            };
            if fire {
                out.push(e.to.clone());
            }
        }
        Ok(out)
    }
}
