//! The `audit_log` job in an in-process daemon whose clock the test can jump forward together
//! with the simulator's (`POST /_sim/clock`): the job's metrics (events per run, lag, time since
//! the last event, retention headroom) are exported on `/metrics` with the right values; a cursor
//! older than Asana's 90-day retention fails the run naming the exact lost window, delivers what
//! is still there, and the next run continues; and a continuous tail (`tail_for`) delivers
//! events added while it tails.

mod support;
use support::audit as audit_support;
use support::sim::SimAdmin;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asana_worker::clock::Clock;
use asana_worker::config::settings::{
    CredentialKind, CredentialSettings, CredentialTier, Settings,
};
use asana_worker::daemon::{self, DaemonHandle};
use asana_worker::jobs::audit_log::Cursor;
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{Enqueued, Run, RunState};
use audit_support::{by_gid, quiet_sim, read_records};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400;

/// Real time plus a jump the test sets: the daemon's view of "now" after weeks pass.
#[derive(Debug, Default)]
struct JumpClock {
    jumped: Mutex<chrono::Duration>,
}

impl JumpClock {
    fn advance(&self, by: chrono::Duration) {
        *self.jumped.lock().unwrap() += by;
    }
}

impl Clock for JumpClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.jumped.lock().unwrap()
    }
}

