//! Changes to the world that Asana reports through the Events API. [`Edit`] holds the world and
//! the event log together, so every writer (the task and story routes, the admin API, the activity
//! generator) records the same events for the same change and none can forget them. Which events
//! each change makes is [`super::events::bodies`]' business.
//!
//! Part of the model layer: imports [`super::world`] and [`super::events`] only. The state layer
//! takes the locks and hands an `Edit` out (`SimState::edit`).

use chrono::{DateTime, Utc};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::events::bodies::{
    added_event, changed_events, list_changed_event, removed_event, task_added_events,
    task_deleted_event, task_undeleted_event,
};
use super::events::{EventLog, NewEvent};
use super::world::World;
use super::world::mutate::{FieldChange, NewTask, TaskPatch};
use super::world::relate::{NewAttachment, Placement, ProjectPatch, TaskList};

/// The world and its event log, borrowed together for one change made at `now`.
#[derive(Debug)]
pub struct Edit<'a> {
    world: &'a mut World,
    log: &'a mut EventLog,
    now: DateTime<Utc>,
    /// Share of the change's events lost instead of logged (the `drop_events` fault).
    loss_rate: f64,
}

impl<'a> Edit<'a> {
    /// An edit of `world` recording into `log` at simulated time `now`, losing each event with
    /// probability `loss_rate`.
    pub fn new(
        world: &'a mut World,
        log: &'a mut EventLog,
        now: DateTime<Utc>,
        loss_rate: f64,
    ) -> Self {
        Self {
            world,
            log,
            now,
            loss_rate,
        }
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
            self.log
                .record(event, &self.world.workspace.gid, self.loss_rate);
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
        let events = changed_events(self.world, gid, user, &changes, self.now);
        self.record(events);
        Some(changes)
    }

    /// Creates a task (or subtask) and records its `added` events; returns its gid.
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

    /// Brings a task back from the trash and records its `undeleted` event. `false` when it was
    /// not in the trash.
    pub fn undelete_task(&mut self, gid: &str, user: Option<&str>) -> bool {
        if !self.world.undelete_task(gid, self.now) {
            return false;
        }
        let event = task_undeleted_event(self.world, gid, user, self.now);
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
        let event = added_event(self.world, &gid, task, Some(author), self.now);
        self.record(vec![event]);
        Some(gid)
    }

    /// Places a live task in `section`: into the section's project (`added` to the project and
    /// to the section) or, when it is in that project already, into the section (`added` to the
    /// section). `None` when the task or section does not exist.
    pub fn place_task(
        &mut self,
        task: &str,
        section: &str,
        user: Option<&str>,
    ) -> Option<Placement> {
        let placement = self.world.place_task(task, section, self.now)?;
        let project = self.world.sections.get(section).map(|s| s.project.clone());
        let parents = match (placement, project) {
            (Placement::AddedToProject, Some(project)) => vec![project, section.to_string()],
            (Placement::MovedToSection, _) => vec![section.to_string()],
            _ => Vec::new(),
        };
        let events = parents
            .iter()
            .map(|parent| added_event(self.world, task, parent, user, self.now))
            .collect();
        self.record(events);
        Some(placement)
    }

    /// Takes a live task out of `project` and records its `removed` event. `false` when it was
    /// not in the project.
    pub fn remove_from_project(&mut self, task: &str, project: &str, user: Option<&str>) -> bool {
        let event = removed_event(self.world, task, project, user, self.now);
        if !self.world.remove_from_project(task, project, self.now) {
            return false;
        }
        self.record(vec![event]);
        true
    }

    /// Makes `task` depend on `blocker` (`add`) or not any more, recording the change of both
    /// tasks' `dependencies`/`dependents`. `false` when nothing changed.
    pub fn change_dependency(
        &mut self,
        task: &str,
        blocker: &str,
        add: bool,
        user: Option<&str>,
    ) -> bool {
        let changed = if add {
            self.world.add_dependency(task, blocker, self.now)
        } else {
            self.world.remove_dependency(task, blocker, self.now)
        };
        if changed {
            let events = vec![
                list_changed_event(
                    self.world,
                    task,
                    "dependencies",
                    blocker,
                    add,
                    user,
                    self.now,
                ),
                list_changed_event(self.world, blocker, "dependents", task, add, user, self.now),
            ];
            self.record(events);
        }
        changed
    }

    /// Adds `item` to (or removes it from) a live task's followers or tags and records the
    /// change. `false` when nothing changed.
    pub fn change_task_list(
        &mut self,
        task: &str,
        list: TaskList,
        item: &str,
        add: bool,
        user: Option<&str>,
    ) -> bool {
        if !self.world.change_task_list(task, list, item, add, self.now) {
            return false;
        }
        let event = list_changed_event(self.world, task, list.field(), item, add, user, self.now);
        self.record(vec![event]);
        true
    }

    /// Renames or (un)archives a project, recording a `changed` event per changed field. `None`
    /// when there is no such project.
    pub fn change_project(
        &mut self,
        project: &str,
        patch: &ProjectPatch,
        user: Option<&str>,
    ) -> Option<Vec<FieldChange>> {
        let changes = self.world.change_project(project, patch, self.now)?;
        let events = changed_events(self.world, project, user, &changes, self.now);
        self.record(events);
        Some(changes)
    }

    /// Adds a section to a project and records its `added` event; its gid, or `None` when there
    /// is no such project.
    pub fn create_section(
        &mut self,
        project: &str,
        name: &str,
        user: Option<&str>,
    ) -> Option<String> {
        let gid = self.world.create_section(project, name, self.now)?;
        let event = added_event(self.world, &gid, project, user, self.now);
        self.record(vec![event]);
        Some(gid)
    }

    /// Renames a section and records the change. `false` when nothing changed.
    pub fn rename_section(&mut self, section: &str, name: &str, user: Option<&str>) -> bool {
        if !self.world.rename_section(section, name) {
            return false;
        }
        let change = FieldChange {
            field: "name",
            new_value: json!(name),
        };
        let events = changed_events(self.world, section, user, &[change], self.now);
        self.record(events);
        true
    }

    /// Attaches a file by `user` to a live task or a project and records its `added` event; the
    /// attachment's gid, or `None` when there is no such parent.
    pub fn attach(&mut self, parent: &str, file: NewAttachment, user: &str) -> Option<String> {
        let gid = self.world.attach(parent, file, user, self.now)?;
        let event = added_event(self.world, &gid, parent, Some(user), self.now);
        self.record(vec![event]);
        Some(gid)
    }

    /// Logs time by `user` on a live task and records the change of its
    /// `actual_time_minutes`; the entry's gid, or `None` when there is no such task.
    pub fn log_time(&mut self, task: &str, user: &str, minutes: u32) -> Option<String> {
        let gid = self.world.log_time(task, user, minutes, self.now)?;
        let change = FieldChange {
            field: "actual_time_minutes",
            new_value: json!(self.world.time_spent(task)),
        };
        let events = changed_events(self.world, task, Some(user), &[change], self.now);
        self.record(events);
        Some(gid)
    }
}
