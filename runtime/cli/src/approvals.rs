//! `crewgraph approvals list|approve|reject|edit|respond` against the local
//! database (continuing the run in this process), or against a server with `--url`.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use crewgraph_engine::{ApprovalStatus, Decision, DecisionAction, NullSink, RunStatus, api};
use serde_json::Value;
use std::sync::Arc;

use crate::context::{Local, print_json};
use crate::progress::Progress;
use crate::remote::Remote;
use crate::run::{drive, finish, graph_of};

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals, oldest first.
    List {
        /// Only this run's approvals.
        #[arg(long)]
        run: Option<String>,
        /// Include decided ones.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
        /// A crewgraph server instead of the local database (key from CREWGRAPH_API_KEY).
        #[arg(long, env = "CREWGRAPH_URL")]
        url: Option<String>,
    },
    /// Approve and continue the run.
    Approve(DecideArgs),
    /// Reject (the node sees the comment) and continue the run.
    Reject(DecideArgs),
    /// Replace the proposed value with --value and continue the run.
    Edit(DecideArgs),
    /// Answer with --value and continue the run.
    Respond(DecideArgs),
}

#[derive(Args)]
pub struct DecideArgs {
    pub id: String,
    /// JSON (or plain text) value for edit / respond.
    #[arg(long)]
    pub value: Option<String>,
    #[arg(long)]
    pub comment: Option<String>,
    /// Record the decision only; do not continue the run in this process.
    #[arg(long)]
    pub no_resume: bool,
    /// Print the run (or, with --no-resume, the approval) as JSON.
    #[arg(long)]
    pub json: bool,
    #[arg(long, short)]
    pub quiet: bool,
    /// Decide on a crewgraph server (key from CREWGRAPH_API_KEY); its workers continue the run.
    #[arg(long, env = "CREWGRAPH_URL")]
    pub url: Option<String>,
}

pub async fn command(c: ApprovalsCommand) -> Result<u8> {
    let (action, args) = match c {
        ApprovalsCommand::List { run, all, json, url: Some(url) } => return list_remote(&url, run, all, json).await,
        ApprovalsCommand::List { run, all, json, url: None } => return list(run, all, json).await,
        ApprovalsCommand::Approve(a) => (DecisionAction::Approve, a),
        ApprovalsCommand::Reject(a) => (DecisionAction::Reject, a),
        ApprovalsCommand::Edit(a) => (DecisionAction::Edit, a),
        ApprovalsCommand::Respond(a) => (DecisionAction::Respond, a),
    };
    decide(action, args).await
}

async fn list(run: Option<String>, all: bool, json: bool) -> Result<u8> {
    let local = Local::open().await?;
    let status = if all { None } else { Some(ApprovalStatus::Pending) };
    let list = local.store.runs.list_approvals(status, run.as_deref()).await?;
    if json {
        print_json(&list.iter().map(api::approval).collect::<Vec<_>>())?;
    } else if list.is_empty() {
        eprintln!("no {}approvals", if all { "" } else { "pending " });
    } else {
        for a in list {
            println!(
                "{}  {:<8}  run {}  node {}  actions {}",
                a.id,
                a.status.as_str(),
                a.run_id,
                a.node,
                a.actions.join(",")
            );
            println!("    {}", a.payload);
        }
    }
    Ok(0)
}

fn parse_value(v: &str) -> Value {
    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()))
}

async fn list_remote(url: &str, run: Option<String>, all: bool, json: bool) -> Result<u8> {
    let mut path = String::from("/v1/approvals?");
    if !all {
        path.push_str("status=pending&");
    }
    if let Some(r) = &run {
        path.push_str(&format!("run_id={r}"));
    }
    let list = Remote::new(url)?.call(reqwest::Method::GET, &path, None).await?;
    if json {
        print_json(&list)?;
        return Ok(0);
    }
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        eprintln!("no {}approvals", if all { "" } else { "pending " });
    }
    for a in items {
        let s = |k: &str| a[k].as_str().unwrap_or_default().to_string();
        println!("{}  {:<8}  run {}  node {}  actions {}", s("id"), s("status"), s("run_id"), s("node"), a["actions"]);
        println!("    {}", a["payload"]);
    }
    Ok(0)
}

async fn decide_remote(url: &str, action: DecisionAction, a: &DecideArgs) -> Result<u8> {
    let body = serde_json::json!({"action": action.as_str(), "value": a.value.as_deref().map(parse_value), "comment": a.comment});
    let approval =
        Remote::new(url)?.call(reqwest::Method::POST, &format!("/v1/approvals/{}", a.id), Some(body)).await?;
    eprintln!(
        "approval {} decided: {}; the server's workers continue run {}",
        a.id,
        action.as_str(),
        approval["run_id"]
    );
    if a.json {
        print_json(&approval)?;
    }
    Ok(0)
}

async fn decide(action: DecisionAction, a: DecideArgs) -> Result<u8> {
    if let Some(url) = a.url.clone() {
        return decide_remote(&url, action, &a).await;
    }
    let local = Local::open().await?;
    let sink: Arc<dyn crewgraph_engine::EventSink> =
        if a.quiet { Arc::new(NullSink) } else { Arc::new(Progress::default()) };
    let rt = local.runtime(sink);
    let value = a.value.as_deref().map(parse_value);
    let approval = rt.decide(&a.id, Decision { action, value, comment: a.comment.clone() }).await?;
    eprintln!("approval {} decided: {}", approval.id, action.as_str());
    if a.no_resume {
        if a.json {
            print_json(&api::approval(&approval))?;
        }
        return Ok(0);
    }
    if !rt.ready_to_resume(&approval.run_id).await? {
        eprintln!("run {} still has pending approvals; it continues once they are decided", approval.run_id);
        return Ok(crate::EXIT_WAITING);
    }
    let run = rt.get_run(&approval.run_id).await?;
    if run.status != RunStatus::Waiting {
        return finish(&run, a.json);
    }
    let graph = graph_of(&local, &run).await.context("the run cannot continue here")?;
    let run = drive(&rt, graph, &run.id, false).await?;
    finish(&run, a.json)
}
