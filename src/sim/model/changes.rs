//! Changes as data: each one a change people make to the work graph in Asana (create, rename,
//! complete, move, delete a task; comment; archive a project; add or remove a dependency, a
//! follower, a tag; …), written as JSON by tests (`POST /_sim/mutate`) or drawn at random from a
//! seed, and applied through [`Edit`], so each records the events Asana would send for it. A test
//! of a mirror of the work graph makes N random changes, syncs, and compares.
//!
//! Part of the model layer: imports [`super::edit`] and [`super::world`] only.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::edit::Edit;
use super::world::World;
use super::world::mutate::{NewTask, TaskPatch};
use super::world::relate::{NewAttachment, Placement, ProjectPatch, TaskList};

/// One change, by `user` (a user gid; `None`: the service account's user). Unknown fields are
/// refused by [`Action`] (serde cannot refuse them here, beside a flattened field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Who makes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// What it is.
    #[serde(flatten)]
    pub action: Action,
}

/// What a change does; `kind` names it on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A new task in `section` (and so in its project).
    CreateTask {
        /// The section.
        section: String,
        /// Its name.
        name: String,
    },
    /// A new subtask of `parent`.
    CreateSubtask {
        /// The parent task.
        parent: String,
        /// Its name.
        name: String,
    },
    /// Renames a task.
    RenameTask {
        /// The task.
        task: String,
        /// The new name.
        name: String,
    },
    /// Completes a task or reopens it.
    CompleteTask {
        /// The task.
        task: String,
        /// Completed or not.
        completed: bool,
    },
    /// Puts a task in `section`: into its project, or into that section of a project it is in.
    MoveTask {
        /// The task.
        task: String,
        /// The section.
        section: String,
    },
    /// Takes a task out of a project.
    RemoveFromProject {
        /// The task.
        task: String,
        /// The project.
        project: String,
    },
    /// Adds a comment.
    Comment {
        /// The task.
        task: String,
        /// The comment.
        text: String,
    },
    /// Moves a task to the trash.
    DeleteTask {
        /// The task.
        task: String,
    },
    /// Brings a task back from the trash.
    UndeleteTask {
        /// The task.
        task: String,
    },
    /// Archives or unarchives a project.
    ArchiveProject {
        /// The project.
        project: String,
        /// Archived or not.
        archived: bool,
    },
    /// Renames a project.
    RenameProject {
        /// The project.
        project: String,
        /// The new name.
        name: String,
    },
    /// Makes `task` depend on `blocker`.
    AddDependency {
        /// The blocked task.
        task: String,
        /// The task it waits for.
        blocker: String,
    },
    /// Removes a dependency.
    RemoveDependency {
        /// The blocked task.
        task: String,
        /// The task it waited for.
        blocker: String,
    },
    /// Adds a follower.
    AddFollower {
        /// The task.
        task: String,
        /// The follower.
        follower: String,
    },
    /// Removes a follower.
    RemoveFollower {
        /// The task.
        task: String,
        /// The follower.
        follower: String,
    },
    /// Tags a task.
    AddTag {
        /// The task.
        task: String,
        /// The tag.
        tag: String,
    },
    /// Untags a task.
    RemoveTag {
        /// The task.
        task: String,
        /// The tag.
        tag: String,
    },
    /// A new section at the end of a project.
    CreateSection {
        /// The project.
        project: String,
        /// Its name.
        name: String,
    },
    /// Renames a section.
    RenameSection {
        /// The section.
        section: String,
        /// The new name.
        name: String,
    },
    /// Attaches a file (metadata only) to a task or project.
    Attach {
        /// The task or project.
        parent: String,
        /// The file name.
        name: String,
    },
    /// Logs time on a task.
    LogTime {
        /// The task.
        task: String,
        /// Minutes spent.
        minutes: u32,
    },
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The change.
    #[serde(flatten)]
    pub change: Change,
    /// Whether the world changed (adding a follower twice changes nothing the second time).
    pub changed: bool,
    /// The gid of the object it created, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// Why a change could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {gid:?} does not exist (or is in the trash); name a live one")]
