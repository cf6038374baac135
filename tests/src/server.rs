//! A real `crewgraph serve` (or `worker`) process on a loopback port, and a
//! small HTTP client for the API.

use std::process::{Child, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{Cli, wait_for};

/// A free loopback port (the kernel's pick; released before the server binds it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A server process; killed when dropped.
pub struct Server {
    pub base: String,
    pub child: Child,
}

impl Server {
    /// Starts `crewgraph serve ARGS...` in `cli`'s directory and waits for `/healthz`.
    pub fn start(cli: &Cli, args: &[&str]) -> Self {
        Self::start_logging_to(cli, args, Stdio::inherit())
    }

    /// As [`Server::start`], with the server's logs (stderr) going to `logs`.
    pub fn start_logging_to(cli: &Cli, args: &[&str], logs: Stdio) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut all = vec!["serve", "--bind", &bind];
        all.extend_from_slice(args);
        let child = cli.command(&all).stdout(Stdio::null()).stderr(logs).spawn().expect("spawn serve");
        let base = format!("http://{bind}");
        let up = wait_for(Duration::from_secs(30), || std::net::TcpStream::connect(&bind).is_ok());
        assert!(up, "crewgraph serve did not listen on {bind}");
        Self { base, child }
    }

    /// Sends SIGTERM and waits for the graceful shutdown to end.
    pub fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// Sends SIGKILL: nothing gets to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes a key with `crewgraph keys create`.
pub fn make_key(cli: &Cli, tenant: &str, roles: &str) -> String {
    let out = cli.json(&["keys", "create", "--tenant", tenant, "--roles", roles, "--json"]);
    out["key"].as_str().expect("key").to_string()
}

/// An API client with one key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { base: base.to_string(), key: key.to_string(), http: reqwest::Client::new() }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Some(body)).await
    }

    /// POSTs a text body (a YAML definition).
    pub async fn post_text(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/yaml")
            .body(body.to_string())
            .send()
            .await
            .expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Waits (up to 30 s) until the run is terminal or waiting.
    pub async fn wait(&self, run_id: &str) -> Value {
        let (status, run) = self.get(&format!("/v1/runs/{run_id}/wait?timeout_s=30")).await;
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }

    /// Waits (up to 30 s) until the run has ended: after a decision the run
    /// is still `waiting` until a worker takes it up again.
    pub async fn settled(&self, run_id: &str) -> Value {
        for _ in 0..300 {
            let (_, run) = self.get(&format!("/v1/runs/{run_id}")).await;
            if matches!(run["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("run {run_id} did not end within 30 s");
    }

    /// Decides the run's pending approval.
    pub async fn decide(&self, run_id: &str, action: &str) -> Value {
        let (_, pending) = self.get(&format!("/v1/approvals?run_id={run_id}&status=pending")).await;
        let id = pending[0]["id"].as_str().unwrap_or_else(|| panic!("no pending approval: {pending}"));
        let (status, decided) = self.post(&format!("/v1/approvals/{id}"), serde_json::json!({"action": action})).await;
        assert_eq!(status, StatusCode::OK, "{decided}");
        decided
    }

    /// Reads `/v1/runs/{id}/events` to its end: `(id, event kind)` pairs.
    pub async fn events(&self, run_id: &str, last_event_id: Option<i64>) -> Vec<(i64, String)> {
        let mut req = self.http.get(format!("{}/v1/runs/{run_id}/events", self.base)).bearer_auth(&self.key);
        if let Some(last) = last_event_id {
            req = req.header("Last-Event-ID", last.to_string());
        }
        let resp = req.send().await.expect("events request");
        assert_eq!(resp.status(), StatusCode::OK);
        let text =
            tokio::time::timeout(Duration::from_secs(60), resp.text()).await.expect("stream ended").expect("body");
        parse_sse(&text)
    }
}

/// `(id, event)` of each event in an SSE body.
pub fn parse_sse(text: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut kind) = (None, None);
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                kind = Some(v.trim().to_string());
            }
        }
        if let (Some(i), Some(k)) = (id, kind) {
            out.push((i, k));
        }
    }
    out
}
