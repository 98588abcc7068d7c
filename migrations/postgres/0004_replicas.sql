-- Every running daemon announces itself here (a heartbeat with an expiry), with the fingerprint
-- of the job set it runs: replicas count each other to share credentials, and a job set that
-- differs between replicas for longer than a reload is reported (ARCHITECTURE.md, "Replicas share a token's budget").
CREATE TABLE replicas (
    owner         text        PRIMARY KEY,
    job_set       text        NOT NULL,
    jobs          integer     NOT NULL CONSTRAINT replicas_jobs_check CHECK (jobs >= 0),
    version       text        NOT NULL,
    started_at    timestamptz NOT NULL,
    seen_at       timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    job_set_since timestamptz NOT NULL
);

CREATE INDEX replicas_expires_at ON replicas (expires_at);
