//! The status page over HTTP against a daemon process running the example jobs on the
//! simulator: its JSON endpoints and HTML agree with the store, actions need the admin token
//! (bearer or a session with its CSRF token) and change nothing without it, bad input gets a
//! clear 4xx, HTML is escaped, and no page shows a secret. The browser's view is
//! `status_browser`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use asana_worker::sim::SimServer;
use asana_worker::store::{RunFilter, RunState};
use reqwest::StatusCode;
use serde_json::Value;
use support::daemon::{Daemon, DaemonOptions, terminate};
use support::status::{
    ADMIN_TOKEN, EXAMPLE_JOBS, SCRIPT_NAME, StatusDaemon, dead_run, dead_run_with_markup,
};

async fn run_count(setup: &StatusDaemon) -> usize {
    setup
        .daemon
        .store()
        .await
        .list_runs(&RunFilter::default())
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_jobs_tokens_and_compliance_as_the_store_has_them() {
    let setup = StatusDaemon::start(true).await;
    let expected = setup.run_examples().await;

    // Jobs: each row's last outcome is its newest finished run's state.
    let jobs = setup.json("/api/jobs").await;
    let rows = jobs["jobs"].as_array().unwrap();
    let names: BTreeSet<&str> = rows.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, EXAMPLE_JOBS.into_iter().collect());
    let (status, page) = setup.get("/status").await;
    assert_eq!(status, 200);
    for (job, state) in &expected {
        let row = rows.iter().find(|j| j["name"] == *job).unwrap();
        assert_eq!(row["last"]["state"], *state, "{row}");
        assert!(
            row["last"]["age"].as_str().unwrap().ends_with("ago"),
            "{row}"
        );
        assert!(
            !row["spark"]["bars"].as_array().unwrap().is_empty(),
            "{row}"
        );
        let cell = format!("<tr class=\"job\" data-job=\"{job}\">");
        let at = page
            .find(&cell)
            .unwrap_or_else(|| panic!("no row for {job}"));
        let rest = &page[at..];
        let row_html = &rest[..rest.find("</tr>").unwrap()];
        assert!(
            row_html.contains(&format!("data-state=\"{state}\"")),
            "{job}: {row_html}"
        );
    }
    let check = rows.iter().find(|j| j["name"] == "check-pat-free").unwrap();
    assert_eq!(check["schedule"], "every day at 06:30");
    assert_eq!(check["timezone"], "America/New_York");
    assert!(
        check["next_fire_local"].as_str().unwrap().contains(" E"),
        "New York time: {check}"
    );
    let audit = rows.iter().find(|j| j["name"] == "audit-log").unwrap();
    assert_eq!(audit["schedule"], "every minute");

    // Tokens: the service account's requests are charted against its limit; the owner is the
    // credential check's; a revoked token says so.
    let tokens = setup.json("/api/tokens").await;
    let sa = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "service-account")
        .unwrap();
    assert!(sa["requests_total"].as_u64().unwrap() > 0, "{sa}");
    assert_eq!(sa["history"].as_array().unwrap().len(), 60, "{sa}");
    assert!(sa["chart"]["peak"].as_f64().unwrap() > 0.0, "{sa}");
    assert_eq!(sa["limit_per_minute"], 1500);
    assert!(sa["owner"]["gid"].is_string(), "{sa}");
    assert_eq!(sa["export_slots"]["of"], 5);
    assert_eq!(sa["rate_limited_429s"], 0);
    let free = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "pat-free")
        .unwrap();
    assert_eq!(free["limit_per_minute"], 150);
    let paid = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "pat-paid")
        .unwrap();
    assert_eq!(paid["state"], "revoked", "{paid}");

    // Compliance: the audit log's newest event and headroom, the export's file and sha256.
    let compliance = setup.json("/api/compliance").await;
    let audit = &compliance["audit_logs"][0];
    assert_eq!(audit["job"], "audit-log");
    assert!(audit["newest_event"].is_string(), "{audit}");
    assert!(audit["batches"].as_u64().unwrap() >= 1, "{audit}");
    assert!(
        audit["retention_headroom_secs"].as_i64().unwrap() > 80 * 86_400,
        "7 days backfilled of 90: {audit}"
    );
    // The file sink's manifest chain is verified within a few seconds of a write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let verification = loop {
        let compliance = setup.json("/api/compliance").await;
        let verification = compliance["audit_logs"][0]["verification"].clone();
        if verification.is_object() {
            break verification;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not verified: {compliance}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(verification["intact"], true, "{verification}");
    assert!(
        verification["records"].as_u64().unwrap() > 0,
        "{verification}"
    );
    let export = &compliance["exports"][0];
    assert_eq!(export["job"], "org-export");
    let sha = export["last_file"]["sha256"].as_str().unwrap();
    assert_eq!(sha.len(), 64, "{export}");
    assert!(page.contains(sha), "the page shows the export's sha256");

    // Runs: filtered by job and state, newest first; each run's page has its timings.
    let runs = setup
        .json("/api/runs?job=check-pat-paid&state=completed,needs_reauth")
        .await;
    let states: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    // Newest first (a scheduled fire at minute 7 may add another needs_reauth).
    assert_eq!(states.first(), Some(&"needs_reauth"), "{states:?}");
    assert_eq!(states.last(), Some(&"completed"), "{states:?}");
    let reauth = &runs["runs"][0];
    assert!(
        reauth["hint"]
            .as_str()
            .unwrap()
            .contains("creds add pat-paid"),
        "{reauth}"
    );
    let (status, run_page) = setup
        .get(&format!("/status/runs/{}", reauth["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200);
    assert!(run_page.contains("id=\"run-hint\""), "{run_page}");
    // The run's own log lines are kept by the process that ran it.
    let audit_run = setup
        .json("/api/runs?job=audit-log&state=completed&limit=1")
        .await;
    let audit_run = setup
        .json(&format!(
            "/api/runs/{}",
            audit_run["runs"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(audit_run["log_kept"], true);
    assert!(
        !audit_run["log"].as_array().unwrap().is_empty(),
        "{audit_run}"
    );
    let since = setup.json("/api/runs?since=1h&limit=500").await;
    // The six runs started here, and any scheduled fire since (audit-log fires every minute).
    assert!(since["runs"].as_array().unwrap().len() >= 6, "{since}");
    let old = setup
        .json(&format!(
            "/api/runs?until={}",
            (chrono::Utc::now() - chrono::Duration::hours(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ))
        .await;
    assert!(old["runs"].as_array().unwrap().is_empty(), "{old}");
    let none = setup.json("/api/runs?until=2020-01-01").await;
    assert!(none["runs"].as_array().unwrap().is_empty());

    // No page shows a token.
    for path in [
        "/status",
        "/status/runs",
        "/api/jobs",
        "/api/tokens",
        "/api/compliance",
        "/api/runs?limit=500",
        "/status/login",
    ] {
        let (_, body) = setup.get(path).await;
        setup.assert_no_secret(path, &body);
    }
    for run in since["runs"].as_array().unwrap() {
        let path = format!("/status/runs/{}", run["id"].as_str().unwrap());
        let (_, body) = setup.get(&path).await;
        setup.assert_no_secret(&path, &body);
    }
    setup.assert_no_secret("the daemon's log", &setup.daemon.log("daemon"));
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_need_the_admin_token_and_change_nothing_without_it() {
    let setup = StatusDaemon::start(true).await;
    let before = run_count(&setup).await;
    // No token, a wrong one: 401, nothing enqueued, paused or retried.
    for path in [
        "/status/jobs/check-service-account/run",
        "/status/jobs/check-service-account/pause",
        "/status/jobs/check-service-account/resume",
    ] {
        let response = setup
            .http
            .post(format!("{}{path}", setup.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(response.headers().contains_key("www-authenticate"));
        let body = response.text().await.unwrap();
        assert!(body.contains("needs the admin token"), "{body}");
        let (status, answer) = setup.post_bearer(path, "not-the-token").await;
        assert_eq!(status, 401, "{path}: {answer}");
    }
    let store = setup.daemon.store().await;
    assert_eq!(run_count(&setup).await, before);
    assert!(store.job_controls().await.unwrap().is_empty());

    // A dead run: retried only with the token, as a new run of its job (the dead one stays).
    let dead = dead_run(
        &setup,
        "check-service-account",
        "Asana answered 500 five times",
    )
    .await;
    let retry = format!("/status/runs/{dead}/retry");
    let response = setup
        .http
        .post(format!("{}{retry}", setup.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let before = run_count(&setup).await;
    let id = uuid::Uuid::parse_str(&dead).unwrap();
    let (status, answer) = setup.post_bearer(&retry, ADMIN_TOKEN).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["run"]["job_name"], "check-service-account");
    assert_eq!(answer["run"]["trigger"], "manual");
    assert_ne!(answer["run"]["id"], dead.as_str());
    assert_eq!(run_count(&setup).await, before + 1);
    assert_eq!(
        store.get_run(id).await.unwrap().unwrap().state,
        RunState::Dead
    );
    let retried = setup
        .wait_finished(answer["run"]["id"].as_str().unwrap())
        .await;
    assert_eq!(retried["state"], "completed", "{retried}");
    // A completed run is not retried; the API path does the same as the page's.
    let (status, answer) = setup
        .post_bearer(
            &format!("/api/runs/{}/retry", retried["id"].as_str().unwrap()),
            ADMIN_TOKEN,
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("only a dead, failed, needs_reauth or cancelled run")
    );

    // Pause and resume with the token; the pause is in the store for every replica.
    let (status, _) = setup
        .post_bearer("/status/jobs/check-service-account/pause", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    let controls = store.job_controls().await.unwrap();
    assert_eq!(controls.len(), 1);
    assert_eq!(controls[0].paused_by, "admin token (bearer)");
    let jobs = setup.json("/api/jobs").await;
    let row = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "check-service-account")
        .unwrap()
        .clone();
    assert_eq!(row["paused"]["by"], "admin token (bearer)");
    let (status, _) = setup
        .post_bearer("/status/jobs/check-service-account/resume", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert!(store.job_controls().await.unwrap().is_empty());
    let (status, answer) = setup
        .post_bearer("/status/jobs/no-such-job/run", ADMIN_TOKEN)
        .await;
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("known jobs"));

    // A browser: the login form, then forms carrying the session's CSRF token.
    let (status, login) = setup.get("/status/login").await;
    assert_eq!(status, 200);
    let response = setup
        .http
        .get(format!("{}/status/login", setup.base))
        .send()
        .await
        .unwrap();
    let login_cookie = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("aw_login="))
        .unwrap();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Strict"));
    let login_csrf = login_cookie["aw_login=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let body = response.text().await.unwrap();
    assert!(body.contains(&login_csrf));
    assert!(login.contains("type=\"password\""));
    let post_login = |token: &'static str, csrf: String, cookie: String| {
        let http = setup.http.clone();
        let url = format!("{}/status/login", setup.base);
        async move {
            http.post(url)
                .header("cookie", cookie)
                .form(&[("token", token), ("csrf", csrf.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let wrong = post_login(
        "guess",
        login_csrf.clone(),
        format!("aw_login={login_csrf}"),
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let forged = post_login(
        ADMIN_TOKEN,
        "forged".into(),
        format!("aw_login={login_csrf}"),
    )
    .await;
    assert_eq!(
        forged.status(),
        403,
        "the login form's CSRF token is checked"
    );
    let ok = post_login(
        ADMIN_TOKEN,
        login_csrf.clone(),
        format!("aw_login={login_csrf}"),
    )
    .await;
    assert_eq!(ok.status(), 303);
    let session = ok
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("aw_session="))
        .unwrap();
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict"),
        "{session}"
    );
    let session_id = session["aw_session=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let cookie = format!("aw_session={session_id}");
    let page = setup
        .http
        .get(format!("{}/status", setup.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let csrf = &page[page.find(marker).unwrap() + marker.len()..];
    let csrf = csrf[..csrf.find('"').unwrap()].to_string();
    assert!(page.contains("Run now"));
    let before = run_count(&setup).await;
    // The cookie alone does not act: a form from another site has no CSRF token.
    let no_csrf = setup
        .http
        .post(format!(
            "{}/status/jobs/check-service-account/run",
            setup.base
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(no_csrf.status(), 403);
    assert_eq!(run_count(&setup).await, before);
    let run = setup
        .http
        .post(format!(
            "{}/status/jobs/check-service-account/run",
            setup.base
        ))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(run.status(), 303);
    let location = run.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/status/runs/"), "{location}");
    let finished = setup
        .wait_finished(&location["/status/runs/".len()..])
        .await;
    assert_eq!(finished["state"], "completed", "{finished}");
    assert_eq!(finished["trigger"], "manual");
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_4xx_and_markup_is_shown_as_text() {
    let setup = StatusDaemon::start(false).await;
    let cases: [(&str, u16, &str); 9] = [
        ("/status/runs/not-a-run", 400, "is not a run id"),
        (
            "/status/runs/6f1e4c1a-7b1f-4c55-9d0a-0f6c2d8e9b11",
            404,
            "there is no run",
        ),
        ("/status/runs?state=exploded", 400, "is not a run state"),
        ("/status/runs?since=last-tuesday", 400, "is not a time"),
        ("/status/runs?colour=red", 400, "unknown filter"),
        ("/status/runs?limit=0", 400, "from 1 to 500"),
        ("/status/runs?since=1h&until=2h", 400, "must be before"),
        ("/api/runs?limit=x", 400, "from 1 to 500"),
        ("/no-such-page", 404, "nothing is served"),
    ];
    for (path, status, says) in cases {
        let (got, body) = setup.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
        if path.starts_with("/api/") {
            let answer: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(answer["status"], status);
        } else {
            assert!(
                body.contains("<h2 id=\"error-title\">"),
                "{path}: an HTML page"
            );
        }
    }
    let long = format!("/status/runs?job={}", "a".repeat(3000));
    let (status, body) = setup.get(&long).await;
    assert_eq!(status, 414, "{body}");
    assert!(body.contains("at most 1024"), "{body}");

    // Markup in a job name, an error and progress is text.
    let id = dead_run_with_markup(&setup).await;
    for path in ["/status/runs".to_string(), format!("/status/runs/{id}")] {
        let (status, body) = setup.get(&path).await;
        assert_eq!(status, 200);
        assert!(
            !body.contains("<script>alert"),
            "{path} lets markup through"
        );
        assert!(!body.contains("<img src=x"), "{path} lets markup through");
        assert!(body.contains("&lt;script&gt;alert("), "{path}: {body}");
    }
    let (_, body) = setup.get(&format!("/status/runs/{id}")).await;
    assert!(
        body.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;quotes&quot;"),
        "{body}"
    );
    let api = setup.json(&format!("/api/runs/{id}")).await;
    assert_eq!(api["job_name"], SCRIPT_NAME);

    // Read-only without a token: the page says how to enable actions, which are refused.
    let (_, page) = setup.get("/status").await;
    assert!(page.contains("set <code>admin.token_file</code>"), "{page}");
    assert!(!page.contains("Run now"));
    let (status, answer) = setup
        .post_bearer("/status/jobs/check-service-account/run", "anything")
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("admin.token_file")
    );
    let (_, login) = setup.get("/status/login").await;
    assert!(login.contains("Actions are disabled"));
    // The probes are still there beside the page.
    assert_eq!(setup.get("/healthz").await.0, 200);
    assert_eq!(setup.get("/metrics").await.0, 200);
    setup.stop().await;
}

#[tokio::test]
async fn an_unreadable_admin_token_stops_the_start() {
    let sim = asana_worker::sim::SimServer::start(Default::default())
        .await
        .unwrap();
    let daemon = support::daemon::Daemon::new(
        &sim,
        support::daemon::DaemonOptions {
            admin: "token_file = \"/nonexistent/admin.token\"".into(),
            ..Default::default()
        },
    );
    let mut child = daemon.start("daemon");
    let status = child.wait().unwrap();
    assert!(!status.success());
    let log = daemon.log("daemon");
    assert!(
        log.contains("admin.token_file") && log.contains("cannot be read"),
        "{log}"
    );
    sim.shutdown().await;
}

/// POSTs an action, with `token` as the bearer when given: its status and body.
async fn post_action(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut request = client.post(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

/// The body of a GET.
async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
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
    let (status, body) =
        post_action(&client, &format!("{base}/api/jobs/check/run"), Some(token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("admin.token_file"));
    let page = get_text(&client, &format!("{base}/status")).await;
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
        let (status, _) = post_action(&client, &format!("{base}/api/jobs/check/run"), auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    assert!(
        runs("check").await.is_empty(),
        "a refused action changes nothing"
    );
    let (status, _) = post_action(&client, &format!("{base}/api/jobs/nope/run"), Some(token)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Run now: the run is enqueued and completes.
    let (status, _) =
        post_action(&client, &format!("{base}/api/jobs/check/run"), Some(token)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
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
    let (status, _) = post_action(&client, &format!("{base}/api/jobs/evil/run"), Some(token)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let failed = wait_for("evil", asana_worker::store::RunState::Failed, 1).await;
    let completed = runs("check").await;
    let (status, _) = post_action(
        &client,
        &format!("{base}/api/runs/{}/retry", completed[0].id),
        Some(token),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a completed run is not retried"
    );
    let (status, _) = post_action(
        &client,
        &format!("{base}/api/runs/{}/retry", failed[0].id),
        Some(token),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_for("evil", asana_worker::store::RunState::Failed, 2).await;
    // The token never shows.
    for path in ["/status", "/api/jobs", "/api/runs", "/api/tokens"] {
        let body = get_text(&client, &format!("{base}{path}")).await;
        assert!(!body.contains(token), "{path} shows the admin token");
    }
    assert!(
        !daemon.log("daemon").contains(token),
        "the log shows the admin token"
    );
    terminate(&mut child);
}
