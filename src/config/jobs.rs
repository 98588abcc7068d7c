//! Job definitions: one job per file in `jobs/*.toml`, parsed into plain typed [`JobSpec`]s and
//! validated up front. Every problem of every file is reported at once, each with
//! `file:line:col`, what is wrong and a hint; a set with any problem is rejected whole.
//!
//! ```toml
//! name = "check-service-account"
//! kind = "credential_check"
//! schedule = "*/15 * * * *"      # or: every = "5m"; aliases such as "@hourly" work too
//! timezone = "Europe/Berlin"     # IANA name, default UTC
//! credential = "service-account"
//! misfire = "once"               # skip | once | all (with misfire_max)
//! overlap = "skip"               # skip | queue
//! max_attempts = 5
//! retry_initial = "10s"
//! retry_max = "10m"
//! timeout = "30m"
//! enabled = true
//!
//! [settings]                     # the kind's own settings
//! ```
//!
//! The file is first parsed into a spanned table ([`toml::de::DeTable`]), not straight into a
//! struct: serde stops at the first error and its spans for unknown fields are coarse, while an
//! operator fixing a deploy wants every unknown key, wrong type and bad value of every file, each
//! at its own `line:col`. A kind's `[settings]` are checked the same way from its
//! [`SettingInfo`] declarations (see [`JobKind::settings_info`]), then read into its typed
//! settings struct. The complete reference is `docs/configuration.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{Diagnostic, Diagnostics};

/// Job kinds this build knows, with their settings.
#[derive(Debug, Clone, PartialEq)]
pub enum JobKind {
    /// Calls `users/me` with the job's credential and records its owner and validity.
    CredentialCheck(CredentialCheckSettings),
    /// Exports the organization and downloads the file.
    OrgExport(crate::jobs::org_export::OrgExportSettings),
    /// Exports a project, portfolio, team or goal graph and downloads the file.
    GraphExport(crate::jobs::graph_export::GraphExportSettings),
    /// Exports a workspace's objects of some types and downloads the file.
    ResourceExport(crate::jobs::resource_export::ResourceExportSettings),
    /// Pulls a workspace's audit-log events into a sink, exactly once.
    AuditLog(Box<AuditLogSettings>),
}

impl JobKind {
    /// Names accepted in `kind = "…"`.
    pub const NAMES: &'static [&'static str] = &[
        "credential_check",
        "org_export",
        "graph_export",
        "resource_export",
        "audit_log",
    ];

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::CredentialCheck(_) => "credential_check",
            JobKind::OrgExport(_) => "org_export",
            JobKind::GraphExport(_) => "graph_export",
            JobKind::ResourceExport(_) => "resource_export",
            JobKind::AuditLog(_) => "audit_log",
        }
    }
}

/// Settings of `credential_check` jobs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialCheckSettings {
    /// The gid or email of the user the credential must act as; the check fails when the token
    /// belongs to someone else (a swapped or mis-pasted token).
    #[serde(default)]
    pub expected_owner: Option<String>,
}

/// Settings of `audit_log` jobs (see [`AUDIT_LOG_SETTINGS`] and `crate::jobs::audit_log`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLogSettings {
    /// The workspace (organization) whose log is read.
    pub workspace: String,
    /// Only these event types: one is passed to Asana as a filter, several are filtered by
    /// the worker (Asana's filter takes one value).
    #[serde(default)]
    pub event_type: Vec<String>,
    /// Only this actor type.
    #[serde(default)]
    pub actor_type: Option<String>,
    /// Only this actor.
    #[serde(default)]
    pub actor_gid: Option<String>,
    /// Only this resource.
    #[serde(default)]
    pub resource_gid: Option<String>,
    /// How far back the first run starts (at most 90 days: Asana's retention).
    #[serde(default = "default_audit_start", deserialize_with = "de_duration")]
    pub start: Duration,
    /// The tail's window re-read on every run to catch late events.
    #[serde(default = "default_audit_overlap", deserialize_with = "de_duration")]
    pub overlap: Duration,
    /// Time slices the initial range is split into and fetched concurrently.
    #[serde(default = "default_backfill_slices")]
    pub backfill_slices: u32,
    /// Events per request (1..=100).
    #[serde(default = "default_audit_page_size")]
    pub page_size: u32,
    /// Keep polling the tail for this long within one run (a continuous tail); none = one pass.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub tail_for: Option<Duration>,
    /// Pause between polls of a continuous tail.
    #[serde(default = "default_poll_interval", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// Warn when the oldest position still needed is this close to the 90-day retention.
    #[serde(
        default = "default_retention_warning",
        deserialize_with = "de_duration"
    )]
    pub retention_warning: Duration,
    /// Where the events go.
    pub sink: crate::sinks::SinkSettings,
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

/// When a job fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A 5-field cron expression or alias, evaluated in the job's time zone.
    Cron {
        /// The expression as written.
        expression: String,
        /// The parsed expression.
        cron: Box<Cron>,
    },
    /// A fixed interval, aligned to multiples of the interval since the Unix epoch (UTC), so
    /// fires do not drift across restarts.
    Every(Duration),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.definition() == other.definition()
    }
}

impl Schedule {
    /// A stable text form, stored with the schedule so a changed definition is noticed.
    pub fn definition(&self) -> String {
        match self {
            Schedule::Cron { expression, .. } => format!("cron:{expression}"),
            Schedule::Every(every) => format!("every:{}s", every.as_secs()),
        }
    }
}

/// What to do with fires missed while the daemon was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MisfirePolicy {
    /// Drop them (each is recorded as a skipped run).
    Skip,
    /// Run once for all of them (the latest), record the rest as skipped.
    Once,
    /// Run each of them, up to `max` (the oldest beyond are recorded as skipped).
    All {
        /// Cap on catch-up runs.
        max: u32,
    },
}

/// What to do when a fire comes while the previous run has not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapPolicy {
    /// Record the fire as skipped.
    Skip,
    /// Queue it; it starts when the previous run ends.
    Queue,
}

/// A validated job definition.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Unique name.
    pub name: String,
    /// Kind and its settings.
    pub kind: JobKind,
    /// When it fires.
    pub schedule: Schedule,
    /// Time zone the cron expression is evaluated in.
    pub timezone: Tz,
    /// Name of the credential it uses.
    pub credential: String,
    /// Missed fires.
    pub misfire: MisfirePolicy,
    /// Overlapping fires.
    pub overlap: OverlapPolicy,
    /// Attempts per run before it is dead.
    pub max_attempts: u32,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Longest a run attempt may take.
    pub timeout: Duration,
    /// Disabled jobs are validated but never fire.
    pub enabled: bool,
    /// The file it came from.
    pub source: PathBuf,
}

impl JobSpec {
    /// The first fire strictly after `after`, or None if the schedule never fires again.
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.schedule {
            Schedule::Cron { cron, .. } => {
                let local = after.with_timezone(&self.timezone);
                cron.find_next_occurrence(&local, false)
                    .ok()
                    .map(|next| next.with_timezone(&Utc))
            }
            Schedule::Every(every) => {
                let step = every.as_millis().max(1) as i64;
                let millis = after.timestamp_millis();
                let next = (millis.div_euclid(step) + 1) * step;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }

    /// Stored with the schedule: when it changes, the next fire is recomputed.
    pub fn schedule_definition(&self) -> String {
        format!("{}@{}", self.schedule.definition(), self.timezone.name())
    }
}

/// What job files are checked against.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// Credential names that exist.
    pub credentials: BTreeSet<String>,
}

impl ValidationContext {
    /// A context knowing the credentials declared in `config.toml`; add the names of stored
    /// credentials to `credentials` before validating, if the daemon has a credential store.
    pub fn from_settings(settings: &super::settings::Settings) -> Self {
        Self {
            credentials: settings.credentials.keys().cloned().collect(),
        }
    }

