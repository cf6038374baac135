//! Runs: create, execute to completion or an interrupt, decide approvals,
//! resume, fork. Ties the executor to the [`RunStore`].

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checkpoint::{Checkpoint, CheckpointSource, Checkpointer};
use crate::error::EngineError;
use crate::event::{Event, EventSink};
use crate::executor::{Executor, Outcome};
use crate::graph::Graph;
use crate::runs::{Approval, ApprovalStatus, Decision, Run, RunStatus, RunStore};
use crate::usage::UsageTally;

/// The run lifecycle on top of a checkpointer and a run store.
#[derive(Clone)]
pub struct Runtime {
    pub checkpointer: Arc<dyn Checkpointer>,
    pub runs: Arc<dyn RunStore>,
    pub events: Arc<dyn EventSink>,
}

impl Runtime {
    pub fn new(checkpointer: Arc<dyn Checkpointer>, runs: Arc<dyn RunStore>, events: Arc<dyn EventSink>) -> Self {
        Self { checkpointer, runs, events }
    }

    /// Records a queued run; `thread_id` defaults to a new thread.
    pub async fn create_run(
        &self,
        graph: &Graph,
        input: Map<String, Value>,
        thread_id: Option<String>,
        definition: Option<String>,
    ) -> Result<Run, EngineError> {
        let thread = thread_id.unwrap_or_else(|| Uuid::now_v7().to_string());
        let mut run = Run::new(&graph.name, &thread, Value::Object(input));
        run.definition = definition;
        self.runs.create_run(&run).await?;
        Ok(run)
    }

    /// Records a run as already running and executes it at once: the path of
    /// a caller that runs in-process (CLI, benchmarks), two round trips shorter
    /// than `create_run` + `execute`.
    pub async fn start(
        &self,
        graph: Arc<Graph>,
        input: Map<String, Value>,
        thread_id: Option<String>,
        definition: Option<String>,
        cancel: Option<CancellationToken>,
    ) -> Result<Run, EngineError> {
        let new_thread = thread_id.is_none();
        let thread = thread_id.unwrap_or_else(|| Uuid::now_v7().to_string());
        let mut run = Run::new(&graph.name, &thread, Value::Object(input.clone()));
        run.definition = definition;
        run.status = RunStatus::Running;
        // The input checkpoint, written next and committed synchronously, makes the record durable.
        self.runs.create_run_deferred(&run).await?;
        self.emit(Event::new("run.started", &run.id, &run.thread_id).data(json!({"graph": run.graph})));
        let (mut exec, tally) = self.executor(&graph, &run.id, cancel);
        exec.new_thread = new_thread;
        let outcome = exec.invoke(&run.thread_id, Some(&input), &HashMap::new()).await;
        run.usage = tally.merged_into(&run.usage);
        self.settle(&graph, run, outcome).await
    }

    /// An executor for one run whose events also feed the run's usage tally.
    fn executor(
        &self,
        graph: &Arc<Graph>,
        run_id: &str,
        cancel: Option<CancellationToken>,
    ) -> (Executor, Arc<UsageTally>) {
        let tally = Arc::new(UsageTally::new(self.events.clone(), run_id));
        let mut exec = Executor::new(graph.clone(), self.checkpointer.clone(), tally.clone(), run_id);
        if let Some(c) = cancel {
            exec.cancel = c;
        }
        (exec, tally)
    }

    pub async fn get_run(&self, id: &str) -> Result<Run, EngineError> {
        self.runs.get_run(id).await?.ok_or_else(|| EngineError::RunNotFound(id.to_string()))
    }

    /// Executes a queued run, or resumes a waiting or failed one, until it
    /// finishes or waits again. The returned run is already stored.
    pub async fn execute(
        &self,
        graph: Arc<Graph>,
        run_id: &str,
        cancel: Option<CancellationToken>,
    ) -> Result<Run, EngineError> {
        let mut run = self.get_run(run_id).await?;
        if run.status.is_terminal() && run.status != RunStatus::Failed {
            return Err(EngineError::InvalidRunState {
                id: run.id,
                status: run.status.as_str().into(),
                what: "executed".into(),
            });
        }
        let mut latest = self.checkpointer.get(&run.thread_id, None).await?;
        let started_here = latest.as_ref().is_some_and(|c| c.metadata.get("run_id") == Some(&json!(run.id)));
        if !started_here && let Some(c) = latest.as_mut() {
            self.drop_tasks_of_ended_run(c).await?;
        }
        let first = run.status == RunStatus::Queued;
        // A queued run has not asked anyone anything yet.
        let resume = if first { HashMap::new() } else { self.decisions(&run.id).await? };
        run.status = RunStatus::Running;
        run.updated_at = crate::now_ms();
        self.runs.update_run(&run).await?;
        let kind = if first { "run.started" } else { "run.resumed" };
        self.emit(Event::new(kind, &run.id, &run.thread_id).data(json!({"graph": run.graph})));

        let (exec, tally) = self.executor(&graph, &run.id, cancel);
        let input = match (&run.input, started_here) {
            (Value::Object(m), false) => Some(m.clone()),
            _ => None,
        };
        let outcome = exec.invoke_from(&run.thread_id, latest, input.as_ref(), &resume).await;
        run.usage = tally.merged_into(&run.usage);
        self.settle(&graph, run, outcome).await
    }

