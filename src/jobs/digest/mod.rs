//! `digest`: a scheduled summary of a scope's tasks (overdue, due soon, completed since the
//! previous digest, …), rendered with minijinja and delivered to files, webhooks, email and
//! Asana itself, exactly once per period (ARCHITECTURE.md, "The digest job").
//!
//! A run is one period: its key comes from the run's fire time in the job's time zone (a manual
//! run is a period of its own). The first attempt reads the data (the API, or a sync job's
//! tables), classifies it ([`model::build`]) and records the whole digest in the job's
//! checkpoint before sending anything; later attempts of the same period deliver that recorded
//! digest, never a re-read one. Each delivery unit's state is recorded too: units that cannot
//! be sent twice safely (a webhook, an email) are recorded as `sending` before they are sent,
//! so a crash in between leaves them `unconfirmed` instead of sending a second copy; Asana
//! posts are looked up by their marker line before being sent again; files are content-named.

pub mod deliver;
pub mod model;
pub mod render;
pub mod settings;
pub mod source;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::deliver::{DeliveryContext, DeliveryError, Unit};
use self::model::{DigestModel, Frame};
use self::settings::{Channel, DigestSettings, Source};
use self::source::SourceError;
use super::{JobKind, KindContext};
use crate::config::jobs::SettingsCheck;
use crate::store::Trigger;
use crate::worker::JobOutcome;

pub use settings::DigestSettings as Settings;

/// The checkpoint key of the digest's state.
pub const STATE_KEY: &str = "digest";

/// The checkpoint key of the pending period's digest ([`RecordedModel`]), as every attempt of
/// the period delivers it.
pub const MODEL_KEY: &str = "digest_model";

/// A period's digest as recorded before anything is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedModel {
    /// The period it belongs to.
    pub period: String,
    /// The digest.
    pub model: DigestModel,
}

/// The `digest` kind.
#[derive(Debug)]
pub struct Digest;

/// Where one unit of a pending digest stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    /// Recorded just before an at-most-once send; found after a crash, it becomes `unconfirmed`.
    Sending,
    /// Delivered.
    Sent,
    /// An attempt stopped between recording and confirming: it may or may not have arrived,
    /// and is not sent again.
    Unconfirmed,
}

/// One unit's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitRecord {
    /// Where it stands.
    pub state: UnitState,
    /// When it got there.
    pub at: DateTime<Utc>,
    /// Where it went (a path, a URL, an address, a status update's gid).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A period being delivered. Its digest is recorded once, under [`MODEL_KEY`]; the units'
/// states change here, so each change rewrites a few lines, not the digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The period key.
    pub period: String,
    /// The units' states, by unit id.
    #[serde(default)]
    pub units: BTreeMap<String, UnitRecord>,
}

/// The last period delivered in full (or skipped as empty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveredPeriod {
    /// The period key.
    pub period: String,
    /// The period's instant (its fire time, or a manual run's creation).
    pub period_at: DateTime<Utc>,
    /// The instant the digest described: the next one's `completed` and `created` start there.
    pub as_of: DateTime<Utc>,
    /// Whether it was skipped as empty.
    #[serde(default)]
    pub skipped_empty: bool,
}

/// The job's digest state, in its checkpoint under [`STATE_KEY`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DigestState {
    /// The last delivered period.
    #[serde(default)]
    pub delivered: Option<DeliveredPeriod>,
    /// The period being delivered.
    #[serde(default)]
    pub pending: Option<Pending>,
}

/// A run's period: its key and instant. Scheduled and catch-up runs are named by their fire
/// time in the job's zone (`2026-12-07T0900+0100`, offset included so the two 01:30s of a DST
/// fall-back stay apart); a manual run is a period of its own, named by its creation and id.
pub fn period_of(run: &crate::store::Run, tz: chrono_tz::Tz) -> (String, DateTime<Utc>) {
    let fire = match run.trigger {
        Trigger::Schedule | Trigger::Misfire => run.fire_time,
        Trigger::Manual => None,
    };
    period_key(fire, run.created_at, &run.id, tz)
}

