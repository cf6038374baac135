//! The superstep executor: runs the tasks of a step concurrently, saves each
//! finished task's writes at once, applies all writes deterministically,
//! follows edges, and writes one checkpoint per step.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checkpoint::{Blob, ChannelBlob, Checkpoint, CheckpointSource, Checkpointer};
use crate::error::{EngineError, NodeError};
use crate::event::{Event, EventSink};
use crate::graph::{END, Graph, NodeSpec};
use crate::node::{NodeContext, NodeOutput};
use crate::runs::{Decision, DecisionAction};
use crate::state::State;
use crate::task::{Interrupt, InterruptKind, TaskResult, TaskSpec};

/// How an execution stopped without an error.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// No tasks are left: the run is done.
    Finished(Checkpoint),
    /// Stopped for people to decide on these interrupts.
    Waiting {
        checkpoint: Checkpoint,
        interrupts: Vec<Interrupt>,
    },
    /// A reviewer rejected an `interrupt_before`/`interrupt_after` step.
    Rejected {
        checkpoint: Checkpoint,
        node: String,
        comment: Option<String>,
    },
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
        let latest = if self.new_thread {
            None
        } else {
            self.checkpointer.get(thread_id, None).await?
        };
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
                return Err(EngineError::Invalid(format!(
                    "thread `{thread_id}` has no checkpoint to resume"
                )));
            }
        };

        loop {
            if self.cancel.is_cancelled() {
                return Err(EngineError::Cancelled);
            }
            if let Some(deadline) = self.graph.limits.deadline
                && started.elapsed() > deadline
            {
                return Err(EngineError::Deadline {
                    deadline_ms: deadline.as_millis() as u64,
                });
            }
            if let Some(stop) = self.pending_after_interrupts(&mut ckpt, resume, &mut loaded).await? {
                return Ok(stop);
            }
            if ckpt.next.is_empty() {
                return Ok(Outcome::Finished(ckpt));
            }
            if ckpt.step >= self.graph.limits.max_steps as i64 {
                return Err(EngineError::MaxSteps {
                    max_steps: self.graph.limits.max_steps,
                });
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
            Some(c) if c.next.is_empty() => (
                State {
                    values: c.values.clone(),
                    versions: c.versions.clone(),
                },
                Some(c.id),
                c.step + 1,
            ),
            Some(_) => {
                return Err(EngineError::Invalid(format!(
                    "thread `{thread_id}` has an unfinished run; resume it or fork the thread"
                )));
            }
        };
        let mut changed: Vec<String> = Vec::new();
        for (k, v) in input {
            let spec = self.graph.channel(k).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "input names unknown channel `{k}` (declared: {})",
                    self.channel_names()
                ))
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
                .map(|(k, v)| ChannelBlob {
                    channel: k.clone(),
                    version: 0,
                    blob: Blob::Full(v.clone()),
                })
                .collect()
        } else {
            changed
                .iter()
                .map(|k| ChannelBlob {
                    channel: k.clone(),
                    version: step,
                    blob: Blob::Full(state.values[k].clone()),
                })
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
        self.graph
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    async fn save(&self, ckpt: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), EngineError> {
        self.checkpointer.put(ckpt, blobs).await?;
        let bytes: usize = blobs.iter().map(|b| b.blob.to_body().to_string().len()).sum();
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
        let interrupts: Vec<Interrupt> = pending
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        let undecided: Vec<Interrupt> = interrupts
            .iter()
            .filter(|i| !resume.contains_key(&i.id))
            .cloned()
            .collect();
        if !undecided.is_empty() {
            return Ok(Some(Outcome::Waiting {
                checkpoint: ckpt.clone(),
                interrupts: undecided,
            }));
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
            blobs.push(ChannelBlob {
                channel: k.clone(),
                version: step,
                blob: Blob::Full(v.clone()),
            });
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
            let spec = self
                .graph
                .node(&name)
                .ok_or_else(|| EngineError::Invalid(format!("unknown node `{name}`")))?;
            match spec.node.fan_out(state).map_err(|e| EngineError::FanOut {
                node: name.clone(),
                message: e.message,
            })? {
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
                        tasks.push(TaskSpec {
                            node: name.clone(),
                            index: i as u32,
                            input: Some(item),
                        });
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
                Some(c) => c.eval(state).map_err(|message| EngineError::Condition {
                    from: node.to_string(),
                    message,
                })?,
            };
            if fire {
                out.push(e.to.clone());
            }
        }
        Ok(out)
    }

    /// Runs the tasks `ckpt` schedules. The state moves into a shared snapshot
    /// for the tasks and back out afterwards, so a step never deep-copies it.
    async fn superstep(
        &self,
        ckpt: &mut Checkpoint,
        resume: &HashMap<String, Decision>,
        loaded: bool,
    ) -> Result<StepEnd, EngineError> {
        let thread_id = ckpt.thread_id.as_str();
        let saved: HashMap<String, TaskResult> = if loaded {
            let writes = self.checkpointer.get_writes(thread_id, ckpt.id).await?;
            writes.into_iter().map(|r| (r.task_id.clone(), r)).collect()
        } else {
            HashMap::new()
        };
        let state = Arc::new(Value::Object(std::mem::take(&mut ckpt.values)));
        let durable_each = ckpt.next.len() > 1;

        let mut results: Vec<Option<TaskResult>> = vec![None; ckpt.next.len()];
        let mut waiting: Vec<Interrupt> = Vec::new();
        let mut jobs = Vec::new();
        for (pos, task) in ckpt.next.iter().enumerate() {
            let task_id = task.id(thread_id, ckpt.step);
            let spec = self.graph.node(&task.node).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "checkpoint schedules node `{}`, which the graph no longer has",
                    task.node
                ))
            })?;
            let mut resume_value = None;
            match saved.get(&task_id) {
                Some(r) if r.interrupt.is_none() => {
                    results[pos] = Some(r.clone());
                    self.events.emit(
                        self.event("node.skipped", thread_id)
                            .node(&task.node)
                            .step(ckpt.step + 1)
                            .data(json!({"task_id": task_id, "reason": "writes saved before a restart"})),
                    );
                    continue;
                }
                Some(r) => {
                    let interrupt = r
                        .interrupt
                        .clone()
                        .unwrap_or_else(|| unreachable_interrupt(&task_id, &task.node));
                    match resume.get(&interrupt.id) {
                        Some(d) => resume_value = Some(serde_json::to_value(d).unwrap_or(Value::Null)),
                        None => {
                            waiting.push(interrupt);
                            continue;
                        }
                    }
                }
                None => {}
            }
            if spec.interrupt_before && resume_value.is_none() {
                let id = format!("{task_id}:before");
                match resume.get(&id) {
                    Some(d) if d.action == DecisionAction::Reject => {
                        drop(jobs);
                        ckpt.values = into_map(state);
                        return Ok(StepEnd::Stop(Outcome::Rejected {
                            checkpoint: ckpt.clone(),
                            node: task.node.clone(),
                            comment: d.comment.clone(),
                        }));
                    }
                    Some(d) => resume_value = Some(serde_json::to_value(d).unwrap_or(Value::Null)),
                    None => {
                        waiting.push(Interrupt {
                            id,
                            node: task.node.clone(),
                            kind: InterruptKind::Before,
                            payload: json!({"state": state.as_ref(), "input": task.input}),
                            actions: vec!["approve".into(), "reject".into()],
                            expires_in_s: None,
                        });
                        continue;
                    }
                }
            }
            let ctx = NodeContext {
                run_id: self.run_id.clone(),
                thread_id: thread_id.to_string(),
                task_id,
                node: task.node.clone(),
                step: ckpt.step + 1,
                state: state.clone(),
                input: task.input.clone(),
                index: task.index,
                resume: resume_value,
                attempt: 1,
                cancel: self.cancel.child_token(),
                events: self.events.clone(),
                checkpointer: self.checkpointer.clone(),
            };
            jobs.push((pos, spec.clone(), ctx));
        }

        let mut failure: Option<(usize, EngineError)> = None;
        let mut finished = Vec::new();
        if jobs.len() == 1 {
            // One task: run it here, saving a hop to another worker thread.
            if let Some((pos, spec, ctx)) = jobs.pop() {
                let node = ctx.node.clone();
                let outcome = AssertUnwindSafe(run_task(spec, ctx, self.events.clone()))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(panicked(&node)));
                finished.push((pos, outcome));
            }
        } else {
            let mut set = JoinSet::new();
            for (pos, spec, ctx) in jobs {
                let events = self.events.clone();
                set.spawn(async move { (pos, run_task(spec, ctx, events).await) });
            }
            while let Some(joined) = set.join_next().await {
                match joined {
                    // Saved as each task finishes, so a crash loses only unfinished tasks.
                    Ok((pos, outcome)) => {
                        self.absorb(
                            ckpt,
                            pos,
                            outcome,
                            durable_each,
                            &mut results,
                            &mut waiting,
                            &mut failure,
                        )
                        .await?
                    }
                    Err(_) => {
                        failure.get_or_insert((usize::MAX, panicked("?")));
                    }
                }
            }
        }
        for (pos, outcome) in finished {
            self.absorb(
                ckpt,
                pos,
                outcome,
                durable_each,
                &mut results,
                &mut waiting,
                &mut failure,
            )
            .await?;
        }
        if let Some((_, e)) = failure {
            return Err(e);
        }
        if !waiting.is_empty() {
            ckpt.values = into_map(state);
            return Ok(StepEnd::Stop(Outcome::Waiting {
                checkpoint: ckpt.clone(),
                interrupts: waiting,
            }));
        }
        let results: Vec<TaskResult> = results.into_iter().flatten().collect();
        self.finish_step(ckpt, into_map(state), results)
            .await
            .map(StepEnd::Next)
    }

    /// Takes one finished task into the step: saves its writes (when the step
    /// has siblings) or its interrupt at once, or records the first failure.
    #[allow(clippy::too_many_arguments)]
    async fn absorb(
        &self,
        ckpt: &Checkpoint,
        pos: usize,
        outcome: Result<NodeOutput, EngineError>,
        durable_each: bool,
        results: &mut [Option<TaskResult>],
        waiting: &mut Vec<Interrupt>,
        failure: &mut Option<(usize, EngineError)>,
    ) -> Result<(), EngineError> {
        let thread_id = ckpt.thread_id.as_str();
        let task = &ckpt.next[pos];
        let task_id = task.id(thread_id, ckpt.step);
        match outcome {
            Ok(NodeOutput::Writes { writes, goto }) => {
                let r = TaskResult {
                    task_id,
                    node: task.node.clone(),
                    index: task.index,
                    writes,
                    goto,
                    interrupt: None,
                };
                if durable_each {
                    self.checkpointer.put_writes(thread_id, ckpt.id, &r).await?;
                }
                results[pos] = Some(r);
            }
            Ok(NodeOutput::Interrupt {
                payload,
                actions,
                expires_in_s,
            }) => {
                let interrupt = Interrupt {
                    id: task_id.clone(),
                    node: task.node.clone(),
                    kind: InterruptKind::Node,
                    payload,
                    actions,
                    expires_in_s,
                };
                let r = TaskResult {
                    task_id,
                    node: task.node.clone(),
                    index: task.index,
                    writes: Map::new(),
                    goto: None,
                    interrupt: Some(interrupt.clone()),
                };
                self.checkpointer.put_writes(thread_id, ckpt.id, &r).await?;
                waiting.push(interrupt);
            }
            Err(e) => {
                if failure.as_ref().is_none_or(|(p, _)| pos < *p) {
                    *failure = Some((pos, e));
                }
            }
        }
        Ok(())
    }

    /// Applies the step's writes in task order, follows edges, saves the checkpoint.
    async fn finish_step(
        &self,
        ckpt: &Checkpoint,
        mut values: Map<String, Value>,
        results: Vec<TaskResult>,
    ) -> Result<Checkpoint, EngineError> {
        let step = ckpt.step + 1;
        let mut versions = ckpt.versions.clone();
        let mut writers: HashMap<&str, Vec<String>> = HashMap::new();
        let mut deltas: HashMap<String, Vec<Value>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for r in &results {
            for (channel, write) in &r.writes {
                let spec = self.graph.channel(channel).ok_or_else(|| EngineError::UnknownChannel {
                    node: r.node.clone(),
                    channel: channel.clone(),
                })?;
                let who = writers.entry(spec.name.as_str()).or_default();
                let label = if r.index > 0 || ckpt.next.iter().filter(|t| t.node == r.node).count() > 1 {
                    format!("`{}`[{}]", r.node, r.index)
                } else {
                    format!("`{}`", r.node)
                };
                who.push(label);
                if spec.reducer == crate::Reducer::Replace && who.len() > 1 {
                    return Err(EngineError::ConflictingWrites {
                        channel: channel.clone(),
                        writers: who.join(" and "),
                    });
                }
                let cur = values.entry(channel.clone()).or_insert_with(|| spec.initial());
                spec.reducer.apply(channel, cur, write.clone())?;
                if spec.reducer.is_incremental() {
                    deltas
                        .entry(channel.clone())
                        .or_default()
                        .extend(crate::Reducer::delta_items(write));
                }
                if !order.contains(channel) {
                    order.push(channel.clone());
                }
            }
        }
        let blobs: Vec<ChannelBlob> = order
            .iter()
            .map(|ch| {
                versions.insert(ch.clone(), step);
                let reducer = self.graph.channel(ch).map(|c| c.reducer).unwrap_or_default();
                let blob = match (reducer, deltas.remove(ch)) {
                    (crate::Reducer::Append, Some(items)) => Blob::Append(items),
                    (crate::Reducer::Messages, Some(items)) => Blob::Messages(items),
                    _ => Blob::Full(values[ch].clone()),
                };
                ChannelBlob {
                    channel: ch.clone(),
                    version: step,
                    blob,
                }
            })
            .collect();

        let new_state = Arc::new(Value::Object(values));
        let mut targets = Vec::new();
        for r in &results {
            match &r.goto {
                Some(goto) => {
                    for g in goto {
                        if g != END && self.graph.node(g).is_none() {
                            return Err(EngineError::UnknownGoto {
                                from: r.node.clone(),
                                to: g.clone(),
                            });
                        }
                    }
                    targets.extend(goto.iter().cloned());
                }
                None => {
                    // Fan-out tasks of one node follow its edges once.
                    if r.index == 0 {
                        targets.extend(self.follow_edges(&r.node, &new_state)?);
                    }
                }
            }
        }
        let next = self.schedule(targets, &new_state)?;
        let values = into_map(new_state);

        let mut ran: Vec<String> = Vec::new();
        for r in &results {
            if !ran.contains(&r.node) {
                ran.push(r.node.clone());
            }
        }
        let mut metadata = self.metadata(ran.clone());
        let after: Vec<Value> = ran
            .iter()
            .filter(|n| self.graph.node(n).is_some_and(|s| s.interrupt_after))
            .map(|n| {
                let writes: Map<String, Value> = results
                    .iter()
                    .filter(|r| &r.node == n)
                    .flat_map(|r| r.writes.clone())
                    .collect();
                json!(Interrupt {
                    id: format!("{}:after:{n}", ckpt.id),
                    node: n.clone(),
                    kind: InterruptKind::After,
                    payload: json!({"writes": writes}),
                    actions: vec!["approve".into(), "reject".into(), "edit".into()],
                    expires_in_s: None,
                })
            })
            .collect();
        if !after.is_empty() {
            metadata.insert("interrupt_after".into(), Value::Array(after));
        }
        let new = Checkpoint {
            thread_id: ckpt.thread_id.clone(),
            id: Uuid::now_v7(),
            parent_id: Some(ckpt.id),
            step,
            source: CheckpointSource::Loop,
            values,
            versions,
            next,
            metadata,
            created_at: crate::now_ms(),
        };
        self.save(&new, &blobs).await?;
        Ok(new)
    }
}

