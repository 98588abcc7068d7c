//! Typed methods for the endpoints the job kinds use. Lists return a [`ListWalk`] (pages or
//! items as streams); single objects are decoded from `data`.

use serde_json::{Value, json};

use super::client::{ApiRequest, AsanaClient, Idempotency, Query, decode_data, segment};
use super::error::AsanaError;
use super::pagination::{ListWalk, StopRule};
use super::types::{
    AuditLogFilter, BatchAction, BatchResult, EventsPage, Job, NewStatusUpdate, OrganizationExport,
    Resource, User, Workspace,
};
use crate::budget::RequestClass;

/// Most actions Asana accepts in one batch.
pub const MAX_BATCH_ACTIONS: usize = 10;

impl AsanaClient {
    /// `GET /users/me`: who the token acts as (also the cheapest credential check).
    pub async fn me(&self, opt_fields: &[&str]) -> Result<User, AsanaError> {
        let query = Query::new().opt_fields(opt_fields);
        self.data(&ApiRequest::get("/users/me", query)).await
    }

    /// `GET /workspaces`: the workspaces the token can see.
    pub fn workspaces(&self, opt_fields: &[&str]) -> ListWalk<Workspace> {
        ListWalk::new(
            self.clone(),
            "/workspaces",
            Query::new().opt_fields(opt_fields),
        )
    }

    /// `GET /workspaces/{gid}/users`: the workspace's users.
    pub fn workspace_users(&self, workspace_gid: &str, opt_fields: &[&str]) -> ListWalk<User> {
        ListWalk::new(
            self.clone(),
            format!("/workspaces/{}/users", segment(workspace_gid)),
            Query::new().opt_fields(opt_fields),
        )
    }

    /// `GET /users?workspace=`: users, optionally of one workspace.
    pub fn users(&self, workspace_gid: Option<&str>, opt_fields: &[&str]) -> ListWalk<User> {
        ListWalk::new(
            self.clone(),
            "/users",
            Query::new()
                .param_opt("workspace", workspace_gid)
                .opt_fields(opt_fields),
        )
    }

    /// `GET /workspaces/{gid}/audit_log_events`: events kept exactly as Asana returned them.
    /// The walk stops when a page is empty (Asana always sends `next_page` here); the last page's
    /// `next_offset` is where the next run resumes. Pass a stored offset to continue from it.
    pub fn audit_log_events(
        &self,
        workspace_gid: &str,
        filter: &AuditLogFilter,
        offset: Option<String>,
    ) -> ListWalk<Value> {
        let query = Query::new()
            .param_opt("start_at", filter.start_at.clone())
            .param_opt("end_at", filter.end_at.clone())
            .param_opt("event_type", filter.event_type.clone())
            .param_opt("actor_type", filter.actor_type.clone())
            .param_opt("actor_gid", filter.actor_gid.clone())
            .param_opt("resource_gid", filter.resource_gid.clone());
        ListWalk::new(
            self.clone(),
            format!("/workspaces/{}/audit_log_events", segment(workspace_gid)),
            query,
        )
        .stop_rule(StopRule::EmptyData)
        .from_offset(offset)
    }

    /// `POST /organization_exports`: starts an export of the whole organization. Not retried
    /// after a timeout or 5xx (a second export would start); take an export slot first.
    pub async fn create_organization_export(
        &self,
        organization_gid: &str,
    ) -> Result<OrganizationExport, AsanaError> {
        let request = ApiRequest::post(
            "/organization_exports",
            json!({ "organization": organization_gid }),
            Idempotency::NotIdempotent,
        )
        .starting_a_job();
        self.data(&request).await
    }

    /// `GET /organization_exports/{gid}`: the export's state and, once finished, its URL.
    pub async fn organization_export(&self, gid: &str) -> Result<OrganizationExport, AsanaError> {
        let path = format!("/organization_exports/{}", segment(gid));
        self.data(&ApiRequest::get(path, Query::new())).await
    }

    /// `POST /exports/graph`: exports a goal, team, portfolio or project graph; returns the job.
    pub async fn create_graph_export(&self, parent_gid: &str) -> Result<Job, AsanaError> {
        let request = ApiRequest::post(
            "/exports/graph",
            json!({ "parent": parent_gid }),
            Idempotency::NotIdempotent,
        )
        .starting_a_job();
        self.data(&request).await
    }

    /// `POST /exports/resource`: bulk export of objects; `parameters` is the
    /// `export_request_parameters` array as the spec defines it. Returns the job.
    pub async fn create_resource_export(
        &self,
        workspace_gid: &str,
        parameters: Vec<Value>,
    ) -> Result<Job, AsanaError> {
        let request = ApiRequest::post(
            "/exports/resource",
            json!({ "workspace": workspace_gid, "export_request_parameters": parameters }),
            Idempotency::NotIdempotent,
        )
        .starting_a_job();
        self.data(&request).await
    }

    /// `GET /jobs/{gid}`: status of an asynchronous job.
    pub async fn job(&self, gid: &str) -> Result<Job, AsanaError> {
        let path = format!("/jobs/{}", segment(gid));
        self.data(&ApiRequest::get(path, Query::new())).await
    }

