//! Custom fields: `GET /custom_fields/{gid}`, `GET /workspaces/{gid}/custom_fields`,
//! `GET /projects/{gid}/custom_field_settings`.

use axum::Router;

use super::read::{CUSTOM_FIELD, PROJECT, ReadRoutes, WORKSPACE};
use crate::sim::state::SharedState;

/// Compact fields of a custom field setting (`CustomFieldSettingCompact` plus what Asana's list
/// returns by default).
const SETTING_COMPACT: &[&str] = &[
    "gid",
    "resource_type",
    "is_important",
    "custom_field",
    "project",
    "parent",
];

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_one("/custom_fields/{custom_field_gid}", CUSTOM_FIELD)
        .get_list("/workspaces/{workspace_gid}/custom_fields", |read| {
            read.path(WORKSPACE)?;
            Ok(read.world.custom_fields.gids())
        })
        .get_value_list(
            "/projects/{project_gid}/custom_field_settings",
            SETTING_COMPACT,
            |read| {
                let world = read.world;
                let project = read.path(PROJECT)?;
                let fields = world
                    .projects
                    .get(&project)
                    .map(|p| p.custom_fields.as_slice())
                    .unwrap_or_default();
                Ok(fields
                    .iter()
                    .filter_map(|gid| world.custom_fields.get(gid))
                    .map(|field| world.render_custom_field_setting(&project, field))
                    .collect())
            },
        )
}
