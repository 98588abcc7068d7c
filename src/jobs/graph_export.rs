//! `graph_export`: exports a project, portfolio, team or goal and everything below it
//! (`POST /exports/graph`, an asynchronous job polled with `GET /jobs/{gid}`), and downloads the
//! gzipped JSON file. The shared steps are in [`super::export`].

use schemars::JsonSchema;
use serde::Deserialize;

use super::export::{self, ExportSettings, Target};
use super::{JobKind, KindContext};
use crate::config::jobs::SettingsCheck;
use crate::config::values::Gid;
use crate::worker::JobOutcome;

/// The `graph_export` kind.
#[derive(Debug)]
pub struct GraphExport;

/// Settings of `graph_export` jobs.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct GraphExportSettings {
    /// The gid of the project, portfolio, team or goal to export with everything below it
    pub parent: Gid,
    /// Download, retention and delivery.
    #[serde(flatten)]
    pub export: ExportSettings,
}

impl JobKind for GraphExport {
    const NAME: &'static str = "graph_export";
    const SUMMARY: &'static str = "exports a project, portfolio, team or goal with everything below it and downloads the file";
    type Settings = GraphExportSettings;

    fn validate(settings: &Self::Settings, check: &mut SettingsCheck<'_>) {
        export::validate(&settings.export, check);
    }

    async fn run(settings: &Self::Settings, cx: &KindContext<'_>) -> JobOutcome {
        let target = Target::Graph {
            parent: settings.parent.to_string(),
        };
        export::run(cx, target, &settings.export).await
    }
}
