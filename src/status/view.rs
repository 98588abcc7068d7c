//! Rendering of the status page: minijinja templates compiled into the binary (HTML escaping on
//! for every `.html` template, so a job named `<script>` shows as text), and the small SVG
//! charts (a job's recent runs, a token's requests per window) drawn here from numbers only.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use minijinja::{Environment, context};
use serde_json::Value;

use crate::config::jobs::Schedule;

use super::RunQuery;

/// The refresh script (the page's only JavaScript, served from `/status/script.js`).
pub const SCRIPT: &str = include_str!("script.js");

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in [
            ("base.html", include_str!("templates/base.html")),
            ("status.html", include_str!("templates/status.html")),
            ("content.html", include_str!("templates/content.html")),
            ("run.html", include_str!("templates/run.html")),
            ("error.html", include_str!("templates/error.html")),
        ] {
            env.add_template(name, source)
                .expect("the status page's templates are valid (tests render each)");
        }
        env
    })
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    environment()
        .get_template(name)
        .and_then(|template| template.render(ctx))
        .unwrap_or_else(|error| {
            // A template error is a bug of this build; show it as text rather than a blank page.
            format!(
                "<!doctype html><title>status page error</title><pre>{}</pre>",
                html_escape(&error.to_string())
            )
        })
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// A schedule as people say it: `every 5m`, `cron */15 * * * *` (hourly, daily and weekly crons
/// in words).
pub fn schedule_in_words(schedule: &Schedule) -> String {
    match schedule {
        Schedule::Every(every) => {
            format!("every {}", crate::config::values::format_duration(*every))
        }
        Schedule::Cron { expression, .. } => {
            let fields: Vec<&str> = expression.split_whitespace().collect();
            match fields.as_slice() {
                [m, "*", "*", "*", "*"] if m.parse::<u32>().is_ok() => {
                    format!("hourly at :{m:0>2}")
                }
                [m, h, "*", "*", "*"] if m.parse::<u32>().is_ok() && h.parse::<u32>().is_ok() => {
                    format!("daily at {h:0>2}:{m:0>2}")
                }
                [m, "*", "*", "*", "*"] if m.starts_with("*/") => {
                    format!("every {} minutes", &m[2..])
                }
                _ => format!("cron {expression}"),
            }
        }
    }
}

/// "3 min ago" style age.
fn age(at: Option<&str>, now: DateTime<Utc>) -> String {
    let Some(at) = at.and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else {
        return String::new();
    };
    let secs = (now - at.with_timezone(&Utc)).num_seconds().max(0) as u64;
    format!("{} ago", human(Duration::from_secs(secs)))
}

fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86400),
    }
}

fn state_color(state: &str) -> &'static str {
    match state {
        "completed" => "#1a7f37",
        "failed" | "dead" | "needs_reauth" => "#cf222e",
        "running" | "queued" | "retrying" => "#9a6700",
        _ => "#6e7781",
    }
}

/// A job's recent runs: one bar per run, its height the duration, its colour the outcome.
fn sparkline(recent: &[Value]) -> String {
    if recent.is_empty() {
        return String::new();
    }
    let longest = recent
        .iter()
        .filter_map(|r| r["duration_secs"].as_f64())
        .fold(0.0_f64, f64::max)
        .max(0.001);
    let mut bars = String::new();
    for (i, run) in recent.iter().enumerate() {
        let duration = run["duration_secs"].as_f64().unwrap_or(0.0);
        let height = (2.0 + 18.0 * duration / longest).round();
        let state = run["state"].as_str().unwrap_or("");
        bars.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"5\" height=\"{height}\" fill=\"{}\"><title>{} {:.1} s</title></rect>",
            i * 7,
            20.0 - height,
            state_color(state),
            html_escape(state),
            duration
        ));
    }
    format!(
        "<svg class=\"sparkline\" width=\"{}\" height=\"20\" role=\"img\" aria-label=\"recent runs\">{bars}</svg>",
        recent.len() * 7
    )
}

/// A token's requests per window over the last hour against its limit.
fn token_chart(history: &[Value], limit: Option<u64>) -> String {
    if history.is_empty() {
        return "<span class=\"muted\">no request in this process yet</span>".into();
    }
    let limit = limit.unwrap_or(1).max(1) as f64;
    let mut bars = String::new();
    for (i, point) in history.iter().enumerate() {
        let n = point["requests"].as_u64().unwrap_or(0);
        let height = (30.0 * (n as f64 / limit).min(1.0)).round();
        bars.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"3\" height=\"{height}\" fill=\"#0969da\"><title>{n}</title></rect>",
            i * 4,
            30.0 - height,
        ));
    }
    let total: u64 = history.iter().filter_map(|p| p["requests"].as_u64()).sum();
    format!(
        "<svg class=\"token-chart\" data-requests=\"{total}\" width=\"{}\" height=\"30\" role=\"img\" aria-label=\"requests per window\"><line x1=\"0\" y1=\"0.5\" x2=\"{}\" y2=\"0.5\" stroke=\"#cf222e\" stroke-dasharray=\"2\"/>{bars}</svg>",
        history.len() * 4,
        history.len() * 4
    )
}

