//! What links the seeded world's objects beyond where they live: task dependencies, attachments,
//! time-tracking entries, portfolios and their members, goals and what supports them (projects,
//! portfolios, tasks, and the team goals under the workspace's goal), and the
//! status updates of projects, portfolios and goals. Generated after the teams, projects and
//! tasks, from a random source of its own, so these relations never reshuffle the rest of the
//! world; every one of them names objects that exist.
//!
//! Imports [`super`] (the world and its objects), [`super::generate`] (titles, colors, dates),
//! `config` (the world's size) and the model's rich text (status update bodies).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::generate::{COLORS, date, title};
use super::{Attachment, Goal, Portfolio, PortfolioMembership, StatusUpdate, TimeEntry, World};
use crate::sim::config::WorldSize;
use crate::sim::model::rich_text::escape_xml;

/// Where attached files live and what they are: (host, file extension).
const FILE_KINDS: &[(&str, &str)] = &[
    ("asana", "pdf"),
    ("asana", "png"),
    ("asana", "xlsx"),
    ("gdrive", "gdoc"),
    ("dropbox", "zip"),
    ("box", "docx"),
];

/// Share of top-level tasks blocked by an earlier task of their project.
const DEPENDENCY_SHARE: f64 = 0.1;
/// Share of tasks with attachments.
const ATTACHMENT_SHARE: f64 = 0.3;
/// Share of projects with a file among their key resources.
const PROJECT_ATTACHMENT_SHARE: f64 = 0.5;
/// Share of top-level tasks with time logged.
const TIME_SHARE: f64 = 0.2;
/// Status types of the generated project and portfolio status updates.
const PROJECT_TYPES: &[&str] = &["on_track", "at_risk", "off_track", "on_hold"];
/// Status types of the generated goal status updates (all of an open goal).
const GOAL_TYPES: &[&str] = &["on_track", "at_risk", "off_track"];

/// The status of an open goal as its latest status update's type sets it.
fn goal_status(status_type: &str) -> &'static str {
    match status_type {
        "on_track" => "green",
        "at_risk" => "yellow",
        "off_track" => "red",
        "achieved" => "achieved",
        "partial" => "partial",
        "missed" => "missed",
        _ => "dropped",
    }
}

