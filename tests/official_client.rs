//! Asana's official Python client (PyPI `asana`, pinned in `scripts/python-venv`) against the
//! simulator: if the real SDK can list, paginate, page the audit log, run an organization export,
//! handle the events 412 handshake, create a status update, and list the work graph a sync
//! mirrors (memberships, archived projects, portfolios, goals, attachments, time entries,
//! dependencies; 402 for a free token) against the simulator, the simulator speaks Asana's
//! protocol the way Asana's own tooling expects.
//!
//! The Python side is `tests/python/official_client.py`; it uses the client unchanged with
//! `Configuration.host` pointed at the simulator and reports one JSON object of facts per step.
//! Inputs go through environment variables, never argv. The interpreter is
//! `$ASANA_WORKER_TEST_PYTHON`, else `.venv/bin/python` (created with `scripts/python-venv` when
//! missing); if no interpreter with the client can be had, the test prints SKIPPED and returns.
//!
//! Steps whose endpoint the simulator does not have yet (404 "No matching route") fail the test
//! unless `ASANA_WORKER_CONFORMANCE_ALLOW_MISSING=1` is set.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use asana_worker::sim::config::Timing;
use asana_worker::sim::{SimConfig, SimServer};
use serde_json::Value;

/// The client version `scripts/python-venv` pins.
const CLIENT_VERSION: &str = "5.2.2";

/// Env var that turns "route not implemented" from a failure into a report line.
const ALLOW_MISSING_ENV: &str = "ASANA_WORKER_CONFORMANCE_ALLOW_MISSING";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `python` runs and can import the pinned client.
fn has_client(python: &Path) -> bool {
    std::process::Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m, asana; print(m.version('asana'))",
        ])
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == CLIENT_VERSION
        })
}

/// The interpreter to use, creating the venv if needed; `Err` says why there is none.
fn python() -> Result<PathBuf, String> {
    if let Ok(explicit) = std::env::var("ASANA_WORKER_TEST_PYTHON") {
        let path = PathBuf::from(explicit);
        if has_client(&path) {
            return Ok(path);
        }
        eprintln!(
            "ASANA_WORKER_TEST_PYTHON={} lacks asana {CLIENT_VERSION}; trying the project venv",
            path.display()
        );
    }
    let venv = root().join(".venv/bin/python");
    if has_client(&venv) {
        return Ok(venv);
    }
    let setup = std::process::Command::new(root().join("scripts/python-venv"))
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run scripts/python-venv: {e}"))?;
    if !setup.status.success() {
        return Err(format!(
            "scripts/python-venv failed ({}): {}",
            setup.status,
            String::from_utf8_lossy(&setup.stderr).trim()
        ));
    }
    if has_client(&venv) {
        Ok(venv)
    } else {
        Err(format!(
            "scripts/python-venv ran but {} cannot import asana {CLIENT_VERSION}",
            venv.display()
        ))
    }
}

fn config() -> SimConfig {
    SimConfig {
        // Exports finish after 25 simulated seconds: ~1.3 s here. Offsets (15 simulated minutes)
        // still outlive the whole run.
        time_scale: 20.0,
        timing: Timing {
            // No background churn: the lists the client reads must equal the seeded world.
            audit_events_per_minute: 0.0,
            activity_per_minute: 0.0,
            ..Timing::default()
        },
        ..SimConfig::default()
    }
}

/// What the world says the client should see.
struct Expected {
    workspace: String,
    me: String,
    users: BTreeSet<String>,
    project: String,
    project_tasks: BTreeSet<String>,
    task: String,
    audit_events: usize,
    team: String,
    team_members: Vec<String>,
    project_members: Vec<String>,
    archived: Vec<String>,
    portfolios: Vec<String>,
    portfolio_items: Vec<String>,
    portfolio_members: Vec<String>,
    goals: Vec<String>,
    attached_task: String,
    attachments: Vec<String>,
    timed_task: String,
    minutes: u64,
    blocked_task: String,
    dependencies: Vec<String>,
}

