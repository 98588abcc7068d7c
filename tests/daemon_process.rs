//! The daemon as a real process: a SIGKILL mid-run loses nothing (the lease expires, another
//! process rescues the run and completes it), SIGTERM drains (the running job releases its run
//! and the process exits 0), SIGHUP with a broken job file keeps the old jobs running, and the
//! CLI's exit codes.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use asana_worker::sim::config::FaultSpec;
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{Run, RunFilter, RunState, Store};
use serde_json::json;

mod support;
use support::daemon as daemon_support;

use daemon_support::{Daemon, DaemonOptions, send_signal};

/// A daemon directory with a `credential_check` job `check`, and the simulator.
struct Setup {
    daemon: Daemon,
    sim: SimServer,
}

/// The daemon's directory, config, CLI and store, as [`Daemon`] has them.
impl std::ops::Deref for Setup {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl Setup {
    async fn new() -> Setup {
        Setup::with_lease(2).await
    }

    async fn with_lease(lease_secs: u64) -> Setup {
        let mut config = SimConfig::default();
        config.timing.activity_per_minute = 0.0;
        config.timing.audit_events_per_minute = 0.0;
        let sim = SimServer::start(config).await.unwrap();
        let daemon = Daemon::new(
            &sim,
            DaemonOptions {
                asana: "request_timeout_secs = 120".into(),
                lease_secs,
                ..DaemonOptions::default()
            },
        );
        write_job(daemon.dir.path(), "check", "every = \"1h\"");
        Setup { daemon, sim }
    }

    async fn set_latency(&self, latency_ms: u64) {
        let faults = FaultSpec {
            latency_ms,
            ..FaultSpec::default()
        };
        support::sim::SimAdmin::of(&self.sim)
            .set_faults(&faults)
            .await;
    }
}

fn write_job(dir: &Path, name: &str, schedule: &str) {
    std::fs::write(
        dir.join("jobs").join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\nkind = \"credential_check\"\n{schedule}\ncredential = \"sa\"\nmax_attempts = 3\nretry_initial = \"1s\"\ntimeout = \"1m\"\n"
        ),
    )
    .unwrap();
}

async fn runs(store: &std::sync::Arc<dyn Store>, job: &str) -> Vec<Run> {
    store
        .list_runs(&RunFilter {
            job_name: Some(job.into()),
            states: Vec::new(),
            limit: 100,
            ..RunFilter::default()
        })
        .await
        .unwrap()
}

