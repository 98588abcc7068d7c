//! `resource_export`: bulk export of a workspace's objects of some types
//! (`POST /exports/resource`, a job polled with `GET /jobs/{gid}`), downloaded as gzipped JSON
//! Lines. Asana allows one resource export in progress per workspace and answers a second with
//! 403: the job then waits (backing off up to `poll_max_interval`) and asks again instead of
//! failing. The shared steps are in [`super::export`].

use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use crate::asana::AsanaClient;
use crate::config::jobs::{JobSpec, REQUIRED, SettingInfo, SettingType};
use crate::worker::{JobOutcome, RunContext};

/// The `[settings]` keys of `resource_export`.
pub const SETTINGS: &[SettingInfo] = crate::export_settings![
    SettingInfo {
        name: "workspace",
        ty: SettingType::String,
        default: REQUIRED,
        doc: "gid of the workspace to export from",
    },
    SettingInfo {
        name: "resource_types",
        ty: SettingType::StringList,
        default: REQUIRED,
        doc: "object types to export, e.g. [\"task\", \"team\", \"message\"]",
    },
];

/// Settings of `resource_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResourceExportSettings {
    /// The workspace's gid.
    pub workspace: String,
    /// Object types, one export parameter set each.
    pub resource_types: Vec<String>,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

/// Runs one attempt.
pub async fn run(
    ctx: &RunContext,
    job: &JobSpec,
    settings: &ResourceExportSettings,
    client: &AsanaClient,
) -> JobOutcome {
    if settings.resource_types.is_empty() {
        return JobOutcome::Failed {
            error: format!(
                "job {:?}: resource_types is empty; list the object types to export, e.g. [\"task\"]",
                job.name
            ),
        };
    }
    let target = Target::Resource {
        workspace: settings.workspace.clone(),
        resource_types: settings.resource_types.clone(),
    };
    export::run(ctx, job, target, &settings.export, client).await
}
