//! Changes to the world that Asana reports through the Events API. [`Edit`] holds the world and
//! the event log together, so every writer (the task and story routes, the admin API, the activity
//! generator) records the same events for the same change and none can forget them.
//!
//! Part of the model layer: imports [`super::world`] and [`super::events`] only. The state layer
//! takes the locks and hands an `Edit` out (`SimState::edit`).

use chrono::{DateTime, Utc};
use rand_chacha::ChaCha8Rng;

use super::events::{
    EventLog, NewEvent, story_added_events, task_added_events, task_changed_events,
    task_deleted_event,
};
use super::world::World;
use super::world::mutate::{FieldChange, NewTask, TaskPatch};

/// The world and its event log, borrowed together for one change made at `now`.
#[derive(Debug)]
pub struct Edit<'a> {
    world: &'a mut World,
    log: &'a mut EventLog,
    now: DateTime<Utc>,
}

impl<'a> Edit<'a> {
    /// An edit of `world` recording into `log`, at simulated time `now`.
    pub fn new(world: &'a mut World, log: &'a mut EventLog, now: DateTime<Utc>) -> Self {
        Self { world, log, now }
    }

    /// The world as it stands, for checks and rendering inside the same change.
    pub fn world(&self) -> &World {
        self.world
    }

    /// When the change happens.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// The world's seeded random source, for generated activity.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.world.rng
    }

    fn record(&mut self, events: Vec<NewEvent>) {
        for event in events {
            self.log.push(event, &self.world.workspace.gid);
        }
    }

    /// Changes a live task by `user` (`None`: nobody in particular) and records a `changed` event
    /// per changed field. `None` when the task does not exist.
    pub fn change_task(
        &mut self,
        gid: &str,
        patch: &TaskPatch,
        user: Option<&str>,
    ) -> Option<Vec<FieldChange>> {
        let changes = self.world.update_task(gid, patch, self.now)?;
        let events = task_changed_events(self.world, gid, user, &changes, self.now);
        self.record(events);
        Some(changes)
    }

    /// Creates a task and records its `added` events; returns its gid.
    pub fn create_task(&mut self, new: NewTask, user: Option<&str>) -> String {
        let gid = self.world.create_task(new, self.now);
        let events = task_added_events(self.world, &gid, user, self.now);
        self.record(events);
        gid
    }

    /// Moves a live task to the trash and records its `deleted` event. `false` when there was no
    /// live task.
    pub fn delete_task(&mut self, gid: &str, user: Option<&str>) -> bool {
        let event = task_deleted_event(self.world, gid, user, self.now);
        if !self.world.delete_task(gid, self.now) {
            return false;
        }
        self.record(vec![event]);
        true
    }

    /// Adds a comment by `author` to a live task and records its `added` event; returns the
    /// story's gid, or `None` when the task does not exist.
    pub fn comment_on_task(
        &mut self,
        task: &str,
        author: &str,
        text: &str,
        is_pinned: bool,
    ) -> Option<String> {
        let gid = self
            .world
            .add_comment(task, author, text, is_pinned, self.now)?;
        let events = story_added_events(self.world, &gid, Some(author), self.now);
        self.record(events);
        Some(gid)
    }
}
