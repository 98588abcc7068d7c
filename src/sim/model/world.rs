//! The simulated organization: a seeded, deterministic world of users, teams, projects, sections,
//! tasks, subtasks, stories, tags, custom fields, status updates and audit-log events.
//!
//! Objects are plain typed structs kept in [`Table`]s (insertion order plus a gid index). Each
//! type renders itself as "shallow" JSON whose references to other objects are markers
//! ([`wire::reference`]); [`wire::project`] expands them per `opt_fields`, so every endpoint gets
//! Asana's compact/full/opt_fields behaviour from one place.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::rich_text::escape_xml;
use crate::sim::config::WorldSize;
use crate::sim::wire::{self, Resolver, reference, references};

/// Format of Asana timestamps: `2012-02-22T02:06:58.147Z`.
pub fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A table of objects in insertion order, indexed by gid.
#[derive(Debug, Clone)]
pub struct Table<T> {
    items: Vec<T>,
    index: HashMap<String, usize>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            index: HashMap::new(),
        }
    }
}

/// Objects that have a gid.
pub trait HasGid {
    /// The object's gid.
    fn gid(&self) -> &str;
}

impl<T: HasGid> Table<T> {
    /// Adds an object.
    pub fn insert(&mut self, item: T) {
        self.index.insert(item.gid().to_string(), self.items.len());
        self.items.push(item);
    }

    /// Looks an object up.
    pub fn get(&self, gid: &str) -> Option<&T> {
        self.index.get(gid).map(|&i| &self.items[i])
    }

    /// Looks an object up for change.
    pub fn get_mut(&mut self, gid: &str) -> Option<&mut T> {
        self.index.get(gid).map(|&i| &mut self.items[i])
    }

    /// All objects in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The object at position `i` in insertion order.
    pub fn at(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }
}

macro_rules! has_gid {
    ($($t:ty),*) => { $(impl HasGid for $t { fn gid(&self) -> &str { &self.gid } })* };
}

/// The organization.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Gid.
    pub gid: String,
    /// Display name.
    pub name: String,
    /// Email domains of the organization.
    pub email_domains: Vec<String>,
}

/// A user of the organization.
#[derive(Debug, Clone)]
pub struct User {
    /// Gid.
    pub gid: String,
    /// Full name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Whether the user is still active in the organization.
    pub active: bool,
}

/// A team.
#[derive(Debug, Clone)]
pub struct Team {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Member user gids.
    pub members: Vec<String>,
}

/// A project.
#[derive(Debug, Clone)]
pub struct Project {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Owning team.
    pub team: String,
    /// Owner user.
    pub owner: String,
    /// Member user gids.
    pub members: Vec<String>,
    /// Follower user gids.
    pub followers: Vec<String>,
    /// Whether archived.
    pub archived: bool,
    /// Color name.
    pub color: String,
    /// Notes.
    pub notes: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last modified.
    pub modified_at: DateTime<Utc>,
    /// Due date (`YYYY-MM-DD`).
    pub due_on: Option<String>,
    /// Custom field gids attached to the project.
    pub custom_fields: Vec<String>,
}

/// A section of a project.
#[derive(Debug, Clone)]
pub struct Section {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Project it belongs to.
    pub project: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// A value of a custom field on a task.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    /// Text.
    Text(String),
    /// Number.
    Number(f64),
    /// Enum option gid.
    Enum(String),
}

/// A task or subtask.
#[derive(Debug, Clone)]
pub struct Task {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// `default_task`, `milestone`, `approval`.
    pub resource_subtype: String,
    /// Assignee user gid.
    pub assignee: Option<String>,
    /// Creator user gid.
    pub created_by: String,
    /// Whether completed.
    pub completed: bool,
    /// When completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last modified (bumped by every change, including new stories).
    pub modified_at: DateTime<Utc>,
    /// Due date.
    pub due_on: Option<String>,
    /// Start date.
    pub start_on: Option<String>,
    /// (project gid, section gid) memberships.
    pub memberships: Vec<(String, String)>,
    /// Parent task for subtasks.
    pub parent: Option<String>,
    /// Tag gids.
    pub tags: Vec<String>,
    /// Follower user gids.
    pub followers: Vec<String>,
    /// Custom field values by field gid.
    pub custom_fields: Vec<(String, CustomValue)>,
    /// Number of likes.
    pub num_likes: u32,
    /// Whether deleted (kept for events).
    pub deleted: bool,
}

