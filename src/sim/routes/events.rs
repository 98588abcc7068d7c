//! Events API: `GET /events?resource=&sync=` (and its `/tasks/{gid}/events`,
//! `/projects/{gid}/events` forms) and `GET /workspaces/{gid}/events?sync=`, fed by task writes,
//! new comments, the admin API and a background activity generator.
//!
//! Asana's contract, as the simulator keeps it: the first call (no sync token) and any call with an
//! unknown or expired token answer `412` with a fresh `sync`; a valid token returns the events since
//! it was issued, at most 100 (1,000 for the workspace stream) with `has_more`; asking again with
//! the same token returns exactly the same answer; events of a task also appear in the streams of
//! its parent tasks and projects; tokens expire after `timing.sync_token_ttl_secs` simulated seconds.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Params;
use super::tasks::parse_patch;
use crate::sim::state::{SharedState, SimState};
use crate::sim::wire::{self, ApiError, ApiResult, Detail, reference};
use crate::sim::world::{self, FieldChange, NewTask, TaskPatch, World, timestamp};

/// Asana's 412 message for a missing, unknown or expired sync token.
pub const SYNC_INVALID_MESSAGE: &str = "Sync token invalid or too old. If you are attempting to keep \
resources in sync, you must fetch the full dataset for this query now and use the new sync token \
for the next sync.";

/// Events per answer on a task or project stream.
pub const RESOURCE_EVENTS_CAP: usize = 100;

/// Events per answer on the workspace stream.
pub const WORKSPACE_EVENTS_CAP: usize = 1000;

/// Longest sync-token lifetime honoured (a century); larger configured values are capped.
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// Most events kept in memory; older ones are dropped (tokens that still need them get a 412).
const MAX_RETAINED_EVENTS: usize = 200_000;

/// An event in the log.
#[derive(Debug, Clone)]
struct StoredEvent {
    /// Position in the log; sync tokens point between positions.
    seq: u64,
    /// When it happened (simulated), for retention.
    created_at: DateTime<Utc>,
    /// Gids of the streams it belongs to (resource, ancestors, projects, workspace).
    streams: Vec<String>,
    /// `EventResponse` as shallow JSON (the user as a reference marker).
    body: Value,
}

/// An issued sync token.
#[derive(Debug, Clone)]
struct SyncToken {
    /// The stream it was issued for.
    stream: String,
    /// Events with a greater seq are new to its holder.
    after: u64,
    /// When it was issued, for expiry.
    issued_at: DateTime<Utc>,
    /// The first answer given for it, repeated for every later use of the same token.
    answer: Option<Answer>,
}

/// What a valid sync token answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Shallow event bodies, oldest first.
    pub events: Vec<Value>,
    /// The token for the next call.
    pub sync: String,
    /// Whether more events were waiting than the cap allowed.
    pub has_more: bool,
}

/// An event ready to be logged.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Streams it belongs to; the workspace stream is added by the log.
    pub streams: Vec<String>,
    /// When it happened.
    pub created_at: DateTime<Utc>,
    /// `EventResponse` as shallow JSON.
    pub body: Value,
}

/// Event log and issued sync tokens.
#[derive(Debug, Default)]
pub struct EventLog {
    events: VecDeque<StoredEvent>,
    /// Seq of the last event logged (0 = none yet).
    last_seq: u64,
    tokens: HashMap<String, SyncToken>,
    /// Tokens issued so far, for unique token strings.
    issued: u64,
    /// Seq of the newest event dropped by retention (tokens pointing before it are stale).
    dropped_through: u64,
}

impl EventLog {
    /// Appends an event that also belongs to the `workspace` stream.
    pub fn push(&mut self, event: NewEvent, workspace: &str) {
        self.last_seq += 1;
        let mut streams = event.streams;
        if !streams.iter().any(|s| s == workspace) {
            streams.push(workspace.to_string());
        }
        self.events.push_back(StoredEvent {
            seq: self.last_seq,
            created_at: event.created_at,
            streams,
            body: event.body,
        });
        while self.events.len() > MAX_RETAINED_EVENTS {
            if let Some(old) = self.events.pop_front() {
                self.dropped_through = old.seq;
            }
        }
    }

