//! What the status page shows, gathered as JSON: the same values feed the HTML templates and
//! the `/api/…` endpoints, so a script reads exactly what a person sees.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::words;
use super::{Inner, Verification};
use crate::jobs::{Job, Kind};
use crate::store::{Run, RunFilter, RunState, StoreError};

/// Runs shown in a job's sparkline.
pub const SPARK_RUNS: i64 = 20;

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How a run's state is shown: a CSS class shared by badges and sparkline bars.
pub fn state_class(state: RunState) -> &'static str {
    match state {
        RunState::Completed => "ok",
        RunState::Failed | RunState::Dead | RunState::NeedsReauth => "bad",
        RunState::Running | RunState::Queued | RunState::Retrying => "busy",
        RunState::Cancelled | RunState::Skipped => "muted",
    }
}

/// How long a run took (or has taken so far, while it runs).
fn run_duration(run: &Run, now: DateTime<Utc>) -> Option<Duration> {
    let start = run.started_at?;
    let end = match run.state {
        RunState::Running => now,
        _ => run.finished_at?,
    };
    (end - start).to_std().ok()
}

/// What to do about a run in its state: the hint shown beside its error.
pub fn hint(run: &Run, credential: Option<&str>) -> Option<String> {
    let credential = credential.unwrap_or("its credential");
    Some(match run.state {
        RunState::NeedsReauth => format!(
            "The credential {credential} was rejected. Replace it (`asana-worker creds add {credential} --replace`, `creds authorize {credential} --replace`, or the token file of [credentials.{credential}]); the daemon picks it up without a restart. Then retry this run."
        ),
        RunState::Dead => format!(
            "All {} attempts failed. Fix the cause named in the error, then retry the run here (or `asana-worker jobs run {}`).",
            run.max_attempts, run.job_name
        ),
        RunState::Failed => "Retrying cannot help until the cause in the error is fixed (a setting, a permission, a missing object); then retry the run here.".to_string(),
        RunState::Retrying => format!(
            "Attempt {} of {} failed; the next attempt starts at {}.",
            run.attempt,
            run.max_attempts,
            rfc3339(run.run_after)
        ),
        RunState::Skipped => "Not run: the note says which policy (misfire, overlap, a pause) skipped this fire.".to_string(),
        RunState::Cancelled => "Cancelled before it finished.".to_string(),
        RunState::Queued | RunState::Running | RunState::Completed => return None,
    })
}

/// A run as the page and `/api/runs` show it: the stored run plus its duration, state class
/// and progress in words.
pub fn run_json(run: &Run, now: DateTime<Utc>, credential: Option<&str>) -> Value {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    let duration = run_duration(run, now);
    value["duration_secs"] = json!(duration.map(|d| d.as_secs_f64()));
    value["duration"] = json!(duration.map(words::duration));
    value["class"] = json!(state_class(run.state));
    value["progress_text"] = json!(words::progress(&run.progress));
    value["hint"] = json!(hint(run, credential));
    value["created_age"] = json!(words::age(run.created_at, now));
    value["finished_age"] = json!(run.finished_at.map(|t| words::age(t, now)));
    value
}

/// The sparkline of a job's recent runs (oldest first): one bar each, its height the run's
/// duration on a log scale, its class its state.
fn sparkline(runs: &[&Run], now: DateTime<Utc>) -> Value {
    const HEIGHT: f64 = 24.0;
    const BAR: usize = 6;
    const GAP: usize = 2;
    let durations: Vec<f64> = runs
        .iter()
        .map(|run| run_duration(run, now).map_or(0.0, |d| d.as_secs_f64()))
        .collect();
    let longest = durations.iter().copied().fold(0.0, f64::max);
    let bars: Vec<Value> = runs
        .iter()
        .zip(&durations)
        .enumerate()
        .map(|(i, (run, secs))| {
            let scale = if longest > 0.0 {
                (1.0 + secs).ln() / (1.0 + longest).ln()
            } else {
                0.0
            };
            let height = (3.0 + scale * (HEIGHT - 3.0)).round();
            json!({
                "x": i * (BAR + GAP),
                "y": HEIGHT - height,
                "w": BAR,
                "h": height,
                "class": state_class(run.state),
                "title": format!(
                    "{} · {} · {}",
                    run.state,
                    run_duration(run, now).map(words::duration).unwrap_or_else(|| "-".into()),
                    rfc3339(run.created_at)
                ),
            })
        })
        .collect();
    json!({
        "width": runs.len().max(1) * (BAR + GAP),
        "height": HEIGHT,
        "bars": bars,
    })
}