/// A story (comment or system story) on a task.
#[derive(Debug, Clone)]
pub struct Story {
    /// Gid.
    pub gid: String,
    /// Task it belongs to.
    pub target: String,
    /// Author.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// `comment_added` or a system subtype.
    pub resource_subtype: String,
    /// Text.
    pub text: String,
    /// Whether pinned.
    pub is_pinned: bool,
}

/// A tag.
#[derive(Debug, Clone)]
pub struct Tag {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Color.
    pub color: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An enum option of a custom field.
#[derive(Debug, Clone)]
pub struct EnumOption {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// Color.
    pub color: String,
}

/// A custom field definition.
#[derive(Debug, Clone)]
pub struct CustomField {
    /// Gid.
    pub gid: String,
    /// Name.
    pub name: String,
    /// `text`, `number` or `enum`.
    pub field_type: String,
    /// Options of enum fields.
    pub enum_options: Vec<EnumOption>,
    /// Precision of number fields.
    pub precision: u32,
}

/// A status update on a project.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    /// Gid.
    pub gid: String,
    /// Project, portfolio or goal gid.
    pub parent: String,
    /// Author.
    pub author: String,
    /// `on_track`, ….
    pub status_type: String,
    /// Title.
    pub title: String,
    /// Text.
    pub text: String,
    /// Rich text.
    pub html_text: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// An audit-log event, stored as Asana returns it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Gid.
    pub gid: String,
    /// Created (the log's sort key).
    pub created_at: DateTime<Utc>,
    /// The event as JSON (`AuditLogEvent`).
    pub body: Value,
}

has_gid!(
    Workspace,
    User,
    Team,
    Project,
    Section,
    Task,
    Story,
    Tag,
    CustomField,
    StatusUpdate,
    AuditEvent
);

/// Issues gids: numeric strings in Asana's style, unique across all object types.
#[derive(Debug, Clone)]
pub struct GidSource {
    next: u64,
}

impl GidSource {
    /// Starts at `base`.
    pub fn new(base: u64) -> Self {
        Self { next: base }
    }

    /// The next gid.
    pub fn next_gid(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }
}

