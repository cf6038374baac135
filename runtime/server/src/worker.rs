//! Workers: claim queued runs under a lease, execute them, keep the lease
//! alive with heartbeats, and hand runs back when they cannot finish.
//!
//! A worker that dies simply stops beating; once its lease expires the run
//! is claimed again and resumes from its last checkpoint (finished tasks of
//! an unfinished step are not re-run: their writes were saved).

use std::sync::Arc;
use std::time::Duration;

use crewgraph_engine::{Decision, DecisionAction, EngineError, Event, Run, RunStatus};
use crewgraph_store::{Heartbeat, Lease};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::Lookup;
use crate::state::AppState;
use crate::trace::TraceParent;

/// Longest sleep between claims when nobody wakes the worker.
const POLL: Duration = Duration::from_secs(1);

/// Runs `count` worker loops until shutdown; in-flight runs get the grace
/// period to finish and are handed back after it.
pub async fn run_workers(state: AppState, count: usize, wake: Arc<Notify>) {
    let process = state.config.worker_name.clone();
    // Fires `shutdown_grace` after shutdown: the moment to stop waiting for steps.
    let hand_back = CancellationToken::new();
    {
        let (shutdown, hand_back, grace) = (state.shutdown.clone(), hand_back.clone(), state.config.shutdown_grace);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            hand_back.cancel();
        });
    }
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..count {
        let worker = format!("{process}-{slot}");
        slots.spawn(worker_loop(state.clone(), worker, wake.clone(), hand_back.clone()));
    }
    while slots.join_next().await.is_some() {}
}

