//! `asana-worker bench export-download`: downloads a large export from the simulator the way an
//! export job does (the same [`Downloader`]: streaming into a partial file through a bounded
//! channel, sha256, fsyncs, then the gzip integrity pass) and compares it with `curl` fetching
//! the same file on loopback.
//!
//! The worker's download runs in a child process (this binary, `--child-url`), so its peak
//! resident memory (`VmHWM` from `/proc/self/status`, read by the child just before it exits)
//! is the download's alone and not the simulator's, which builds and serves the file in this
//! process. `curl` runs as a subprocess on a fresh URL for the same file; both write into the
//! same temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::jobs::export::download::{self, DownloadPolicy, Downloader, ProgressSink};
use crate::sim::{SimConfig, SimServer};

/// Peak RSS the worker's download may reach.
const RSS_TARGET_MIB: f64 = 64.0;
/// Share of curl's speed the worker must reach.
const SPEED_TARGET: f64 = 0.70;

/// Arguments of `bench export-download`.
#[derive(Debug, Args)]
pub struct ExportBenchArgs {
    /// Size of the export file, MiB (compressed, as served).
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// Downloads of each (worker and curl), alternating; the best of each is compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Directory for the downloaded files (default: a temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub strict: bool,
    /// Internal: download this URL in this process and print figures as JSON.
    #[arg(long, hide = true)]
    pub child_url: Option<String>,
    /// Internal: the simulator's base URL (its host may be fetched over http).
    #[arg(long, hide = true)]
    pub child_base_url: Option<String>,
    /// Internal: where the child writes.
    #[arg(long, hide = true)]
    pub child_out: Option<PathBuf>,
}

