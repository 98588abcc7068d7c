//! The daemon in-process: per-kind concurrency caps hold while several runs are due, and the
//! admin endpoints answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use asana_worker::clock::{Clock, SystemClock};
use asana_worker::config::settings::{
    CredentialKind, CredentialSettings, CredentialTier, Settings,
};
use asana_worker::daemon::{self, DaemonHandle};
use asana_worker::sim::config::FaultSpec;
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{Enqueued, RunFilter, RunState};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_kind_cap_of_one_runs_one_check_at_a_time_and_admin_endpoints_answer() {
    let mut sim_config = SimConfig {
        faults: FaultSpec {
            latency_ms: 300,
            ..FaultSpec::default()
        },
        ..SimConfig::default()
    };
    sim_config.timing.activity_per_minute = 0.0;
    let sim = SimServer::start(sim_config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir).unwrap();
    for i in 0..3 {
        std::fs::write(
            jobs_dir.join(format!("check-{i}.toml")),
            format!("name = \"check-{i}\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"sa\"\n"),
        )
        .unwrap();
    }
    let token = dir.path().join("sa.token");
    std::fs::write(&token, sim.token("service-account").unwrap()).unwrap();
    let mut settings = Settings::default();
    settings.database.url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    settings.jobs.dir = jobs_dir;
    settings.asana.base_url = sim.base_url();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.worker.concurrency = 4;
    settings
        .worker
        .per_kind
        .insert("credential_check".into(), 1);
    settings.worker.poll_interval_ms = 20;
    settings.scheduler.tick_ms = 100;
    settings.credentials.insert(
        "sa".into(),
        CredentialSettings {
            kind: CredentialKind::ServiceAccount,
            tier: CredentialTier::Paid,
            token_file: Some(token),
            token_env: None,
            requests_per_minute: None,
        },
    );
    let shutdown = CancellationToken::new();
    let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<DaemonHandle>();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(daemon::run(
            settings,
            Arc::new(SystemClock),
            shutdown,
            reload_rx,
            move |h| {
                let _ = handle_tx.send(h);
            },
        ))
    };
    let handle = handle_rx.await.unwrap();
    let jobs = handle.jobs.borrow().clone();
    for job in jobs.iter() {
        let now = SystemClock.now();
        assert!(matches!(
            handle
                .store
                .enqueue(asana_worker::scheduler::manual_run(job, now), now)
                .await
                .unwrap(),
            Enqueued::Inserted(_)
        ));
    }
    let mut peak_running = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = handle.store.count_by_state().await.unwrap();
        let count = |state: RunState| {
            counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n)
        };
        peak_running = peak_running.max(count(RunState::Running));
        if count(RunState::Completed) == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not complete: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        peak_running, 1,
        "the per-kind cap allows one credential_check at a time"
    );
    let runs = handle
        .store
        .list_runs(&RunFilter {
            job_name: None,
            states: vec![RunState::Completed],
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .unwrap();
    let mut spans: Vec<_> = runs
        .iter()
        .map(|r| (r.started_at.unwrap(), r.finished_at.unwrap()))
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[0].1 <= w[1].0),
        "runs overlapped: {spans:?}"
    );

    let admin = handle.admin_addr.unwrap();
    let healthz = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .unwrap();
    assert!(healthz.status().is_success());
    let readyz: serde_json::Value = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(readyz["ready"], true, "{readyz}");
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "asana_worker_runs_total",
        "asana_worker_run_duration_seconds",
        "asana_worker_queue_depth",
        "asana_worker_last_success_timestamp_seconds",
        "asana_worker_scheduler_leader",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();
    sim.shutdown().await;
}
