//! HTTP tools declared in YAML: how product backends expose actions to graphs.
//!
//! ```yaml
//! tools:
//!   create_ticket:
//!     description: Opens a support ticket.
//!     http: { method: POST, url: "https://tickets.internal/api/{{ args.queue }}", bearer_env: TICKETS_TOKEN }
//! ```
//!
//! Only hosts listed in `CREWGRAPH_HTTP_ALLOW` (comma-separated `host` or
//! `host:port`, `*` for any) are reached. Secrets come from the environment by
//! name, never from the file. Every call carries `Idempotency-Key: <task id>`,
//! so a call repeated after a crash can be recognised by the backend.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use crewgraph_engine::{NodeError, Tool, ToolCall};
use serde_json::Value;

use crate::error::SpecError;
use crate::template::{Scope, ValueTemplate};
use crate::yaml::{Fields, Yaml};

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

pub struct HttpTool {
    name: String,
    description: String,
    method: reqwest::Method,
    url: ValueTemplate,
    headers: Vec<(String, String)>,
    bearer_env: Option<String>,
    timeout: Duration,
    requires_approval: bool,
    /// JSON Schema of the arguments, shown to models and checked before calls.
    schema: Value,
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        // One TLS stack (ring) for the whole binary; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .user_agent(concat!("crewgraph/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default()
    })
}

/// Reads one entry of a graph's `tools:` section.
pub fn declare(
    file: &str,
    name: &str,
    decl: &Yaml,
    channels: &std::collections::BTreeSet<String>,
) -> Result<Arc<dyn Tool>, SpecError> {
    let what = format!("tool `{name}`");
    let mut f = Fields::new(file, decl, &what)?;
    let description = f.opt_str("description")?.unwrap_or("").to_string();
    let requires_approval = f.opt_bool("requires_approval")?.unwrap_or(false);
    let schema = match f.opt("args_schema") {
        Some(at) => {
            let schema = at.to_json();
            jsonschema::validator_for(&schema)
                .map_err(|e| f.err(at, format!("`args_schema` is not a valid JSON Schema: {e}")))?;
            schema
        }
        None => serde_json::json!({"type": "object"}),
    };
    let http = f.req("http")?;
    let mut h = Fields::new(file, http, "`http`")?;
    let method_at = h.opt("method");
    let method = h.opt_str("method")?.unwrap_or("POST").to_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(h.err(
            method_at.unwrap_or(http),
            format!("unknown method `{method}` (expected one of: {})", METHODS.join(", ")),
        ));
    }
    let url_at = h.req("url")?;
    let url_src = h.req_str("url")?;
    let url = ValueTemplate::compile(&Value::String(url_src.to_string()), channels).map_err(|m| h.err(url_at, m))?;
    if !url_src.contains("{{") {
        reqwest::Url::parse(url_src).map_err(|e| h.err(url_at, format!("`url` is not a valid URL: {e}")))?;
    }
    let mut headers = Vec::new();
    if let Some(hs) = h.opt("headers") {
        for (k, v) in hs.entries().ok_or_else(|| h.err(hs, "`headers`: expected a mapping of name to value"))? {
            let v =
                v.as_str().ok_or_else(|| h.err(v, "a header value must be a string (use `bearer_env` for secrets)"))?;
            headers.push((k.name.clone(), v.to_string()));
        }
    }
    let bearer_env = h.opt_str("bearer_env")?.map(str::to_string);
    let timeout = Duration::from_secs_f64(h.opt_f64("timeout_s")?.unwrap_or(30.0));
    h.finish()?;
    f.finish()?;
    Ok(Arc::new(HttpTool {
        name: name.to_string(),
        description,
        method: reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST),
        url,
        headers,
        bearer_env,
        timeout,
        requires_approval,
        schema,
    }))
}

/// Whether `CREWGRAPH_HTTP_ALLOW` lets a call reach `url`.
fn allowed(url: &reqwest::Url) -> Result<(), String> {
    let host = url.host_str().unwrap_or_default();
    let with_port = url.port_or_known_default().map(|p| format!("{host}:{p}")).unwrap_or_else(|| host.to_string());
    let list = std::env::var("CREWGRAPH_HTTP_ALLOW").unwrap_or_default();
    let ok = list.split(',').map(str::trim).any(|a| a == "*" || a == host || a == with_port);
    if ok { Ok(()) } else { Err(format!("host `{with_port}` is not in CREWGRAPH_HTTP_ALLOW (allowed: `{list}`)")) }
}

#[async_trait]
impl Tool for HttpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn schema(&self) -> Value {
        self.schema.clone()
    }

    fn requires_approval(&self) -> bool {
        self.requires_approval
    }

    async fn call(&self, args: Value, call: &ToolCall) -> Result<Value, NodeError> {
        let tool = &self.name;
        let url = self.url.render(&Scope { args: Some(&args), ..Default::default() }).map_err(NodeError::fatal)?;
        let url = url.as_str().unwrap_or_default();
        let url =
            reqwest::Url::parse(url).map_err(|e| NodeError::fatal(format!("tool `{tool}`: bad URL `{url}`: {e}")))?;
        allowed(&url).map_err(|m| NodeError::fatal(format!("tool `{tool}`: {m}")))?;
        let query = matches!(self.method, reqwest::Method::GET | reqwest::Method::DELETE);
        let mut url = url;
        if query && let Some(m) = args.as_object() {
            let text = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            url.query_pairs_mut().extend_pairs(m.iter().map(|(k, v)| (k.clone(), text(v))));
        }
        let mut req = client()
            .request(self.method.clone(), url)
            .timeout(self.timeout)
            .header("Idempotency-Key", &call.idempotency_key);
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(env) = &self.bearer_env {
            let token = std::env::var(env)
                .map_err(|_| NodeError::fatal(format!("tool `{tool}`: environment variable {env} is not set")))?;
            req = req.bearer_auth(token);
        }
        if !query {
            req = req.json(&args);
        }
        let response = req.send().await.map_err(|e| {
            let msg = format!("tool `{tool}`: {e}");
            if e.is_timeout() || e.is_connect() { NodeError::transient(msg) } else { NodeError::fatal(msg) }
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| NodeError::transient(format!("tool `{tool}`: reading the response: {e}")))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        let excerpt: String = body.to_string().chars().take(300).collect();
        let msg = format!("tool `{tool}`: HTTP {status}: {excerpt}");
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(NodeError::transient(msg))
        } else {
            Err(NodeError::fatal(msg))
        }
    }
}
