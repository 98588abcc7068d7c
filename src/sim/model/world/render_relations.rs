//! The objects that link others, as Asana shows them: team, project and portfolio memberships,
//! attachments, time-tracking entries, portfolios and goals, each as "shallow" JSON like the rest
//! of [`super::render`] (references to other objects are markers).
//!
//! Imports [`super`] (the world and its objects), `wire` (markers, timestamps) and the model's
//! rich text (escaping into `html_notes`).

use serde_json::{Map, Value, json};

use super::{
    Attachment, Goal, Portfolio, PortfolioMembership, ProjectMembership, TeamMembership, TimeEntry,
    World,
};
use crate::sim::model::rich_text::escape_xml;
use crate::sim::wire::{reference, references, timestamp};

impl World {
    /// Shallow rendering of a team membership (`TeamMembershipResponse`).
    pub fn render_team_membership(&self, membership: &TeamMembership) -> Value {
        json!({
            "gid": membership.gid,
            "resource_type": "team_membership",
            "user": reference(&membership.user),
            "team": reference(&membership.team),
            "is_guest": membership.is_guest,
            "is_limited_access": membership.is_limited_access,
            "is_admin": membership.is_admin,
        })
    }

    /// Shallow rendering of a project membership (`ProjectMembershipNormalResponse`, with the
    /// `parent`/`member` names the memberships API uses too).
    pub fn render_project_membership(&self, membership: &ProjectMembership) -> Value {
        let write_access = if membership.access_level == "commenter" {
            "comment_only"
        } else {
            "full_write"
        };
        json!({
            "gid": membership.gid,
            "resource_type": "project_membership",
            "resource_subtype": "project_membership",
            "parent": reference(&membership.project),
            "member": reference(&membership.user),
            "access_level": membership.access_level,
            "user": reference(&membership.user),
            "project": reference(&membership.project),
            "write_access": write_access,
        })
    }

    /// Shallow rendering of a portfolio membership: the `portfolio`/`user` names of
    /// `/portfolio_memberships` and the `parent`/`member` names of `/memberships`.
    pub fn render_portfolio_membership(&self, membership: &PortfolioMembership) -> Value {
        json!({
            "gid": membership.gid,
            "resource_type": "portfolio_membership",
            "resource_subtype": "portfolio_membership",
            "portfolio": reference(&membership.portfolio),
            "user": reference(&membership.user),
            "parent": reference(&membership.portfolio),
            "member": reference(&membership.user),
            "access_level": membership.access_level,
        })
    }

    /// Shallow rendering of an attachment's metadata. Files hosted elsewhere link to their
    /// host; the simulator serves no contents, so `download_url` is null.
    pub fn render_attachment(&self, attachment: &Attachment) -> Value {
        let uploaded = attachment.host == "asana";
        let view_url = if uploaded {
            format!(
                "https://app.asana.com/app/asana/-/view_asset?asset_id={}",
                attachment.gid
            )
        } else {
            format!(
                "https://{}.example.com/files/{}",
                attachment.host, attachment.gid
            )
        };
        json!({
            "gid": attachment.gid,
            "resource_type": "attachment",
            "name": attachment.name,
            "resource_subtype": attachment.host,
            "created_at": timestamp(attachment.created_at),
            "download_url": null,
            "permanent_url": uploaded.then(|| format!(
                "https://app.asana.com/app/asana/-/get_asset?asset_id={}",
                attachment.gid
            )),
            "host": attachment.host,
            "parent": reference(&attachment.parent),
            "size": attachment.size,
            "view_url": view_url,
            "connected_to_app": false,
        })
    }

    /// Shallow rendering of a time-tracking entry (`TimeTrackingEntryBase`).
    pub fn render_time_entry(&self, entry: &TimeEntry) -> Value {
        let mut rendered = json!({
            "gid": entry.gid,
            "resource_type": "time_tracking_entry",
            "duration_minutes": entry.duration_minutes,
            "entered_on": entry.entered_on,
            "created_by": reference(&entry.created_by),
            "categories": [],
            "task": reference(&entry.task),
            "created_at": timestamp(entry.created_at),
            "approval_status": "DRAFT",
            "billable_status": entry.billable_status,
            "description": entry.description,
        });
        // Not nullable in the spec: an entry of a task in no project has no such field.
        if let (Some(project), Value::Object(map)) = (&entry.attributable_to, &mut rendered) {
            map.insert("attributable_to".into(), reference(project));
        }
        rendered
    }

    /// Shallow rendering of a portfolio (`PortfolioResponse`).
    pub fn render_portfolio(&self, portfolio: &Portfolio) -> Value {
        json!({
            "gid": portfolio.gid,
            "resource_type": "portfolio",
            "name": portfolio.name,
            "archived": false,
            "color": portfolio.color,
            "start_on": portfolio.start_on,
            "due_on": portfolio.due_on,
            "default_access_level": "editor",
            "created_at": timestamp(portfolio.created_at),
            "created_by": reference(&portfolio.owner),
            "custom_field_settings": [],
            "current_status_update": self.current_status_update(&portfolio.gid),
            "custom_fields": [],
            "members": references(self.portfolio_members(&portfolio.gid)),
            "owner": reference(&portfolio.owner),
            "workspace": reference(&self.workspace.gid),
            "permalink_url": format!("https://app.asana.com/0/portfolio/{}/list", portfolio.gid),
            "public": false,
            "privacy_setting": "members_only",
            "project_templates": [],
        })
    }

    /// Shallow rendering of a goal (`GoalResponse`) with its percentage metric.
    pub fn render_goal(&self, goal: &Goal) -> Value {
        let mut metric = Map::new();
        for (key, value) in [
            ("gid", json!(format!("{}1", goal.gid))),
            ("resource_type", json!("goal_metric")),
            ("resource_subtype", json!("number")),
            ("precision", json!(0)),
            ("unit", json!("percentage")),
            ("currency_code", Value::Null),
            ("initial_number_value", json!(0.0)),
            ("target_number_value", json!(1.0)),
            ("current_number_value", json!(goal.progress / 100.0)),
            (
                "current_display_value",
                json!(format!("{}%", goal.progress)),
            ),
            ("progress_source", json!("manual")),
            ("is_custom_weight", json!(false)),
            ("can_manage", json!(true)),
        ] {
            metric.insert(key.into(), value);
        }
        json!({
            "gid": goal.gid,
            "resource_type": "goal",
            "name": goal.name,
            "html_notes": format!("<body>{}</body>", escape_xml(&goal.notes)),
            "notes": goal.notes,
            "due_on": goal.due_on,
            "start_on": goal.start_on,
            "is_workspace_level": goal.team.is_none(),
            "liked": false,
            "likes": [],
            "num_likes": 0,
            "team": goal.team.as_deref().map(reference),
            "workspace": reference(&self.workspace.gid),
            "followers": references(&goal.followers),
            "time_period": null,
            "metric": metric,
            "owner": goal.owner.as_deref().map(reference),
            "current_status_update": self.current_status_update(&goal.gid),
            "status": goal.status,
            "privacy_setting": "public_to_workspace",
            "default_access_level": "commenter",
            "custom_fields": [],
            "custom_field_settings": [],
        })
    }
}