    /// A run that ended unfinished (cancelled, interrupted by a newer run, or
    /// failed) leaves tasks in the thread's latest checkpoint. A new run on the
    /// thread starts from that state without them, as a new input to a
    /// LangGraph thread does; a run still in progress keeps them, and the new
    /// run is refused.
    async fn drop_tasks_of_ended_run(&self, latest: &mut Checkpoint) -> Result<(), EngineError> {
        let Some(owner) = latest.metadata.get("run_id").and_then(Value::as_str) else {
            return Ok(());
        };
        if latest.next.is_empty() {
            return Ok(());
        }
        match self.runs.get_run(owner).await? {
            Some(r) if r.status.is_terminal() => latest.next.clear(),
            _ => {}
        }
        Ok(())
    }

    async fn decisions(&self, run_id: &str) -> Result<HashMap<String, Decision>, EngineError> {
        let approvals = self.runs.list_approvals(Some(ApprovalStatus::Decided), Some(run_id)).await?;
        Ok(approvals.into_iter().filter_map(|a| a.decision.map(|d| (a.interrupt_id, d))).collect())
    }

    async fn settle(
        &self,
        graph: &Graph,
        mut run: Run,
        outcome: Result<Outcome, EngineError>,
    ) -> Result<Run, EngineError> {
        run.updated_at = crate::now_ms();
        match outcome {
            Ok(Outcome::Finished(ckpt)) => {
                run.status = RunStatus::Succeeded;
                run.output = output_of(graph, &ckpt);
                run.error = Value::Null;
                self.runs.update_run(&run).await?;
                self.emit(
                    Event::new("run.succeeded", &run.id, &run.thread_id)
                        .step(ckpt.step)
                        .data(json!({"output": run.output})),
                );
            }
            Ok(Outcome::Waiting { checkpoint, interrupts }) => {
                run.status = RunStatus::Waiting;
                self.runs.update_run(&run).await?;
                let mut ids = Vec::new();
                for i in interrupts {
                    let approval = Approval {
                        id: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{}\u{1f}{}", run.thread_id, i.id).as_bytes())
                            .to_string(),
                        run_id: run.id.clone(),
                        thread_id: run.thread_id.clone(),
                        interrupt_id: i.id.clone(),
                        node: i.node.clone(),
                        payload: i.payload.clone(),
                        actions: i.actions.clone(),
                        status: ApprovalStatus::Pending,
                        decision: None,
                        created_at: crate::now_ms(),
                        decided_at: None,
                        expires_at: i.expires_in_s.map(|s| crate::now_ms() + s as i64 * 1000),
                        on_expiry: i.on_expiry,
                    };
                    if self.runs.create_approval(&approval).await? {
                        self.emit(
                            Event::new("approval.requested", &run.id, &run.thread_id)
                                .node(&i.node)
                                .step(checkpoint.step)
                                .data(json!({"approval_id": approval.id, "payload": i.payload, "actions": i.actions})),
                        );
                    }
                    ids.push(approval.id);
                }
                self.emit(
                    Event::new("run.waiting", &run.id, &run.thread_id)
                        .step(checkpoint.step)
                        .data(json!({"approvals": ids})),
                );
            }
            Ok(Outcome::Rejected { checkpoint, node, comment }) => {
                run.status = RunStatus::Cancelled;
                run.error =
                    json!({"message": format!("rejected by reviewer at `{node}`"), "node": node, "comment": comment});
                self.runs.update_run(&run).await?;
                self.emit(
                    Event::new("run.cancelled", &run.id, &run.thread_id).step(checkpoint.step).data(run.error.clone()),
                );
            }
            Err(EngineError::Cancelled) => {
                run.status = RunStatus::Cancelled;
                run.error = json!({"message": "run was cancelled"});
                self.runs.update_run(&run).await?;
                self.emit(Event::new("run.cancelled", &run.id, &run.thread_id).data(run.error.clone()));
            }
            Err(EngineError::Storage(e)) => {
                // The store is unreachable: the run keeps its last durable state
                // and its status (`running`), so a worker whose lease lapses, or
                // `runs resume`, continues it once the store is back. Nothing failed
                // in the run itself, so nothing is recorded as failed.
                self.emit(
                    Event::new("run.stalled", &run.id, &run.thread_id)
                        .data(json!({"message": format!("storage: {e}")})),
                );
                return Err(EngineError::Storage(e));
            }
            Err(e) => {
                run.status = RunStatus::Failed;
                run.error = json!({"message": e.to_string(), "node": e.node()});
                self.runs.update_run(&run).await?;
                self.emit(Event::new("run.failed", &run.id, &run.thread_id).data(run.error.clone()));
            }
        }
        Ok(run)
    }

