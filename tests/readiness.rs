//! `/readyz` under real faults, each named in its answer and each cleared when it is fixed: a
//! database that can be read but not written (PostgreSQL switched to read-only), logged once
//! rather than at every tick; and a credential whose token file disappears while its job is
//! enabled.

mod support;

use std::time::{Duration, Instant};

use asana_worker::sim::{SimConfig, SimServer};
use serde_json::Value;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::daemon::{Daemon, DaemonOptions, terminate};

async fn quiet_sim() -> SimServer {
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    SimServer::start(config).await.unwrap()
}

fn write_check_job(daemon: &Daemon) {
    std::fs::write(
        daemon.jobs_dir().join("check.toml"),
        "name = \"check\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"sa\"\n",
    )
    .unwrap();
}

async fn readyz(daemon: &Daemon) -> (u16, Value) {
    let response = reqwest::get(format!("http://127.0.0.1:{}/readyz", daemon.admin_port))
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// Polls `/readyz` until `accept` holds for its answer, or panics after `within`.
async fn wait_readyz(
    daemon: &Daemon,
    within: Duration,
    accept: impl Fn(u16, &Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = readyz(daemon).await;
        if accept(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_makes_the_daemon_unready_with_the_cause_and_one_log_line() {
    let Some(database) =
        support::pg::TestDatabase::create("readiness on a read-only database").await
    else {
        return;
    };
    let sim = quiet_sim().await;
    let daemon = Daemon::new(
        &sim,
        DaemonOptions {
            database_url: Some(database.url.clone()),
            ..DaemonOptions::default()
        },
    );
    write_check_job(&daemon);
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;

    // Reads keep working, writes fail: every new session is read-only, and the daemon's
    // sessions are ended so its pool reconnects.
    let name = reqwest::Url::parse(&database.url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_string();
    let mut admin = PgConnection::connect(&std::env::var(support::pg::PG_URL_VAR).unwrap())
        .await
        .unwrap();
    let read_only =
        |on: bool| format!("ALTER DATABASE {name} SET default_transaction_read_only = {on}");
    let kick = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    sqlx::query(AssertSqlSafe(read_only(true)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(kick.clone()))
        .execute(&mut admin)
        .await
        .unwrap();
    let unready = wait_readyz(&daemon, Duration::from_secs(20), |status, body| {
        status == 503
            && body["store"]
                .as_str()
                .unwrap_or_default()
                .contains("read-only")
    })
    .await;
    assert_eq!(unready["ready"], false, "{unready}");
    // Several seconds of failing ticks (every 200 ms) and claims (every 100 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let errors = daemon
        .log("daemon")
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("read-only"))
        .count();
    assert!(
        (1..=4).contains(&errors),
        "a repeating fault is logged once per component, not per attempt: {errors} lines\n{}",
        daemon.log("daemon")
    );

    // Writable again: ready again, and the recovery is logged.
    sqlx::query(AssertSqlSafe(read_only(false)))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(AssertSqlSafe(kick))
        .execute(&mut admin)
        .await
        .unwrap();
    let ready = wait_readyz(&daemon, Duration::from_secs(20), |status, _| status == 200).await;
    assert_eq!(ready["store"], "ok", "{ready}");
    assert!(
        daemon.log("daemon").contains("Recovered"),
        "{}",
        daemon.log("daemon")
    );
    let _ = admin.close().await;
    terminate(&mut child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_losing_its_token_file_makes_the_daemon_unready() {
    let sim = quiet_sim().await;
    let daemon = Daemon::new(&sim, DaemonOptions::default());
    write_check_job(&daemon);
    let mut child = daemon.start("daemon");
    daemon.wait_ready(&mut child).await;
    let token = daemon.path("sa.token");
    let saved = std::fs::read(&token).unwrap();
    std::fs::remove_file(&token).unwrap();
    let unready = wait_readyz(&daemon, Duration::from_secs(10), |status, _| status == 503).await;
    let credentials = unready["credentials"].to_string();
    assert!(
        credentials.contains("credential \\\"sa\\\" (jobs check)")
            && credentials.contains("cannot be read"),
        "{unready}"
    );
    std::fs::write(&token, saved).unwrap();
    let ready = wait_readyz(&daemon, Duration::from_secs(10), |status, _| status == 200).await;
    assert_eq!(ready["credentials"], "ok");
    terminate(&mut child);
}
