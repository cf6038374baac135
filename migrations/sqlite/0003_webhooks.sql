-- Webhook deliveries: queued when a run ends or asks for approval, sent by
-- workers with retries and backoff; the rows are the delivery log.
CREATE TABLE webhook_deliveries (
    id              TEXT    PRIMARY KEY,
    run_id          TEXT    NOT NULL,
    tenant          TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    event           TEXT    NOT NULL, -- run.succeeded | run.failed | run.cancelled | approval.requested
    body            TEXT    NOT NULL,
    status          TEXT    NOT NULL, -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER  NOT NULL,
    lease_expires_at INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER  NOT NULL,
    delivered_at    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_run ON webhook_deliveries (run_id, created_at);
