//! The settings of `digest` jobs: what is summarised (scope, sections, grouping), where the
//! data comes from, and where the digest is delivered.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::jobs::SettingsCheck;
use crate::config::values::{DurationText, Gid};
use crate::sinks::http_post::HttpEndpoint;

/// One section of a digest (`sections = [...]`, shown in the order listed).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SectionKind {
    /// Incomplete tasks whose due date (or due time) has passed, in the job's time zone.
    Overdue,
    /// Incomplete tasks due from today to `due_within` ahead.
    DueSoon,
    /// Tasks completed since the previous delivered digest of this job.
    Completed,
    /// Tasks created since the previous delivered digest of this job.
    Created,
    /// Incomplete tasks with no assignee.
    Unassigned,
    /// Incomplete tasks waiting on a dependency that is not complete.
    Blocked,
    /// Incomplete tasks not modified for `stale_after`.
    Stale,
    /// Incomplete milestones that are overdue or due within `due_within`.
    Milestones,
    /// Pending approvals that are overdue or due within `due_within`.
    Approvals,
}

impl SectionKind {
    /// Every section, in the default order.
    pub const ALL: [SectionKind; 9] = [
        SectionKind::Overdue,
        SectionKind::DueSoon,
        SectionKind::Milestones,
        SectionKind::Approvals,
        SectionKind::Blocked,
        SectionKind::Unassigned,
        SectionKind::Stale,
        SectionKind::Created,
        SectionKind::Completed,
    ];

    /// The name written in `sections`, and the section's key in templates.
    pub fn as_str(self) -> &'static str {
        match self {
            SectionKind::Overdue => "overdue",
            SectionKind::DueSoon => "due_soon",
            SectionKind::Completed => "completed",
            SectionKind::Created => "created",
            SectionKind::Unassigned => "unassigned",
            SectionKind::Blocked => "blocked",
            SectionKind::Stale => "stale",
            SectionKind::Milestones => "milestones",
            SectionKind::Approvals => "approvals",
        }
    }
}

/// How the digest's tasks are grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One group per project (a task in two projects of the scope shows in both).
    #[default]
    Project,
    /// One group per section of each project.
    Section,
    /// One group per assignee (and one for unassigned tasks); email can go to each assignee.
    Assignee,
}

/// Where the digest's tasks come from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    rename_all = "snake_case",
    untagged,
    expecting = "`source = \"api\"` or `source = { sync_job = \"NAME\" }`"
)]
pub enum Source {
    /// `source = "api"`: the Asana API, through the credential's budget.
    Api(ApiSource),
    /// `source = { sync_job = "NAME" }`: the tables of that `sync` job, no API call.
    Mirror {
        /// The name of the `sync` job whose tables are read
        sync_job: String,
        /// Refuse (and retry later) a mirror that has not caught up for this long
        #[serde(
            default = "default_max_mirror_age",
            with = "crate::config::values::duration"
        )]
        #[schemars(with = "DurationText")]
        max_age: Duration,
    },
}

/// The only value of `source` that is a string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiSource {
    /// Read the Asana API.
    #[default]
    Api,
}

impl Default for Source {
    fn default() -> Self {
        Source::Api(ApiSource::Api)
    }
}

fn default_max_mirror_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_due_within() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_stale_after() -> Duration {
    Duration::from_secs(14 * 86_400)
}

fn default_first_lookback() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_sections() -> Vec<SectionKind> {
    vec![
        SectionKind::Overdue,
        SectionKind::DueSoon,
        SectionKind::Completed,
    ]
}

fn default_max_tasks() -> usize {
    50
}

