//! Every metric family the daemon exports, described once: its HELP text and unit for
//! `/metrics`, and the series registered at zero when the daemon starts or reloads, so that an
//! alert such as `increase(asana_worker_audit_log_lost_windows_total[5m]) > 0` fires on the
//! first event rather than on the second (a counter that appears at 1 has no increase).
//!
//! One prefix, `asana_worker_`; ratios end in `_ratio`, durations in `_seconds`, byte counts in
//! `_bytes`, counters in `_total` (see docs/operations.md, "Metrics").

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Causes of a 429 (`asana_worker_rate_limited_total{cause}`).
pub const RATE_LIMIT_CAUSES: [&str; 4] = ["quota", "search", "concurrency", "job_cap"];

/// Outcomes of a run attempt (`asana_worker_runs_total{outcome}`).
pub const RUN_OUTCOMES: [&str; 6] = [
    "completed",
    "retry",
    "snooze",
    "failed",
    "needs_reauth",
    "interrupted",
];

/// Describes every family (HELP and unit). Called once when the recorder is installed.
pub fn describe_all() {
    describe_gauge!(
        "asana_worker_build_info",
        "Always 1; the labels name the running build (version, git commit)."
    );
    describe_gauge!(
        "asana_worker_database_size_bytes",
        Unit::Bytes,
        "Size of the daemon's database (the SQLite file with its WAL, or pg_database_size)."
    );
    // Replicas and the job set.
    describe_gauge!(
        "asana_worker_job_set_info",
        "Always 1 for the job set this process runs; the label is its fingerprint (jobs list, /readyz)."
    );
    describe_gauge!(
        "asana_worker_job_set_disagreement",
        "1 while live replicas have run different job files for longer than a reload takes."
    );
    describe_gauge!(
        "asana_worker_replicas",
        "Daemon processes announcing themselves in the shared database."
    );
    describe_gauge!(
        "asana_worker_credential_lease_held",
        "1 while this process holds the credential's lease and runs its jobs (PostgreSQL replicas)."
    );
    describe_counter!(
        "asana_worker_credential_lease_acquisitions_total",
        "Times this process took a credential's lease (at start, or from a replica that stopped)."
    );
    // Runs, queue and scheduler.
    describe_counter!(
        "asana_worker_runs_total",
        "Run attempts ended, by job, kind and outcome."
    );
    describe_histogram!(
        "asana_worker_run_duration_seconds",
        Unit::Seconds,
        "Duration of run attempts, by job and kind."
    );
    describe_gauge!(
        "asana_worker_runs_in_progress",
        "Runs executing in this process, by kind."
    );
    describe_gauge!(
        "asana_worker_queue_depth",
        "Runs in the shared queue, by state."
    );
    describe_gauge!(
        "asana_worker_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the job's last completed run."
    );
    describe_counter!(
        "asana_worker_lease_rescues_total",
        "Runs taken back from a worker whose lease expired or from this daemon's killed predecessor."
    );
    describe_counter!(
        "asana_worker_scheduler_errors_total",
        "Scheduler ticks that failed (the store could not be read or written)."
    );
    describe_counter!(
        "asana_worker_scheduler_fires_total",
        "Fires handled by the leader, by outcome (enqueued, misfire_run, skipped)."
    );
    describe_gauge!(
        "asana_worker_scheduler_lag_seconds",
        Unit::Seconds,
        "How late the job's last fire was enqueued."
    );
    describe_gauge!(
        "asana_worker_scheduler_leader",
        "1 while this process holds the scheduler's leader lease."
    );
    describe_counter!(
        "asana_worker_config_reloads_total",
        "Job-file reloads applied."
    );
    describe_counter!(
        "asana_worker_config_reload_failures_total",
        "Job-file reloads refused because the new files are invalid (the previous jobs keep running)."
    );
    // Asana requests and the budget.
    describe_counter!(
        "asana_worker_requests_total",
        "Requests sent to Asana, by token, class and status."
    );
    describe_histogram!(
        "asana_worker_request_duration_seconds",
        Unit::Seconds,
        "Duration of Asana requests, by class."
    );
    describe_counter!(
        "asana_worker_retries_total",
        "Asana requests retried, by token and reason."
    );
    describe_counter!(
        "asana_worker_rate_limited_total",
        "429 answers, by token and cause (quota: another client spends the token; search; job_cap: the 5 concurrent export jobs per user)."
    );
    describe_counter!(
        "asana_worker_offset_fallbacks_total",
        "Pagination offsets Asana refused as expired, walked again from a fallback."
    );
    describe_counter!(
        "asana_worker_budget_cooldowns_total",
        "Pauses of a whole token after a 429, by cause."
    );
    describe_histogram!(
        "asana_worker_budget_wait_seconds",
        Unit::Seconds,
        "Time requests waited for the token's budget, by token, class and priority."
    );
    describe_gauge!(
        "asana_worker_budget_in_flight",
        "Requests in flight, by token and class."
    );
    describe_gauge!(
        "asana_worker_budget_waiting",
        "Requests waiting for the token's budget."
    );
    describe_gauge!(
        "asana_worker_budget_utilization_ratio",
        "Share of the token's per-minute limit used in the current window (0 to 1)."
    );
    describe_gauge!(
        "asana_worker_budget_export_slots_in_use",
        "Export jobs running for the Asana user (Asana allows 5)."
    );
    // Credentials.
    describe_gauge!(
        "asana_worker_credential_state",
        "1 for the credential's current state (active, refreshing, revoked, expired, unknown)."
    );
    describe_gauge!(
        "asana_worker_credential_hygiene_warnings",
        "Credential hygiene problems (a PAT where a service account fits, an old token), by reason."
    );
    describe_counter!(
        "asana_worker_credential_rejections_total",
        "Runs ended because Asana rejected the credential (revoked, expired, deauthorized)."
    );
    describe_counter!(
        "asana_worker_oauth_refreshes_total",
        "OAuth access-token refreshes, by credential and outcome."
    );
    // Audit log.
    describe_counter!(
        "asana_worker_audit_log_events_total",
        "Audit-log events delivered to the sink."
    );
    describe_gauge!(
        "asana_worker_audit_log_events_per_run",
        "Events delivered by the job's last run."
    );
    describe_gauge!(
        "asana_worker_audit_log_lag_seconds",
        Unit::Seconds,
        "Age of the newest event delivered when the last run caught up."
    );
    describe_gauge!(
        "asana_worker_audit_log_seconds_since_last_event",
        Unit::Seconds,
        "Time since the job last delivered an event."
    );
    describe_gauge!(
        "asana_worker_audit_log_retention_headroom_seconds",
        Unit::Seconds,
        "Time left before the oldest undelivered window falls out of Asana's 90-day retention."
    );
    describe_counter!(
        "asana_worker_audit_log_late_events_total",
        "Events that arrived behind the tail and were caught by the overlap re-read."
    );
    describe_counter!(
        "asana_worker_audit_log_lost_windows_total",
        "Windows of events lost to Asana's retention before they could be read."
    );
    describe_counter!(
        "asana_worker_audit_log_offset_fallbacks_total",
        "Expired audit-log offsets resumed from the newest delivered event."
    );
    describe_counter!(
        "asana_worker_sink_http_events_total",
        "Events POSTed to the http sink's collector."
    );
    describe_counter!(
        "asana_worker_sink_http_retries_total",
        "POSTs to the http sink's collector retried."
    );
    // Exports.
    describe_counter!(
        "asana_worker_exports_total",
        "Exports ended, by kind and outcome."
    );
    describe_counter!(
        "asana_worker_export_downloaded_bytes_total",
        Unit::Bytes,
        "Bytes of export files downloaded."
    );
    describe_gauge!(
        "asana_worker_export_progress_ratio",
        "Share of the current export file downloaded (0 to 1)."
    );
    describe_counter!(
        "asana_worker_export_url_refreshes_total",
        "Expired download URLs replaced by a fresh one mid-download."
    );
    // Sync.
    describe_counter!(
        "asana_worker_sync_gaps_total",
        "Resources a sync job's token could not read (402, 403, 404), recorded in sync_status."
    );
    // Digest.
    describe_counter!(
        "asana_worker_digest_deliveries_total",
        "Digest delivery units by channel and outcome (sent, retry, failed, unconfirmed)."
    );
}

