//! Webhooks: when a run submitted with a `webhook` ends or asks for an
//! approval, a delivery is queued in the database; workers send due
//! deliveries with an HMAC-SHA256 signature, retry failures with
//! exponential backoff, and keep every attempt's outcome as the delivery log.
//!
//! The signature header is `X-Crewgraph-Signature: t=<unix seconds>,v1=<hex>`
//! where `<hex>` is HMAC-SHA256(`CREWGRAPH_WEBHOOK_SECRET`, "<t>.<body>"):
//! a receiver recomputes it and rejects old timestamps to stop replays.

use std::sync::Arc;
use std::time::Duration;

use crewgraph_engine::{Run, RunStatus, api};
use crewgraph_store::{Attempt, Delivery, WebhookQueue};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i32 = 8;
const TIMEOUT: Duration = Duration::from_secs(10);
const BATCH: u32 = 16;

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", crate::auth::hex(&mac))
}

/// Queues the deliveries a settled run calls for; `url` is the run's webhook
/// (workers have it from their lease, so a run without one costs nothing).
pub async fn on_settled(state: &AppState, run: &Run, url: Option<&str>) {
    let Some(url) = url.map(str::to_string) else {
        return;
    };
    let mut deliveries = Vec::new();
    let now = crewgraph_engine::now_ms();
    let delivery = |event: &str, id: String, data: serde_json::Value| Delivery {
        id,
        run_id: run.id.clone(),
        tenant: run.tenant.clone(),
        url: url.clone(),
        event: event.to_string(),
        body: json!({"event": event, "run": api::run(run), "data": data}),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        last_status: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    };
    if run.status.is_terminal() {
        let event = format!("run.{}", run.status.as_str());
        // One per run and outcome: a worker that settles the same run again queues nothing new.
        deliveries.push(delivery(&event, format!("{}:{event}", run.id), json!(null)));
    } else if run.status == RunStatus::Waiting {
        let query = crewgraph_store::ApprovalQuery {
            tenant: run.tenant.clone(),
            status: Some(crewgraph_engine::ApprovalStatus::Pending),
            run_id: Some(run.id.clone()),
            graph: None,
        };
        for a in state.store.queue.approvals(&query).await.unwrap_or_default() {
            deliveries.push(delivery("approval.requested", format!("{}:approval:{}", run.id, a.id), api::approval(&a)));
        }
    }
    for d in deliveries {
        if let Err(e) = state.store.webhooks.enqueue_delivery(&d).await {
            tracing::warn!(error = %e, event = %d.event, "cannot queue a webhook delivery");
        }
    }
}

/// Backoff before attempt `n + 1`: 1 s, 2 s, 4 s, ... up to 10 minutes, with jitter
/// (half the base plus up to half again).
fn backoff_ms(attempts: i32) -> i64 {
    let base = 1000i64.saturating_mul(1i64 << attempts.clamp(0, 20)).min(600_000);
    base / 2 + fastrand::i64(0..=base / 2)
}

/// Sends due deliveries until shutdown.
pub async fn deliver_loop(state: AppState, secret: Arc<str>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks disabled: cannot build an HTTP client");
            return;
        }
    };
    let queue: Arc<dyn WebhookQueue> = state.store.webhooks.clone();
    while !state.shutdown.is_cancelled() {
        let due = queue.claim_deliveries(BATCH, TIMEOUT.as_millis() as i64 * 2).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot claim webhook deliveries");
            vec![]
        });
        let idle = due.is_empty();
        let sends = due.into_iter().map(|d| {
            let (http, queue, secret) = (http.clone(), queue.clone(), secret.clone());
            async move {
                let attempt = send(&http, &secret, &d).await;
                tracing::info!(delivery = %d.id, event = %d.event, attempt = d.attempts, outcome = ?attempt, "webhook");
                if let Err(e) = queue.record_attempt(&d.id, &attempt).await {
                    tracing::warn!(error = %e, "cannot record a webhook attempt; it will be sent again");
                }
            }
        });
        futures::future::join_all(sends).await;
        if idle {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = state.shutdown.cancelled() => {}
            }
        }
    }
}

async fn send(http: &reqwest::Client, secret: &str, d: &Delivery) -> Attempt {
    let body = d.body.to_string();
    let timestamp = crewgraph_engine::now_ms() / 1000;
    let result = http
        .post(&d.url)
        .header("content-type", "application/json")
        .header("x-crewgraph-event", &d.event)
        .header("x-crewgraph-delivery", &d.id)
        .header("x-crewgraph-signature", signature(secret, timestamp, &body))
        .body(body)
        .send()
        .await;
    let retry_at = (d.attempts < MAX_ATTEMPTS).then(|| crewgraph_engine::now_ms() + backoff_ms(d.attempts - 1));
    match result {
        Ok(r) if r.status().is_success() => Attempt::Delivered { status: i32::from(r.status().as_u16()) },
        Ok(r) => Attempt::Failed {
            status: Some(i32::from(r.status().as_u16())),
            error: format!("answered {}", r.status()),
            retry_at,
        },
        Err(e) => Attempt::Failed { status: None, error: e.to_string(), retry_at },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::auth::hex;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1 and 2 of RFC 4231.
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!((500..=1000).contains(&backoff_ms(0)));
        assert!((1000..=2000).contains(&backoff_ms(1)));
        assert!(backoff_ms(30) <= 600_000);
    }
}