    /// Checks that a kind's output directory can be written, so a job whose output would be
    /// lost is rejected at `validate` time rather than hours later at its first run.
    ///
    /// The directory must exist and be writable, or not exist yet with its nearest existing
    /// ancestor a writable directory (it is created at the first run). Writability is tested
    /// by creating and removing a temporary file; nothing is left behind and nothing is
    /// created. Kinds with output paths declare them as [`SettingType::OutputDir`] in
    /// [`JobKind::settings_info`], and the check runs on them with the value's `line:col`.
    pub fn check_writable_dir(&self, path: &Path) -> Result<(), String> {
        check_writable_dir(path)
    }
}

/// Reads a duration setting written as a string (`"30s"`, `"7d"`) into a [`Duration`]; for
/// `#[serde(deserialize_with = …)]` in kinds' settings structs, whose keys were already checked
/// by [`SettingType::Duration`].
pub fn de_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Like [`de_duration`] for an optional setting.
pub fn de_opt_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    text.map(|text| parse_duration(&text).map_err(serde::de::Error::custom))
        .transpose()
}

/// See [`ValidationContext::check_writable_dir`]; usable without a context.
pub fn check_writable_dir(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("the output directory is empty".into());
    }
    let mut existing = path;
    loop {
        match std::fs::metadata(existing) {
            Ok(metadata) if metadata.is_dir() => break,
            Ok(_) => {
                return Err(format!(
                    "{} is not a directory",
                    if existing == path {
                        format!("output path {:?}", path.display().to_string())
                    } else {
                        format!(
                            "{:?} (on the way to {:?})",
                            existing.display().to_string(),
                            path.display().to_string()
                        )
                    }
                ));
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                existing = match existing.parent() {
                    Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
                    Some(parent) => parent,
                    None => {
                        return Err(format!(
                            "no part of output directory {:?} exists",
                            path.display().to_string()
                        ));
                    }
                };
            }
            Err(error) => {
                return Err(format!(
                    "cannot inspect {:?}: {error}",
                    existing.display().to_string()
                ));
            }
        }
    }
    // The probe file is removed when dropped.
    tempfile::Builder::new()
        .prefix(".asana-worker-write-check")
        .tempfile_in(existing)
        .map(drop)
        .map_err(|error| {
            if existing == path {
                format!(
                    "output directory {:?} is not writable: {error}",
                    path.display().to_string()
                )
            } else {
                format!(
                    "output directory {:?} cannot be created: {:?} is not writable: {error}",
                    path.display().to_string(),
                    existing.display().to_string()
                )
            }
        })
}

/// Type of one setting of a kind's `[settings]` table. Settings are checked from these
/// declarations before the kind's typed struct is read, so every wrong setting of a file is
/// reported at once, at its own place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingType {
    /// `true` or `false`.
    Bool,
    /// A non-negative integer.
    Integer,
    /// A string.
    String,
    /// A duration string such as `"30s"`.
    Duration,
    /// A directory the job writes into; checked with
    /// [`ValidationContext::check_writable_dir`].
    OutputDir,
    /// An array of strings, e.g. `["task", "project"]`.
    StringList,
    /// A table choosing a sink by `type` (see [`crate::sinks`]); its keys are checked against
    /// [`crate::sinks::settings_info`] of that type, each at its own place.
    Sink,
}

impl SettingType {
    fn describe(self) -> &'static str {
        match self {
            SettingType::Bool => "bool",
            SettingType::Integer => "integer",
            SettingType::String => "string",
            SettingType::Duration => "duration",
            SettingType::OutputDir => "directory path",
            SettingType::StringList => "list of strings",
            SettingType::Sink => "sink table",
        }
    }
}

/// One accepted key of a kind's `[settings]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingInfo {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub ty: SettingType,
    /// Its default, as written in a job file; [`REQUIRED`] for settings without a default,
    /// whose absence is reported at the `[settings]` table.
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

/// The `default` of a [`SettingInfo`] that must be given.
pub const REQUIRED: &str = "required";

const CREDENTIAL_CHECK_SETTINGS: &[SettingInfo] = &[SettingInfo {
    name: "expected_owner",
    ty: SettingType::String,
    default: "none",
    doc: "gid or email of the user the credential must act as (fails on a swapped token)",
}];

/// Keys of `audit_log` jobs' `[settings]`.
pub const AUDIT_LOG_SETTINGS: &[SettingInfo] = &[
    SettingInfo {
        name: "workspace",
        ty: SettingType::String,
        default: REQUIRED,
        doc: "gid of the workspace (organization) whose audit log is pulled",
    },
    SettingInfo {
        name: "event_type",
        ty: SettingType::StringList,
        default: "[] (all)",
        doc: "only these event types, e.g. [\"user_login_succeeded\"]",
    },
    SettingInfo {
        name: "actor_type",
        ty: SettingType::String,
        default: "none",
        doc: "only this actor type: user, asana, asana_support, anonymous, external_administrator",
    },
    SettingInfo {
        name: "actor_gid",
        ty: SettingType::String,
        default: "none",
        doc: "only events by this actor",
    },
    SettingInfo {
        name: "resource_gid",
        ty: SettingType::String,
        default: "none",
        doc: "only events about this resource",
    },
    SettingInfo {
        name: "start",
        ty: SettingType::Duration,
        default: "\"7d\"",
        doc: "how far back the first run starts (at most \"90d\")",
    },
    SettingInfo {
        name: "overlap",
        ty: SettingType::Duration,
        default: "\"5m\"",
        doc: "window re-read on every run to deliver late events (de-duplicated by gid)",
    },
    SettingInfo {
        name: "backfill_slices",
        ty: SettingType::Integer,
        default: "8",
        doc: "time slices the initial range is split into and fetched concurrently",
    },
    SettingInfo {
        name: "page_size",
        ty: SettingType::Integer,
        default: "100",
        doc: "events per request (1 to 100)",
    },
    SettingInfo {
        name: "tail_for",
        ty: SettingType::Duration,
        default: "none",
        doc: "keep polling the tail for this long within one run (a continuous tail)",
    },
    SettingInfo {
        name: "poll_interval",
        ty: SettingType::Duration,
        default: "\"30s\"",
        doc: "pause between polls of a continuous tail",
    },
    SettingInfo {
        name: "retention_warning",
        ty: SettingType::Duration,
        default: "\"7d\"",
        doc: "warn when the oldest position still needed is this close to the 90-day retention",
    },
    SettingInfo {
        name: "sink",
        ty: SettingType::Sink,
        default: REQUIRED,
        doc: "where events go: [settings.sink] with type = \"file\" (or \"http\", \"s3\")",
    },
];

impl JobKind {
    /// The `[settings]` keys a kind accepts, or None for an unknown kind; used to validate
    /// settings and to list them in hints.
    pub fn settings_info(kind: &str) -> Option<&'static [SettingInfo]> {
        match kind {
            "credential_check" => Some(CREDENTIAL_CHECK_SETTINGS),
            "org_export" => Some(crate::jobs::org_export::SETTINGS),
            "graph_export" => Some(crate::jobs::graph_export::SETTINGS),
            "resource_export" => Some(crate::jobs::resource_export::SETTINGS),
            "audit_log" => Some(AUDIT_LOG_SETTINGS),
            _ => None,
        }
    }
}