/// The whole simulated organization.
#[derive(Debug, Clone)]
pub struct World {
    /// The single organization.
    pub workspace: Workspace,
    /// Users; index 0 is the service account's user.
    pub users: Table<User>,
    /// Teams.
    pub teams: Table<Team>,
    /// Projects.
    pub projects: Table<Project>,
    /// Sections.
    pub sections: Table<Section>,
    /// Tasks and subtasks.
    pub tasks: Table<Task>,
    /// Stories.
    pub stories: Table<Story>,
    /// Tags.
    pub tags: Table<Tag>,
    /// Custom fields.
    pub custom_fields: Table<CustomField>,
    /// Status updates.
    pub status_updates: Table<StatusUpdate>,
    /// Audit-log events sorted by `created_at`, then gid.
    pub audit_events: Vec<AuditEvent>,
    /// Gid issuer for new objects.
    pub gids: GidSource,
    /// Random source for generated activity, seeded.
    pub rng: ChaCha8Rng,
}

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
const COLORS: &[&str] = &[
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

fn title(rng: &mut ChaCha8Rng, words: usize) -> String {
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

fn date(time: DateTime<Utc>) -> String {
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
            projects: Table::default(),
            sections: Table::default(),
            tasks: Table::default(),
            stories: Table::default(),
            tags: Table::default(),
            custom_fields: Table::default(),
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
                members: members.clone(),
            });
            for _ in 0..size.projects_per_team {
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
        self.projects.insert(Project {
            gid: project_gid.clone(),
            name: title(rng, 2),
            team: team.to_string(),
            owner: members[rng.random_range(0..members.len())].clone(),
            members: members.to_vec(),
            followers: members.iter().take(2).cloned().collect(),
            archived: false,
            color: COLORS[rng.random_range(0..COLORS.len())].to_string(),
            notes: format!("Project notes: {}", title(rng, 4)),
            created_at: created,
            modified_at: now - Duration::hours(rng.random_range(1..200)),
            due_on: Some(date(now + Duration::days(rng.random_range(10..120)))),
            custom_fields: field_gids.to_vec(),
        });
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

    /// Inserts an audit event at its place in creation order (late events land in the past).
    pub fn insert_audit_event(&mut self, event: AuditEvent) {
        let position = self.audit_events.partition_point(|e| {
            (e.created_at, gid_key(&e.gid)) <= (event.created_at, gid_key(&event.gid))
        });
        self.audit_events.insert(position, event);
    }

    /// Drops the audit events created before `cutoff` (past the retention period).
    pub fn expire_audit_events(&mut self, cutoff: DateTime<Utc>) {
        let expired = self.audit_events.partition_point(|e| e.created_at < cutoff);
        self.audit_events.drain(..expired);
    }

    /// Type and compact fields of the object `gid`, if it exists.
    pub fn kind_of(&self, gid: &str) -> Option<&'static str> {
        if gid == self.workspace.gid {
            Some("workspace")
        } else if self.users.get(gid).is_some() {
            Some("user")
        } else if self.teams.get(gid).is_some() {
            Some("team")
        } else if self.projects.get(gid).is_some() {
            Some("project")
        } else if self.sections.get(gid).is_some() {
            Some("section")
        } else if self.tasks.get(gid).is_some() {
            Some("task")
        } else if self.stories.get(gid).is_some() {
            Some("story")
        } else if self.tags.get(gid).is_some() {
            Some("tag")
        } else if self.custom_fields.get(gid).is_some() {
            Some("custom_field")
        } else if self.status_updates.get(gid).is_some() {
            Some("status_update")
        } else {
            None
        }
    }

    /// The user a request names: `me` (the caller, whose gid is `me`), a gid, or an email
    /// address in any case, as Asana accepts user references.
    pub fn find_user(&self, raw: &str, me: &str) -> Option<String> {
        if raw == "me" {
            return Some(me.to_string());
        }
        if let Some(user) = self.users.get(raw) {
            return Some(user.gid.clone());
        }
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(raw))
            .map(|u| u.gid.clone())
    }

    /// Subtasks of a task, in creation order.
    pub fn subtasks_of<'a>(&'a self, task: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .iter()
            .filter(move |t| t.parent.as_deref() == Some(task) && !t.deleted)
    }

    /// Shallow rendering of the workspace.
    pub fn render_workspace(&self) -> Value {
        json!({
            "gid": self.workspace.gid,
            "resource_type": "workspace",
            "name": self.workspace.name,
            "email_domains": self.workspace.email_domains,
            "is_organization": true,
        })
    }

    /// Shallow rendering of a user.
    pub fn render_user(&self, user: &User) -> Value {
        json!({
            "gid": user.gid,
            "resource_type": "user",
            "name": user.name,
            "email": user.email,
            "photo": null,
            "workspaces": [reference(&self.workspace.gid)],
        })
    }

    /// Shallow rendering of a team.
    pub fn render_team(&self, team: &Team) -> Value {
        json!({
            "gid": team.gid,
            "resource_type": "team",
            "name": team.name,
            "description": team.description,
            "html_description": format!("<body>{}</body>", escape_xml(&team.description)),
            "organization": reference(&self.workspace.gid),
            "permalink_url": format!("https://app.asana.com/0/team/{}", team.gid),
            "visibility": "request_to_join",
            "edit_team_name_or_description_access_level": "all_team_members",
            "edit_team_visibility_or_trash_team_access_level": "all_team_members",
            "member_invite_management_access_level": "all_team_members",
            "guest_invite_management_access_level": "all_team_members",
            "join_request_management_access_level": "all_team_members",
            "team_member_removal_access_level": "all_team_members",
            "team_content_management_access_level": "no_restriction",
            "endorsed": false,
            "custom_field_settings": [],
        })
    }

    /// Shallow rendering of a project.
    pub fn render_project(&self, project: &Project) -> Value {
        // `custom_fields` are values set on the project itself (none in the simulated world);
        // the fields enabled for its tasks are `custom_field_settings`. Settings refer to their
        // field by reference so rendering a project (which every task reference does) stays cheap.
        let settings: Vec<Value> = project
            .custom_fields
            .iter()
            .map(|field| {
                json!({
                    "gid": custom_field_setting_gid(&project.gid, field),
                    "resource_type": "custom_field_setting",
                    "is_important": true,
                    "custom_field": reference(field),
                })
            })
            .collect();
        let custom_fields: Vec<Value> = Vec::new();
        let current_status_update = self
            .status_updates
            .iter()
            .filter(|u| u.parent == project.gid)
            .max_by_key(|u| u.created_at)
            .map(|u| reference(&u.gid));
        json!({
            "gid": project.gid,
            "resource_type": "project",
            "name": project.name,
            "archived": project.archived,
            "color": project.color,
            "created_at": timestamp(project.created_at),
            "modified_at": timestamp(project.modified_at),
            "due_on": project.due_on,
            "due_date": project.due_on,
            "start_on": null,
            "default_view": "list",
            "html_notes": format!("<body>{}</body>", escape_xml(&project.notes)),
            "notes": project.notes,
            "public": true,
            "privacy_setting": "public_to_workspace",
            "owner": reference(&project.owner),
            "team": reference(&project.team),
            "workspace": reference(&self.workspace.gid),
            "members": references(&project.members),
            "followers": references(&project.followers),
            "custom_fields": custom_fields,
            "completed": false,
            "completed_at": null,
            "completed_by": null,
            "current_status": null,
            "current_status_update": current_status_update,
            "custom_field_settings": settings,
            "default_access_level": "editor",
            "minimum_access_level_for_customization": "admin",
            "minimum_access_level_for_sharing": "admin",
            "project_brief": null,
            "created_from_template": null,
            "permalink_url": format!("https://app.asana.com/0/{}/list", project.gid),
            "icon": "list",
        })
    }

    /// Shallow rendering of a section.
    pub fn render_section(&self, section: &Section) -> Value {
        json!({
            "gid": section.gid,
            "resource_type": "section",
            "name": section.name,
            "created_at": timestamp(section.created_at),
            "project": reference(&section.project),
            "projects": [reference(&section.project)],
        })
    }

    /// Shallow rendering of a custom field, with a task's value when given.
    pub fn render_custom_field(&self, field: &CustomField, value: Option<&CustomValue>) -> Value {
        let options: Vec<Value> = field
            .enum_options
            .iter()
            .map(|o| json!({"gid": o.gid, "resource_type": "enum_option", "name": o.name, "enabled": true, "color": o.color}))
            .collect();
        let mut rendered = json!({
            "gid": field.gid,
            "resource_type": "custom_field",
            "name": field.name,
            "type": field.field_type,
            "resource_subtype": field.field_type,
            "representation_type": field.field_type,
            "enabled": true,
            "is_formula_field": false,
            "description": format!("{} (simulated)", field.name),
            "created_by": null,
            "is_global_to_workspace": true,
            "has_notifications_enabled": false,
            "id_prefix": null,
            "input_restrictions": [],
            "format": if field.field_type == "number" { "custom" } else { "none" },
            "currency_code": null,
            "custom_label": null,
            "custom_label_position": null,
            "asana_created_field": null,
            "is_value_read_only": false,
            "privacy_setting": "public_with_guests",
            "default_access_level": "editor",
        });
        if field.field_type == "enum" {
            rendered["enum_options"] = Value::Array(options.clone());
            rendered["enum_value"] = match value {
                Some(CustomValue::Enum(gid)) => options
                    .iter()
                    .find(|o| o["gid"] == json!(gid))
                    .cloned()
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            };
        }
        if field.field_type == "number" {
            rendered["precision"] = json!(field.precision);
            rendered["number_value"] = match value {
                Some(CustomValue::Number(n)) => json!(n),
                _ => Value::Null,
            };
        }
        if field.field_type == "text" {
            rendered["text_value"] = match value {
                Some(CustomValue::Text(t)) => json!(t),
                _ => Value::Null,
            };
        }
        rendered["display_value"] = match value {
            Some(CustomValue::Text(t)) => json!(t),
            Some(CustomValue::Number(n)) => json!(format!("{n:.2}")),
            Some(CustomValue::Enum(gid)) => field
                .enum_options
                .iter()
                .find(|o| &o.gid == gid)
                .map(|o| json!(o.name))
                .unwrap_or(Value::Null),
            None => Value::Null,
        };
        rendered
    }

    /// Shallow rendering of a task.
    pub fn render_task(&self, task: &Task) -> Value {
        let memberships: Vec<Value> = task
            .memberships
            .iter()
            .map(|(p, s)| json!({"project": reference(p), "section": reference(s)}))
            .collect();
        let projects: Vec<Value> = task.memberships.iter().map(|(p, _)| reference(p)).collect();
        let custom_fields: Vec<Value> = task
            .custom_fields
            .iter()
            .filter_map(|(gid, value)| {
                self.custom_fields
                    .get(gid)
                    .map(|f| self.render_custom_field(f, Some(value)))
            })
            .collect();
        let num_subtasks = self.subtasks_of(&task.gid).count();
        let mut rendered = json!({
            "gid": task.gid,
            "resource_type": "task",
            "name": task.name,
            "resource_subtype": task.resource_subtype,
            "created_by": {"gid": task.created_by, "resource_type": "user"},
            "assignee_status": "upcoming",
            "completed": task.completed,
            "completed_at": task.completed_at.map(timestamp),
            "completed_by": task.completed.then(|| reference(task.assignee.as_deref().unwrap_or(&task.created_by))),
            "created_at": timestamp(task.created_at),
            "dependencies": [],
            "dependents": [],
            "due_at": null,
            "due_on": task.due_on,
            "html_notes": format!("<body>{}</body>", escape_xml(&task.notes)),
            "hearted": false,
            "hearts": [],
            "is_rendered_as_separator": false,
            "liked": false,
            "likes": [],
            "memberships": memberships,
            "modified_at": timestamp(task.modified_at),
            "notes": task.notes,
            "num_hearts": task.num_likes,
            "num_likes": task.num_likes,
            "num_subtasks": num_subtasks,
            "start_at": null,
            "start_on": task.start_on,
            "actual_time_minutes": null,
            "assignee": task.assignee.as_deref().map(reference),
            "assignee_section": null,
            "custom_fields": custom_fields,
            "followers": references(&task.followers),
            "parent": task.parent.as_deref().map(reference),
            "projects": projects,
            "tags": references(&task.tags),
            "workspace": reference(&self.workspace.gid),
            "permalink_url": format!("https://app.asana.com/0/0/{}", task.gid),
        });
        // Added separately: one `json!` this large exceeds the macro recursion limit.
        // `approval_status` (not nullable in the spec) exists only on approval tasks; `external`
        // only on tasks an integration has set it on, which simulated tasks never are.
        if let Value::Object(map) = &mut rendered {
            for key in ["assigned_by", "custom_type", "custom_type_status_option"] {
                map.insert(key.into(), Value::Null);
            }
            if task.resource_subtype == "approval" {
                map.insert("approval_status".into(), json!("pending"));
            }
        }
        rendered
    }

    /// Shallow rendering of a story.
    pub fn render_story(&self, story: &Story) -> Value {
        let is_comment = story.resource_subtype == "comment_added";
        json!({
            "gid": story.gid,
            "resource_type": "story",
            "created_at": timestamp(story.created_at),
            "created_by": reference(&story.created_by),
            "resource_subtype": story.resource_subtype,
            "text": story.text,
            "html_text": format!("<body>{}</body>", escape_xml(&story.text)),
            "is_pinned": story.is_pinned,
            "is_editable": is_comment,
            "is_edited": false,
            "reaction_summary": [],
            "previews": [],
            "type": if is_comment { "comment" } else { "system" },
            "target": reference(&story.target),
            "liked": false,
            "likes": [],
            "num_likes": 0,
            "hearted": false,
            "hearts": [],
            "num_hearts": 0,
            "source": if is_comment { "web" } else { "asana" },
        })
    }

    /// Shallow rendering of a tag.
    pub fn render_tag(&self, tag: &Tag) -> Value {
        json!({
            "gid": tag.gid,
            "resource_type": "tag",
            "name": tag.name,
            "color": tag.color,
            "created_at": timestamp(tag.created_at),
            "followers": [],
            "notes": "",
            "workspace": reference(&self.workspace.gid),
            "permalink_url": format!("https://app.asana.com/0/{}/list", tag.gid),
        })
    }

    /// Shallow rendering of a status update.
    pub fn render_status_update(&self, update: &StatusUpdate) -> Value {
        let subtype = match self.kind_of(&update.parent) {
            Some("portfolio") => "portfolio_status_update",
            Some("goal") => "goal_status_update",
            _ => "project_status_update",
        };
        json!({
            "gid": update.gid,
            "resource_type": "status_update",
            "resource_subtype": subtype,
            "title": update.title,
            "text": update.text,
            "html_text": update.html_text,
            "status_type": update.status_type,
            "author": reference(&update.author),
            "created_by": reference(&update.author),
            "created_at": timestamp(update.created_at),
            "modified_at": timestamp(update.created_at),
            "parent": reference(&update.parent),
            "hearted": false,
            "hearts": [],
            "liked": false,
            "likes": [],
            "num_hearts": 0,
            "num_likes": 0,
            "reaction_summary": [],
        })
    }

    /// Shallow rendering of a project's custom field setting (`CustomFieldSettingResponse`).
    /// Settings are not stored: their gid is derived from the project and the field, so the same
    /// setting always has the same gid.
    pub fn render_custom_field_setting(&self, project: &str, field: &CustomField) -> Value {
        json!({
            "gid": custom_field_setting_gid(project, &field.gid),
            "resource_type": "custom_field_setting",
            "project": reference(project),
            "parent": reference(project),
            "is_important": true,
            "custom_field": self.render_custom_field(field, None),
        })
    }
}