/// Settings of `digest` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DigestSettings {
    /// The gid of the workspace the tasks are in
    pub workspace: Gid,
    /// A title for the digest (default: the job's name)
    #[serde(default)]
    pub title: Option<String>,
    /// Scope: these projects (gids)
    #[serde(default)]
    pub projects: Vec<Gid>,
    /// Scope: every unarchived project of this team (gid)
    #[serde(default)]
    pub team: Option<Gid>,
    /// Scope: every project in this portfolio (gid)
    #[serde(default)]
    pub portfolio: Option<Gid>,
    /// Scope: the tasks assigned to these users (gids), in every project
    #[serde(default)]
    pub assignees: Vec<Gid>,
    /// Group the tasks by `project`, `section` or `assignee`
    #[serde(default)]
    pub group_by: GroupBy,
    /// The sections, in the order shown (default: overdue, due_soon, completed)
    #[serde(default = "default_sections")]
    #[schemars(length(min = 1))]
    pub sections: Vec<SectionKind>,
    /// How far ahead `due_soon`, `milestones` and `approvals` look, from the start of today in
    /// the job's time zone (`7d`: today and the six days after)
    #[serde(
        default = "default_due_within",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub due_within: Duration,
    /// A task not modified for this long is `stale`
    #[serde(
        default = "default_stale_after",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub stale_after: Duration,
    /// What `completed` and `created` reach back to in the job's first digest (later digests
    /// reach back to the previous delivered one)
    #[serde(
        default = "default_first_lookback",
        with = "crate::config::values::duration"
    )]
    #[schemars(with = "DurationText")]
    pub first_lookback: Duration,
    /// Most tasks listed per section of a group; the rest are counted ("and 12 more")
    #[serde(default = "default_max_tasks")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_tasks: usize,
    /// Deliver a digest with no task in any section (`true`), or skip it (`false`, recorded as
    /// delivered so the next digest reaches back to this one)
    #[serde(default)]
    pub send_empty: bool,
    /// Where the tasks come from: `"api"` (default), or `{ sync_job = "NAME" }` to read the
    /// tables of a `sync` job of the same workspace without calling Asana
    #[serde(default)]
    pub source: Source,
    /// Read with task search when the credential's tier is paid and every section is decided
    /// by a due date or a completion (overdue, due_soon, milestones, approvals, completed):
    /// only those tasks are read, in a few requests. `false` always reads task lists
    #[serde(default = "yes")]
    pub search: bool,
    /// Where the digest goes: one or more `[[settings.deliver]]` tables
    #[schemars(length(min = 1))]
    pub deliver: Vec<Channel>,
}

fn yes() -> bool {
    true
}

/// A built-in rendering of the digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Plain text.
    Text,
    /// Markdown (links as `[name](url)`).
    Markdown,
    /// An HTML document (email bodies).
    Html,
    /// Slack Block Kit JSON (`{"text": …, "blocks": […]}`) for an incoming webhook.
    Slack,
    /// The digest's data as JSON (for a program on the receiving end).
    Json,
}

impl Format {
    /// The media type of a rendering.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
            Format::Slack | Format::Json => "application/json",
        }
    }

    /// The file extension of a rendering.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Text => "txt",
            Format::Markdown => "md",
            Format::Html => "html",
            Format::Slack | Format::Json => "json",
        }
    }

    /// The name written in `format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Slack => "slack",
            Format::Json => "json",
        }
    }
}

/// TLS of an SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: allowed only for a server on a loopback address (a local relay).
    None,
}

/// Who receives the emails.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(
    rename_all = "snake_case",
    untagged,
    expecting = "`to = \"assignees\"` or a list of addresses, `to = [\"ops@example.com\"]`"
)]
pub enum Recipients {
    /// `to = "assignees"`: each assignee receives their own group, at their Asana email
    /// (needs `group_by = "assignee"`).
    Assignees(AssigneesKeyword),
    /// `to = ["a@example.com", …]`: these addresses receive the whole digest.
    Fixed(Vec<String>),
}

/// The keyword `"assignees"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AssigneesKeyword {
    /// Each assignee.
    Assignees,
}

/// The status of an Asana status update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusType {
    /// On track.
    #[default]
    OnTrack,
    /// At risk.
    AtRisk,
    /// Off track.
    OffTrack,
    /// On hold.
    OnHold,
}

impl StatusType {
    /// The API's value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusType::OnTrack => "on_track",
            StatusType::AtRisk => "at_risk",
            StatusType::OffTrack => "off_track",
            StatusType::OnHold => "on_hold",
        }
    }
}