pub struct Missing {
    /// What was looked for.
    pub kind: &'static str,
    /// The gid given.
    pub gid: String,
}

fn missing(kind: &'static str, gid: &str) -> Missing {
    Missing {
        kind,
        gid: gid.to_string(),
    }
}

/// Checks that the objects a change names exist (tasks live, except for an undelete).
fn check(world: &World, change: &Change) -> Result<(), Missing> {
    let live = |gid: &str| world.tasks.get(gid).is_some_and(|t| !t.deleted);
    let task = |gid: &str| live(gid).then_some(()).ok_or_else(|| missing("task", gid));
    let found = |kind: &'static str, exists: bool, gid: &str| {
        exists.then_some(()).ok_or_else(|| missing(kind, gid))
    };
    if let Some(user) = &change.user {
        found("user", world.users.get(user).is_some(), user)?;
    }
    match &change.action {
        Action::CreateTask { section, .. } | Action::MoveTask { section, .. }
            if world.sections.get(section).is_none() =>
        {
            Err(missing("section", section))
        }
        Action::CreateTask { .. } => Ok(()),
        Action::MoveTask { task: gid, .. } => task(gid),
        Action::CreateSubtask { parent, .. } => task(parent),
        Action::RenameTask { task: gid, .. }
        | Action::CompleteTask { task: gid, .. }
        | Action::Comment { task: gid, .. }
        | Action::DeleteTask { task: gid }
        | Action::LogTime { task: gid, .. } => task(gid),
        Action::UndeleteTask { task } => found("task", world.tasks.get(task).is_some(), task),
        Action::RemoveFromProject { task: gid, project } => {
            task(gid)?;
            found("project", world.projects.get(project).is_some(), project)
        }
        Action::ArchiveProject { project, .. }
        | Action::RenameProject { project, .. }
        | Action::CreateSection { project, .. } => {
            found("project", world.projects.get(project).is_some(), project)
        }
        Action::AddDependency { task: gid, blocker }
        | Action::RemoveDependency { task: gid, blocker } => {
            task(gid)?;
            task(blocker)
        }
        Action::AddFollower {
            task: gid,
            follower,
        }
        | Action::RemoveFollower {
            task: gid,
            follower,
        } => {
            task(gid)?;
            found("user", world.users.get(follower).is_some(), follower)
        }
        Action::AddTag { task: gid, tag } | Action::RemoveTag { task: gid, tag } => {
            task(gid)?;
            found("tag", world.tags.get(tag).is_some(), tag)
        }
        Action::RenameSection { section, .. } => {
            found("section", world.sections.get(section).is_some(), section)
        }
        Action::Attach { parent, .. } => found(
            "task or project",
            live(parent) || world.projects.get(parent).is_some(),
            parent,
        ),
    }
}

