//! Three daemon processes on one PostgreSQL database share one token as one budget: each
//! credential's jobs run in the replica holding its lease, so the token's quota is spent to the
//! limit and never past it, whatever the number of replicas; SIGKILL of that replica moves the
//! credential (and its budget) to another one within the lease, without a 429 and without a fire
//! lost or doubled. See ARCHITECTURE.md, "Replicas share a token's budget".
//!
//! The simulator runs 10x fast (a quota window is 6 s) with the token limited to 20 requests per
//! minute, so six windows take 36 s. Utilization is measured over six windows because requests
//! come in bursts within a window (a window's requests age out of it together).

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{RunFilter, RunState, Store};
use serde_json::Value;

mod support;
use support::daemon::{Daemon, DaemonOptions, kill, terminate};
use support::sim::SimAdmin;

const TIME_SCALE: f64 = 10.0;
const LIMIT_PER_MINUTE: u64 = 20;
const JOBS: usize = 6;
/// The daemons' credential: the simulator's limit, declared.
const QUOTA_CREDENTIAL: &str = "tier = \"paid\"\nrequests_per_minute = 20";

struct Replicas {
    sim: SimServer,
    daemons: Vec<Daemon>,
    children: Vec<Option<Child>>,
    _shared: tempfile::TempDir,
    _db: support::pg::TestDatabase,
}

/// Six audit-log jobs, each backfilling two days of events one event per request on two slices
/// (far more than the token's quota allows in the test's minutes, so the token is the limit
/// however slow a loaded machine makes the daemons), firing every 5 s with `overlap = "skip"` so
/// that every fire leaves a run; writing to one shared directory (as a shared volume would).
fn busy_audit_jobs(workspace: &str, out: &std::path::Path) -> Vec<(String, String)> {
    (0..JOBS)
        .map(|i| {
            (
                format!("audit-{i}"),
                format!(
                    r#"name = "audit-{i}"
kind = "audit_log"
every = "5s"
credential = "sa"
overlap = "skip"
max_attempts = 1000
retry_initial = "1s"
retry_max = "2s"
timeout = "30m"

[settings]
workspace = "{workspace}"
start = "3d"
page_size = 1
backfill_slices = 2

[settings.sink]
type = "file"
dir = "{out}"
"#,
                    out = out.display(),
                ),
            )
        })
        .collect()
}

/// The simulator 10x fast with the token limited to 20 requests per minute.
fn quota_bound_sim() -> SimConfig {
    let mut config = SimConfig {
        time_scale: TIME_SCALE,
        ..SimConfig::default()
    };
    config.timing.activity_per_minute = 0.0;
    config.limits.paid_per_minute = LIMIT_PER_MINUTE as u32;
    config.world.audit_events = 2000;
    config.world.audit_backfill_days = 2;
    config
}

impl Replicas {
    /// The simulator with `config`, `count` daemon directories on one database with the same
    /// job files (from `jobs`, given the workspace and a shared output directory), started.
    async fn start(
        db: support::pg::TestDatabase,
        config: SimConfig,
        count: usize,
        credential: &'static str,
        jobs: impl Fn(&str, &std::path::Path) -> Vec<(String, String)>,
    ) -> Replicas {
        let time_scale = config.time_scale;
        let sim = SimServer::start(config).await.unwrap();
        let shared = tempfile::tempdir().unwrap();
        let workspace = sim.state().world().workspace.gid.clone();
        let mut daemons = Vec::new();
        for _ in 0..count {
            let daemon = Daemon::new(
                &sim,
                DaemonOptions {
                    database_url: Some(db.url.clone()),
                    lease_secs: 3,
                    // Long enough that a renewal delayed by a loaded machine does not hand
                    // the credential over in the middle of a measurement.
                    worker: "credential_lease_secs = 5",
                    asana: format!("time_scale = {time_scale:?}\nrequest_timeout_secs = 30"),
                    credential,
                    log_level: "info",
                    ..DaemonOptions::default()
                },
            );
            for (name, job) in jobs(&workspace, shared.path()) {
                std::fs::write(daemon.jobs_dir().join(format!("{name}.toml")), job).unwrap();
            }
            daemons.push(daemon);
        }
        let mut children = Vec::new();
        for (n, daemon) in daemons.iter().enumerate() {
            let name = format!("replica-{n}");
            let mut child = daemon.start(&name);
            daemon.wait_ready(&mut child).await;
            children.push(Some(child));
        }
        Replicas {
            sim,
            daemons,
            children,
            _shared: shared,
            _db: db,
        }
    }

