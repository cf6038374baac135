//! A per-profile requests-per-minute limit (sliding window, in process).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Mutex;

pub struct RateLimiter {
    rpm: Option<u32>,
    sent: Mutex<VecDeque<Instant>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl RateLimiter {
    pub fn new(rpm: Option<u32>) -> Self {
        Self { rpm: rpm.filter(|r| *r > 0), sent: Mutex::new(VecDeque::new()) }
    }

    /// Waits until one more request fits in the last minute's budget.
    pub async fn acquire(&self) {
        let Some(rpm) = self.rpm else { return };
        loop {
            let wait = {
                let mut sent = self.sent.lock().await;
                let now = Instant::now();
                while sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    sent.pop_front();
                }
                if sent.len() < rpm as usize {
                    sent.push_back(now);
                    return;
                }
                sent.front().map(|t| WINDOW.saturating_sub(now.duration_since(*t))).unwrap_or_default()
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_request_over_the_limit_waits_for_the_window() {
        let limiter = RateLimiter::new(Some(2));
        let start = tokio::time::Instant::now();
        limiter.acquire().await;
        limiter.acquire().await;
        assert!(start.elapsed() < Duration::from_secs(1));
        limiter.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(59), "{:?}", start.elapsed());
    }
}
