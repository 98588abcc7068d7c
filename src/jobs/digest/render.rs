//! Rendering a digest with minijinja: the built-in templates (plain text, Markdown, HTML email,
//! Slack Block Kit), users' template files, and the load-time check that renders every user
//! template against sample data so a typo fails `validate` with the file and line, not the
//! Monday-morning run.
//!
//! Undefined variables are errors (strict mode). Auto-escaping follows the template's file
//! name: `.html` escapes HTML, `.json` turns every `{{ … }}` into a JSON value, anything else
//! is left as written. The context is the [`DigestModel`]'s fields at the top level
//! (docs/digest.md lists them).

use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior};

use super::model::{self, Collected, DigestModel, Frame, Named, Person, Placement, ProjectInfo};
use super::settings::{Format, GroupBy, SectionKind};

/// The built-in plain-text template.
pub const TEXT: &str = include_str!("templates/text.txt");
/// The built-in Markdown template.
pub const MARKDOWN: &str = include_str!("templates/markdown.md");
/// The built-in HTML email template.
pub const HTML: &str = include_str!("templates/email.html");
/// The built-in Slack Block Kit template.
pub const SLACK: &str = include_str!("templates/slack-blocks");

/// A template that did not load or render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The template file could not be read.
    #[error("cannot read the template {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// minijinja refused it (syntax, an undefined variable, a failing filter).
    #[error("{location}: {detail}")]
    Template {
        /// `file:line`.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// A JSON template rendered something that is not JSON.
    #[error("{name} did not render valid JSON: {detail}")]
    NotJson {
        /// The template.
        name: String,
        /// The parser's message.
        detail: String,
    },
}

impl RenderError {
    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            RenderError::Read { .. } => {
                "check the path (relative paths start at the job file's directory) and the daemon user's permissions"
            }
            RenderError::Template { .. } => {
                "templates see title, today, period, as_of, since, timezone, source, data_as_of, total, empty, sections, groups (each with name, url, kind, total, sections, each with title, count, more, tasks); see docs/digest.md"
            }
            RenderError::NotJson { .. } => {
                "a webhook body must be JSON: pass strings through `| tojson`, or name the template *.json so every value is JSON-escaped"
            }
        }
    }
}

/// Where a rendering's template comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Template {
    /// A built-in one.
    Builtin(Format),
    /// A user's file.
    File(PathBuf),
}

fn truncate(value: String, length: usize) -> String {
    if value.chars().count() <= length {
        return value;
    }
    let mut cut: String = value.chars().take(length.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Escapes Markdown's link and emphasis characters in a name.
fn markdown_escape(value: String) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '*' | '_' | '`' | '<' | '>' | '#' | '|'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes the three characters Slack's mrkdwn reserves.
fn slack_escape(value: String) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An environment with the digest's filters, strict undefined and block trimming.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_filter("truncate", truncate);
    env.add_filter("md", markdown_escape);
    env.add_filter("slack", slack_escape);
    env
}

fn template_error(name: &str, source: &str, error: &minijinja::Error) -> RenderError {
    let line = error.line().map(|l| format!(":{l}")).unwrap_or_default();
    let mut detail = error.detail().map(str::to_string).unwrap_or_default();
    if detail.is_empty() {
        detail = error.kind().to_string();
    } else {
        detail = format!("{}: {detail}", error.kind());
    }
    // The line itself, so the culprit is visible without opening the file.
    if let Some(text) = error
        .line()
        .and_then(|l| source.lines().nth(l.saturating_sub(1)))
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let shown: String = text.chars().take(80).collect();
        detail = format!("{detail} in `{shown}`");
    }
    RenderError::Template {
        location: format!("{name}{line}"),
        detail,
    }
}

/// Renders `model` with `template`; a JSON rendering (`slack`, `json`, or a user template for
/// a webhook) is checked to parse.
pub fn render(
    template: &Template,
    model: &DigestModel,
    want_json: bool,
) -> Result<String, RenderError> {
    let (name, source) = match template {
        Template::Builtin(Format::Json) => {
            return Ok(serde_json::to_string_pretty(model).unwrap_or_default() + "\n");
        }
        Template::Builtin(format) => (
            builtin_name(*format).to_string(),
            builtin_source(*format).to_string(),
        ),
        Template::File(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|source| RenderError::Read {
                path: path.clone(),
                source,
            })?,
        ),
    };
    let mut env = environment();
    env.add_template_owned(name.clone(), source.clone())
        .map_err(|e| template_error(&name, &source, &e))?;
    let text = env
        .get_template(&name)
        .and_then(|t| t.render(minijinja::Value::from_serialize(model)))
        .map_err(|e| template_error(&name, &source, &e))?;
    let is_json = want_json || matches!(template, Template::Builtin(Format::Slack));
    if is_json && let Err(error) = serde_json::from_str::<serde_json::Value>(&text) {
        return Err(RenderError::NotJson {
            name,
            detail: error.to_string(),
        });
    }
    Ok(text)
}