/// The gid of the setting that attaches custom field `field` to `project`.
pub fn custom_field_setting_gid(project: &str, field: &str) -> String {
    let tail = field.len().saturating_sub(6);
    format!("{project}{}", field.get(tail..).unwrap_or(field))
}

/// A change to a task's fields, as `PUT /tasks/{gid}`, the admin API and the activity generator
/// make it. `None` leaves a field alone; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPatch {
    /// New name.
    pub name: Option<String>,
    /// New notes.
    pub notes: Option<String>,
    /// New completion state.
    pub completed: Option<bool>,
    /// New assignee (user gid) or unassigned.
    pub assignee: Option<Option<String>>,
    /// New due date (`YYYY-MM-DD`) or none.
    pub due_on: Option<Option<String>>,
}

/// A new task, as `POST /tasks` makes it.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Name.
    pub name: String,
    /// Notes.
    pub notes: String,
    /// Assignee user gid.
    pub assignee: Option<String>,
    /// Creator user gid.
    pub created_by: String,
    /// Whether created completed.
    pub completed: bool,
    /// Due date.
    pub due_on: Option<String>,
    /// (project, section) memberships.
    pub memberships: Vec<(String, String)>,
    /// Parent task.
    pub parent: Option<String>,
}

/// One field a patch changed, with its new value (shallow JSON; references as markers).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    /// Field name as in `TaskResponse`.
    pub field: &'static str,
    /// The value after the change.
    pub new_value: Value,
}

