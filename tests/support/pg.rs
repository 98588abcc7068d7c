//! A throw-away PostgreSQL database per test, on the server named by `ASANA_WORKER_TEST_PG_URL`.

#![allow(dead_code)]

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The variable naming the PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`.
pub const PG_URL_VAR: &str = "ASANA_WORKER_TEST_PG_URL";

/// A database `aw_test_<random>` created for one test and dropped (connections and all) when
/// this guard is dropped, also when the test panics.
#[derive(Debug)]
pub struct TestDatabase {
    /// URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates the database, or prints `SKIPPED: …` and returns None when the variable is
    /// unset. `what` names the skipped tests.
    pub async fn create(what: &str) -> Option<Self> {
        let Ok(admin_url) = std::env::var(PG_URL_VAR) else {
            println!("SKIPPED: {what} ({PG_URL_VAR} is unset)");
            return None;
        };
        let name = format!("aw_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {PG_URL_VAR}={admin_url}: {error}"));
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("CREATE DATABASE");
        let _ = admin.close().await;
        let mut url = reqwest::Url::parse(&admin_url).expect("a postgres:// URL");
        url.set_path(&format!("/{name}"));
        Some(Self {
            url: url.to_string(),
            admin_url,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime (or during a panic): do the async work on a thread of
        // its own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|error| error.to_string())?;
                let result = tokio::time::timeout(
                    Duration::from_secs(30),
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut admin),
                )
                .await;
                let _ = admin.close().await;
                match result {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                }
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test database {}: {dropped:?}",
                self.name
            );
        }
    }
}
