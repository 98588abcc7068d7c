//! `audit_log`: pulls a workspace's audit-log events into a sink, completely and exactly once.
//!
//! The log is read as *slices* of time. On the first run the initial range (`start`, default 7
//! days back) is split into `backfill_slices` closed slices `[start, end)` fetched concurrently —
//! the token's budget, not a sequential page walk, sets the pace — plus the open-ended *tail*
//! that starts where the backfill ends and is followed forever after. Each slice keeps its own
//! position:
//!
//! - the latest `next_page.offset` (Asana's cursor),
//! - the `start_at` its walk was started with (offsets are only valid with the same filters),
//! - the newest `created_at` delivered and the gids seen at that instant — the fallback: an
//!   expired or rejected offset restarts the slice from `start_at = newest`, dropping the gids
//!   already delivered, never from scratch and never skipping.
//!
//! Every page with new events is one [`Batch`] committed to the sink *with the whole cursor*;
//! the checkpoint in the store is written after the sink holds the batch. A restarted run
//! resumes from whichever of the two has the higher batch sequence ([`RecordSink::recover`]),
//! so a crash at any instant neither loses nor duplicates an event (ARCHITECTURE.md,
//! "Invariants").
//!
//! Late events (Asana may list an event after newer ones) are caught by re-reading, on every
//! pass, the `overlap` window that ends at the tail's position, and delivering the gids not
//! delivered before. The window is the whole window, whatever read its events first: for the
//! first `overlap` of a job's life it reaches back before the tail's start into the backfill,
//! whose finished slices are never read again. So every gid delivered inside the window, by a
//! backfill slice, the tail or an earlier re-read, is remembered in the cursor ([`Cursor::recent`])
//! and committed with every batch: after a crash the set is whatever the winning cursor holds,
//! exactly the events delivered before it. The one limit left is the configured one: an event
//! listed later than the whole window (created more than `overlap` before the tail's position
//! when it appears) is not re-read. Slices of a backfill are committed in the order each slice's
//! pages arrive: within a slice the order is Asana's, across slices it is not (each record
//! carries its `created_at`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use super::{Job as JobSpec, JobKind, KindContext};
use crate::asana::{ApiRequest, AsanaClient, AsanaError, MAX_PAGE_SIZE, Query, segment};
use crate::config::jobs::SettingsCheck;
use crate::config::values::{DurationText, Gid, format_duration};
use crate::sinks::{Batch, RecordMark, RecordSink as Sink, RecordSinkSettings, SinkContext};
use crate::worker::{JobOutcome, RunContext};

/// The `audit_log` kind.
#[derive(Debug)]
pub struct AuditLog;

/// Who performed an event, as Asana's `actor_type` filter takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorType {
    /// A person.
    User,
    /// Asana itself (automations, rules).
    Asana,
    /// Asana's support staff.
    AsanaSupport,
    /// Someone not signed in (public forms, links).
    Anonymous,
    /// An administrator outside the organization.
    ExternalAdministrator,
}

impl ActorType {
    /// The value of Asana's `actor_type` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::Asana => "asana",
            ActorType::AsanaSupport => "asana_support",
            ActorType::Anonymous => "anonymous",
            ActorType::ExternalAdministrator => "external_administrator",
        }
    }
}

fn default_audit_start() -> Duration {
    Duration::from_secs(7 * 86400)
}
fn default_audit_overlap() -> Duration {
    Duration::from_secs(300)
}
fn default_backfill_slices() -> u32 {
    8
}
fn default_audit_page_size() -> u32 {
    100
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_retention_warning() -> Duration {
    Duration::from_secs(7 * 86400)
}

/// Settings of `audit_log` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSettings {
    /// The gid of the workspace (organization) whose audit log is pulled
    pub workspace: Gid,
    /// Only these event types, e.g. `["user_login_succeeded"]` (empty: all); one is sent to
    /// Asana as its filter, several are filtered by the worker (Asana's filter takes one value)
    #[serde(default)]
    pub event_type: Vec<String>,
    /// Only events of this actor type
    #[serde(default)]
    pub actor_type: Option<ActorType>,
    /// Only events by this actor
    #[serde(default)]
    pub actor_gid: Option<Gid>,
    /// Only events about this resource
    #[serde(default)]
    pub resource_gid: Option<Gid>,
    /// How far back the first run starts; at most `"90d"` (Asana's retention)
    #[serde(
        default = "default_audit_start",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub start: Duration,
    /// The window re-read on every run, ending at the newest event the tail has delivered (at
    /// the tail's start until it has one); events listed late are delivered once, de-duplicated
    /// by gid against every event delivered in the window, backfill included
    #[serde(
        default = "default_audit_overlap",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub overlap: Duration,
    /// The first run's range is split into this many time slices (1 to 64) fetched
    /// concurrently, so a long backfill runs at the token's rate limit rather than at one page
    /// walk's speed
    #[serde(default = "default_backfill_slices")]
    #[schemars(range(min = 1, max = 64))]
    pub backfill_slices: u32,
    /// Events per request (1 to 100)
    #[serde(default = "default_audit_page_size")]
    #[schemars(range(min = 1, max = 100))]
    pub page_size: u32,
    /// Keep polling the tail for this long within one run (a continuous tail); keep it below
    /// the job's `timeout`
    #[serde(default, with = "crate::config::values::optional_duration")]
    #[schemars(with = "Option<DurationText>")]
    pub tail_for: Option<Duration>,
    /// Pause between polls of a continuous tail
    #[serde(
        default = "default_poll_interval",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub poll_interval: Duration,
    /// Log a warning when the oldest position still needed is this close to the 90-day
    /// retention
    #[serde(
        default = "default_retention_warning",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub retention_warning: Duration,
    /// Where events go: `[settings.sink]` with `type = "file"`, `"http"` or `"s3"` (below)
    pub sink: RecordSinkSettings,
}