/// The period of a run that fired at `fire` (scheduled or caught up), or, without one, of a
/// manual run created at `created` with `id`.
fn period_key(
    fire: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    id: &uuid::Uuid,
    tz: chrono_tz::Tz,
) -> (String, DateTime<Utc>) {
    match fire {
        Some(fire) => (
            fire.with_timezone(&tz)
                .format("%Y-%m-%dT%H%M%z")
                .to_string(),
            fire,
        ),
        None => (
            format!(
                "manual-{}-{}",
                created.with_timezone(&tz).format("%Y-%m-%dT%H%M%S%z"),
                &id.simple().to_string()[..8]
            ),
            created,
        ),
    }
}

impl JobKind for Digest {
    const NAME: &'static str = "digest";
    const SUMMARY: &'static str = "summarises a scope's tasks (overdue, due soon, completed, …) and delivers it to files, webhooks, email or Asana, once per period";
    type Settings = DigestSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        settings.validate(check);
        for (index, channel) in settings.deliver.iter().enumerate() {
            let want_json = matches!(channel, Channel::Webhook { .. });
            for (key, path) in channel.templates() {
                let path = check.resolve(path);
                if let Err(error) = render::check_template(&path, want_json) {
                    check.scoped("deliver", |check| {
                        check.scoped(&index.to_string(), |check| {
                            check.problem(key, error.to_string(), error.hint())
                        })
                    });
                }
            }
        }
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        match run_digest(settings, cx).await {
            Ok(progress) => JobOutcome::Completed { progress },
            Err(outcome) => outcome,
        }
    }
}

async fn load_state(cx: &KindContext<'_>) -> Result<DigestState, JobOutcome> {
    match cx.run.checkpoints.get(STATE_KEY).await {
        Ok(None) => Ok(DigestState::default()),
        Ok(Some(value)) => serde_json::from_value(value).map_err(|error| JobOutcome::Failed {
            error: format!(
                "the digest's recorded state (checkpoint `digest` of job {name:?}) cannot be read ({error}); it was written by another version or edited. Restore the database from a backup, or rename the job to start over with a fresh state (the first digest then reaches back first_lookback)",
                name = cx.job.name
            ),
        }),
        Err(error) => Err(super::outcome_for_checkpoint_error(
            error,
            "the digest's state",
        )),
    }
}

/// The recorded digest of `period`, if the checkpoint holds it (an unreadable one counts as
/// absent: the period is prepared again, nothing of it having been sent without it).
async fn load_model(cx: &KindContext<'_>, period: &str) -> Result<Option<DigestModel>, JobOutcome> {
    match cx.run.checkpoints.get(MODEL_KEY).await {
        Ok(value) => Ok(value
            .and_then(|value| serde_json::from_value::<RecordedModel>(value).ok())
            .filter(|recorded| recorded.period == period)
            .map(|recorded| recorded.model)),
        Err(error) => Err(super::outcome_for_checkpoint_error(
            error,
            "the digest's state",
        )),
    }
}

/// Records `record` as unit `id`'s state (None: forgets it) and stores the state.
async fn record_unit(
    cx: &KindContext<'_>,
    state: &mut DigestState,
    id: &str,
    record: Option<UnitRecord>,
) -> Result<(), JobOutcome> {
    if let Some(pending) = &mut state.pending {
        match record {
            Some(record) => pending.units.insert(id.to_string(), record),
            None => pending.units.remove(id),
        };
    }
    save_state(cx, state).await
}

async fn save_state(cx: &KindContext<'_>, state: &DigestState) -> Result<(), JobOutcome> {
    cx.run
        .checkpoints
        .put(
            STATE_KEY,
            serde_json::to_value(state).unwrap_or(Value::Null),
        )
        .await
        .map_err(|e| super::outcome_for_checkpoint_error(e, "the digest's state"))
}

fn source_outcome(cx: &KindContext<'_>, error: SourceError) -> JobOutcome {
    match error {
        SourceError::Api(error) => super::outcome_for_error(cx.job, &error),
        SourceError::Sink(error) => super::outcome_for_sink_error(error),
        SourceError::Mirror(message) => JobOutcome::Failed { error: message },
        SourceError::MirrorBehind(message) => JobOutcome::Retry {
            delay: Some(std::time::Duration::from_secs(300)),
            error: message,
        },
    }
}

