//! One superstep: run the scheduled tasks, gather their results, apply the
//! writes through the reducers, follow edges, write the checkpoint.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::checkpoint::{Blob, ChannelBlob, Checkpoint, CheckpointSource};
use crate::error::EngineError;
use crate::graph::END;
use crate::node::{NodeContext, NodeOutput};
use crate::runs::{Decision, DecisionAction};
use crate::task::{Interrupt, InterruptKind, TaskResult};

use super::attempt::run_task;
use super::{Executor, Outcome};

impl Executor {
    /// Runs the tasks `ckpt` schedules. The state moves into a shared snapshot
    /// for the tasks and back out afterwards, so a step never deep-copies it.
    pub(super) async fn superstep(
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

        let mut step = Gathered { results: vec![None; ckpt.next.len()], waiting: Vec::new(), failure: None };

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
            let mut asked = None;
            match saved.get(&task_id) {
                Some(r @ TaskResult { interrupt: None, .. }) => {
                    step.results[pos] = Some(r.clone());
                    self.events.emit(
                        self.event("node.skipped", thread_id)
                            .node(&task.node)
                            .step(ckpt.step + 1)
                            .data(json!({"task_id": task_id, "reason": "writes saved before a restart"})),
                    );
                    continue;
                }
                Some(TaskResult { interrupt: Some(interrupt), .. }) => {
                    let interrupt = interrupt.clone();
                    match resume.get(&interrupt.id) {
                        Some(d) => {
                            resume_value = Some(serde_json::to_value(d).unwrap_or(Value::Null));
                            asked = Some(interrupt.payload.clone());
                        }
                        None => {
                            step.waiting.push(interrupt);
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
                        step.waiting.push(Interrupt {
                            id,
                            node: task.node.clone(),
                            kind: InterruptKind::Before,
                            payload: json!({"state": state.as_ref(), "input": task.input}),
                            actions: vec!["approve".into(), "reject".into()],
                            expires_in_s: None,
                            on_expiry: None,
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
                asked,
                attempt: 1,
                cancel: self.cancel.child_token(),
                events: self.events.clone(),
                checkpointer: self.checkpointer.clone(),
            };
            jobs.push((pos, spec.clone(), ctx));
        }

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
                    Ok((pos, outcome)) => self.absorb(ckpt, pos, outcome, durable_each, &mut step).await?,
                    Err(_) => {
                        step.failure.get_or_insert((usize::MAX, panicked("?")));
                    }
                }
            }
        }
        for (pos, outcome) in finished {
            self.absorb(ckpt, pos, outcome, durable_each, &mut step).await?;
        }
        if let Some((_, e)) = step.failure {
            return Err(e);
        }
        if !step.waiting.is_empty() {
            ckpt.values = into_map(state);
            return Ok(StepEnd::Stop(Outcome::Waiting { checkpoint: ckpt.clone(), interrupts: step.waiting }));
        }
        let results: Vec<TaskResult> = step.results.into_iter().flatten().collect();
        self.finish_step(ckpt, into_map(state), results).await.map(StepEnd::Next)
    }

    /// Takes one finished task into the step: saves its writes (when the step
    /// has siblings) or its interrupt at once, or records the first failure.
    async fn absorb(
        &self,
        ckpt: &Checkpoint,
        pos: usize,
        outcome: Result<NodeOutput, EngineError>,
        durable_each: bool,
        step: &mut Gathered,
    ) -> Result<(), EngineError> {
        let thread_id = ckpt.thread_id.as_str();
        let task = &ckpt.next[pos];
        let task_id = task.id(thread_id, ckpt.step);
        match outcome {
            Ok(NodeOutput::Writes { writes, goto }) => {
                let r =
                    TaskResult { task_id, node: task.node.clone(), index: task.index, writes, goto, interrupt: None };
                if durable_each {
                    self.checkpointer.put_writes(thread_id, ckpt.id, &r).await?;
                }
                step.results[pos] = Some(r);
            }
            Ok(NodeOutput::Interrupt { payload, actions, expires_in_s, on_expiry }) => {
                let interrupt = Interrupt {
                    id: task_id.clone(),
                    node: task.node.clone(),
                    kind: InterruptKind::Node,
                    payload,
                    actions,
                    expires_in_s,
                    on_expiry,
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
                step.waiting.push(interrupt);
            }
            Err(e) => {
                if step.failure.as_ref().is_none_or(|(p, _)| pos < *p) {
                    step.failure = Some((pos, e));
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
        // The first writer of each `replace` channel, to name both if a second one writes.
        let mut replaced: HashMap<&str, &TaskResult> = HashMap::new();
        let mut deltas: HashMap<String, Vec<Value>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for r in &results {
            for (channel, write) in &r.writes {
                let spec = self
                    .graph
                    .channel(channel)
                    .ok_or_else(|| EngineError::UnknownChannel { node: r.node.clone(), channel: channel.clone() })?;
                if spec.reducer == crate::Reducer::Replace
                    && let Some(first) = replaced.insert(spec.name.as_str(), r)
                {
                    let label = |t: &TaskResult| {
                        if t.index > 0 || ckpt.next.iter().filter(|n| n.node == t.node).count() > 1 {
                            format!("`{}`[{}]", t.node, t.index)
                        } else {
                            format!("`{}`", t.node)
                        }
                    };
                    return Err(EngineError::ConflictingWrites {
                        channel: channel.clone(),
                        writers: format!("{} and {}", label(first), label(r)),
                    });
                }
                let cur = values.entry(channel.clone()).or_insert_with(|| spec.initial());
                spec.reducer.apply(channel, cur, write.clone())?;
                if spec.reducer.is_incremental() {
                    deltas.entry(channel.clone()).or_default().extend(crate::Reducer::delta_items(write));
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
                ChannelBlob { channel: ch.clone(), version: step, blob }
            })
            .collect();

        let new_state = Arc::new(Value::Object(values));
        let mut targets = Vec::new();
        for r in &results {
            match &r.goto {
                Some(goto) => {
                    for g in goto {
                        if g != END && self.graph.node(g).is_none() {
                            return Err(EngineError::UnknownGoto { from: r.node.clone(), to: g.clone() });
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
                let writes: Map<String, Value> =
                    results.iter().filter(|r| &r.node == n).flat_map(|r| r.writes.clone()).collect();
                json!(Interrupt {
                    id: format!("{}:after:{n}", ckpt.id),
                    node: n.clone(),
                    kind: InterruptKind::After,
                    payload: json!({"writes": writes}),
                    actions: vec!["approve".into(), "reject".into(), "edit".into()],
                    expires_in_s: None,
                    on_expiry: None,
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

/// What the tasks of a step produced so far.
struct Gathered {
    results: Vec<Option<TaskResult>>,
    waiting: Vec<Interrupt>,
    /// The failure of the earliest task (in task order) that failed.
    failure: Option<(usize, EngineError)>,
}

pub(super) enum StepEnd {
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
    EngineError::Node { node: node.to_string(), message: "the node panicked".into() }
}