impl JobKind for AuditLog {
    const NAME: &'static str = "audit_log";
    const SUMMARY: &'static str =
        "pulls a workspace's audit-log events into a record sink, completely and exactly once";
    type Settings = AuditLogSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        let retention = RETENTION.to_std().unwrap_or_default();
        if settings.start > retention {
            check.problem(
                "start",
                format!(
                    "`start` is {}, but Asana keeps audit-log events for 90 days",
                    format_duration(settings.start)
                ),
                "use at most start = \"90d\"; older events cannot be read any more",
            );
        }
        if settings.retention_warning >= retention {
            check.problem(
                "retention_warning",
                format!(
                    "`retention_warning` is {}, as long as Asana's whole 90-day retention: it would always warn",
                    format_duration(settings.retention_warning)
                ),
                "use a margin such as retention_warning = \"7d\"",
            );
        }
        if let Some(tail_for) = settings.tail_for
            && settings.poll_interval > tail_for
        {
            check.problem(
                "poll_interval",
                format!(
                    "`poll_interval` ({}) is longer than `tail_for` ({}): the tail would never poll again",
                    format_duration(settings.poll_interval),
                    format_duration(tail_for)
                ),
                "make poll_interval shorter than tail_for, or remove tail_for for one pass per run",
            );
        }
        for (index, event_type) in settings.event_type.iter().enumerate() {
            if event_type.trim().is_empty() || event_type.contains(char::is_whitespace) {
                check.problem(
                    "event_type",
                    format!(
                        "`event_type` entry {} ({event_type:?}) is not an event type",
                        index + 1
                    ),
                    "event types are single words such as \"user_login_succeeded\"",
                );
            }
        }
        check.scoped("sink", |check| settings.sink.validate(check));
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        run(cx.run, cx.job, settings, cx.client, cx.sinks).await
    }
}

/// Checkpoint key of the cursor.
pub const CURSOR_KEY: &str = "cursor";

/// Asana keeps audit-log events for this long.
pub const RETENTION: chrono::Duration = chrono::Duration::days(90);

/// One slice of the log and how far it has been delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Where the slice begins (inclusive); for the tail, where the backfill ended.
    pub start: DateTime<Utc>,
    /// Where it ends (exclusive); None for the tail.
    pub end: Option<DateTime<Utc>>,
    /// The `start_at` of the walk the offset belongs to.
    pub query_start: DateTime<Utc>,
    /// Asana's `next_page.offset` after the last page read.
    pub offset: Option<String>,
    /// Newest `created_at` delivered from this slice.
    pub newest: Option<DateTime<Utc>>,
    /// Gids delivered with `created_at == newest` (dropped when the slice restarts there).
    pub newest_gids: Vec<String>,
}

impl Slice {
    fn new(start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> Slice {
        Slice {
            start,
            end,
            query_start: start,
            offset: None,
            newest: None,
            newest_gids: Vec::new(),
        }
    }

    /// Where the slice would resume without its offset.
    fn position(&self) -> DateTime<Utc> {
        self.newest.unwrap_or(self.query_start)
    }

    /// Restarts from the fallback: `start_at` at the newest delivered instant.
    fn fall_back(&mut self) {
        self.query_start = self.position();
        self.offset = None;
    }

    fn already_delivered(&self, at: DateTime<Utc>, gid: &str) -> bool {
        match self.newest {
            Some(newest) => {
                at < newest || (at == newest && self.newest_gids.iter().any(|g| g == gid))
            }
            None => false,
        }
    }

    fn note(&mut self, at: DateTime<Utc>, gid: &str) {
        match self.newest {
            Some(newest) if at < newest => {}
            Some(newest) if at == newest => self.newest_gids.push(gid.to_string()),
            _ => {
                self.newest = Some(at);
                self.newest_gids = vec![gid.to_string()];
            }
        }
    }
}

/// An event delivered inside the overlap window, remembered to de-duplicate its re-read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// Its `created_at`.
    pub at: DateTime<Utc>,
    /// Its gid.
    pub gid: String,
}

/// The job's cursor: stored in the checkpoint and with every batch in the sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Sequence of the last batch committed.
    pub sequence: u64,
    /// Backfill slices not finished yet (empty once the backfill is done).
    pub backfill: Vec<Slice>,
    /// The open-ended tail.
    pub tail: Slice,
    /// Events delivered inside the overlap window ([`Cursor::overlap_window`]), by any slice or
    /// the re-read itself, for de-duplication; older ones are forgotten as the window moves.
    pub recent: Vec<Seen>,
    /// Whether `recent` holds the events of every slice. Cursors written before it did hold
    /// only the tail's, so their window stays clamped to the tail's start (a backfill event in
    /// it would be delivered again); every cursor started since sets it.
    #[serde(default)]
    pub recent_covers_every_slice: bool,
    /// When an event was last delivered (job clock).
    pub last_delivery_at: Option<DateTime<Utc>>,
    /// Windows lost to retention, for the record (reported once, when found).
    #[serde(default)]
    pub lost: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// The sink the stream is written to ([`RecordSinkSettings::identity`]); None in cursors
    /// written before it was recorded, which adopt the configured sink.
    ///
    /// [`RecordSinkSettings::identity`]: crate::sinks::record::RecordSinkSettings::identity
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
}

