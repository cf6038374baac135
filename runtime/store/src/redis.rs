//! The Redis hot tier: caches the latest hydrated checkpoint per thread in
//! front of a durable checkpointer.
//!
//! Redis is never the authority on *which* checkpoint is latest: a read asks
//! the database for the latest id (an index lookup) and uses the cached state
//! only if it is that checkpoint, so a stale entry (a write that reached
//! Postgres but not Redis, a flushed or restarted Redis) can never resume a
//! run from the wrong place. What the cache saves is rebuilding the state
//! from blobs, which grows with the thread's history. When Redis is
//! unreachable the tier steps aside for a few seconds and every call goes
//! straight to the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use crewgraph_engine::{ChannelBlob, Checkpoint, Checkpointer, Retention, StorageError, TaskResult};
use fred::prelude::*;
use uuid::Uuid;

use crate::error::StoreError;

/// A Redis connection with a key prefix (one per deployment, or per test).
#[derive(Clone)]
pub struct RedisCache {
    client: Client,
    /// For the subscriber connection (a pool client cannot subscribe).
    config: Config,
    prefix: String,
    ttl_s: i64,
}

impl RedisCache {
    /// Connects with short timeouts: a slow Redis must not slow the run. An
    /// unreachable Redis is not an error (it is only a cache): the client
    /// keeps reconnecting in the background and the tier steps aside meanwhile.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let config = Config::from_url(url)?;
        let client = Builder::from_config(config.clone())
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(500);
            })
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build()?;
        client.connect();
        match tokio::time::timeout(Duration::from_secs(2), client.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis is unreachable; continuing with the database alone")
            }
            Err(_) => tracing::warn!("redis did not answer within 2 s; continuing with the database alone"),
        }
        Ok(Self { client, config, prefix: prefix.to_string(), ttl_s: 24 * 3600 })
    }

    fn key(&self, thread_id: &str) -> String {
        format!("{}:ckpt:{thread_id}", self.prefix)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = self.client.ping(None).await?;
        Ok(())
    }

    /// Takes one token from the bucket `name` (capacity `capacity`, refilled
    /// at `per_s` a second), atomically in Redis so every replica shares it.
    /// Returns whether a token was there and how many are left.
    pub async fn take_token(&self, name: &str, capacity: f64, per_s: f64) -> Result<(bool, f64), StoreError> {
        const SCRIPT: &str = r#"
            local cap, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
            local t = redis.call('TIME')
            local now = t[1] * 1000 + math.floor(t[2] / 1000)
            local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
            local tokens = tonumber(b[1]) or cap
            local at = tonumber(b[2]) or now
            tokens = math.min(cap, tokens + math.max(0, now - at) * rate / 1000)
            local ok = 0
            if tokens >= 1 then tokens = tokens - 1; ok = 1 end
            redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
            redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate * 1000) + 1000)
            return {tostring(ok), tostring(tokens)}
        "#;
        let key = format!("{}:rate:{name}", self.prefix);
        let out: Vec<String> = self.client.eval(SCRIPT, key, vec![capacity.to_string(), per_s.to_string()]).await?;
        let ok = out.first().is_some_and(|v| v == "1");
        let left = out.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        Ok((ok, left))
    }

    fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Tells every replica that these runs have new events (ids separated by newlines).
    pub async fn publish_events(&self, run_ids: &[&str]) -> Result<(), StoreError> {
        let _: i64 = self.client.publish(self.events_channel(), run_ids.join("\n")).await?;
        Ok(())
    }

    /// Forwards every run id announced by [`publish_events`](Self::publish_events),
    /// from any replica, into `wake`; reconnects and resubscribes by itself. Returns
    /// only if the subscriber cannot be built.
    pub async fn follow_events(&self, wake: tokio::sync::broadcast::Sender<Arc<str>>) -> Result<(), StoreError> {
        let subscriber = Builder::from_config(self.config.clone())
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        subscriber.subscribe(self.events_channel()).await?;
        let mut messages = subscriber.message_rx();
        loop {
            match messages.recv().await {
                Ok(message) => {
                    let ids: String = message.value.convert().unwrap_or_default();
                    for id in ids.split('\n').filter(|s| !s.is_empty()) {
                        let _ = wake.send(Arc::from(id));
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    }

    /// Deletes every key under this prefix (tests, and `crewgraph` operators).
    pub async fn clear(&self) -> Result<u64, StoreError> {
        let pattern = format!("{}:*", self.prefix);
        let keys: Vec<String> = self.client.custom(fred::cmd!("KEYS"), vec![pattern]).await?;
        if keys.is_empty() {
            return Ok(0);
        }
        let n: u64 = self.client.del(keys).await?;
        Ok(n)
    }
}

/// A checkpointer that caches latest state in Redis in front of `inner`.
pub struct HotCheckpointer {
    inner: Arc<dyn Checkpointer>,
    cache: RedisCache,
    /// Until when (ms) Redis is skipped after a failure.
    down_until: AtomicI64,
}

const BACKOFF_MS: i64 = 3_000;

impl HotCheckpointer {
    pub fn new(inner: Arc<dyn Checkpointer>, cache: RedisCache) -> Self {
        Self { inner, cache, down_until: AtomicI64::new(0) }
    }

    fn available(&self) -> bool {
        crewgraph_engine::now_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, e: &fred::error::Error) {
        tracing::warn!(error = %e, "redis {what} failed; using the database alone for {BACKOFF_MS} ms");
        self.down_until.store(crewgraph_engine::now_ms() + BACKOFF_MS, Ordering::Relaxed);
    }

    async fn cache_put(&self, c: &Checkpoint) {
        if !self.available() {
            return;
        }
        let Ok(body) = serde_json::to_string(c) else {
            return;
        };
        let r: Result<(), _> = self
            .cache
            .client
            .set(self.cache.key(&c.thread_id), body, Some(Expiration::EX(self.cache.ttl_s)), None, false)
            .await;
        if let Err(e) = r {
            self.failed("write", &e);
        }
    }

    async fn cache_get(&self, thread_id: &str) -> Option<Checkpoint> {
        if !self.available() {
            return None;
        }
        match self.cache.client.get::<Option<String>, _>(self.cache.key(thread_id)).await {
            Ok(body) => body.and_then(|b| serde_json::from_str(&b).ok()),
            Err(e) => {
                self.failed("read", &e);
                None
            }
        }
    }

    async fn cache_del(&self, thread_id: &str) {
        if self.available()
            && let Err(e) = self.cache.client.del::<i64, _>(self.cache.key(thread_id)).await
        {
            self.failed("delete", &e);
        }
    }
}

#[async_trait]
impl Checkpointer for HotCheckpointer {
    async fn put(&self, checkpoint: &Checkpoint, blobs: &[ChannelBlob]) -> Result<(), StorageError> {
        // Durable first: Redis only ever holds what the database already has.
        self.inner.put(checkpoint, blobs).await?;
        self.cache_put(checkpoint).await;
        Ok(())
    }

    async fn get(&self, thread_id: &str, id: Option<Uuid>) -> Result<Option<Checkpoint>, StorageError> {
        let wanted = match id {
            Some(id) => id,
            None => match self.inner.latest_id(thread_id).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        if let Some(c) = self.cache_get(thread_id).await
            && c.id == wanted
        {
            return Ok(Some(c));
        }
        let found = self.inner.get(thread_id, Some(wanted)).await?;
        if let (Some(c), None) = (&found, id) {
            self.cache_put(c).await;
        }
        Ok(found)
    }

    async fn latest_id(&self, thread_id: &str) -> Result<Option<Uuid>, StorageError> {
        self.inner.latest_id(thread_id).await
    }

    async fn list(&self, thread_id: &str, limit: Option<u32>) -> Result<Vec<Checkpoint>, StorageError> {
        self.inner.list(thread_id, limit).await
    }

    async fn put_writes(&self, thread_id: &str, checkpoint_id: Uuid, result: &TaskResult) -> Result<(), StorageError> {
        self.inner.put_writes(thread_id, checkpoint_id, result).await
    }

    async fn get_writes(&self, thread_id: &str, checkpoint_id: Uuid) -> Result<Vec<TaskResult>, StorageError> {
        self.inner.get_writes(thread_id, checkpoint_id).await
    }

    async fn copy_thread(&self, from: &str, to: &str, up_to: Option<Uuid>) -> Result<(), StorageError> {
        self.inner.copy_thread(from, to, up_to).await
    }

    async fn delete_thread(&self, thread_id: &str) -> Result<(), StorageError> {
        self.inner.delete_thread(thread_id).await?;
        self.cache_del(thread_id).await;
        Ok(())
    }

    async fn prune(&self, retention: &Retention) -> Result<u64, StorageError> {
        self.inner.prune(retention).await
    }
}