impl Inner {
    /// Every job of the set in force, with its schedule, pause, last outcome, recent runs and
    /// current run.
    pub(super) async fn jobs(&self, now: DateTime<Utc>) -> Result<Vec<Value>, StoreError> {
        let jobs = self.jobs.borrow().clone();
        let schedules = self.store.list_schedules().await?;
        let controls: HashMap<String, _> = self
            .store
            .job_controls()
            .await?
            .into_iter()
            .map(|c| (c.job_name.clone(), c))
            .collect();
        // One indexed query per job (runs_job): the newest runs of each, whatever the size of
        // the history.
        let recent = futures::future::try_join_all(jobs.iter().map(|job| async move {
            let filter = RunFilter {
                job_name: Some(job.name.clone()),
                limit: SPARK_RUNS,
                ..RunFilter::default()
            };
            let recent = self.store.list_runs(&filter).await?;
            let success = match recent.iter().find(|r| r.state == RunState::Completed) {
                Some(run) => run.finished_at,
                None => {
                    let filter = RunFilter {
                        job_name: Some(job.name.clone()),
                        states: vec![RunState::Completed],
                        limit: 1,
                        ..RunFilter::default()
                    };
                    self.store
                        .list_runs(&filter)
                        .await?
                        .first()
                        .and_then(|r| r.finished_at)
                }
            };
            Ok::<_, StoreError>((recent, success))
        }))
        .await?;
        let mut rows = Vec::with_capacity(jobs.len());
        for (job, (recent, last_success)) in jobs.iter().zip(recent) {
            let next = crate::scheduler::next_fire(job, &schedules, now).filter(|_| job.enabled);
            let last = recent.iter().find(|run| run.state.is_terminal());
            let current = recent
                .iter()
                .find(|run| run.state == RunState::Running)
                .or_else(|| recent.iter().find(|run| !run.state.is_terminal()));
            let oldest_first: Vec<&Run> = recent.iter().rev().collect();
            let paused = controls.get(&job.name);
            rows.push(json!({
                "name": job.name,
                "kind": job.kind.name(),
                "credential": job.credential,
                "enabled": job.enabled,
                "source": job.source.display().to_string(),
                "schedule": words::schedule(&job.schedule),
                "schedule_definition": job.schedule_definition(),
                "timezone": job.timezone.name(),
                "next_fire_at": next.map(rfc3339),
                "next_fire_local": next.map(|t| t.with_timezone(&job.timezone).format("%Y-%m-%d %H:%M %Z").to_string()),
                "next_fire_in": next.map(|t| words::age(t, now)),
                "paused": paused.map(|c| json!({
                    "since": rfc3339(c.paused_at),
                    "by": c.paused_by,
                    "age": words::age(c.paused_at, now),
                })),
                "last": last.map(|run| json!({
                    "run_id": run.id,
                    "state": run.state,
                    "class": state_class(run.state),
                    "finished_at": run.finished_at.map(rfc3339),
                    "age": run.finished_at.map(|t| words::age(t, now)),
                    "error": run.last_error,
                })),
                "last_success_at": last_success.map(rfc3339),
                "recent": oldest_first.iter().map(|run| json!({
                    "id": run.id,
                    "state": run.state,
                    "duration_secs": run_duration(run, now).map(|d| d.as_secs_f64()),
                    "created_at": rfc3339(run.created_at),
                })).collect::<Vec<_>>(),
                "spark": sparkline(&oldest_first, now),
                "current": current.map(|run| json!({
                    "run_id": run.id,
                    "state": run.state,
                    "class": state_class(run.state),
                    "attempt": run.attempt,
                    "max_attempts": run.max_attempts,
                    "started_at": run.started_at.map(rfc3339),
                    "age": run.started_at.map(|t| words::age(t, now)),
                    "progress": run.progress,
                    "progress_text": words::progress(&run.progress),
                })),
            }));
        }
        Ok(rows)
    }

