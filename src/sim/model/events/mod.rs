//! The Events API's model: the event log every change is recorded in, the sync tokens issued over
//! it, and ([`bodies`]) the events Asana sends for each kind of change.
//!
//! Asana's contract, as the log keeps it: a read without a token, or with an unknown, expired or
//! foreign one, gets a fresh token and no events; a valid token returns the events since it was
//! issued, at most `cap`, with `has_more`; reading again with the same token returns exactly the
//! same answer; events of a task also belong to the streams of its parent tasks and projects, and
//! every event to the workspace stream. Events are delivered at most once: a configurable share
//! of them is lost as they happen (a fault), and the tokens of a stream can be expired at will.
//!
//! Part of the model layer: [`bodies`] imports [`super::world`] and [`crate::sim::wire`]
//! (reference markers); this file imports neither. What records events as the world changes is
//! [`super::edit`].

pub mod bodies;

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

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
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<StoredEvent>,
    /// Seq of the last event logged (0 = none yet).
    last_seq: u64,
    tokens: HashMap<String, SyncToken>,
    /// Tokens issued so far, for unique token strings.
    issued: u64,
    /// Seq of the newest event dropped by retention (tokens pointing before it are stale).
    dropped_through: u64,
    /// Decides which events are lost when a loss rate is set; seeded, so a run that makes the
    /// same changes loses the same events.
    loss: ChaCha8Rng,
    /// Events lost so far.
    lost: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            last_seq: 0,
            tokens: HashMap::new(),
            issued: 0,
            dropped_through: 0,
            loss: ChaCha8Rng::seed_from_u64(0x1055),
            lost: 0,
        }
    }
}

/// Counters of the log, for the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LogStats {
    /// Events retained (deliverable to tokens that still point before them).
    pub retained: usize,
    /// Events lost as they happened (the `drop_events` fault).
    pub lost: u64,
    /// Sync tokens currently valid or not yet pruned.
    pub tokens: usize,
}

impl EventLog {
    /// Logs an event (which also belongs to the `workspace` stream) unless it is lost: each event
    /// is lost with probability `loss_rate`, as Asana delivers events at most once. Returns
    /// whether it was logged.
    pub fn record(&mut self, event: NewEvent, workspace: &str, loss_rate: f64) -> bool {
        if loss_rate > 0.0 && self.loss.random_bool(loss_rate.min(1.0)) {
            self.lost += 1;
            return false;
        }
        self.push(event, workspace);
        true
    }

    /// Forgets every sync token issued for `stream`, so its next read answers 412 with a fresh
    /// token (as when Asana expires tokens early under load). Returns how many there were.
    pub fn expire_stream(&mut self, stream: &str) -> usize {
        let before = self.tokens.len();
        self.tokens.retain(|_, token| token.stream != stream);
        before - self.tokens.len()
    }

    /// The log's counters.
    pub fn stats(&self) -> LogStats {
        LogStats {
            retained: self.events.len(),
            lost: self.lost,
            tokens: self.tokens.len(),
        }
    }

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

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    #[test]
    fn lost_events_reach_no_stream_and_expired_streams_answer_412() {
        let mut log = EventLog::default();
        let now = DateTime::UNIX_EPOCH;
        let token = log.read("p", None, 100, now, 60).unwrap_err();
        let kept = (0..1000u64)
            .filter(|&n| log.record(event(&["p"], n), "w", 0.3))
            .count();
        assert!(
            (600..800).contains(&kept),
            "kept {kept} of 1000 at 30% loss"
        );
        assert_eq!(log.stats().lost, 1000 - kept as u64);
        assert!(log.record(event(&["p"], 0), "w", 0.0));
        assert!(!log.record(event(&["p"], 0), "w", 1.0));
        assert_eq!(log.expire_stream("p"), 1);
        assert!(log.read("p", Some(&token), 100, now, 60).is_err());
    }
}