impl Cursor {
    /// A first run's cursor: `[now - start, now)` split into `slices` closed slices, and the tail
    /// from `now`.
    pub fn initial(now: DateTime<Utc>, start: Duration, slices: u32) -> Cursor {
        let begin = now - chrono::Duration::from_std(start).unwrap_or(RETENTION);
        let slices = slices.max(1) as i64;
        let span = (now - begin).num_milliseconds().max(0);
        let backfill = (0..slices)
            .map(|i| {
                let from = begin + chrono::Duration::milliseconds(span * i / slices);
                let to = begin + chrono::Duration::milliseconds(span * (i + 1) / slices);
                Slice::new(from, Some(to))
            })
            .filter(|slice| slice.end.is_some_and(|end| end > slice.start))
            .collect();
        Cursor {
            sequence: 0,
            backfill,
            tail: Slice::new(now, None),
            recent: Vec::new(),
            recent_covers_every_slice: true,
            last_delivery_at: None,
            lost: Vec::new(),
            sink: None,
        }
    }

    /// Moves every slice whose position is before `cutoff` (Asana's retention) to the cutoff,
    /// drops backfill slices wholly before it, and records the lost window; returns it.
    pub fn skip_lost(&mut self, cutoff: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let oldest = self.oldest_needed();
        if oldest >= cutoff {
            return None;
        }
        for slice in self
            .backfill
            .iter_mut()
            .chain(std::iter::once(&mut self.tail))
        {
            if slice.position() < cutoff {
                slice.query_start = cutoff;
                slice.offset = None;
                slice.newest = None;
                slice.newest_gids.clear();
            }
        }
        self.backfill
            .retain(|s| s.end.is_none_or(|end| end > cutoff));
        self.lost.push((oldest, cutoff));
        Some((oldest, cutoff))
    }

    /// The window the overlap re-read covers: `overlap` back from the tail's position (its
    /// newest event, or its start while it has none), up to and including that position. A
    /// late event behind the tail's start lies in the backfill's range, so the window is not
    /// clamped to the tail's start: `recent` covers the slices too (but see
    /// [`Cursor::recent_covers_every_slice`]).
    pub fn overlap_window(&self, overlap: chrono::Duration) -> (DateTime<Utc>, DateTime<Utc>) {
        let to = self.tail.position();
        let from = to - overlap;
        if self.recent_covers_every_slice {
            (from, to)
        } else {
            (from.max(self.tail.start), to)
        }
    }

    /// Remembers an event just delivered (by any slice or the re-read) if it lies in the
    /// overlap window; one before it can never be re-read, since the window only moves on.
    fn remember(&mut self, at: DateTime<Utc>, gid: String, overlap: chrono::Duration) {
        if at >= self.overlap_window(overlap).0 {
            self.recent.push(Seen { at, gid });
        }
    }

    /// Forgets the events the window has moved past.
    fn forget_before_window(&mut self, overlap: chrono::Duration) {
        let from = self.overlap_window(overlap).0;
        self.recent.retain(|s| s.at >= from);
    }

    /// The oldest instant any slice still needs.
    pub fn oldest_needed(&self) -> DateTime<Utc> {
        self.backfill
            .iter()
            .map(Slice::position)
            .chain(std::iter::once(self.tail.position()))
            .min()
            .unwrap_or(self.tail.position())
    }
}

/// The fields of an event the job reads; the event itself is kept as raw bytes.
#[derive(Debug, Deserialize)]
struct EventHead {
    gid: String,
    created_at: String,
    #[serde(default)]
    event_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    #[serde(default)]
    next_page: Option<NextPage>,
}

#[derive(Debug, Deserialize)]
struct NextPage {
    offset: String,
}

/// Which slice a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Backfill(usize),
    Tail,
}

/// What a run shares between its concurrent slice walks.
struct Shared {
    cursor: Cursor,
    delivered: u64,
    /// The newest `created_at` this run delivered from any slice: a first run's backfill
    /// delivers events the tail never sees, and the lag gauge must count them too.
    newest_delivered: Option<DateTime<Utc>>,
}

struct Runner<'a> {
    ctx: &'a RunContext,
    job: &'a JobSpec,
    settings: &'a AuditLogSettings,
    client: &'a AsanaClient,
    sink: Arc<dyn Sink>,
    shared: Mutex<Shared>,
}

/// Why a walk stopped early.
enum Stop {
    Outcome(JobOutcome),
}

impl From<AsanaError> for Stop {
    fn from(error: AsanaError) -> Self {
        Stop::Outcome(JobOutcome::Retry {
            delay: None,
            error: error.to_string(),
        })
    }
}