enum StepEnd {
    Next(Checkpoint),
    Stop(Outcome),
}

/// The state map back out of its shared snapshot; copies only if a node kept a reference.
fn into_map(state: Arc<Value>) -> Map<String, Value> {
    match Arc::try_unwrap(state) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(shared) => shared.as_object().cloned().unwrap_or_default(),
    }
}

fn panicked(node: &str) -> EngineError {
    // A panicking node fails its task, not the process.
    EngineError::Node {
        node: node.to_string(),
        message: "the node panicked".into(),
    }
}

fn unreachable_interrupt(task_id: &str, node: &str) -> Interrupt {
    Interrupt {
        id: task_id.to_string(),
        node: node.to_string(),
        kind: InterruptKind::Node,
        payload: Value::Null,
        actions: vec![],
        expires_in_s: None,
    }
}

/// Runs one task with its timeout and retry policy, emitting node events.
async fn run_task(spec: NodeSpec, mut ctx: NodeContext, events: Arc<dyn EventSink>) -> Result<NodeOutput, EngineError> {
    let policy = &spec.retry;
    let mut attempt = 1;
    loop {
        ctx.attempt = attempt;
        let started = Instant::now();
        ctx.emit(
            "node.started",
            json!({"task_id": ctx.task_id, "index": ctx.index, "attempt": attempt, "kind": spec.node.kind()}),
        );
        let fut = spec.node.run(ctx.clone());
        let result: Result<NodeOutput, NodeError> = tokio::select! {
            _ = ctx.cancel.cancelled() => return Err(EngineError::Cancelled),
            r = async {
                match spec.timeout {
                    Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
                        Err(NodeError::transient(format!("timed out after {} ms", t.as_millis())))
                    }),
                    None => fut.await,
                }
            } => r,
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(out) => {
                let data = match &out {
                    NodeOutput::Writes { writes, goto } => json!({
                        "task_id": ctx.task_id, "index": ctx.index, "ms": elapsed_ms,
                        "channels": writes.keys().collect::<Vec<_>>(), "goto": goto,
                    }),
                    NodeOutput::Interrupt { .. } => {
                        json!({"task_id": ctx.task_id, "interrupted": true, "ms": elapsed_ms})
                    }
                };
                ctx.emit("node.finished", data);
                return Ok(out);
            }
            Err(e) if (e.retryable || policy.retry_all) && attempt < policy.max_attempts => {
                let wait = policy.backoff(attempt);
                ctx.emit(
                    "node.retry",
                    json!({"attempt": attempt, "error": e.message, "wait_ms": wait.as_millis() as u64}),
                );
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return Err(EngineError::Cancelled),
                    _ = tokio::time::sleep(wait) => {}
                }
                attempt += 1;
            }
            Err(e) => {
                events.emit(
                    Event::new("node.failed", &ctx.run_id, &ctx.thread_id)
                        .node(&ctx.node)
                        .step(ctx.step)
                        .data(json!({"error": e.message, "attempts": attempt})),
                );
                if e.message.starts_with("timed out after") {
                    let after_ms = spec.timeout.map(|t| t.as_millis() as u64).unwrap_or(0);
                    return Err(EngineError::Timeout {
                        node: ctx.node.clone(),
                        after_ms,
                    });
                }
                return Err(EngineError::Node {
                    node: ctx.node.clone(),
                    message: e.message,
                });
            }
        }
    }
}