fn default_smtp_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One delivery of the digest, chosen by `type` in a `[[settings.deliver]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[schemars(extend("x-noun" = "delivery"))]
pub enum Channel {
    /// A file per digest in a directory (`<dir>/<job>/<period>.<ext>`), with its checksum.
    File {
        /// The directory (created if missing; checked writable at load)
        dir: PathBuf,
        /// The built-in rendering: `text`, `markdown`, `html`, `slack` or `json`
        #[serde(default = "markdown")]
        format: Format,
        /// A minijinja template file used instead of the built-in one (relative to the job
        /// file's directory)
        #[serde(default)]
        template: Option<PathBuf>,
    },
    /// One POST to a webhook: a Slack incoming webhook (`format = "slack"`), or any receiver
    /// of a JSON body (`format = "json"`).
    Webhook {
        /// Where, the token and the retries of the POST
        #[serde(flatten)]
        endpoint: HttpEndpoint,
        /// `slack` (Block Kit) or `json` (the digest's data)
        #[serde(default = "slack")]
        format: Format,
        /// A minijinja template file rendering the JSON body instead of the built-in one
        #[serde(default)]
        template: Option<PathBuf>,
    },
    /// An email over SMTP: HTML with a plain-text part.
    Email {
        /// The SMTP server's host name
        host: String,
        /// Its port (default: 587 for `starttls`, 465 for `tls`, 25 for `none`)
        #[serde(default)]
        port: Option<u16>,
        /// `starttls` (required), `tls`, or `none` (loopback only)
        #[serde(default)]
        tls: SmtpTls,
        /// A PEM file of extra CA certificates to trust (a private mail relay)
        #[serde(default)]
        ca_file: Option<PathBuf>,
        /// The SMTP user name, if the server wants a login
        #[serde(default)]
        username: Option<String>,
        /// File holding the SMTP password (needs `username`)
        #[serde(default)]
        password_file: Option<PathBuf>,
        /// Environment variable holding the SMTP password, instead of `password_file`
        #[serde(default)]
        password_env: Option<String>,
        /// The sender, `Name <address>` or `address`
        from: String,
        /// `"assignees"` (each their own part, at their Asana email) or a list of addresses
        to: Recipients,
        /// The subject (default: the digest's title and period)
        #[serde(default)]
        subject: Option<String>,
        /// A minijinja template file for the HTML part instead of the built-in one
        #[serde(default)]
        template: Option<PathBuf>,
        /// A minijinja template file for the plain-text part instead of the built-in one
        #[serde(default)]
        text_template: Option<PathBuf>,
        /// Longest one SMTP exchange may take
        #[serde(
            default = "default_smtp_timeout",
            with = "crate::config::values::duration"
        )]
        #[schemars(with = "DurationText")]
        timeout: Duration,
    },
    /// An Asana status update: on `parent` (a project or portfolio gid), or, without it, on
    /// each project of the digest with that project's part (needs `group_by = "project"`).
    AsanaStatus {
        /// The project or portfolio that receives the whole digest
        #[serde(default)]
        parent: Option<Gid>,
        /// The update's status
        #[serde(default)]
        status_type: StatusType,
        /// A minijinja template file for the update's text instead of the built-in one
        #[serde(default)]
        template: Option<PathBuf>,
    },
    /// A comment on an Asana task.
    AsanaComment {
        /// The task that receives the comment
        task: Gid,
        /// A minijinja template file for the comment's text instead of the built-in one
        #[serde(default)]
        template: Option<PathBuf>,
    },
}

fn markdown() -> Format {
    Format::Markdown
}

fn slack() -> Format {
    Format::Slack
}

impl Channel {
    /// The delivery's type name.
    pub fn type_name(&self) -> &'static str {
        match self {
            Channel::File { .. } => "file",
            Channel::Webhook { .. } => "webhook",
            Channel::Email { .. } => "email",
            Channel::AsanaStatus { .. } => "asana_status",
            Channel::AsanaComment { .. } => "asana_comment",
        }
    }

    /// The template files it names, with their keys.
    pub fn templates(&self) -> Vec<(&'static str, &PathBuf)> {
        let mut found = Vec::new();
        match self {
            Channel::File { template, .. }
            | Channel::Webhook { template, .. }
            | Channel::AsanaStatus { template, .. }
            | Channel::AsanaComment { template, .. } => {
                found.extend(template.as_ref().map(|t| ("template", t)));
            }
            Channel::Email {
                template,
                text_template,
                ..
            } => {
                found.extend(template.as_ref().map(|t| ("template", t)));
                found.extend(text_template.as_ref().map(|t| ("text_template", t)));
            }
        }
        found
    }
}

impl DigestSettings {
    /// The projects named directly, or by a team or a portfolio.
    pub fn scope_count(&self) -> usize {
        usize::from(!self.projects.is_empty())
            + usize::from(self.team.is_some())
            + usize::from(self.portfolio.is_some())
            + usize::from(!self.assignees.is_empty())
    }

    /// Checks the schema cannot express (templates are rendered against sample data by the
    /// kind's `validate`).
    pub fn validate(&self, check: &mut SettingsCheck<'_>) {
        if self.scope_count() != 1 {
            check.problem(
                "",
                "a digest needs exactly one scope: `projects`, `team`, `portfolio` or `assignees`",
                "set one of projects = [\"<gid>\", …], team = \"<gid>\", portfolio = \"<gid>\" or assignees = [\"<gid>\", …]",
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(twice) = self.sections.iter().find(|s| !seen.insert(**s)) {
            check.problem(
                "sections",
                format!("`{}` is listed twice", twice.as_str()),
                "list each section once",
            );
        }
        if let Source::Mirror { sync_job, .. } = &self.source
            && sync_job.trim().is_empty()
        {
            check.problem(
                "source",
                "`source.sync_job` is empty",
                "name the sync job whose tables the digest reads",
            );
        }
        for (index, channel) in self.deliver.iter().enumerate() {
            check.scoped("deliver", |check| {
                check.scoped(&index.to_string(), |check| {
                    self.validate_channel(channel, check)
                })
            });
        }
    }

    fn validate_channel(&self, channel: &Channel, check: &mut SettingsCheck<'_>) {
        match channel {
            Channel::File { dir, .. } => check.writable_dir("dir", dir),
            Channel::Webhook {
                endpoint, format, ..
            } => {
                endpoint.validate(check);
                if !matches!(format, Format::Slack | Format::Json) {
                    check.problem(
                        "format",
                        format!("a webhook sends JSON, not `{}`", format.as_str()),
                        "use format = \"slack\" (Block Kit) or format = \"json\" (the digest's data)",
                    );
                }
            }
            Channel::Email {
                host,
                tls,
                ca_file,
                username,
                password_file,
                password_env,
                from,
                to,
                ..
            } => {
                if *tls == SmtpTls::None && !is_loopback_host(host) {
                    check.problem(
                        "tls",
                        format!("tls = \"none\" would send the digest and the password in clear text to {host}"),
                        "use tls = \"starttls\" or \"tls\"; \"none\" is allowed only for a relay on 127.0.0.1, ::1 or localhost",
                    );
                }
                if let Some(file) = ca_file {
                    let file = check.resolve(file);
                    if let Err(error) = std::fs::read(&file) {
                        check.problem(
                            "ca_file",
                            format!("cannot read {}: {error}", file.display()),
                            "point ca_file at a PEM file of CA certificates the daemon can read",
                        );
                    }
                }
                match (password_file, password_env) {
                    (Some(_), Some(_)) => check.problem(
                        "password_env",
                        "set password_file or password_env, not both",
                        "keep one source of the SMTP password",
                    ),
                    (Some(file), None) => check.secret_file("password_file", file),
                    (None, Some(var)) => check.secret_env("password_env", var),
                    (None, None) => {}
                }
                if (password_file.is_some() || password_env.is_some()) && username.is_none() {
                    check.problem(
                        "username",
                        "a password is set but no `username`",
                        "add username = \"…\" for the SMTP login",
                    );
                }
                if let Err(error) = from.parse::<lettre::message::Mailbox>() {
                    check.problem(
                        "from",
                        format!("{from:?} is not an email address: {error}"),
                        "write from = \"Digest <digest@example.com>\" or from = \"digest@example.com\"",
                    );
                }
                match to {
                    Recipients::Fixed(addresses) => {
                        if addresses.is_empty() {
                            check.problem(
                                "to",
                                "`to` lists no address",
                                "list at least one address, or write to = \"assignees\"",
                            );
                        }
                        for address in addresses {
                            if let Err(error) = address.parse::<lettre::message::Mailbox>() {
                                check.problem(
                                    "to",
                                    format!("{address:?} is not an email address: {error}"),
                                    "write addresses as \"name@example.com\"",
                                );
                            }
                        }
                    }
                    Recipients::Assignees(_) => {
                        if self.group_by != GroupBy::Assignee {
                            check.problem(
                                "to",
                                "to = \"assignees\" sends each assignee their own group, but the digest is not grouped by assignee",
                                "set group_by = \"assignee\", or list the addresses in `to`",
                            );
                        }
                    }
                }
            }
            Channel::AsanaStatus { parent, .. } => {
                if parent.is_none() && self.group_by != GroupBy::Project {
                    check.problem(
                        "parent",
                        "without `parent`, each project receives its own part as a status update, but the digest is not grouped by project",
                        "set parent = \"<project or portfolio gid>\", or group_by = \"project\"",
                    );
                }
            }
            Channel::AsanaComment { .. } => {}
        }
    }
}

/// Whether `host` names this machine.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
