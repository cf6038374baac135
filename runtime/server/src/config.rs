//! Server settings from the environment (twelve-factor), with flags on top.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `CREWGRAPH_BIND`, default `127.0.0.1:8080`.
    pub bind: String,
    /// Largest request body (`CREWGRAPH_MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Time limit of a request other than streams (`CREWGRAPH_REQUEST_TIMEOUT_S`, 30).
    pub request_timeout: Duration,
    /// Runs this process executes at once (`CREWGRAPH_WORKERS`, default 4; 0 = API only).
    pub workers: usize,
    /// How long a claimed run belongs to its worker without a heartbeat (`CREWGRAPH_LEASE_S`, 30).
    pub lease: Duration,
    /// How long shutdown waits for in-flight steps before handing runs back (`CREWGRAPH_SHUTDOWN_GRACE_S`, 20).
    pub shutdown_grace: Duration,
    /// Attempts before a run that keeps losing its worker fails (`CREWGRAPH_MAX_ATTEMPTS`, 5).
    pub max_attempts: i32,
    /// Names this process's leases (`CREWGRAPH_WORKER_NAME`, default `<hostname>-<pid>`), e.g. the pod name.
    pub worker_name: String,
    /// Requests a second per API key (`CREWGRAPH_RATE_LIMIT`, default 100; 0 = no limit).
    pub rate_per_s: f64,
    /// Burst per key (`CREWGRAPH_RATE_BURST`, default twice the rate).
    pub rate_burst: f64,
    /// Signs webhook deliveries (`CREWGRAPH_WEBHOOK_SECRET`); without it runs cannot ask for webhooks.
    pub webhook_secret: Option<String>,
    /// Where `crewgraph worker` serves `/metrics`, `/healthz` and `/readyz` (`CREWGRAPH_METRICS_BIND`; off by default).
    pub metrics_bind: Option<String>,
    /// Longest `wait` (seconds).
    pub max_wait: Duration,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

impl ServerConfig {
    pub fn from_env() -> Self {
        let rate_per_s = env("CREWGRAPH_RATE_LIMIT", 100.0f64).max(0.0);
        Self {
            bind: std::env::var("CREWGRAPH_BIND").ok().filter(|s| !s.is_empty()).unwrap_or("127.0.0.1:8080".into()),
            max_body_bytes: env("CREWGRAPH_MAX_BODY_BYTES", 1 << 20),
            request_timeout: Duration::from_secs(env("CREWGRAPH_REQUEST_TIMEOUT_S", 30)),
            workers: env("CREWGRAPH_WORKERS", 4),
            lease: Duration::from_secs_f64(env("CREWGRAPH_LEASE_S", 30.0f64).max(1.0)),
            shutdown_grace: Duration::from_secs(env("CREWGRAPH_SHUTDOWN_GRACE_S", 20)),
            max_attempts: env("CREWGRAPH_MAX_ATTEMPTS", 5),
            worker_name: std::env::var("CREWGRAPH_WORKER_NAME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "worker".into());
                format!("{host}-{}", std::process::id())
            }),
            rate_per_s,
            rate_burst: env("CREWGRAPH_RATE_BURST", rate_per_s * 2.0),
            webhook_secret: std::env::var("CREWGRAPH_WEBHOOK_SECRET").ok().filter(|s| !s.is_empty()),
            metrics_bind: std::env::var("CREWGRAPH_METRICS_BIND").ok().filter(|s| !s.is_empty()),
            max_wait: Duration::from_secs(300),
        }
    }

    pub fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Often enough that two beats can be missed before the lease runs out.
    pub fn heartbeat(&self) -> Duration {
        (self.lease / 3).min(Duration::from_secs(5))
    }
}
