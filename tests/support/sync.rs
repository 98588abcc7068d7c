//! Sync jobs under test: the simulator, a daemon with one `sync` job writing to a SQLite file
//! or a throw-away PostgreSQL database, and the equality check every sync test ends with: the
//! mirror's live rows equal what a sequential walk of the API reads, table by table.

use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;

use asana_worker::asana::{AsanaClient, ClientConfig};
use asana_worker::budget::{Budget, BudgetConfig, Tier};
use asana_worker::jobs::sync::walk::{self, Snapshot};
use asana_worker::jobs::sync::{SyncSettings, tables};
use asana_worker::sim::config::TokenSpec;
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::sinks::table::{self, TableSink, TableSinkSettings};
use serde_json::Value;

use super::daemon::{Daemon, DaemonOptions, kill, terminate};
use super::pg::TestDatabase;

/// Where a sync under test writes.
pub enum Target {
    /// A SQLite file in the daemon's directory.
    Sqlite,
    /// A database created for the test.
    Postgres(TestDatabase),
}

impl Target {
    /// PostgreSQL when `ASANA_WORKER_TEST_PG_URL` is set; None (and a SKIPPED line) otherwise.
    pub async fn postgres(what: &str) -> Option<Target> {
        TestDatabase::create(what).await.map(Target::Postgres)
    }
}

/// A simulator, a daemon and its `sync` job.
pub struct SyncSetup {
    pub sim: SimServer,
    pub daemon: Daemon,
    pub target: Target,
    /// The `[settings]` lines besides `workspace` and the sink.
    pub settings: String,
    /// The job's credential (`sa`: the service account, unless [`SyncSetup::with_credential`]).
    pub credential: String,
    /// The token the reference walk reads with (a reader standing for the job's token).
    pub walk_token: String,
    /// The job's schedule line (by hand only, unless a test wants it to fire on its own).
    pub schedule: String,
    child: Option<Child>,
    starts: usize,
}

/// A world small enough for many rounds, with no background activity.
pub fn small_world() -> SimConfig {
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.world.audit_events = 0;
    config.world.projects = 6;
    config.world.tasks_per_project = 8;
    with_reader(config)
}

/// Adds the service account `reader`, whose quota the reference walk spends, so that reading
/// the world back never takes from the job's budget.
pub fn with_reader(mut config: SimConfig) -> SimConfig {
    if config.tokens.is_empty() {
        config.tokens = SimConfig::default_tokens();
    }
    // Each reader sees what the token it stands for sees: same kind, tier, user, projects.
    let readers: Vec<TokenSpec> = config
        .tokens
        .iter()
        .filter_map(|spec| {
            let name = match spec.name.as_str() {
                "service-account" => READER,
                "pat-free" => FREE_READER,
                _ => return None,
            };
            Some(TokenSpec {
                name: name.into(),
                secret: Some(format!("sim-{name}-0001")),
                ..spec.clone()
            })
        })
        .collect();
    config.tokens.extend(readers);
    config.limits.paid_per_minute = READER_PER_MINUTE;
    config.limits.free_per_minute = READER_PER_MINUTE;
    config
}

/// The reader standing for the free PAT.
pub const FREE_READER: &str = "reader-free";

/// The reference walk's quota: the simulator's paid quota is raised to it, which the job's
/// budget (1,500/min) never notices.
const READER_PER_MINUTE: u32 = 1_000_000;

/// The token the reference walk reads with.
pub const READER: &str = "reader";

impl SyncSetup {
    /// Starts the simulator and writes the daemon's config and the job `sync`.
    pub async fn new(config: SimConfig, target: Target, settings: &str) -> SyncSetup {
        let sim = SimServer::start(config).await.expect("simulator starts");
        let daemon = Daemon::new(
            &sim,
            DaemonOptions {
                worker: "concurrency = 4",
                ..DaemonOptions::default()
            },
        );
        let setup = SyncSetup {
            sim,
            daemon,
            target,
            settings: settings.to_string(),
            credential: "sa".into(),
            walk_token: READER.into(),
            schedule: "every = \"365d\"".into(),
            child: None,
            starts: 0,
        };
        setup.write_job();
        setup
    }

    /// Runs the job with the simulator's token `token` (e.g. `pat-free`, declared as a
    /// credential of that name with `tier`), and walks the world as `walk_token`.
    pub fn with_credential(mut self, token: &str, tier: &str, walk_token: &str) -> SyncSetup {
        self.daemon.add_credential(&self.sim, token, tier);
        self.credential = token.into();
        self.walk_token = walk_token.into();
        self.write_job();
        self
    }

    /// Replaces the `[settings]` lines and rewrites the job (a running daemon needs a restart).
    pub fn set_settings(&mut self, settings: &str) {
        self.settings = settings.into();
        self.write_job();
    }

    pub fn workspace(&self) -> String {
        self.sim.state().world().workspace.gid.clone()
    }

    fn sink_toml(&self) -> String {
        match &self.target {
            Target::Sqlite => format!(
                "type = \"sqlite\"\npath = \"{}\"",
                self.mirror_path().display()
            ),
            Target::Postgres(db) => format!("type = \"postgres\"\nurl = \"{}\"", db.url),
        }
    }

    /// The SQLite file of the mirror.
    pub fn mirror_path(&self) -> PathBuf {
        self.daemon.dir.path().join("mirror.sqlite")
    }

