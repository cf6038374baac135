//! Per-key rate limits: a token bucket per API key, in Redis when it is
//! configured (shared by every replica), in process otherwise or while Redis
//! is unreachable. Answers carry `X-RateLimit-Limit`, `X-RateLimit-Remaining`
//! and `X-RateLimit-Reset`; an empty bucket answers 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crewgraph_store::RedisCache;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

pub struct RateLimiter {
    /// Tokens added per second; 0 turns limits off.
    per_s: f64,
    /// Bucket size: the burst a key may send at once.
    capacity: f64,
    redis: Option<RedisCache>,
    local: Mutex<HashMap<String, (f64, Instant)>>,
}

pub struct Verdict {
    pub allowed: bool,
    pub remaining: f64,
}

impl RateLimiter {
    pub fn new(per_s: f64, capacity: f64, redis: Option<RedisCache>) -> Self {
        Self { per_s, capacity: capacity.max(1.0), redis, local: Mutex::default() }
    }

    pub fn enabled(&self) -> bool {
        self.per_s > 0.0
    }

    pub async fn take(&self, bucket: &str) -> Verdict {
        if let Some(redis) = &self.redis {
            match redis.take_token(bucket, self.capacity, self.per_s).await {
                Ok((allowed, remaining)) => return Verdict { allowed, remaining },
                Err(e) => tracing::debug!(error = %e, "rate limit in process while Redis is unreachable"),
            }
        }
        let Ok(mut buckets) = self.local.lock() else {
            return Verdict { allowed: true, remaining: self.capacity };
        };
        if buckets.len() > 100_000 {
            buckets.clear();
        }
        let now = Instant::now();
        let (tokens, at) = buckets.entry(bucket.to_string()).or_insert((self.capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.per_s).min(self.capacity);
        *at = now;
        let allowed = *tokens >= 1.0;
        if allowed {
            *tokens -= 1.0;
        }
        Verdict { allowed, remaining: *tokens }
    }

    fn headers(&self, v: &Verdict, headers: &mut HeaderMap) {
        let reset = ((self.capacity - v.remaining).max(0.0) / self.per_s).ceil() as u64;
        let mut set = |name: &'static str, value: u64| {
            if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
                headers.insert(name, v);
            }
        };
        set("x-ratelimit-limit", self.capacity as u64);
        set("x-ratelimit-remaining", v.remaining.max(0.0).floor() as u64);
        set("x-ratelimit-reset", reset);
        if !v.allowed {
            set("retry-after", ((1.0 - v.remaining).max(0.0) / self.per_s).ceil().max(1.0) as u64);
        }
    }
}

/// The middleware: buckets are keyed by a digest of the presented key, so
/// even guesses at keys are limited before any database lookup.
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limiter = &state.limiter;
    let key = req.headers().get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let (Some(key), true) = (key, limiter.enabled()) else {
        return next.run(req).await;
    };
    let bucket = crate::auth::hex(&Sha256::digest(key.as_bytes())[..12]);
    let verdict = limiter.take(&bucket).await;
    let mut response = if verdict.allowed {
        next.run(req).await
    } else {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests for this key; see Retry-After")
            .into_response()
    };
    limiter.headers(&verdict, response.headers_mut());
    response
}
