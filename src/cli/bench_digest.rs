//! `asana-worker bench digest`: the same digest of `--projects` projects read three ways
//! through the real daemon: task lists with `completed_since` (one list per project), task
//! search (only the tasks the sections can hold, 100 a request), and a sync job's tables (no
//! request). The simulator runs in this process with `--latency-ms` of simulated latency and
//! `--time-scale`; the sync's own full pass is run first to fill the mirror and is reported
//! apart. Figures: requests and simulated time of each digest, and their ratios.

use anyhow::Context;
use clap::Args;

use super::bench_sync::{Measured, measure};
use crate::sim::SimServer;

/// Arguments of `bench digest`.
#[derive(Debug, Args)]
pub struct DigestBenchArgs {
    /// Projects in the digest.
    #[arg(long, default_value_t = 50)]
    pub projects: usize,
    /// Top-level tasks per project (subtasks come on top).
    #[arg(long, default_value_t = 200)]
    pub tasks_per_project: usize,
    /// Simulated latency of every request, in simulated milliseconds.
    #[arg(long, default_value_t = 50)]
    pub latency_ms: u64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 5.0)]
    pub time_scale: f64,
}

/// The sections of the digests: task lists and the mirror can serve any; these are the ones
/// search can serve too, so the three read the same digest.
const SECTIONS: &str = "[\"overdue\", \"due_soon\", \"milestones\", \"approvals\", \"completed\"]";

/// Runs the benchmark.
pub async fn run(args: DigestBenchArgs) -> anyhow::Result<u8> {
    // Every seventh generated project is archived: generate enough unarchived ones.
    let config = super::common::generated_world(
        args.projects + args.projects / 6 + 1,
        args.tasks_per_project,
        args.latency_ms,
        args.time_scale,
    );
    println!(
        "Generating {} projects x {} tasks…",
        config.world.projects, args.tasks_per_project
    );
    let sim = SimServer::start(config)
        .await
        .context("starting the simulator")?;
    let (workspace, projects, tasks) = {
        let world = sim.state().world();
        let projects: Vec<String> = world
            .projects
            .iter()
            .filter(|p| !p.archived)
            .take(args.projects)
            .map(|p| p.gid.clone())
            .collect();
        (world.workspace.gid.clone(), projects, world.tasks.len())
    };
    println!(
        "World: {tasks} tasks and subtasks; the digest covers {} projects; latency {} ms (simulated), time scale {}",
        projects.len(),
        args.latency_ms,
        args.time_scale
    );
    let dir = tempfile::Builder::new()
        .prefix("asana-worker-bench-digest-")
        .tempdir()?;
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir)?;
    let digests = dir.path().join("digests");
    std::fs::create_dir(&digests)?;
    let mirror = dir.path().join("mirror.sqlite");
    std::fs::write(
        jobs_dir.join("sync.toml"),
        format!(
            "name = \"sync\"\nkind = \"sync\"\nevery = \"365d\"\ncredential = \"sa\"\ntimeout = \"6h\"\n\n[settings]\nworkspace = \"{workspace}\"\nresources = [\"users\", \"teams\", \"projects\", \"sections\", \"tasks\"]\n\n[settings.sink]\ntype = \"sqlite\"\npath = \"{}\"\n",
            mirror.display()
        ),
    )?;
    let project_list = projects
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    for (name, extra) in [
        ("digest-lists", "search = false\n"),
        ("digest-search", ""),
        ("digest-mirror", "source = { sync_job = \"sync\" }\n"),
    ] {
        std::fs::write(
            jobs_dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\nkind = \"digest\"\nschedule = \"0 8 * * MON\"\ntimezone = \"Europe/Berlin\"\ncredential = \"sa\"\ntimeout = \"2h\"\n\n[settings]\nworkspace = \"{workspace}\"\nprojects = [{project_list}]\nsections = {SECTIONS}\nsend_empty = true\n{extra}\n[[settings.deliver]]\ntype = \"file\"\ndir = \"{}\"\nformat = \"markdown\"\n",
                digests.display()
            ),
        )?;
    }
    let (config_path, port) = super::common::write_bench_config(dir.path(), &sim, args.time_scale)?;
    let daemon =
        super::common::BenchDaemon::start(&config_path, &dir.path().join("daemon.log"), port)
            .await?;
    let pid = daemon.pid();

    let sync = measure(&sim, &config_path, "sync", pid, args.time_scale).await?;
    println!(
        "Sync full pass (fills the mirror): {} requests in {:.0} s simulated",
        sync.requests, sync.sim_secs
    );
    let lists = measure(&sim, &config_path, "digest-lists", pid, args.time_scale).await?;
    report("Digest from the API, task lists", &lists);
    let search = measure(&sim, &config_path, "digest-search", pid, args.time_scale).await?;
    report("Digest from the API, task search", &search);
    let mirrored = measure(&sim, &config_path, "digest-mirror", pid, args.time_scale).await?;
    report("Digest from the sync mirror", &mirrored);
    println!(
        "Search takes {:.1}x fewer requests than task lists and is {:.1}x faster; the mirror makes {} requests and is {:.1}x faster than task lists",
        lists.requests as f64 / search.requests.max(1) as f64,
        lists.sim_secs / search.sim_secs.max(f64::EPSILON),
        mirrored.requests,
        lists.sim_secs / mirrored.sim_secs.max(f64::EPSILON),
    );
    let same = [&search, &mirrored]
        .iter()
        .all(|m| m.progress["tasks"] == lists.progress["tasks"]);
    println!(
        "The three digests list {} tasks each: {}",
        lists.progress["tasks"],
        if same {
            "identical counts"
        } else {
            "DIFFERENT counts"
        }
    );
    drop(daemon);
    Ok(if same {
        super::EXIT_OK
    } else {
        super::EXIT_FAILURE
    })
}

fn report(what: &str, run: &Measured) {
    println!(
        "{what}: {} requests in {:.1} s simulated, {} 429s, worker CPU {:.2} s; figures {}",
        run.requests,
        run.sim_secs,
        run.rejected,
        run.cpu.as_secs_f64(),
        run.progress
    );
}
