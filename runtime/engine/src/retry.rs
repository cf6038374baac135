//! Retry policy for node failures: exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often and how patiently a failing node is run again. Only errors a
/// node marks retryable (timeouts, transient I/O) are retried unless
/// `retry_all` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
    /// Randomise each wait between 50% and 100% of its nominal value.
    pub jitter: bool,
    pub retry_all: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_backoff_ms: 200,
            max_backoff_ms: 10_000,
            multiplier: 2.0,
            jitter: true,
            retry_all: false,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempts count from 1).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let nominal = self.initial_backoff_ms as f64 * self.multiplier.powi(attempt.saturating_sub(1) as i32);
        let capped = nominal.min(self.max_backoff_ms as f64);
        let ms = if self.jitter { capped * (0.5 + fastrand::f64() * 0.5) } else { capped };
        Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy { jitter: false, max_backoff_ms: 1000, ..Default::default() };
        assert_eq!(p.backoff(1), Duration::from_millis(200));
        assert_eq!(p.backoff(2), Duration::from_millis(400));
        assert_eq!(p.backoff(10), Duration::from_millis(1000));
        let j = RetryPolicy { jitter: true, ..Default::default() };
        let b = j.backoff(2);
        assert!(b >= Duration::from_millis(200) && b <= Duration::from_millis(400));
    }
}