impl World {
    /// Generates every relation of a freshly generated world, deterministically from `seed`.
    pub(super) fn generate_relations(&mut self, seed: u64, size: &WorldSize, now: DateTime<Utc>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_2e1a);
        self.generate_dependencies(&mut rng);
        self.generate_attachments(&mut rng, size.max_attachments, now);
        self.generate_time_entries(&mut rng, now);
        self.generate_portfolios(&mut rng, now);
        self.generate_goals(&mut rng, now);
        self.generate_status_updates(&mut rng, now);
    }

    /// Some top-level tasks wait on an earlier task of the same project.
    fn generate_dependencies(&mut self, rng: &mut ChaCha8Rng) {
        let mut by_project: HashMap<String, Vec<String>> = HashMap::new();
        let mut order = Vec::new();
        for task in self.tasks.iter().filter(|t| t.parent.is_none()) {
            if let Some((project, _)) = task.memberships.first() {
                let tasks = by_project.entry(project.clone()).or_insert_with(|| {
                    order.push(project.clone());
                    Vec::new()
                });
                tasks.push(task.gid.clone());
            }
        }
        for project in order {
            let tasks = &by_project[&project];
            for i in 1..tasks.len() {
                if rng.random_bool(DEPENDENCY_SHARE) {
                    let blocker = &tasks[rng.random_range(0..i)];
                    self.link_dependency(&tasks[i], blocker);
                }
            }
        }
    }

    /// Files on some tasks, attached between their creation and last change, and on the key
    /// resources of some projects.
    fn generate_attachments(&mut self, rng: &mut ChaCha8Rng, most: usize, now: DateTime<Utc>) {
        let mut files = Vec::new();
        if most > 0 {
            for task in self.tasks.iter() {
                if !rng.random_bool(ATTACHMENT_SHARE) {
                    continue;
                }
                for _ in 0..rng.random_range(1..=most) {
                    let span = (task.modified_at - task.created_at).num_seconds().max(1);
                    let at = task.created_at + Duration::seconds(rng.random_range(0..span));
                    files.push((task.gid.clone(), task.created_by.clone(), at));
                }
            }
        }
        for project in self.projects.iter() {
            if rng.random_bool(PROJECT_ATTACHMENT_SHARE) {
                files.push((
                    project.gid.clone(),
                    project.owner.clone(),
                    project.created_at,
                ));
            }
        }
        for (parent, created_by, created_at) in files {
            let (host, extension) = FILE_KINDS[rng.random_range(0..FILE_KINDS.len())];
            let name = format!("{}.{extension}", title(rng, 2).replace(' ', "-"));
            let attachment = Attachment {
                gid: self.gids.next_gid(),
                parent,
                name,
                host: host.into(),
                size: rng.random_range(10_000..5_000_000),
                created_by,
                created_at: created_at.min(now),
            };
            self.attachments.insert(attachment);
        }
    }

    /// Time logged on some top-level tasks by their assignee (or creator), counted towards the
    /// task's project.
    fn generate_time_entries(&mut self, rng: &mut ChaCha8Rng, now: DateTime<Utc>) {
        let mut entries = Vec::new();
        for task in self.tasks.iter().filter(|t| t.parent.is_none()) {
            if !rng.random_bool(TIME_SHARE) {
                continue;
            }
            let user = task
                .assignee
                .clone()
                .unwrap_or_else(|| task.created_by.clone());
            let project = task.memberships.first().map(|(p, _)| p.clone());
            for _ in 0..rng.random_range(1..=2) {
                let span = (now - task.created_at).num_seconds().max(1);
                let at = task.created_at + Duration::seconds(rng.random_range(0..span));
                entries.push((task.gid.clone(), user.clone(), project.clone(), at));
            }
        }
        for (task, created_by, attributable_to, created_at) in entries {
            let billable = ["billable", "nonBillable", "notApplicable"][rng.random_range(0..3)];
            let entry = TimeEntry {
                gid: self.gids.next_gid(),
                task,
                created_by,
                duration_minutes: 15 * rng.random_range(1..=16),
                entered_on: date(created_at),
                attributable_to,
                billable_status: billable.into(),
                description: format!("Worked on {}", title(rng, 2).to_lowercase()),
                created_at,
            };
            self.time_entries.insert(entry);
        }
    }

    /// A portfolio per team holding the team's live projects. Owners take turns among the users
    /// after the service account (so the first paid PAT's user owns one); the service account is
    /// an editor of every portfolio, and the team's last member a viewer.
    fn generate_portfolios(&mut self, rng: &mut ChaCha8Rng, now: DateTime<Utc>) {
        let users: Vec<String> = self.users.iter().map(|u| u.gid.clone()).collect();
        let teams: Vec<(String, String)> = self
            .teams
            .iter()
            .map(|t| (t.gid.clone(), t.name.clone()))
            .collect();
        for (t, (team, team_name)) in teams.iter().enumerate() {
            let owner = users[(1 + t) % users.len()].clone();
            let items = self.projects.gids_where(|p| &p.team == team && !p.archived);
            let created_at = now - Duration::days(rng.random_range(60..200));
            let gid = self.gids.next_gid();
            self.portfolios.insert(Portfolio {
                gid: gid.clone(),
                name: format!("{team_name} Portfolio"),
                owner: owner.clone(),
                color: COLORS[rng.random_range(0..COLORS.len())].into(),
                items,
                start_on: Some(date(created_at)),
                due_on: Some(date(now + Duration::days(rng.random_range(30..180)))),
                created_at,
            });
            let mut members = vec![(owner, "admin")];
            if let Some(service) = users.first() {
                members.push((service.clone(), "editor"));
            }
            if let Some(last) = self.team_members(team).last() {
                members.push((last.clone(), "viewer"));
            }
            let mut seen = Vec::new();
            for (user, access_level) in members {
                if seen.contains(&user) {
                    continue;
                }
                seen.push(user.clone());
                let membership = PortfolioMembership {
                    gid: self.gids.next_gid(),
                    portfolio: gid.clone(),
                    user,
                    access_level: access_level.into(),
                };
                self.portfolio_memberships.insert(membership);
            }
        }
    }

    /// A goal per team supported by its first two live projects and the first task of the first
    /// one, then a workspace-level goal supported by every portfolio and every team goal.
    fn generate_goals(&mut self, rng: &mut ChaCha8Rng, now: DateTime<Utc>) {
        let service = self.users.at(0).map(|u| u.gid.clone());
        let mut team_goals = Vec::new();
        for team in self.teams.iter() {
            let owner = self
                .team_members(&team.gid)
                .nth(1)
                .or(service.as_ref())
                .cloned();
            let mut supporting: Vec<String> = self
                .projects
                .gids_where(|p| p.team == team.gid && !p.archived)
                .into_iter()
                .take(2)
                .collect();
            if let Some(first) = supporting.first()
                && let Some(task) = self
                    .tasks
                    .iter()
                    .find(|t| t.parent.is_none() && t.in_project(first))
            {
                supporting.push(task.gid.clone());
            }
            team_goals.push((Some(team.gid.clone()), owner, supporting));
        }
        let mut supporting_top = self.portfolios.gids();
        for (team, owner, supporting) in team_goals {
            supporting_top.push(self.insert_goal(rng, team, owner, supporting, now));
        }
        self.insert_goal(rng, None, service, supporting_top, now);
    }

    /// Adds a goal of `team` (the workspace's when `None`), followed by its owner and the
    /// service account; returns its gid.
    fn insert_goal(
        &mut self,
        rng: &mut ChaCha8Rng,
        team: Option<String>,
        owner: Option<String>,
        supporting: Vec<String>,
        now: DateTime<Utc>,
    ) -> String {
        let mut followers: Vec<String> = owner.iter().cloned().collect();
        if let Some(service) = self.users.at(0)
            && !followers.contains(&service.gid)
        {
            followers.push(service.gid.clone());
        }
        let start = now - Duration::days(rng.random_range(30..90));
        let gid = self.gids.next_gid();
        self.goals.insert(Goal {
            gid: gid.clone(),
            name: format!("{} goal", title(rng, 2)),
            notes: format!("Goal notes: {}", title(rng, 5)),
            owner,
            team,
            start_on: Some(date(start)),
            due_on: Some(date(now + Duration::days(rng.random_range(30..180)))),
            status: None,
            followers,
            supporting,
            progress: f64::from(rng.random_range(0..=100u32)),
        });
        gid
    }

    /// Status updates: on every other project, on every portfolio and on every goal (whose
    /// `status` follows its latest update).
    fn generate_status_updates(&mut self, rng: &mut ChaCha8Rng, now: DateTime<Utc>) {
        let mut parents: Vec<(String, String, &[&str])> = Vec::new();
        for (i, project) in self.projects.iter().enumerate() {
            if i % 2 == 0 {
                parents.push((project.gid.clone(), project.owner.clone(), PROJECT_TYPES));
            }
        }
        for portfolio in self.portfolios.iter() {
            parents.push((
                portfolio.gid.clone(),
                portfolio.owner.clone(),
                PROJECT_TYPES,
            ));
        }
        let service = self.users.at(0).map(|u| u.gid.clone()).unwrap_or_default();
        for goal in self.goals.iter() {
            let author = goal.owner.clone().unwrap_or_else(|| service.clone());
            parents.push((goal.gid.clone(), author, GOAL_TYPES));
        }
        for (parent, author, types) in parents {
            let status_type = types[rng.random_range(0..types.len())];
            let text = format!("Status: {}", title(rng, 6));
            let update = StatusUpdate {
                gid: self.gids.next_gid(),
                parent: parent.clone(),
                author,
                status_type: status_type.into(),
                title: format!("{} update", title(rng, 1)),
                html_text: format!("<body>{}</body>", escape_xml(&text)),
                text,
                created_at: now - Duration::hours(rng.random_range(1..500)),
            };
            self.status_updates.insert(update);
            if let Some(goal) = self.goals.get_mut(&parent) {
                goal.status = Some(goal_status(status_type).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_relation_names_objects_that_exist_and_dependencies_mirror() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let size = WorldSize::default();
        let world = World::generate(3, &size, now);
        let is = |kind: &str, gid: &str| world.kind_of(gid) == Some(kind);
        for m in world.team_memberships.iter() {
            assert!(is("team", &m.team) && is("user", &m.user));
        }
        for m in world.project_memberships.iter() {
            assert!(is("project", &m.project) && is("user", &m.user));
        }
        for m in world.portfolio_memberships.iter() {
            assert!(is("portfolio", &m.portfolio) && is("user", &m.user));
        }
        for task in world.tasks.iter() {
            for blocker in &task.dependencies {
                let other = world.tasks.get(blocker).expect("blocker exists");
                assert!(other.dependents.contains(&task.gid));
            }
            for (project, section) in &task.memberships {
                assert_eq!(world.sections.get(section).unwrap().project, *project);
            }
        }
        assert!(world.tasks.iter().any(|t| !t.dependencies.is_empty()));
        for a in world.attachments.iter() {
            assert!(is("task", &a.parent) || is("project", &a.parent));
        }
        for e in world.time_entries.iter() {
            assert!(is("task", &e.task));
            assert!(e.attributable_to.iter().all(|p| is("project", p)));
        }
        for p in world.portfolios.iter() {
            assert!(!p.items.is_empty() && p.items.iter().all(|i| is("project", i)));
        }
        for g in world.goals.iter() {
            assert!(!g.supporting.is_empty());
            assert!(g.supporting.iter().all(|s| world.kind_of(s).is_some()));
            assert!(g.status.is_some(), "every goal has a status update");
        }
        for u in world.status_updates.iter() {
            assert!(matches!(
                world.kind_of(&u.parent),
                Some("project" | "portfolio" | "goal")
            ));
        }
        let archived = world.projects.iter().filter(|p| p.archived).count();
        assert_eq!(archived, size.projects / 7);
        assert_eq!(world.goals.iter().filter(|g| g.team.is_none()).count(), 1);
    }
}
