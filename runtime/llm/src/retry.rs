//! Retries of HTTP calls to the model server: 429, 5xx, timeouts and
//! connection errors, with exponential backoff and jitter, waiting what
//! `Retry-After` (or `retry-after-ms`) asks when the server says.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use reqwest::Response;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_retries: u32,
    /// Waits between attempts: the engine's exponential backoff with jitter.
    pub backoff: crewgraph_engine::RetryPolicy,
    pub max_retry_after: Duration,
    attempts: u32,
}

impl RetryPolicy {
    pub fn new(max_retries: u32, backoff_ms: u64, max_backoff_ms: u64, max_retry_after: Duration) -> Self {
        let backoff =
            crewgraph_engine::RetryPolicy { initial_backoff_ms: backoff_ms, max_backoff_ms, ..Default::default() };
        Self { max_retries, backoff, max_retry_after, attempts: 0 }
    }
}

/// How long the server asked us to wait, from `retry-after-ms` or `Retry-After` (seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
    }
    text("retry-after").and_then(|v| v.parse::<f64>().ok()).map(|s| Duration::from_secs_f64(s.max(0.0)))
}

fn retryable(result: &Result<Response, OpenAIError>) -> bool {
    match result {
        Ok(r) => r.status().as_u16() == 429 || r.status().is_server_error(),
        Err(OpenAIError::Reqwest(e)) => e.is_connect() || e.is_timeout(),
        Err(_) => false,
    }
}

impl tower::retry::Policy<HttpRequestFactory, Response, OpenAIError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

    fn retry(
        &mut self,
        _req: &mut HttpRequestFactory,
        result: &mut Result<Response, OpenAIError>,
    ) -> Option<Self::Future> {
        if self.attempts >= self.max_retries || !retryable(result) {
            return None;
        }
        let asked = result.as_ref().ok().and_then(|r| retry_after(r.headers()));
        if asked.is_some_and(|d| d > self.max_retry_after) {
            // Waiting that long inside a step is worse than failing it now and resuming later.
            return None;
        }
        let delay = asked.unwrap_or_else(|| self.backoff.backoff(self.attempts + 1));
        self.attempts += 1;
        tracing::warn!(attempt = self.attempts, delay_ms = delay.as_millis() as u64, "retrying the model call");
        Some(Box::pin(tokio::time::sleep(delay)))
    }

    fn clone_request(&mut self, req: &HttpRequestFactory) -> Option<HttpRequestFactory> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_retry_after_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", "150".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }
}