    /// Every run of `job`, newest first, after checking none of them failed or died (the logs
    /// of every replica in the message when one did).
    async fn runs_none_failed(
        &self,
        store: &dyn Store,
        job: &str,
    ) -> Vec<asana_worker::store::Run> {
        let runs = store
            .list_runs(&RunFilter {
                job_name: Some(job.to_string()),
                limit: 0,
                ..RunFilter::default()
            })
            .await
            .unwrap();
        for run in &runs {
            assert!(
                !matches!(run.state, RunState::Failed | RunState::Dead),
                "{job}: {run:?}\n{}",
                self.logs()
            );
        }
        runs
    }

    fn admin(&self) -> SimAdmin {
        SimAdmin::of(&self.sim)
    }

    async fn store(&self) -> std::sync::Arc<dyn Store> {
        self.daemons[0].store().await
    }

    /// The replica (index) holding the credential's lease, by the pid in its owner id.
    async fn holder(&self) -> Option<usize> {
        let lease = self
            .store()
            .await
            .get_lease("credential:sa")
            .await
            .unwrap()?;
        let pid: u32 = lease.owner.split(':').nth(1)?.parse().ok()?;
        let now = chrono::Utc::now();
        if lease.expires_at <= now {
            return None;
        }
        self.children
            .iter()
            .position(|child| child.as_ref().is_some_and(|c| c.id() == pid))
    }