impl World {
    /// Applies `patch` to a live task at `now`: only fields whose value differs change, and
    /// `modified_at` moves forward when anything did (as Asana's `modified_since` expects).
    /// Returns the changes, or `None` when the task does not exist.
    pub fn update_task(
        &mut self,
        gid: &str,
        patch: &TaskPatch,
        now: DateTime<Utc>,
    ) -> Option<Vec<FieldChange>> {
        let task = self.tasks.get_mut(gid).filter(|t| !t.deleted)?;
        let mut changes = Vec::new();
        if let Some(name) = &patch.name
            && name != &task.name
        {
            task.name = name.clone();
            changes.push(FieldChange {
                field: "name",
                new_value: json!(name),
            });
        }
        if let Some(notes) = &patch.notes
            && notes != &task.notes
        {
            task.notes = notes.clone();
            changes.push(FieldChange {
                field: "notes",
                new_value: json!(notes),
            });
        }
        if let Some(completed) = patch.completed
            && completed != task.completed
        {
            task.completed = completed;
            task.completed_at = completed.then_some(now);
            changes.push(FieldChange {
                field: "completed",
                new_value: json!(completed),
            });
        }
        if let Some(assignee) = &patch.assignee
            && assignee != &task.assignee
        {
            task.assignee = assignee.clone();
            if let Some(user) = assignee
                && !task.followers.contains(user)
            {
                task.followers.push(user.clone());
            }
            changes.push(FieldChange {
                field: "assignee",
                new_value: assignee.as_deref().map(reference).unwrap_or(Value::Null),
            });
        }
        if let Some(due_on) = &patch.due_on
            && due_on != &task.due_on
        {
            task.due_on = due_on.clone();
            changes.push(FieldChange {
                field: "due_on",
                new_value: json!(due_on),
            });
        }
        if !changes.is_empty() {
            task.modified_at = task.modified_at.max(now);
        }
        Some(changes)
    }

