//! `asana-worker health`: asks a running daemon's admin server whether it is alive (`/healthz`)
//! or ready (`/readyz` with `--ready`), for container `HEALTHCHECK`s and scripts on images that
//! have no shell or curl (the distroless image of deploy/Dockerfile).

use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::common::ConfigArgs;

/// Arguments of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Ask `/readyz` (ready to run jobs) instead of `/healthz` (the process answers).
    #[arg(long)]
    ready: bool,
}

/// Exit 0 when the daemon answers 200, 1 otherwise, printing what it said.
pub async fn run(args: HealthArgs) -> anyhow::Result<u8> {
    let settings = args.config.load()?;
    let mut addr = settings.admin.listen;
    // A daemon listening on every address is reached on loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let path = if args.ready { "readyz" } else { "healthz" };
    let url = format!("http://{addr}/{path}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("building the HTTP client")?;
    match client.get(&url).send().await {
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            println!("{url}: {} {}", status.as_u16(), body.trim());
            Ok(if status.is_success() {
                super::EXIT_OK
            } else {
                super::EXIT_FAILURE
            })
        }
        Err(error) => {
            eprintln!(
                "{url}: no answer ({error}); is the daemon running with admin.enabled and this admin.listen?"
            );
            Ok(super::EXIT_FAILURE)
        }
    }
}
