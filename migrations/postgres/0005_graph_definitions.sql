-- Definitions registered over the API (POST /v1/graphs), per tenant, one row
-- per version. Runs name the version they started with in runs.definition
-- (`registered:<name>@<version>`), so a new version never changes a run in flight.
CREATE TABLE graph_definitions (
    tenant     TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    source     TEXT    NOT NULL, -- the YAML (or JSON) as sent
    digest     TEXT    NOT NULL, -- SHA-256 of source: registering the same text again is a no-op
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (tenant, name, version)
);
-- Rollback (multitask `rollback`): the run that discarded this one's checkpoints.
ALTER TABLE runs ADD COLUMN rolled_back_by TEXT;
CREATE INDEX runs_rolled_back_by ON runs (rolled_back_by) WHERE rolled_back_by IS NOT NULL;
-- The W3C trace context of the request that submitted the run: its executions join that trace.
ALTER TABLE runs ADD COLUMN traceparent TEXT;
