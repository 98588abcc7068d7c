//! `asana-worker demo`: starts the built-in simulator on a free loopback port and exercises it.
//! Until the daemon lands this shows the simulator's main paths; it becomes the full demo (example
//! jobs on a temporary SQLite database) with the daemon issue.

use clap::Args;

use crate::sim::{SimConfig, SimServer};

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the simulated world.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<u8> {
    let config = SimConfig {
        seed: args.seed,
        ..SimConfig::default()
    };
    let server = SimServer::start(config).await?;
    println!("Simulator on {}", server.base_url());
    server.shutdown().await;
    Ok(super::EXIT_OK)
}