async fn wait_for_state(
    store: &std::sync::Arc<dyn Store>,
    id: uuid::Uuid,
    states: &[RunState],
    within: Duration,
) -> Run {
    let deadline = Instant::now() + within;
    loop {
        let run = store.get_run(id).await.unwrap().unwrap();
        if states.contains(&run.state) {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run stayed {} (wanted {states:?}): {run:?}",
            run.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn enqueue(setup: &Setup, job: &str) -> uuid::Uuid {
    let output = setup.cli(&["jobs", "run", job]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .split_whitespace()
        .nth(2)
        .expect("enqueued run ID of …");
    uuid::Uuid::parse_str(id).unwrap()
}

fn signal(child: &Child, signal: i32) {
    assert!(send_signal(child, signal), "the daemon is gone");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A run left `running` by a killed daemon resumes as soon as the next daemon on the SQLite file
/// starts (it holds the file's daemon lock, so the run can only be its predecessor's), well
/// before the run's 60-second lease would have expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_with_its_daemon_is_rescued_at_restart_and_completes() {
    let setup = Setup::with_lease(60).await;
    setup.set_latency(60_000).await;
    let mut first = setup.start("first");
    setup.wait_ready(&mut first).await;
    let id = enqueue(&setup, "check");
    let store = setup.store().await;
    let running = wait_for_state(&store, id, &[RunState::Running], Duration::from_secs(15)).await;
    assert_eq!(running.attempt, 1);
    first.kill().unwrap();
    first.wait().unwrap();

    setup.set_latency(0).await;
    let restarted = Instant::now();
    let mut second = setup.start("second");
    setup.wait_ready(&mut second).await;
    let done = wait_for_state(&store, id, &[RunState::Completed], Duration::from_secs(30)).await;
    assert!(
        restarted.elapsed() < Duration::from_secs(30),
        "rescued at restart, not after the 60 s lease"
    );
    assert_eq!(
        done.attempt, 2,
        "the killed attempt counts, the rescue is the second"
    );
    assert_eq!(done.rescues, 1);
    assert!(
        done.last_error
            .unwrap_or_default()
            .contains("rescued at restart")
    );
    assert_eq!(runs(&store, "check").await.len(), 1, "no duplicate run");
    signal(&second, libc::SIGTERM);
    assert!(wait_exit(&mut second, Duration::from_secs(15)).success());
    let log = setup.log("second");
    assert!(
        log.contains("Rescued the runs a previous daemon left running"),
        "{log}"
    );
}

/// A second daemon on the same SQLite file refuses to start, naming the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_one_sqlite_file_refuses_to_start() {
    let setup = Setup::new().await;
    let mut first = setup.start("first");
    setup.wait_ready(&mut first).await;
    let mut second = setup.start("second");
    let status = wait_exit(&mut second, Duration::from_secs(20));
    assert!(!status.success());
    let log = setup.log("second");
    assert!(
        log.contains(&format!(
            "another asana-worker daemon (pid {}) runs on the SQLite database",
            first.id()
        )),
        "{log}"
    );
    assert!(log.contains("use PostgreSQL"), "{log}");
    // The first one is unaffected.
    setup.wait_ready(&mut first).await;
    signal(&first, libc::SIGTERM);
    assert!(wait_exit(&mut first, Duration::from_secs(15)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_running_job_releases_its_run_and_exits_zero() {
    let setup = Setup::new().await;
    setup.set_latency(60_000).await;
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let id = enqueue(&setup, "check");
    let store = setup.store().await;
    wait_for_state(&store, id, &[RunState::Running], Duration::from_secs(15)).await;
    let asked = Instant::now();
    signal(&daemon, libc::SIGTERM);
    let status = wait_exit(&mut daemon, Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}: {}",
        setup.log("daemon")
    );
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "drained within the grace period"
    );
    let run = store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        run.state,
        RunState::Queued,
        "released for the next daemon: {run:?}"
    );
    assert_eq!(run.attempt, 0, "an interrupted attempt is not counted");
    assert!(run.lease_owner.is_none());
    let log = setup.log("daemon");
    assert!(
        log.contains("SIGTERM received") && log.contains("Stopped"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_job_file_keeps_the_old_jobs_and_a_fixed_one_is_loaded() {
    let setup = Setup::new().await;
    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    std::fs::write(setup.dir.path().join("jobs/broken.toml"), "name = \"broken\"\nkind = \"credential_check\"\nschedule = \"99 * * * *\"\ncredential = \"sa\"\n").unwrap();
    signal(&daemon, libc::SIGHUP);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", setup.admin_port);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("asana_worker_config_reload_failures_total 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reload failure counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = setup.log("daemon");
    assert!(
        log.contains("Reload refused") && log.contains("broken.toml:3:12"),
        "{log}"
    );
    setup.wait_ready(&mut daemon).await;

    // Fix the file: the next SIGHUP loads it and the scheduler picks the new job up.
    std::fs::remove_file(setup.dir.path().join("jobs/broken.toml")).unwrap();
    write_job(setup.dir.path(), "second", "every = \"1h\"");
    signal(&daemon, libc::SIGHUP);
    let store = setup.store().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.get_schedule("second").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the new job was not scheduled: {}",
            setup.log("daemon")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(&mut daemon, Duration::from_secs(10)).success());
}

/// A credential whose token variable or file is absent is found by `validate` (exit 2, naming
/// the credential and the variable or file) and by the daemon at start-up, never at run time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_without_its_token_is_refused_at_load() {
    let setup = Setup::new().await;
    let absent = setup.path("absent.token");
    let mut config = std::fs::read_to_string(setup.config()).unwrap();
    config.push_str(&format!(
        "\n[credentials.from-env]\nkind = \"pat\"\ntoken_env = \"ASANA_WORKER_TEST_UNSET_TOKEN\"\n[credentials.from-file]\nkind = \"pat\"\ntoken_file = \"{}\"\n",
        absent.display()
    ));
    std::fs::write(setup.config(), config).unwrap();
    std::fs::write(
        setup.jobs_dir().join("uses-env.toml"),
        "name = \"uses-env\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"from-env\"\n",
    )
    .unwrap();
    let validate = setup.cli(&["validate"]);
    assert_eq!(validate.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert!(
        stderr.contains("credential \"from-env\" has no token: environment variable ASANA_WORKER_TEST_UNSET_TOKEN is not set"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "credential \"from-file\" has no token: token file {:?} cannot be read",
            absent.display().to_string()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("uses-env.toml:4:14: credential \"from-env\" has no token"),
        "{stderr}"
    );

    // The daemon does not start with a job whose credential cannot be used.
    let mut daemon = setup.start("daemon");
    let status = wait_exit(&mut daemon, Duration::from_secs(20));
    assert!(!status.success());
    let log = setup.log("daemon");
    assert!(log.contains("uses-env.toml:4:14"), "{log}");

    // With the token in place, both pass.
    std::fs::write(&absent, "a-token\n").unwrap();
    std::fs::remove_file(setup.jobs_dir().join("uses-env.toml")).unwrap();
    let config = std::fs::read_to_string(setup.config()).unwrap();
    let config = config.replace(
        "token_env = \"ASANA_WORKER_TEST_UNSET_TOKEN\"",
        &format!("token_file = \"{}\"", absent.display()),
    );
    std::fs::write(setup.config(), config).unwrap();
    let validate = setup.cli(&["validate"]);
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reports_bad_input_with_exit_code_two_and_runs_with_wait() {
    let setup = Setup::new().await;
    let valid = setup.cli(&["validate"]);
    assert!(
        valid.status.success(),
        "{}",
        String::from_utf8_lossy(&valid.stderr)
    );
    assert!(String::from_utf8_lossy(&valid.stdout).contains("1 job(s)"));

    std::fs::write(
        setup.dir.path().join("jobs/typo.toml"),
        "name = \"typo\"\nkind = \"credential_chek\"\nevery = \"5m\"\ncredential = \"nobody\"\n",
    )
    .unwrap();
    let invalid = setup.cli(&["validate"]);
    assert_eq!(invalid.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("typo.toml:2:8"), "{stderr}");
    assert!(stderr.contains("typo.toml:4:14"), "{stderr}");
    std::fs::remove_file(setup.dir.path().join("jobs/typo.toml")).unwrap();

    let unknown = setup.cli(&["jobs", "run", "nope"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("known jobs: check"));

    let mut daemon = setup.start("daemon");
    setup.wait_ready(&mut daemon).await;
    let waited = setup.cli(&["jobs", "run", "check", "--wait", "--timeout-secs", "30"]);
    assert!(
        waited.status.success(),
        "{}",
        String::from_utf8_lossy(&waited.stdout)
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("completed"));
    let listed = setup.cli(&["runs", "list", "--json"]);
    let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(runs[0]["state"], json!("completed"));
    let listed_jobs = setup.cli(&["jobs", "list", "--json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&listed_jobs.stdout).unwrap();
    assert_eq!(jobs[0]["last_state"], json!("completed"));
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(&mut daemon, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_daemon_reports_ready_pings_the_watchdog_and_reports_stopping() {
    let setup = Setup::new().await;
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut daemon = setup.start_with_env(
        "systemd",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen = Vec::new();
    let mut buffer = [0u8; 512];
    while !(seen.iter().any(|m: &String| m.contains("READY=1"))
        && seen.iter().any(|m| m.contains("WATCHDOG=1")))
    {
        let n = socket
            .recv(&mut buffer)
            .expect("a notification within 20 s");
        seen.push(String::from_utf8_lossy(&buffer[..n]).to_string());
    }
    signal(&daemon, libc::SIGTERM);
    loop {
        let n = socket.recv(&mut buffer).expect("STOPPING=1 before exit");
        let message = String::from_utf8_lossy(&buffer[..n]).to_string();
        if message.contains("STOPPING=1") {
            break;
        }
    }
    assert!(wait_exit(&mut daemon, Duration::from_secs(10)).success());
    let ready_index = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    assert!(
        seen[..ready_index].iter().all(|m| !m.contains("WATCHDOG")),
        "watchdog pings start once ready: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_never_show_the_token() {
    let setup = Setup::new().await;
    let mut daemon = setup.start_with_env(
        "json",
        &[
            ("ASANA_WORKER__LOG__FORMAT", "json"),
            ("ASANA_WORKER__LOG__LEVEL", "trace"),
        ],
    );
    setup.wait_ready(&mut daemon).await;
    let id = enqueue(&setup, "check");
    let store = setup.store().await;
    wait_for_state(&store, id, &[RunState::Completed], Duration::from_secs(20)).await;
    signal(&daemon, libc::SIGTERM);
    assert!(wait_exit(&mut daemon, Duration::from_secs(10)).success());
    let text = setup.log("json");
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("timestamp").is_some(),
            "{line}"
        );
        lines += 1;
    }
    assert!(lines > 5, "{text}");
    assert!(text.contains("Run completed"));
    // Every line logged while the run executed, the job's and the client's included, names the
    // run: job, kind, run id and attempt (a JSON number).
    let in_run: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["span"]["name"] == "run")
        .collect();
    let messages: Vec<&str> = in_run
        .iter()
        .filter_map(|v| v["message"].as_str())
        .collect();
    for expected in ["Starting run", "Credential is valid", "Run completed"] {
        assert!(
            messages.contains(&expected),
            "{expected:?} not in a run span: {messages:?}"
        );
    }
    for line in &in_run {
        let span = &line["span"];
        assert_eq!(span["job"], "check", "{line}");
        assert_eq!(span["kind"], "credential_check", "{line}");
        assert_eq!(span["run_id"], id.to_string(), "{line}");
        assert_eq!(span["attempt"], 1, "{line}");
    }
    let token = setup.sim.token("service-account").unwrap();
    assert!(
        !text.contains(&token),
        "the token leaked into trace-level logs"
    );
}

/// Two replicas on one PostgreSQL database whose job files differ (a ConfigMap update reached
/// one pod first): the replica running the job's credential does not define the job, so it
/// leaves the run in the queue without using an attempt, saying so; the other replica, which
/// defines the job but not holding the credential must not spend its token, leaves it too; once
/// the update reaches the first replica, its run completes. Nothing fails for the disagreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_a_job_one_replica_does_not_define_waits_for_its_files_and_never_fails() {
    let Some(db) = support::pg::TestDatabase::create("replicas with different job files").await
    else {
        return;
    };
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    let sim = SimServer::start(config).await.unwrap();
    let options = || DaemonOptions {
        database_url: Some(db.url.clone()),
        lease_secs: 2,
        worker: "credential_lease_secs = 2",
        ..DaemonOptions::default()
    };
    let updated = Daemon::new(&sim, options());
    let stale = Daemon::new(&sim, options());
    write_job(updated.dir.path(), "check", "every = \"1h\"");
    write_job(updated.dir.path(), "new", "every = \"1h\"");
    write_job(stale.dir.path(), "check", "every = \"1h\"");

    // The stale replica starts first and takes the credential.
    let mut stale_daemon = stale.start("stale");
    stale.wait_ready(&mut stale_daemon).await;
    let mut updated_daemon = updated.start("updated");
    updated.wait_ready(&mut updated_daemon).await;
    let enqueued = updated.cli(&["jobs", "run", "new"]);
    assert!(
        enqueued.status.success(),
        "{}",
        String::from_utf8_lossy(&enqueued.stderr)
    );
    let store = updated.store().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let run = runs(&store, "new")
            .await
            .into_iter()
            .next()
            .expect("the run");
        if run
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not defined"))
        {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the stale replica never looked at it: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        left.state,
        RunState::Queued,
        "left in the queue, not failed: {left:?}"
    );
    assert_eq!(left.attempt, 0, "without using an attempt");
    assert!(
        stale
            .log("stale")
            .contains("leaving the run for a replica that does")
    );
    assert!(
        !updated.log("updated").contains("Starting run"),
        "the replica without the credential's lease ran a job of it"
    );

    // The update reaches the stale replica: it reloads and runs the job.
    write_job(stale.dir.path(), "new", "every = \"1h\"");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = runs(&store, "new").await.into_iter().next().unwrap();
        if run.state == RunState::Completed {
            assert_eq!(run.attempt, 1, "{run:?}");
            break;
        }
        assert_ne!(run.state, RunState::Failed, "{run:?}");
        assert!(Instant::now() < deadline, "never ran: {run:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon_support::terminate(&mut updated_daemon);
    daemon_support::terminate(&mut stale_daemon);
}

/// `asana-worker health` answers from the running daemon's admin server: 0 while it runs, 1
/// with a hint once it is gone (the image's HEALTHCHECK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_running_daemon_and_its_absence() {
    let setup = Setup::new().await;
    let mut daemon = setup.start("health");
    setup.wait_ready(&mut daemon).await;
    for args in [&["health"][..], &["health", "--ready"][..]] {
        let out = setup.cli(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(text.contains(" 200 "), "{text}");
    }
    daemon_support::terminate(&mut daemon);
    let out = setup.cli(&["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is the daemon running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A job file added on disk (as a ConfigMap update does) is picked up without a SIGHUP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_files_changed_on_disk_are_reloaded_without_a_signal() {
    let setup = Setup::new().await;
    let mut daemon = setup.start("watch");
    setup.wait_ready(&mut daemon).await;
    write_job(setup.dir.path(), "added", "every = \"1h\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !setup
        .log("watch")
        .contains("Job files changed on disk; reloading")
    {
        assert!(
            Instant::now() < deadline,
            "no reload: {}",
            setup.log("watch")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = setup.cli(&["jobs", "run", "added", "--wait", "--timeout-secs", "60"]);
    assert!(
        listed.status.success(),
        "the added job runs: {}{}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr)
    );
    daemon_support::terminate(&mut daemon);
}
