-- The daemon's queue and state (SQLite). Timestamps are INTEGER microseconds since the Unix
-- epoch (UTC): exact, cheap to compare, and the same precision as PostgreSQL's timestamptz.

CREATE TABLE runs (
    id                 TEXT    PRIMARY KEY NOT NULL,
    job_name           TEXT    NOT NULL,
    kind               TEXT    NOT NULL,
    "trigger"          TEXT    NOT NULL
        CONSTRAINT runs_trigger_check CHECK ("trigger" IN ('schedule', 'misfire', 'manual')),
    fire_time          INTEGER,
    unique_key         TEXT    NOT NULL,
    priority           INTEGER NOT NULL,
    state              TEXT    NOT NULL
        CONSTRAINT runs_state_check CHECK (state IN ('queued', 'running', 'retrying', 'completed',
            'failed', 'dead', 'needs_reauth', 'cancelled', 'skipped')),
    attempt            INTEGER NOT NULL DEFAULT 0,
    max_attempts       INTEGER NOT NULL CONSTRAINT runs_max_attempts_check CHECK (max_attempts >= 1),
    run_after          INTEGER NOT NULL,
    retry_initial_secs INTEGER NOT NULL,
    retry_max_secs     INTEGER NOT NULL,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    rescues            INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    last_error         TEXT,
    progress           TEXT    NOT NULL DEFAULT '{}',
    -- One run per fire: the scheduler relies on this constraint, not on a check in code.
    CONSTRAINT runs_job_unique_key UNIQUE (job_name, unique_key)
);

-- Claims: the claimable runs (queued/retrying) in claim order, so picking the best due run is
-- an index walk that stops at the first match, not a sort of every due run.
CREATE INDEX runs_claim ON runs (priority DESC, run_after, created_at, id)
    WHERE state IN ('queued', 'retrying');
-- Listing and summaries by job, newest first.
CREATE INDEX runs_job ON runs (job_name, created_at);
-- Pruning finished runs.
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
-- At most one running run per job, enforced by the database (and used by the claim's NOT EXISTS).
CREATE UNIQUE INDEX runs_one_running_per_job ON runs (job_name) WHERE state = 'running';

CREATE TABLE schedules (
    job_name     TEXT    PRIMARY KEY NOT NULL,
    next_fire_at INTEGER NOT NULL,
    last_fire_at INTEGER,
    definition   TEXT    NOT NULL
);

CREATE TABLE leases (
    name       TEXT    PRIMARY KEY NOT NULL,
    owner      TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE checkpoints (
    job_name   TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL CONSTRAINT checkpoints_value_json CHECK (json_valid(value)),
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_name, key)
);
