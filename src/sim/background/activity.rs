//! The activity generator: other people working in the simulated organization, so the Events API
//! and `modified_since` have something to report while the simulator runs.
//!
//! Imports the state and the model; changes go through `SimState::edit` like every other writer.

use std::time::Duration;

use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sim::model::edit::Edit;
use crate::sim::model::world::mutate::TaskPatch;
use crate::sim::state::{SharedState, SimState};

/// Words the generated task names and comments start with.
const ACTIVITY_WORDS: &[&str] = &[
    "Draft", "Review", "Finalize", "Update", "Plan", "Check", "Ship", "Revise",
];

/// Starts the background activity generator: `timing.activity_per_minute` task changes per
/// simulated minute (renames, completions, reassignments, due dates, comments), each recording
/// its events, until `shutdown`.
pub fn spawn(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
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

/// One random change to a random live task by a random user, with its events.
fn generate_one(state: &SimState) {
    state.edit(|edit| {
        let live: Vec<String> = edit
            .world()
            .tasks
            .iter()
            .filter(|t| !t.deleted)
            .map(|t| t.gid.clone())
            .collect();
        let users = edit.world().users.len();
        if live.is_empty() || users == 0 {
            return;
        }
        let task = live[edit.rng().random_range(0..live.len())].clone();
        let user_index = edit.rng().random_range(0..users);
        let user = edit
            .world()
            .users
            .at(user_index)
            .map(|u| u.gid.clone())
            .unwrap_or_default();
        let action = edit.rng().random_range(0..5u8);
        let pick = edit.rng().random_range(0..1000u32);
        let word = ACTIVITY_WORDS[pick as usize % ACTIVITY_WORDS.len()];
        let patch = match action {
            0 => TaskPatch {
                name: Some(format!("{word} item {pick}")),
                ..TaskPatch::default()
            },
            1 => TaskPatch {
                completed: Some(!completed(edit, &task)),
                ..TaskPatch::default()
            },
            2 => TaskPatch {
                assignee: Some(Some(user.clone())),
                ..TaskPatch::default()
            },
            3 => TaskPatch {
                due_on: Some(Some(
                    (edit.now() + chrono::Duration::days(i64::from(pick % 60)))
                        .format("%Y-%m-%d")
                        .to_string(),
                )),
                ..TaskPatch::default()
            },
            _ => {
                let text = format!("{word}: simulated comment {pick}");
                edit.comment_on_task(&task, &user, &text, false);
                return;
            }
        };
        edit.change_task(&task, &patch, Some(&user));
    });
}

fn completed(edit: &Edit<'_>, task: &str) -> bool {
    edit.world().tasks.get(task).is_some_and(|t| t.completed)
}
