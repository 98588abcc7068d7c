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
//! at its own `line:col`. The fields every job has are checked here; a kind's `[settings]` are
//! checked against the schema of the kind's settings struct ([`settings`]), read into it, and
//! handed to the kind's own checks. The kinds themselves live above this layer, in
//! `crate::jobs`, which hands them to the reader as a [`KindCatalog`]. The complete reference
//! is `docs/configuration.md`.

mod checker;
pub mod context;
mod cron;
pub mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use toml::Spanned;

use super::diagnostics::{Diagnostic, Diagnostics};
use checker::{Checker, Entry, Span, did_you_mean, enum_hint, lookup, sorted};
pub use context::{ValidationContext, check_writable_dir};
use cron::check_cron;
pub use cron::parse_cron;
pub use settings::{SettingsCheck, SettingsValue};

/// A kind's name, for whoever holds a job without knowing its kinds (the scheduler, the
/// queue's `kind` column).
pub trait NamedKind {
    /// The name written in `kind = "…"`.
    fn name(&self) -> &'static str;
}

/// The job kinds a build knows, as the job-file reader needs them. Implemented by the kind
/// registry in `crate::jobs`; this layer sits below the kinds and cannot name them.
pub trait KindCatalog {
    /// A kind with its typed settings (the registry's enum).
    type Kind: NamedKind + std::fmt::Debug + Clone + PartialEq + Send + Sync + 'static;

    /// Names accepted in `kind = "…"`.
    fn names(&self) -> &'static [&'static str];

    /// The JSON schema of a kind's `[settings]` (derived from its settings struct), None for an
    /// unknown kind.
    fn schema(&self, kind: &str) -> Option<schemars::Schema>;

    /// Reads settings that passed the schema check into the kind's struct and runs the kind's
    /// own checks, reporting problems to `check`.
    fn read(
        &self,
        kind: &str,
        settings: &SettingsValue<'_>,
        check: &mut SettingsCheck<'_>,
    ) -> Option<Self::Kind>;

    /// Checks between the jobs of one directory (a digest naming the sync job whose mirror it
    /// reads): run once every file has been read, on the jobs that were valid on their own.
    fn check_set(&self, jobs: &[JobSpec<Self::Kind>]) -> Vec<Diagnostic> {
        let _ = jobs;
        Vec::new()
    }
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

/// A validated job definition. `K` is the kind with its typed settings: the registry's enum in
/// `crate::jobs` (this module sits below the kinds and cannot name them).
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec<K> {
    /// Unique name.
    pub name: String,
    /// Kind and its settings.
    pub kind: K,
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

impl<K> JobSpec<K> {
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

    /// `path` as named in the job's settings (see [`beside_job_file`]).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        beside_job_file(&self.source, path)
    }

    /// Stored with the schedule: when it changes, the next fire is recomputed.
    pub fn schedule_definition(&self) -> String {
        format!("{}@{}", self.schedule.definition(), self.timezone.name())
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

/// A job's name and its place, when the name is valid.
type ValidName = Option<(String, Span)>;

/// A path named in the settings of the job file `job_file`: a relative path is taken from the
/// file's directory, so a template can sit beside the job that uses it. What `validate` checks
/// and what a run opens are the same file.
pub fn beside_job_file(job_file: &Path, path: &Path) -> PathBuf {
    match job_file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

/// Parses and validates one job file's text.
pub fn parse_job<C: KindCatalog>(
    path: &Path,
    source: &str,
    context: &ValidationContext,
    catalog: &C,
) -> Result<JobSpec<C::Kind>, Vec<Diagnostic>> {
    parse_job_named(path, source, context, catalog).1
}

/// Like [`parse_job`], also returning the job's name and its span whenever the name itself is
/// valid, so duplicates are found even among files with other problems.
fn parse_job_named<C: KindCatalog>(
    path: &Path,
    source: &str,
    context: &ValidationContext,
    catalog: &C,
) -> (ValidName, Result<JobSpec<C::Kind>, Vec<Diagnostic>>) {
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

    let kind = check_kind(&mut check, table, context, catalog);

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
            if let Some(reason) = context.unavailable.get(&name) {
                check.at(
                    value.span(),
                    format!("credential {name:?} has no token: {reason}"),
                    format!(
                        "provide the token (see [credentials.{name}] in config.toml: token_file or token_env), or store one with `asana-worker creds add {name}`"
                    ),
                );
                None
            } else if context.credentials.contains(&name) {
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
                crate::config::values::format_duration(initial),
                crate::config::values::format_duration(max)
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
fn check_kind<C: KindCatalog>(
    check: &mut Checker<'_>,
    table: &toml::de::DeTable<'_>,
    context: &ValidationContext,
    catalog: &C,
) -> Option<C::Kind> {
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
    let names = catalog.names();
    let kind_entry = lookup(table, "kind");
    let Some(kind) = check.string(kind_entry, "kind = \"credential_check\"") else {
        if kind_entry.is_none() {
            check.whole(
                "missing required field `kind`",
                format!("add the kind of job, one of: {}", names.join(", ")),
            );
        }
        return None;
    };
    let Some(schema) = catalog.schema(kind.get_ref()) else {
        let hint = match did_you_mean(kind.get_ref(), names.iter().copied()) {
            Some(close) => format!("did you mean {close:?}? known kinds: {}", names.join(", ")),
            None => format!("known kinds: {}", names.join(", ")),
        };
        check.at(
            kind.span(),
            format!("unknown job kind {:?}", kind.get_ref()),
            hint,
        );
        return None;
    };
    let value = settings::check_against_schema(check, kind.get_ref(), settings, &schema)?;
    let mut reported = SettingsCheck::new(context).for_file(check.path);
    let read = catalog.read(kind.get_ref(), &value, &mut reported);
    let problems = reported.count();
    settings::locate_problems(check, settings, reported);
    read.filter(|_| problems == 0)
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
pub fn load_file<C: KindCatalog>(
    path: &Path,
    context: &ValidationContext,
    catalog: &C,
) -> Result<JobSpec<C::Kind>, Vec<Diagnostic>> {
    let source = read_job_file(path).map_err(|problem| vec![problem])?;
    parse_job(path, &source, context, catalog)
}

/// Loads every `*.toml` in `dir` (sorted by file name; names starting with `.`, such as editor
/// lock files, are skipped). All problems of all files are returned together, in file order;
/// names must be unique across files. A `*.toml` that is not a regular file is a problem.
pub fn load_dir<C: KindCatalog>(
    dir: &Path,
    context: &ValidationContext,
    catalog: &C,
) -> Result<Vec<JobSpec<C::Kind>>, Diagnostics> {
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
        let (name, result) = parse_job_named(&path, &source, context, catalog);
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
    problems.extend(catalog.check_set(&jobs));
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(Diagnostics(problems))
    }
}
