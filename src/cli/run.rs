//! `asana-worker run`: the daemon, until SIGTERM or SIGINT (drain, exit 0). SIGHUP reloads the
//! job files.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::common::{ConfigArgs, UsageError};
use crate::clock::SystemClock;
use crate::daemon::{self, DaemonError};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
}

/// Runs the daemon.
pub async fn run(args: RunArgs) -> anyhow::Result<u8> {
    let settings = args.config.load()?;
    let _telemetry = crate::telemetry::init_tracing(
        &settings.log.level,
        settings.log.format,
        settings.telemetry.otlp_endpoint.as_deref(),
    )?;
    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    spawn_signal_handlers(shutdown.clone(), reload_tx)?;
    match daemon::run(settings, Arc::new(SystemClock), shutdown, reload_rx, |_| {}).await {
        Ok(()) => Ok(super::EXIT_OK),
        Err(DaemonError::Jobs(problems)) => {
            Err(UsageError(format!("invalid job files:\n{problems}")).into())
        }
        Err(other) => Err(other.into()),
    }
}

fn spawn_signal_handlers(
    shutdown: CancellationToken,
    reload: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading job files");
                    let _ = reload.try_send(());
                    continue;
                }
            };
            if stopping {
                // A second request to stop while draining: the operator wants out now.
                eprintln!("{name} received again while draining; exiting at once");
                std::process::exit(130);
            }
            tracing::info!("{name} received");
            stopping = true;
            shutdown.cancel();
        }
    });
    Ok(())
}
