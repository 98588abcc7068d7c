//! The world a simulator starts with, generated from its seed: the same seed and size give the
//! same organization. Also the audit events the simulator keeps generating while it runs.
//!
//! Imports [`super`] (the world and its objects), `config` (the world's size) and `wire` (the
//! timestamp format).

use chrono::{DateTime, Duration, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{
    AuditEvent, CustomField, CustomValue, EnumOption, GidSource, Project, ProjectMembership,
    Section, Story, Table, Tag, Task, Team, TeamMembership, User, Workspace, World,
};
use crate::sim::config::WorldSize;
use crate::sim::wire::timestamp;

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Margaret",
    "Dennis",
    "Radia",
    "John",
    "Katherine",
    "Leslie",
    "Hedy",
    "Tim",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Hamilton",
    "Ritchie",
    "Perlman",
    "Backus",
    "Johnson",
    "Lamport",
    "Lamarr",
    "Berners-Lee",
];
const WORDS: &[&str] = &[
    "launch",
    "review",
    "audit",
    "budget",
    "roadmap",
    "migrate",
    "design",
    "hiring",
    "vendor",
    "security",
    "quarterly",
    "onboarding",
    "invoice",
    "release",
    "contract",
    "training",
    "report",
    "customer",
    "renewal",
    "policy",
];
/// Colors of projects, tags, enum options and portfolios.
pub const COLORS: &[&str] = &[
    "dark-pink",
    "dark-green",
    "dark-blue",
    "dark-red",
    "dark-teal",
    "dark-brown",
    "dark-orange",
    "dark-purple",
    "dark-warm-gray",
    "light-pink",
    "light-green",
    "light-blue",
];
/// Audit event types with their categories and resource types, from Asana's docs.
pub const AUDIT_EVENT_TYPES: &[(&str, &str, &str)] = &[
    ("user_login_succeeded", "logins", "user"),
    ("user_login_failed", "logins", "user"),
    ("user_logged_out", "logins", "user"),
    ("task_deleted", "deletion", "task"),
    ("project_deleted", "deletion", "project"),
    ("task_created", "creation", "task"),
    ("project_created", "creation", "project"),
    ("user_email_changed", "user_updates", "user"),
    ("user_role_changed", "roles", "user"),
    ("workspace_export_started", "content_export", "workspace"),
    ("project_share_link_enabled", "access_control", "project"),
    ("app_installed", "apps", "workspace"),
    ("domain_setting_changed", "admin_settings", "workspace"),
];

/// A capitalised title of `words` random words.
pub fn title(rng: &mut ChaCha8Rng, words: usize) -> String {
    let mut parts: Vec<String> = (0..words)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())].to_string())
        .collect();
    if let Some(first) = parts.first_mut() {
        let mut chars = first.chars();
        if let Some(c) = chars.next() {
            *first = c.to_uppercase().collect::<String>() + chars.as_str();
        }
    }
    parts.join(" ")
}

/// `YYYY-MM-DD` of a time.
pub fn date(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d").to_string()
}