    /// How many events are retained.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no events are retained.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn issue(&mut self, stream: &str, after: u64, now: DateTime<Utc>) -> String {
        self.issued += 1;
        let digest = Sha256::digest(format!("{stream}:{after}:{}:{now}", self.issued).as_bytes());
        let token = format!("{}:0", hex::encode(&digest[..16]));
        self.tokens.insert(
            token.clone(),
            SyncToken {
                stream: stream.to_string(),
                after,
                issued_at: now,
                answer: None,
            },
        );
        token
    }

    fn prune(&mut self, now: DateTime<Utc>, ttl: chrono::Duration) {
        self.tokens.retain(|_, token| now - token.issued_at < ttl);
        // Events older than two token lifetimes can only be needed by expired tokens.
        while self
            .events
            .front()
            .is_some_and(|e| now - e.created_at > ttl * 2)
        {
            if let Some(old) = self.events.pop_front() {
                self.dropped_through = old.seq;
            }
        }
    }

    /// Answers a read of `stream` with `sync` at `now`: the (repeatable) answer for a valid token,
    /// or `Err(fresh token)` when the token is missing, unknown, expired, issued for another
    /// stream, or points at events no longer retained.
    pub fn read(
        &mut self,
        stream: &str,
        sync: Option<&str>,
        cap: usize,
        now: DateTime<Utc>,
        ttl_secs: u64,
    ) -> Result<Answer, String> {
        // Capped at a century so the arithmetic below cannot overflow whatever the config says.
        let ttl = chrono::Duration::seconds(ttl_secs.min(MAX_TTL_SECS) as i64);
        self.prune(now, ttl);
        let valid = sync.and_then(|token| {
            self.tokens
                .get(token)
                .filter(|t| t.stream == stream && t.after >= self.dropped_through)
                .map(|t| (token.to_string(), t.after, t.answer.clone()))
        });
        let Some((token, after, cached)) = valid else {
            return Err(self.issue(stream, self.last_seq, now));
        };
        if let Some(answer) = cached {
            return Ok(answer);
        }
        let mut matching = self
            .events
            .iter()
            .filter(|e| e.seq > after && e.streams.iter().any(|s| s == stream));
        let taken: Vec<&StoredEvent> = matching.by_ref().take(cap).collect();
        let has_more = matching.next().is_some();
        let last = taken.last().map(|e| e.seq).unwrap_or(after);
        let events = taken.iter().map(|e| e.body.clone()).collect();
        let next = self.issue(stream, last, now);
        let answer = Answer {
            events,
            sync: next,
            has_more,
        };
        if let Some(entry) = self.tokens.get_mut(&token) {
            entry.answer = Some(answer.clone());
        }
        Ok(answer)
    }
}

/// Appends events to the simulator's log.
pub fn emit(state: &SimState, events: Vec<NewEvent>) {
    if events.is_empty() {
        return;
    }
    let workspace = state.world().workspace.gid.clone();
    let mut log = state
        .extensions
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    for event in events {
        log.push(event, &workspace);
    }
}

/// The `resource`/`parent` object of an event: a snapshot of the object's name at event time.
fn named(world: &World, gid: &str) -> Value {
    let Some(kind) = world.kind_of(gid) else {
        return json!({ "gid": gid });
    };
    let mut out = Map::new();
    out.insert("gid".into(), json!(gid));
    out.insert("resource_type".into(), json!(kind));
    match kind {
        "task" => {
            if let Some(task) = world.tasks.get(gid) {
                out.insert("name".into(), json!(task.name));
                out.insert("resource_subtype".into(), json!(task.resource_subtype));
            }
        }
        "story" => {
            if let Some(story) = world.stories.get(gid) {
                out.insert("resource_subtype".into(), json!(story.resource_subtype));
            }
        }
        "project" => {
            if let Some(project) = world.projects.get(gid) {
                out.insert("name".into(), json!(project.name));
            }
        }
        "section" => {
            if let Some(section) = world.sections.get(gid) {
                out.insert("name".into(), json!(section.name));
            }
        }
        _ => {}
    }
    Value::Object(out)
}

fn event_body(
    world: &World,
    user: Option<&str>,
    resource: &str,
    action: &str,
    parent: Option<&str>,
    change: Option<Value>,
    now: DateTime<Utc>,
) -> Value {
    let resource_json = named(world, resource);
    let mut body = json!({
        "user": user.map(reference).unwrap_or(Value::Null),
        "created_at": timestamp(now),
        "action": action,
        "resource": resource_json,
        "type": world.kind_of(resource).unwrap_or("task"),
        "parent": parent.map(|p| named(world, p)).unwrap_or(Value::Null),
    });
    if let (Some(change), Value::Object(map)) = (change, &mut body) {
        map.insert("change".into(), change);
    }
    body
}

