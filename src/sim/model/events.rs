//! The Events API's model: the event log every change to a task is recorded in, the sync tokens
//! issued over it, and the event bodies Asana sends for task and story changes.
//!
//! Asana's contract, as the log keeps it: a read without a token, or with an unknown, expired or
//! foreign one, gets a fresh token and no events; a valid token returns the events since it was
//! issued, at most `cap`, with `has_more`; reading again with the same token returns exactly the
//! same answer; events of a task also belong to the streams of its parent tasks and projects, and
//! every event to the workspace stream.
//!
//! Part of the model layer: imports [`super::world`] and [`crate::sim::wire`] (reference markers)
//! only. What records events as the world changes is [`super::edit`].

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::world::World;
use super::world::mutate::FieldChange;
use crate::sim::wire::{reference, timestamp};

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

/// The `deleted` event of a task, built before the task goes to the trash.
pub fn task_deleted_event(
    world: &World,
    task: &str,
    user: Option<&str>,
    now: DateTime<Utc>,
) -> NewEvent {
    NewEvent {
        streams: world.task_streams(task),
        created_at: now,
        body: event_body(world, user, task, "deleted", None, None, now),
    }
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
