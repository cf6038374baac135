//! Commands against a running server (`--url` / `CREWGRAPH_URL`, key from
//! `CREWGRAPH_API_KEY`) instead of the local database.

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

pub struct Remote {
    base: String,
    key: String,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(url: &str) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = std::env::var("CREWGRAPH_API_KEY").context("set CREWGRAPH_API_KEY to use --url")?;
        Ok(Self { base: url.trim_end_matches('/').to_string(), key, http: reqwest::Client::new() })
    }

    /// The answer's JSON; an API error becomes an error carrying its message.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no error message").to_string();
            bail!("{status}: {message}");
        }
        Ok(value)
    }
}
