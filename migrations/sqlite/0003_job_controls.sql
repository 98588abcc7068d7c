-- An operator's hold on a job that every replica obeys: a row while the job is paused (the
-- status page's pause and resume). The scheduler records each fire of a paused job as a skipped
-- run naming the pause, so the history says why nothing ran; manual runs still run.
CREATE TABLE job_controls (
    job_name  TEXT    PRIMARY KEY NOT NULL,
    paused_at INTEGER NOT NULL,
    paused_by TEXT    NOT NULL CONSTRAINT job_controls_paused_by_check CHECK (length(paused_by) > 0)
);

-- The run history newest first, unfiltered or by state (the status page's runs, `runs list`),
-- without sorting the whole table.
CREATE INDEX runs_created ON runs (created_at);
