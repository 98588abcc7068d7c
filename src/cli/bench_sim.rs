//! `asana-worker bench sim`: how many simple GETs per second the simulator serves on one core.

use std::time::Duration;

use clap::Args;

use crate::sim::bench::{ThroughputOptions, throughput};

/// Arguments of `bench sim`.
#[derive(Debug, Args)]
pub struct BenchSimArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
}

/// Runs the simulator throughput benchmark and prints its figures.
pub fn run(args: BenchSimArgs) -> anyhow::Result<u8> {
    let options = ThroughputOptions {
        duration: Duration::from_secs(args.seconds.max(1)),
        connections: args.connections.max(1),
        ..ThroughputOptions::default()
    };
    println!(
        "Simulator throughput: GET {} for {}s over {} keep-alive connections; simulator on one core",
        options.path, args.seconds, options.connections
    );
    let report = throughput(&options)?;
    println!("  requests ok      {:>10}", report.ok);
    println!("  requests failed  {:>10}", report.failed);
    println!("  requests/s       {:>10.0}", report.per_second());
    println!(
        "  simulator CPU    {:>9.0}% of one core",
        report.sim_core_share() * 100.0
    );
    println!(
        "  requests/s per simulator core-second {:>8.0}",
        report.ok as f64 / report.sim_cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "  latency p50      {:>8.2} ms",
        report.p50.as_secs_f64() * 1e3
    );
    println!(
        "  latency p99      {:>8.2} ms",
        report.p99.as_secs_f64() * 1e3
    );
    let target = 5000.0;
    println!(
        "  target 5,000/s on one core: {} (ratio {:.2})",
        if report.per_second() >= target {
            "met"
        } else {
            "NOT met"
        },
        report.per_second() / target
    );
    Ok(super::EXIT_OK)
}