/// Reads the data and builds the period's digest.
async fn prepare(
    settings: &DigestSettings,
    cx: &KindContext<'_>,
    period: &str,
    since: DateTime<Utc>,
) -> Result<(DigestModel, u64, &'static str), JobOutcome> {
    let as_of = cx.run.clock.now();
    let due_days = settings.due_within.as_secs().div_ceil(86_400).max(1);
    let (collected, requests, source_name, read_with) = match &settings.source {
        Source::Api(_) => {
            let today = as_of.with_timezone(&cx.job.timezone).date_naive();
            let window = source::ApiWindow {
                since,
                as_of,
                due_before: today
                    .checked_add_days(chrono::Days::new(due_days))
                    .unwrap_or(chrono::NaiveDate::MAX),
            };
            let (collected, requests, read_with) = source::from_api(cx.client, settings, window)
                .await
                .map_err(|e| source_outcome(cx, e))?;
            (collected, requests, "api", read_with.as_str())
        }
        Source::Mirror { sync_job, max_age } => {
            let Some(sync) = cx.jobs.iter().find(|job| &job.name == sync_job) else {
                return Err(JobOutcome::Failed {
                    error: format!(
                        "the digest reads the tables of the sync job {sync_job:?}, which is not in the job set; add it, or set source = \"api\""
                    ),
                });
            };
            let super::Kind::Sync(sync_settings) = &sync.kind else {
                return Err(JobOutcome::Failed {
                    error: format!("the job {sync_job:?} is not a sync job"),
                });
            };
            let sink = crate::sinks::table::build(&sync_settings.sink, cx.sinks)
                .await
                .map_err(super::outcome_for_sink_error)?;
            let collected = source::from_mirror(sink.as_ref(), sync_job, settings, as_of, *max_age)
                .await
                .map_err(|e| source_outcome(cx, e))?;
            (collected, 0, "sync mirror", "tables")
        }
    };
    let frame = Frame {
        title: settings
            .title
            .clone()
            .unwrap_or_else(|| cx.job.name.clone()),
        job: cx.job.name.clone(),
        period: period.to_string(),
        timezone: cx.job.timezone,
        as_of,
        since,
        source: source_name.to_string(),
        sections: settings.sections.clone(),
        group_by: settings.group_by,
        due_days,
        stale_secs: settings.stale_after.as_secs() as i64,
        max_tasks: settings.max_tasks,
    };
    Ok((model::build(&collected, &frame), requests, read_with))
}

/// How a failed unit weighs on the run: the worst outcome wins.
fn delivery_outcome(cx: &KindContext<'_>, unit: &Unit, error: DeliveryError) -> JobOutcome {
    let what = format!("delivery {} to {}", unit.id, unit.target);
    match error {
        DeliveryError::Transient(message) => JobOutcome::Retry {
            delay: None,
            error: format!("{what}: {message}"),
        },
        DeliveryError::Final(message) => JobOutcome::Failed {
            error: format!("{what}: {message}"),
        },
        DeliveryError::Render(error) => JobOutcome::Failed {
            error: format!("{what}: {error}; {}", error.hint()),
        },
        DeliveryError::Asana(error) => match super::outcome_for_error(cx.job, &error) {
            JobOutcome::Failed { error } => JobOutcome::Failed {
                error: format!("{what}: {error}"),
            },
            JobOutcome::Retry { delay, error } => JobOutcome::Retry {
                delay,
                error: format!("{what}: {error}"),
            },
            other => other,
        },
    }
}

fn severity(outcome: &JobOutcome) -> u8 {
    match outcome {
        JobOutcome::Interrupted => 4,
        JobOutcome::NeedsReauth { .. } => 3,
        JobOutcome::Failed { .. } => 2,
        JobOutcome::Retry { .. } => 1,
        _ => 0,
    }
}

