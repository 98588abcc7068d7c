//! `asana-worker bench status`: what the status page costs the daemon while browsers poll it.
//!
//! A daemon process (this binary's `run`) runs the example jobs against the in-process
//! simulator, with `--history` runs of history in its SQLite database. Its CPU time is read from
//! `/proc/PID/stat` over three phases of `--seconds` each: idle (nobody looks), `--clients`
//! browsers each re-fetching `/status` every `--interval` seconds as the page's script does, and the
//! same clients fetching back to back (the most the page can serve, and its CPU cost per
//! request), for `/status` and for `/status/runs`. The simulator and the clients run in this process, so
//! their CPU is not counted.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::clock::{Clock, SystemClock};
use crate::sim::{SimConfig, SimServer};
use crate::store::{NewRun, RunState, Trigger};

/// Arguments of `bench status`.
#[derive(Debug, Args)]
pub struct StatusBenchArgs {
    /// Browsers polling the page.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Seconds between one browser's fetches (the page's own refresh is 5).
    #[arg(long, default_value_t = 5.0)]
    pub interval: f64,
    /// Length of each phase, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Runs of history written to the database before the daemon starts.
    #[arg(long, default_value_t = 20_000)]
    pub history: usize,
}

struct Phase {
    name: String,
    requests: usize,
    failures: usize,
    cpu: Duration,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Phase {
    fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() - 1) as f64 * p).round() as usize;
        Some(sorted[index])
    }
}

/// `clients` clients fetching `url` for `length`, each waiting `pause` between fetches (zero:
/// back to back), staggered over the pause.
async fn poll(
    url: &str,
    clients: usize,
    pause: Duration,
    length: Duration,
) -> (usize, Vec<Duration>) {
    let deadline = Instant::now() + length;
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let url = url.to_string();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut failures = 0;
                if !pause.is_zero() {
                    tokio::time::sleep(pause.mul_f64(i as f64 / clients as f64)).await;
                }
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match http.get(&url).send().await {
                        Ok(response) if response.status().is_success() => {
                            let _ = response.bytes().await;
                            latencies.push(started.elapsed());
                        }
                        _ => failures += 1,
                    }
                    if !pause.is_zero() {
                        tokio::time::sleep(pause.saturating_sub(started.elapsed())).await;
                    }
                }
                (failures, latencies)
            })
        })
        .collect();
    let mut failures = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        if let Ok((f, l)) = task.await {
            failures += f;
            latencies.extend(l);
        }
    }
    (failures, latencies)
}

async fn measure(
    name: &str,
    pid: u32,
    url: &str,
    clients: usize,
    pause: Duration,
    length: Duration,
) -> Phase {
    let cpu_before = super::common::process_cpu(pid);
    let started = Instant::now();
    let (failures, latencies) = if clients == 0 {
        tokio::time::sleep(length).await;
        (0, Vec::new())
    } else {
        poll(url, clients, pause, length).await
    };
    Phase {
        name: name.to_string(),
        requests: latencies.len(),
        failures,
        cpu: super::common::process_cpu(pid).saturating_sub(cpu_before),
        wall: started.elapsed(),
        latencies,
    }
}