    /// `GET /events?resource=&sync=`: the next events of a task, project or goal. Without `sync`
    /// (or with an expired one) Asana answers 412, returned as [`AsanaError::SyncExpired`] with
    /// the new token: re-read the data set and continue with it.
    pub async fn events(
        &self,
        resource_gid: &str,
        sync: Option<&str>,
        opt_fields: &[&str],
    ) -> Result<EventsPage, AsanaError> {
        let query = Query::new()
            .param("resource", resource_gid)
            .param_opt("sync", sync)
            .opt_fields(opt_fields);
        self.events_at("/events", query).await
    }

    /// `GET /workspaces/{gid}/events?sync=`: the workspace's event stream (same rules).
    pub async fn workspace_events(
        &self,
        workspace_gid: &str,
        sync: Option<&str>,
    ) -> Result<EventsPage, AsanaError> {
        let path = format!("/workspaces/{}/events", segment(workspace_gid));
        self.events_at(&path, Query::new().param_opt("sync", sync))
            .await
    }

    async fn events_at(&self, path: &str, query: Query) -> Result<EventsPage, AsanaError> {
        let body = self.execute(&ApiRequest::get(path, query)).await?;
        serde_json::from_value(body).map_err(|e| AsanaError::Decode {
            context: path.to_string(),
            message: e.to_string(),
        })
    }

    /// `GET /tasks?project=&modified_since=`: a project's tasks, optionally only those modified
    /// since a time (RFC 3339). On an expired offset the walk can restart with `modified_since`
    /// set from the last task seen (see [`ListWalk::on_offset_expired`]).
    pub fn project_tasks(
        &self,
        project_gid: &str,
        modified_since: Option<&str>,
        opt_fields: &[&str],
    ) -> ListWalk<Resource> {
        ListWalk::new(
            self.clone(),
            "/tasks",
            Query::new()
                .param("project", project_gid)
                .param_opt("modified_since", modified_since)
                .opt_fields(opt_fields),
        )
    }

    /// `GET /tasks/{gid}`: one task.
    pub async fn task(&self, gid: &str, opt_fields: &[&str]) -> Result<Resource, AsanaError> {
        let path = format!("/tasks/{}", segment(gid));
        self.data(&ApiRequest::get(path, Query::new().opt_fields(opt_fields)))
            .await
    }

    /// `GET /tasks/{gid}/stories`: a task's stories (comments and system stories).
    pub fn task_stories(&self, task_gid: &str, opt_fields: &[&str]) -> ListWalk<Resource> {
        ListWalk::new(
            self.clone(),
            format!("/tasks/{}/stories", segment(task_gid)),
            Query::new().opt_fields(opt_fields),
        )
    }

    /// `POST /status_updates`: posts a status update. Not idempotent (each call notifies the
    /// followers again), so only 429s are retried unless the caller says otherwise.
    pub async fn create_status_update(
        &self,
        update: &NewStatusUpdate,
        idempotency: Idempotency,
    ) -> Result<Resource, AsanaError> {
        let data = serde_json::to_value(update).map_err(|e| AsanaError::Decode {
            context: "status update".into(),
            message: e.to_string(),
        })?;
        self.data(&ApiRequest::post("/status_updates", data, idempotency))
            .await
    }

    /// `GET /workspaces/{gid}/tasks/search`: premium-only (402 otherwise), 60 per minute (its own
    /// bucket), at most 100 results and no pagination. `filters` are the search parameters
    /// (`text`, `projects.any`, `modified_at.after`, `sort_by`, …).
    pub async fn search_tasks(
        &self,
        workspace_gid: &str,
        filters: Query,
        opt_fields: &[&str],
    ) -> Result<Vec<Resource>, AsanaError> {
        let path = format!("/workspaces/{}/tasks/search", segment(workspace_gid));
        let request =
            ApiRequest::get(path, filters.opt_fields(opt_fields)).class(RequestClass::Search);
        self.data(&request).await
    }

    /// `POST /batch`: up to 10 actions in one request, counted as that many requests by the
    /// budget. Retried after transient failures only when every action is a GET. Each result has
    /// its own status.
    pub async fn batch(&self, actions: &[BatchAction]) -> Result<Vec<BatchResult>, AsanaError> {
        if actions.is_empty() || actions.len() > MAX_BATCH_ACTIONS {
            return Err(AsanaError::BadRequest {
                message: format!(
                    "a batch takes 1 to {MAX_BATCH_ACTIONS} actions, got {}",
                    actions.len()
                ),
            });
        }
        let all_reads = actions
            .iter()
            .all(|a| a.method.eq_ignore_ascii_case("get") || a.method.eq_ignore_ascii_case("head"));
        let idempotency = if all_reads {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        let mut request = ApiRequest::post("/batch", json!({ "actions": actions }), idempotency);
        request.cost = actions.len() as u32;
        let body = self.execute(&request).await?;
        decode_data(body, "/batch")
    }
}