    /// (Re)writes `jobs/sync.toml`: run by hand only (`every` of a year).
    pub fn write_job(&self) {
        let text = format!(
            "name = \"sync\"\nkind = \"sync\"\n{}\ncredential = \"{}\"\nmax_attempts = 3\noverlap = \"skip\"\n\n[settings]\nworkspace = \"{}\"\n{}\n\n[settings.sink]\n{}\n",
            self.schedule,
            self.credential,
            self.workspace(),
            self.settings,
            self.sink_toml()
        );
        self.daemon.write_job("sync", &text);
    }

    /// The job's settings, as the daemon reads them.
    pub fn parsed_settings(&self) -> SyncSettings {
        let text = std::fs::read_to_string(self.daemon.jobs_dir().join("sync.toml")).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        doc["settings"].clone().try_into().expect("sync settings")
    }

    /// Starts the daemon (if not running) and waits until it is ready.
    pub async fn start(&mut self) {
        if self.child.is_none() {
            self.starts += 1;
            let mut child = self.daemon.start(&format!("daemon-{}", self.starts));
            self.daemon.wait_ready(&mut child).await;
            self.child = Some(child);
        }
    }

    /// Whether the daemon is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The sync's checkpoint as the mirror holds it (`_asana_worker_checkpoints`, key `sync`).
    pub async fn sync_state(&self) -> Value {
        let sink = self.sink().await;
        // Before the job's first run the tables do not exist yet; creating them is what the
        // job's first step does too.
        sink.ensure_tables(&tables::defs()).await.unwrap();
        let state = sink.state("sync").await.unwrap();
        state.checkpoint.get("sync").cloned().unwrap_or(Value::Null)
    }

    /// SIGKILLs the daemon.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Stops the daemon gracefully.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }

    /// Enqueues a run of `sync` and waits for its end; the CLI's output and whether it completed.
    pub fn run(&self) -> (bool, String) {
        let output = self
            .daemon
            .cli(&["jobs", "run", "sync", "--wait", "--timeout-secs", "300"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    /// Runs `sync` to completion, failing the test otherwise; the CLI's output.
    pub fn run_ok(&self) -> String {
        let started = std::time::Instant::now();
        let (ok, text) = self.run();
        println!(
            "sync run took {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            text.lines().last().unwrap_or_default()
        );
        assert!(
            ok,
            "sync run failed:\n{text}\n--- daemon log ---\n{}",
            self.log()
        );
        text
    }

    /// The log of the current (last) daemon process.
    pub fn log(&self) -> String {
        self.daemon.log(&format!("daemon-{}", self.starts))
    }

    /// The mirror, opened as the job opens it.
    pub async fn sink(&self) -> Arc<dyn TableSink> {
        let settings: TableSinkSettings = self.parsed_settings().sink;
        let context = asana_worker::sinks::SinkContext {
            state_dir: self.daemon.dir.path().to_path_buf(),
        };
        table::build(&settings, &context)
            .await
            .expect("the mirror opens")
    }

    /// A client of the service account, for reading the world back.
    pub fn client(&self) -> AsanaClient {
        // The reader's own token, with a quota no walk reaches (see `with_reader`).
        let mut config = BudgetConfig::new(&self.walk_token, Tier::Paid);
        config.requests_per_minute = Some(READER_PER_MINUTE);
        let budget = Budget::new(config).unwrap();
        AsanaClient::new(
            ClientConfig::with_base_url(self.sim.base_url()),
            self.sim.token(&self.walk_token).unwrap().into(),
            budget,
        )
        .unwrap()
    }

    /// What the tables should hold: a sequential walk of the API.
    pub async fn world(&self) -> Snapshot {
        let settings = self.parsed_settings();
        walk::walk(&self.client(), &settings)
            .await
            .expect("the walk")
            .snapshot
    }

    /// The mirror's live rows.
    pub async fn mirror(&self) -> Snapshot {
        walk::mirror_snapshot(&*self.sink().await)
            .await
            .expect("the mirror reads")
    }

    /// Fails with the differences unless every table equals the world.
    pub async fn assert_mirror_equals_world(&self, when: &str) {
        let (world, mirror) = (self.world().await, self.mirror().await);
        let differences = walk::differences(&world, &mirror);
        assert!(
            differences.is_empty(),
            "{when}: the mirror differs from the world:\n{}",
            differences.join("\n")
        );
        let sizes: Vec<String> = world
            .iter()
            .map(|(t, rows)| format!("{t}={}", rows.len()))
            .collect();
        println!("{when}: mirror equals the world ({})", sizes.join(" "));
        assert!(
            world.get("tasks").is_some_and(|t| !t.is_empty()),
            "{when}: no tasks at all"
        );
    }

    /// `sync_status` rows: (resource, scope, state).
    pub async fn gaps(&self) -> Vec<(String, String, String)> {
        let def = tables::spec(tables::STATUS_TABLE).def();
        self.sink()
            .await
            .read_table(&def)
            .await
            .unwrap()
            .into_iter()
            .map(|row| {
                let text = |k: &str| match row.get(k) {
                    Some(table::Cell::Text(t)) => t.clone(),
                    _ => String::new(),
                };
                (text("resource"), text("scope_gid"), text("state"))
            })
            .collect()
    }

    /// The run's final progress figures: the JSON on the last line of `jobs run --wait`'s
    /// output that holds one.
    pub fn last_progress(text: &str) -> Option<Value> {
        text.lines().rev().find_map(|line| {
            line.find('{')
                .and_then(|i| serde_json::from_str(&line[i..]).ok())
        })
    }
}

impl Drop for SyncSetup {
    fn drop(&mut self) {
        self.stop();
    }
}
