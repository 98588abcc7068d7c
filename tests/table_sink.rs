//! The table sink family, one conformance suite run against a SQLite file and against a fresh
//! PostgreSQL database (`ASANA_WORKER_TEST_PG_URL`; skipped with a notice when unset): rows of
//! every column type round-trip; tables and columns are created and added idempotently; a batch's
//! rows and checkpoint are committed together or not at all; a batch built from a stale version
//! (a second writer) is refused and changes nothing; soft and hard deletes; batches larger than
//! one statement's parameter limit.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use asana_worker::sinks::SinkError;
use asana_worker::sinks::table::{
    Cell, Change, Column, ColumnType, PostgresTableSettings, Row, TableBatch, TableDef, TableSink,
    postgres::PostgresTables, sqlite::SqliteTables,
};
use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::json;

fn tasks() -> TableDef {
    TableDef {
        name: "tasks".into(),
        key: vec!["gid".into()],
        columns: vec![
            Column::new("gid", ColumnType::Text),
            Column::new("name", ColumnType::Text),
            Column::new("completed", ColumnType::Boolean),
            Column::new("due_on", ColumnType::Date),
            Column::new("modified_at", ColumnType::Timestamp),
            Column::new("num_likes", ColumnType::Integer),
            Column::new("score", ColumnType::Real),
            Column::new("data", ColumnType::Json),
            Column::new("deleted_at", ColumnType::Timestamp),
        ],
        indexes: vec![vec!["modified_at".into()]],
    }
}

fn followers() -> TableDef {
    TableDef {
        name: "task_followers".into(),
        key: vec!["task_gid".into(), "user_gid".into()],
        columns: vec![
            Column::new("task_gid", ColumnType::Text),
            Column::new("user_gid", ColumnType::Text),
        ],
        indexes: vec![],
    }
}

fn task(gid: u64, name: &str) -> Row {
    let mut row = Row::new();
    row.insert("gid".into(), Cell::Text(gid.to_string()));
    row.insert("name".into(), Cell::Text(name.into()));
    row.insert("completed".into(), Cell::Boolean(gid.is_multiple_of(2)));
    row.insert(
        "due_on".into(),
        Cell::Date(NaiveDate::from_ymd_opt(2026, 3, (gid % 28 + 1) as u32).unwrap()),
    );
    row.insert(
        "modified_at".into(),
        Cell::Timestamp(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()),
    );
    row.insert("num_likes".into(), Cell::Integer(gid as i64 * 3));
    row.insert("score".into(), Cell::Real(gid as f64 / 4.0));
    row.insert(
        "data".into(),
        Cell::Json(json!({"gid": gid.to_string(), "name": name, "tags": ["a", "b"]})),
    );
    row.insert("deleted_at".into(), Cell::Null);
    row
}

fn upsert(table: &str, row: Row) -> Change {
    Change::Upsert {
        table: table.into(),
        row,
    }
}

fn batch(expected_version: u64, changes: Vec<Change>, cursor: u64) -> TableBatch {
    TableBatch {
        stream: "sync".into(),
        expected_version,
        changes,
        checkpoint: BTreeMap::from([("cursor".to_string(), json!(cursor))]),
        now: Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap(),
    }
}

