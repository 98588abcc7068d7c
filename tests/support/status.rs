//! A daemon running the example jobs (`jobs/`, as `demo` rewrites them) on the simulator with
//! the three tokens they name, its status page, and the helpers the status page's tests share:
//! triggering jobs through the page, waiting for runs, and the secrets no page may show.

#![allow(dead_code)]

use std::process::Child;
use std::time::{Duration, Instant};

use asana_worker::sim::SimServer;
use asana_worker::sim::config::SimConfig;
use asana_worker::store::{ClaimFilter, Enqueued, NewRun, RunState, Transition, Trigger};
use serde_json::{Value, json};

use super::daemon::{Daemon, DaemonOptions};

/// The admin token of [`StatusDaemon::start`] with actions enabled.
pub const ADMIN_TOKEN: &str = "admin-token-0b1c8f7d2e9a4c35b6f1d0e2a7c4b9f8";

/// The example jobs' names.
pub const EXAMPLE_JOBS: [&str; 7] = [
    "audit-log",
    "check-pat-free",
    "check-pat-paid",
    "check-service-account",
    "digest",
    "org-export",
    "sync",
];

/// The simulator, the daemon and its status page.
pub struct StatusDaemon {
    pub sim: SimServer,
    pub daemon: Daemon,
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub http: reqwest::Client,
    /// Whether the daemon has an admin token.
    pub with_token: bool,
}

impl StatusDaemon {
    /// Starts the simulator and a daemon with the example jobs, and an admin token when
    /// `with_token`; returns once the daemon is ready.
    pub async fn start(with_token: bool) -> StatusDaemon {
        let mut config = SimConfig::default();
        config.timing.activity_per_minute = 0.0;
        config.timing.export_pending_secs = 1;
        config.timing.export_running_secs = 2;
        // As in the demo: the sync's first pass fits in one minute of the token's quota.
        config.world.tasks_per_project = 12;
        let sim = SimServer::start(config).await.unwrap();
        let daemon = Daemon::new(&sim, DaemonOptions::default());
        if with_token {
            let path = daemon.path("admin.token");
            std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
            let config = std::fs::read_to_string(daemon.config()).unwrap();
            let listen = format!("listen = \"127.0.0.1:{}\"\n", daemon.admin_port);
            let config = config.replacen(
                &listen,
                &format!("{listen}token_file = \"{}\"\n", path.display()),
                1,
            );
            std::fs::write(daemon.config(), config).unwrap();
        }
        daemon.add_credential(&sim, "service-account", "paid");
        daemon.add_credential(&sim, "pat-paid", "paid");
        daemon.add_credential(&sim, "pat-free", "free");
        asana_worker::cli::demo::write_example_jobs(
            &sim,
            &daemon.jobs_dir(),
            &daemon.path("audit-log"),
            &daemon.path("exports"),
        )
        .unwrap();
        let mut child = daemon.start("daemon");
        daemon.wait_ready(&mut child).await;
        let base = format!("http://127.0.0.1:{}", daemon.admin_port);
        StatusDaemon {
            sim,
            daemon,
            child,
            base,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            with_token,
        }
    }

