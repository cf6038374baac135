-- Checkpoints: one row per step. Channel values live in checkpoint_blobs,
-- keyed by the version (step) at which they changed, so an unchanged channel
-- is never rewritten and an append/messages channel stores only its delta.
CREATE TABLE checkpoints (
    thread_id     TEXT   NOT NULL,
    checkpoint_id TEXT   NOT NULL,
    parent_id     TEXT,
    step          INTEGER NOT NULL,
    source        TEXT   NOT NULL,
    versions      TEXT   NOT NULL, -- JSON {channel: version}
    next          TEXT   NOT NULL, -- JSON [task]
    metadata      TEXT   NOT NULL, -- JSON
    created_at    INTEGER NOT NULL, -- ms since epoch
    PRIMARY KEY (thread_id, checkpoint_id)
);
CREATE INDEX checkpoints_thread_step ON checkpoints (thread_id, step DESC);

CREATE TABLE checkpoint_blobs (
    thread_id TEXT   NOT NULL,
    channel   TEXT   NOT NULL,
    version   INTEGER NOT NULL,
    kind      TEXT   NOT NULL, -- full | append | messages
    body      TEXT   NOT NULL, -- JSON: the value, or the items a step added
    PRIMARY KEY (thread_id, channel, version)
);

-- Results of tasks that finished inside a step that has not been checkpointed yet.
CREATE TABLE checkpoint_writes (
    thread_id     TEXT   NOT NULL,
    checkpoint_id TEXT   NOT NULL,
    task_id       TEXT   NOT NULL,
    result        TEXT   NOT NULL, -- JSON TaskResult
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_id, task_id)
);

CREATE TABLE runs (
    id         TEXT   PRIMARY KEY,
    graph      TEXT   NOT NULL,
    thread_id  TEXT   NOT NULL,
    status     TEXT   NOT NULL,
    input      TEXT  NOT NULL,
    output     TEXT  NOT NULL,
    error      TEXT  NOT NULL,
    usage      TEXT  NOT NULL,
    definition TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX runs_status_created ON runs (status, created_at DESC);
CREATE INDEX runs_thread ON runs (thread_id);

CREATE TABLE approvals (
    id           TEXT   PRIMARY KEY,
    run_id       TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    thread_id    TEXT   NOT NULL,
    interrupt_id TEXT   NOT NULL,
    node         TEXT   NOT NULL,
    payload      TEXT  NOT NULL,
    actions      TEXT  NOT NULL,
    status       TEXT   NOT NULL,
    decision     TEXT,
    created_at   INTEGER NOT NULL,
    decided_at   INTEGER,
    expires_at   INTEGER,
    UNIQUE (thread_id, interrupt_id)
);
CREATE INDEX approvals_status ON approvals (status, created_at);
CREATE INDEX approvals_run ON approvals (run_id);
