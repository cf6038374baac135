//! `crewgraph serve`, `crewgraph worker` and `crewgraph keys`.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use crewgraph_server::{Mode, ServerConfig, app_state, auth};

use crate::context::{Local, print_json};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (default CREWGRAPH_BIND or 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// Runs executed at once by this process (default CREWGRAPH_WORKERS or 4).
    #[arg(long)]
    pub workers: Option<usize>,
    /// The API only; runs are executed by `crewgraph worker` processes.
    #[arg(long, conflicts_with = "workers")]
    pub no_workers: bool,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Runs executed at once (default CREWGRAPH_WORKERS or 4).
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make an API key; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        tenant: String,
        /// Comma-separated: read, submit, approve, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Print `{"key", "id", "tenant", "roles"}`.
        #[arg(long)]
        json: bool,
    },
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn start(mode: Mode, bind: Option<String>, workers: Option<usize>) -> Result<u8> {
    let local = Local::open().await?;
    let mut config = ServerConfig::from_env();
    if let Some(b) = bind {
        config.bind = b;
    }
    if let Some(w) = workers {
        config.workers = w;
    }
    let state = app_state(local.store, local.catalog, local.registry, config);
    crewgraph_server::run(state, mode, stop_signal()).await?;
    Ok(0)
}

pub async fn serve(a: ServeArgs) -> Result<u8> {
    start(if a.no_workers { Mode::ApiOnly } else { Mode::Serve }, a.bind, a.workers).await
}

pub async fn worker(a: WorkerArgs) -> Result<u8> {
    start(Mode::WorkerOnly, None, a.workers).await
}

pub async fn keys(c: KeysCommand) -> Result<u8> {
    match c {
        KeysCommand::Create { tenant, roles, json } => {
            let (key, record) = auth::new_key(&tenant, &roles).map_err(anyhow::Error::msg)?;
            let local = Local::open().await?;
            local.store.keys.create_key(&record, &auth::hash_key(&key)).await.context("storing the key")?;
            if json {
                print_json(
                    &serde_json::json!({"key": key, "id": record.id, "tenant": record.tenant, "roles": record.roles}),
                )?;
            } else {
                println!("{key}");
                eprintln!(
                    "key {} for tenant `{}` with roles {}: shown once, keep it secret",
                    record.id,
                    tenant,
                    roles.join(",")
                );
            }
            Ok(0)
        }
    }
}