impl Change {
    /// Applies the change, recording its events; `Err` names the object it needs that does not
    /// exist (nothing is changed then).
    pub fn apply(&self, edit: &mut Edit<'_>) -> Result<Outcome, Missing> {
        check(edit.world(), self)?;
        let service = edit.world().users.at(0).map(|u| u.gid.clone());
        let user = self.user.clone().or(service).unwrap_or_default();
        let by = Some(user.as_str());
        let mut created = None;
        let changed = match &self.action {
            Action::CreateTask { section, name } => {
                let project = edit
                    .world()
                    .sections
                    .get(section)
                    .map(|s| s.project.clone())
                    .unwrap_or_default();
                let new = NewTask {
                    name: name.clone(),
                    created_by: user.clone(),
                    memberships: vec![(project, section.clone())],
                    ..NewTask::default()
                };
                created = Some(edit.create_task(new, by));
                true
            }
            Action::CreateSubtask { parent, name } => {
                let new = NewTask {
                    name: name.clone(),
                    created_by: user.clone(),
                    parent: Some(parent.clone()),
                    ..NewTask::default()
                };
                created = Some(edit.create_task(new, by));
                true
            }
            Action::RenameTask { task, name } => patch_task(
                edit,
                task,
                TaskPatch {
                    name: Some(name.clone()),
                    ..TaskPatch::default()
                },
                by,
            ),
            Action::CompleteTask { task, completed } => patch_task(
                edit,
                task,
                TaskPatch {
                    completed: Some(*completed),
                    ..TaskPatch::default()
                },
                by,
            ),
            Action::MoveTask { task, section } => edit
                .place_task(task, section, by)
                .is_some_and(|p| p != Placement::Unchanged),
            Action::RemoveFromProject { task, project } => {
                edit.remove_from_project(task, project, by)
            }
            Action::Comment { task, text } => {
                created = edit.comment_on_task(task, &user, text, false);
                created.is_some()
            }
            Action::DeleteTask { task } => edit.delete_task(task, by),
            Action::UndeleteTask { task } => edit.undelete_task(task, by),
            Action::ArchiveProject { project, archived } => patch_project(
                edit,
                project,
                ProjectPatch {
                    archived: Some(*archived),
                    ..ProjectPatch::default()
                },
                by,
            ),
            Action::RenameProject { project, name } => patch_project(
                edit,
                project,
                ProjectPatch {
                    name: Some(name.clone()),
                    ..ProjectPatch::default()
                },
                by,
            ),
            Action::AddDependency { task, blocker } => {
                edit.change_dependency(task, blocker, true, by)
            }
            Action::RemoveDependency { task, blocker } => {
                edit.change_dependency(task, blocker, false, by)
            }
            Action::AddFollower { task, follower } => {
                edit.change_task_list(task, TaskList::Followers, follower, true, by)
            }
            Action::RemoveFollower { task, follower } => {
                edit.change_task_list(task, TaskList::Followers, follower, false, by)
            }
            Action::AddTag { task, tag } => {
                edit.change_task_list(task, TaskList::Tags, tag, true, by)
            }
            Action::RemoveTag { task, tag } => {
                edit.change_task_list(task, TaskList::Tags, tag, false, by)
            }
            Action::CreateSection { project, name } => {
                created = edit.create_section(project, name, by);
                created.is_some()
            }
            Action::RenameSection { section, name } => edit.rename_section(section, name, by),
            Action::Attach { parent, name } => {
                let size = 1_000 + 37 * name.len() as u64;
                let file = NewAttachment {
                    name: name.clone(),
                    host: "asana".into(),
                    size,
                };
                created = edit.attach(parent, file, &user);
                created.is_some()
            }
            Action::LogTime { task, minutes } => {
                created = edit.log_time(task, &user, *minutes);
                created.is_some()
            }
        };
        Ok(Outcome {
            change: self.clone(),
            changed,
            created,
        })
    }

