//! `crewgraph`: run, validate and inspect graphs; decide approvals; manage
//! threads. Argument parsing and printing only; the behaviour lives in the
//! library crates.

mod approvals;
mod context;
mod graphs;
mod memory;
mod progress;
mod remote;
mod run;
mod serve;
mod telemetry;
mod threads;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable agent graphs: checkpoints every step, pauses for people, survives crashes.
#[derive(Parser)]
#[command(name = "crewgraph", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP API and workers (`--no-workers` for the API alone).
    Serve(serve::ServeArgs),
    /// Workers only: execute queued runs.
    Worker(serve::WorkerArgs),
    /// API keys for tenants.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Run a graph by name or file, streaming progress; asks at approval steps.
    Run(run::RunArgs),
    /// Check definition files; prints every error with file:line:column.
    Validate(graphs::ValidateArgs),
    /// Print a graph as a Mermaid or DOT diagram.
    Graph(graphs::GraphArgs),
    /// Apply database migrations to DATABASE_URL.
    Migrate,
    /// List and decide approvals (local database), then continue the run.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCommand),
    /// Inspect runs.
    #[command(subcommand)]
    Runs(run::RunsCommand),
    /// Thread history, fork, copy, delete, and checkpoint retention.
    #[command(subcommand)]
    Threads(threads::ThreadsCommand),
    /// Add files and folders (text, Markdown, HTML, PDF) to a collection, with a progress bar.
    Ingest(memory::IngestArgs),
    /// Search a collection: scored chunks with their source.
    Query(memory::QueryArgs),
    /// List, prune and drop collections.
    #[command(subcommand)]
    Collections(memory::CollectionsCommand),
}

/// Exit status of a command that left its run waiting for a decision.
pub const EXIT_WAITING: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Outside the async runtime: the OTLP exporter's blocking HTTP client
    // must not be built or dropped on it. Flushed when dropped, last.
    let _telemetry = telemetry::init(matches!(cli.command, Command::Serve(_) | Command::Worker(_)));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(command(cli))
}

async fn command(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve(a) => serve::serve(a).await,
        Command::Worker(a) => serve::worker(a).await,
        Command::Keys(c) => serve::keys(c).await,
        Command::Run(a) => run::run(a).await,
        Command::Validate(a) => graphs::validate(a),
        Command::Graph(a) => graphs::graph(a),
        Command::Migrate => context::migrate().await,
        Command::Approvals(c) => approvals::command(c).await,
        Command::Runs(c) => run::runs(c).await,
        Command::Threads(c) => threads::command(c).await,
        Command::Ingest(a) => memory::ingest(a).await,
        Command::Query(a) => memory::query(a).await,
        Command::Collections(c) => memory::collections(c).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
