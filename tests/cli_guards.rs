//! What the CLI does to a database it shares with a running fleet, and to a reader that goes
//! away: only `migrate` (and the daemon, `run`) change the schema; other commands create the
//! schema of an empty database but refuse one that is older or newer than their build, saying
//! which command to run; output piped into a reader that closes early ends quietly.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use sqlx::Connection;
use sqlx::migrate::Migrator;
use support::daemon::{BIN, cli_command};
use support::pg::TestDatabase;

/// A config naming only the database, in `dir`.
fn config(dir: &Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, format!("[database]\nurl = \"{url}\"\n")).unwrap();
    path
}

/// Applies this build's migrations but the newest to `url`: a database as the previous
/// release left it.
async fn migrate_all_but_the_newest(url: &str, dialect: &str) {
    let mut migrator = Migrator::new(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect),
    )
    .await
    .unwrap();
    let mut migrations = migrator.migrations.to_vec();
    migrations.pop();
    migrator.migrations = migrations.into();
    if dialect == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        migrator.run(&mut conn).await.unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        migrator.run(&mut conn).await.unwrap();
    }
}

/// Records a migration this build does not know, as a newer release would.
async fn add_a_newer_migration(url: &str, dialect: &str) {
    if dialect == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101, 'from a newer release', TRUE, X'00', 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99990101, 'from a newer release', TRUE, '\\x00'::bytea, 1)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

fn runs_list(config: &Path) -> (i32, String) {
    let out = cli_command(config, &["runs", "list"]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn only_migrate_upgrades_and_nobody_downgrades(url: &str, dialect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), url);
    migrate_all_but_the_newest(url, dialect).await;

    let (code, output) = runs_list(&config);
    assert_ne!(code, 0, "an older schema is refused: {output}");
    assert!(
        output.contains("older than this asana-worker") && output.contains("asana-worker migrate"),
        "{output}"
    );
    let migrate = cli_command(&config, &["migrate"]).output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    let (code, output) = runs_list(&config);
    assert_eq!(code, 0, "{output}");

    add_a_newer_migration(url, dialect).await;
    let (code, output) = runs_list(&config);
    assert_ne!(code, 0, "a newer schema is refused: {output}");
    assert!(output.contains("newer than this asana-worker"), "{output}");
}

#[tokio::test]
async fn sqlite_only_migrate_changes_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.sqlite").display());
    only_migrate_upgrades_and_nobody_downgrades(&url, "sqlite").await;
}

#[tokio::test]
async fn postgres_only_migrate_changes_the_schema() {
    let Some(db) = TestDatabase::create("postgres_only_migrate_changes_the_schema").await else {
        return;
    };
    only_migrate_upgrades_and_nobody_downgrades(&db.url, "postgres").await;
}

#[test]
fn an_empty_database_gets_its_schema_from_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("fresh.sqlite").display());
    let config = config(dir.path(), &url);
    let (code, output) = runs_list(&config);
    assert_eq!(code, 0, "{output}");
    let (code, output) = runs_list(&config);
    assert_eq!(code, 0, "and it is current afterwards: {output}");
}

#[test]
fn a_reader_that_closes_early_ends_the_cli_quietly() {
    let mut child = Command::new(BIN)
        .args(["jobs", "schema", "--markdown"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Go away before the command writes, as `| true` or an early `head` does.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.trim().is_empty(), "nothing on stderr: {stderr}");
    assert!(
        status.success() || status.signal() == Some(libc::SIGPIPE),
        "{status:?}"
    );
}