    /// Every credential (configured and stored): state, owner, rate against its limit over
    /// the last hour, 429s, export slots and time spent waiting for the budget. Never a token.
    pub(super) async fn tokens(&self) -> Result<Vec<Value>, StoreError> {
        let jobs = self.jobs.borrow().clone();
        let stored: BTreeMap<String, _> = self
            .store
            .list_credentials()
            .await?
            .into_iter()
            .map(|row| (row.name.clone(), row))
            .collect();
        let held = self.leases.held();
        let sharing = self.leases.is_sharing();
        let mut names: Vec<String> = self.credentials.keys().cloned().collect();
        names.extend(stored.keys().cloned());
        names.sort();
        names.dedup();
        let mut rows = Vec::with_capacity(names.len());
        for name in names {
            let configured = self.credentials.get(&name);
            let row = stored.get(&name);
            let users: Vec<&Job> = jobs.iter().filter(|job| job.credential == name).collect();
            let (kind, tier) = match (configured, row) {
                (Some(settings), _) => (
                    serde_json::to_value(settings.kind).unwrap_or_default(),
                    serde_json::to_value(settings.tier).unwrap_or_default(),
                ),
                (None, Some(row)) => (json!(row.kind), json!(row.tier)),
                (None, None) => (Value::Null, Value::Null),
            };
            let tier_limit = match tier.as_str() {
                Some("free") => crate::budget::Tier::Free.requests_per_minute(),
                _ => crate::budget::Tier::Paid.requests_per_minute(),
            };
            let limit = configured
                .and_then(|s| s.requests_per_minute)
                .unwrap_or(tier_limit);
            // The owner: a stored credential's row, else what a credential check recorded.
            let mut owner = row.and_then(|row| {
                row.owner_gid.as_ref().map(
                    |gid| json!({"gid": gid, "name": row.owner_name, "email": row.owner_email}),
                )
            });
            if owner.is_none() {
                for job in users
                    .iter()
                    .filter(|job| job.kind.name() == "credential_check")
                {
                    if let Some(found) = self
                        .store
                        .get_checkpoint(&job.name, crate::jobs::credential_check::OWNER_KEY)
                        .await?
                    {
                        owner = Some(json!({
                            "gid": found["gid"],
                            "name": found["name"],
                            "email": found["email"],
                            "validated_at": found["validated_at"],
                        }));
                        break;
                    }
                }
            }
            let state = self
                .clients
                .monitor()
                .state(&name)
                .or_else(|| row.map(|row| row.state.clone()))
                .unwrap_or_else(|| "unused".to_string());
            let budget = self.clients.budget_in_use(&name);
            let stats = budget.as_ref().map(|b| b.stats());
            // Requests per quota window (a minute against Asana) over the last hour, oldest
            // first, as the budget counted them.
            let history = budget.as_ref().map(|b| b.history()).unwrap_or_default();
            let effective = budget.as_ref().map(|b| b.effective_limit());
            let limit = budget.as_ref().map_or(limit, |b| b.config().limit());
            rows.push(json!({
                "name": name,
                "kind": kind,
                "tier": tier,
                "stored": row.is_some(),
                "state": state,
                "runs_here": !sharing || held.contains(&name),
                "owner": owner,
                "jobs": users.iter().map(|job| job.name.as_str()).collect::<Vec<_>>(),
                "limit_per_minute": limit,
                "effective_limit_per_minute": effective,
                "requests_this_window": history.last().map(|(_, n)| n),
                "requests_total": stats.as_ref().map(|s| s.spent),
                "rate_limited_429s": stats.as_ref().map(|s| s.cooldowns),
                "paused_for_secs": budget.as_ref().and_then(|b| b.cooldown_remaining()).map(|d| d.as_secs_f64()),
                "budget_wait_secs": stats.as_ref().map(|s| s.total_wait.as_secs_f64()),
                "budget_wait": stats.as_ref().map(|s| words::duration(s.total_wait)),
                "waiting_now": budget.as_ref().map(|b| b.waiting()),
                "export_slots": budget.as_ref().map(|b| {
                    let of = b.config().export_slots as usize;
                    json!({"in_use": of.saturating_sub(b.export_slots_free()), "of": of})
                }),
                "history": history.iter().map(|(ago, n)| json!({"started_secs_ago": ago.as_secs(), "requests": n})).collect::<Vec<_>>(),
                "chart": chart(&history, limit),
                "last_used_at": row.and_then(|r| r.last_used_at).map(rfc3339),
                "last_error": row.and_then(|r| r.last_error.clone()),
            }));
        }
        Ok(rows)
    }