/// Default attempts per run.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default cap of `misfire = "all"`.
pub const DEFAULT_MISFIRE_MAX: u32 = 100;
/// Default first retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(10);
/// Default longest retry delay.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);
/// Default attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest duration a job field accepts, so interval and deadline arithmetic cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Top-level keys of a job file, in documentation order.
pub const JOB_FIELDS: &[&str] = &[
    "name",
    "kind",
    "schedule",
    "every",
    "timezone",
    "credential",
    "misfire",
    "misfire_max",
    "overlap",
    "max_attempts",
    "retry_initial",
    "retry_max",
    "timeout",
    "enabled",
    "settings",
];

const CRON_HINT: &str = "use 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\", or an alias: @yearly @monthly @weekly @daily @hourly";
const DURATION_HINT: &str = "write a duration such as \"30s\", \"5m\", \"1h30m\"";

type Span = std::ops::Range<usize>;
/// A job's name and its place, when the name is valid.
type ValidName = Option<(String, Span)>;
type Entry<'t, 'i> = (
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<toml::de::DeValue<'i>>,
);

/// Collects the problems of one file.
struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn at(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.problems
            .push(Diagnostic::at(self.path, self.source, Some(span), message).hint(hint));
    }

    fn whole(&mut self, message: impl Into<String>, hint: impl Into<String>) {
        self.problems
            .push(Diagnostic::file(self.path, message).hint(hint));
    }

    fn wrong_type(
        &mut self,
        key: &str,
        value: &Spanned<toml::de::DeValue<'_>>,
        expected: &str,
        example: &str,
    ) {
        self.at(
            value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                article(value.get_ref().type_str())
            ),
            format!("e.g. {example}"),
        );
    }

    fn string<'t>(
        &mut self,
        entry: Option<Entry<'t, '_>>,
        example: &str,
    ) -> Option<Spanned<&'t str>> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::String(text) => Some(Spanned::new(value.span(), text.as_ref())),
            _ => {
                self.wrong_type(key.get_ref(), value, "a string", example);
                None
            }
        }
    }

    fn integer(&mut self, entry: Option<Entry<'_, '_>>, example: &str) -> Option<Spanned<u32>> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::Integer(integer) => {
                match i128::from_str_radix(integer.as_str(), integer.radix())
                    .ok()
                    .and_then(|n| u32::try_from(n).ok())
                {
                    Some(n) => Some(Spanned::new(value.span(), n)),
                    None => {
                        self.at(
                            value.span(),
                            format!("`{key}` is out of range", key = key.get_ref()),
                            format!("use a whole number from 1 to {}, e.g. {example}", u32::MAX),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(key.get_ref(), value, "an integer", example);
                None
            }
        }
    }

    fn boolean(&mut self, entry: Option<Entry<'_, '_>>, example: &str) -> Option<bool> {
        let (key, value) = entry?;
        match value.get_ref() {
            toml::de::DeValue::Boolean(flag) => Some(*flag),
            _ => {
                self.wrong_type(key.get_ref(), value, "true or false", example);
                None
            }
        }
    }

    /// A duration field: a string such as "30s", longer than zero.
    fn duration(
        &mut self,
        entry: Option<Entry<'_, '_>>,
        example: &str,
    ) -> Option<Spanned<Duration>> {
        let key = entry.map(|(key, _)| key.get_ref().to_string())?;
        if let Some((_, value)) = entry
            && matches!(
                value.get_ref(),
                toml::de::DeValue::Integer(_) | toml::de::DeValue::Float(_)
            )
        {
            self.at(
                value.span(),
                format!("`{key}` must be a duration string, found a number"),
                format!("durations are strings with a unit, e.g. {example}"),
            );
            return None;
        }
        let text = self.string(entry, example)?;
        match parse_duration(text.get_ref()) {
            Ok(duration) if duration.is_zero() => {
                self.at(
                    text.span(),
                    format!("`{key}` must be longer than zero"),
                    format!("e.g. {example}"),
                );
                None
            }
            Ok(duration) if duration > MAX_DURATION => {
                self.at(
                    text.span(),
                    format!("`{key}` is longer than 366 days"),
                    "use at most \"366d\"; for yearly jobs use schedule = \"@yearly\"",
                );
                None
            }
            Ok(duration) if duration.subsec_nanos() != 0 => {
                // Runs store their retry delays and intervals in whole seconds.
                self.at(
                    text.span(),
                    format!("`{key}` must be a whole number of seconds"),
                    format!("e.g. {example}"),
                );
                None
            }
            Ok(duration) => Some(Spanned::new(text.span(), duration)),
            Err(message) => {
                self.at(text.span(), message, DURATION_HINT);
                None
            }
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// A key of `table`, with its own span.
fn lookup<'t, 'i>(table: &'t toml::de::DeTable<'i>, key: &str) -> Option<Entry<'t, 'i>> {
    table.iter().find(|(k, _)| k.get_ref() == key)
}

/// The closest of `candidates` to `word`, if close enough to be a plausible typo or a
/// shortening (every `_`-separated word of `word` appears in the candidate).
fn did_you_mean<'c>(word: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let lower = word.to_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let close = candidates
        .iter()
        .map(|candidate| {
            (
                strsim_distance(&lower, &candidate.to_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate);
    close.or_else(|| {
        let words: Vec<&str> = lower.split('_').filter(|w| !w.is_empty()).collect();
        (words.len() > 1)
            .then(|| {
                candidates.iter().copied().find(|candidate| {
                    let theirs: Vec<&str> = candidate.split('_').collect();
                    words.iter().all(|w| theirs.contains(w))
                })
            })
            .flatten()
    })
}

/// Parses and validates one job file's text.
pub fn parse_job(
    path: &Path,
    source: &str,
    context: &ValidationContext,
) -> Result<JobSpec, Vec<Diagnostic>> {
    parse_job_named(path, source, context).1
}

/// Like [`parse_job`], also returning the job's name and its span whenever the name itself is
/// valid, so duplicates are found even among files with other problems.
fn parse_job_named(
    path: &Path,
    source: &str,
    context: &ValidationContext,
) -> (ValidName, Result<JobSpec, Vec<Diagnostic>>) {
    let mut check = Checker {
        path,
        source,
        problems: Vec::new(),
    };
    let (document, errors) = toml::de::DeTable::parse_recoverable(source);
    if !errors.is_empty() {
        // A partly recovered document would add misleading "missing field" errors.
        for error in &errors {
            check.problems.push(
                Diagnostic::at(path, source, error.span(), syntax_message(error, source)).hint(
                    "the file is not valid TOML (https://toml.io): strings need double quotes, e.g. schedule = \"@hourly\", and each key appears once",
                ),
            );
        }
        return (None, Err(sorted(check.problems)));
    }
    let table = document.get_ref();
    if table.is_empty() {
        check.whole(
            "the job file is empty",
            "a job needs at least: name = \"…\", kind = \"credential_check\", credential = \"…\" and schedule = \"@hourly\" (or every = \"5m\")",
        );
        return (None, Err(check.problems));
    }

    let mut entries: Vec<Entry<'_, '_>> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for (key, _) in &entries {
        let key_name: &str = key.get_ref();
        if !JOB_FIELDS.contains(&key_name) {
            let hint = match did_you_mean(key_name, JOB_FIELDS.iter().copied()) {
                Some(close) => format!(
                    "did you mean `{close}`? the job fields are {}",
                    JOB_FIELDS.join(", ")
                ),
                None => format!(
                    "the job fields are {}; a kind's own settings go under [settings]",
                    JOB_FIELDS.join(", ")
                ),
            };
            check.at(key.span(), format!("unknown field `{key_name}`"), hint);
        }
    }

    let name_value = check.string(lookup(table, "name"), "name = \"audit-log-hourly\"");
    let mut valid_name = None;
    match &name_value {
        None if lookup(table, "name").is_none() => check.whole(
            "missing required field `name`",
            "add a unique name, e.g. name = \"audit-log-hourly\"",
        ),
        None => {}
        Some(name) => {
            let text = name.get_ref().trim();
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                check.at(
                    name.span(),
                    format!("invalid job name {:?}", name.get_ref()),
                    "use letters, digits, '-', '_' or '.', e.g. name = \"audit-log-hourly\"",
                );
            } else {
                valid_name = Some((text.to_string(), name.span()));
            }
        }
    }

    let kind = check_kind(&mut check, table, context);

    let timezone_value = check.string(lookup(table, "timezone"), "timezone = \"Europe/Berlin\"");
    let timezone = match &timezone_value {
        None => lookup(table, "timezone").is_none().then_some(Tz::UTC),
        Some(zone) => match zone.get_ref().parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
                let hint = match did_you_mean(zone.get_ref(), names) {
                    Some(close) => format!("did you mean {close:?}? zone names are IANA names and case-sensitive"),
                    None => "use an IANA zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\"".to_string(),
                };
                check.at(
                    zone.span(),
                    format!("unknown time zone {:?}", zone.get_ref()),
                    hint,
                );
                None
            }
        },
    };

    let schedule_value = check.string(lookup(table, "schedule"), "schedule = \"0 * * * *\"");
    let every_entry = lookup(table, "every");
    let schedule = match (lookup(table, "schedule"), every_entry) {
        (Some(_), Some((every_key, _))) => {
            check.at(
                every_key.span(),
                "both `schedule` and `every` are set",
                "keep one: a cron expression in `schedule`, or an interval in `every`",
            );
            None
        }
        (None, None) => {
            check.whole(
                "the job has no `schedule` or `every`",
                "add schedule = \"*/5 * * * *\" (cron, 5 fields) or every = \"5m\"",
            );
            None
        }
        (Some(_), None) => {
            schedule_value.and_then(|expression| match check_cron(expression.get_ref()) {
                Ok(cron) => Some(Schedule::Cron {
                    expression: expression.get_ref().trim().to_string(),
                    cron: Box::new(cron),
                }),
                Err((message, hint)) => {
                    check.at(expression.span(), message, hint);
                    None
                }
            })
        }
        (None, Some(_)) => check
            .duration(every_entry, "every = \"5m\"")
            .map(|every| Schedule::Every(*every.get_ref())),
    };
    if let (Some(Schedule::Every(_)), Some(zone), Some(tz)) = (&schedule, &timezone_value, timezone)
        && !always_utc(tz)
    {
        check.at(
            zone.span(),
            "`timezone` has no effect with `every`",
            "`every` intervals are aligned to the Unix epoch in UTC; use a cron `schedule` to fire at local times, or remove `timezone`",
        );
    }

    let credential_value = check.string(
        lookup(table, "credential"),
        "credential = \"service-account\"",
    );
    let credential = match &credential_value {
        None if lookup(table, "credential").is_none() => {
            check.whole(
                "missing required field `credential`",
                "name the credential the job uses, e.g. credential = \"service-account\"",
            );
            None
        }
        None => None,
        Some(value) => {
            let name = value.get_ref().trim().to_string();
            if context.credentials.contains(&name) {
                Some(name)
            } else {
                let known: Vec<&str> = context.credentials.iter().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    "no credentials are configured; add one with `asana-worker creds add NAME` or under [credentials.NAME] in config.toml".to_string()
                } else if let Some(close) = did_you_mean(&name, known.iter().copied()) {
                    format!(
                        "did you mean {close:?}? known credentials: {}",
                        known.join(", ")
                    )
                } else {
                    format!("known credentials: {}", known.join(", "))
                };
                check.at(value.span(), format!("unknown credential {name:?}"), hint);
                None
            }
        }
    };

    let misfire_max = check.integer(lookup(table, "misfire_max"), "misfire_max = 100");
    if let Some(max) = &misfire_max
        && *max.get_ref() == 0
    {
        check.at(
            max.span(),
            "`misfire_max` must be at least 1",
            "it caps the catch-up runs of misfire = \"all\", e.g. misfire_max = 10",
        );
    }
    let misfire_value = check.string(lookup(table, "misfire"), "misfire = \"once\"");
    let misfire = match (&misfire_value, lookup(table, "misfire")) {
        (None, None) => Some(MisfirePolicy::Once),
        (None, Some(_)) => None,
        (Some(value), _) => match *value.get_ref() {
            "once" => Some(MisfirePolicy::Once),
            "skip" => Some(MisfirePolicy::Skip),
            "all" => Some(MisfirePolicy::All {
                max: misfire_max
                    .as_ref()
                    .map_or(DEFAULT_MISFIRE_MAX, |m| *m.get_ref()),
            }),
            other => {
                check.at(
                    value.span(),
                    format!("unknown misfire policy {other:?}"),
                    enum_hint(other, &["skip", "once", "all"]),
                );
                None
            }
        },
    };
    if let (Some(max), Some(MisfirePolicy::Skip | MisfirePolicy::Once)) = (&misfire_max, misfire) {
        check.at(
            max.span(),
            "`misfire_max` only applies to misfire = \"all\"",
            "remove it or set misfire = \"all\"",
        );
    }

    let overlap_value = check.string(lookup(table, "overlap"), "overlap = \"skip\"");
    let overlap = match (&overlap_value, lookup(table, "overlap")) {
        (None, None) => Some(OverlapPolicy::Skip),
        (None, Some(_)) => None,
        (Some(value), _) => match *value.get_ref() {
            "skip" => Some(OverlapPolicy::Skip),
            "queue" => Some(OverlapPolicy::Queue),
            other => {
                check.at(
                    value.span(),
                    format!("unknown overlap policy {other:?}"),
                    enum_hint(other, &["skip", "queue"]),
                );
                None
            }
        },
    };

    let max_attempts = match check.integer(lookup(table, "max_attempts"), "max_attempts = 5") {
        Some(attempts) if *attempts.get_ref() == 0 => {
            check.at(
                attempts.span(),
                "`max_attempts` must be at least 1",
                "1 means no retries, e.g. max_attempts = 5",
            );
            None
        }
        Some(attempts) => Some(*attempts.get_ref()),
        None => lookup(table, "max_attempts")
            .is_none()
            .then_some(DEFAULT_MAX_ATTEMPTS),
    };
    let retry_initial = check.duration(lookup(table, "retry_initial"), "retry_initial = \"10s\"");
    let retry_max = check.duration(lookup(table, "retry_max"), "retry_max = \"10m\"");
    let timeout = check.duration(lookup(table, "timeout"), "timeout = \"30m\"");
    let or_default = |value: &Option<Spanned<Duration>>, key: &str, default: Duration| match value {
        Some(value) => Some(*value.get_ref()),
        None => lookup(table, key).is_none().then_some(default),
    };
    let retry_initial_value = or_default(&retry_initial, "retry_initial", DEFAULT_RETRY_INITIAL);
    let retry_max_value = or_default(&retry_max, "retry_max", DEFAULT_RETRY_MAX);
    let timeout_value = or_default(&timeout, "timeout", DEFAULT_TIMEOUT);
    if let (Some(initial), Some(max)) = (retry_initial_value, retry_max_value)
        && initial > max
    {
        let span = match (&retry_initial, &retry_max) {
            (Some(value), _) | (None, Some(value)) => value.span(),
            (None, None) => 0..0,
        };
        check.at(
            span,
            format!(
                "`retry_initial` ({}) is longer than `retry_max` ({})",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ),
            "retry delays grow from retry_initial up to retry_max; make retry_initial the shorter (defaults: 10s and 10m)",
        );
    }
    let enabled = match check.boolean(lookup(table, "enabled"), "enabled = false") {
        Some(flag) => Some(flag),
        None => lookup(table, "enabled").is_none().then_some(true),
    };

    let problems = sorted(check.problems);
    let spec = match (
        valid_name.clone(),
        kind,
        schedule,
        timezone,
        credential,
        misfire,
        overlap,
        max_attempts,
        retry_initial_value,
        retry_max_value,
        timeout_value,
        enabled,
    ) {
        (
            Some((name, _)),
            Some(kind),
            Some(schedule),
            Some(timezone),
            Some(credential),
            Some(misfire),
            Some(overlap),
            Some(max_attempts),
            Some(retry_initial),
            Some(retry_max),
            Some(timeout),
            Some(enabled),
        ) if problems.is_empty() => Ok(JobSpec {
            name,
            kind,
            schedule,
            timezone,
            credential,
            misfire,
            overlap,
            max_attempts,
            retry_initial,
            retry_max,
            timeout,
            enabled,
            source: path.to_path_buf(),
        }),
        _ => Err(problems),
    };
    (valid_name, spec)
}

/// Whether a zone is UTC under another name ("Etc/UTC", "GMT", …): harmless with `every`.
fn always_utc(tz: Tz) -> bool {
    use chrono::Offset;
    [(2026, 1), (2026, 7)].iter().all(|&(year, month)| {
        Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
            .single()
            .is_some_and(|t| t.with_timezone(&tz).offset().fix().local_minus_utc() == 0)
    })
}

/// Problems of one file in the order of their place in it; problems of the whole file first.
fn sorted(mut problems: Vec<Diagnostic>) -> Vec<Diagnostic> {
    problems.sort_by_key(|d| (d.line, d.column));
    problems
}

fn enum_hint(value: &str, allowed: &[&str]) -> String {
    let list = allowed
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    match did_you_mean(value, allowed.iter().copied()) {
        Some(close) => format!("did you mean {close:?}? use one of {list}"),
        None => format!("use one of {list}"),
    }
}

fn syntax_message(error: &toml::de::Error, source: &str) -> String {
    let message = error.message().trim();
    let message = message.strip_suffix('.').unwrap_or(message);
    // Name the key of a "duplicate key" error: the span covers it.
    let key = error
        .span()
        .and_then(|span| source.get(span))
        .filter(|text| {
            message.contains("key") && !text.is_empty() && text.len() <= 64 && !text.contains('\n')
        });
    match key {
        Some(key) => format!("invalid TOML: {message} `{key}`"),
        None => format!("invalid TOML: {message}"),
    }
}

/// The kind and its settings; problems go to `check`.
fn check_kind(
    check: &mut Checker<'_>,
    table: &toml::de::DeTable<'_>,
    context: &ValidationContext,
) -> Option<JobKind> {
    let settings_entry = lookup(table, "settings");
    let settings = match settings_entry {
        Some((_, value)) if !value.get_ref().is_table() => {
            check.wrong_type(
                "settings",
                value,
                "a table",
                "[settings] on its own line, followed by the kind's settings",
            );
            return None;
        }
        other => other.map(|(_, value)| value),
    };
    let kind_entry = lookup(table, "kind");
    let Some(kind) = check.string(kind_entry, "kind = \"credential_check\"") else {
        if kind_entry.is_none() {
            check.whole(
                "missing required field `kind`",
                format!("add the kind of job, one of: {}", JobKind::NAMES.join(", ")),
            );
        }
        return None;
    };
    let Some(infos) = JobKind::settings_info(kind.get_ref()) else {
        let hint = match did_you_mean(kind.get_ref(), JobKind::NAMES.iter().copied()) {
            Some(close) => format!(
                "did you mean {close:?}? known kinds: {}",
                JobKind::NAMES.join(", ")
            ),
            None => format!("known kinds: {}", JobKind::NAMES.join(", ")),
        };
        check.at(
            kind.span(),
            format!("unknown job kind {:?}", kind.get_ref()),
            hint,
        );
        return None;
    };
    let before = check.problems.len();
    if let Some(toml::de::DeValue::Table(settings_table)) = settings.map(|s| s.get_ref()) {
        check_settings(check, kind.get_ref(), infos, settings_table, context);
    }
    if check.problems.len() > before {
        return None;
    }
    let empty = Spanned::new(0..0, toml::de::DeValue::Table(toml::de::DeTable::new()));
    let value = settings.cloned().unwrap_or(empty);
    let deserializer = toml::de::ValueDeserializer::from(value);
    let result = match *kind.get_ref() {
        "credential_check" => {
            CredentialCheckSettings::deserialize(deserializer).map(JobKind::CredentialCheck)
        }
        "org_export" => crate::jobs::org_export::OrgExportSettings::deserialize(deserializer)
            .map(JobKind::OrgExport),
        "graph_export" => crate::jobs::graph_export::GraphExportSettings::deserialize(deserializer)
            .map(JobKind::GraphExport),
        "resource_export" => {
            crate::jobs::resource_export::ResourceExportSettings::deserialize(deserializer)
                .map(JobKind::ResourceExport)
        }
        "audit_log" => AuditLogSettings::deserialize(deserializer)
            .map(|settings| JobKind::AuditLog(Box::new(settings))),
        other => {
            check.at(
                kind.span(),
                format!("job kind {other:?} has no settings reader"),
                "this is a bug in asana-worker",
            );
            return None;
        }
    };
    match result {
        Ok(kind) => Some(kind),
        Err(error) => {
            // The declarations in settings_info and the struct disagree; still point at the place.
            let message = error.message().trim().to_string();
            check.problems.push(
                Diagnostic::at(check.path, check.source, error.span(), message)
                    .hint(settings_hint(kind.get_ref(), infos)),
            );
            None
        }
    }
}

fn settings_hint(kind: &str, infos: &[SettingInfo]) -> String {
    if infos.is_empty() {
        return format!("{kind} takes no settings; remove [settings]");
    }
    let list = infos
        .iter()
        .map(|info| {
            format!(
                "{} ({}, default {})",
                info.name,
                info.ty.describe(),
                info.default
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{kind} accepts: {list}")
}

/// Checks a `[settings]` table against a kind's declared settings: every unknown key and every
/// wrong value is reported, each at its own place inside the table.
fn check_settings(
    check: &mut Checker<'_>,
    kind: &str,
    infos: &[SettingInfo],
    settings: &toml::de::DeTable<'_>,
    context: &ValidationContext,
) {
    let mut entries: Vec<Entry<'_, '_>> = settings.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    for entry in entries {
        let (key, value) = entry;
        let Some(info) = infos
            .iter()
            .find(|info| info.name == key.get_ref().as_ref())
        else {
            let hint = match did_you_mean(key.get_ref(), infos.iter().map(|info| info.name)) {
                Some(close) => format!("did you mean `{close}`? {}", settings_hint(kind, infos)),
                None => settings_hint(kind, infos),
            };
            check.at(
                key.span(),
                format!("unknown setting `{}` for kind {kind:?}", key.get_ref()),
                hint,
            );
            continue;
        };
        let example = match info.ty {
            SettingType::Bool => format!("{} = true", info.name),
            SettingType::Integer => format!("{} = 10", info.name),
            SettingType::String => format!("{} = \"…\"", info.name),
            SettingType::Duration => format!("{} = \"30s\"", info.name),
            SettingType::OutputDir => format!("{} = \"/var/lib/asana-worker/out\"", info.name),
            SettingType::StringList => format!("{} = [\"…\", \"…\"]", info.name),
            SettingType::Sink => format!(
                "[settings.{}] with type = \"{}\"",
                info.name,
                crate::sinks::SINK_TYPES.join("\" | \"")
            ),
        };
        match info.ty {
            SettingType::Bool => {
                check.boolean(Some(entry), &example);
            }
            SettingType::Integer => {
                check.integer(Some(entry), &example);
            }
            SettingType::String => {
                check.string(Some(entry), &example);
            }
            SettingType::Duration => {
                check.duration(Some(entry), &example);
            }
            SettingType::OutputDir => {
                if let Some(dir) = check.string(Some(entry), &example)
                    && let Err(message) = context.check_writable_dir(Path::new(dir.get_ref()))
                {
                    check.at(
                        value.span(),
                        format!("`{}`: {message}", info.name),
                        "point it at a directory the daemon's user can write, or create it with the right owner",
                    );
                }
            }
            SettingType::StringList => match value.get_ref() {
                toml::de::DeValue::Array(items) => {
                    for item in items {
                        if !matches!(item.get_ref(), toml::de::DeValue::String(_)) {
                            check.at(
                                item.span(),
                                format!(
                                    "`{}` must hold only strings, found {}",
                                    info.name,
                                    article(item.get_ref().type_str())
                                ),
                                format!("e.g. {example}"),
                            );
                        }
                    }
                }
                _ => check.wrong_type(key.get_ref(), value, "an array of strings", &example),
            },
            SettingType::Sink => check_sink(check, info.name, value, &example, context),
        }
    }
    let missing: Vec<&str> = infos
        .iter()
        .filter(|info| info.default == REQUIRED)
        .filter(|info| {
            !settings
                .iter()
                .any(|(key, _)| key.get_ref().as_ref() == info.name)
        })
        .map(|info| info.name)
        .collect();
    for name in missing {
        let doc = infos
            .iter()
            .find(|info| info.name == name)
            .map(|info| info.doc)
            .unwrap_or_default();
        check.whole(
            format!("missing required setting `{name}` for kind {kind:?}"),
            format!("add `{name}` under [settings]: {doc}"),
        );
    }
}

/// Checks a nested sink table: its `type` names a sink and every other key is one that sink
/// declares in [`crate::sinks::settings_info`].
fn check_sink(
    check: &mut Checker<'_>,
    name: &str,
    value: &Spanned<toml::de::DeValue<'_>>,
    example: &str,
    context: &ValidationContext,
) {
    let toml::de::DeValue::Table(table) = value.get_ref() else {
        check.wrong_type(name, value, "a table", example);
        return;
    };
    let type_entry = lookup(table, "type");
    let Some(sink_type) = check.string(type_entry, example) else {
        if type_entry.is_none() {
            check.at(
                value.span(),
                format!("the sink `{name}` has no `type`"),
                format!(
                    "add type = one of {:?} under [settings.{name}]",
                    crate::sinks::SINK_TYPES
                ),
            );
        }
        return;
    };
    let Some(infos) = crate::sinks::settings_info(sink_type.get_ref()) else {
        let hint = match did_you_mean(
            sink_type.get_ref(),
            crate::sinks::SINK_TYPES.iter().copied(),
        ) {
            Some(close) => format!(
                "did you mean {close:?}? sink types: {:?}",
                crate::sinks::SINK_TYPES
            ),
            None => format!("sink types: {:?}", crate::sinks::SINK_TYPES),
        };
        check.at(
            sink_type.span(),
            format!("unknown sink type {:?}", sink_type.get_ref()),
            hint,
        );
        return;
    };
    let mut rest = table.clone();
    rest.remove("type");
    let label = format!("{} sink", sink_type.get_ref());
    check_settings(check, &label, infos, &rest, context);
}

/// Levenshtein distance, for "did you mean" hints.
fn strsim_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b_chars.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b_chars.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b_chars.len()]
}

/// Parses a 5-field cron expression or alias (no seconds, no year), and rejects one that never
/// fires (such as February 30th).
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    check_cron(expression).map_err(|(message, _)| message)
}

/// Cron aliases croner accepts (case-insensitive).
const CRON_ALIASES: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];
/// The five fields, with their ranges, to say which one is wrong.
const CRON_FIELDS: &[(&str, &str)] = &[
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
];

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// A cron expression, or what is wrong with it and a hint.
fn check_cron(expression: &str) -> Result<Cron, (String, String)> {
    let trimmed = expression.trim();
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if trimmed.is_empty() {
        return Err(("the cron expression is empty".into(), CRON_HINT.into()));
    }
    if trimmed.starts_with('@') {
        if !CRON_ALIASES
            .iter()
            .any(|alias| alias.eq_ignore_ascii_case(trimmed))
        {
            let hint = match did_you_mean(trimmed, CRON_ALIASES.iter().copied()) {
                Some(close) => format!(
                    "did you mean {close:?}? aliases: {}",
                    CRON_ALIASES.join(" ")
                ),
                None => format!(
                    "aliases: {}; for other intervals use every = \"5m\" or 5 cron fields",
                    CRON_ALIASES.join(" ")
                ),
            };
            return Err((format!("unknown cron alias {trimmed:?}"), hint));
        }
    } else if fields.len() != 5 {
        let hint = if fields.len() == 6 {
            "asana-worker has no seconds field (nor a year): drop the first (or last) field and use minute hour day-of-month month day-of-week".to_string()
        } else {
            CRON_HINT.to_string()
        };
        return Err((
            format!(
                "cron expression {expression:?} has {} fields, 5 expected",
                fields.len()
            ),
            hint,
        ));
    }
    let cron = cron_parser().parse(trimmed).map_err(|error| {
        let detail = match &error {
            croner::errors::CronError::InvalidPattern(message)
            | croner::errors::CronError::IllegalCharacters(message)
            | croner::errors::CronError::ComponentError(message) => message.clone(),
            other => other.to_string(),
        };
        let detail = detail.trim().trim_end_matches('.');
        // Name the field: the first one whose replacement by `*` makes the expression parse.
        let culprit = (0..fields.len().min(CRON_FIELDS.len())).find(|&i| {
            let mut patched = fields.clone();
            patched[i] = "*";
            cron_parser().parse(&patched.join(" ")).is_ok()
        });
        match culprit {
            Some(i) => (
                format!(
                    "invalid cron expression {expression:?}: {} field {:?}: {detail}",
                    CRON_FIELDS[i].0, fields[i]
                ),
                format!(
                    "{} takes {}, lists (1,5), ranges (1-5) and steps (*/15)",
                    CRON_FIELDS[i].0, CRON_FIELDS[i].1
                ),
            ),
            None => (
                format!("invalid cron expression {expression:?}: {detail}"),
                CRON_HINT.to_string(),
            ),
        }
    })?;
    let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    if let Some(reference) = reference
        && cron.find_next_occurrence(&reference, false).is_err()
    {
        return Err((
            format!("cron expression {expression:?} never fires"),
            "its day-of-month and month never meet (such as February 30th); check the date fields"
                .into(),
        ));
    }
    Ok(cron)
}

