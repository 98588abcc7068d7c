//! Figures as a person reads them on the status page: schedules in words, ages, durations,
//! sizes and a run's progress in one line.

use std::time::Duration;

use serde_json::Value;

use crate::config::jobs::Schedule;

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("every {unit}")
    } else {
        format!("every {n} {unit}s")
    }
}

/// A schedule in words ("every 5 minutes", "every day at 06:30"); a cron expression with no
/// simple reading is shown as written.
pub fn schedule(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(every) => {
            let secs = every.as_secs();
            if secs > 0 && secs.is_multiple_of(86_400) {
                plural(secs / 86_400, "day")
            } else if secs > 0 && secs.is_multiple_of(3600) {
                plural(secs / 3600, "hour")
            } else if secs > 0 && secs.is_multiple_of(60) {
                plural(secs / 60, "minute")
            } else {
                plural(secs, "second")
            }
        }
        Schedule::Cron { expression, .. } => cron(expression),
    }
}

fn number(field: &str, max: u32) -> Option<u32> {
    field.parse::<u32>().ok().filter(|n| *n <= max)
}

fn weekday(field: &str) -> Option<&'static str> {
    let upper = field.to_ascii_uppercase();
    let names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    names
        .iter()
        .position(|n| *n == upper)
        .or_else(|| number(field, 7).map(|n| (n % 7) as usize))
        .map(|i| DAYS[i])
}

fn weekdays(field: &str) -> Option<String> {
    if let Some((from, to)) = field.split_once('-') {
        return Some(format!("{}–{}", weekday(from)?, weekday(to)?));
    }
    let days: Option<Vec<&str>> = field.split(',').map(weekday).collect();
    Some(days?.join(", "))
}

/// A 5-field cron expression (or alias) in words.
pub fn cron(expression: &str) -> String {
    let alias = match expression.trim() {
        "@hourly" => Some("every hour at minute 0"),
        "@daily" | "@midnight" => Some("every day at 00:00"),
        "@weekly" => Some("every Sunday at 00:00"),
        "@monthly" => Some("on day 1 of every month at 00:00"),
        "@yearly" | "@annually" => Some("every 1 January at 00:00"),
        _ => None,
    };
    if let Some(words) = alias {
        return words.to_string();
    }
    let written = || format!("cron {expression}");
    let fields: Vec<&str> = expression.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
        return written();
    };
    if month != "*" {
        return written();
    }
    if let Some(step) = minute.strip_prefix("*/").and_then(|s| number(s, 59))
        && [hour, dom, dow] == ["*", "*", "*"]
    {
        return plural(u64::from(step), "minute");
    }
    let Some(m) = number(minute, 59) else {
        return written();
    };
    if [hour, dom, dow] == ["*", "*", "*"] {
        return format!("every hour at minute {m}");
    }
    if let Some(step) = hour.strip_prefix("*/").and_then(|s| number(s, 23))
        && [dom, dow] == ["*", "*"]
    {
        return format!("{} at minute {m}", plural(u64::from(step), "hour"));
    }
    let Some(h) = number(hour, 23) else {
        return written();
    };
    let time = format!("{h:02}:{m:02}");
    match (dom, dow) {
        ("*", "*") => format!("every day at {time}"),
        ("*", days) => match weekdays(days) {
            Some(days) => format!("every {days} at {time}"),
            None => written(),
        },
        (day, "*") => match number(day, 31) {
            Some(day) => format!("on day {day} of every month at {time}"),
            None => written(),
        },
        _ => written(),
    }
}

/// A duration as "45 s", "12 min", "3 h 5 min", "2 d 4 h".
pub fn duration(span: Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0..=59 if span.as_millis() < 10_000 && !span.as_millis().is_multiple_of(1000) => {
            format!("{:.1} s", span.as_secs_f64())
        }
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => match (secs % 3600) / 60 {
            0 => format!("{} h", secs / 3600),
            m => format!("{} h {m} min", secs / 3600),
        },
        _ => match (secs % 86_400) / 3600 {
            0 => format!("{} d", secs / 86_400),
            h => format!("{} d {h} h", secs / 86_400),
        },
    }
}

/// How long ago `then` was, as "12 min ago" (or "in 5 s" for a time ahead, a clock skew).
pub fn age(then: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let delta = now - then;
    match delta.to_std() {
        Ok(span) => format!("{} ago", duration(Duration::from_secs(span.as_secs()))),
        Err(_) => format!(
            "in {}",
            duration(Duration::from_secs((-delta).num_seconds().max(0) as u64))
        ),
    }
}