/// Registers at zero the counters an alert watches, for the daemon and for each job (name, kind)
/// and credential it runs; series that exist already keep their value. Called at start and after
/// every reload.
pub fn register_at_zero<'a>(
    jobs: impl IntoIterator<Item = (&'a str, &'a str)>,
    credentials: impl IntoIterator<Item = &'a str>,
) {
    for name in [
        "asana_worker_config_reloads_total",
        "asana_worker_config_reload_failures_total",
        "asana_worker_lease_rescues_total",
        "asana_worker_scheduler_errors_total",
        "asana_worker_offset_fallbacks_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(
        "asana_worker_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => option_env!("ASANA_WORKER_GIT_COMMIT").unwrap_or("unknown"),
    )
    .set(1.0);
    for (job, kind) in jobs {
        for outcome in RUN_OUTCOMES {
            metrics::counter!("asana_worker_runs_total", "job" => job.to_string(), "kind" => kind.to_string(), "outcome" => outcome).increment(0);
        }
        if kind == "audit_log" {
            for name in [
                "asana_worker_audit_log_events_total",
                "asana_worker_audit_log_late_events_total",
                "asana_worker_audit_log_lost_windows_total",
                "asana_worker_audit_log_offset_fallbacks_total",
            ] {
                metrics::counter!(name, "job" => job.to_string()).increment(0);
            }
        }
    }
    for credential in credentials {
        for cause in RATE_LIMIT_CAUSES {
            metrics::counter!("asana_worker_rate_limited_total", "token" => credential.to_string(), "cause" => cause).increment(0);
        }
        metrics::counter!("asana_worker_credential_rejections_total", "credential" => credential.to_string()).increment(0);
    }
}
