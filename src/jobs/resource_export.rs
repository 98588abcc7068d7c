//! `resource_export`: bulk export of a workspace's objects of some types
//! (`POST /exports/resource`, a job polled with `GET /jobs/{gid}`), downloaded as gzipped JSON
//! Lines. Asana allows one resource export in progress per workspace and answers a second with
//! 403: the job then waits (backing off up to `poll_max_interval`) and asks again instead of
//! failing. The shared steps are in [`super::export`].

use schemars::JsonSchema;
use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use super::{JobKind, KindContext};
use crate::config::jobs::SettingsCheck;
use crate::config::values::Gid;
use crate::worker::JobOutcome;

/// The `resource_export` kind.
#[derive(Debug)]
pub struct ResourceExport;

/// The object types a resource export can hold (Asana's `export_request_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResourceType {
    /// Tasks.
    Task,
    /// Teams.
    Team,
    /// Messages.
    Message,
}

impl ResourceType {
    /// The name Asana takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Task => "task",
            ResourceType::Team => "team",
            ResourceType::Message => "message",
        }
    }
}

impl PartialEq<&str> for ResourceType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Settings of `resource_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct ResourceExportSettings {
    /// The gid of the workspace to export from (resource exports need an Enterprise service
    /// account)
    pub workspace: Gid,
    /// The object types to export, one export parameter set each
    #[schemars(length(min = 1))]
    pub resource_types: Vec<ResourceType>,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

impl JobKind for ResourceExport {
    const NAME: &'static str = "resource_export";
    const SUMMARY: &'static str =
        "bulk-exports a workspace's tasks, teams or messages and downloads the JSON Lines file";
    type Settings = ResourceExportSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        export::validate(&settings.export, check);
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        let target = Target::Resource {
            workspace: settings.workspace.to_string(),
            resource_types: settings
                .resource_types
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
        };
        export::run(cx, target, &settings.export).await
    }
}
