//! The `digest` kind end to end: the real daemon reads a seeded simulator world (tasks with
//! known due dates), and delivers to a file, a webhook receiver, an SMTP server (aiosmtpd,
//! STARTTLS) and Asana status updates, which are read back from the simulator. Then: the
//! once-per-period guarantee across a crash after a send and across a retry, the failures a
//! user must see (a rejected recipient, a webhook's 4xx) and the retry an unreachable server
//! gets, and a digest read from a sync job's tables without a single API request.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{Days, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use support::daemon::{Daemon, DaemonOptions};
use support::digest::{Answer, SmtpServer, Webhook, wait_until};
use support::sim::{Sim, quiet_config};

/// A simulator with two projects and no tasks but the ones a test seeds.
async fn empty_world() -> Sim {
    let mut config = quiet_config();
    config.world.teams = 1;
    config.world.projects = 2;
    config.world.tasks_per_project = 0;
    Sim::start(config).await
}

/// The seeded tasks' gids, by what they are.
struct Seeded {
    workspace: String,
    projects: Vec<String>,
    overdue: String,
    due_soon: String,
    far: String,
    unassigned: String,
    done: String,
}

fn gid(value: &Value) -> String {
    value["gid"].as_str().expect("a gid").to_string()
}

/// Today in Berlin, the jobs' zone.
fn berlin_today() -> chrono::NaiveDate {
    Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive()
}

async fn create_task(sim: &Sim, fields: Value) -> String {
    let token = sim.token_of("service-account");
    let (status, body, _) = sim
        .call_as(
            &token,
            Method::POST,
            "/tasks",
            Some(json!({ "data": fields })),
        )
        .await;
    assert!(status.is_success(), "POST /tasks: {body}");
    gid(&body["data"])
}