/// Runs the benchmark (or, with `--child-url`, one download).
pub async fn run(args: ExportBenchArgs) -> anyhow::Result<u8> {
    if let Some(url) = &args.child_url {
        return child(
            url,
            args.child_base_url.as_deref().unwrap_or_default(),
            args.child_out
                .as_deref()
                .context("--child-out is required")?,
        )
        .await;
    }
    let temp = tempfile::Builder::new()
        .prefix("asana-bench-export-")
        .tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let mut config = SimConfig::default();
    config.world.tasks_per_project = 12;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.activity_per_minute = 0.0;
    config.timing.export_pending_secs = 0;
    config.timing.export_running_secs = 0;
    config.timing.download_url_ttl_secs = 3600;
    let sim = SimServer::start(config).await?;
    let http = reqwest::Client::new();
    let bytes = args.size_mib * (1 << 20);
    http.post(format!("{}/_sim/exports/size", sim.origin()))
        .json(&json!({ "bytes": bytes }))
        .send()
        .await?
        .error_for_status()?;
    let token = sim.token("service-account").context("no service account")?;
    let workspace = sim.state().world().workspace.gid.clone();
    println!(
        "Export download: a {} MiB organization export from the simulator on loopback, {} round(s)",
        args.size_mib, args.rounds
    );
    let built = Instant::now();
    let created: Value = http
        .post(format!("{}/organization_exports", sim.base_url()))
        .bearer_auth(&token)
        .json(&json!({ "data": { "organization": workspace } }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let gid = created["data"]["gid"]
        .as_str()
        .context("no export gid")?
        .to_string();
    let fresh_url = || async {
        loop {
            let export: Value = http
                .get(format!("{}/organization_exports/{gid}", sim.base_url()))
                .bearer_auth(&token)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            if let Some(url) = export["data"]["download_url"].as_str() {
                return anyhow::Ok(url.to_string());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    fresh_url().await?;
    let admin: Value = http
        .get(format!("{}/_sim/exports/{gid}", sim.origin()))
        .send()
        .await?
        .json()
        .await?;
    let expected_sha = admin["sha256"].as_str().unwrap_or_default().to_string();
    let size = admin["bytes"].as_u64().unwrap_or_default();
    println!(
        "  file             {:>10.1} MiB, built by the simulator in {:.1} s",
        size as f64 / (1 << 20) as f64,
        built.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe()?;
    let mut best_worker: Option<(f64, Value)> = None;
    let mut best_curl: Option<f64> = None;
    let mut worker_times = Vec::new();
    let mut curl_times = Vec::new();
    let mut curl_available = true;
    for round in 1..=args.rounds.max(1) {
        let out = temp.path().join("worker.json.gz");
        let _ = std::fs::remove_file(&out);
        let url = fresh_url().await?;
        let output = Command::new(&exe)
            .args(["bench", "export-download", "--child-url"])
            .arg(&url)
            .arg("--child-base-url")
            .arg(sim.base_url())
            .arg("--child-out")
            .arg(&out)
            .output()
            .context("running the download child")?;
        if !output.status.success() {
            bail!(
                "the download child failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let figures: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| String::from_utf8_lossy(&output.stdout).to_string())?;
        if figures["sha256"].as_str() != Some(expected_sha.as_str()) {
            bail!(
                "the worker's download hashes to {} instead of {expected_sha}",
                figures["sha256"]
            );
        }
        let secs = figures["download_secs"].as_f64().unwrap_or(f64::MAX);
        println!(
            "  round {round}: worker download {:>6.2} s ({:>7.1} MiB/s), check (gzip and sha256) {:>5.2} s, peak RSS {:>5.1} MiB",
            secs,
            size as f64 / (1 << 20) as f64 / secs,
            figures["verify_secs"].as_f64().unwrap_or_default(),
            figures["vm_hwm_kib"].as_f64().unwrap_or_default() / 1024.0
        );
        println!(
            "           writer thread: write {:.2} s, final fsync {:.2} s, waiting for the network {:.2} s; sha256 during the check {:.2} s",
            figures["write_secs"].as_f64().unwrap_or_default(),
            figures["fsync_secs"].as_f64().unwrap_or_default(),
            figures["writer_idle_secs"].as_f64().unwrap_or_default(),
            figures["hash_secs"].as_f64().unwrap_or_default(),
        );
        worker_times.push(secs);
        if best_worker.as_ref().is_none_or(|(best, _)| secs < *best) {
            best_worker = Some((secs, figures));
        }
        let _ = std::fs::remove_file(&out);
        if curl_available {
            let curl_out = temp.path().join("curl.json.gz");
            let url = fresh_url().await?;
            let started = Instant::now();
            match Command::new("curl")
                .args(["--silent", "--show-error", "--fail", "--output"])
                .arg(&curl_out)
                .arg(&url)
                .status()
            {
                Ok(status) if status.success() => {
                    let secs = started.elapsed().as_secs_f64();
                    println!(
                        "  round {round}: curl            {:>6.2} s ({:>7.1} MiB/s)",
                        secs,
                        size as f64 / (1 << 20) as f64 / secs
                    );
                    curl_times.push(secs);
                    if best_curl.is_none_or(|best| secs < best) {
                        best_curl = Some(secs);
                    }
                }
                Ok(status) => bail!("curl failed with {status}"),
                Err(error) => {
                    println!("  curl is not available ({error}); no comparison");
                    curl_available = false;
                }
            }
            let _ = std::fs::remove_file(&curl_out);
        }
    }
    sim.shutdown().await;
    let Some((worker_secs, figures)) = best_worker else {
        bail!("no download ran");
    };
    let rss_mib = figures["vm_hwm_kib"].as_f64().unwrap_or_default() / 1024.0;
    let mut met = rss_mib < RSS_TARGET_MIB;
    println!(
        "  peak RSS of the downloading process {:.1} MiB; target < {RSS_TARGET_MIB} MiB: {}",
        rss_mib,
        if rss_mib < RSS_TARGET_MIB {
            "met"
        } else {
            "NOT met"
        }
    );
    if let Some(curl_secs) = best_curl {
        let ratio = curl_secs / worker_secs;
        met &= ratio >= SPEED_TARGET;
        println!(
            "  best worker download {:.2} s vs best curl {:.2} s: {:.0}% of curl's speed; target >= {:.0}%: {}",
            worker_secs,
            curl_secs,
            ratio * 100.0,
            SPEED_TARGET * 100.0,
            if ratio >= SPEED_TARGET {
                "met"
            } else {
                "NOT met"
            }
        );
        if let (Some(worker_median), Some(curl_median)) =
            (median(&worker_times), median(&curl_times))
        {
            println!(
                "  median worker download {:.2} s vs median curl {:.2} s: {:.0}% of curl's speed",
                worker_median,
                curl_median,
                curl_median / worker_median * 100.0
            );
        }
        let with_check = worker_secs + figures["verify_secs"].as_f64().unwrap_or_default();
        println!(
            "  including the check (gzip decode and sha256 in parallel): {:.2} s ({:.0}% of curl's speed)",
            with_check,
            curl_secs / with_check * 100.0
        );
    }
    Ok(if args.strict && !met {
        super::EXIT_FAILURE
    } else {
        super::EXIT_OK
    })
}

/// The median of `times` (the mean of the middle two for an even count).
fn median(times: &[f64]) -> Option<f64> {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

struct NoProgress;

#[async_trait::async_trait]
impl ProgressSink for NoProgress {
    async fn synced(&self, _offset: u64, _total: Option<u64>) -> Result<(), String> {
        Ok(())
    }
}

/// One download in this process; prints JSON figures including this process's peak RSS.
async fn child(url: &str, base_url: &str, out: &Path) -> anyhow::Result<u8> {
    let downloader = Downloader::new(DownloadPolicy::for_base_url(base_url))?;
    let started = Instant::now();
    let fetched = downloader
        .fetch(url, out, 0, &NoProgress, &CancellationToken::new())
        .await?;
    let download_secs = started.elapsed().as_secs_f64();
    let check_started = Instant::now();
    let checked = download::check(out).await?;
    let verify_secs = check_started.elapsed().as_secs_f64();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let vm_hwm_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    println!(
        "{}",
        json!({
            "bytes": fetched.bytes,
            "sha256": checked.sha256,
            "download_secs": download_secs,
            "verify_secs": verify_secs,
            "vm_hwm_kib": vm_hwm_kib,
            "write_secs": fetched.timings.write.as_secs_f64(),
            "hash_secs": checked.hash_time.as_secs_f64(),
            "fsync_secs": fetched.timings.fsync.as_secs_f64(),
            "writer_idle_secs": fetched.timings.idle.as_secs_f64(),
        })
    );
    Ok(super::EXIT_OK)
}
