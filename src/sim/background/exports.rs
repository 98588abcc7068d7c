//! The export runner: finishes exports when they are due on simulated time, writing each file from
//! a snapshot of the world on a blocking thread of its own.
//!
//! Imports the state and the export model only.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::sim::model::exports::file::write_export;
use crate::sim::model::exports::{Export, ExportFile};
use crate::sim::state::SharedState;

/// Starts the task that finishes exports when they are due; each file is written by its own
/// tracked task, so a huge padded export does not hold back the others.
pub fn spawn(state: &SharedState, tasks: &TaskTracker, shutdown: &CancellationToken) {
    let state = state.clone();
    let shutdown = shutdown.clone();
    let builders = tasks.clone();
    tasks.spawn(async move {
        let tick = state
            .clock
            .to_real(Duration::from_millis(250))
            .clamp(Duration::from_millis(5), Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = state.clock.now();
            let due = state.exports().take_due(now);
            for export in due {
                let state = state.clone();
                builders.spawn(async move {
                    let outcome = if export.fail {
                        Err("The export failed (simulated by /_sim/exports/fail_next).".to_string())
                    } else {
                        build_file(&state, &export).await
                    };
                    let now = state.clock.now();
                    state.exports().finish(&export.gid, outcome, now);
                });
            }
        }
    });
}

async fn build_file(state: &SharedState, export: &Export) -> Result<ExportFile, String> {
    let dir = state
        .exports()
        .dir()
        .map_err(|e| format!("cannot create the export directory: {e}"))?;
    let path = dir.join(export.file_name());
    let world = state.world().clone();
    let export = export.clone();
    let target = path.clone();
    let written = tokio::task::spawn_blocking(move || write_export(&world, &export, &target))
        .await
        .map_err(|e| format!("export writer panicked: {e}"))?
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(written)
}