/// A size in bytes as "812 B", "3.4 KiB", "27.1 MiB", "1.2 GiB".
pub fn bytes(size: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{size} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// A run's progress figures in one line: an export's phase and bytes, an audit log's events
/// and backfill, a credential check's owner; other figures as `key: value`.
pub fn progress(progress: &Value) -> String {
    let Some(object) = progress.as_object() else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    let mut shown: Vec<&str> = Vec::new();
    if let Some(phase) = object.get("phase").and_then(Value::as_str) {
        shown.push("phase");
        let mut text = phase.replace('_', " ");
        if let Some(state) = object.get("asana_state").and_then(Value::as_str) {
            shown.push("asana_state");
            text.push_str(&format!(" (Asana: {state})"));
        }
        parts.push(text);
    }
    let bytes_done = object.get("bytes").and_then(Value::as_u64);
    let total = object.get("total_bytes").and_then(Value::as_u64);
    let percent = object.get("percent").and_then(Value::as_f64);
    match (bytes_done, total) {
        (Some(done), Some(total)) => {
            parts.push(format!(
                "{} of {}{}",
                bytes(done),
                bytes(total),
                percent.map(|p| format!(" ({p:.1} %)")).unwrap_or_default()
            ));
        }
        (Some(done), None) if done > 0 => parts.push(bytes(done)),
        _ => {}
    }
    shown.extend(["bytes", "total_bytes", "percent"]);
    if let Some(events) = object.get("events").and_then(Value::as_u64) {
        parts.push(format!("{events} events delivered"));
        shown.push("events");
    }
    if let Some(left) = object.get("backfill_slices_left").and_then(Value::as_u64) {
        if left > 0 {
            parts.push(format!("backfill: {left} slices left"));
        }
        shown.push("backfill_slices_left");
    }
    if let Some(newest) = object.get("newest").and_then(Value::as_str) {
        parts.push(format!("newest event {newest}"));
        shown.push("newest");
    }
    if let Some(size) = object.get("size").and_then(Value::as_u64) {
        parts.push(bytes(size));
        shown.push("size");
    }
    for (key, value) in object {
        if shown.contains(&key.as_str()) || value.is_null() {
            continue;
        }
        match value {
            Value::String(text) => parts.push(format!("{key}: {text}")),
            Value::Number(n) => parts.push(format!("{key}: {n}")),
            Value::Bool(b) => parts.push(format!("{key}: {b}")),
            Value::Array(items) if !items.is_empty() => {
                parts.push(format!("{key}: {} item(s)", items.len()))
            }
            _ => {}
        }
    }
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schedules_read_as_words() {
        assert_eq!(
            schedule(&Schedule::Every(Duration::from_secs(300))),
            "every 5 minutes"
        );
        assert_eq!(
            schedule(&Schedule::Every(Duration::from_secs(86_400))),
            "every day"
        );
        assert_eq!(
            schedule(&Schedule::Every(Duration::from_secs(90))),
            "every 90 seconds"
        );
        assert_eq!(cron("30 6 * * *"), "every day at 06:30");
        assert_eq!(cron("7 * * * *"), "every hour at minute 7");
        assert_eq!(cron("*/15 * * * *"), "every 15 minutes");
        assert_eq!(cron("0 */6 * * *"), "every 6 hours at minute 0");
        assert_eq!(cron("0 9 * * 1-5"), "every Monday–Friday at 09:00");
        assert_eq!(cron("0 9 * * MON,THU"), "every Monday, Thursday at 09:00");
        assert_eq!(cron("15 2 1 * *"), "on day 1 of every month at 02:15");
        assert_eq!(cron("@daily"), "every day at 00:00");
        assert_eq!(cron("0 9 * 1 *"), "cron 0 9 * 1 *");
        assert_eq!(cron("5,35 * * * *"), "cron 5,35 * * * *");
    }

    #[test]
    fn durations_ages_and_sizes_read_as_words() {
        assert_eq!(duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(duration(Duration::from_secs(45)), "45 s");
        assert_eq!(duration(Duration::from_secs(750)), "12 min");
        assert_eq!(duration(Duration::from_secs(3 * 3600 + 300)), "3 h 5 min");
        assert_eq!(
            duration(Duration::from_secs(2 * 86_400 + 4 * 3600)),
            "2 d 4 h"
        );
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(age(now - chrono::Duration::seconds(90), now), "1 min ago");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "in 5 s");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(27 * 1024 * 1024 + 100 * 1024), "27.1 MiB");
    }

    #[test]
    fn progress_reads_as_one_line() {
        assert_eq!(
            progress(
                &json!({"phase": "downloading", "bytes": 1048576, "total_bytes": 4194304, "percent": 25.0, "export_gid": "77"})
            ),
            "downloading · 1.0 MiB of 4.0 MiB (25.0 %) · export_gid: 77"
        );
        assert_eq!(
            progress(
                &json!({"events": 1200, "sequence": 4, "backfill_slices_left": 2, "newest": "2026-05-01T10:00:00Z", "lost_windows": []})
            ),
            "1200 events delivered · backfill: 2 slices left · newest event 2026-05-01T10:00:00Z · sequence: 4"
        );
        assert_eq!(progress(&json!({})), "");
    }
}