fn count_delivery(job: &str, channel: &str, outcome: &'static str) {
    metrics::counter!(
        "asana_worker_digest_deliveries_total",
        "job" => job.to_string(),
        "channel" => channel.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}

async fn run_digest(settings: &DigestSettings, cx: &KindContext<'_>) -> Result<Value, JobOutcome> {
    let job = &cx.job.name;
    let (period, period_at) = period_of(&cx.run.run, cx.job.timezone);
    let mut state = load_state(cx).await?;
    if let Some(delivered) = &state.delivered {
        if delivered.period == period {
            return Ok(json!({"period": period, "already_delivered": true}));
        }
        if delivered.period_at > period_at && !period.starts_with("manual-") {
            // A catch-up run of a period older than one already delivered: that digest covered it.
            return Ok(json!({
                "period": period,
                "superseded_by": delivered.period,
            }));
        }
    }
    let mut requests = 0u64;
    let mut read_with = "recorded";
    let recorded = match &state.pending {
        Some(pending) if pending.period == period => load_model(cx, &period).await?,
        _ => None,
    };
    let model = match recorded {
        Some(model) => model,
        None => {
            if let Some(old) = state.pending.take().filter(|old| old.period != period) {
                let sent: Vec<&String> = old
                    .units
                    .iter()
                    .filter(|(_, r)| r.state != UnitState::Sending)
                    .map(|(id, _)| id)
                    .collect();
                tracing::warn!(
                    job = %job, period = %old.period, delivered_units = ?sent,
                    "Abandoning an earlier period's digest that was not fully delivered; the new digest reaches back to the last delivered one"
                );
            }
            let since = match &state.delivered {
                Some(delivered) => delivered.as_of,
                None => {
                    cx.run.clock.now()
                        - chrono::Duration::from_std(settings.first_lookback)
                            .unwrap_or_else(|_| chrono::Duration::days(7))
                }
            };
            let (model, used, how) = prepare(settings, cx, &period, since).await?;
            requests = used;
            read_with = how;
            // Recorded before anything is sent: every later attempt delivers this digest.
            let recorded = RecordedModel {
                period: period.clone(),
                model,
            };
            cx.run
                .checkpoints
                .put(
                    MODEL_KEY,
                    serde_json::to_value(&recorded).unwrap_or(Value::Null),
                )
                .await
                .map_err(|e| super::outcome_for_checkpoint_error(e, "the digest's state"))?;
            state.pending = Some(Pending {
                period: period.clone(),
                units: BTreeMap::new(),
            });
            save_state(cx, &state).await?;
            recorded.model
        }
    };
    if model.empty && !settings.send_empty {
        state.pending = None;
        state.delivered = Some(DeliveredPeriod {
            period: period.clone(),
            period_at,
            as_of: model.as_of_utc,
            skipped_empty: true,
        });
        save_state(cx, &state).await?;
        return Ok(json!({
            "period": period,
            "tasks": 0,
            "skipped_empty": true,
            "requests": requests,
            "read_with": read_with,
        }));
    }
    let delivery = DeliveryContext {
        job,
        job_file: &cx.job.source,
        client: cx.client,
    };
    let mut worst: Option<JobOutcome> = None;
    let mut delivered = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut unreachable_all = Vec::new();
    for (index, channel) in settings.deliver.iter().enumerate() {
        let (units, unreachable) = deliver::units(index, channel, &model);
        unreachable_all.extend(unreachable);
        for unit in units {
            if cx.run.cancel.is_cancelled() {
                return Err(JobOutcome::Interrupted);
            }
            let record = state
                .pending
                .as_ref()
                .and_then(|pending| pending.units.get(&unit.id))
                .map(|record| record.state);
            let at_most_once = deliver::at_most_once(channel);
            let now = cx.run.clock.now();
            match record {
                Some(UnitState::Sent) => {
                    delivered.push(unit.id.clone());
                    continue;
                }
                Some(UnitState::Unconfirmed) => {
                    unconfirmed.push(unit.id.clone());
                    continue;
                }
                Some(UnitState::Sending) if at_most_once => {
                    tracing::warn!(
                        job = %job, period = %period, unit = %unit.id, target = %unit.target,
                        "An earlier attempt stopped while sending this part of the digest; it is not sent again, so it may be missing (see docs/digest.md, \"Exactly once\")"
                    );
                    count_delivery(job, channel.type_name(), "unconfirmed");
                    let detail = "an attempt stopped between recording and confirming the send";
                    let record = UnitRecord {
                        state: UnitState::Unconfirmed,
                        at: now,
                        detail: Some(detail.into()),
                    };
                    record_unit(cx, &mut state, &unit.id, Some(record)).await?;
                    unconfirmed.push(unit.id.clone());
                    continue;
                }
                _ => {}
            }
            let retrying = record.is_some();
            if at_most_once || !retrying {
                let record = UnitRecord {
                    state: UnitState::Sending,
                    at: now,
                    detail: None,
                };
                record_unit(cx, &mut state, &unit.id, Some(record)).await?;
            }
            match deliver::deliver(delivery, channel, &unit, &model, retrying).await {
                Ok(detail) => {
                    count_delivery(job, channel.type_name(), "sent");
                    tracing::info!(job = %job, period = %period, unit = %unit.id, %detail, "Digest delivered");
                    let record = UnitRecord {
                        state: UnitState::Sent,
                        at: cx.run.clock.now(),
                        detail: Some(detail),
                    };
                    record_unit(cx, &mut state, &unit.id, Some(record)).await?;
                    delivered.push(unit.id.clone());
                }
                Err(error) => {
                    let outcome = delivery_outcome(cx, &unit, error);
                    count_delivery(
                        job,
                        channel.type_name(),
                        if matches!(outcome, JobOutcome::Retry { .. }) {
                            "retry"
                        } else {
                            "failed"
                        },
                    );
                    tracing::warn!(job = %job, period = %period, unit = %unit.id, outcome = ?outcome, "Digest delivery failed");
                    // Not sent: the next attempt sends it (the failure proved nothing arrived,
                    // or the channel finds what did).
                    if at_most_once {
                        record_unit(cx, &mut state, &unit.id, None).await?;
                    }
                    if worst
                        .as_ref()
                        .is_none_or(|w| severity(&outcome) > severity(w))
                    {
                        worst = Some(outcome);
                    }
                }
            }
        }
    }
    if let Some(outcome) = worst {
        return Err(outcome);
    }
    state.pending = None;
    state.delivered = Some(DeliveredPeriod {
        period: period.clone(),
        period_at,
        as_of: model.as_of_utc,
        skipped_empty: false,
    });
    save_state(cx, &state).await?;
    let mut progress = json!({
        "period": period,
        "source": model.source,
        "tasks": model.total,
        "groups": model.groups.len(),
        "requests": requests,
        "read_with": read_with,
        "delivered": delivered,
    });
    if !unconfirmed.is_empty() {
        progress["unconfirmed"] = json!(unconfirmed);
    }
    if !unreachable_all.is_empty() {
        progress["no_email"] = json!(unreachable_all);
        tracing::warn!(job = %job, period = %period, groups = ?unreachable_all, "Digest parts not emailed: no email address is visible for them in Asana");
    }
    Ok(progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_are_named_by_their_fire_time_in_the_jobs_zone() {
        let tz = chrono_tz::Europe::Berlin;
        let id = uuid::Uuid::nil();
        let created = utc("2026-12-07T09:30:00Z");
        let (key, at) = period_key(Some(utc("2026-12-07T07:00:00Z")), created, &id, tz);
        assert_eq!(key, "2026-12-07T0800+0100");
        assert_eq!(at, utc("2026-12-07T07:00:00Z"));
        // A catch-up run of the same fire is the same period, whenever it runs.
        let later = utc("2026-12-09T00:00:00Z");
        assert_eq!(
            period_key(Some(utc("2026-12-07T07:00:00Z")), later, &id, tz).0,
            key
        );
        // The two 02:30s of the autumn DST change are two periods.
        let first = period_key(Some(utc("2026-10-25T00:30:00Z")), created, &id, tz).0;
        let second = period_key(Some(utc("2026-10-25T01:30:00Z")), created, &id, tz).0;
        assert_eq!(first, "2026-10-25T0230+0200");
        assert_eq!(second, "2026-10-25T0230+0100");
        // Manual runs are periods of their own, even within one second.
        let a = period_key(None, created, &uuid::Uuid::from_u128(1 << 100), tz).0;
        let b = period_key(None, created, &uuid::Uuid::from_u128(2 << 100), tz).0;
        assert!(a.starts_with("manual-2026-12-07T103000+0100-"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_recorded_state_round_trips_and_old_fields_default() {
        let state: DigestState = serde_json::from_value(json!({})).unwrap();
        assert_eq!(state, DigestState::default());
        let pending = Pending {
            period: "p".into(),
            units: BTreeMap::from([(
                "0-email".to_string(),
                UnitRecord {
                    state: UnitState::Sending,
                    at: utc("2026-12-07T07:00:00Z"),
                    detail: None,
                },
            )]),
        };
        let state = DigestState {
            delivered: None,
            pending: Some(pending),
        };
        let again: DigestState =
            serde_json::from_value(serde_json::to_value(&state).unwrap()).unwrap();
        assert_eq!(again, state);
        let recorded = RecordedModel {
            period: "p".into(),
            model: render::sample_model(settings::GroupBy::Project),
        };
        let again: RecordedModel =
            serde_json::from_value(serde_json::to_value(&recorded).unwrap()).unwrap();
        assert_eq!(again, recorded);
    }
}