/// Parses a duration such as `30s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration {text:?}: {error}"))
}

/// Reads one job file: regular file, UTF-8. A byte that is not UTF-8 is located.
fn read_job_file(path: &Path) -> Result<String, Diagnostic> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            return Err(Diagnostic::file(path, "is a directory, not a job file").hint(
                "job files are regular files named NAME.toml; rename or move this directory out of the jobs directory",
            ));
        }
        Ok(_) => {}
        Err(error) => {
            return Err(
                Diagnostic::file(path, format!("cannot read job file: {error}"))
                    .hint("check that it exists and the daemon's user may read it"),
            );
        }
    }
    let bytes = std::fs::read(path).map_err(|error| {
        Diagnostic::file(path, format!("cannot read job file: {error}"))
            .hint("check that it exists and the daemon's user may read it")
    })?;
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let bytes = error.as_bytes();
        let prefix = String::from_utf8_lossy(&bytes[..valid]);
        let byte = bytes.get(valid).copied().unwrap_or_default();
        Diagnostic::at(
            path,
            &prefix,
            Some(valid..valid),
            format!("the file is not valid UTF-8 (byte 0x{byte:02x})"),
        )
        .hint("job files are UTF-8 text; re-save the file as UTF-8")
    })
}

/// Reads and validates one job file (for checking a single file, e.g. before copying it into
/// the jobs directory).
pub fn load_file(path: &Path, context: &ValidationContext) -> Result<JobSpec, Vec<Diagnostic>> {
    let source = read_job_file(path).map_err(|problem| vec![problem])?;
    parse_job(path, &source, context)
}