/// The name a built-in template is known by in errors.
fn builtin_name(format: Format) -> &'static str {
    match format {
        Format::Text => "text.txt",
        Format::Markdown => "markdown.md",
        Format::Html => "email.html",
        Format::Slack => "slack-blocks",
        Format::Json => "json",
    }
}

fn builtin_source(format: Format) -> &'static str {
    match format {
        Format::Text => TEXT,
        Format::Markdown => MARKDOWN,
        Format::Html => HTML,
        Format::Slack => SLACK,
        Format::Json => "",
    }
}

/// Renders a user's template file against [`sample_model`] in every grouping: what `validate`
/// runs at load, so a template that does not parse, names a variable that does not exist or
/// does not produce JSON where JSON is needed fails before any run.
pub fn check_template(path: &Path, want_json: bool) -> Result<(), RenderError> {
    for group_by in [GroupBy::Project, GroupBy::Section, GroupBy::Assignee] {
        let sample = sample_model(group_by);
        render(&Template::File(path.to_path_buf()), &sample, want_json)?;
        render(
            &Template::File(path.to_path_buf()),
            &sample.only_group(&sample.groups[0].key),
            want_json,
        )?;
    }
    // An empty digest too (`send_empty = true`).
    let mut empty = sample_model(GroupBy::Project);
    empty.groups.clear();
    render(&Template::File(path.to_path_buf()), &empty, want_json)?;
    Ok(())
}