    /// Per audit-log job: the newest event delivered, the lag, the retention headroom and the
    /// manifest chain's last verification; per export job: the current export and the last
    /// file with its sha256.
    pub(super) async fn compliance(&self, now: DateTime<Utc>) -> Result<Value, StoreError> {
        let jobs = self.jobs.borrow().clone();
        let verifications = self.verifications_snapshot();
        let mut audit_logs = Vec::new();
        let mut exports = Vec::new();
        for job in jobs.iter() {
            match &job.kind {
                Kind::AuditLog(settings) => {
                    let cursor = self
                        .store
                        .get_checkpoint(&job.name, crate::jobs::audit_log::CURSOR_KEY)
                        .await?
                        .and_then(|v| {
                            serde_json::from_value::<crate::jobs::audit_log::Cursor>(v).ok()
                        });
                    // The cursor keeps the newest event of its open slices only (a finished
                    // backfill slice is dropped); the runs' figures name the newest each
                    // delivered.
                    let recent = self
                        .store
                        .list_runs(&RunFilter {
                            job_name: Some(job.name.clone()),
                            states: vec![RunState::Completed],
                            limit: 50,
                            ..RunFilter::default()
                        })
                        .await?;
                    let newest = cursor
                        .as_ref()
                        .into_iter()
                        .flat_map(|c| c.backfill.iter().chain(std::iter::once(&c.tail)))
                        .filter_map(|s| s.newest)
                        .chain(recent.iter().filter_map(|run| {
                            run.progress["newest"]
                                .as_str()
                                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                                .map(|t| t.with_timezone(&Utc))
                        }))
                        .max();
                    let headroom = cursor
                        .as_ref()
                        .map(|c| c.oldest_needed() - (now - crate::jobs::audit_log::RETENTION));
                    let verification = verifications.get(&job.name);
                    audit_logs.push(json!({
                        "job": job.name,
                        "sink": settings.sink.type_name(),
                        "newest_event": newest.map(rfc3339),
                        "newest_event_age": newest.map(|t| words::age(t, now)),
                        "lag_secs": newest.map(|t| (now - t).num_seconds()),
                        "last_delivery_at": cursor.as_ref().and_then(|c| c.last_delivery_at).map(rfc3339),
                        "backfill_slices_left": cursor.as_ref().map(|c| c.backfill.len()),
                        "batches": cursor.as_ref().map(|c| c.sequence),
                        "retention_headroom_secs": headroom.map(|h| h.num_seconds()),
                        "retention_headroom": headroom.map(|h| words::duration(Duration::from_secs(h.num_seconds().max(0) as u64))),
                        "lost_windows": cursor.as_ref().map(|c| c.lost.len()),
                        "verification": verification.map(|v| v.to_json(now)),
                        "verification_note": match (&settings.sink, verification) {
                            (crate::sinks::RecordSinkSettings::File(_), None) => "not verified yet: nothing written".to_string(),
                            (crate::sinks::RecordSinkSettings::File(_), Some(_)) => String::new(),
                            _ => format!("the {} sink is verified with `asana-worker verify --job {}`", settings.sink.type_name(), job.name),
                        },
                    }));
                }
                kind if kind.name().ends_with("_export") => {
                    let state = self
                        .store
                        .get_checkpoint(&job.name, crate::jobs::export::CHECKPOINT_KEY)
                        .await?
                        .and_then(|v| {
                            serde_json::from_value::<crate::jobs::export::ExportState>(v).ok()
                        });
                    let last_done = self
                        .store
                        .list_runs(&RunFilter {
                            job_name: Some(job.name.clone()),
                            states: vec![RunState::Completed],
                            limit: 1,
                            ..RunFilter::default()
                        })
                        .await?;
                    let last_file = last_done
                        .first()
                        .filter(|run| run.progress.get("file").is_some_and(|f| !f.is_null()));
                    exports.push(json!({
                        "job": job.name,
                        "kind": kind.name(),
                        "current": state.as_ref().map(|s| json!({
                            "export_gid": s.export_gid,
                            "phase": s.phase,
                            "created_at": rfc3339(s.created_at),
                            "bytes": s.partial_offset,
                            "total_bytes": s.total_bytes,
                            "progress": match (s.total_bytes, s.partial_offset) {
                                (Some(total), done) if total > 0 => format!("{} of {}", words::bytes(done), words::bytes(total)),
                                (_, done) if done > 0 => words::bytes(done),
                                _ => String::new(),
                            },
                            "error": s.error,
                        })),
                        "last_file": last_file.map(|run| json!({
                            "run_id": run.id,
                            "file": run.progress["file"],
                            "sha256": run.progress["sha256"],
                            "size": run.progress["size"],
                            "size_text": run.progress["size"].as_u64().map(words::bytes),
                            "downloaded_at": run.progress["downloaded_at"],
                        })),
                    }));
                }
                _ => {}
            }
        }
        Ok(json!({"audit_logs": audit_logs, "exports": exports}))
    }
}

