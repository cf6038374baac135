//! `crewgraph threads ...`: history, state, fork, copy, delete, prune.

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use crewgraph_engine::{Retention, api};
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

use crate::context::{Local, print_json};
use crate::progress::Progress;
use crate::run::{drive, finish};

#[derive(Subcommand)]
pub enum ThreadsCommand {
    /// Every checkpoint of a thread, newest first.
    History {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// The latest checkpoint of a thread.
    State {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Start a new thread from a checkpoint of this one, with a state patch, and run it.
    Fork {
        id: String,
        #[arg(long)]
        checkpoint: Uuid,
        /// JSON object of channel values to set.
        #[arg(long)]
        patch: Option<String>,
        /// Graph name or file (default: the graph of the run that wrote the checkpoint).
        #[arg(long)]
        graph: Option<String>,
        #[arg(long)]
        non_interactive: bool,
        #[arg(long)]
        json: bool,
    },
    /// Copy a thread's whole history to a new thread id.
    Copy { from: String, to: String },
    /// Delete a thread, its checkpoints and its subgraph threads.
    Delete { id: String },
    /// Delete old checkpoints (the latest of each thread is always kept).
    Prune {
        #[arg(long)]
        keep_last: Option<u32>,
        #[arg(long)]
        max_age_s: Option<u64>,
    },
}

pub async fn command(c: ThreadsCommand) -> Result<u8> {
    let local = Local::open().await?;
    let cp = local.store.checkpointer.clone();
    match c {
        ThreadsCommand::History { id, limit, json } => {
            let list = cp.list(&id, limit).await?;
            if list.is_empty() {
                bail!("thread `{id}` has no checkpoints");
            }
            if json {
                print_json(&list.iter().map(api::checkpoint).collect::<Vec<_>>())?;
            } else {
                for c in list {
                    let next: Vec<&str> = c.next.iter().map(|t| t.node.as_str()).collect();
                    let ran = c.metadata.get("nodes").map(Value::to_string).unwrap_or_default();
                    println!(
                        "{}  step {:<4} {:<7} ran {ran:<24} next [{}]",
                        c.id,
                        c.step,
                        format!("{:?}", c.source).to_lowercase(),
                        next.join(", ")
                    );
                }
            }
        }
        ThreadsCommand::State { id, json } => {
            let c = cp.get(&id, None).await?.with_context(|| format!("thread `{id}` has no checkpoints"))?;
            if json {
                print_json(&api::checkpoint(&c))?;
            } else {
                println!("{}", serde_json::to_string_pretty(&c.values)?);
            }
        }
        ThreadsCommand::Fork { id, checkpoint, patch, graph, non_interactive, json } => {
            let patch = match patch {
                Some(p) => match serde_json::from_str::<Value>(&p).context("--patch is not valid JSON")? {
                    Value::Object(m) => m,
                    other => bail!("--patch must be a JSON object, got {other}"),
                },
                None => Default::default(),
            };
            let base = cp
                .get(&id, Some(checkpoint))
                .await?
                .with_context(|| format!("checkpoint {checkpoint} not in thread `{id}`"))?;
            let def = match graph {
                Some(g) => Arc::new(local.load(&g)?),
                None => {
                    let run_id = base
                        .metadata
                        .get("run_id")
                        .and_then(Value::as_str)
                        .context("the checkpoint records no run; pass --graph")?;
                    let run = local
                        .store
                        .runs
                        .get_run(run_id)
                        .await?
                        .context("the run that wrote the checkpoint is gone; pass --graph")?;
                    local.load_for_run(&run).await?
                }
            };
            let rt = local.runtime(Arc::new(Progress::default()));
            let run = rt.fork(def.graph.clone(), &id, checkpoint, patch, crate::context::definition_ref(&def)).await?;
            eprintln!("forked thread {} into {} (run {})", id, run.thread_id, run.id);
            let run = drive(&rt, def.graph.clone(), &run.id, !non_interactive).await?;
            return finish(&run, json);
        }
        ThreadsCommand::Copy { from, to } => {
            cp.copy_thread(&from, &to, None).await?;
            eprintln!("copied thread {from} to {to}");
        }
        ThreadsCommand::Delete { id } => {
            cp.delete_thread(&id).await?;
            eprintln!("deleted thread {id}");
        }
        ThreadsCommand::Prune { keep_last, max_age_s } => {
            if keep_last.is_none() && max_age_s.is_none() {
                bail!("give --keep-last N and/or --max-age-s SECONDS");
            }
            let n = cp.prune(&Retention { keep_last, max_age_s }).await?;
            eprintln!("pruned {n} checkpoints");
        }
    }
    Ok(0)
}
