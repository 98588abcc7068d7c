//! A sync's checkpoint: where its pass is, its event tokens, when it last swept. Stored as JSON
//! in the target database (`_asana_worker_checkpoints`, key `sync`), committed with the rows.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What kind of pass is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// Everything is read (the first pass, and after a 412 on the workspace stream).
    Full,
    /// Tasks changed since the last sweep are read, and task lists compared with the mirror.
    Sweep,
}

/// A pass in progress: resumed at its first step not in `done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// Full or sweep.
    pub kind: PassKind,
    /// When it started (a sweep's watermark for the next one).
    pub started_at: DateTime<Utc>,
    /// A sweep reads tasks modified since this instant (None: all of them).
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Steps committed: workspace-level step names and `project:<gid>`.
    #[serde(default)]
    pub done: BTreeSet<String>,
}

/// Where the events come from, with their tokens.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Streams {
    /// No token taken yet.
    #[default]
    None,
    /// The workspace's stream.
    Workspace {
        /// Its token.
        sync: String,
    },
    /// Each project's stream (the token may not read the workspace's).
    Projects {
        /// Token per project gid.
        tokens: BTreeMap<String, String>,
    },
}

/// A sync's whole checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The pass in progress, if any.
    #[serde(default)]
    pub pass: Option<Pass>,
    /// Whether a full pass has completed (incremental runs start after it).
    #[serde(default)]
    pub complete: bool,
    /// Event tokens.
    #[serde(default)]
    pub streams: Streams,
    /// When the last completed full pass or sweep started.
    #[serde(default)]
    pub last_sweep_at: Option<DateTime<Utc>>,
    /// The projects in scope, as the last projects step found them.
    #[serde(default)]
    pub projects: BTreeSet<String>,
}
