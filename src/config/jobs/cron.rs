//! Cron expressions of job files: five fields or an alias, evaluated by croner, with errors that
//! name the wrong field and what it takes.

use chrono::{TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use super::checker::did_you_mean;

/// The hint for any malformed expression.
pub(super) const CRON_HINT: &str = "use 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 * * * *\", or an alias: @yearly @monthly @weekly @daily @hourly";

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
pub(super) fn check_cron(expression: &str) -> Result<Cron, (String, String)> {
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
