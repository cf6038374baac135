-- The service: runs owned by tenants and queued for workers under leases,
-- idempotent submission, one executing run per thread, the run event log,
-- and hashed API keys.
ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
-- NULL: not on the queue (in-process run, waiting for people, or over);
-- 'ready': a worker may claim it; 'leased': a worker holds it until lease_expires_at.
ALTER TABLE runs ADD COLUMN queue_state TEXT;
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 5;
ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
ALTER TABLE runs ADD COLUMN request_hash TEXT;
ALTER TABLE runs ADD COLUMN webhook TEXT;
CREATE UNIQUE INDEX runs_idempotency ON runs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_queue ON runs (created_at) WHERE queue_state IS NOT NULL;
CREATE INDEX runs_tenant_created ON runs (tenant, created_at DESC);
-- At most one run executes or waits on a thread, whoever asks.
CREATE UNIQUE INDEX runs_one_active_per_thread ON runs (thread_id) WHERE status IN ('running', 'waiting');

CREATE TABLE run_events (
    run_id     TEXT   NOT NULL,
    seq        INTEGER NOT NULL, -- 1, 2, ... per run: the SSE event id
    body       TEXT   NOT NULL, -- the event
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE api_keys (
    id         TEXT   PRIMARY KEY,
    tenant     TEXT   NOT NULL,
    key_hash   TEXT   NOT NULL UNIQUE, -- SHA-256 of the key, hex
    roles      TEXT   NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