impl World {
    /// Generates the world for `seed` with its clock reading `now`. Same inputs, same world.
    pub fn generate(seed: u64, size: &WorldSize, now: DateTime<Utc>) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut gids = GidSource::new(1_200_000_000_000_000 + (seed % 1000) * 1_000_000_000);
        let workspace = Workspace {
            gid: gids.next_gid(),
            name: "Simulated Org".into(),
            email_domains: vec!["example.com".into()],
        };
        let mut world = World {
            workspace,
            users: Table::default(),
            teams: Table::default(),
            team_memberships: Table::default(),
            projects: Table::default(),
            project_memberships: Table::default(),
            sections: Table::default(),
            tasks: Table::default(),
            stories: Table::default(),
            tags: Table::default(),
            custom_fields: Table::default(),
            attachments: Table::default(),
            time_entries: Table::default(),
            portfolios: Table::default(),
            portfolio_memberships: Table::default(),
            goals: Table::default(),
            status_updates: Table::default(),
            audit_events: Vec::new(),
            gids,
            rng: ChaCha8Rng::seed_from_u64(seed.wrapping_add(1)),
        };
        for i in 0..size.users {
            let first = FIRST_NAMES[i % FIRST_NAMES.len()];
            let last = LAST_NAMES[(i / FIRST_NAMES.len() + i) % LAST_NAMES.len()];
            let name = if i == 0 {
                "Service Account".to_string()
            } else {
                format!("{first} {last}")
            };
            let email = if i == 0 {
                "service-account@example.com".to_string()
            } else {
                format!(
                    "{}.{}{}@example.com",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    i
                )
            };
            let gid = world.gids.next_gid();
            world.users.insert(User {
                gid,
                name,
                email,
                active: true,
            });
        }
        let user_gids: Vec<String> = world.users.iter().map(|u| u.gid.clone()).collect();
        let pick_user =
            |rng: &mut ChaCha8Rng| user_gids[rng.random_range(0..user_gids.len())].clone();
        for _ in 0..size.tags {
            let gid = world.gids.next_gid();
            let name = title(&mut rng, 1);
            let color = COLORS[rng.random_range(0..COLORS.len())].to_string();
            world.tags.insert(Tag {
                gid,
                name,
                color,
                created_at: now - Duration::days(200),
            });
        }
        for i in 0..size.custom_fields {
            let gid = world.gids.next_gid();
            let field_type = ["enum", "number", "text"][i % 3].to_string();
            let enum_options = if field_type == "enum" {
                ["Low", "Medium", "High"]
                    .iter()
                    .map(|name| EnumOption {
                        gid: world.gids.next_gid(),
                        name: (*name).to_string(),
                        color: COLORS[rng.random_range(0..COLORS.len())].to_string(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let name = format!(
                "{} {}",
                title(&mut rng, 1),
                ["Priority", "Estimate", "Notes"][i % 3]
            );
            world.custom_fields.insert(CustomField {
                gid,
                name,
                field_type,
                enum_options,
                precision: 2,
            });
        }
        let field_gids: Vec<String> = world.custom_fields.iter().map(|f| f.gid.clone()).collect();
        for t in 0..size.teams {
            let gid = world.gids.next_gid();
            let members: Vec<String> = user_gids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % size.teams.max(1) == t || *i == 0)
                .map(|(_, g)| g.clone())
                .collect();
            world.teams.insert(Team {
                gid: gid.clone(),
                name: format!("{} Team", title(&mut rng, 1)),
                description: format!("The {} team", title(&mut rng, 1).to_lowercase()),
            });
            for (i, user) in members.iter().enumerate() {
                let membership = TeamMembership {
                    gid: world.gids.next_gid(),
                    team: gid.clone(),
                    user: user.clone(),
                    // The first member after the service account runs the team.
                    is_admin: i == 1,
                    is_guest: false,
                    is_limited_access: false,
                };
                world.team_memberships.insert(membership);
            }
            // Projects are dealt out to the teams in turn; the first teams get the remainder.
            let share = size.projects / size.teams + usize::from(t < size.projects % size.teams);
            for _ in 0..share {
                world.generate_project(
                    &mut rng,
                    &gid,
                    &members,
                    &field_gids,
                    size,
                    now,
                    &pick_user,
                );
            }
        }
        world.generate_relations(seed, size, now);
        world.generate_audit_backfill(&mut rng, size, now);
        world
    }

    #[allow(clippy::too_many_arguments)]
    fn generate_project(
        &mut self,
        rng: &mut ChaCha8Rng,
        team: &str,
        members: &[String],
        field_gids: &[String],
        size: &WorldSize,
        now: DateTime<Utc>,
        pick_user: &dyn Fn(&mut ChaCha8Rng) -> String,
    ) {
        let project_gid = self.gids.next_gid();
        let created = now - Duration::days(rng.random_range(30..400));
        let owner = members[rng.random_range(0..members.len())].clone();
        // Every seventh project of the workspace is archived.
        let archived = self.projects.len() % 7 == 6;
        self.projects.insert(Project {
            gid: project_gid.clone(),
            name: title(rng, 2),
            team: team.to_string(),
            owner: owner.clone(),
            followers: members.iter().take(2).cloned().collect(),
            archived,
            color: COLORS[rng.random_range(0..COLORS.len())].to_string(),
            notes: format!("Project notes: {}", title(rng, 4)),
            created_at: created,
            modified_at: now - Duration::hours(rng.random_range(1..200)),
            due_on: Some(date(now + Duration::days(rng.random_range(10..120)))),
            custom_fields: field_gids.to_vec(),
        });
        for (i, user) in members.iter().enumerate() {
            let access_level = if *user == owner {
                "admin"
            } else if i % 5 == 4 {
                "commenter"
            } else {
                "editor"
            };
            let membership = ProjectMembership {
                gid: self.gids.next_gid(),
                project: project_gid.clone(),
                user: user.clone(),
                access_level: access_level.into(),
            };
            self.project_memberships.insert(membership);
        }
        let mut section_gids = Vec::new();
        for s in 0..size.sections_per_project.max(1) {
            let gid = self.gids.next_gid();
            section_gids.push(gid.clone());
            self.sections.insert(Section {
                gid,
                name: ["To do", "Doing", "Done", "Backlog", "Review"][s % 5].to_string(),
                project: project_gid.clone(),
                created_at: created,
            });
        }
        for _ in 0..size.tasks_per_project {
            let section = section_gids[rng.random_range(0..section_gids.len())].clone();
            let task_gid = self.generate_task(
                rng,
                Some((&project_gid, &section)),
                None,
                field_gids,
                size,
                created,
                now,
                pick_user,
            );
            let subtasks = rng.random_range(0..=size.max_subtasks);
            for _ in 0..subtasks {
                self.generate_task(
                    rng,
                    None,
                    Some(&task_gid),
                    field_gids,
                    size,
                    created,
                    now,
                    pick_user,
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn generate_task(
        &mut self,
        rng: &mut ChaCha8Rng,
        membership: Option<(&str, &str)>,
        parent: Option<&str>,
        field_gids: &[String],
        size: &WorldSize,
        project_created: DateTime<Utc>,
        now: DateTime<Utc>,
        pick_user: &dyn Fn(&mut ChaCha8Rng) -> String,
    ) -> String {
        let gid = self.gids.next_gid();
        let age_hours = (now - project_created).num_hours().max(2);
        let created_at = now - Duration::hours(rng.random_range(1..age_hours));
        let modified_at = created_at + (now - created_at) / rng.random_range(2..10);
        let completed = rng.random_bool(0.35);
        let completed_at = completed.then_some(modified_at);
        let assignee = rng.random_bool(0.8).then(|| pick_user(rng));
        let creator = pick_user(rng);
        let tags = if !self.tags.is_empty() && rng.random_bool(0.4) {
            vec![
                self.tags
                    .at(rng.random_range(0..self.tags.len()))
                    .map(|t| t.gid.clone())
                    .unwrap_or_default(),
            ]
        } else {
            Vec::new()
        };
        let custom_fields = if membership.is_some() {
            field_gids
                .iter()
                .filter_map(|field_gid| {
                    let field = self.custom_fields.get(field_gid)?;
                    let value = match field.field_type.as_str() {
                        "enum" => CustomValue::Enum(
                            field.enum_options[rng.random_range(0..field.enum_options.len())]
                                .gid
                                .clone(),
                        ),
                        "number" => CustomValue::Number(rng.random_range(1..100) as f64),
                        _ => CustomValue::Text(title(rng, 2)),
                    };
                    Some((field_gid.clone(), value))
                })
                .collect()
        } else {
            Vec::new()
        };
        let subtype = if rng.random_bool(0.05) {
            "milestone"
        } else {
            "default_task"
        };
        let mut followers = vec![creator.clone()];
        if let Some(a) = &assignee
            && a != &creator
        {
            followers.push(a.clone());
        }
        self.tasks.insert(Task {
            gid: gid.clone(),
            name: title(rng, 3),
            notes: format!("Notes: {}", title(rng, 6)),
            resource_subtype: subtype.into(),
            assignee,
            created_by: creator.clone(),
            completed,
            completed_at,
            created_at,
            modified_at,
            due_on: rng
                .random_bool(0.6)
                .then(|| date(now + Duration::days(rng.random_range(-30..60)))),
            start_on: None,
            memberships: membership
                .map(|(p, s)| vec![(p.to_string(), s.to_string())])
                .unwrap_or_default(),
            parent: parent.map(str::to_string),
            tags,
            followers,
            custom_fields,
            dependencies: Vec::new(),
            dependents: Vec::new(),
            num_likes: rng.random_range(0..4),
            deleted: false,
        });
        let stories = rng.random_range(0..=size.max_stories);
        for i in 0..stories {
            let story_gid = self.gids.next_gid();
            let story_time =
                created_at + (modified_at - created_at) * (i as i32 + 1) / (stories as i32 + 1);
            self.stories.insert(Story {
                gid: story_gid,
                target: gid.clone(),
                created_by: pick_user(rng),
                created_at: story_time,
                resource_subtype: if i == 0 {
                    "added_to_project".into()
                } else {
                    "comment_added".into()
                },
                text: if i == 0 {
                    "added to project".into()
                } else {
                    format!("Comment: {}", title(rng, 5))
                },
                is_pinned: false,
            });
        }
        gid
    }

    fn generate_audit_backfill(
        &mut self,
        rng: &mut ChaCha8Rng,
        size: &WorldSize,
        now: DateTime<Utc>,
    ) {
        if size.audit_events == 0 {
            return;
        }
        let span = Duration::days(i64::from(size.audit_backfill_days.clamp(1, 120)));
        let start = now - span;
        let step = span.num_milliseconds() / size.audit_events as i64;
        for i in 0..size.audit_events {
            let jitter = rng.random_range(0..step.max(1));
            let created_at = start + Duration::milliseconds(step * i as i64 + jitter);
            let event = self.make_audit_event(rng, created_at, None);
            self.audit_events.push(event);
        }
    }

    /// Builds an audit event of a random (or the given) type at `created_at`, with a fresh gid.
    pub fn make_audit_event(
        &mut self,
        rng: &mut ChaCha8Rng,
        created_at: DateTime<Utc>,
        event_type: Option<&str>,
    ) -> AuditEvent {
        let (kind, category, resource_type) = match event_type {
            Some(wanted) => AUDIT_EVENT_TYPES
                .iter()
                .copied()
                .find(|(t, _, _)| *t == wanted)
                .unwrap_or((AUDIT_EVENT_TYPES[0].0, "custom", "workspace")),
            None => AUDIT_EVENT_TYPES[rng.random_range(0..AUDIT_EVENT_TYPES.len())],
        };
        let kind = event_type.unwrap_or(kind);
        let actor = self
            .users
            .at(rng.random_range(0..self.users.len()))
            .cloned();
        let actor_json = match (&actor, rng.random_bool(0.9)) {
            (Some(user), true) => {
                json!({"actor_type": "user", "gid": user.gid, "name": user.name, "email": user.email})
            }
            _ => json!({"actor_type": "asana"}),
        };
        let resource = match resource_type {
            "task" => self
                .tasks
                .at(rng.random_range(0..self.tasks.len().max(1)))
                .map(|t| json!({"resource_type": "task", "resource_subtype": t.resource_subtype, "gid": t.gid, "name": t.name})),
            "project" => self
                .projects
                .at(rng.random_range(0..self.projects.len().max(1)))
                .map(|p| json!({"resource_type": "project", "gid": p.gid, "name": p.name})),
            "user" => actor
                .as_ref()
                .map(|u| json!({"resource_type": "user", "gid": u.gid, "name": u.name, "email": u.email})),
            _ => None,
        }
        .unwrap_or_else(|| json!({"resource_type": "workspace", "gid": self.workspace.gid, "name": self.workspace.name}));
        let context_type = ["web", "desktop", "mobile", "api"][rng.random_range(0..4)];
        let mut context = json!({
            "context_type": context_type,
            "client_ip_address": format!("192.0.2.{}", rng.random_range(1..255)),
            "user_agent": "Mozilla/5.0 (simulated)",
        });
        if context_type == "api" {
            context["api_authentication_method"] = json!("personal_access_token");
        }
        let gid = self.gids.next_gid();
        let body = json!({
            "gid": gid,
            "created_at": timestamp(created_at),
            "event_type": kind,
            "event_category": category,
            "actor": actor_json,
            "resource": resource,
            "details": {},
            "context": context,
        });
        AuditEvent {
            gid,
            created_at,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_world_different_seed_different_world() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let size = WorldSize::default();
        let a = World::generate(7, &size, now);
        let b = World::generate(7, &size, now);
        let c = World::generate(8, &size, now);
        let names = |w: &World| {
            w.tasks
                .iter()
                .map(|t| (t.gid.clone(), t.name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&a), names(&b));
        assert_ne!(names(&a), names(&c));
        assert_eq!(a.projects.len(), size.projects);
        assert!(
            a.tasks.iter().any(|t| t.parent.is_some()),
            "subtasks generated"
        );
        assert_eq!(a.audit_events.len(), size.audit_events);
        assert!(
            a.audit_events
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at)
        );
    }
}