/// A fixed digest with a task in every section, every optional field set, both sources' fields:
/// the sample user templates are checked against, and the world of the golden files.
pub fn sample_model(group_by: GroupBy) -> DigestModel {
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_default()
    };
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 12, d);
    let ada = Person {
        gid: "1001".into(),
        name: "Ada Lovelace".into(),
        email: Some("ada@example.com".into()),
    };
    let grace = Person {
        gid: "1002".into(),
        name: "Grace Hopper".into(),
        email: Some("grace@example.com".into()),
    };
    let project = |gid: &str, name: &str| ProjectInfo {
        gid: gid.into(),
        name: name.into(),
        url: Some(format!("https://app.asana.com/0/{gid}")),
    };
    let placement = |project: &str, section: &str, name: &str| Placement {
        project: project.into(),
        section: Some(Named {
            gid: section.into(),
            name: name.into(),
        }),
    };
    let task = |gid: &str, name: &str| model::TaskFacts {
        gid: gid.into(),
        name: name.into(),
        url: format!("https://app.asana.com/0/2001/{gid}"),
        subtype: "default_task".into(),
        approval_status: None,
        completed: false,
        completed_at: None,
        created_at: Some(at("2026-10-01T08:00:00Z")),
        modified_at: Some(at("2026-12-04T16:00:00Z")),
        due_on: None,
        due_at: None,
        assignee: Some(ada.clone()),
        placements: vec![placement("2001", "3001", "Doing")],
        blocked_by: vec![],
    };
    let mut overdue = task("4001", "Renew the TLS certificate");
    overdue.due_on = day(3);
    let mut due_soon = task("4002", "Draft the <Q1> plan & budget");
    due_soon.due_at = Some(at("2026-12-09T15:30:00Z"));
    due_soon.assignee = Some(grace.clone());
    let mut completed = task("4003", "Migrate the [billing] database");
    completed.completed = true;
    completed.completed_at = Some(at("2026-12-05T11:00:00Z"));
    let mut created = task("4004", "Review the on-call rota");
    created.created_at = Some(at("2026-12-06T10:00:00Z"));
    created.assignee = None;
    created.placements = vec![placement("2002", "3002", "Backlog")];
    let mut blocked = task("4005", "Ship the release");
    blocked.blocked_by = vec!["Renew the TLS certificate".into()];
    blocked.due_on = day(11);
    blocked.assignee = Some(grace);
    let mut stale = task("4006", "Tidy the runbooks");
    stale.modified_at = Some(at("2026-10-20T09:00:00Z"));
    stale.placements = vec![placement("2002", "3002", "Backlog")];
    let mut milestone = task("4007", "Beta launch");
    milestone.subtype = "milestone".into();
    milestone.due_on = day(10);
    let mut approval = task("4008", "Approve the vendor contract");
    approval.subtype = "approval".into();
    approval.approval_status = Some("pending".into());
    approval.due_on = day(8);
    approval.placements = vec![placement("2002", "3003", "Legal")];
    let collected = Collected {
        projects: vec![project("2001", "Platform"), project("2002", "Operations")],
        assignees: vec![],
        tasks: vec![
            overdue, due_soon, completed, created, blocked, stale, milestone, approval,
        ],
        data_as_of: Some(at("2026-12-07T07:45:00Z")),
    };
    let frame = Frame {
        title: "Weekly digest".into(),
        job: "weekly-digest".into(),
        period: "2026-12-07T0900+0100".into(),
        timezone: chrono_tz::Europe::Berlin,
        as_of: at("2026-12-07T08:00:00Z"),
        since: at("2026-11-30T08:00:00Z"),
        source: "sync mirror".into(),
        sections: SectionKind::ALL.to_vec(),
        group_by,
        due_days: 7,
        stale_secs: 14 * 86_400,
        max_tasks: 50,
    };
    model::build(&collected, &frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares `actual` with the golden file `name` (tests/fixtures/digest/golden); with
    /// `UPDATE_GOLDEN=1` the file is rewritten instead.
    fn golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/digest/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
                path.display()
            )
        });
        assert_eq!(
            actual,
            expected,
            "{} differs; if the change is intended, run with UPDATE_GOLDEN=1",
            path.display()
        );
    }

    #[test]
    fn built_in_templates_match_their_golden_files() {
        let model = sample_model(GroupBy::Project);
        assert_eq!(model.groups.len(), 2);
        for (format, file) in [
            (Format::Text, "project.txt"),
            (Format::Markdown, "project.md"),
            (Format::Html, "project.html"),
            (Format::Slack, "project.slack.json"),
            (Format::Json, "project.json"),
        ] {
            let text = render(&Template::Builtin(format), &model, false).unwrap();
            golden(file, &text);
        }
        for (group_by, file) in [
            (GroupBy::Section, "section.md"),
            (GroupBy::Assignee, "assignee.md"),
        ] {
            let text = render(
                &Template::Builtin(Format::Markdown),
                &sample_model(group_by),
                false,
            )
            .unwrap();
            golden(file, &text);
        }
    }

    #[test]
    fn names_are_escaped_for_each_format() {
        let model = sample_model(GroupBy::Project);
        let html = render(&Template::Builtin(Format::Html), &model, false).unwrap();
        assert!(
            html.contains("Draft the &lt;Q1&gt; plan &amp; budget"),
            "{html}"
        );
        let slack = render(&Template::Builtin(Format::Slack), &model, false).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&slack).unwrap();
        assert!(
            parsed
                .to_string()
                .contains("Draft the &lt;Q1&gt; plan &amp; budget"),
            "{parsed}"
        );
        assert!(parsed["blocks"].as_array().unwrap().len() > 4);
        let markdown = render(&Template::Builtin(Format::Markdown), &model, false).unwrap();
        assert!(
            markdown.contains("Migrate the \\[billing\\] database"),
            "{markdown}"
        );
        // Every task links to Asana.
        for line in markdown.lines().filter(|l| l.starts_with("- [")) {
            assert!(line.contains("](https://app.asana.com/"), "{line}");
        }
    }

    #[test]
    fn a_broken_user_template_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let bad_syntax = dir.path().join("bad.md");
        std::fs::write(
            &bad_syntax,
            "# {{ title }}\n{% for group in groups %}\n{{ group.name }\n",
        )
        .unwrap();
        let error = check_template(&bad_syntax, false).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("bad.md:3"), "{text}");
        let unknown = dir.path().join("unknown.md");
        std::fs::write(&unknown, "# {{ title }}\n\n{{ groups[0].nmae }}\n").unwrap();
        let text = check_template(&unknown, false).unwrap_err().to_string();
        assert!(text.contains("unknown.md:3"), "{text}");
        assert!(text.contains("undefined"), "{text}");
        let not_json = dir.path().join("body.txt");
        std::fs::write(&not_json, "{\"text\": {{ title }}}").unwrap();
        let error = check_template(&not_json, true).unwrap_err();
        assert!(matches!(error, RenderError::NotJson { .. }), "{error}");
        let json = dir.path().join("body.json");
        std::fs::write(&json, "{\"text\": {{ title }}, \"n\": {{ total }}}").unwrap();
        check_template(&json, true).unwrap();
        let missing = dir.path().join("missing.md");
        assert!(matches!(
            check_template(&missing, false).unwrap_err(),
            RenderError::Read { .. }
        ));
    }
}