/// Runs one pull.
async fn run(
    ctx: &RunContext,
    job: &JobSpec,
    settings: &AuditLogSettings,
    client: &AsanaClient,
    sink_context: &SinkContext,
) -> JobOutcome {
    let sink = match crate::sinks::record::build(&settings.sink, sink_context).await {
        Ok(sink) => sink,
        Err(error) if error.is_transient() => {
            return JobOutcome::Retry {
                delay: None,
                error: error.to_string(),
            };
        }
        Err(error) => {
            return JobOutcome::Failed {
                error: error.to_string(),
            };
        }
    };
    let now = ctx.clock.now();
    let stored = match ctx.checkpoints.get(CURSOR_KEY).await {
        Ok(value) => value,
        Err(error) => {
            return super::outcome_for_checkpoint_error(error, "the audit log's progress");
        }
    };
    let stored: Option<Cursor> = match stored.map(serde_json::from_value).transpose() {
        Ok(cursor) => cursor,
        Err(error) => {
            return JobOutcome::Failed {
                error: format!(
                    "the stored cursor of job {:?} is unreadable ({error}); the sink still holds its own cursor: delete the checkpoint to resume from the sink",
                    job.name
                ),
            };
        }
    };
    let recovered = match sink.recover(&job.name).await {
        Ok(recovered) => recovered,
        Err(error) => return super::outcome_for_sink_error(error),
    };
    let from_sink: Option<Cursor> = match recovered
        .map(|r| serde_json::from_value::<Cursor>(r.cursor))
        .transpose()
    {
        Ok(cursor) => cursor,
        Err(error) => {
            return JobOutcome::Failed {
                error: format!(
                    "the cursor stored in the sink for stream {:?} is unreadable: {error}",
                    job.name
                ),
            };
        }
    };
    let identity = settings.sink.identity();
    if let Some(refusal) = sink_out_of_place(
        &job.name,
        &identity,
        stored.as_ref(),
        from_sink.as_ref(),
        settings.sink.reads_back(),
    ) {
        return JobOutcome::Failed { error: refusal };
    }
    // The sink may hold batches the checkpoint missed (a crash between commit and checkpoint);
    // on a tie the checkpoint knows at least as much (it is written after the commit).
    let mut fresh = false;
    let mut cursor = match (stored, from_sink) {
        (Some(stored), Some(sunk)) if sunk.sequence > stored.sequence => sunk,
        (Some(stored), _) => stored,
        (None, Some(sunk)) => sunk,
        (None, None) => {
            // `start` is at most 90 days: the kind's `validate` refused more at load.
            fresh = true;
            Cursor::initial(now, settings.start, settings.backfill_slices)
        }
    };
    cursor.sink = Some(identity);
    let runner = Runner {
        ctx,
        job,
        settings,
        client,
        sink: sink.clone(),
        shared: Mutex::new(Shared {
            cursor,
            delivered: 0,
            newest_delivered: None,
        }),
    };
    // A first run's range is what Asana holds right now (`start` is at most 90 days): the
    // microseconds between choosing it and checking it are not a lost window.
    let lost = if fresh {
        None
    } else {
        runner.check_retention().await
    };
    if let Err(Stop::Outcome(outcome)) = runner.pass().await {
        return outcome;
    }
    if let Some(tail_for) = settings.tail_for {
        let until = ctx.clock.now() + chrono::Duration::from_std(tail_for).unwrap_or_default();
        while ctx.clock.now() < until {
            tokio::select! {
                () = ctx.cancel.cancelled() => break,
                () = tokio::time::sleep(settings.poll_interval) => {}
            }
            if let Err(Stop::Outcome(outcome)) = runner.pass().await {
                return outcome;
            }
        }
    }
    if let Err(error) = sink.rotate_if_due(&job.name, ctx.clock.now()).await {
        return super::outcome_for_sink_error(error);
    }
    let shared = runner.shared.lock().await;
    let progress = runner.report(&shared);
    if let Some(error) = lost {
        return JobOutcome::Failed { error };
    }
    JobOutcome::Completed { progress }
}

