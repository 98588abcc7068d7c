//! `graph_export`: exports a project, portfolio, team or goal and everything below it
//! (`POST /exports/graph`, an asynchronous job polled with `GET /jobs/{gid}`), and downloads the
//! gzipped JSON file. The shared steps are in [`super::export`].

use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use crate::asana::AsanaClient;
use crate::config::jobs::{JobSpec, REQUIRED, SettingInfo, SettingType};
use crate::worker::{JobOutcome, RunContext};

/// The `[settings]` keys of `graph_export`.
pub const SETTINGS: &[SettingInfo] = crate::export_settings![SettingInfo {
    name: "parent",
    ty: SettingType::String,
    default: REQUIRED,
    doc: "gid of the project, portfolio, team or goal to export with everything below it",
}];

/// Settings of `graph_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GraphExportSettings {
    /// Gid of the graph's root.
    pub parent: String,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

/// Runs one attempt.
pub async fn run(
    ctx: &RunContext,
    job: &JobSpec,
    settings: &GraphExportSettings,
    client: &AsanaClient,
) -> JobOutcome {
    let target = Target::Graph {
        parent: settings.parent.clone(),
    };
    export::run(ctx, job, target, &settings.export, client).await
}