fn progress_summary(progress: &Value) -> String {
    let Some(map) = progress.as_object() else {
        return String::new();
    };
    map.iter()
        .filter(|(_, v)| v.is_number() || v.is_string())
        .take(4)
        .map(|(k, v)| {
            format!(
                "{k} {}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status page (or only its content, for the refresh script).
#[allow(clippy::too_many_arguments)]
pub fn status_page(
    jobs: &Value,
    tokens: &Value,
    runs: &Value,
    compliance: &Value,
    query: &RunQuery,
    job_set: &Value,
    now: DateTime<Utc>,
    partial: bool,
    actions: bool,
) -> String {
    let jobs: Vec<Value> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .map(|job| {
            let mut job = job.clone();
            let recent = job["recent"].as_array().cloned().unwrap_or_default();
            job["sparkline"] = Value::String(sparkline(&recent));
            job["last_age"] = Value::String(age(job["last_finished_at"].as_str(), now));
            job["running_progress"] = Value::String(progress_summary(&job["running"]["progress"]));
            job
        })
        .collect();
    let tokens: Vec<Value> = tokens
        .as_array()
        .into_iter()
        .flatten()
        .map(|token| {
            let mut token = token.clone();
            let history = token["history"].as_array().cloned().unwrap_or_default();
            token["chart"] = Value::String(token_chart(
                &history,
                token["effective_limit"]
                    .as_u64()
                    .or(token["limit_per_minute"].as_u64()),
            ));
            if let Some(wait) = token["wait_secs_total"].as_f64() {
                token["wait"] = Value::String(format!(
                    "{} waiting, {} in all",
                    token["waiting"].as_u64().unwrap_or(0),
                    human(Duration::from_secs_f64(wait))
                ));
            }
            token
        })
        .collect();
    let runs: Vec<Value> = runs
        .as_array()
        .into_iter()
        .flatten()
        .map(|run| {
            let mut run = run.clone();
            if let Some(d) = run["duration_secs"].as_f64() {
                run["duration"] = Value::String(format!("{d:.1} s"));
            }
            run
        })
        .collect();
    let mut refresh = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("job", &query.job),
        ("state", &query.state),
        ("from", &query.from),
        ("before", &query.before),
        ("limit", &query.limit),
    ] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            refresh.append_pair(key, value);
        }
    }
    refresh.append_pair("partial", "1");
    let ctx = context! {
        jobs => jobs,
        tokens => tokens,
        audit => compliance["audit_log"].as_array().cloned().unwrap_or_default().into_iter().map(|mut a| {
            a["lag"] = Value::String(a["lag_secs"].as_i64().map(|s| human(Duration::from_secs(s.max(0) as u64))).unwrap_or_else(|| "-".into()));
            a["headroom"] = Value::String(a["retention_headroom_secs"].as_i64().map(|s| if s < 0 { "past retention".to_string() } else { human(Duration::from_secs(s as u64)) }).unwrap_or_else(|| "-".into()));
            a
        }).collect::<Vec<_>>(),
        exports => compliance["exports"],
        runs => runs,
        job_set => job_set,
        now => now.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        query => context! {
            job => query.job,
            state => query.state,
            from => query.from,
            before => query.before,
            limit => query.limit,
        },
        states => ["queued", "retrying", "running", "completed", "failed", "dead", "needs_reauth", "cancelled", "skipped"],
        refresh_url => format!("/status?{}", refresh.finish()),
        actions => actions,
    };
    render(
        if partial {
            "content.html"
        } else {
            "status.html"
        },
        ctx,
    )
}

/// One run's page.
pub fn run_page(run: &Value, _now: DateTime<Utc>) -> String {
    let duration = run["duration_secs"].as_f64().map(|d| format!("{d:.1} s"));
    let progress = serde_json::to_string_pretty(&run["progress"]).unwrap_or_default();
    render(
        "run.html",
        context! { run => run, duration => duration, progress => progress },
    )
}

/// A 4xx or 5xx page with the reason.
pub fn error_page(status: u16, message: &str) -> String {
    render(
        "error.html",
        context! { status => status, message => message },
    )
}