    /// `GET path`: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// `GET path` as JSON; panics unless 200.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `POST path` with the admin token as a bearer header: status and JSON answer.
    pub async fn post_bearer(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Runs `job` now through the page's bearer API; the run's id.
    pub async fn run_now(&self, job: &str) -> String {
        let (status, answer) = self
            .post_bearer(&format!("/status/jobs/{job}/run"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 202, "{answer}");
        answer["run"]["id"].as_str().unwrap().to_string()
    }

    /// Waits (at most 60 s) until run `id` has finished; the run as `/api/runs/{id}` shows it.
    pub async fn wait_finished(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.json(&format!("/api/runs/{id}")).await;
            if !matches!(
                run["state"].as_str(),
                Some("queued" | "running" | "retrying")
            ) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} did not finish: {run}\n{}",
                self.daemon.log("daemon")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs every example job once, then revokes pat-paid in the simulator and checks it
    /// again, as `demo` does; the expected last outcome of each job.
    pub async fn run_examples(&self) -> Vec<(&'static str, &'static str)> {
        let mut ids = Vec::new();
        for job in EXAMPLE_JOBS {
            ids.push(self.run_now(job).await);
        }
        for (job, id) in EXAMPLE_JOBS.iter().zip(&ids) {
            let run = self.wait_finished(id).await;
            assert_eq!(run["state"], "completed", "{job}: {run}");
        }
        reqwest::Client::new()
            .post(format!("{}/_sim/revoke", self.sim.origin()))
            .json(&serde_json::json!({"name": "pat-paid"}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        let id = self.run_now("check-pat-paid").await;
        let run = self.wait_finished(&id).await;
        assert_eq!(run["state"], "needs_reauth", "{run}");
        vec![
            ("audit-log", "completed"),
            ("check-pat-free", "completed"),
            ("check-pat-paid", "needs_reauth"),
            ("check-service-account", "completed"),
            ("org-export", "completed"),
            ("sync", "completed"),
        ]
    }

    /// Every secret the daemon holds: the simulator's tokens and the admin token.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = ["service-account", "pat-paid", "pat-free"]
            .iter()
            .map(|name| self.sim.token(name).unwrap())
            .collect();
        secrets.push(ADMIN_TOKEN.to_string());
        secrets
    }

    /// Panics if `text` (a page, from `what`) holds any secret.
    pub fn assert_no_secret(&self, what: &str, text: &str) {
        for secret in self.secrets() {
            assert!(
                !text.contains(&secret),
                "{what} shows a secret ({}…)",
                &secret[..6]
            );
        }
    }

    /// Stops the daemon (SIGTERM) and the simulator.
    pub async fn stop(mut self) {
        super::daemon::terminate(&mut self.child);
        self.sim.shutdown().await;
    }
}

pub const SCRIPT_NAME: &str = "<script>alert('job')</script>";
pub const SCRIPT_ERROR: &str = "task <img src=x onerror=alert(1)> & \"quotes\" failed";

/// Records a dead run of a job named with markup (a replica with other job files could have
/// written it), its error and progress holding markup too; returns its id.
pub async fn dead_run_with_markup(setup: &StatusDaemon) -> String {
    dead_run(setup, SCRIPT_NAME, SCRIPT_ERROR).await
}

/// Records a dead run of `job` with `error` (its progress names the job), written by this test
/// rather than a worker; returns its id.
pub async fn dead_run(setup: &StatusDaemon, job: &str, error: &str) -> String {
    let store = setup.daemon.store().await;
    let now = chrono::Utc::now();
    // Due tomorrow, so the daemon's workers leave it to this test's claim.
    let later = now + chrono::Duration::days(1);
    let run = match store
        .enqueue(
            NewRun {
                job_name: job.into(),
                // A kind no worker claims, so the run is this test's to claim.
                kind: "test_only".into(),
                trigger: Trigger::Manual,
                fire_time: None,
                unique_key: format!("dead-{}", uuid::Uuid::new_v4()),
                priority: 100,
                run_after: later,
                max_attempts: 1,
                retry_initial: std::time::Duration::from_secs(10),
                retry_max: std::time::Duration::from_secs(60),
                state: RunState::Queued,
                note: None,
            },
            now,
        )
        .await
        .unwrap()
    {
        Enqueued::Inserted(run) => run,
        Enqueued::Duplicate => panic!("duplicate"),
    };
    let claimed = store
        .claim(
            "test",
            later + chrono::Duration::days(1),
            std::time::Duration::from_secs(60),
            ClaimFilter {
                kinds: Some(&["test_only".to_string()]),
                ..ClaimFilter::default()
            },
        )
        .await
        .unwrap()
        .expect("the test claims its own run");
    assert_eq!(claimed.id, run.id);
    assert!(
        store
            .set_progress(run.id, "test", json!({"task": job}))
            .await
            .unwrap()
    );
    assert!(
        store
            .finish(
                run.id,
                "test",
                Transition::Dead {
                    error: error.into()
                },
                now
            )
            .await
            .unwrap()
    );
    run.id.to_string()
}