/// `changed` events for fields of a task, one per changed field.
pub fn task_changed_events(
    world: &World,
    task: &str,
    user: Option<&str>,
    changes: &[FieldChange],
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let streams = world.task_streams(task);
    changes
        .iter()
        .map(|change| NewEvent {
            streams: streams.clone(),
            created_at: now,
            body: event_body(
                world,
                user,
                task,
                "changed",
                None,
                Some(json!({"field": change.field, "action": "changed", "new_value": change.new_value})),
                now,
            ),
        })
        .collect()
}

/// `added` events for a new task: one per project it was added to, or one for its parent task.
pub fn task_added_events(
    world: &World,
    task: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let streams = world.task_streams(task);
    let Some(record) = world.tasks.get(task) else {
        return Vec::new();
    };
    let mut parents: Vec<String> = record.memberships.iter().map(|(p, _)| p.clone()).collect();
    if let Some(parent) = &record.parent {
        parents.push(parent.clone());
    }
    if parents.is_empty() {
        return vec![NewEvent {
            streams,
            created_at: now,
            body: event_body(world, user, task, "added", None, None, now),
        }];
    }
    parents
        .iter()
        .map(|parent| NewEvent {
            streams: streams.clone(),
            created_at: now,
            body: event_body(world, user, task, "added", Some(parent), None, now),
        })
        .collect()
}

/// The `added` event of a new story on a task (it bubbles up to the task's streams).
pub fn story_added_events(
    world: &World,
    story: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let Some(record) = world.stories.get(story) else {
        return Vec::new();
    };
    vec![NewEvent {
        streams: world.task_streams(&record.target),
        created_at: now,
        body: event_body(world, user, story, "added", Some(&record.target), None, now),
    }]
}

/// Changes a task and records the events: what `PUT /tasks/{gid}`, the admin API and the activity
/// generator all go through. `None` when the task does not exist.
pub fn change_task(
    state: &SimState,
    gid: &str,
    patch: &TaskPatch,
    user: Option<&str>,
) -> Option<Vec<FieldChange>> {
    let now = state.clock.now();
    let (changes, events) = {
        let mut world = state.world_mut();
        let changes = world.update_task(gid, patch, now)?;
        let events = task_changed_events(&world, gid, user, &changes, now);
        (changes, events)
    };
    emit(state, events);
    Some(changes)
}

/// Deletes a task and records its `deleted` event. `false` when there was no live task.
pub fn delete_task(state: &SimState, gid: &str, user: Option<&str>) -> bool {
    let now = state.clock.now();
    let event = {
        let mut world = state.world_mut();
        let streams = world.task_streams(gid);
        let body = event_body(&world, user, gid, "deleted", None, None, now);
        if !world.delete_task(gid, now) {
            return false;
        }
        NewEvent {
            streams,
            created_at: now,
            body,
        }
    };
    emit(state, vec![event]);
    true
}

/// Creates a task and records its `added` events.
pub fn create_task(state: &SimState, new: NewTask, user: Option<&str>) -> String {
    let now = state.clock.now();
    let (gid, events) = {
        let mut world = state.world_mut();
        let gid = world.create_task(new, now);
        let events = task_added_events(&world, &gid, user, now);
        (gid, events)
    };
    emit(state, events);
    gid
}

/// Adds a comment to a task and records its event. `None` when the task does not exist.
pub fn comment_on_task(
    state: &SimState,
    task: &str,
    author: &str,
    text: &str,
    is_pinned: bool,
) -> Option<String> {
    let now = state.clock.now();
    let (gid, events) = {
        let mut world = state.world_mut();
        let gid = world.add_comment(task, author, text, is_pinned, now)?;
        let events = story_added_events(&world, &gid, Some(author), now);
        (gid, events)
    };
    emit(state, events);
    Some(gid)
}

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/events", get(resource_events))
        .route("/tasks/{task_gid}/events", get(task_events))
        .route("/projects/{project_gid}/events", get(project_events))
        .route("/workspaces/{workspace_gid}/events", get(workspace_events))
}

async fn resource_events(
    State(state): State<SharedState>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    let resource = params.require("resource")?.to_string();
    stream_events(&state, &params, &resource, false)
}

async fn task_events(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    if state.world().kind_of(&task_gid) != Some("task") {
        return Err(ApiError::not_found("task"));
    }
    stream_events(&state, &params, &task_gid, false)
}