/// Writes `count` skipped runs of the example jobs, as history for the page to read.
async fn write_history(url: &str, count: usize) -> anyhow::Result<()> {
    use futures::StreamExt;
    let store = crate::store::open(url).await?;
    let jobs = [
        ("audit-log", "audit_log"),
        ("check-service-account", "credential_check"),
        ("check-pat-paid", "credential_check"),
        ("check-pat-free", "credential_check"),
        ("org-export", "org_export"),
    ];
    // The history ends now, by the same clock the daemon's status page reads.
    let now = SystemClock.now();
    let results: Vec<_> = futures::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            let (job, kind) = jobs[i % jobs.len()];
            async move {
                let at = now - chrono::Duration::minutes((count - i) as i64);
                store
                    .enqueue(
                        NewRun {
                            job_name: job.into(),
                            kind: kind.into(),
                            trigger: Trigger::Schedule,
                            fire_time: Some(at),
                            unique_key: format!("history-{i}"),
                            priority: 50,
                            run_after: at,
                            max_attempts: 1,
                            retry_initial: Duration::from_secs(10),
                            retry_max: Duration::from_secs(60),
                            state: RunState::Skipped,
                            note: Some("history written by bench status".into()),
                        },
                        at,
                    )
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for result in results {
        result?;
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: StatusBenchArgs) -> anyhow::Result<u8> {
    let mut sim_config = SimConfig::default();
    sim_config.timing.activity_per_minute = 0.0;
    sim_config.timing.export_pending_secs = 1;
    sim_config.timing.export_running_secs = 2;
    let sim = SimServer::start(sim_config)
        .await
        .context("starting the simulator")?;
    let dir = tempfile::Builder::new()
        .prefix("asana-worker-bench-status-")
        .tempdir()?;
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir)?;
    super::demo::write_example_jobs(
        &sim,
        &jobs_dir,
        &dir.path().join("audit-log"),
        &dir.path().join("exports"),
    )?;
    let mut credentials = String::new();
    for (name, kind, tier) in [
        ("service-account", "service_account", "paid"),
        ("pat-paid", "pat", "paid"),
        ("pat-free", "pat", "free"),
    ] {
        let path = dir.path().join(format!("{name}.token"));
        super::common::write_private(&path, &sim.token(name).context("a simulator token")?)?;
        credentials.push_str(&format!(
            "[credentials.{name}]\nkind = \"{kind}\"\ntier = \"{tier}\"\ntoken_file = \"{}\"\n",
            path.display()
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let database = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    let admin_token = crate::status::auth::random_token();
    let token_file = dir.path().join("admin.token");
    super::common::write_private(&token_file, &admin_token)?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{database}\"\n[jobs]\ndir = \"{jobs}\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{token}\"\n[asana]\nbase_url = \"{base}\"\n{credentials}",
            jobs = jobs_dir.display(),
            token = token_file.display(),
            base = sim.base_url(),
        ),
    )?;
    println!("Writing {} runs of history…", args.history);
    write_history(&database, args.history).await?;
    let daemon =
        super::common::BenchDaemon::start(&config, &dir.path().join("daemon.log"), port).await?;
    let pid = daemon.pid();
    let base = format!("http://127.0.0.1:{port}");
    // Every job runs once, so the page shows outcomes, progress and token figures.
    let http = reqwest::Client::new();
    for job in [
        "audit-log",
        "check-service-account",
        "check-pat-paid",
        "check-pat-free",
        "org-export",
    ] {
        http.post(format!("{base}/status/jobs/{job}/run"))
            .bearer_auth(&admin_token)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("running {job} from the status page"))?;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let page = http
        .get(format!("{base}/status"))
        .send()
        .await?
        .bytes()
        .await?;
    println!(
        "Daemon pid {pid}, {} runs of history; the front page is {} KiB",
        args.history,
        page.len() / 1024
    );
    let length = Duration::from_secs(args.seconds.max(1));
    let pause = Duration::from_secs_f64(args.interval.max(0.1));
    let index = format!("{base}/status");
    let runs = format!("{base}/status/runs");
    let mut phases = Vec::new();
    println!("Measuring ({} s per phase)…", length.as_secs());
    phases.push(measure("idle: nobody looks", pid, &index, 0, pause, length).await);
    phases.push(
        measure(
            &format!(
                "{} browsers re-fetch /status every {} s",
                args.clients, args.interval
            ),
            pid,
            &index,
            args.clients,
            pause,
            length,
        )
        .await,
    );
    let saturation = Duration::from_secs((args.seconds / 3).max(5));
    phases.push(
        measure(
            &format!("{} clients fetch /status back to back", args.clients),
            pid,
            &index,
            args.clients,
            Duration::ZERO,
            saturation,
        )
        .await,
    );
    phases.push(
        measure(
            &format!("{} clients fetch /status/runs back to back", args.clients),
            pid,
            &runs,
            args.clients,
            Duration::ZERO,
            saturation,
        )
        .await,
    );
    let rss = super::common::process_status_kib(pid, "VmRSS:");
    drop(daemon);
    sim.shutdown().await;

    println!();
    println!(
        "| phase | requests | failed | requests/s | daemon CPU | % of one core | CPU per request | p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ms = |d: Option<Duration>| {
        d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "–".into())
    };
    for phase in &phases {
        let secs = phase.wall.as_secs_f64();
        println!(
            "| {} | {} | {} | {:.1} | {:.2} s | {:.1} % | {} | {} | {} |",
            phase.name,
            phase.requests,
            phase.failures,
            phase.requests as f64 / secs,
            phase.cpu.as_secs_f64(),
            phase.cpu.as_secs_f64() / secs * 100.0,
            if phase.requests > 0 {
                format!(
                    "{:.2} ms",
                    phase.cpu.as_secs_f64() * 1000.0 / phase.requests as f64
                )
            } else {
                "–".into()
            },
            ms(phase.percentile(0.5)),
            ms(phase.percentile(0.99)),
        );
    }
    let idle = phases[0].cpu.as_secs_f64() / phases[0].wall.as_secs_f64();
    let polled = phases[1].cpu.as_secs_f64() / phases[1].wall.as_secs_f64();
    println!();
    println!(
        "The page adds {:.2} % of one core while {} browsers poll it (idle {:.2} %, polled {:.2} %); daemon RSS {} MiB.",
        (polled - idle) * 100.0,
        args.clients,
        idle * 100.0,
        polled * 100.0,
        rss / 1024
    );
    Ok(if phases.iter().any(|p| p.failures > 0) {
        super::EXIT_FAILURE
    } else {
        super::EXIT_OK
    })
}