    /// Creates a task at `now` and returns its gid. Callers check that referenced objects exist.
    pub fn create_task(&mut self, new: NewTask, now: DateTime<Utc>) -> String {
        let gid = self.gids.next_gid();
        let mut followers = vec![new.created_by.clone()];
        if let Some(assignee) = &new.assignee
            && assignee != &new.created_by
        {
            followers.push(assignee.clone());
        }
        self.tasks.insert(Task {
            gid: gid.clone(),
            name: new.name,
            notes: new.notes,
            resource_subtype: "default_task".into(),
            assignee: new.assignee,
            created_by: new.created_by,
            completed: new.completed,
            completed_at: new.completed.then_some(now),
            created_at: now,
            modified_at: now,
            due_on: new.due_on,
            start_on: None,
            memberships: new.memberships,
            parent: new.parent,
            tags: Vec::new(),
            followers,
            custom_fields: Vec::new(),
            num_likes: 0,
            deleted: false,
        });
        gid
    }

    /// Moves a live task to the trash at `now` (it stays in the table, flagged, so events and
    /// streams can still name it). Returns whether it was live.
    pub fn delete_task(&mut self, gid: &str, now: DateTime<Utc>) -> bool {
        match self.tasks.get_mut(gid).filter(|t| !t.deleted) {
            Some(task) => {
                task.deleted = true;
                task.modified_at = task.modified_at.max(now);
                true
            }
            None => false,
        }
    }