    /// Draws a random change (or, to move a task between projects, two) to the world as it
    /// stands, by a random active user. Empty when the world has nothing to change.
    pub fn random(world: &World, rng: &mut ChaCha8Rng) -> Vec<Change> {
        let Some(task) = pick_task(world, rng) else {
            return Vec::new();
        };
        let user = pick(world.users.len(), rng)
            .and_then(|i| world.users.at(i))
            .filter(|u| u.active)
            .map(|u| u.gid.clone());
        let word = format!("{:04}", rng.random_range(0..10_000u32));
        let other_task = pick_task(world, rng).filter(|other| *other != task);
        let project = world
            .tasks
            .get(&task)
            .and_then(|t| t.memberships.first())
            .map(|(p, _)| p.clone());
        let section_of = |project: &str, rng: &mut ChaCha8Rng| {
            let sections: Vec<&str> = world
                .sections
                .within(project)
                .map(|s| s.gid.as_str())
                .collect();
            pick(sections.len(), rng).map(|i| sections[i].to_string())
        };
        let mut actions = Vec::new();
        match rng.random_range(0..18u8) {
            0 => {
                if let Some(section) = project.as_deref().and_then(|p| section_of(p, rng)) {
                    let name = format!("New task {word}");
                    actions.push(Action::CreateTask { section, name });
                }
            }
            1 => actions.push(Action::CreateSubtask {
                parent: task,
                name: format!("New subtask {word}"),
            }),
            2 => actions.push(Action::RenameTask {
                task,
                name: format!("Renamed {word}"),
            }),
            3 => {
                let completed = !world.tasks.get(&task).is_some_and(|t| t.completed);
                actions.push(Action::CompleteTask { task, completed });
            }
            4 => {
                if let Some(section) = project.as_deref().and_then(|p| section_of(p, rng)) {
                    actions.push(Action::MoveTask { task, section });
                }
            }
            5 => {
                let target = pick(world.projects.len(), rng)
                    .and_then(|i| world.projects.at(i))
                    .map(|p| p.gid.clone());
                if let (Some(from), Some(to)) = (project, target)
                    && from != to
                    && let Some(section) = section_of(&to, rng)
                {
                    actions.push(Action::RemoveFromProject {
                        task: task.clone(),
                        project: from,
                    });
                    actions.push(Action::MoveTask { task, section });
                }
            }
            6 => actions.push(Action::Comment {
                task,
                text: format!("Comment {word}"),
            }),
            7 => actions.push(Action::DeleteTask { task }),
            8 => {
                if let Some(project) = project {
                    let archived = !world.projects.get(&project).is_some_and(|p| p.archived);
                    actions.push(Action::ArchiveProject { project, archived });
                }
            }
            9 => {
                if let Some(blocker) = other_task {
                    actions.push(Action::AddDependency { task, blocker });
                }
            }
            10 => {
                let blocker = world
                    .tasks
                    .get(&task)
                    .and_then(|t| t.dependencies.first().cloned());
                if let Some(blocker) = blocker {
                    actions.push(Action::RemoveDependency { task, blocker });
                }
            }
            11 => {
                if let Some(follower) = user.clone() {
                    actions.push(Action::AddFollower { task, follower });
                }
            }
            12 => {
                let follower = world
                    .tasks
                    .get(&task)
                    .and_then(|t| t.followers.last().cloned());
                if let Some(follower) = follower {
                    actions.push(Action::RemoveFollower { task, follower });
                }
            }
            13 => {
                let tag = pick(world.tags.len(), rng)
                    .and_then(|i| world.tags.at(i))
                    .map(|t| t.gid.clone());
                if let Some(tag) = tag {
                    actions.push(Action::AddTag { task, tag });
                }
            }
            14 => {
                let tag = world.tasks.get(&task).and_then(|t| t.tags.first().cloned());
                if let Some(tag) = tag {
                    actions.push(Action::RemoveTag { task, tag });
                }
            }
            15 => actions.push(Action::Attach {
                parent: task,
                name: format!("file-{word}.pdf"),
            }),
            16 => actions.push(Action::LogTime {
                task,
                minutes: 15 * rng.random_range(1..=8),
            }),
            _ => {
                let deleted = world.tasks.iter().rev().find(|t| t.deleted);
                if let Some(deleted) = deleted {
                    actions.push(Action::UndeleteTask {
                        task: deleted.gid.clone(),
                    });
                } else if let Some(project) = project {
                    actions.push(Action::CreateSection {
                        project,
                        name: format!("Section {word}"),
                    });
                }
            }
        }
        actions
            .into_iter()
            .map(|action| Change {
                user: user.clone(),
                action,
            })
            .collect()
    }
}

fn patch_task(edit: &mut Edit<'_>, task: &str, patch: TaskPatch, by: Option<&str>) -> bool {
    edit.change_task(task, &patch, by)
        .is_some_and(|changes| !changes.is_empty())
}

fn patch_project(
    edit: &mut Edit<'_>,
    project: &str,
    patch: ProjectPatch,
    by: Option<&str>,
) -> bool {
    edit.change_project(project, &patch, by)
        .is_some_and(|changes| !changes.is_empty())
}

/// A random index below `len`, or `None` when there is none.
fn pick(len: usize, rng: &mut ChaCha8Rng) -> Option<usize> {
    (len > 0).then(|| rng.random_range(0..len))
}

/// A random live task: a few probes at random positions, so a huge world is never scanned.
fn pick_task(world: &World, rng: &mut ChaCha8Rng) -> Option<String> {
    (0..32).find_map(|_| {
        pick(world.tasks.len(), rng)
            .and_then(|i| world.tasks.at(i))
            .filter(|t| !t.deleted)
            .map(|t| t.gid.clone())
    })
}