/// The whole suite, on one sink.
async fn conformance(sink: Arc<dyn TableSink>) {
    sink.ensure_tables(&[tasks(), followers()]).await.unwrap();
    // Idempotent.
    sink.ensure_tables(&[tasks(), followers()]).await.unwrap();
    let state = sink.state("sync").await.unwrap();
    assert_eq!(state.version, 0);
    assert!(state.checkpoint.is_empty());

    // Every type round-trips; the checkpoint comes with the rows.
    let rows: Vec<Row> = (1..=3)
        .map(|gid| task(gid, &format!("Task {gid}")))
        .collect();
    let version = sink
        .apply(batch(
            0,
            rows.iter().cloned().map(|r| upsert("tasks", r)).collect(),
            1,
        ))
        .await
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!(sink.read_table(&tasks()).await.unwrap(), rows);
    let state = sink.state("sync").await.unwrap();
    assert_eq!(state.version, 1);
    assert_eq!(state.checkpoint["cursor"], json!(1));

    // An upsert replaces the row with the same key; other rows stay.
    let mut renamed = task(2, "Renamed");
    renamed.insert("data".into(), Cell::Json(json!({"renamed": true})));
    sink.apply(batch(1, vec![upsert("tasks", renamed.clone())], 2))
        .await
        .unwrap();
    let read = sink.read_table(&tasks()).await.unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read[1], renamed);

    // A stale version (a second writer, or a run whose lease was taken over) changes nothing.
    let stale = sink
        .apply(batch(1, vec![upsert("tasks", task(9, "Zombie"))], 99))
        .await
        .unwrap_err();
    assert!(matches!(stale, SinkError::Conflict { .. }), "{stale}");
    assert_eq!(sink.read_table(&tasks()).await.unwrap().len(), 3);
    assert_eq!(
        sink.state("sync").await.unwrap().checkpoint["cursor"],
        json!(2)
    );

    // A batch that fails half-way leaves neither its rows nor its checkpoint.
    let failing = batch(
        2,
        vec![
            upsert("tasks", task(4, "Half")),
            upsert("no_such_table", task(5, "Never")),
        ],
        3,
    );
    let error = sink.apply(failing).await.unwrap_err();
    assert!(matches!(error, SinkError::Config { .. }), "{error}");
    assert_eq!(sink.read_table(&tasks()).await.unwrap().len(), 3);
    let state = sink.state("sync").await.unwrap();
    assert_eq!((state.version, &state.checkpoint["cursor"]), (2, &json!(2)));

    // Soft delete (an update by key), hard delete by a parent's key, with other checkpoint keys.
    let follower = |task: &str, user: &str| {
        let mut row = Row::new();
        row.insert("task_gid".into(), Cell::Text(task.into()));
        row.insert("user_gid".into(), Cell::Text(user.into()));
        upsert("task_followers", row)
    };
    let deleted_at = Utc.with_ymd_and_hms(2026, 3, 2, 9, 30, 0).unwrap();
    let mut changes = vec![
        follower("1", "u1"),
        follower("1", "u2"),
        follower("3", "u1"),
    ];
    changes.push(Change::Update {
        table: "tasks".into(),
        filter: Row::from([("gid".to_string(), Cell::Text("3".into()))]),
        set: Row::from([("deleted_at".to_string(), Cell::Timestamp(deleted_at))]),
    });
    let mut with_sweep = batch(2, changes, 4);
    with_sweep
        .checkpoint
        .insert("sweep".into(), json!("2026-03-02T09:30:00Z"));
    assert_eq!(sink.apply(with_sweep).await.unwrap(), 3);
    let replace = Change::Delete {
        table: "task_followers".into(),
        filter: Row::from([("task_gid".to_string(), Cell::Text("1".into()))]),
    };
    sink.apply(batch(3, vec![replace, follower("1", "u3")], 5))
        .await
        .unwrap();
    let pairs: Vec<(Cell, Cell)> = sink
        .read_table(&followers())
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row["task_gid"].clone(), row["user_gid"].clone()))
        .collect();
    assert_eq!(
        pairs,
        [
            (Cell::Text("1".into()), Cell::Text("u3".into())),
            (Cell::Text("3".into()), Cell::Text("u1".into())),
        ]
    );
    let tasks_now = sink.read_table(&tasks()).await.unwrap();
    assert_eq!(tasks_now[2]["deleted_at"], Cell::Timestamp(deleted_at));
    let state = sink.state("sync").await.unwrap();
    assert_eq!(state.checkpoint["cursor"], json!(5));
    assert_eq!(state.checkpoint["sweep"], json!("2026-03-02T09:30:00Z"));

    // A column added to the definition later is added to the table; old rows read it as NULL.
    let mut wider = tasks();
    wider
        .columns
        .push(Column::new("section_gid", ColumnType::Text));
    sink.ensure_tables(&[wider.clone()]).await.unwrap();
    let read = sink.read_table(&wider).await.unwrap();
    assert_eq!(read[0]["section_gid"], Cell::Null);

    // More rows than one statement's parameter limit, in one batch.
    let many: Vec<Change> = (100..6_100)
        .map(|gid| upsert("tasks", task(gid, "Bulk")))
        .collect();
    sink.apply(batch(4, many, 6)).await.unwrap();
    assert_eq!(sink.read_table(&tasks()).await.unwrap().len(), 3 + 6_000);

    // Two writers from the same version: exactly one wins.
    let first = sink.clone();
    let second = sink.clone();
    let (a, b) = tokio::join!(
        first.apply(batch(5, vec![upsert("tasks", task(7, "A"))], 7)),
        second.apply(batch(5, vec![upsert("tasks", task(8, "B"))], 8)),
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    let loser = if a.is_err() { a } else { b };
    assert!(
        matches!(loser, Err(SinkError::Conflict { .. })),
        "{loser:?}"
    );
}

#[tokio::test]
async fn sqlite_tables_conform() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mirror/asana.sqlite");
    let sink = Arc::new(SqliteTables::open(&path).await.unwrap());
    conformance(sink).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[tokio::test]
async fn postgres_tables_conform() {
    let Some(database) = support::pg::TestDatabase::create("table sink on PostgreSQL").await else {
        return;
    };
    let settings: PostgresTableSettings =
        toml::from_str(&format!("url = {:?}\nschema = \"mirror\"\n", database.url)).unwrap();
    let sink = Arc::new(PostgresTables::connect(&settings).await.unwrap());
    conformance(sink).await;
}

#[tokio::test]
async fn a_postgres_url_and_password_come_from_files() {
    let Some(database) = support::pg::TestDatabase::create("table sink URL from a file").await
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("url");
    std::fs::write(&url_file, format!("{}\n", database.url)).unwrap();
    let settings: PostgresTableSettings = toml::from_str(&format!(
        "url_file = {:?}\n",
        url_file.display().to_string()
    ))
    .unwrap();
    let sink = PostgresTables::connect(&settings).await.unwrap();
    sink.ensure_tables(&[followers()]).await.unwrap();
    assert!(sink.read_table(&followers()).await.unwrap().is_empty());
    // A wrong password is a clear connection error, and it is not printed.
    let mut url = reqwest::Url::parse(&database.url).unwrap();
    url.set_username("nobody_here").unwrap();
    let settings: PostgresTableSettings =
        toml::from_str(&format!("url = {:?}\n", url.to_string())).unwrap();
    let error = PostgresTables::connect(&settings).await.unwrap_err();
    assert!(error.to_string().contains("cannot connect"), "{error}");
}
