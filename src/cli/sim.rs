//! `asana-worker sim`: runs the simulator until interrupted.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::sim::{SimConfig, SimServer};

/// Arguments of `sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on; loopback by default (the simulator has no real security).
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub listen: String,
    /// Simulator config (TOML): tokens, world size, timing, limits, faults.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed of the generated world (overrides the config).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run simulated time this many times faster than real time (overrides the config).
    #[arg(long)]
    pub time_scale: Option<f64>,
    /// Number of users (overrides the config).
    #[arg(long)]
    pub users: Option<usize>,
    /// Number of teams (overrides the config).
    #[arg(long)]
    pub teams: Option<usize>,
    /// Projects in the workspace, dealt out to the teams (overrides the config).
    #[arg(long)]
    pub projects: Option<usize>,
    /// Tasks per project (overrides the config); with --projects, sizes a benchmark world
    /// (e.g. --projects 500 --tasks-per-project 100 for 50,000 top-level tasks).
    #[arg(long)]
    pub tasks_per_project: Option<usize>,
    /// Pre-generated audit-log events (overrides the config).
    #[arg(long)]
    pub audit_events: Option<usize>,
    /// Fixed latency added to every API request, in simulated milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
}

impl SimArgs {
    /// The configuration these arguments describe.
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let mut config = match &self.config {
            Some(path) => SimConfig::load(path)?,
            None => SimConfig::default(),
        };
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(scale) = self.time_scale {
            config.time_scale = scale;
        }
        if let Some(users) = self.users {
            config.world.users = users;
        }
        if let Some(teams) = self.teams {
            config.world.teams = teams;
        }
        if let Some(projects) = self.projects {
            config.world.projects = projects;
        }
        if let Some(tasks) = self.tasks_per_project {
            config.world.tasks_per_project = tasks;
        }
        if let Some(events) = self.audit_events {
            config.world.audit_events = events;
        }
        if let Some(latency) = self.latency_ms {
            config.faults.latency_ms = latency;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM.
pub async fn run(args: SimArgs) -> anyhow::Result<u8> {
    let config = args.config()?;
    let server = SimServer::start_on(config, &args.listen)
        .await
        .context("starting the simulator")?;
    println!("Asana simulator listening on {}", server.origin());
    println!("  API base URL: {}", server.base_url());
    println!("  admin API:    {}/_sim/stats", server.origin());
    {
        let world = server.state().world();
        println!("  workspace:    {}", world.workspace.gid);
        println!(
            "  world:        {} users, {} teams, {} projects, {} tasks and subtasks, {} stories, \
             {} attachments, {} portfolios, {} goals",
            world.users.len(),
            world.teams.len(),
            world.projects.len(),
            world.tasks.len(),
            world.stories.len(),
            world.attachments.len(),
            world.portfolios.len(),
            world.goals.len()
        );
    }
    let tokens = server
        .state()
        .tokens
        .read()
        .map(|t| t.clone())
        .unwrap_or_default();
    let mut tokens: Vec<_> = tokens.into_iter().collect();
    tokens.sort_by(|a, b| a.1.name.cmp(&b.1.name));
    for (token, record) in tokens {
        println!(
            "  token {:<16} {:?}/{:?} enterprise={} user={}: {}",
            record.name, record.kind, record.tier, record.enterprise, record.user_gid, token
        );
    }
    for client in server.state().config.effective_oauth_clients() {
        println!(
            "  oauth client {} (secret {}) authorizes as user index {}",
            client.client_id, client.client_secret, client.user
        );
    }
    wait_for_shutdown_signal().await;
    server.shutdown().await;
    Ok(super::EXIT_OK)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
