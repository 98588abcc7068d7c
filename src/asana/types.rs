//! Typed views of the resources the job kinds read and write. Every struct keeps the fields it
//! does not name in `other`, so what `opt_fields` asked for is never lost on the way to a sink.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Any Asana object (task, story, project, …) as returned: `gid` plus whatever fields were asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// Globally unique id.
    pub gid: String,
    /// `resource_type`, when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    /// Every other field, as Asana sent it.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A user (`/users/me`, `/users`, `/workspaces/{gid}/users`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Globally unique id.
    pub gid: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Email, when the token may see it.
    #[serde(default)]
    pub email: Option<String>,
    /// Workspaces of the user (on `/users/me` and full user records).
    #[serde(default)]
    pub workspaces: Option<Vec<Resource>>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// A workspace or organization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    /// Globally unique id.
    pub gid: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether it is an organization (needed for org exports and the audit log).
    #[serde(default)]
    pub is_organization: Option<bool>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Filters of `GET /workspaces/{gid}/audit_log_events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditLogFilter {
    /// Events created at or after this time (RFC 3339).
    pub start_at: Option<String>,
    /// Events created before this time (RFC 3339).
    pub end_at: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this actor type (`user`, `asana`, `asana_support`, `anonymous`, `external_administrator`).
    pub actor_type: Option<String>,
    /// Only this actor.
    pub actor_gid: Option<String>,
    /// Only this resource.
    pub resource_gid: Option<String>,
}

/// State of an organization export (`pending`, `started`, `finished`, `error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationExport {
    /// Globally unique id.
    pub gid: String,
    /// `pending` | `started` | `finished` | `error`.
    #[serde(default)]
    pub state: Option<String>,
    /// Presigned URL once finished; short-lived, never persist it.
    #[serde(default)]
    pub download_url: Option<String>,
    /// When it was requested.
    #[serde(default)]
    pub created_at: Option<String>,
    /// The organization.
    #[serde(default)]
    pub organization: Option<Resource>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An asynchronous job (`/jobs/{gid}`; graph and resource exports are jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Globally unique id.
    pub gid: String,
    /// `not_started` | `in_progress` | `succeeded` | `failed`.
    #[serde(default)]
    pub status: Option<String>,
    /// e.g. `export_request`, `duplicate_task`.
    #[serde(default)]
    pub resource_subtype: Option<String>,
    /// The graph export this job produces.
    #[serde(default)]
    pub new_graph_export: Option<ExportFile>,
    /// The resource export this job produces.
    #[serde(default)]
    pub new_resource_export: Option<ExportFile>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// The file of a graph or resource export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportFile {
    /// Globally unique id.
    pub gid: String,
    /// Presigned URL once the job succeeded; short-lived.
    #[serde(default)]
    pub download_url: Option<String>,
    /// When it was created.
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it completed.
    #[serde(default)]
    pub completed_at: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One response of the events API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// The events, as Asana sent them.
    pub data: Vec<Value>,
    /// The token for the next call.
    pub sync: String,
    /// Whether more events are waiting (call again at once with `sync`).
    #[serde(default)]
    pub has_more: bool,
}

/// A status update to post on a project, portfolio or goal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStatusUpdate {
    /// The project, portfolio or goal.
    pub parent: String,
    /// `on_track`, `at_risk`, `off_track`, `on_hold`, `complete`, `achieved`, `partial`,
    /// `missed` or `dropped`.
    pub status_type: String,
    /// Plain text body.
    pub text: String,
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Rich text body (`<body>…</body>`), instead of `text` formatting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html_text: Option<String>,
}

/// One action of a batch request (at most 10 per batch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAction {
    /// Path below the base URL, without a query string (e.g. `/tasks/123`).
    pub relative_path: String,
    /// `get`, `post`, `put`, `delete`, `patch` or `head`.
    pub method: String,
    /// Body for writes, or query parameters for GETs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// `limit`, `offset`, `fields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Value>,
}

impl BatchAction {
    /// A GET of `relative_path` with `fields`.
    pub fn get(relative_path: impl Into<String>, fields: &[&str]) -> Self {
        Self {
            relative_path: relative_path.into(),
            method: "get".into(),
            data: None,
            options: (!fields.is_empty()).then(|| serde_json::json!({ "fields": fields })),
        }
    }
}

/// One result of a batch: each action has its own status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResult {
    /// The action's HTTP status.
    pub status_code: u16,
    /// Its headers (e.g. `location`).
    #[serde(default)]
    pub headers: Option<Map<String, Value>>,
    /// Its body (`{"data": …}` or `{"errors": […]}`).
    #[serde(default)]
    pub body: Value,
}
