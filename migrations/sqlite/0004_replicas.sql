-- Every running daemon announces itself here (a heartbeat with an expiry), with the fingerprint
-- of the job set it runs: replicas count each other to share credentials, and a job set that
-- differs between replicas for longer than a reload is reported (ARCHITECTURE.md, "Replicas share a token's budget").
CREATE TABLE replicas (
    owner         TEXT    PRIMARY KEY NOT NULL,
    job_set       TEXT    NOT NULL,
    jobs          INTEGER NOT NULL CONSTRAINT replicas_jobs_check CHECK (jobs >= 0),
    version       TEXT    NOT NULL,
    started_at    INTEGER NOT NULL,
    seen_at       INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    job_set_since INTEGER NOT NULL
);

CREATE INDEX replicas_expires_at ON replicas (expires_at);
