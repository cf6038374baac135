//! `crewgraph run` and `crewgraph runs ...`.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use crewgraph_engine::{
    Approval, ApprovalStatus, Decision, DecisionAction, EventSink, Graph, NullSink, Run, RunStatus, Runtime, api,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::EXIT_WAITING;
use crate::context::{Local, print_json};
use crate::progress::Progress;

#[derive(Args)]
pub struct RunArgs {
    /// Graph name (looked up in CREWGRAPH_DEFINITIONS) or path to a graph file.
    pub graph: String,
    /// Input channel value; VALUE is parsed as JSON when it is valid JSON, else taken as text.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    pub inputs: Vec<String>,
    /// The whole input as a JSON object (merged under any --input).
    #[arg(long, value_name = "JSON")]
    pub input_json: Option<String>,
    /// Continue this thread (a new turn) instead of starting a new one.
    #[arg(long)]
    pub thread: Option<String>,
    /// Do not ask at approval steps: leave the run waiting and exit 3.
    #[arg(long)]
    pub non_interactive: bool,
    /// Print the final run object as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

pub fn parse_input(pairs: &[String], json: Option<&str>) -> Result<Map<String, Value>> {
    let mut input = match json {
        Some(j) => match serde_json::from_str::<Value>(j).context("--input-json is not valid JSON")? {
            Value::Object(m) => m,
            other => bail!("--input-json must be a JSON object, got {other}"),
        },
        None => Map::new(),
    };
    for pair in pairs {
        let (k, v) = pair.split_once('=').with_context(|| format!("--input `{pair}`: expected KEY=VALUE"))?;
        let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
        input.insert(k.trim().to_string(), value);
    }
    Ok(input)
}

fn sink(quiet: bool) -> Arc<dyn EventSink> {
    if quiet { Arc::new(NullSink) } else { Arc::new(Progress::default()) }
}

/// Cancels the run cooperatively on Ctrl-C; its checkpoints stay.
fn ctrl_c_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping after the current step");
            t.cancel();
        }
    });
    token
}

pub async fn run(a: RunArgs) -> Result<u8> {
    let local = Local::open().await?;
    let def = local.load(&a.graph)?;
    let input = parse_input(&a.inputs, a.input_json.as_deref())?;
    def.validate_input(&input).map_err(|e| anyhow::anyhow!("invalid input: {e}"))?;
    let rt = local.runtime(sink(a.quiet));
    let definition = crate::context::definition_ref(&def);
    let run = rt.create_run(&def.graph, input, a.thread.clone(), definition).await?;
    let run = drive(&rt, def.graph.clone(), &run.id, !a.non_interactive).await?;
    finish(&run, a.json)
}

/// Executes until the run ends; at approvals, asks on the terminal when interactive.
pub async fn drive(rt: &Runtime, graph: Arc<Graph>, run_id: &str, interactive: bool) -> Result<Run> {
    let cancel = ctrl_c_token();
    loop {
        let run = rt.execute(graph.clone(), run_id, Some(cancel.clone())).await?;
        if run.status != RunStatus::Waiting || !interactive {
            return Ok(run);
        }
        let pending = rt.runs.list_approvals(Some(ApprovalStatus::Pending), Some(run_id)).await?;
        for approval in pending {
            match ask(&approval).await? {
                Some(decision) => {
                    rt.decide(&approval.id, decision).await?;
                }
                None => return Ok(run),
            }
        }
    }
}

