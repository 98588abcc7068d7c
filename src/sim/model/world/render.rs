//! Every object as Asana shows it: "shallow" JSON whose references to other objects are markers,
//! each type with its compact fields, and [`render`] to turn one into a response per `opt_fields`.
//!
//! Imports [`super`] (the world and its objects), `wire` (markers, projection, timestamps) and
//! [`crate::sim::model::rich_text`] (escaping into `html_*` fields).

use serde_json::{Value, json};

use super::{
    CustomField, CustomValue, Project, Section, StatusUpdate, Story, Tag, Task, Team, User, World,
};
use crate::sim::model::rich_text::escape_xml;
use crate::sim::wire::{self, Resolver, reference, references, timestamp};

impl World {
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
        let current_status_update = self.current_status_update(&project.gid);
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
            "members": references(self.project_members(&project.gid)),
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
            "dependencies": references(&task.dependencies),
            "dependents": references(&task.dependents),
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
            "actual_time_minutes": self.time_spent(&task.gid),
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

    /// A reference to the latest status update of a project, portfolio or goal, or null.
    pub fn current_status_update(&self, parent: &str) -> Value {
        self.status_updates
            .within(parent)
            .max_by_key(|u| u.created_at)
            .map(|u| reference(&u.gid))
            .unwrap_or(Value::Null)
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
        "goal" => &["gid", "resource_type", "name", "owner"],
        "attachment" => &["gid", "resource_type", "name", "resource_subtype"],
        "team_membership" => &[
            "gid",
            "resource_type",
            "user",
            "team",
            "is_guest",
            "is_limited_access",
            "is_admin",
        ],
        "project_membership" => &["gid", "resource_type", "parent", "member", "access_level"],
        "portfolio_membership" => &["gid", "resource_type", "portfolio", "user", "access_level"],
        "time_tracking_entry" => &[
            "gid",
            "resource_type",
            "duration_minutes",
            "entered_on",
            "attributable_to",
            "created_by",
            "categories",
        ],
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
            "team_membership" => self.render_team_membership(self.team_memberships.get(gid)?),
            "project_membership" => {
                self.render_project_membership(self.project_memberships.get(gid)?)
            }
            "attachment" => self.render_attachment(self.attachments.get(gid)?),
            "time_tracking_entry" => self.render_time_entry(self.time_entries.get(gid)?),
            "portfolio" => self.render_portfolio(self.portfolios.get(gid)?),
            "portfolio_membership" => {
                self.render_portfolio_membership(self.portfolio_memberships.get(gid)?)
            }
            "goal" => self.render_goal(self.goals.get(gid)?),
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
