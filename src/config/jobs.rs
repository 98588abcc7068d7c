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
}

impl JobKind {
    /// Names accepted in `kind = "…"`.
    pub const NAMES: &'static [&'static str] = &["credential_check"];

    /// The kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::CredentialCheck(_) => "credential_check",
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    kind: Spanned<String>,
    schedule: Option<Spanned<String>>,
    every: Option<Spanned<String>>,
    timezone: Option<Spanned<String>>,
    credential: Spanned<String>,
    misfire: Option<Spanned<String>>,
    misfire_max: Option<Spanned<u32>>,
    overlap: Option<Spanned<String>>,
    max_attempts: Option<Spanned<u32>>,
    retry_initial: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    enabled: Option<bool>,
    settings: Option<Spanned<toml::Table>>,
}

/// Deserializes only `[settings]`, so errors inside it keep their place in the file.
#[derive(Debug, Deserialize)]
struct SettingsOnly<T> {
    #[serde(default = "Option::default")]
    settings: Option<T>,
}

/// Default attempts per run.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default cap of `misfire = "all"`.
pub const DEFAULT_MISFIRE_MAX: u32 = 100;

/// Parses and validates one job file's text.
pub fn parse_job(
    path: &Path,
    source: &str,
    context: &ValidationContext,
) -> Result<JobSpec, Vec<Diagnostic>> {
    let raw: RawJob =
        toml::from_str(source).map_err(|error| vec![toml_error(path, source, &error)])?;
    let mut problems = Vec::new();
    let at = |span: std::ops::Range<usize>, message: String| {
        Diagnostic::at(path, source, Some(span), message)
    };

    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        problems.push(
            at(
                raw.name.span(),
                format!("invalid job name {:?}", raw.name.get_ref()),
            )
            .hint("use letters, digits, '-', '_' or '.', e.g. name = \"audit-log-hourly\""),
        );
    }

    let kind = parse_kind(path, source, &raw.kind, &mut problems);

    let timezone = match &raw.timezone {
        None => Some(Tz::UTC),
        Some(zone) => match zone.get_ref().parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                problems.push(
                    at(zone.span(), format!("unknown time zone {:?}", zone.get_ref()))
                        .hint("use an IANA zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""),
                );
                None
            }
        },
    };

    let schedule = match (&raw.schedule, &raw.every) {
        (Some(_), Some(every)) => {
            problems.push(
                at(every.span(), "both `schedule` and `every` are set".into())
                    .hint("keep one: a cron expression in `schedule`, or an interval in `every`"),
            );
            None
        }
        (None, None) => {
            problems.push(
                Diagnostic::file(path, "the job has no `schedule` or `every`")
                    .hint("add schedule = \"*/5 * * * *\" (cron, 5 fields) or every = \"5m\""),
            );
            None
        }
        (Some(expression), None) => parse_cron(expression.get_ref())
            .map_err(|message| {
                problems.push(at(expression.span(), message).hint(
                    "use 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\", or an alias: @yearly @monthly @weekly @daily @hourly",
                ))
            })
            .ok()
            .map(|cron| Schedule::Cron {
                expression: expression.get_ref().trim().to_string(),
                cron: Box::new(cron),
            }),
        (None, Some(every)) => match parse_duration(every.get_ref()) {
            Ok(duration) if duration >= Duration::from_secs(1) => Some(Schedule::Every(duration)),
            Ok(_) => {
                problems.push(at(every.span(), "`every` must be at least 1s".into()).hint("e.g. every = \"30s\""));
                None
            }
            Err(message) => {
                problems.push(at(every.span(), message).hint("write a duration such as \"30s\", \"5m\", \"1h\""));
                None
            }
        },
    };

    let credential = raw.credential.get_ref().trim().to_string();
    if !context.credentials.contains(&credential) {
        let known: Vec<&str> = context.credentials.iter().map(String::as_str).collect();
        let hint = if known.is_empty() {
            "no credentials are configured; add one with `asana-worker creds add NAME` or under [credentials.NAME] in config.toml".to_string()
        } else {
            format!("known credentials: {}", known.join(", "))
        };
        problems.push(
            at(
                raw.credential.span(),
                format!("unknown credential {credential:?}"),
            )
            .hint(hint),
        );
    }

    let misfire_max = raw
        .misfire_max
        .as_ref()
        .map(|m| *m.get_ref())
        .unwrap_or(DEFAULT_MISFIRE_MAX);
    let misfire = match raw
        .misfire
        .as_ref()
        .map(|m| (m.get_ref().as_str(), m.span()))
    {
        None | Some(("once", _)) => Some(MisfirePolicy::Once),
        Some(("skip", _)) => Some(MisfirePolicy::Skip),
        Some(("all", _)) => Some(MisfirePolicy::All {
            max: misfire_max.max(1),
        }),
        Some((other, span)) => {
            problems.push(
                at(span, format!("unknown misfire policy {other:?}"))
                    .hint("use \"skip\", \"once\" or \"all\""),
            );
            None
        }
    };
    if let (Some(max), Some(MisfirePolicy::Skip | MisfirePolicy::Once)) =
        (&raw.misfire_max, misfire)
    {
        problems.push(
            at(
                max.span(),
                "`misfire_max` only applies to misfire = \"all\"".into(),
            )
            .hint("remove it or set misfire = \"all\""),
        );
    }
    let overlap = match raw
        .overlap
        .as_ref()
        .map(|o| (o.get_ref().as_str(), o.span()))
    {
        None | Some(("skip", _)) => Some(OverlapPolicy::Skip),
        Some(("queue", _)) => Some(OverlapPolicy::Queue),
        Some((other, span)) => {
            problems.push(
                at(span, format!("unknown overlap policy {other:?}"))
                    .hint("use \"skip\" or \"queue\""),
            );
            None
        }
    };
    let max_attempts = match &raw.max_attempts {
        Some(attempts) if *attempts.get_ref() == 0 => {
            problems.push(
                at(attempts.span(), "`max_attempts` must be at least 1".into())
                    .hint("1 means no retries"),
            );
            DEFAULT_MAX_ATTEMPTS
        }
        Some(attempts) => *attempts.get_ref(),
        None => DEFAULT_MAX_ATTEMPTS,
    };
    let mut duration_field =
        |field: &Option<Spanned<String>>, default: Duration, name: &str| match field {
            None => default,
            Some(value) => match parse_duration(value.get_ref()) {
                Ok(duration) if !duration.is_zero() => duration,
                Ok(_) => {
                    problems.push(
                        at(value.span(), format!("`{name}` must be longer than zero"))
                            .hint("e.g. \"30s\""),
                    );
                    default
                }
                Err(message) => {
                    problems.push(
                        at(value.span(), message)
                            .hint("write a duration such as \"30s\", \"5m\", \"1h\""),
                    );
                    default
                }
            },
        };
    let retry_initial =
        duration_field(&raw.retry_initial, Duration::from_secs(10), "retry_initial");
    let retry_max = duration_field(&raw.retry_max, Duration::from_secs(600), "retry_max");
    let timeout = duration_field(&raw.timeout, Duration::from_secs(3600), "timeout");
    if retry_initial > retry_max
        && let Some(value) = &raw.retry_initial
    {
        problems.push(
            at(
                value.span(),
                "`retry_initial` is longer than `retry_max`".into(),
            )
            .hint("make retry_initial the shorter of the two"),
        );
    }

    if let Some(settings) = &raw.settings
        && kind.is_none()
        && raw.kind.get_ref().is_empty()
    {
        problems.push(at(
            settings.span(),
            "[settings] given without a kind".into(),
        ));
    }

    match (
        kind,
        schedule,
        timezone,
        misfire,
        overlap,
        problems.is_empty(),
    ) {
        (Some(kind), Some(schedule), Some(timezone), Some(misfire), Some(overlap), true) => {
            Ok(JobSpec {
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
                enabled: raw.enabled.unwrap_or(true),
                source: path.to_path_buf(),
            })
        }
        _ => Err(problems),
    }
}