    /// Adds a comment story by `author` to a live task at `now` and bumps the task's
    /// `modified_at` ("adding stories" counts as modifying a task). Returns the story's gid.
    pub fn add_comment(
        &mut self,
        task: &str,
        author: &str,
        text: &str,
        is_pinned: bool,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let target = self.tasks.get_mut(task).filter(|t| !t.deleted)?;
        target.modified_at = target.modified_at.max(now);
        let gid = self.gids.next_gid();
        self.stories.insert(Story {
            gid: gid.clone(),
            target: task.to_string(),
            created_by: author.to_string(),
            created_at: now,
            resource_subtype: "comment_added".into(),
            text: text.to_string(),
            is_pinned,
        });
        Some(gid)
    }

    /// Stores a status update and returns its gid. Callers validate the parent and type.
    pub fn add_status_update(&mut self, update: StatusUpdate) -> String {
        let gid = update.gid.clone();
        self.status_updates.insert(update);
        gid
    }

    /// The task, its ancestors, and every project any of them is in: the event streams an event
    /// about the task bubbles up to. The workspace stream is not included.
    pub fn task_streams(&self, gid: &str) -> Vec<String> {
        let mut streams = Vec::new();
        let mut current = self.tasks.get(gid);
        let mut depth = 0;
        while let Some(task) = current {
            streams.push(task.gid.clone());
            for (project, _) in &task.memberships {
                if !streams.contains(project) {
                    streams.push(project.clone());
                }
            }
            depth += 1;
            if depth > 32 {
                break;
            }
            current = task.parent.as_deref().and_then(|p| self.tasks.get(p));
        }
        streams
    }

