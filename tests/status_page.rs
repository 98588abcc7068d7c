//! The status page and its JSON API on a running daemon (the real binary, the simulator on
//! loopback): each job with its last outcome, the token's requests, filters that are checked,
//! bad input answered with a 4xx and a reason, HTML escaped, no secret on any page.

use std::time::Duration;

use asana_worker::sim::SimServer;
use reqwest::StatusCode;
use serde_json::Value;

mod support;
use support::daemon::{Daemon, DaemonOptions, terminate};

/// A string that would run as script if the page did not escape it.
const SCRIPT: &str = "<script>alert(1)</script>";

struct Setup {
    /// Keeps the daemon's directory (config, token, database) alive.
    _daemon: Daemon,
    sim: SimServer,
    base: String,
    http: reqwest::Client,
}

impl Setup {
    /// A daemon with a credential check that succeeds (`check`), one whose expected owner
    /// (holding [`SCRIPT`]) makes it fail with that text in its error (`evil`), an audit-log
    /// pull into a file sink (`audit`) and an organization export (`org`), each run once.
    async fn start() -> (Setup, std::process::Child) {
        let mut config = support::sim::quiet_config();
        // Exports finish in about a second of real time.
        config.time_scale = 20.0;
        // The audit events lie within the job's two days.
        config.world.audit_backfill_days = 1;
        let sim = SimServer::start(config).await.unwrap();
        let daemon = Daemon::new(
            &sim,
            DaemonOptions {
                asana: "time_scale = 20.0".into(),
                ..DaemonOptions::default()
            },
        );
        let workspace = sim.state().world().workspace.gid.clone();
        for dir in ["audit-out", "exports"] {
            std::fs::create_dir(daemon.path(dir)).unwrap();
        }
        daemon.write_check_job("check", "");
        daemon.write_job(
            "audit",
            &format!(
                "name = \"audit\"\nkind = \"audit_log\"\nevery = \"1h\"\ncredential = \"sa\"\n[settings]\nworkspace = \"{workspace}\"\nstart = \"2d\"\n[settings.sink]\ntype = \"file\"\ndir = \"{}\"\n",
                daemon.path("audit-out").display()
            ),
        );
        daemon.write_job(
            "org",
            &format!(
                "name = \"org\"\nkind = \"org_export\"\nevery = \"24h\"\ncredential = \"sa\"\n[settings]\norganization = \"{workspace}\"\noutput_dir = \"{}\"\npoll_interval = \"1s\"\npoll_max_interval = \"2s\"\n",
                daemon.path("exports").display()
            ),
        );
        daemon.write_check_job(
            "evil",
            &format!("max_attempts = 1\n[settings]\nexpected_owner = \"{SCRIPT}@example.com\"\n"),
        );
        let mut child = daemon.start("daemon");
        daemon.wait_ready(&mut child).await;
        for job in ["check", "evil", "audit", "org"] {
            // `--wait` exits 1 for the run that fails; only its ending matters here.
            daemon.cli(&["jobs", "run", job, "--wait", "--timeout-secs", "60"]);
        }
        let base = format!("http://127.0.0.1:{}", daemon.admin_port);
        let setup = Setup {
            _daemon: daemon,
            sim,
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        (setup, child)
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> (StatusCode, Value) {
        let (status, text) = self.get(path).await;
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")),
        )
    }

    fn token(&self) -> String {
        self.sim.token("service-account").unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_page_show_jobs_runs_and_tokens_escaped_and_without_secrets() {
    let (setup, mut child) = Setup::start().await;

    // /api/jobs: each job with its last outcome and recent runs.
    let (status, jobs) = setup.json("/api/jobs").await;
    assert_eq!(status, StatusCode::OK);
    let job = |name: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job {name}: {jobs}"))
            .clone()
    };
    assert_eq!(job("check")["last_state"], "completed", "{jobs}");
    assert_eq!(job("evil")["last_state"], "failed", "{jobs}");
    assert_eq!(job("check")["schedule"], "every 1h");
    assert_eq!(job("check")["credential"], "sa");
    assert!(job("check")["next_fire_at"].is_string(), "{jobs}");
    assert_eq!(job("evil")["recent"].as_array().unwrap().len(), 1);

    // /api/tokens: the token, run by this process, with its requests of the last hour.
    let (status, tokens) = setup.json("/api/tokens").await;
    assert_eq!(status, StatusCode::OK);
    let sa = &tokens.as_array().unwrap()[0];
    assert_eq!(sa["name"], "sa");
    assert_eq!(sa["runs_here"], true);
    let requests: u64 = sa["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert!(requests >= 2, "both checks called users/me: {tokens}");
    assert_eq!(sa["history"].as_array().unwrap().len(), 60);

    // /api/runs with filters.
    let (status, runs) = setup.json("/api/runs?job=evil&state=failed").await;
    assert_eq!(status, StatusCode::OK);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0]["last_error"].as_str().unwrap().contains(SCRIPT));
    let evil_run = runs[0]["id"].as_str().unwrap().to_string();
    let (_, none) = setup
        .json("/api/runs?job=check&from=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(none, serde_json::json!([]));
    let (status, one) = setup.json(&format!("/api/runs/{evil_run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["job"], "evil");

    // Bad input: a 4xx with the reason, as JSON from the API and as a page from the HTML.
    for (path, code, says) in [
        ("/api/runs?limit=0", 400, "limit"),
        ("/api/runs?limit=100000", 400, "limit"),
        ("/api/runs?state=bogus", 400, "not a run state"),
        ("/api/runs?from=yesterday", 400, "RFC 3339"),
        ("/api/runs/not-a-run", 400, "not a run id"),
        (
            "/api/runs/00000000-0000-4000-8000-000000000000",
            404,
            "no run",
        ),
    ] {
        let (status, body) = setup.json(path).await;
        assert_eq!(status.as_u16(), code, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    let long_job = "x".repeat(5000);
    let (status, _) = setup.json(&format!("/api/runs?job={long_job}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for (path, code) in [
        ("/status/runs/%3Cscript%3E", 400),
        ("/status/runs/00000000-0000-4000-8000-000000000000", 404),
        ("/status?state=bogus", 400),
    ] {
        let (status, page) = setup.get(path).await;
        assert_eq!(status.as_u16(), code, "{path}");
        assert!(page.contains("<h1>"), "{path}: an HTML page: {page}");
        assert!(!page.contains("<script>"), "{path}: escaped: {page}");
    }

    // /api/compliance: the audit log's newest event, lag and retention headroom; the export's
    // file and sha256, as the jobs' checkpoints hold them.
    let (status, compliance) = setup.json("/api/compliance").await;
    assert_eq!(status, StatusCode::OK);
    let audit = &compliance["audit_log"][0];
    assert_eq!(audit["job"], "audit", "{compliance}");
    assert_eq!(audit["started"], true, "{compliance}");
    assert!(audit["newest_event_at"].is_string(), "{compliance}");
    assert!(audit["lag_secs"].as_i64().unwrap() >= 0);
    let headroom = audit["retention_headroom_secs"].as_i64().unwrap();
    assert!(
        headroom > 80 * 86_400 && headroom <= 90 * 86_400,
        "started 2 days back: {compliance}"
    );
    assert!(audit["batches"].as_u64().unwrap() >= 1, "{compliance}");
    assert_eq!(audit["lost_windows"], 0);
    let export = &compliance["exports"][0];
    assert_eq!(export["job"], "org");
    assert_eq!(export["phase"], "done", "{compliance}");
    let sha256 = export["sha256"]
        .as_str()
        .expect("the installed file's sha256");
    assert_eq!(sha256.len(), 64);

    // The page: every job with its outcome, the token's chart, the runs; the error text with
    // its script escaped; no token anywhere.
    let (status, page) = setup.get("/status").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("data-job=\"check\""), "{page}");
    assert!(page.contains("data-last-state=\"completed\""), "{page}");
    assert!(page.contains("data-last-state=\"failed\""), "{page}");
    assert!(page.contains("class=\"token-chart\""), "{page}");
    assert!(page.contains("data-audit-job=\"audit\""), "{page}");
    assert!(page.contains(sha256), "the export's sha256 on the page");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;"), "{page}");
    assert!(!page.contains(SCRIPT), "unescaped script on the page");
    assert!(page.contains("<script src=\"/status/script.js\"></script>"));
    let (status, partial) = setup.get("/status?partial=1&job=evil").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!partial.contains("<html"), "only the content: {partial}");
    assert!(partial.contains("data-job=\"evil\""));
    let (status, run_page) = setup.get(&format!("/status/runs/{evil_run}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(run_page.contains("&lt;script&gt;"), "{run_page}");
    assert!(!run_page.contains(SCRIPT));
    let (status, script) = setup.get("/status/script.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(script.contains("setTimeout(refresh"));
    let token = setup.token();
    for path in [
        "/status",
        "/api/jobs",
        "/api/runs",
        "/api/tokens",
        "/api/compliance",
    ] {
        let (_, body) = setup.get(path).await;
        assert!(!body.contains(&token), "{path} shows the token");
    }
    terminate(&mut child);
}

/// Actions need the admin token: without one configured they are refused (403, the page says
/// how to enable them); with one, a request without it or with another gets 401 and changes
/// nothing, and one with it runs the job now or retries a failed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_admin_token_and_run_jobs() {
    let sim = SimServer::start(support::sim::quiet_config())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let token = "status-page-admin-token-0123456789";

    // No token configured: read-only.
    let read_only = Daemon::new(&sim, DaemonOptions::default());
    read_only.write_check_job("check", "");
    let mut child = read_only.start("read-only");
    read_only.wait_ready(&mut child).await;
    let base = format!("http://127.0.0.1:{}", read_only.admin_port);
    let response = client
        .post(format!("{base}/api/jobs/check/run"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.text().await.unwrap().contains("admin.token_file"));
    let page = client
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"read-only\""), "{page}");
    terminate(&mut child);

    // A token configured.
    let daemon = Daemon::new(
        &sim,
        DaemonOptions {
            admin: "token_file = \"admin.token\"".into(),
            ..DaemonOptions::default()
        },
    );
    std::fs::write(daemon.path("admin.token"), format!("{token}\n")).unwrap();
    // The config names the file relative to where the daemon runs: give the absolute path.
    let config = std::fs::read_to_string(daemon.config()).unwrap().replace(
        "token_file = \"admin.token\"",
        &format!("token_file = \"{}\"", daemon.path("admin.token").display()),
    );
    std::fs::write(daemon.config(), config).unwrap();
    daemon.write_check_job("check", "");
    daemon.write_check_job(
        "evil",
        "max_attempts = 1\n[settings]\nexpected_owner = \"nobody@example.com\"\n",
    );
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let base = format!("http://127.0.0.1:{}", daemon.admin_port);
    let store = daemon.store().await;
    let runs = |job: &'static str| {
        let store = store.clone();
        async move {
            store
                .list_runs(&asana_worker::store::RunFilter {
                    job_name: Some(job.into()),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    for auth in [None, Some("wrong-token-wrong-token")] {
        let mut request = client.post(format!("{base}/api/jobs/check/run"));
        if let Some(auth) = auth {
            request = request.bearer_auth(auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    assert!(
        runs("check").await.is_empty(),
        "a refused action changes nothing"
    );
    let response = client
        .post(format!("{base}/api/jobs/nope/run"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    // Run now: the run is enqueued and completes.
    let response = client
        .post(format!("{base}/api/jobs/check/run"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let wait_for = |job: &'static str, state: asana_worker::store::RunState, count: usize| {
        let runs = &runs;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let found = runs(job).await;
                if found.iter().filter(|r| r.state == state).count() >= count {
                    return found;
                }
                assert!(std::time::Instant::now() < deadline, "{found:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for("check", asana_worker::store::RunState::Completed, 1).await;

    // Retry: only a run that ended badly; it runs again as a new run.
    let response = client
        .post(format!("{base}/api/jobs/evil/run"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let failed = wait_for("evil", asana_worker::store::RunState::Failed, 1).await;
    let completed = runs("check").await;
    let response = client
        .post(format!("{base}/api/runs/{}/retry", completed[0].id))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::CONFLICT,
        "a completed run is not retried"
    );
    let response = client
        .post(format!("{base}/api/runs/{}/retry", failed[0].id))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_for("evil", asana_worker::store::RunState::Failed, 2).await;
    // The token never shows.
    for path in ["/status", "/api/jobs", "/api/runs", "/api/tokens"] {
        let body = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!body.contains(token), "{path} shows the admin token");
    }
    assert!(
        !daemon.log("daemon").contains(token),
        "the log shows the admin token"
    );
    terminate(&mut child);
}
