//! Test support for the end-to-end tests: a fresh Postgres database per test,
//! private Redis servers, and a runner for the real `crewgraph` binary.

pub mod openai_server;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

/// The server the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database of its own for one test, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        let admin = admin_url();
        let name = format!("cg_e2e_{}", uuid::Uuid::now_v7().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
        let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin);
        Ok(Self { url: format!("{base}/{name}"), name })
    }

    pub async fn pool(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::PgPool::connect(&self.url).await?)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = admin_url();
        // Best effort, outside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The `crewgraph` binary built by `tests/run.sh` (or next to this test's target dir).
pub fn crewgraph_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CREWGRAPH_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return p;
        }
    }
    let exe = std::env::current_exe().expect("test executable path");
    let candidate = exe.parent().and_then(Path::parent).map(|d| d.join("crewgraph")).expect("target dir");
    assert!(
        candidate.is_file(),
        "crewgraph binary not found at {}: run `cargo build -p crewgraph-cli` first (tests/run.sh does)",
        candidate.display()
    );
    candidate
}

/// A working directory with definitions and an environment for CLI runs.
pub struct Cli {
    pub dir: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Cli {
    /// A temp dir holding copies of the repository's example graphs.
    pub fn new(database_url: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("crewgraph-e2e-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("graphs")).expect("temp dir");
        std::fs::create_dir_all(dir.join("crews")).expect("temp dir");
        for folder in ["graphs", "crews"] {
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(folder);
            for entry in std::fs::read_dir(repo).expect("definitions dir").flatten() {
                let _ = std::fs::copy(entry.path(), dir.join(folder).join(entry.file_name()));
            }
        }
        let env = vec![
            ("DATABASE_URL".into(), database_url.into()),
            ("CREWGRAPH_DEFINITIONS".into(), "crews:graphs".into()),
            ("CREWGRAPH_FILE_TOOL_DIR".into(), dir.display().to_string()),
        ];
        Self { dir, env }
    }

    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crewgraph_bin());
        c.args(args).current_dir(&self.dir).env_remove("REDIS_URL").stdin(Stdio::null());
        // Services log at `info`; tests show warnings unless CREWGRAPH_LOG says otherwise.
        c.env("CREWGRAPH_LOG", std::env::var("CREWGRAPH_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn crewgraph")
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn crewgraph")
    }

    /// Runs and parses stdout as JSON, failing with stderr on a bad exit.
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}); status {}; stderr:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` until it is true or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A Redis server of the test's own, so it can be stopped mid-run.
pub struct RedisServer {
    pub url: String,
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Self::start_on(port)
    }

    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tests/run.sh installs it)");
        let ok = wait_for(Duration::from_secs(5), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(ok, "redis-server did not start on {port}");
        Self { url: format!("redis://127.0.0.1:{port}"), port, child: Some(child) }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new("redis-cli").arg("-p").arg(self.port.to_string()).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of the test's own, so it can be stopped mid-run.
/// Runs as the `postgres` user when the tests run as root (initdb refuses root).
pub struct PgServer {
    pub url: String,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl PgServer {
    /// `None` when no PostgreSQL server binaries are installed here.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .max()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).ok()?;
        let data = std::env::temp_dir().join(format!("crewgraph-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&data).ok()?;
        let server = Self { url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), data, bin, port };
        if is_root() {
            let _ = Command::new("chown").arg("postgres").arg(&server.data).status();
        }
        let ok = server
            .as_owner(&server.bin.join("initdb"), &["-D", &server.data_str(), "-U", "postgres", "--auth=trust"])
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(ok, "initdb failed in {}", server.data.display());
        server.pg_ctl_start();
        Some(server)
    }

    fn data_str(&self) -> String {
        self.data.display().to_string()
    }

    fn as_owner(&self, program: &Path, args: &[&str]) -> std::io::Result<Output> {
        if is_root() {
            Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(args).output()
        } else {
            Command::new(program).args(args).output()
        }
    }

    fn pg_ctl_start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.data_str());
        let log = format!("{}/log", self.data_str());
        let out =
            self.as_owner(&self.bin.join("pg_ctl"), &["-D", &self.data_str(), "-l", &log, "-w", "-o", &opts, "start"]);
        assert!(out.map(|o| o.status.success()).unwrap_or(false), "pg_ctl start failed (see {log})");
    }

    /// Stops the server at once, as a crash would (`-m immediate`).
    pub fn kill(&self) {
        let _ = self.as_owner(&self.bin.join("pg_ctl"), &["-D", &self.data_str(), "-m", "immediate", "stop"]);
    }

    pub fn restart(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}