/// Loads every `*.toml` in `dir` (sorted by file name; names starting with `.`, such as editor
/// lock files, are skipped). All problems of all files are returned together, in file order;
/// names must be unique across files. A `*.toml` that is not a regular file is a problem.
pub fn load_dir(dir: &Path, context: &ValidationContext) -> Result<Vec<JobSpec>, Diagnostics> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            return Err(Diagnostics(vec![Diagnostic::file(dir, format!("cannot read the jobs directory: {error}"))
                .hint("set jobs.dir in config.toml or ASANA_WORKER__JOBS__DIR to a readable directory")]));
        }
    };
    let mut problems = Vec::new();
    let mut paths = Vec::new();
    for entry in entries {
        match entry {
            Ok(entry) => {
                let path = entry.path();
                let hidden = entry.file_name().to_string_lossy().starts_with('.');
                if !hidden && path.extension().is_some_and(|ext| ext == "toml") {
                    paths.push(path);
                }
            }
            Err(error) => problems.push(
                Diagnostic::file(dir, format!("cannot list the jobs directory: {error}"))
                    .hint("check the directory's permissions"),
            ),
        }
    }
    paths.sort();
    let mut jobs = Vec::new();
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        let source = match read_job_file(&path) {
            Ok(source) => source,
            Err(problem) => {
                problems.push(problem);
                continue;
            }
        };
        let (name, result) = parse_job_named(&path, &source, context);
        let mut found = match result {
            Ok(job) => {
                jobs.push(job);
                Vec::new()
            }
            Err(found) => found,
        };
        if let Some((name, span)) = name {
            if let Some(first) = names.get(&name) {
                found.push(
                    Diagnostic::at(
                        &path,
                        &source,
                        Some(span),
                        format!("duplicate job name {name:?}"),
                    )
                    .hint(format!(
                        "it is already defined in {}; job names must be unique",
                        first.display()
                    )),
                );
                jobs.retain(|job| job.source != path);
            } else {
                names.insert(name, path.clone());
            }
        }
        problems.extend(sorted(found));
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(Diagnostics(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> ValidationContext {
        ValidationContext {
            credentials: ["sa".to_string()].into_iter().collect(),
        }
    }

    fn parse(source: &str) -> Result<JobSpec, Vec<Diagnostic>> {
        parse_job(Path::new("jobs/t.toml"), source, &context())
    }

    fn audit_job(settings: &str) -> String {
        format!(
            "name = \"audit\"\nkind = \"audit_log\"\nevery = \"1m\"\ncredential = \"sa\"\n\n[settings]\n{settings}"
        )
    }

    #[test]
    fn an_audit_log_job_reads_its_string_list_and_nested_file_sink() {
        let out = tempfile::tempdir().unwrap();
        let source = audit_job(&format!(
            "workspace = \"123\"\nevent_type = [\"user_login_succeeded\", \"task_deleted\"]\nstart = \"30d\"\n\n[settings.sink]\ntype = \"file\"\ndir = {:?}\ngzip = true\nrotate_every = \"15m\"\n",
            out.path().display().to_string()
        ));
        let job = parse(&source).unwrap();
        let JobKind::AuditLog(settings) = &job.kind else {
            panic!("an audit_log job: {job:?}");
        };
        assert_eq!(settings.workspace, "123");
        assert_eq!(
            settings.event_type,
            ["user_login_succeeded", "task_deleted"]
        );
        assert_eq!(settings.start, Duration::from_secs(30 * 86400));
        assert_eq!(settings.overlap, Duration::from_secs(300), "default");
        assert_eq!(settings.backfill_slices, 8, "default");
        let crate::sinks::SinkSettings::File(file) = &settings.sink else {
            panic!("a file sink");
        };
        assert_eq!(file.dir, out.path());
        assert!(file.gzip);
        assert_eq!(file.rotate_every, Duration::from_secs(900));
        assert_eq!(file.rotate_bytes, 64 * 1024 * 1024, "default");
    }

    #[test]
    fn audit_log_setting_errors_are_reported_at_their_place() {
        let out = tempfile::tempdir().unwrap();
        // Line 7: event_type with a number; the sink table from line 9 with an unknown type
        // key, a wrong-typed gzip and a misspelt key.
        let source = audit_job(&format!(
            "event_type = [\"a\", 3]\n\n[settings.sink]\ntype = \"file\"\ndir = {:?}\ngzip = \"yes\"\nrotate_bites = 10\n",
            out.path().display().to_string()
        ));
        let text: Vec<String> = parse(&source)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text.len(), 4, "{text:#?}");
        assert!(
            text[0].starts_with(
                "jobs/t.toml: missing required setting `workspace` for kind \"audit_log\""
            ),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with(
                "jobs/t.toml:7:20: `event_type` must hold only strings, found an integer"
            ),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("jobs/t.toml:12:8: `gzip` must be true or false, found a string"),
            "{text:#?}"
        );
        assert!(
            text[3].starts_with(
                "jobs/t.toml:13:1: unknown setting `rotate_bites` for kind \"file sink\""
            ),
            "{text:#?}"
        );
        assert!(
            text[3].contains("did you mean `rotate_bytes`?"),
            "{text:#?}"
        );

        // A sink of an unknown type, and a sink without `type`.
        let source = audit_job("workspace = \"1\"\n\n[settings.sink]\ntype = \"fiel\"\n");
        let errors = parse(&source).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with("jobs/t.toml:10:8: unknown sink type \"fiel\""),
            "{}",
            errors[0]
        );
        assert!(errors[0].to_string().contains("did you mean \"file\"?"));
        let source = audit_job("workspace = \"1\"\nsink = { dir = \"x\" }\n");
        let errors = parse(&source).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .to_string()
                .starts_with("jobs/t.toml:8:8: the sink `sink` has no `type`"),
            "{}",
            errors[0]
        );
        // A missing sink is named.
        let errors = parse(&audit_job("workspace = \"1\"\n")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0]
                .to_string()
                .contains("missing required setting `sink` for kind \"audit_log\""),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_complete_job_parses_with_defaults() {
        let job = parse("name = \"a\"\nkind = \"credential_check\"\nschedule = \"@hourly\"\ncredential = \"sa\"\n").unwrap();
        assert_eq!(job.timezone, Tz::UTC);
        assert_eq!(job.misfire, MisfirePolicy::Once);
        assert_eq!(job.overlap, OverlapPolicy::Skip);
        assert_eq!(job.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 30, 0).unwrap();
        assert_eq!(
            job.next_fire_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap())
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let job = parse(
            "name = \"a\"\nkind = \"credential_check\"\nevery = \"5m\"\ncredential = \"sa\"\n",
        )
        .unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 10, 31, 7).unwrap();
        assert_eq!(
            job.next_fire_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 35, 0).unwrap())
        );
        let on = Utc.with_ymd_and_hms(2026, 1, 1, 10, 35, 0).unwrap();
        assert_eq!(
            job.next_fire_after(on),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 10, 40, 0).unwrap())
        );
    }

    #[test]
    fn several_problems_are_reported_together_with_places() {
        let errors = parse("name = \"a\"\nkind = \"credential_check\"\nschedule = \"61 * * * *\"\ntimezone = \"Mars/Olympus\"\ncredential = \"nobody\"\n").unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        // In the order of their place in the file.
        assert!(
            text[0].starts_with("jobs/t.toml:3:12: invalid cron expression"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("jobs/t.toml:4:12: unknown time zone"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("jobs/t.toml:5:14: unknown credential \"nobody\""),
            "{text:#?}"
        );
        assert!(text[2].contains("known credentials: sa"));
    }

    #[test]
    fn writable_dirs_pass_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let context = context();
        context.check_writable_dir(dir.path()).unwrap();
        // Not there yet, but its parent is writable: it can be created at the first run.
        let nested = dir.path().join("out/daily");
        context.check_writable_dir(&nested).unwrap();
        assert!(!nested.exists(), "the check must not create the directory");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_the_way_is_not_a_writable_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("report.csv");
        std::fs::write(&file, "x").unwrap();
        let error = check_writable_dir(&file).unwrap_err();
        assert!(error.contains("is not a directory"), "{error}");
        let below = file.join("sub");
        let error = check_writable_dir(&below).unwrap_err();
        assert!(
            error.contains("report.csv") && error.contains("is not a directory"),
            "{error}"
        );
        assert!(check_writable_dir(Path::new("")).is_err());
    }

    #[test]
    #[cfg(unix)]
    fn a_read_only_dir_is_not_writable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        // root writes anywhere; only assert where permissions are enforced.
        let enforced = std::fs::write(locked.join("probe"), "x").is_err();
        let result = check_writable_dir(&locked.join("new"));
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
        if enforced {
            let error = result.unwrap_err();
            assert!(error.contains("cannot be created"), "{error}");
        } else {
            result.unwrap();
            assert_eq!(
                std::fs::read_dir(&locked).unwrap().count(),
                1,
                "only the probe written above"
            );
        }
    }

    /// Output paths of future kinds are checked where they are written in `[settings]`.
    #[test]
    fn output_dir_settings_are_checked_in_place() {
        const SETTINGS: &[SettingInfo] = &[
            SettingInfo {
                name: "output_dir",
                ty: SettingType::OutputDir,
                default: "\"exports\"",
                doc: "where files go",
            },
            SettingInfo {
                name: "page_size",
                ty: SettingType::Integer,
                default: "100",
                doc: "page size",
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("blocker");
        std::fs::write(&file, "x").unwrap();
        let source = format!(
            "[settings]\noutput_dir = {:?}\npage_size = \"big\"\npage_sise = 3\n",
            file.join("out").display().to_string()
        );
        let (document, errors) = toml::de::DeTable::parse_recoverable(&source);
        assert!(errors.is_empty());
        let Some(toml::de::DeValue::Table(settings)) =
            document.get_ref().get("settings").map(|v| v.get_ref())
        else {
            panic!("no settings table");
        };
        let mut check = Checker {
            path: Path::new("jobs/x.toml"),
            source: &source,
            problems: Vec::new(),
        };
        check_settings(&mut check, "future_export", SETTINGS, settings, &context());
        let text: Vec<String> = sorted(check.problems)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(text.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("jobs/x.toml:2:14: `output_dir`: "),
            "{text:#?}"
        );
        assert!(text[0].contains("is not a directory"), "{text:#?}");
        assert!(
            text[1].starts_with("jobs/x.toml:3:13: `page_size` must be an integer, found a string"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("jobs/x.toml:4:1: unknown setting `page_sise`"),
            "{text:#?}"
        );
        assert!(text[2].contains("did you mean `page_size`?"), "{text:#?}");
    }

    #[test]
    fn windows_line_endings_and_a_byte_order_mark_are_accepted() {
        let job = parse("\u{feff}name = \"a\"\r\nkind = \"credential_check\"\r\nevery = \"1h\"\r\ncredential = \"sa\"\r\n").unwrap();
        assert_eq!(job.name, "a");
        let errors = parse("name = \"a\"\r\nkind = \"credential_check\"\r\nevery = \"0s\"\r\ncredential = \"sa\"\r\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("jobs/t.toml:3:9: `every` must be longer than zero"),
            "{}",
            errors[0]
        );
    }

    /// Documented in docs/configuration.md: croner's default, as in Vixie cron, fires when
    /// either day-of-month or day-of-week matches if both are restricted.
    #[test]
    fn day_of_month_and_day_of_week_are_alternatives() {
        let job = parse("name = \"a\"\nkind = \"credential_check\"\nschedule = \"0 0 13 * FRI\"\ncredential = \"sa\"\n").unwrap();
        // Thursday 2026-01-01: the next Friday (the 2nd) comes before the 13th.
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let first = job.next_fire_after(t).unwrap();
        assert_eq!(first, Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap());
        // After Friday the 9th comes Tuesday the 13th.
        let t = Utc.with_ymd_and_hms(2026, 1, 9, 12, 0, 0).unwrap();
        assert_eq!(
            job.next_fire_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 13, 0, 0, 0).unwrap())
        );
        // croner's extensions: the last day of the month.
        let job = parse("name = \"a\"\nkind = \"credential_check\"\nschedule = \"0 0 L * *\"\ncredential = \"sa\"\n").unwrap();
        assert_eq!(
            job.next_fire_after(Utc.with_ymd_and_hms(2026, 2, 3, 0, 0, 0).unwrap()),
            Some(Utc.with_ymd_and_hms(2026, 2, 28, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn cron_is_evaluated_in_the_jobs_time_zone() {
        let job = parse("name = \"a\"\nkind = \"credential_check\"\nschedule = \"0 9 * * *\"\ntimezone = \"America/New_York\"\ncredential = \"sa\"\n").unwrap();
        // 09:00 in New York is 14:00 UTC in winter, 13:00 UTC in summer.
        let winter = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        assert_eq!(
            job.next_fire_after(winter),
            Some(Utc.with_ymd_and_hms(2026, 1, 5, 14, 0, 0).unwrap())
        );
        let summer = Utc.with_ymd_and_hms(2026, 7, 6, 0, 0, 0).unwrap();
        assert_eq!(
            job.next_fire_after(summer),
            Some(Utc.with_ymd_and_hms(2026, 7, 6, 13, 0, 0).unwrap())
        );
    }

    #[test]
    fn every_accepts_utc_under_any_name_but_not_a_local_zone() {
        for zone in ["UTC", "Etc/UTC", "GMT"] {
            parse(&format!("name = \"a\"\nkind = \"credential_check\"\nevery = \"1h\"\ntimezone = \"{zone}\"\ncredential = \"sa\"\n")).unwrap();
        }
        let errors = parse("name = \"a\"\nkind = \"credential_check\"\nevery = \"1h\"\ntimezone = \"Europe/London\"\ncredential = \"sa\"\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "`timezone` has no effect with `every`");
    }

    #[test]
    fn the_context_knows_the_configured_credentials() {
        let mut settings = crate::config::settings::Settings::default();
        settings.credentials.insert(
            "sa".into(),
            crate::config::settings::CredentialSettings {
                kind: crate::config::settings::CredentialKind::ServiceAccount,
                tier: Default::default(),
                token_file: None,
                token_env: Some("SA_TOKEN".into()),
                requests_per_minute: None,
            },
        );
        let context = ValidationContext::from_settings(&settings);
        let source =
            "name = \"a\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"sa\"\n";
        parse_job(Path::new("jobs/t.toml"), source, &context).unwrap();
        assert!(
            parse_job(
                Path::new("jobs/t.toml"),
                source,
                &ValidationContext::default()
            )
            .is_err()
        );
    }
}
