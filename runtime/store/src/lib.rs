//! Storage backends for the engine's traits: Postgres (sqlx), embedded SQLite
//! (the default with no `DATABASE_URL`), and a Redis (fred) hot tier in front
//! of either that caches the latest state per thread and is never the only copy.
//!
//! Depends on the engine (for the traits) and on drivers; nothing here knows
//! about YAML, HTTP or the CLI.

mod codec;
pub mod connect;
pub mod error;
pub mod postgres;
pub mod redis;
mod runs_sql;
pub mod service;
mod service_sql;
pub mod sqlite;
mod thread_sql;

pub use connect::{Store, default_database_url};
pub use crewgraph_engine::MemoryStore;
pub use error::StoreError;
pub use postgres::PgStore;
pub use redis::{HotCheckpointer, RedisCache};
pub use service::{
    ApiKey, ApprovalQuery, Attempt, Delivery, EventLog, GraphRegistry, Heartbeat, KeyStore, Lease, Multitask,
    QueueStats, REGISTERED_PREFIX, Registered, RegisteredGraph, RunQuery, RunQueue, StoredEvent, Submission, Submitted,
    WebhookQueue, parse_reference,
};
pub use sqlite::SqliteStore;