/// Why the sink cannot continue the stream the checkpoint describes, if it cannot: the job now
/// names another sink than the one the stream was written to, or the sink holds fewer batches
/// than the checkpoint counts (swapped for an empty one, restored from an old backup, or a
/// per-replica directory that is not the one the stream went to). Continuing would split the
/// stream or leave a hole that `verify` could not see.
fn sink_out_of_place(
    job: &str,
    identity: &str,
    stored: Option<&Cursor>,
    from_sink: Option<&Cursor>,
    sink_reads_back: bool,
) -> Option<String> {
    let stored = stored?;
    if let Some(recorded) = &stored.sink
        && recorded != identity
    {
        return Some(format!(
            "job {job:?} wrote its stream to sink {recorded:?} (batches 1 to {}), but its sink is now {identity:?}; \
             point the job back at that sink, or, to start a new stream in the new sink, rename the job",
            stored.sequence
        ));
    }
    let held = from_sink.map_or(0, |cursor| cursor.sequence);
    if sink_reads_back && held < stored.sequence {
        return Some(format!(
            "sink {identity:?} holds job {job:?}'s stream only through batch {held}, but the checkpoint has delivered through batch {}; \
             the sink was swapped, rolled back or is not shared between replicas: restore it (or mount the shared volume), \
             or rename the job to start a new stream",
            stored.sequence
        ));
    }
    None
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl Runner<'_> {
    /// Whether an event passes the local `event_type` filter: Asana filters by one event type,
    /// so with several the worker reads them all and keeps the listed ones.
    fn wanted(&self, head: &EventHead) -> bool {
        self.settings.event_type.is_empty()
            || head
                .event_type
                .as_ref()
                .is_some_and(|t| self.settings.event_type.contains(t))
    }

    /// Warns when the oldest position nears Asana's retention; when it is past it, records the
    /// exact window lost, moves the slices past it and returns the error to report.
    async fn check_retention(&self) -> Option<String> {
        let now = self.ctx.clock.now();
        let cutoff = now - RETENTION;
        let mut shared = self.shared.lock().await;
        let oldest = shared.cursor.oldest_needed();
        let headroom = oldest - cutoff;
        metrics::gauge!("asana_worker_audit_log_retention_headroom_seconds", "job" => self.job.name.clone())
            .set(headroom.num_seconds() as f64);
        let warning =
            chrono::Duration::from_std(self.settings.retention_warning).unwrap_or_default();
        if oldest >= cutoff {
            if headroom < warning {
                tracing::warn!(
                    job = %self.job.name, oldest_needed = %rfc3339(oldest), retention_cutoff = %rfc3339(cutoff),
                    "Audit-log cursor is close to Asana's 90-day retention; events older than the cutoff will be lost unless the job catches up"
                );
            }
            return None;
        }
        let cursor = &mut shared.cursor;
        cursor.skip_lost(cutoff);
        let error = format!(
            "audit-log events created from {} to {} were never delivered and are past Asana's 90-day retention: that window is lost. The job continues from {}; record the gap for your auditors and make the job run more often",
            rfc3339(oldest),
            rfc3339(cutoff),
            rfc3339(cutoff)
        );
        tracing::error!(job = %self.job.name, lost_from = %rfc3339(oldest), lost_to = %rfc3339(cutoff), "Audit-log window lost to retention");
        metrics::counter!("asana_worker_audit_log_lost_windows_total", "job" => self.job.name.clone()).increment(1);
        let value = serde_json::to_value(&*cursor).unwrap_or_default();
        drop(shared);
        if let Err(error) = self.ctx.checkpoints.put(CURSOR_KEY, value).await {
            tracing::warn!(%error, "Could not store the cursor after a lost window");
        }
        Some(error)
    }

    /// One pass: every unfinished backfill slice and the tail concurrently until caught up, then
    /// the tail's overlap window.
    async fn pass(&self) -> Result<(), Stop> {
        let slices = self.shared.lock().await.cursor.backfill.len();
        let mut walks: Vec<_> = (0..slices).map(|i| self.walk(Which::Backfill(i))).collect();
        walks.push(self.walk(Which::Tail));
        let results = futures::future::join_all(walks).await;
        let finished = {
            let mut shared = self.shared.lock().await;
            // Finished slices were marked with an empty range; drop them.
            let before = shared.cursor.backfill.len();
            shared
                .cursor
                .backfill
                .retain(|s| s.end.is_none_or(|end| end > s.start));
            (shared.cursor.backfill.len() < before)
                .then(|| serde_json::to_value(&shared.cursor).unwrap_or_default())
        };
        // A slice that ended without a batch (no events in its range) is otherwise only dropped
        // from the stored cursor by a later batch: until then each run walks it again, and its
        // stale start counts as the oldest position needed (retention headroom, lost windows).
        // Same sequence: on recovery the checkpoint wins over the sink's older copy.
        if let Some(value) = finished
            && let Err(error) = self.ctx.checkpoints.put(CURSOR_KEY, value).await
        {
            return Err(Stop::Outcome(super::outcome_for_checkpoint_error(
                error,
                "the audit log's progress",
            )));
        }
        for result in results {
            result?;
        }
        self.overlap().await?;
        self.metrics().await;
        Ok(())
    }

    fn filters(&self, query: Query) -> Query {
        let settings = self.settings;
        let event_type = (settings.event_type.len() == 1).then(|| settings.event_type[0].clone());
        query
            .param_opt("event_type", event_type)
            .param_opt("actor_type", settings.actor_type.map(ActorType::as_str))
            .param_opt("actor_gid", settings.actor_gid.clone())
            .param_opt("resource_gid", settings.resource_gid.clone())
            .param(
                "limit",
                settings.page_size.clamp(1, MAX_PAGE_SIZE).to_string(),
            )
    }

    async fn fetch(&self, query: Query) -> Result<Box<RawValue>, AsanaError> {
        let path = format!(
            "/workspaces/{}/audit_log_events",
            segment(&self.settings.workspace)
        );
        self.client.execute_raw(&ApiRequest::get(path, query)).await
    }

    /// Walks one slice until it is caught up (`data: []`), committing every page.
    async fn walk(&self, which: Which) -> Result<(), Stop> {
        let mut fallbacks = 0u32;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(Stop::Outcome(JobOutcome::Interrupted));
            }
            let slice = {
                let shared = self.shared.lock().await;
                match which {
                    Which::Tail => shared.cursor.tail.clone(),
                    Which::Backfill(i) => shared.cursor.backfill[i].clone(),
                }
            };
            let mut query = self
                .filters(Query::new())
                .param("start_at", rfc3339(slice.query_start));
            if let Some(end) = slice.end {
                query = query.param("end_at", rfc3339(end));
            }
            if let Some(offset) = &slice.offset {
                query = query.param("offset", offset.clone());
            }
            let body = match self.fetch(query).await {
                Ok(body) => body,
                Err(AsanaError::OffsetExpired { .. } | AsanaError::BadRequest { .. })
                    if slice.offset.is_some() && fallbacks < 3 =>
                {
                    // An expired or rejected offset: resume from the newest delivered instant.
                    fallbacks += 1;
                    metrics::counter!("asana_worker_audit_log_offset_fallbacks_total", "job" => self.job.name.clone()).increment(1);
                    tracing::info!(job = %self.job.name, resume_at = %rfc3339(slice.position()), "Audit-log offset refused; resuming from the newest delivered event with start_at");
                    let mut shared = self.shared.lock().await;
                    match which {
                        Which::Tail => shared.cursor.tail.fall_back(),
                        Which::Backfill(i) => shared.cursor.backfill[i].fall_back(),
                    }
                    continue;
                }
                Err(AsanaError::Cancelled) => return Err(Stop::Outcome(JobOutcome::Interrupted)),
                Err(error) => {
                    return Err(Stop::Outcome(super::outcome_for_error(self.job, &error)));
                }
            };
            fallbacks = 0;
            let page: RawPage<'_> = serde_json::from_str(body.get()).map_err(|e| {
                Stop::Outcome(JobOutcome::Retry {
                    delay: None,
                    error: format!("an audit-log page is not what Asana documents: {e}"),
                })
            })?;
            let caught_up = page.data.is_empty();
            let mut shared = self.shared.lock().await;
            let mut cursor = shared.cursor.clone();
            let slice = match which {
                Which::Tail => &mut cursor.tail,
                Which::Backfill(i) => &mut cursor.backfill[i],
            };
            // A gid the window remembers was delivered already, whichever read found it first
            // (the tail meets one at its newest instant that a re-read delivered).
            let recent: HashSet<&str> = cursor.recent.iter().map(|s| s.gid.as_str()).collect();
            let mut records = Vec::new();
            let mut marks = Vec::new();
            let mut delivered = Vec::new();
            for raw in &page.data {
                let head: EventHead = serde_json::from_str(raw.get()).map_err(|e| {
                    Stop::Outcome(JobOutcome::Failed {
                        error: format!("an audit-log event has no gid or created_at ({e}); nothing after it was delivered"),
                    })
                })?;
                let at = DateTime::parse_from_rfc3339(&head.created_at)
                    .map_err(|e| {
                        Stop::Outcome(JobOutcome::Failed {
                            error: format!(
                                "audit-log event {} has an unreadable created_at {:?}: {e}",
                                head.gid, head.created_at
                            ),
                        })
                    })?
                    .with_timezone(&Utc);
                if slice.already_delivered(at, &head.gid) || recent.contains(head.gid.as_str()) {
                    continue;
                }
                slice.note(at, &head.gid);
                if !self.wanted(&head) {
                    continue;
                }
                records.push((*raw).to_owned());
                marks.push(RecordMark {
                    gid: head.gid.clone(),
                    created_at: head.created_at.clone(),
                });
                delivered.push((at, head.gid));
            }
            drop(recent);
            if let Some(next) = page.next_page {
                slice.offset = Some(next.offset);
            }
            if caught_up && let Which::Backfill(_) = which {
                // Finished: an empty range marks it for removal at the end of the pass.
                if let Some(end) = slice.end {
                    slice.start = end;
                }
            }
            let overlap = self.overlap_len();
            for (at, gid) in delivered {
                cursor.remember(at, gid, overlap);
            }
            cursor.forget_before_window(overlap);
            self.commit(&mut shared, cursor, records, marks).await?;
            if caught_up {
                return Ok(());
            }
        }
    }

    /// Commits records (if any) with `cursor` to the sink, then the checkpoint.
    async fn commit(
        &self,
        shared: &mut Shared,
        mut cursor: Cursor,
        records: Vec<Box<RawValue>>,
        marks: Vec<RecordMark>,
    ) -> Result<(), Stop> {
        if records.is_empty() {
            // Nothing to store: the new offsets are kept in memory and stored with the next
            // batch (re-reading them after a crash only finds events already delivered).
            shared.cursor = cursor;
            return Ok(());
        }
        let now = self.ctx.clock.now();
        cursor.sequence += 1;
        cursor.last_delivery_at = Some(now);
        let count = records.len() as u64;
        let batch = Batch {
            stream: self.job.name.clone(),
            sequence: cursor.sequence,
            first: marks.first().cloned().expect("records is not empty"),
            last: marks.last().cloned().expect("records is not empty"),
            records,
            cursor: serde_json::to_value(&cursor).unwrap_or_default(),
            now,
        };
        let value = batch.cursor.clone();
        let span = tracing::info_span!(
            "sink.commit",
            sink = self.settings.sink.type_name(),
            sequence = batch.sequence,
            records = count,
        );
        if let Err(error) = tracing::Instrument::instrument(self.sink.commit(batch), span).await {
            return Err(Stop::Outcome(super::outcome_for_sink_error(error)));
        }
        let newest = marks
            .iter()
            .filter_map(|m| DateTime::parse_from_rfc3339(&m.created_at).ok())
            .map(|t| t.with_timezone(&Utc))
            .max();
        shared.newest_delivered = shared.newest_delivered.max(newest);
        shared.cursor = cursor;
        shared.delivered += count;
        metrics::counter!("asana_worker_audit_log_events_total", "job" => self.job.name.clone())
            .increment(count);
        if let Err(error) = self.ctx.checkpoints.put(CURSOR_KEY, value).await {
            // The sink holds the batch and its cursor: the next run recovers from it.
            return Err(Stop::Outcome(super::outcome_for_checkpoint_error(
                error,
                "the audit log's progress",
            )));
        }
        Ok(())
    }

    /// The configured `overlap`.
    fn overlap_len(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.overlap).unwrap_or_default()
    }

    /// Re-reads the overlap window ([`Cursor::overlap_window`]) and delivers the events no read
    /// delivered before. Runs after every slice of the pass is caught up, so no backfill slice
    /// is still walking the part of the window before the tail's start.
    async fn overlap(&self) -> Result<(), Stop> {
        let overlap = self.overlap_len();
        let (from, to) = self.shared.lock().await.cursor.overlap_window(overlap);
        if from >= to {
            return Ok(());
        }
        // `end_at` is exclusive and the window includes `to`: a late event at the tail's newest
        // instant that sorts before the tail's offset is found here. What lies after `to` is
        // the tail's to read.
        let base = self
            .filters(Query::new())
            .param("start_at", rfc3339(from))
            .param("end_at", rfc3339(to + chrono::Duration::milliseconds(1)));
        let mut offset: Option<String> = None;
        loop {
            let mut query = base.clone();
            if let Some(offset) = &offset {
                query = query.param("offset", offset.clone());
            }
            let body = match self.fetch(query).await {
                Ok(body) => body,
                Err(AsanaError::Cancelled) => return Err(Stop::Outcome(JobOutcome::Interrupted)),
                Err(error) => {
                    return Err(Stop::Outcome(super::outcome_for_error(self.job, &error)));
                }
            };
            let page: RawPage<'_> = serde_json::from_str(body.get()).map_err(|e| {
                Stop::Outcome(JobOutcome::Retry {
                    delay: None,
                    error: format!("an audit-log page is not what Asana documents: {e}"),
                })
            })?;
            if page.data.is_empty() {
                return Ok(());
            }
            // The window is closed (`end_at`): a short page is its last one, so an idle run
            // costs one request here, not two.
            let last_page =
                page.data.len() < self.settings.page_size.clamp(1, MAX_PAGE_SIZE) as usize;
            let mut shared = self.shared.lock().await;
            let mut cursor = shared.cursor.clone();
            let known: HashSet<String> = cursor.recent.iter().map(|s| s.gid.clone()).collect();
            let mut records = Vec::new();
            let mut marks = Vec::new();
            for raw in &page.data {
                let Ok(head) = serde_json::from_str::<EventHead>(raw.get()) else {
                    continue;
                };
                let Ok(at) = DateTime::parse_from_rfc3339(&head.created_at) else {
                    continue;
                };
                let at = at.with_timezone(&Utc);
                if known.contains(&head.gid) || at > to || !self.wanted(&head) {
                    continue;
                }
                cursor.remember(at, head.gid.clone(), overlap);
                tracing::info!(job = %self.job.name, gid = %head.gid, created_at = %head.created_at, "Late audit-log event found in the overlap window");
                metrics::counter!("asana_worker_audit_log_late_events_total", "job" => self.job.name.clone()).increment(1);
                records.push((*raw).to_owned());
                marks.push(RecordMark {
                    gid: head.gid,
                    created_at: head.created_at,
                });
            }
            self.commit(&mut shared, cursor, records, marks).await?;
            drop(shared);
            match page.next_page {
                Some(next) if !last_page => offset = Some(next.offset),
                _ => return Ok(()),
            }
        }
    }

    async fn metrics(&self) {
        let shared = self.shared.lock().await;
        let now = self.ctx.clock.now();
        let job = self.job.name.clone();
        if let Some(newest) = shared.cursor.tail.newest.max(shared.newest_delivered) {
            metrics::gauge!("asana_worker_audit_log_lag_seconds", "job" => job.clone())
                .set((now - newest).num_milliseconds() as f64 / 1000.0);
        }
        if let Some(at) = shared.cursor.last_delivery_at {
            metrics::gauge!("asana_worker_audit_log_seconds_since_last_event", "job" => job.clone())
                .set((now - at).num_milliseconds() as f64 / 1000.0);
        }
        metrics::gauge!("asana_worker_audit_log_events_per_run", "job" => job.clone())
            .set(shared.delivered as f64);
        // After the pass: how much headroom the cursor the next run starts from has.
        let headroom = shared.cursor.oldest_needed() - (now - RETENTION);
        metrics::gauge!("asana_worker_audit_log_retention_headroom_seconds", "job" => job)
            .set(headroom.num_seconds() as f64);
    }

    fn report(&self, shared: &Shared) -> serde_json::Value {
        let cursor = &shared.cursor;
        serde_json::json!({
            "events": shared.delivered,
            "sequence": cursor.sequence,
            "backfill_slices_left": cursor.backfill.len(),
            "newest": cursor.tail.newest.max(shared.newest_delivered).map(rfc3339),
            "lost_windows": cursor.lost.iter().map(|(a, b)| format!("{}..{}", rfc3339(*a), rfc3339(*b))).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_range_is_split_without_gaps() {
        let now = DateTime::parse_from_rfc3339("2026-05-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cursor = Cursor::initial(now, Duration::from_secs(7 * 86400), 4);
        assert_eq!(cursor.backfill.len(), 4);
        assert_eq!(cursor.backfill[0].start, now - chrono::Duration::days(7));
        for pair in cursor.backfill.windows(2) {
            assert_eq!(pair[0].end, Some(pair[1].start));
        }
        assert_eq!(cursor.backfill[3].end, Some(now));
        assert_eq!(cursor.tail.start, now);
        assert_eq!(cursor.oldest_needed(), now - chrono::Duration::days(7));
    }

    #[test]
    fn a_position_past_retention_names_the_lost_window_and_moves_on() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let now = t("2026-05-01T00:00:00Z");
        let mut cursor = Cursor::initial(
            t("2026-01-20T00:00:00Z"),
            Duration::from_secs(10 * 86400),
            2,
        );
        cursor.backfill[1].note(t("2026-01-17T00:00:00Z"), "7");
        cursor.tail.note(t("2026-02-15T00:00:00Z"), "9");
        let cutoff = now - RETENTION;
        assert_eq!(cutoff, t("2026-01-31T00:00:00Z"));
        let lost = cursor.skip_lost(cutoff);
        // The oldest position was the first slice's start: 10 days before 2026-01-20.
        assert_eq!(lost, Some((t("2026-01-10T00:00:00Z"), cutoff)));
        assert!(
            cursor.backfill.is_empty(),
            "both slices ended before the cutoff"
        );
        assert_eq!(
            cursor.tail.newest,
            Some(t("2026-02-15T00:00:00Z")),
            "the tail is kept"
        );
        assert_eq!(cursor.lost, vec![(t("2026-01-10T00:00:00Z"), cutoff)]);
        assert_eq!(cursor.skip_lost(cutoff), None, "reported once");
        // A tail behind the cutoff restarts at it.
        let mut cursor = Cursor::initial(t("2026-01-20T00:00:00Z"), Duration::from_secs(86400), 1);
        cursor.backfill.clear();
        cursor.tail.offset = Some("x".into());
        assert_eq!(
            cursor.skip_lost(cutoff),
            Some((t("2026-01-20T00:00:00Z"), cutoff))
        );
        assert_eq!(cursor.tail.query_start, cutoff);
        assert!(cursor.tail.offset.is_none());
    }

    #[test]
    fn the_overlap_window_reaches_into_the_backfill_and_remembers_every_slice() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let overlap = chrono::Duration::minutes(10);
        let start = t("2026-05-01T00:00:00Z");
        let mut cursor = Cursor::initial(start, Duration::from_secs(7 * 86400), 8);
        // No tail event yet: the window ends at the tail's start and reaches back before it.
        assert_eq!(
            cursor.overlap_window(overlap),
            (t("2026-04-30T23:50:00Z"), start)
        );
        // The last backfill slice's events inside the window are remembered; older ones are not.
        cursor.remember(t("2026-04-30T23:58:00Z"), "late-slice".into(), overlap);
        cursor.remember(t("2026-04-30T23:40:00Z"), "old-slice".into(), overlap);
        assert_eq!(cursor.recent.len(), 1);
        // The tail moves on: the window follows its newest event, forgetting what it passed.
        cursor.tail.note(t("2026-05-01T00:05:00Z"), "tail");
        cursor.remember(t("2026-05-01T00:05:00Z"), "tail".into(), overlap);
        assert_eq!(
            cursor.overlap_window(overlap),
            (t("2026-04-30T23:55:00Z"), t("2026-05-01T00:05:00Z"))
        );
        cursor.tail.note(t("2026-05-01T00:09:00Z"), "tail-2");
        cursor.forget_before_window(overlap);
        let kept: Vec<&str> = cursor.recent.iter().map(|s| s.gid.as_str()).collect();
        assert_eq!(kept, ["tail"]);

        // A cursor written before the slices were remembered keeps its window on the tail.
        let mut legacy =
            serde_json::to_value(Cursor::initial(start, Duration::from_secs(86400), 2)).unwrap();
        legacy
            .as_object_mut()
            .unwrap()
            .remove("recent_covers_every_slice");
        let mut legacy: Cursor = serde_json::from_value(legacy).unwrap();
        assert!(!legacy.recent_covers_every_slice);
        assert_eq!(legacy.overlap_window(overlap), (start, start));
        legacy.remember(t("2026-04-30T23:58:00Z"), "slice".into(), overlap);
        assert!(legacy.recent.is_empty());
    }

    #[test]
    fn a_slice_drops_what_it_delivered_when_it_falls_back() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let mut slice = Slice::new(t("2026-05-01T00:00:00Z"), None);
        slice.note(t("2026-05-01T00:00:05Z"), "1");
        slice.note(t("2026-05-01T00:00:05Z"), "2");
        slice.offset = Some("x".into());
        slice.fall_back();
        assert_eq!(slice.query_start, t("2026-05-01T00:00:05Z"));
        assert!(slice.offset.is_none());
        assert!(slice.already_delivered(t("2026-05-01T00:00:05Z"), "2"));
        assert!(!slice.already_delivered(t("2026-05-01T00:00:05Z"), "3"));
        assert!(slice.already_delivered(t("2026-05-01T00:00:04Z"), "9"));
    }
}