fn parse_kind(
    path: &Path,
    source: &str,
    kind: &Spanned<String>,
    problems: &mut Vec<Diagnostic>,
) -> Option<JobKind> {
    match kind.get_ref().as_str() {
        "credential_check" => match toml::from_str::<SettingsOnly<CredentialCheckSettings>>(source)
        {
            Ok(parsed) => Some(JobKind::CredentialCheck(
                parsed.settings.unwrap_or_default(),
            )),
            Err(error) => {
                problems.push(
                    toml_error(path, source, &error)
                        .hint("credential_check accepts: expected_owner (a user gid or email)"),
                );
                None
            }
        },
        other => {
            let suggestion = JobKind::NAMES
                .iter()
                .min_by_key(|name| strsim_distance(name, other))
                .map(|name| {
                    format!(
                        "did you mean {name:?}? known kinds: {}",
                        JobKind::NAMES.join(", ")
                    )
                })
                .unwrap_or_default();
            problems.push(
                Diagnostic::at(
                    path,
                    source,
                    Some(kind.span()),
                    format!("unknown job kind {other:?}"),
                )
                .hint(suggestion),
            );
            None
        }
    }
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

fn toml_error(path: &Path, source: &str, error: &toml::de::Error) -> Diagnostic {
    let message = error.message().trim().to_string();
    let hint = if message.contains("unknown field") {
        Some(
            "check the spelling; the job fields are name, kind, schedule, every, timezone, credential, misfire, misfire_max, overlap, max_attempts, retry_initial, retry_max, timeout, enabled and [settings]",
        )
    } else if message.contains("missing field") {
        Some("every job needs name, kind and credential")
    } else {
        None
    };
    let diagnostic = Diagnostic::at(path, source, error.span(), message);
    match hint {
        Some(hint) => diagnostic.hint(hint),
        None => diagnostic,
    }
}

/// Parses a 5-field cron expression or alias (no seconds, no year).
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let trimmed = expression.trim();
    if !trimmed.starts_with('@') && trimmed.split_whitespace().count() != 5 {
        return Err(format!(
            "cron expression {expression:?} has {} fields, 5 expected",
            trimmed.split_whitespace().count()
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|error| format!("invalid cron expression {expression:?}: {error}"))
}

/// Parses a duration such as `30s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|error| format!("invalid duration {text:?}: {error}"))
}

/// Loads every `*.toml` in `dir` (sorted by file name). All problems of all files are returned
/// together; names must be unique across files.
pub fn load_dir(dir: &Path, context: &ValidationContext) -> Result<Vec<JobSpec>, Diagnostics> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            return Err(Diagnostics(vec![Diagnostic::file(dir, format!("cannot read the jobs directory: {error}"))
                .hint("set jobs.dir in config.toml or ASANA_WORKER__JOBS__DIR to a readable directory")]));
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml") && path.is_file())
        .collect();
    paths.sort();
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in paths {
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(error) => {
                problems.push(Diagnostic::file(
                    &path,
                    format!("cannot read job file: {error}"),
                ));
                continue;
            }
        };
        match parse_job(&path, &source, context) {
            Ok(job) => {
                if let Some(first) = names.get(&job.name) {
                    let span = name_span(&source);
                    problems.push(
                        Diagnostic::at(
                            &path,
                            &source,
                            span,
                            format!("duplicate job name {:?}", job.name),
                        )
                        .hint(format!(
                            "it is already defined in {}; job names must be unique",
                            first.display()
                        )),
                    );
                } else {
                    names.insert(job.name.clone(), path.clone());
                    jobs.push(job);
                }
            }
            Err(mut found) => problems.append(&mut found),
        }
    }
    if problems.is_empty() {
        Ok(jobs)
    } else {
        Err(Diagnostics(problems))
    }
}

fn name_span(source: &str) -> Option<std::ops::Range<usize>> {
    #[derive(Deserialize)]
    struct NameOnly {
        name: Spanned<String>,
    }
    toml::from_str::<NameOnly>(source)
        .ok()
        .map(|n| n.name.span())
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
        assert!(
            text[0].starts_with("jobs/t.toml:4:12: unknown time zone"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("jobs/t.toml:3:12: invalid cron expression"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("jobs/t.toml:5:14: unknown credential \"nobody\""),
            "{text:#?}"
        );
        assert!(text[2].contains("known credentials: sa"));
    }
}