struct Daemon {
    /// The job's name (distinct per test: the metrics recorder is per process).
    name: &'static str,
    dir: tempfile::TempDir,
    sim: SimServer,
    clock: Arc<JumpClock>,
    handle: DaemonHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    /// The simulator and an in-process daemon with one `audit_log` job `audit` (manual runs
    /// only: a 366-day interval and `misfire = "skip"`, so clock jumps fire nothing) with the
    /// extra `settings` lines.
    async fn start(name: &'static str, sim_config: SimConfig, settings_lines: &str) -> Daemon {
        let sim = SimServer::start(sim_config).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let jobs_dir = dir.path().join("jobs");
        std::fs::create_dir(&jobs_dir).unwrap();
        let workspace = sim.state().world().workspace.gid.clone();
        std::fs::write(
            jobs_dir.join(format!("{name}.toml")),
            format!(
                r#"name = "{name}"
kind = "audit_log"
every = "366d"
misfire = "skip"
credential = "sa"
max_attempts = 1
timeout = "10m"

[settings]
workspace = "{workspace}"
{settings_lines}

[settings.sink]
type = "file"
dir = "{out}"
"#,
                out = dir.path().join("out").display()
            ),
        )
        .unwrap();
        let token = dir.path().join("sa.token");
        std::fs::write(&token, sim.token("service-account").unwrap()).unwrap();
        let mut settings = Settings::default();
        settings.database.url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
        settings.jobs.dir = jobs_dir;
        settings.asana.base_url = sim.base_url();
        settings.admin.listen = "127.0.0.1:0".parse().unwrap();
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
        let clock = Arc::new(JumpClock::default());
        let shutdown = CancellationToken::new();
        let (_reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<DaemonHandle>();
        let task = {
            let shutdown = shutdown.clone();
            let clock: Arc<dyn Clock> = clock.clone();
            tokio::spawn(async move {
                daemon::run(settings, clock, shutdown, reload_rx, move |h| {
                    let _ = handle_tx.send(h);
                })
                .await
                .unwrap();
            })
        };
        let handle = handle_rx.await.unwrap();
        Daemon {
            name,
            dir,
            sim,
            clock,
            handle,
            shutdown,
            task,
        }
    }

    fn stream_dir(&self) -> PathBuf {
        self.dir.path().join("out").join(self.name)
    }

    fn records(&self) -> Vec<Value> {
        read_records(&self.stream_dir())
    }

    /// Enqueues a manual run of the job.
    async fn enqueue(&self) -> uuid::Uuid {
        let job = self
            .handle
            .jobs
            .borrow()
            .iter()
            .find(|j| j.name == self.name)
            .cloned()
            .unwrap();
        let now = self.clock.now();
        match self
            .handle
            .store
            .enqueue(asana_worker::scheduler::manual_run(&job, now), now)
            .await
            .unwrap()
        {
            Enqueued::Inserted(run) => run.id,
            other => panic!("not enqueued: {other:?}"),
        }
    }

    /// Waits for run `id` to end (completed or failed).
    async fn finish(&self, id: uuid::Uuid, within: Duration) -> Run {
        let deadline = Instant::now() + within;
        loop {
            let run = self.handle.store.get_run(id).await.unwrap().unwrap();
            if matches!(run.state, RunState::Completed | RunState::Failed) {
                return run;
            }
            assert!(Instant::now() < deadline, "run did not end: {run:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One run to its end.
    async fn run(&self) -> Run {
        let id = self.enqueue().await;
        self.finish(id, Duration::from_secs(60)).await
    }

    /// The gids of every audit event the simulator holds.
    fn sim_gids(&self) -> BTreeSet<String> {
        self.sim
            .state()
            .world()
            .audit_events
            .iter()
            .map(|e| e.gid.clone())
            .collect()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!(
            "http://{}/metrics",
            self.handle.admin_addr.unwrap()
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
    }

    /// Appends `count` events now through the simulator's admin API; returns their gids.
    async fn append(&self, count: usize) -> Vec<String> {
        SimAdmin::of(&self.sim)
            .append_audit_events(json!({ "count": count }))
            .await
    }

    /// Jumps the simulator's clock (through its admin route) and the daemon's by `secs`.
    async fn jump(&self, secs: i64) {
        SimAdmin::of(&self.sim).advance(secs).await;
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    async fn cursor(&self) -> Cursor {
        let value = self
            .handle
            .store
            .get_checkpoint(self.name, "cursor")
            .await
            .unwrap()
            .expect("a stored cursor");
        serde_json::from_value(value).unwrap()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.sim.shutdown().await;
    }
}

/// The value of the sample `name{job="audit"}`.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("job=\"audit\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} for job audit missing from /metrics:\n{text}"))
}

fn assert_exactly(records: &[Value], expected: &BTreeSet<String>) {
    let counts = by_gid(records);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    let held: BTreeSet<String> = counts.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&held).collect();
    let extra: Vec<_> = held.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_retention_headroom_and_a_lost_window_end_to_end() {
    let daemon = Daemon::start(
        "audit",
        quiet_sim(40, SimConfig::default().time_scale),
        "start = \"2d\"\nbackfill_slices = 2",
    )
    .await;
    let mut expected = daemon.sim_gids();
    assert_eq!(expected.len(), 40);

    // A first run: its metrics count what it delivered.
    let first = daemon.run().await;
    assert_eq!(first.state, RunState::Completed, "{first:?}");
    assert_exactly(&daemon.records(), &expected);
    let text = daemon.metrics().await;
    assert_eq!(gauge(&text, "asana_worker_audit_log_events_per_run"), 40.0);
    assert!(
        gauge(&text, "asana_worker_audit_log_events_total") >= 40.0,
        "{text}"
    );
    // The newest event is at most a day old (the backfill's spread), delivered just now.
    let lag = gauge(&text, "asana_worker_audit_log_lag_seconds");
    assert!((0.0..=(DAY as f64 + 60.0)).contains(&lag), "lag {lag}");
    let since = gauge(&text, "asana_worker_audit_log_seconds_since_last_event");
    assert!((0.0..60.0).contains(&since), "since last event {since}");

    // A second run with three new events: per-run count, small lag, full retention headroom.
    expected.extend(daemon.append(3).await);
    let second = daemon.run().await;
    assert_eq!(second.state, RunState::Completed, "{second:?}");
    assert_exactly(&daemon.records(), &expected);
    let text = daemon.metrics().await;
    assert_eq!(gauge(&text, "asana_worker_audit_log_events_per_run"), 3.0);
    let lag = gauge(&text, "asana_worker_audit_log_lag_seconds");
    assert!((0.0..60.0).contains(&lag), "lag {lag}");
    let headroom = gauge(&text, "asana_worker_audit_log_retention_headroom_seconds");
    assert!(
        ((89 * DAY) as f64..=(90 * DAY) as f64).contains(&headroom),
        "headroom {headroom}"
    );

    // 89.5 days pass without a run: the headroom shrinks below the 7-day warning, nothing is
    // lost yet; no new events, so the lag and the time since the last event grow.
    daemon.jump(89 * DAY + DAY / 2).await;
    let third = daemon.run().await;
    assert_eq!(third.state, RunState::Completed, "{third:?}");
    let text = daemon.metrics().await;
    assert_eq!(gauge(&text, "asana_worker_audit_log_events_per_run"), 0.0);
    let headroom = gauge(&text, "asana_worker_audit_log_retention_headroom_seconds");
    assert!(
        ((DAY / 2 - 120) as f64..=(DAY / 2 + 60) as f64).contains(&headroom),
        "headroom {headroom}"
    );
    let since = gauge(&text, "asana_worker_audit_log_seconds_since_last_event");
    assert!(since >= (89 * DAY) as f64, "since last event {since}");
    let lag = gauge(&text, "asana_worker_audit_log_lag_seconds");
    assert!(lag >= (89 * DAY) as f64, "lag {lag}");

    // Another day passes: the cursor is past the retention. The run fails naming the exact
    // window, but still delivers the events Asana holds.
    daemon.jump(DAY).await;
    let oldest = daemon.cursor().await.oldest_needed();
    let fresh = daemon.append(2).await;
    expected.extend(fresh.iter().cloned());
    let before = daemon.clock.now();
    let lost = daemon.run().await;
    let after = daemon.clock.now();
    assert_eq!(lost.state, RunState::Failed, "{lost:?}");
    let error = lost.last_error.clone().unwrap_or_default();
    let prefix = format!("audit-log events created from {} to ", rfc3339(oldest));
    assert!(error.starts_with(&prefix), "{error}");
    let cutoff_text = error[prefix.len()..].split(' ').next().unwrap();
    let cutoff = DateTime::parse_from_rfc3339(cutoff_text)
        .unwrap()
        .with_timezone(&Utc);
    let retention = chrono::Duration::days(90);
    assert!(
        cutoff >= before - retention && cutoff <= after - retention,
        "the cutoff {cutoff} is 90 days before the run ({before}..{after})"
    );
    assert!(
        error.contains("that window is lost")
            && error.contains(&format!("continues from {cutoff_text}")),
        "{error}"
    );
    assert_exactly(&daemon.records(), &expected);
    let text = daemon.metrics().await;
    assert!(gauge(&text, "asana_worker_audit_log_lost_windows_total") >= 1.0);
    assert_eq!(gauge(&text, "asana_worker_audit_log_events_per_run"), 2.0);
    let cursor = daemon.cursor().await;
    assert_eq!(cursor.lost.len(), 1, "recorded once: {:?}", cursor.lost);
    assert_eq!(cursor.lost[0].0, oldest);

    // The next run continues: no second lost window, new events delivered once.
    expected.extend(daemon.append(2).await);
    let next = daemon.run().await;
    assert_eq!(next.state, RunState::Completed, "{next:?}");
    assert_exactly(&daemon.records(), &expected);
    assert_eq!(daemon.cursor().await.lost.len(), 1);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuous_tail_delivers_events_added_while_it_tails() {
    let daemon = Daemon::start(
        "tail",
        quiet_sim(10, SimConfig::default().time_scale),
        "start = \"2d\"\nbackfill_slices = 1\ntail_for = \"12s\"\npoll_interval = \"1s\"",
    )
    .await;
    let mut expected = daemon.sim_gids();
    let id = daemon.enqueue().await;
    // Wait until the first pass has delivered the existing events, then add some while the run
    // keeps tailing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.records().len() < expected.len() {
        assert!(Instant::now() < deadline, "the first pass never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = daemon.handle.store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        running.state,
        RunState::Running,
        "still tailing: {running:?}"
    );
    let mut added = daemon.append(2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    added.extend(daemon.append(3).await);
    expected.extend(added.iter().cloned());
    // They arrive while the run is still going.
    let deadline = Instant::now() + Duration::from_secs(6);
    loop {
        let held: BTreeSet<String> = by_gid(&daemon.records()).into_keys().collect();
        if added.iter().all(|g| held.contains(g)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events added while tailing were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still = daemon.handle.store.get_run(id).await.unwrap().unwrap();
    assert_eq!(
        still.state,
        RunState::Running,
        "delivered by the tail, not a later run"
    );
    let done = daemon.finish(id, Duration::from_secs(30)).await;
    assert_eq!(done.state, RunState::Completed, "{done:?}");
    assert_exactly(&daemon.records(), &expected);
    assert_eq!(
        done.progress["events"],
        json!(expected.len()),
        "{:?}",
        done.progress
    );
    daemon.stop().await;
}