async fn project_events(
    State(state): State<SharedState>,
    Path(project_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    if state.world().kind_of(&project_gid) != Some("project") {
        return Err(ApiError::not_found("project"));
    }
    stream_events(&state, &params, &project_gid, false)
}

async fn workspace_events(
    State(state): State<SharedState>,
    Path(workspace_gid): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> ApiResult {
    let params = Params::parse(query)?;
    super::support::require_workspace(&state.world(), &workspace_gid)?;
    stream_events(&state, &params, &workspace_gid, true)
}

fn stream_events(state: &SimState, params: &Params, stream: &str, workspace: bool) -> ApiResult {
    if !workspace {
        match state.world().kind_of(stream) {
            Some("task" | "project") => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "resource: Events are only available for tasks, projects and goals.",
                ));
            }
            None => return Err(ApiError::not_found("resource")),
        }
    }
    let cap = if workspace {
        WORKSPACE_EVENTS_CAP
    } else {
        RESOURCE_EVENTS_CAP
    };
    let answer = {
        let mut log = state
            .extensions
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        log.read(
            stream,
            params.get("sync"),
            cap,
            state.clock.now(),
            state.config.timing.sync_token_ttl_secs,
        )
    };
    match answer {
        Err(fresh) => Err(
            ApiError::new(StatusCode::PRECONDITION_FAILED, SYNC_INVALID_MESSAGE)
                .with_field("sync", json!(fresh)),
        ),
        Ok(answer) => {
            let world = state.world();
            let data: Vec<Value> = answer
                .events
                .iter()
                .map(|body| render_event(&world, body, params))
                .collect();
            Ok(axum::Json(json!({
                "data": data,
                "sync": answer.sync,
                "has_more": answer.has_more,
            }))
            .into_response())
        }
    }
}

fn render_event(world: &World, body: &Value, params: &Params) -> Value {
    const ALL: &[&str] = &[
        "user",
        "resource",
        "type",
        "action",
        "parent",
        "created_at",
        "change",
    ];
    wire::project(body, ALL, params.fields(), Detail::Full, world)
}

/// `POST /_sim/tasks/{gid}`: changes a task as another user would (a JSON object of fields:
/// `name`, `notes`, `completed`, `assignee`, `due_on`; optional `user` gid as the actor,
/// `comment` text to add a comment too, or `"deleted": true` to delete it) and records the
/// events. Answers the task's writable fields and `modified_at`, and the names of the fields that
/// changed.
pub async fn admin_change_task(
    State(state): State<SharedState>,
    Path(task_gid): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let admin_error = |status: StatusCode, message: String| {
        (status, axum::Json(json!({ "error": message }))).into_response()
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => {
            return admin_error(StatusCode::BAD_REQUEST, format!("invalid JSON: {error}"));
        }
    };
    let fields = match value.get("data").cloned().unwrap_or(value) {
        Value::Object(map) => map,
        _ => return admin_error(StatusCode::BAD_REQUEST, "expected a JSON object".into()),
    };
    let user = fields
        .get("user")
        .and_then(Value::as_str)
        .map(str::to_string);
    let patch = {
        let world = state.world();
        if world.tasks.get(&task_gid).is_none_or(|t| t.deleted) {
            return admin_error(StatusCode::NOT_FOUND, format!("no task {task_gid}"));
        }
        match parse_patch(&world, None, &fields) {
            Ok(patch) => patch,
            Err(error) => return admin_error(StatusCode::BAD_REQUEST, error.message),
        }
    };
    if fields.get("deleted") == Some(&Value::Bool(true)) {
        delete_task(&state, &task_gid, user.as_deref());
        return axum::Json(json!({ "data": { "gid": task_gid }, "changed": ["deleted"] }))
            .into_response();
    }
    let Some(changes) = change_task(&state, &task_gid, &patch, user.as_deref()) else {
        return admin_error(StatusCode::NOT_FOUND, format!("no task {task_gid}"));
    };
    if let Some(Value::String(text)) = fields.get("comment") {
        let author = user.clone().unwrap_or_else(|| {
            let world = state.world();
            world.users.at(0).map(|u| u.gid.clone()).unwrap_or_default()
        });
        comment_on_task(&state, &task_gid, &author, text, false);
    }
    let world = state.world();
    // The writable fields only: tests call this in bulk, and a full task is costly to render.
    let fields =
        wire::FieldTree::parse("name,notes,completed,completed_at,assignee,due_on,modified_at")
            .ok();
    let task =
        world::render(&world, &task_gid, fields.as_ref(), Detail::Full).unwrap_or(Value::Null);
    let changed: Vec<&str> = changes.iter().map(|c| c.field).collect();
    axum::Json(json!({ "data": task, "changed": changed })).into_response()
}