/// Seeds, in the first project: a task two days overdue, one due in three days, one due in
/// sixty days, an unassigned one due tomorrow, and one completed now; in the second project a
/// task due in three days.
async fn seed(sim: &Sim) -> Seeded {
    let workspace = sim.workspace().await;
    let (_, projects) = sim
        .get_as(
            "service-account",
            &format!("/workspaces/{workspace}/projects?archived=false"),
        )
        .await;
    let projects: Vec<String> = projects["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(gid)
        .collect();
    let (_, me) = sim.get_as("service-account", "/users/me").await;
    let me = gid(&me["data"]);
    let today = berlin_today();
    let day = |offset: i64| {
        if offset >= 0 {
            today.checked_add_days(Days::new(offset as u64)).unwrap()
        } else {
            today.checked_sub_days(Days::new((-offset) as u64)).unwrap()
        }
        .format("%Y-%m-%d")
        .to_string()
    };
    let task = |name: &str, project: &str, due: Option<i64>, assignee: Option<&str>| {
        json!({
            "name": name,
            "projects": [project],
            "due_on": due.map(day),
            "assignee": assignee,
        })
    };
    let p0 = projects[0].clone();
    let overdue = create_task(sim, task("Renew the certificate", &p0, Some(-2), Some(&me))).await;
    let due_soon = create_task(sim, task("Draft the plan", &p0, Some(3), Some(&me))).await;
    let far = create_task(sim, task("Plan next year", &p0, Some(60), Some(&me))).await;
    let unassigned = create_task(sim, task("Review the rota", &p0, Some(1), None)).await;
    let mut finished = task("Migrate the database", &p0, Some(-1), Some(&me));
    finished["completed"] = json!(true);
    let done = create_task(sim, finished).await;
    create_task(
        sim,
        task("Order hardware", &projects[1], Some(3), Some(&me)),
    )
    .await;
    Seeded {
        workspace,
        projects,
        overdue,
        due_soon,
        far,
        unassigned,
        done,
    }
}

/// A seeded world, a daemon for it, and the directory file deliveries write to.
struct Setup {
    sim: Sim,
    seeded: Seeded,
    daemon: Daemon,
    files: std::path::PathBuf,
}

async fn setup() -> Setup {
    let sim = empty_world().await;
    let seeded = seed(&sim).await;
    let daemon = Daemon::new(&sim.server, DaemonOptions::default());
    let files = daemon.path("digests");
    std::fs::create_dir_all(&files).unwrap();
    Setup {
        sim,
        seeded,
        daemon,
        files,
    }
}

/// Writes the job `digest` with `settings` (the `[settings]` body, deliveries included).
fn write_digest_job(daemon: &Daemon, settings: &str) {
    daemon.write_job(
        "digest",
        &format!(
            "name = \"digest\"\nkind = \"digest\"\nschedule = \"0 8 1 1 *\"\ncredential = \"sa\"\ntimezone = \"Europe/Berlin\"\nmax_attempts = 5\nretry_initial = \"1s\"\nretry_max = \"2s\"\n\n[settings]\n{settings}"
        ),
    );
}

/// Runs `digest` to its end: whether it completed, and the CLI's output.
fn run(daemon: &Daemon) -> (bool, String) {
    run_job(daemon, "digest")
}

/// Runs the job `name` to its end: whether it completed, and the CLI's output.
fn run_job(daemon: &Daemon, name: &str) -> (bool, String) {
    let output = daemon.cli(&["jobs", "run", name, "--wait", "--timeout-secs", "120"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A digest written as JSON (not the metadata beside it).
fn is_digest_json(path: &std::path::Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name.ends_with(".json") && !name.ends_with(".manifest.json")
}

fn digest_runs() -> asana_worker::store::RunFilter {
    asana_worker::store::RunFilter {
        job_name: Some("digest".into()),
        limit: 20,
        ..Default::default()
    }
}

fn progress(text: &str) -> Value {
    support::sync::SyncSetup::last_progress(text).unwrap_or(Value::Null)
}

/// The gids listed in each section of a digest's JSON, over every group.
fn sections(model: &Value) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut found: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for group in model["groups"].as_array().unwrap() {
        for section in group["sections"].as_array().unwrap() {
            found
                .entry(section["key"].as_str().unwrap().to_string())
                .or_default()
                .extend(section["tasks"].as_array().unwrap().iter().map(gid));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_from_the_api_reaches_a_file_a_webhook_an_inbox_and_each_project() {
    let Some(smtp) = SmtpServer::start("digest api", true, None).await else {
        return;
    };
    let Setup {
        sim,
        seeded,
        daemon,
        files,
    } = setup().await;
    let hook = Webhook::start().await;
    write_digest_job(
        &daemon,
        &format!(
            r#"workspace = "{ws}"
projects = ["{p0}", "{p1}"]
title = "Team digest"
sections = ["overdue", "due_soon", "unassigned", "completed", "created"]

[[settings.deliver]]
type = "file"
dir = "{files}"
format = "markdown"

[[settings.deliver]]
type = "webhook"
url = "{hook}"
format = "json"

[[settings.deliver]]
type = "email"
host = "localhost"
port = {port}
tls = "starttls"
ca_file = "{ca}"
from = "Digest <digest@example.com>"
to = ["team@example.com", "lead@example.com"]

[[settings.deliver]]
type = "asana_status"
status_type = "at_risk"
"#,
            ws = seeded.workspace,
            p0 = seeded.projects[0],
            p1 = seeded.projects[1],
            files = files.display(),
            hook = hook.url,
            port = smtp.port,
            ca = smtp.ca_file().display(),
        ),
    );
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;

    let (ok, text) = run(&daemon);
    assert!(ok, "the digest failed:\n{text}\n{}", daemon.log("daemon"));
    let figures = progress(&text);
    assert_eq!(figures["source"], "api", "{text}");
    assert_eq!(
        figures["delivered"].as_array().unwrap().len(),
        5,
        "file, webhook, email, two status updates: {text}"
    );

    // The webhook got the digest's data: the right tasks in the right sections.
    let posts = hook.received();
    assert_eq!(posts.len(), 1);
    let model = &posts[0].body;
    let placed = sections(model);
    assert_eq!(placed["overdue"], BTreeSet::from([seeded.overdue.clone()]));
    assert!(placed["due_soon"].contains(&seeded.due_soon));
    assert!(placed["due_soon"].contains(&seeded.unassigned));
    assert!(
        !placed["overdue"].contains(&seeded.far) && !placed["due_soon"].contains(&seeded.far),
        "due in 60 days is neither overdue nor due soon"
    );
    assert_eq!(
        placed["unassigned"],
        BTreeSet::from([seeded.unassigned.clone()])
    );
    assert_eq!(placed["completed"], BTreeSet::from([seeded.done.clone()]));
    assert_eq!(
        placed["created"].len(),
        6,
        "every seeded task was created since, the completed one too: {placed:?}"
    );
    assert_eq!(model["timezone"], "Europe/Berlin");
    assert!(posts[0].headers.contains_key("idempotency-key"));

    // The file: Markdown, every task linked to Asana.
    let written: Vec<_> = std::fs::read_dir(files.join("digest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert_eq!(written.len(), 1, "{written:?}");
    let markdown = std::fs::read_to_string(&written[0]).unwrap();
    assert!(markdown.starts_with("# Team digest: "), "{markdown}");
    assert!(markdown.contains("### Overdue (1)"), "{markdown}");
    assert!(
        markdown.contains(&format!(
            "[Renew the certificate](https://app.asana.com/0/{}/{})",
            seeded.projects[0], seeded.overdue
        )) || markdown.contains("[Renew the certificate](https://app.asana.com/"),
        "{markdown}"
    );

    // The email: one message to both addresses, over STARTTLS, HTML with a plain-text part.
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message["tls"], true);
    assert_eq!(message["mail_from"], "digest@example.com");
    let to: BTreeSet<&str> = message["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(to, BTreeSet::from(["team@example.com", "lead@example.com"]));
    let data = message["data"].as_str().unwrap();
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(
        data.contains("text/plain") && data.contains("text/html"),
        "{data}"
    );
    assert!(data.contains("Subject: Team digest: "), "{data}");
    assert!(data.contains("Message-ID: <digest.digest."), "{data}");

    // Each project received its own part as a status update, read back from the simulator.
    for (project, expected) in [
        (&seeded.projects[0], "Renew the certificate"),
        (&seeded.projects[1], "Order hardware"),
    ] {
        let (_, updates) = sim
            .get_as(
                "service-account",
                &format!("/status_updates?parent={project}&opt_fields=text,title,status_type"),
            )
            .await;
        // The world's own status updates aside: the digest's carry its marker.
        let updates: Vec<Value> = updates["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| {
                u["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains("asana-worker job digest")
            })
            .cloned()
            .collect();
        assert_eq!(updates.len(), 1, "{updates:?}");
        assert_eq!(updates[0]["status_type"], "at_risk");
        let text = updates[0]["text"].as_str().unwrap();
        assert!(text.contains(expected), "{text}");
        assert!(
            text.contains("asana-worker job digest, period manual-"),
            "{text}"
        );
        if expected == "Order hardware" {
            assert!(
                !text.contains("Renew the certificate"),
                "only its own project: {text}"
            );
        }
    }

    // The next digest reaches back to this one: only what was completed since.
    let token = sim.token_of("service-account");
    let (status, body, _) = sim
        .call_as(
            &token,
            Method::PUT,
            &format!("/tasks/{}", seeded.due_soon),
            Some(json!({"data": {"completed": true}})),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let (ok, text) = run(&daemon);
    assert!(ok, "{text}");
    let posts = hook.received();
    assert_eq!(posts.len(), 2);
    let placed = sections(&posts[1].body);
    assert_eq!(
        placed["completed"],
        BTreeSet::from([seeded.due_soon.clone()]),
        "only the task completed since the previous digest"
    );
    assert!(
        !placed.contains_key("created"),
        "nothing was created since: {placed:?}"
    );
    assert_eq!(smtp.messages().len(), 2);
    support::daemon::terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_a_send_and_a_retry_send_no_second_copy() {
    let Some(smtp) = SmtpServer::start("digest crash", false, None).await else {
        return;
    };
    let Setup {
        sim: _sim,
        seeded,
        daemon,
        files,
    } = setup().await;
    let hook = Webhook::start().await;
    write_digest_job(
        &daemon,
        &format!(
            r#"workspace = "{ws}"
projects = ["{p0}"]

[[settings.deliver]]
type = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "digest@example.com"
to = ["team@example.com"]

[[settings.deliver]]
type = "webhook"
url = "{hook}"
format = "slack"
max_attempts = 1
timeout = "5m"

[[settings.deliver]]
type = "file"
dir = "{files}"
"#,
            ws = seeded.workspace,
            p0 = seeded.projects[0],
            port = smtp.port,
            hook = hook.url,
            files = files.display(),
        ),
    );

    // The webhook withholds its answer; the daemon is killed while it waits, after the email
    // went out and the webhook's body arrived.
    hook.answer(Answer::Hang);
    let mut child = daemon.start("first");
    daemon.wait_ready(&mut child).await;
    let enqueued = daemon.cli(&["jobs", "run", "digest"]);
    assert!(enqueued.status.success());
    wait_until(60, "the webhook's POST", || !hook.received().is_empty()).await;
    assert_eq!(smtp.messages().len(), 1, "the email was sent first");
    support::daemon::kill(&mut child);

    // Another daemon rescues the run: the email and the webhook are not sent again; the file,
    // which is idempotent, is delivered.
    hook.answer(Answer::Ok);
    let mut child = daemon.start("second");
    daemon.wait_ready(&mut child).await;
    let store = daemon.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let run = loop {
        let runs = store.list_runs(&digest_runs()).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| r.state.is_terminal()) {
            break run;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run was not finished after the crash:\n{}",
            daemon.log("second")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        run.state,
        asana_worker::store::RunState::Completed,
        "{run:?}\n{}",
        daemon.log("second")
    );
    let figures = run.progress.clone();
    assert_eq!(figures["unconfirmed"], json!(["1-webhook"]), "{figures}");
    assert_eq!(smtp.messages().len(), 1, "no second email");
    assert_eq!(hook.received().len(), 1, "no second POST");
    assert!(
        std::fs::read_dir(files.join("digest")).unwrap().count() >= 2,
        "the file and its checksum"
    );
    assert!(
        daemon.log("second").contains("not sent again"),
        "the unconfirmed part is reported"
    );

    // A retry: the webhook fails once (503), the run retries, and only the webhook is sent
    // again, under the same idempotency key.
    hook.answer(Answer::Status(503));
    let enqueued = daemon.cli(&["jobs", "run", "digest"]);
    assert!(enqueued.status.success());
    wait_until(60, "the failing POST", || hook.received().len() == 2).await;
    hook.answer(Answer::Ok);
    wait_until(60, "the retried POST", || hook.received().len() == 3).await;
    let received = hook.received();
    assert_eq!(
        received[1].headers["idempotency-key"], received[2].headers["idempotency-key"],
        "the retry carries the same key"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs = store.list_runs(&digest_runs()).await.unwrap();
        if runs
            .iter()
            .filter(|r| r.state == asana_worker::store::RunState::Completed)
            .count()
            == 2
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retried run did not complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        smtp.messages().len(),
        2,
        "one email per period, none repeated by the retry"
    );
    assert!(
        received[2].body["blocks"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
            > 2,
        "a Slack Block Kit body: {}",
        received[2].body
    );
    support::daemon::terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_recipients_and_4xx_webhooks_fail_and_an_unreachable_server_is_retried() {
    let Some(smtp) = SmtpServer::start("digest failures", false, Some("nobody")).await else {
        return;
    };
    let Setup {
        sim: _sim,
        seeded,
        daemon,
        files: _,
    } = setup().await;
    let email = |port: u16, to: &str| {
        format!(
            "workspace = \"{}\"\nprojects = [\"{}\"]\n\n[[settings.deliver]]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\nfrom = \"digest@example.com\"\nto = [{to}]\ntimeout = \"5s\"\n",
            seeded.workspace, seeded.projects[0]
        )
    };
    write_digest_job(
        &daemon,
        &email(smtp.port, "\"team@example.com\", \"nobody@example.com\""),
    );
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let (ok, text) = run(&daemon);
    assert!(!ok, "{text}");
    assert!(
        text.contains("nobody@example.com") && text.contains("refused"),
        "{text}"
    );
    assert!(
        smtp.messages().is_empty(),
        "nothing was delivered to anyone"
    );
    support::daemon::terminate(&mut child);

    // A webhook answering 404: the run fails at once, saying so.
    let hook = Webhook::start().await;
    hook.answer(Answer::Status(404));
    write_digest_job(
        &daemon,
        &format!(
            "workspace = \"{}\"\nprojects = [\"{}\"]\n\n[[settings.deliver]]\ntype = \"webhook\"\nurl = \"{}\"\n",
            seeded.workspace, seeded.projects[0], hook.url
        ),
    );
    let mut child = daemon.start("daemon-hook");
    daemon.wait_ready(&mut child).await;
    let (ok, text) = run(&daemon);
    assert!(!ok, "{text}");
    assert!(text.contains("404"), "{text}");
    assert_eq!(hook.received().len(), 1, "a 4xx is not retried");
    support::daemon::terminate(&mut child);

    // An SMTP server that is not there: the run is retried with the reason.
    let closed = support::daemon::free_port();
    write_digest_job(&daemon, &email(closed, "\"team@example.com\""));
    let mut child = daemon.start("daemon-closed");
    daemon.wait_ready(&mut child).await;
    let enqueued = daemon.cli(&["jobs", "run", "digest"]);
    assert!(enqueued.status.success());
    let store = daemon.store().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let runs = store.list_runs(&digest_runs()).await.unwrap();
        if let Some(run) = runs.iter().find(|r| {
            r.attempt >= 2
                && r.last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("cannot reach the SMTP server"))
        }) {
            assert!(
                !run.state.is_terminal(),
                "an unreachable server is retried: {run:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no retry seen:\n{}",
            daemon.log("daemon-closed")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    support::daemon::terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_from_a_sync_mirror_makes_no_request_and_shows_its_freshness() {
    let Setup {
        sim,
        seeded,
        daemon,
        files,
    } = setup().await;
    daemon.add_credential(&sim.server, "pat-paid", "paid");
    daemon.write_job(
        "sync",
        &format!(
            "name = \"sync\"\nkind = \"sync\"\nevery = \"365d\"\ncredential = \"sa\"\n\n[settings]\nworkspace = \"{}\"\nresources = [\"users\", \"teams\", \"projects\", \"sections\", \"tasks\"]\n\n[settings.sink]\ntype = \"sqlite\"\npath = \"{}\"\n",
            seeded.workspace,
            daemon.path("mirror.sqlite").display()
        ),
    );
    let digest = |source: &str, format: &str| {
        format!(
            "name = \"digest\"\nkind = \"digest\"\nschedule = \"0 8 1 1 *\"\ncredential = \"pat-paid\"\ntimezone = \"Europe/Berlin\"\nretry_initial = \"1s\"\n\n[settings]\nworkspace = \"{}\"\nprojects = [\"{}\", \"{}\"]\nsections = [\"overdue\", \"due_soon\", \"unassigned\", \"completed\"]\nsource = {source}\n\n[[settings.deliver]]\ntype = \"file\"\ndir = \"{}\"\nformat = \"{format}\"\n",
            seeded.workspace,
            seeded.projects[0],
            seeded.projects[1],
            files.display()
        )
    };
    daemon.write_job("digest", &digest("{ sync_job = \"sync\" }", "json"));
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let output = daemon.cli(&["jobs", "run", "sync", "--wait", "--timeout-secs", "120"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    sim.admin_api().reset_stats().await;
    let (ok, text) = run(&daemon);
    assert!(ok, "{text}\n{}", daemon.log("daemon"));
    let stats = sim.admin_api().token_stats("pat-paid").await;
    assert_eq!(
        stats["requests"].as_u64().unwrap_or(0),
        0,
        "no API request: {stats}"
    );
    let path = std::fs::read_dir(files.join("digest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| is_digest_json(p))
        .unwrap();
    let mirror: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(mirror["source"], "sync mirror");
    assert!(
        mirror["data_as_of"].is_string(),
        "the mirror's freshness is shown: {mirror}"
    );
    assert!(mirror["data_age_minutes"].as_i64().unwrap() < 5);

    // The same digest from the API lists the same tasks in the same sections.
    support::daemon::terminate(&mut child);
    daemon.write_job("digest", &digest("\"api\"", "json"));
    let mut child = daemon.start("daemon-api");
    daemon.wait_ready(&mut child).await;
    let (ok, text) = run(&daemon);
    assert!(ok, "{text}");
    let newest = std::fs::read_dir(files.join("digest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| is_digest_json(p) && *p != path)
        .unwrap();
    let api: Value = serde_json::from_str(&std::fs::read_to_string(&newest).unwrap()).unwrap();
    assert_eq!(api["source"], "api");
    // The API digest reaches back to the mirror's (the previous delivered one), so only the
    // completed section differs.
    let mut from_mirror = sections(&mirror);
    assert_eq!(
        from_mirror.remove("completed"),
        Some(BTreeSet::from([seeded.done.clone()]))
    );
    assert_eq!(sections(&api), from_mirror);
    assert_eq!(
        sections(&api)["overdue"],
        BTreeSet::from([seeded.overdue.clone()])
    );
    support::daemon::terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_search_reads_only_what_the_sections_hold_and_lists_agree() {
    let Setup {
        sim,
        seeded,
        daemon,
        files,
    } = setup().await;
    // A free workspace's token declared as paid: search answers 402, the job reads task lists.
    daemon.add_credential(&sim.server, "pat-free", "paid");
    let job = |name: &str, credential: &str, search: bool| {
        format!(
            "name = \"{name}\"\nkind = \"digest\"\nschedule = \"0 8 1 1 *\"\ncredential = \"{credential}\"\ntimezone = \"Europe/Berlin\"\nretry_initial = \"1s\"\n\n[settings]\nworkspace = \"{}\"\nprojects = [\"{}\", \"{}\"]\nsections = [\"overdue\", \"due_soon\", \"completed\"]\nfirst_lookback = \"1d\"\nsearch = {search}\n\n[[settings.deliver]]\ntype = \"file\"\ndir = \"{}\"\nformat = \"json\"\n",
            seeded.workspace,
            seeded.projects[0],
            seeded.projects[1],
            files.display()
        )
    };
    let mut results = Vec::new();
    for (name, credential, search, expected) in [
        ("search", "sa", true, "search"),
        ("lists", "sa", false, "task_lists"),
        ("free", "pat-free", true, "task_lists"),
    ] {
        // A job of its own for each, so each is a first digest reaching back as far.
        daemon.write_job(name, &job(name, credential, search));
        let mut child = daemon.start(name);
        daemon.wait_ready(&mut child).await;
        let (ok, text) = run_job(&daemon, name);
        assert!(ok, "{name}: {text}\n{}", daemon.log(name));
        let figures = progress(&text);
        assert_eq!(figures["read_with"], expected, "{name}: {figures}");
        let period = figures["period"].as_str().unwrap().to_string();
        let model: Value = serde_json::from_str(
            &std::fs::read_to_string(files.join(name).join(format!("{period}.json"))).unwrap(),
        )
        .unwrap();
        results.push((
            name,
            sections(&model),
            figures["requests"].as_u64().unwrap(),
        ));
        support::daemon::terminate(&mut child);
    }
    let (_, searched, search_requests) = &results[0];
    assert_eq!(
        searched["overdue"],
        BTreeSet::from([seeded.overdue.clone()])
    );
    assert!(searched["due_soon"].contains(&seeded.due_soon));
    assert!(!searched["due_soon"].contains(&seeded.far));
    assert_eq!(
        search_requests, &2,
        "one search for open tasks, one for completed ones"
    );
    for (name, found, _) in &results[1..] {
        assert_eq!(found, searched, "{name} reads the same digest as search");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asana_post_recorded_as_being_sent_is_looked_up_before_it_is_posted_again() {
    use asana_worker::jobs::digest::deliver::{self, DeliveryContext};
    use asana_worker::jobs::digest::render::sample_model;
    use asana_worker::jobs::digest::settings::{Channel, GroupBy, StatusType};
    let sim = empty_world().await;
    let seeded = seed(&sim).await;
    let client = support::digest::client_of(&sim.server, "service-account");
    let job_file = std::path::PathBuf::from("/nonexistent/jobs/digest.toml");
    let cx = DeliveryContext {
        job: "weekly-digest",
        job_file: &job_file,
        client: &client,
    };
    // The sample digest, described as of now (Asana's status updates are looked up from there).
    let mut model = sample_model(GroupBy::Project);
    model.as_of_utc = Utc::now();
    let model = model;
    let project = &seeded.projects[0];
    let count_marked = |body: &Value| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|item| {
                item["text"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&deliver::asana_marker(&model))
            })
            .count()
    };
    let status = Channel::AsanaStatus {
        parent: Some(asana_worker::config::values::Gid::parse(project).unwrap()),
        status_type: StatusType::OnTrack,
        template: None,
    };
    let comment = Channel::AsanaComment {
        task: asana_worker::config::values::Gid::parse(&seeded.overdue).unwrap(),
        template: None,
    };
    for channel in [&status, &comment] {
        let (units, _) = deliver::units(0, channel, &model);
        assert_eq!(units.len(), 1);
        // The first attempt posts; an attempt after a crash between the post and its record
        // finds the post by its marker and posts nothing, however often it is retried.
        deliver::deliver(cx, channel, &units[0], &model, false)
            .await
            .unwrap();
        for _ in 0..2 {
            let found = deliver::deliver(cx, channel, &units[0], &model, true)
                .await
                .unwrap();
            assert!(found.contains("found after a retry"), "{found}");
        }
    }
    let (_, updates) = sim
        .get_as(
            "service-account",
            &format!("/status_updates?parent={project}&opt_fields=text"),
        )
        .await;
    assert_eq!(count_marked(&updates), 1, "one status update: {updates}");
    let (_, stories) = sim
        .get_as(
            "service-account",
            &format!("/tasks/{}/stories?opt_fields=text", seeded.overdue),
        )
        .await;
    assert_eq!(count_marked(&stories), 1, "one comment: {stories}");
    // A retry that finds nothing (the crash came before the post) posts it.
    let other = Channel::AsanaComment {
        task: asana_worker::config::values::Gid::parse(&seeded.due_soon).unwrap(),
        template: None,
    };
    let (units, _) = deliver::units(1, &other, &model);
    let posted = deliver::deliver(cx, &other, &units[0], &model, true)
        .await
        .unwrap();
    assert!(posted.starts_with("comment "), "{posted}");
    assert!(!posted.contains("found"), "{posted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_by_assignee_each_person_receives_their_own_part() {
    let Some(smtp) = SmtpServer::start("digest per assignee", false, None).await else {
        return;
    };
    let sim = empty_world().await;
    let seeded = seed(&sim).await;
    // A second assignee, with an overdue task of their own.
    let (_, users) = sim
        .get_as(
            "service-account",
            &format!(
                "/users?workspace={}&opt_fields=name,email",
                seeded.workspace
            ),
        )
        .await;
    let (_, me) = sim.get_as("service-account", "/users/me").await;
    let me_gid = gid(&me["data"]);
    let other = users["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| gid(u) != me_gid && u["email"].is_string())
        .expect("another user with an email")
        .clone();
    let due = berlin_today()
        .checked_sub_days(Days::new(5))
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let theirs = create_task(
        &sim,
        json!({"name": "Their late task", "projects": [seeded.projects[0]], "due_on": due, "assignee": gid(&other)}),
    )
    .await;
    let daemon = Daemon::new(&sim.server, DaemonOptions::default());
    write_digest_job(
        &daemon,
        &format!(
            "workspace = \"{}\"\nprojects = [\"{}\"]\ngroup_by = \"assignee\"\nsections = [\"overdue\"]\n\n[[settings.deliver]]\ntype = \"email\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"digest@example.com\"\nto = \"assignees\"\n",
            seeded.workspace, seeded.projects[0], smtp.port
        ),
    );
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let (ok, text) = run(&daemon);
    assert!(ok, "{text}\n{}", daemon.log("daemon"));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2, "one message per assignee: {messages:?}");
    let to_of = |email: &str| {
        messages
            .iter()
            .find(|m| m["rcpt_tos"] == json!([email]))
            .unwrap_or_else(|| panic!("no message to {email}: {messages:?}"))["data"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mine = to_of(me["data"]["email"].as_str().unwrap());
    let their = to_of(other["email"].as_str().unwrap());
    assert!(mine.contains("Renew the certificate") && !mine.contains("Their late task"));
    assert!(their.contains("Their late task") && !their.contains("Renew the certificate"));
    let _ = theirs;
    support::daemon::terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instant_one_task_overdue_in_one_zone_and_due_today_in_the_other() {
    let Setup {
        sim,
        seeded,
        daemon,
        files,
    } = setup().await;
    // UTC+14 and UTC-11 are 25 hours apart: at any instant their dates differ. A task due on
    // the western date is overdue in the east and due today in the west.
    let (east, west) = (
        chrono_tz::Pacific::Kiritimati,
        chrono_tz::Pacific::Pago_Pago,
    );
    let west_today = || Utc::now().with_timezone(&west).date_naive();
    let due = west_today();
    let task = create_task(
        &sim,
        json!({"name": "Across the date line", "projects": [seeded.projects[1]], "due_on": due.format("%Y-%m-%d").to_string()}),
    )
    .await;
    for (name, tz) in [("east", east), ("west", west)] {
        daemon.write_job(
            name,
            &format!(
                "name = \"{name}\"\nkind = \"digest\"\nschedule = \"0 8 1 1 *\"\ntimezone = \"{}\"\ncredential = \"sa\"\n\n[settings]\nworkspace = \"{}\"\nprojects = [\"{}\"]\nsections = [\"overdue\", \"due_soon\"]\ndue_within = \"1d\"\n\n[[settings.deliver]]\ntype = \"file\"\ndir = \"{}\"\nformat = \"json\"\n",
                tz.name(),
                seeded.workspace,
                seeded.projects[1],
                files.display()
            ),
        );
    }
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let mut placed = std::collections::BTreeMap::new();
    for name in ["east", "west"] {
        let (ok, text) = run_job(&daemon, name);
        assert!(ok, "{name}: {text}");
        let period = progress(&text)["period"].as_str().unwrap().to_string();
        let model: Value = serde_json::from_str(
            &std::fs::read_to_string(files.join(name).join(format!("{period}.json"))).unwrap(),
        )
        .unwrap();
        placed.insert(name, (sections(&model), model["today"].clone()));
    }
    support::daemon::terminate(&mut child);
    if west_today() != due {
        eprintln!("the western date changed during the test; its result would be ambiguous");
        return;
    }
    let (east_sections, east_today) = &placed["east"];
    let (west_sections, west_today_text) = &placed["west"];
    assert_ne!(east_today, west_today_text, "two dates at one instant");
    assert!(
        east_sections["overdue"].contains(&task),
        "{east_sections:?}"
    );
    assert!(
        !east_sections
            .get("due_soon")
            .is_some_and(|s| s.contains(&task))
    );
    assert!(
        west_sections["due_soon"].contains(&task),
        "{west_sections:?}"
    );
    assert!(
        !west_sections
            .get("overdue")
            .is_some_and(|s| s.contains(&task))
    );
}
