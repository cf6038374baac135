//! API keys: made once and printed, stored as SHA-256, checked per request
//! (with a short in-process cache), each with a tenant and roles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use crewgraph_store::{ApiKey, KeyStore};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// What a key may do. `read` sees the tenant's runs, approvals and threads;
/// `submit` also creates and cancels runs and adds documents; `approve`
/// decides approvals; `admin` does everything, registering graphs included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Submit,
    Approve,
    Admin,
}

impl Role {
    pub const ALL: [&'static str; 4] = ["read", "submit", "approve", "admin"];

    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Submit => "submit",
            Role::Approve => "approve",
            Role::Admin => "admin",
        }
    }
}

/// The authenticated caller of a `/v1` request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub tenant: String,
    pub roles: Vec<String>,
}

impl Caller {
    /// Every role may read; the others need their role or `admin`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        let has = |r: &str| self.roles.iter().any(|x| x == r);
        if has("admin") || role == Role::Read || has(role.name()) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("this key lacks the `{}` role", role.name())))
        }
    }
}

/// Lowercase hex of bytes (digests, signatures).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A new key: `cg_` + 64 random hex digits (256 bits from the OS), and its record.
pub fn new_key(tenant: &str, roles: &[String]) -> Result<(String, ApiKey), String> {
    if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("tenant `{tenant}`: use letters, digits, `-`, `_` or `.`"));
    }
    if roles.is_empty() {
        return Err(format!("give at least one role ({})", Role::ALL.join(", ")));
    }
    if let Some(bad) = roles.iter().find(|r| !Role::ALL.contains(&r.as_str())) {
        return Err(format!("unknown role `{bad}` (expected {})", Role::ALL.join(", ")));
    }
    let secret: String = (0..2).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let key = format!("cg_{secret}");
    let record = ApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_string(),
        roles: roles.to_vec(),
        created_at: crewgraph_engine::now_ms(),
        revoked_at: None,
    };
    Ok((key, record))
}

/// Keys looked up recently, so a busy client costs one hash per request, not a query.
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
}

const KEY_CACHE_TTL: Duration = Duration::from_secs(30);

impl KeyCache {
    pub async fn lookup(&self, keys: &Arc<dyn KeyStore>, key: &str) -> Result<Option<ApiKey>, ApiError> {
        let hash = hash_key(key);
        if let Ok(cache) = self.entries.lock()
            && let Some((found, at)) = cache.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(found.clone());
        }
        let found = keys.key_by_hash(&hash).await?;
        if let Ok(mut cache) = self.entries.lock() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(hash, (found.clone(), Instant::now()));
        }
        Ok(found)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("send `Authorization: Bearer <key>`"))?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
        let found = state.key_cache.lookup(&state.store.keys, key).await?;
        let key = found.ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
        Ok(Caller { key_id: key.id, tenant: key.tenant, roles: key.roles })
    }
}