    /// Records a decision on a pending approval. Exactly one decision wins;
    /// later ones get [`EngineError::AlreadyDecided`].
    pub async fn decide(&self, approval_id: &str, decision: Decision) -> Result<Approval, EngineError> {
        let approval = self
            .runs
            .get_approval(approval_id)
            .await?
            .ok_or_else(|| EngineError::ApprovalNotFound(approval_id.to_string()))?;
        if approval.status != ApprovalStatus::Pending {
            return Err(EngineError::AlreadyDecided { id: approval.id, status: approval.status.as_str().into() });
        }
        let action = decision.action.as_str();
        if !approval.actions.iter().any(|a| a == action) {
            return Err(EngineError::ActionNotAllowed {
                id: approval.id,
                action: action.into(),
                allowed: approval.actions.join(", "),
            });
        }
        let now = crate::now_ms();
        if !self.runs.decide_approval(approval_id, &decision, now).await? {
            return Err(EngineError::AlreadyDecided { id: approval.id, status: "decided".into() });
        }
        self.emit(
            Event::new("approval.decided", &approval.run_id, &approval.thread_id)
                .node(&approval.node)
                .data(json!({"approval_id": approval.id, "decision": decision})),
        );
        Ok(Approval { status: ApprovalStatus::Decided, decision: Some(decision), decided_at: Some(now), ..approval })
    }

    /// Whether every approval of a waiting run has been decided, so it can resume.
    pub async fn ready_to_resume(&self, run_id: &str) -> Result<bool, EngineError> {
        Ok(self.runs.list_approvals(Some(ApprovalStatus::Pending), Some(run_id)).await?.is_empty())
    }

    /// Copies `thread_id` up to `checkpoint_id` into a new thread, applies
    /// `patch` to its state, and queues a run that continues from there.
    pub async fn fork(
        &self,
        graph: Arc<Graph>,
        thread_id: &str,
        checkpoint_id: Uuid,
        patch: Map<String, Value>,
        definition: Option<String>,
    ) -> Result<Run, EngineError> {
        let run = self.fork_thread(graph, thread_id, checkpoint_id, patch, definition).await?;
        self.runs.create_run(&run).await?;
        Ok(run)
    }

    /// The thread part of [`fork`](Self::fork): the new thread and its fork
    /// checkpoint, and the run to continue it, not yet stored (the service
    /// queues it under the caller's tenant).
    pub async fn fork_thread(
        &self,
        graph: Arc<Graph>,
        thread_id: &str,
        checkpoint_id: Uuid,
        patch: Map<String, Value>,
        definition: Option<String>,
    ) -> Result<Run, EngineError> {
        let base = self.checkpointer.get(thread_id, Some(checkpoint_id)).await?.ok_or_else(|| {
            EngineError::CheckpointNotFound { thread: thread_id.to_string(), checkpoint: checkpoint_id.to_string() }
        })?;
        let new_thread = Uuid::now_v7().to_string();
        let mut run = Run::new(&graph.name, &new_thread, Value::Null);
        run.definition = definition;
        self.checkpointer.copy_thread(thread_id, &new_thread, Some(checkpoint_id)).await?;
        let mut copied = Checkpoint { thread_id: new_thread.clone(), ..base };
        copied.metadata.insert("forked_from".into(), json!({"thread_id": thread_id, "checkpoint_id": checkpoint_id}));
        let exec = Executor::new(graph, self.checkpointer.clone(), self.events.clone(), &run.id);
        exec.update(&copied, &patch, CheckpointSource::Fork).await?;
        run.input = json!({"fork": {"thread_id": thread_id, "checkpoint_id": checkpoint_id, "patch": patch}});
        Ok(run)
    }

    fn emit(&self, event: Event) {
        self.events.emit(event);
    }
}

/// The run's output: the declared output channels, or the whole state.
pub fn output_of(graph: &Graph, ckpt: &Checkpoint) -> Value {
    if graph.output.is_empty() {
        Value::Object(ckpt.values.clone())
    } else {
        Value::Object(graph.output.iter().filter_map(|k| ckpt.values.get(k).map(|v| (k.clone(), v.clone()))).collect())
    }
}