/// The chart of a token's requests per window over the last hour (`Budget::history`, oldest
/// first) as SVG coordinates: a bar per window, and a line at the limit. The scale reaches the
/// limit when a window comes within a quarter of it; below that it fits the busiest window, so
/// a token that spends little still shows its course, and the limit is named above the chart.
fn chart(history: &[(Duration, u32)], limit: u32) -> Value {
    const WIDTH: f64 = 480.0;
    const HEIGHT: f64 = 90.0;
    let peak = history
        .iter()
        .map(|(_, n)| f64::from(*n))
        .fold(0.0, f64::max);
    let limit = f64::from(limit);
    let limit_shown = peak * 4.0 >= limit;
    let top = if limit_shown {
        limit.max(peak) * 1.05
    } else {
        (peak * 1.25).max(10.0)
    };
    let y = |value: f64| HEIGHT - (value / top * HEIGHT);
    let slot = WIDTH / history.len().max(1) as f64;
    let bars: Vec<Value> = history
        .iter()
        .enumerate()
        .filter(|(_, (_, n))| *n > 0)
        .map(|(i, (ago, n))| {
            json!({
                "x": format!("{:.1}", i as f64 * slot + 0.5),
                "y": format!("{:.1}", y(f64::from(*n))),
                "w": format!("{:.1}", (slot - 1.0).max(1.0)),
                "h": format!("{:.1}", HEIGHT - y(f64::from(*n))),
                "title": format!("{n} requests in the window that started {} ago", words::duration(*ago)),
            })
        })
        .collect();
    let span = history
        .first()
        .map_or(Duration::from_secs(3600), |(ago, _)| *ago);
    json!({
        "width": WIDTH,
        "height": HEIGHT,
        "bars": bars,
        "windows": history.len(),
        "peak": peak,
        "top": top.round(),
        "limit_shown": limit_shown,
        "limit_y": y(limit),
        "span": words::duration(Duration::from_secs(span.as_secs())),
    })
}

impl Verification {
    fn to_json(&self, now: DateTime<Utc>) -> Value {
        json!({
            "at": rfc3339(self.at),
            "age": words::age(self.at, now),
            "intact": self.intact,
            "segments": self.segments,
            "records": self.records,
            "problems": self.problems,
        })
    }
}