fn expected(server: &SimServer) -> Expected {
    let world = server.state().world();
    let me = server
        .token("service-account")
        .and_then(|t| server.state().token(&t))
        .map(|r| r.user_gid)
        .expect("service-account token");
    let project = world.projects.at(0).expect("a project").gid.clone();
    let project_tasks: BTreeSet<String> = world
        .tasks
        .iter()
        .filter(|t| t.parent.is_none() && !t.deleted)
        .filter(|t| t.memberships.iter().any(|(p, _)| p == &project))
        .map(|t| t.gid.clone())
        .collect();
    assert!(
        project_tasks.len() > 20,
        "the first project needs more than two pages of 10 tasks, has {}",
        project_tasks.len()
    );
    let task = project_tasks.iter().next().cloned().expect("a task");
    let team = world.teams.at(0).expect("a team").gid.clone();
    let portfolio = world.portfolios.at(0).expect("a portfolio");
    let attached_task = world
        .attachments
        .iter()
        .find(|a| world.tasks.get(&a.parent).is_some())
        .expect("a task with attachments")
        .parent
        .clone();
    let timed_task = world.time_entries.at(0).expect("time logged").task.clone();
    let blocked = world
        .tasks
        .iter()
        .find(|t| !t.dependencies.is_empty())
        .expect("a dependency");
    Expected {
        team_members: world.team_members(&team).cloned().collect(),
        team,
        project_members: world.project_members(&project).cloned().collect(),
        archived: world.projects.gids_where(|p| p.archived),
        portfolios: world.portfolios.gids(),
        portfolio_items: portfolio.items.clone(),
        portfolio_members: world.portfolio_members(&portfolio.gid).cloned().collect(),
        goals: world.goals.gids(),
        attachments: world.attachments.gids_within(&attached_task, |_| true),
        attached_task,
        minutes: world.time_spent(&timed_task).unwrap_or_default(),
        timed_task,
        blocked_task: blocked.gid.clone(),
        dependencies: blocked.dependencies.clone(),
        workspace: world.workspace.gid.clone(),
        me,
        users: world
            .users
            .iter()
            .filter(|u| u.active)
            .map(|u| u.gid.clone())
            .collect(),
        project,
        project_tasks,
        task,
        audit_events: world.audit_events.len(),
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one step's facts; returns the problems.
fn check_step(name: &str, facts: &Value, want: &Expected, server: &SimServer) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };
    match name {
        "workspaces" => {
            let gids = strings(&facts["gids"]);
            expect(
                gids == vec![want.workspace.clone()],
                format!("workspaces {gids:?}, expected [{}]", want.workspace),
            );
        }
        "me" => expect(
            facts["gid"] == want.me.as_str(),
            format!("me is {}, expected {}", facts["gid"], want.me),
        ),
        "users" => {
            let gids = strings(&facts["gids"]);
            let set: BTreeSet<String> = gids.iter().cloned().collect();
            expect(
                set.len() == gids.len(),
                format!("users repeated across pages: {gids:?}"),
            );
            expect(
                set == want.users,
                format!(
                    "users {} differ from the world's {} active users",
                    set.len(),
                    want.users.len()
                ),
            );
        }
        "project_tasks" => {
            let gids = strings(&facts["gids"]);
            let set: BTreeSet<String> = gids.iter().cloned().collect();
            expect(
                set.len() == gids.len(),
                format!("{} tasks, {} distinct", gids.len(), set.len()),
            );
            expect(
                set == want.project_tasks,
                format!(
                    "paged {} tasks, the project has {}",
                    set.len(),
                    want.project_tasks.len()
                ),
            );
        }
        "tasks_item_limit" => {
            let gids = strings(&facts["gids"]);
            let set: BTreeSet<String> = gids.iter().cloned().collect();
            expect(
                gids.len() == 25 && set.len() == 25,
                format!(
                    "item_limit=25 gave {} tasks ({} distinct)",
                    gids.len(),
                    set.len()
                ),
            );
            expect(
                set.is_subset(&want.project_tasks),
                "tasks outside the project".into(),
            );
        }
        "task" => expect(
            facts["gid"] == want.task.as_str(),
            format!("task {} != {}", facts["gid"], want.task),
        ),
        "audit_log" => {
            let count = facts["count"].as_u64().unwrap_or(0) as usize;
            let now = server.state().world().audit_events.len();
            expect(
                (want.audit_events..=now).contains(&count),
                format!(
                    "read {count} audit events, the log held {} at start and {now} now",
                    want.audit_events
                ),
            );
            expect(
                facts["unique"] == facts["count"],
                format!("duplicates: {} unique of {count}", facts["unique"]),
            );
            expect(
                facts["pages"].as_u64().unwrap_or(0) >= 2,
                format!("only {} page(s)", facts["pages"]),
            );
            expect(
                facts["next_page_on_empty_page"] == true,
                "the empty page had no next_page (Asana keeps sending it on the audit log)".into(),
            );
        }
        "audit_log_item_limit" => expect(
            facts["count"] == 120,
            format!("item_limit=120 gave {}", facts["count"]),
        ),
        "organization_export" => {
            let states = strings(&facts["states"]);
            expect(
                states.last().map(String::as_str) == Some("finished"),
                format!("states {states:?}"),
            );
            expect(
                states
                    .iter()
                    .all(|s| ["pending", "started", "finished"].contains(&s.as_str())),
                format!("states outside pending/started/finished: {states:?}"),
            );
            expect(
                facts["gzip_magic"] == true,
                "the download is not gzip".into(),
            );
            expect(
                facts["records"].as_u64().unwrap_or(0) > 0,
                format!("the export holds {} records", facts["records"]),
            );
        }
        "events_412" => {
            expect(
                facts["status_code"] == 412,
                format!("status {}", facts["status_code"]),
            );
            expect(
                facts["sync"].as_str().is_some_and(|s| !s.is_empty()),
                "no sync token in the 412 body".into(),
            );
            expect(
                facts["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("Sync token invalid or too old")),
                format!("412 message {}", facts["message"]),
            );
        }
        "events_after_write" => {
            expect(
                facts["count"].as_u64().unwrap_or(0) >= 1,
                "a comment on a task of the project produced no event on the project".into(),
            );
            expect(
                facts["next_sync"].as_str().is_some_and(|s| !s.is_empty()),
                "no next sync token".into(),
            );
            expect(facts["has_more_field"] == true, "no has_more".into());
        }
        "events_iterator" => expect(
            facts["items"].as_u64().is_some_and(|n| n < 1000),
            format!(
                "the client's EventIterator did not stop (items: {})",
                facts["items"]
            ),
        ),
        "status_update" => {
            let gid = facts["gid"].as_str().unwrap_or_default();
            expect(
                server.state().world().status_updates.get(gid).is_some(),
                format!("status update {gid} is not in the simulator's world"),
            );
            expect(
                facts["status_type"] == "on_track",
                format!("status_type {}", facts["status_type"]),
            );
            expect(
                facts["resource_subtype"] == "project_status_update",
                format!("resource_subtype {}", facts["resource_subtype"]),
            );
            expect(
                facts["listed"] == true,
                "not listed by GET /status_updates".into(),
            );
        }
        "team_memberships" => {
            expect(
                facts["team"] == want.team.as_str(),
                format!("first team {}", facts["team"]),
            );
            expect(
                strings(&facts["members"]) == want.team_members,
                format!("team memberships {:?}", facts["members"]),
            );
            expect(
                strings(&facts["users"]) == want.team_members,
                format!("team users {:?}", facts["users"]),
            );
        }
        "project_memberships" => {
            expect(
                strings(&facts["members"]) == want.project_members,
                format!("project members {:?}", facts["members"]),
            );
            expect(
                strings(&facts["access_levels"]).contains(&"admin".to_string()),
                format!("access levels {:?}", facts["access_levels"]),
            );
        }
        "archived_projects" => {
            expect(
                strings(&facts["gids"]) == want.archived,
                format!("archived {:?}", facts["gids"]),
            );
            expect(
                facts["flags"]
                    .as_array()
                    .is_some_and(|f| f.iter().all(|v| v == true)),
                format!("flags {}", facts["flags"]),
            );
        }
        "portfolios" => {
            expect(
                strings(&facts["gids"]) == want.portfolios,
                format!("portfolios {:?}", facts["gids"]),
            );
            expect(
                strings(&facts["items"]) == want.portfolio_items,
                format!("items {:?}", facts["items"]),
            );
            expect(
                strings(&facts["members"]) == want.portfolio_members,
                format!("members {:?}", facts["members"]),
            );
        }
        "goals" => {
            expect(
                strings(&facts["gids"]) == want.goals,
                format!("goals {:?}", facts["gids"]),
            );
            expect(
                facts["status"].is_string(),
                format!("status {}", facts["status"]),
            );
        }
        "attachments" => {
            expect(
                strings(&facts["gids"]) == want.attachments,
                format!("attachments {:?}", facts["gids"]),
            );
            expect(
                facts["parent"] == want.attached_task.as_str(),
                format!("parent {}", facts["parent"]),
            );
        }
        "time_tracking" => expect(
            facts["minutes"] == want.minutes,
            format!(
                "{} minutes, the world has {}",
                facts["minutes"], want.minutes
            ),
        ),
        "dependencies" => expect(
            strings(&facts["gids"]) == want.dependencies,
            format!("dependencies {:?} of {}", facts["gids"], want.blocked_task),
        ),
        "premium_only" => expect(
            facts["status_code"] == 402,
            format!("a free token listing goals got {}", facts["status_code"]),
        ),
        "not_found" => expect(
            facts["status_code"] == 404,
            format!("status {}", facts["status_code"]),
        ),
        "unauthorized" => expect(
            facts["status_code"] == 401,
            format!("status {}", facts["status_code"]),
        ),
        other => problems.push(format!("unknown step {other}: the test must check it")),
    }
    problems
}

/// Every step the script must report.
const STEPS: &[&str] = &[
    "workspaces",
    "me",
    "users",
    "project_tasks",
    "tasks_item_limit",
    "task",
    "audit_log",
    "audit_log_item_limit",
    "organization_export",
    "events_412",
    "events_after_write",
    "events_iterator",
    "status_update",
    "team_memberships",
    "project_memberships",
    "archived_projects",
    "portfolios",
    "goals",
    "attachments",
    "time_tracking",
    "dependencies",
    "premium_only",
    "not_found",
    "unauthorized",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_works_against_the_simulator() {
    let python = match python() {
        Ok(p) => p,
        Err(why) => {
            println!("SKIPPED official_python_client_works_against_the_simulator: {why}");
            eprintln!("SKIPPED official_python_client_works_against_the_simulator: {why}");
            return;
        }
    };
    let server = SimServer::start(config()).await.expect("simulator starts");
    let want = expected(&server);
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(root().join("tests/python/official_client.py"))
        .env("ASANA_SIM_BASE_URL", server.base_url())
        .env(
            "ASANA_SIM_TOKEN",
            server.token("service-account").expect("sa token"),
        )
        .env(
            "ASANA_SIM_FREE_TOKEN",
            server.token("pat-free").expect("free token"),
        )
        .env("ASANA_SIM_PROJECT", &want.project)
        .env("ASANA_SIM_TASK", &want.task)
        .env("ASANA_SIM_ATTACHED_TASK", &want.attached_task)
        .env("ASANA_SIM_TIMED_TASK", &want.timed_task)
        .env("ASANA_SIM_BLOCKED_TASK", &want.blocked_task)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("the Python script finishes within 180 s")
        .expect("the Python script runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the script failed ({}):\n{stderr}",
        output.status
    );
    let report: Value = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report on stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert_eq!(report["client_version"], CLIENT_VERSION);

    let allow_missing = std::env::var(ALLOW_MISSING_ENV).is_ok_and(|v| v == "1");
    let mut passed = Vec::new();
    let mut failed = Vec::new();
    let mut missing = Vec::new();
    for name in STEPS {
        let step = &report["steps"][*name];
        match step["status"].as_str() {
            Some("ok") => {
                let problems = check_step(name, step, &want, &server);
                if problems.is_empty() {
                    passed.push(*name);
                } else {
                    failed.push(format!("{name}: {}", problems.join("; ")));
                }
            }
            Some("not_implemented") => missing.push(format!("{name}: {}", step["error"])),
            Some(_) => failed.push(format!(
                "{name}: {}{}",
                step["error"],
                step["trace"]
                    .as_str()
                    .map(|t| format!("\n{t}"))
                    .unwrap_or_default()
            )),
            None => failed.push(format!("{name}: the script did not run this step")),
        }
    }
    server.shutdown().await;

    println!(
        "official client {CLIENT_VERSION} (python {}): {}/{} steps pass: {}",
        report["python"].as_str().unwrap_or("?"),
        passed.len(),
        STEPS.len(),
        passed.join(", ")
    );
    for name in STEPS {
        if let Some(facts) = report["steps"][*name].as_object() {
            let scalars: Vec<String> = facts
                .iter()
                .filter(|(key, value)| !value.is_object() && *key != "trace" && *key != "error")
                .map(|(key, value)| match value.as_array() {
                    Some(items) if items.len() > 4 => format!("{key}=[{} items]", items.len()),
                    _ => format!("{key}={value}"),
                })
                .collect();
            println!("  {name}: {}", scalars.join(" "));
        }
    }
    if !missing.is_empty() {
        println!(
            "\nnot implemented in the simulator{}:",
            if allow_missing {
                format!(" [allowed by {ALLOW_MISSING_ENV}=1]")
            } else {
                String::new()
            }
        );
        for line in &missing {
            println!("  {line}");
        }
    }
    if !failed.is_empty() {
        println!("\nFAILED:");
        for line in &failed {
            println!("  {line}");
        }
    }
    let missing_fail = !missing.is_empty() && !allow_missing;
    assert!(
        failed.is_empty() && !missing_fail,
        "{} step(s) failed and {} are not implemented in the simulator (see above)",
        failed.len(),
        if allow_missing { 0 } else { missing.len() }
    );
}
