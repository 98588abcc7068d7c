-- The daemon's queue and state (PostgreSQL).

CREATE TABLE runs (
    id                 uuid        PRIMARY KEY,
    job_name           text        NOT NULL,
    kind               text        NOT NULL,
    "trigger"          text        NOT NULL
        CONSTRAINT runs_trigger_check CHECK ("trigger" IN ('schedule', 'misfire', 'manual')),
    fire_time          timestamptz,
    unique_key         text        NOT NULL,
    priority           integer     NOT NULL,
    state              text        NOT NULL
        CONSTRAINT runs_state_check CHECK (state IN ('queued', 'running', 'retrying', 'completed',
            'failed', 'dead', 'needs_reauth', 'cancelled', 'skipped')),
    attempt            integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL CONSTRAINT runs_max_attempts_check CHECK (max_attempts >= 1),
    run_after          timestamptz NOT NULL,
    retry_initial_secs bigint      NOT NULL,
    retry_max_secs     bigint      NOT NULL,
    lease_owner        text,
    lease_expires_at   timestamptz,
    rescues            integer     NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL,
    started_at         timestamptz,
    finished_at        timestamptz,
    last_error         text,
    progress           jsonb       NOT NULL DEFAULT '{}'::jsonb,
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
    job_name     text        PRIMARY KEY,
    next_fire_at timestamptz NOT NULL,
    last_fire_at timestamptz,
    definition   text        NOT NULL
);

CREATE TABLE leases (
    name       text        PRIMARY KEY,
    owner      text        NOT NULL,
    expires_at timestamptz NOT NULL
);

CREATE TABLE checkpoints (
    job_name   text        NOT NULL,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (job_name, key)
);