async fn worker_loop(state: AppState, worker: String, wake: Arc<Notify>, hand_back: CancellationToken) {
    while !state.shutdown.is_cancelled() {
        let notified = wake.notified();
        match state.store.queue.claim(&worker, state.config.lease_ms()).await {
            Ok(Some(lease)) => {
                let parent =
                    lease.traceparent.as_deref().and_then(TraceParent::parse).unwrap_or_else(TraceParent::root);
                let span = tracing::info_span!("run", run_id = %lease.run.id, graph = %lease.run.graph,
                    attempt = lease.attempts, trace_id = %parent.trace_id);
                parent.adopt(&span);
                execute(&state, &worker, lease, &hand_back).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, worker, "cannot claim runs"),
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}

/// Hands a run back after a storage error before it started, a moment
/// later so that a failing store is not asked again in a tight loop. If the
/// store cannot take it back either, the lease lapses.
async fn retry_later(state: &AppState, id: &str, worker: &str, what: &str, e: crewgraph_engine::StorageError) {
    tracing::warn!(error = %e, "{what}; handing the run back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = state.store.queue.hand_back(id, worker).await;
}

/// Why an execution stopped before the engine settled the run.
enum Stopped {
    /// The lease was lost: another worker may hold the run; touch nothing.
    LeaseLost,
    /// Shutdown outlasted the grace period: give the run back as it is.
    HandedBack,
}

async fn execute(state: &AppState, worker: &str, lease: Lease, hand_back: &CancellationToken) {
    let run = lease.run;
    let webhook = lease.webhook.as_deref();
    let id = run.id.clone();
    if run.status.is_terminal() {
        // Settled by a worker that died before releasing it, maybe before its last event was written.
        restore_last_event(state, &run).await;
        crate::webhooks::on_settled(state, &run, webhook).await;
        release(state, &id, worker, webhook).await;
        return;
    }
    if lease.attempts > lease.max_attempts {
        let message = format!(
            "gave up after {} attempts: the run's worker stopped each time before it finished",
            lease.max_attempts
        );
        fail(state, run, webhook, message).await;
        release(state, &id, worker, webhook).await;
        return;
    }
    let def = match state.definitions.of_run(&run).await {
        Ok(Lookup::Found(def)) => def,
        Ok(Lookup::Invalid(errors)) => {
            let message = format!("the definition of `{}` does not compile: {errors}", run.graph);
            fail(state, run, webhook, message).await;
            release(state, &id, worker, webhook).await;
            return;
        }
        Ok(Lookup::Unknown) => {
            let message = format!("graph `{}` is not defined on this worker", run.graph);
            fail(state, run, webhook, message).await;
            release(state, &id, worker, webhook).await;
            return;
        }
        Err(e) => return retry_later(state, &id, worker, "cannot read the run's definition", e).await,
    };

    // A run submitted with `rollback` erases the runs it replaced before it first
    // executes (idempotent, so a claim that died before executing may repeat it).
    let first = run.status == RunStatus::Queued;
    match if first { state.store.queue.apply_rollback(&run).await } else { Ok(0) } {
        Ok(0) => {}
        Ok(n) => tracing::info!(checkpoints = n, "rolled back the runs this one replaced"),
        Err(e) => return retry_later(state, &id, worker, "cannot roll back the runs this one replaced", e).await,
    }

    let cancel = CancellationToken::new();
    let lost = CancellationToken::new();
    let beats = tokio::spawn(heartbeat(state.clone(), id.clone(), worker.to_string(), cancel.clone(), lost.clone()));
    let outcome = tokio::select! {
        r = state.runtime.execute(def.graph.clone(), &id, Some(cancel.clone())) => Ok(r),
        _ = lost.cancelled() => Err(Stopped::LeaseLost),
        _ = hand_back.cancelled() => Err(Stopped::HandedBack),
    };
    beats.abort();
    match outcome {
        Ok(Ok(run)) => {
            tracing::info!(status = run.status.as_str(), "run settled");
            crate::webhooks::on_settled(state, &run, webhook).await;
            release(state, &id, worker, webhook).await;
        }
        Ok(Err(e)) => {
            // The store failed under the run. Hand it back as soon as the store
            // answers again; if it does not within the lease, the lease lapses
            // and any worker resumes the run from its last checkpoint.
            tracing::warn!(error = %e, "run stopped on a storage error; handing it back when the store is back");
            let deadline = tokio::time::Instant::now() + state.config.lease;
            while tokio::time::Instant::now() < deadline && !state.shutdown.is_cancelled() {
                if state.store.queue.hand_back(&id, worker).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Err(Stopped::LeaseLost) => tracing::warn!("lease lost; another worker resumes the run"),
        Err(Stopped::HandedBack) => {
            tracing::info!("shutdown: run handed back");
            if let Err(e) = state.store.queue.hand_back(&id, worker).await {
                tracing::warn!(error = %e, "cannot hand the run back; its lease will expire");
            }
        }
    }
}

/// Writes the terminal event of a settled run whose log lacks it, so its streams end.
async fn restore_last_event(state: &AppState, run: &Run) {
    let mut after = 0;
    loop {
        match state.store.events.events_after(&run.id, after, 1000).await {
            Ok(page) if page.is_empty() => break,
            Ok(page) => {
                if page.iter().any(|e| crate::events::is_terminal(&e.event.kind)) {
                    return;
                }
                after = page.last().map(|e| e.seq).unwrap_or(after);
            }
            Err(_) => return,
        }
    }
    let kind = format!("run.{}", run.status.as_str());
    let data = if run.status == RunStatus::Succeeded { json!({"output": run.output}) } else { run.error.clone() };
    state.runtime.events.emit(Event::new(&kind, &run.id, &run.thread_id).data(data));
}

async fn heartbeat(state: AppState, id: String, worker: String, cancel: CancellationToken, lost: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.heartbeat());
    tick.tick().await;
    loop {
        tick.tick().await;
        match state.store.queue.heartbeat(&id, &worker, state.config.lease_ms()).await {
            Ok(Heartbeat::Extended) => {}
            Ok(Heartbeat::CancelRequested) => cancel.cancel(),
            Ok(Heartbeat::Lost) => {
                lost.cancel();
                return;
            }
            // Missing a beat is fine; the lease outlives two of them.
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn fail(state: &AppState, mut run: Run, webhook: Option<&str>, message: String) {
    tracing::warn!(%message, "run failed before it started");
    run.status = RunStatus::Failed;
    run.error = json!({"message": message});
    run.updated_at = crewgraph_engine::now_ms();
    if let Err(e) = state.runtime.runs.update_run(&run).await {
        tracing::warn!(error = %e, "cannot record the failure");
        return;
    }
    state.runtime.events.emit(Event::new("run.failed", &run.id, &run.thread_id).data(run.error.clone()));
    crate::webhooks::on_settled(state, &run, webhook).await;
}

/// Gives the run back once its events are written: a worker that dies before
/// releasing leaves the repair of its last event to the next claim.
async fn release(state: &AppState, id: &str, worker: &str, webhook: Option<&str>) {
    state.recorder.flushed(Duration::from_secs(10)).await;
    match state.store.queue.release(id, worker).await {
        Ok(None) => {}
        Ok(Some(cancelled)) => {
            state
                .runtime
                .events
                .emit(Event::new("run.cancelled", &cancelled.id, &cancelled.thread_id).data(cancelled.error.clone()));
            crate::webhooks::on_settled(state, &cancelled, webhook).await;
        }
        Err(e) => tracing::warn!(error = %e, run_id = id, "cannot release the run; its lease will expire"),
    }
}

/// Decides approvals whose expiry has passed with their default action (reject
/// unless the node says `on_expiry: approve`) and puts their runs back on the
/// queue. Every worker process sweeps; the conditional decision lets one win.
pub async fn expire_approvals(state: AppState) {
    while !state.shutdown.is_cancelled() {
        match state.store.queue.expired_approvals(crewgraph_engine::now_ms(), 50).await {
            Ok(due) => {
                for a in due {
                    let decision = Decision {
                        action: a.on_expiry.unwrap_or(DecisionAction::Reject),
                        value: None,
                        comment: Some("expired: no decision in time".into()),
                    };
                    match state.runtime.decide(&a.id, decision).await {
                        Ok(_) => match state.store.queue.requeue(&a.run_id).await {
                            Ok(true) => state.wake.notify_waiters(),
                            Ok(false) => {}
                            Err(e) => tracing::warn!(error = %e, "cannot requeue a run after an expiry"),
                        },
                        Err(EngineError::AlreadyDecided { .. }) => {}
                        Err(e) => tracing::warn!(error = %e, approval = %a.id, "cannot apply an expiry"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot look for expired approvals"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = state.shutdown.cancelled() => {}
        }
    }
}