/// Asks for a decision on stdin; `None` at end of input.
async fn ask(a: &Approval) -> Result<Option<Decision>> {
    let prompt = format!(
        "\napproval {} at `{}`:\n{}\n",
        a.id,
        a.node,
        serde_json::to_string_pretty(&a.payload).unwrap_or_default()
    );
    let actions = a.actions.clone();
    tokio::task::spawn_blocking(move || -> Result<Option<Decision>> {
        eprint!("{prompt}");
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        loop {
            eprint!("decide [{}]: ", actions.join("/"));
            let Some(line) = lines.next().transpose()? else {
                return Ok(None);
            };
            let word = line.trim().to_lowercase();
            let Some(action) = actions
                .iter()
                .find(|x| !word.is_empty() && x.starts_with(&word))
                .and_then(|x| DecisionAction::parse(x))
            else {
                eprintln!("expected one of: {}", actions.join(", "));
                continue;
            };
            let mut d = Decision { action, value: None, comment: None };
            if matches!(action, DecisionAction::Edit | DecisionAction::Respond) {
                eprint!("value (JSON or text): ");
                let v = lines.next().transpose()?.unwrap_or_default();
                d.value = Some(serde_json::from_str(&v).unwrap_or(Value::String(v)));
            }
            if matches!(action, DecisionAction::Reject) {
                eprint!("comment: ");
                d.comment = lines.next().transpose()?.filter(|c| !c.trim().is_empty());
            }
            return Ok(Some(d));
        }
    })
    .await?
}

/// Prints the run and maps its status to the exit code.
pub fn finish(run: &Run, json: bool) -> Result<u8> {
    if json {
        print_json(&api::run(run))?;
    } else {
        match run.status {
            RunStatus::Succeeded => println!("{}", serde_json::to_string_pretty(&run.output)?),
            RunStatus::Waiting => eprintln!(
                "run {} is waiting; decide with `crewgraph approvals list` and `crewgraph approvals approve|reject|edit ID`",
                run.id
            ),
            _ => eprintln!(
                "run {} {}: {}",
                run.id,
                run.status.as_str(),
                run.error.get("message").and_then(Value::as_str).unwrap_or("")
            ),
        }
    }
    Ok(match run.status {
        RunStatus::Succeeded => 0,
        RunStatus::Waiting => EXIT_WAITING,
        _ => 1,
    })
}

#[derive(Subcommand)]
pub enum RunsCommand {
    /// Show one run.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Continue a run from its last checkpoint (after a crash, or a failure that has been fixed).
    Resume {
        id: String,
        #[arg(long)]
        non_interactive: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, short)]
        quiet: bool,
    },
}

/// Loads the graph a stored run was started with.
pub async fn graph_of(local: &Local, run: &Run) -> Result<Arc<Graph>> {
    let def =
        local.load_for_run(run).await.with_context(|| format!("loading graph `{}` of run {}", run.graph, run.id))?;
    Ok(def.graph.clone())
}

pub async fn runs(c: RunsCommand) -> Result<u8> {
    let local = Local::open().await?;
    match c {
        RunsCommand::Show { id, json } => {
            let run = local.store.runs.get_run(&id).await?.with_context(|| format!("run `{id}` not found"))?;
            if json {
                print_json(&api::run(&run))?;
            } else {
                println!("run {}  {}  graph {}  thread {}", run.id, run.status.as_str(), run.graph, run.thread_id);
                println!("output: {}", serde_json::to_string_pretty(&run.output)?);
                if !run.error.is_null() {
                    println!("error: {}", run.error);
                }
            }
            Ok(0)
        }
        RunsCommand::List { status, limit, json } => {
            let status = match status.as_deref() {
                Some(s) => Some(RunStatus::parse(s).with_context(|| format!("unknown status `{s}`"))?),
                None => None,
            };
            let list = local.store.runs.list_runs(status, limit).await?;
            if json {
                print_json(&list.iter().map(api::run).collect::<Vec<_>>())?;
            } else {
                for r in list {
                    println!("{}  {:<9}  {:<20}  thread {}", r.id, r.status.as_str(), r.graph, r.thread_id);
                }
            }
            Ok(0)
        }
        RunsCommand::Resume { id, non_interactive, json, quiet } => {
            let run = local.store.runs.get_run(&id).await?.with_context(|| format!("run `{id}` not found"))?;
            let graph = graph_of(&local, &run).await?;
            let rt = local.runtime(sink(quiet));
            let run = drive(&rt, graph, &id, !non_interactive).await?;
            finish(&run, json)
        }
    }
}