    /// Live tasks in a project (top-level members), in insertion order.
    pub fn project_tasks<'a>(&'a self, project: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks
            .iter()
            .filter(move |t| !t.deleted && t.memberships.iter().any(|(p, _)| p == project))
    }
}

fn gid_key(gid: &str) -> (usize, &str) {
    (gid.len(), gid)
}

/// Compact fields per resource type, from the spec's `*Compact` schemas.
pub fn compact_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "task" => &[
            "gid",
            "resource_type",
            "name",
            "resource_subtype",
            "created_by",
        ],
        "story" => &[
            "gid",
            "resource_type",
            "created_at",
            "created_by",
            "resource_subtype",
            "text",
        ],
        "status_update" => &["gid", "resource_type", "title", "resource_subtype"],
        "custom_field" => &[
            "gid",
            "resource_type",
            "name",
            "type",
            "enum_options",
            "enabled",
            "representation_type",
            "is_formula_field",
            "date_value",
            "enum_value",
            "multi_enum_values",
            "number_value",
            "text_value",
            "display_value",
        ],
        _ => &["gid", "resource_type", "name"],
    }
}

impl Resolver for World {
    fn resolve(&self, gid: &str) -> Option<(Value, &'static [&'static str])> {
        let kind = self.kind_of(gid)?;
        let value = match kind {
            "workspace" => self.render_workspace(),
            "user" => self.render_user(self.users.get(gid)?),
            "team" => self.render_team(self.teams.get(gid)?),
            "project" => self.render_project(self.projects.get(gid)?),
            "section" => self.render_section(self.sections.get(gid)?),
            "task" => self.render_task(self.tasks.get(gid)?),
            "story" => self.render_story(self.stories.get(gid)?),
            "tag" => self.render_tag(self.tags.get(gid)?),
            "custom_field" => self.render_custom_field(self.custom_fields.get(gid)?, None),
            "status_update" => self.render_status_update(self.status_updates.get(gid)?),
            _ => return None,
        };
        Some((value, compact_fields(kind)))
    }
}

/// Renders `gid` for a response: compact or full, or per `opt_fields`.
pub fn render(
    world: &World,
    gid: &str,
    fields: Option<&wire::FieldTree>,
    detail: wire::Detail,
) -> Option<Value> {
    let (shallow, compact) = world.resolve(gid)?;
    Some(wire::project(&shallow, compact, fields, detail, world))
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
        assert_eq!(a.projects.len(), size.teams * size.projects_per_team);
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

    #[test]
    fn late_audit_events_are_inserted_in_order() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut world = World::generate(1, &WorldSize::default(), now);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let late = world.make_audit_event(&mut rng, now - Duration::days(3), None);
        let gid = late.gid.clone();
        world.insert_audit_event(late);
        assert!(
            world
                .audit_events
                .windows(2)
                .all(|w| w[0].created_at <= w[1].created_at)
        );
        assert!(world.audit_events.iter().any(|e| e.gid == gid));
    }
}