    /// Waits until a live replica holds the credential, returns it.
    async fn wait_for_holder(&self, other_than: Option<usize>) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(holder) = self.holder().await
                && Some(holder) != other_than
            {
                return holder;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took the credential's lease"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Requests accepted and refused over `sim_secs` of the simulator's time, from the first
    /// request after now.
    ///
    /// A saturated token's requests come in bursts a window apart: the sliding window frees a
    /// whole window's requests at once, and each burst starts a little after the previous one
    /// aged out (the daemon's own reaction time). A span starting at an arbitrary instant can
    /// therefore hold one burst fewer than its windows (the last one drifts past its end: 100 of
    /// 120 over six windows), so the span starts at a burst and holds every burst it allows.
    async fn measure(&self, sim_secs: i64) -> (u64, BTreeMap<String, u64>, f64) {
        let admin = self.admin();
        let accepted = || async {
            admin.token_stats("service-account").await["accepted"]
                .as_u64()
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs_f64(3.0 * 60.0 / TIME_SCALE);
        // Counting starts in the quiet between two bursts (a reset in the middle of one would
        // count part of it), and the span at the next burst's first request.
        loop {
            admin.reset_stats().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if accepted().await == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "no quiet between bursts");
        }
        while accepted().await == 0 {
            assert!(
                Instant::now() < deadline,
                "no request in three quota windows:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let start = admin.now().await;
        tokio::time::sleep(Duration::from_secs_f64(sim_secs as f64 / TIME_SCALE)).await;
        let stats = admin.token_stats("service-account").await;
        let elapsed = (admin.now().await - start).num_milliseconds() as f64 / 1000.0;
        let rejected: BTreeMap<String, u64> = stats["rejected"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(cause, n)| (cause.clone(), n.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        (stats["accepted"].as_u64().unwrap_or(0), rejected, elapsed)
    }

    fn logs(&self) -> String {
        (0..self.daemons.len())
            .map(|n| self.daemons[n].log(&format!("replica-{n}")))
            .collect::<Vec<_>>()
            .join("\n----\n")
    }

    fn stop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            terminate(child);
        }
    }
}

/// Whether the simulator's token statistics show no 429 of any cause.
fn no_429s(stats: &Value) -> bool {
    stats["rejected"]
        .as_object()
        .is_none_or(|o| o.values().all(|n| n.as_u64() == Some(0)))
}

impl Replicas {
    /// Measures `sim_secs` of the simulator's time from now and checks the token was saturated
    /// (at least 95 % of the quota bound) without a 429; on failure, shows the daemons' lines
    /// about leases (a credential that moved in the middle explains a lost window).
    async fn assert_saturated_without_429(&self, what: &str, sim_secs: i64) {
        let (accepted, rejected, elapsed) = self.measure(sim_secs).await;
        let bound = LIMIT_PER_MINUTE as f64 * elapsed / 60.0;
        let utilization = accepted as f64 / bound;
        println!(
            "{what}: {accepted} requests in {elapsed:.1} sim s, bound {bound:.0}, utilization {utilization:.3}, 429s {rejected:?}"
        );
        let leases = || {
            self.logs()
                .lines()
                .filter(|l| l.contains("lease") || l.contains("Took") || l.contains("Handed"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            rejected.values().all(|n| *n == 0),
            "{what}: 429s {rejected:?}\n{}",
            leases()
        );
        assert!(
            utilization >= 0.95,
            "{what}: only {accepted} of the {bound:.0} requests the quota allows ({utilization:.3})\n{}",
            leases()
        );
    }

    /// `count` replicas with the six tailing audit-log jobs on the quota-bound simulator.
    async fn quota_bound(db: support::pg::TestDatabase, count: usize) -> Replicas {
        Replicas::start(
            db,
            quota_bound_sim(),
            count,
            QUOTA_CREDENTIAL,
            busy_audit_jobs,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_spend_one_tokens_quota_to_the_limit_and_survive_the_holders_death() {
    let Some(db) = support::pg::TestDatabase::create("three replicas share one token").await else {
        return;
    };
    let mut replicas = Replicas::quota_bound(db, 3).await;
    let holder = replicas.wait_for_holder(None).await;

    // Warm up (the backfills end, every job tails), then six quota windows.
    tokio::time::sleep(Duration::from_secs(6)).await;
    replicas
        .assert_saturated_without_429("three replicas", 360)
        .await;
    let before_kill = chrono::Utc::now();

    // SIGKILL the replica running the token's jobs: another takes the credential within its
    // lease, waits out the dead one's window, and spends the quota without a 429.
    replicas.admin().reset_stats().await;
    let mut dead = replicas.children[holder].take().unwrap();
    kill(&mut dead);
    let killed_at = Instant::now();
    let next = replicas.wait_for_holder(Some(holder)).await;
    let moved_after = killed_at.elapsed();
    println!("credential moved from replica {holder} to {next} after {moved_after:?}");
    assert!(
        moved_after < Duration::from_secs(5 + 3),
        "the credential moved only after {moved_after:?} (lease 5 s)"
    );
    let stats = replicas.admin().token_stats("service-account").await;
    assert!(
        no_429s(&stats),
        "429s during the move: {stats}\n{}",
        replicas.logs()
    );
    // The new holder waits until the dead one's requests have left the window (6 s), then
    // spends the whole quota again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    replicas
        .assert_saturated_without_429("after the move", 360)
        .await;
    let after_move = chrono::Utc::now();

    // Every fire of every job between the start and the end is a run, exactly once (the
    // unique index makes doubles impossible; a lost fire is a missing 5 s step), none failed.
    let store = replicas.store().await;
    for i in 0..JOBS {
        let job = format!("audit-{i}");
        let runs = replicas.runs_none_failed(&*store, &job).await;
        let mut fires: Vec<_> = runs.iter().filter_map(|r| r.fire_time).collect();
        fires.sort();
        let window: Vec<_> = fires
            .iter()
            .filter(|t| **t >= before_kill - chrono::Duration::seconds(30) && **t <= after_move)
            .collect();
        assert!(window.len() >= 8, "{job}: fires {fires:?}");
        for pair in window.windows(2) {
            assert_eq!(
                (*pair[1] - *pair[0]).num_seconds(),
                5,
                "{job}: a fire is missing or doubled between {} and {}",
                pair[0],
                pair[1]
            );
        }
    }
    replicas.stop();
}

/// The job set each replica runs is visible to the others: `jobs list` names every daemon's job
/// set, and a replica whose files differ is marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_shows_each_replicas_job_set() {
    let Some(db) = support::pg::TestDatabase::create("replica job sets").await else {
        return;
    };
    let mut replicas = Replicas::quota_bound(db, 3).await;
    // One replica's files change: it reloads within 5 s and announces the new set.
    std::fs::write(
        replicas.daemons[2].jobs_dir().join("audit-0.toml"),
        std::fs::read_to_string(replicas.daemons[2].jobs_dir().join("audit-0.toml"))
            .unwrap()
            .replace("every = \"5s\"", "every = \"6s\""),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = replicas.daemons[0].cli(&["jobs", "list"]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{text}");
        let daemons = text
            .lines()
            .filter(|l| l.trim_start().starts_with("daemon "))
            .count();
        let differing = text.matches("differs from these files").count();
        if daemons == 3 && differing == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // /readyz shows the set and the other replicas'.
    let readyz: Value = reqwest::get(format!(
        "http://127.0.0.1:{}/readyz",
        replicas.daemons[2].admin_port
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let versions: std::collections::BTreeSet<&str> = readyz["job_set"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["job_set"].as_str())
        .collect();
    assert_eq!(versions.len(), 2, "{readyz}");
    assert!(versions.contains(readyz["job_set"]["version"].as_str().unwrap()));
    // The replica with the newer files leads the scheduler: the others stand down rather
    // than drop or keep schedules by their stale files.
    let updated_pid = replicas.children[2].as_ref().unwrap().id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lease = replicas.store().await.get_lease("scheduler").await.unwrap();
        let leader_pid = lease
            .as_ref()
            .and_then(|l| l.owner.split(':').nth(1)?.parse::<u32>().ok());
        if leader_pid == Some(updated_pid) && lease.unwrap().expires_at > chrono::Utc::now() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica with the newer job files does not lead\n{}",
            replicas.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    replicas.stop();
}

/// Enqueues a run of each job through the CLI and waits until every one has completed.
async fn run_all_and_wait(replicas: &Replicas, jobs: &[String], within: Duration) {
    for job in jobs {
        let output = replicas.daemons[0].cli(&["jobs", "run", job]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let store = replicas.store().await;
    let deadline = Instant::now() + within;
    loop {
        let mut pending = Vec::new();
        for job in jobs {
            let runs = replicas.runs_none_failed(&*store, job).await;
            if !runs.iter().any(|r| r.state == RunState::Completed) {
                pending.push(job.clone());
            }
        }
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {pending:?}\n{}",
            replicas.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// With slow responses (1 s), concurrency is the limit: six audit-log backfills of twenty slices
/// each want 120 reads at once; the replicas together never send more than Asana's 50.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_exceed_the_tokens_concurrent_reads() {
    let Some(db) = support::pg::TestDatabase::create("three replicas, slow reads").await else {
        return;
    };
    let mut config = SimConfig {
        time_scale: TIME_SCALE,
        ..SimConfig::default()
    };
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.world.audit_events = 200;
    config.world.audit_backfill_days = 2;
    // Slow enough that the 120 reads wanted pile up even on a loaded machine.
    config.faults.latency_ms = 1000;
    let jobs = |workspace: &str, out: &std::path::Path| -> Vec<(String, String)> {
        (0..JOBS)
            .map(|i| {
                (
                    format!("backfill-{i}"),
                    format!(
                        r#"name = "backfill-{i}"
kind = "audit_log"
every = "24h"
credential = "sa"
timeout = "5m"

[settings]
workspace = "{workspace}"
start = "3d"
backfill_slices = 20
page_size = 1

[settings.sink]
type = "file"
dir = "{out}"
"#,
                        out = out.display(),
                    ),
                )
            })
            .collect()
    };
    let mut replicas = Replicas::start(db, config, 3, "tier = \"paid\"", jobs).await;
    replicas.wait_for_holder(None).await;
    replicas.admin().reset_stats().await;
    let names: Vec<String> = (0..JOBS).map(|i| format!("backfill-{i}")).collect();
    run_all_and_wait(&replicas, &names, Duration::from_secs(180)).await;
    let stats = replicas.admin().token_stats("service-account").await;
    println!("slow reads, three replicas: {stats}");
    let peak = stats["peak_concurrent_reads"].as_u64().unwrap();
    assert!(no_429s(&stats), "429s: {stats}");
    assert!(peak <= 50, "{peak} reads at once: {stats}");
    assert!(
        peak >= 45,
        "concurrency was not the limit (peak {peak}), so this test proves nothing: {stats}"
    );
    replicas.stop();
}

/// Eight graph exports across three replicas: never more than Asana's 5 export jobs at once,
/// and no 429 for the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_exports_across_three_replicas_hold_at_most_five_export_slots() {
    let Some(db) = support::pg::TestDatabase::create("three replicas, eight exports").await else {
        return;
    };
    let mut config = SimConfig {
        time_scale: TIME_SCALE,
        ..SimConfig::default()
    };
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    let projects: Vec<String> = {
        let sim = SimServer::start(config.clone()).await.unwrap();
        let gids = sim
            .state()
            .world()
            .projects
            .iter()
            .map(|p| p.gid.clone())
            .take(8)
            .collect();
        sim.shutdown().await;
        gids
    };
    assert_eq!(projects.len(), 8, "the world has eight projects to export");
    let jobs = move |_: &str, out: &std::path::Path| -> Vec<(String, String)> {
        projects
            .iter()
            .enumerate()
            .map(|(i, project)| {
                std::fs::create_dir_all(out.join(format!("graph-{i}"))).unwrap();
                (
                    format!("graph-{i}"),
                    format!(
                        "name = \"graph-{i}\"\nkind = \"graph_export\"\nevery = \"24h\"\ncredential = \"sa\"\nmax_attempts = 3\nretry_initial = \"1s\"\ntimeout = \"5m\"\n[settings]\noutput_dir = \"{out}/graph-{i}\"\npoll_interval = \"1s\"\npoll_max_interval = \"2s\"\nparent = \"{project}\"\n",
                        out = out.display()
                    ),
                )
            })
            .collect()
    };
    let mut replicas = Replicas::start(db, config, 3, "tier = \"paid\"", jobs).await;
    replicas.wait_for_holder(None).await;
    replicas.admin().reset_stats().await;
    let names: Vec<String> = (0..8).map(|i| format!("graph-{i}")).collect();
    run_all_and_wait(&replicas, &names, Duration::from_secs(180)).await;
    let stats = replicas.admin().token_stats("service-account").await;
    println!("eight exports, three replicas: {stats}");
    assert!(no_429s(&stats), "429s: {stats}");
    let peak = stats["peak_concurrent_jobs"].as_u64().unwrap();
    assert!(
        (1..=5).contains(&peak),
        "{peak} export jobs at once: {stats}"
    );
    replicas.stop();
}

/// The same load on one replica, for the side-by-side figures in docs/benchmarks.md: one
/// process spends the quota as three do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_spends_the_same_quota_as_three() {
    let Some(db) = support::pg::TestDatabase::create("one replica, one token").await else {
        return;
    };
    let mut replicas = Replicas::quota_bound(db, 1).await;
    replicas.wait_for_holder(None).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    replicas
        .assert_saturated_without_429("one replica", 360)
        .await;
    replicas.stop();
}