/// Starts the background activity generator: `timing.activity_per_minute` task changes per
/// simulated minute (renames, completions, reassignments, due dates, comments), each recording
/// its events, until `shutdown`.
pub fn spawn_activity(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let rate = state.config.timing.activity_per_minute;
    if !(rate.is_finite() && rate > 0.0) {
        return;
    }
    let state = state.clone();
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let start = state.clock.sim_secs();
        let interval = state
            .clock
            .to_real(Duration::from_secs_f64((60.0 / rate).min(3600.0)))
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut done: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
            }
            let elapsed_minutes = (state.clock.sim_secs() - start) / 60.0;
            let due = (elapsed_minutes * rate).floor() as u64;
            for _ in 0..due.saturating_sub(done).min(1000) {
                generate_one(&state);
            }
            done = due;
        }
    });
}

const ACTIVITY_WORDS: &[&str] = &[
    "Draft", "Review", "Finalize", "Update", "Plan", "Check", "Ship", "Revise",
];

/// One random change to a random live task, with its events.
fn generate_one(state: &SimState) {
    let now = state.clock.now();
    let (task, user, action, pick) = {
        let mut world = state.world_mut();
        let live: Vec<String> = world
            .tasks
            .iter()
            .filter(|t| !t.deleted)
            .map(|t| t.gid.clone())
            .collect();
        if live.is_empty() || world.users.is_empty() {
            return;
        }
        let task = live[world.rng.random_range(0..live.len())].clone();
        let users = world.users.len();
        let user_index = world.rng.random_range(0..users);
        let user = world
            .users
            .at(user_index)
            .map(|u| u.gid.clone())
            .unwrap_or_default();
        let action = world.rng.random_range(0..5u8);
        let pick = world.rng.random_range(0..1000u32);
        (task, user, action, pick)
    };
    let word = ACTIVITY_WORDS[pick as usize % ACTIVITY_WORDS.len()];
    let patch = match action {
        0 => TaskPatch {
            name: Some(format!("{word} item {pick}")),
            ..TaskPatch::default()
        },
        1 => {
            let completed = state.world().tasks.get(&task).is_some_and(|t| t.completed);
            TaskPatch {
                completed: Some(!completed),
                ..TaskPatch::default()
            }
        }
        2 => TaskPatch {
            assignee: Some(Some(user.clone())),
            ..TaskPatch::default()
        },
        3 => TaskPatch {
            due_on: Some(Some(
                (now + chrono::Duration::days(i64::from(pick % 60)))
                    .format("%Y-%m-%d")
                    .to_string(),
            )),
            ..TaskPatch::default()
        },
        _ => {
            comment_on_task(
                state,
                &task,
                &user,
                &format!("{word}: simulated comment {pick}"),
                false,
            );
            return;
        }
    };
    change_task(state, &task, &patch, Some(&user));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(streams: &[&str], n: u64) -> NewEvent {
        NewEvent {
            streams: streams.iter().map(|s| s.to_string()).collect(),
            created_at: DateTime::UNIX_EPOCH,
            body: json!({ "n": n }),
        }
    }

    #[test]
    fn tokens_are_repeatable_capped_and_scoped_to_their_stream() {
        let mut log = EventLog::default();
        let now = DateTime::UNIX_EPOCH;
        let first = log.read("p", None, 2, now, 60).unwrap_err();
        for n in 0..3 {
            log.push(event(&["p"], n), "w");
        }
        log.push(event(&["q"], 9), "w");
        let answer = log.read("p", Some(&first), 2, now, 60).unwrap();
        assert_eq!(answer.events.len(), 2);
        assert!(answer.has_more);
        log.push(event(&["p"], 3), "w");
        assert_eq!(log.read("p", Some(&first), 2, now, 60).unwrap(), answer);
        let rest = log.read("p", Some(&answer.sync), 2, now, 60).unwrap();
        assert_eq!(rest.events, vec![json!({"n": 2}), json!({"n": 3})]);
        assert!(!rest.has_more);
        assert!(log.read("q", Some(&rest.sync), 2, now, 60).is_err());
        let later = now + chrono::Duration::seconds(61);
        assert!(log.read("p", Some(&rest.sync), 2, later, 60).is_err());
    }
}
