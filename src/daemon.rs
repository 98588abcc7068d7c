//! The daemon: assembles the store, the job set, the scheduler, the worker pool and the admin
//! server, and runs them until shutdown.
//!
//! Lifecycle: the daemon takes its shutdown token and its clock as arguments (the CLI wires
//! SIGTERM/SIGINT to the token; tests cancel it themselves). SIGHUP re-reads the stored
//! credentials (also re-read every `reload_interval_secs`) and the job files; an invalid new set
//! keeps the old one running, is logged with every problem, and counted in
//! `asana_worker_config_reload_failures_total`. Under systemd (`NOTIFY_SOCKET` set) it reports
//! `READY=1` once every component runs, pings the watchdog, and reports `STOPPING=1` on drain.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::config::diagnostics::Diagnostics;
use crate::config::jobs::ValidationContext;
use crate::config::settings::Settings;
use crate::credentials::{ClientPool, PoolRuntime};
use crate::jobs::{Job, Kind, KindRunner};
use crate::scheduler::{JobSet, Scheduler};
use crate::store::{self, Store, StoreError};
use crate::telemetry::admin::{self, AdminError, AdminState};
use crate::worker::credential_leases::{CredentialBudgets, JobSetAnnouncement};
use crate::worker::{CredentialLeases, PoolSettings, WorkerPool};

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The job files are invalid.
    #[error("invalid job files:\n{0}")]
    Jobs(Diagnostics),
    /// The store could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The admin server could not listen.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The stored credentials cannot be used (no master key, wrong key, tampered row).
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialError),
    /// Another daemon runs on the same SQLite database.
    #[error(
        "another asana-worker daemon{holder} runs on the SQLite database {database}; SQLite takes one daemon per file: stop the other one, or use PostgreSQL (database.url = \"postgres://…\") for several replicas"
    )]
    Locked {
        /// The database file.
        database: String,
        /// " (pid N)" when the lock file names it.
        holder: String,
    },
    /// The admin token file could not be read.
    #[error(
        "cannot read admin.token_file {path}: {reason}; create it (e.g. `openssl rand -hex 32 > FILE`, mode 0600) or remove admin.token_file"
    )]
    AdminToken {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The daemon lock beside the SQLite database could not be taken or written.
    #[error("cannot take the daemon lock {path}: {source}; check the directory's permissions")]
    Lock {
        /// The lock file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Takes the daemon lock of a SQLite database (`<file>.daemon.lock`, an exclusive `flock` held
/// until the process exits, released by the kernel if it dies): a second daemon on the same file
/// refuses to start, and the holder knows every `running` run in the file was left by a daemon
/// that is gone. Returns None for PostgreSQL and in-memory databases.
fn take_sqlite_lock(url: &str) -> Result<Option<std::fs::File>, DaemonError> {
    use std::io::{Read, Seek, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    let Some(path) = crate::store::sqlite_file(url) else {
        return Ok(None);
    };
    let lock_path = format!("{}.daemon.lock", path.display());
    let lock_error = |source| DaemonError::Lock {
        path: lock_path.clone(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(lock_error)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(lock_error)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(DaemonError::Locked {
            database: path.display().to_string(),
            holder: if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            },
        });
    }
    file.set_len(0).map_err(lock_error)?;
    file.rewind().map_err(lock_error)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_error)?;
    Ok(Some(file))
}

/// `/readyz`'s view of the credentials: every credential an enabled job uses and
/// `config.toml` declares must have its token where it says (a deleted token file, an unset
/// variable makes the daemon not ready, naming it; stored credentials are checked when
/// decrypted).
#[derive(Debug)]
struct CredentialReadiness {
    credentials: std::collections::BTreeMap<String, crate::config::settings::CredentialSettings>,
    jobs: watch::Receiver<JobSet<Kind>>,
    leases: Arc<CredentialLeases>,
}

impl crate::telemetry::admin::Readiness for CredentialReadiness {
    fn problems(&self) -> Vec<(String, String)> {
        let jobs = self.jobs.borrow().clone();
        let mut users: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for job in jobs.iter().filter(|job| job.enabled) {
            users.entry(&job.credential).or_default().push(&job.name);
        }
        users
            .into_iter()
            .filter_map(|(name, jobs)| {
                let settings = self.credentials.get(name)?;
                let reason = settings.token_location(name).check().err()?;
                Some((
                    format!("credential {name:?} (jobs {})", jobs.join(", ")),
                    format!("has no token: {reason}"),
                ))
            })
            .collect()
    }

    fn details(&self) -> Vec<(&'static str, serde_json::Value)> {
        vec![
            ("job_set", self.leases.job_set_report()),
            ("credential_leases", serde_json::json!(self.leases.held())),
        ]
    }
}

/// The budgets the credential leases wait on and report from: those of the pool's clients.
#[derive(Debug)]
struct PoolBudgets(Arc<ClientPool>);

impl CredentialBudgets for PoolBudgets {
    fn last_use_age(&self, credential: &str) -> Option<Duration> {
        self.0.client(credential).ok()?.budget().last_use_age()
    }

    fn taken_over(&self, credential: &str, last_use_age: Duration) {
        match self.0.client(credential) {
            Ok(client) => client.budget().pause_after_handover(last_use_age),
            Err(error) => {
                tracing::warn!(credential = %credential, %error, "Took over a credential whose token cannot be read here")
            }
        }
    }
}

/// The scheduler leads only while no live replica runs newer job files.
#[derive(Debug)]
struct FreshJobFiles(Arc<CredentialLeases>);

impl crate::scheduler::LeadershipGate for FreshJobFiles {
    fn may_lead(&self) -> Result<(), String> {
        match self.0.newer_job_set_elsewhere() {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// What this process announces about its job set: the fingerprint of its job files, and the
/// enabled jobs of each credential (those the credential leases cover).
fn announcement(
    dir: &std::path::Path,
    jobs: &[Job],
    since: chrono::DateTime<chrono::Utc>,
) -> JobSetAnnouncement {
    let mut jobs_by_credential: std::collections::BTreeMap<String, Vec<String>> =
        Default::default();
    for job in jobs.iter().filter(|job| job.enabled) {
        jobs_by_credential
            .entry(job.credential.clone())
            .or_default()
            .push(job.name.clone());
    }
    JobSetAnnouncement {
        version: crate::jobs::job_set_version(dir),
        jobs: jobs.len(),
        jobs_by_credential,
        since,
    }
}

/// The validation context of the credentials declared in configuration.
pub fn validation_context(settings: &Settings) -> ValidationContext {
    validation_context_with(settings, &[])
}

/// The validation context of the configured credentials plus those `stored` in the database,
/// checking every secret the jobs need (where the jobs run: the daemon and `validate`).
pub fn validation_context_with(settings: &Settings, stored: &[String]) -> ValidationContext {
    ValidationContext::from_settings(settings)
        .with_stored(stored)
        .checking_secrets(settings)
}

/// Loads and validates the job files named by `settings` (credentials from configuration only).
pub fn load_jobs(settings: &Settings) -> Result<Vec<Job>, Diagnostics> {
    load_jobs_with(settings, &[])
}

/// Loads and validates the job files, which may also name the `stored` credentials; every
/// kind's own checks run here, secrets included: at start-up, on reload and for `validate`.
pub fn load_jobs_with(settings: &Settings, stored: &[String]) -> Result<Vec<Job>, Diagnostics> {
    crate::jobs::load_dir(
        &settings.jobs.dir,
        &validation_context_with(settings, stored),
    )
}

/// Loads the job files for a command that needs only what they say, not their secrets
/// (`jobs run`, `jobs list`, `verify` from an admin shell without the daemon's environment).
pub fn load_job_definitions(
    settings: &Settings,
    stored: &[String],
) -> Result<Vec<Job>, Diagnostics> {
    crate::jobs::load_dir(
        &settings.jobs.dir,
        &ValidationContext::from_settings(settings).with_stored(stored),
    )
}

/// A unique id for this process's leases.
pub fn process_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().to_string()[..8]
    )
}

/// Handles the running daemon gives its caller (tests, the demo).
#[derive(Debug, Clone)]
pub struct DaemonHandle {
    /// The store in use.
    pub store: Arc<dyn Store>,
    /// The job set in force.
    pub jobs: watch::Receiver<JobSet<Kind>>,
    /// The admin server's address, when it runs.
    pub admin_addr: Option<std::net::SocketAddr>,
}

/// Runs the daemon until `shutdown` is cancelled. `started` is called once every component runs.
/// `reload` delivers SIGHUP (a `()` per signal); pass a channel that never fires to disable it.
pub async fn run(
    settings: Settings,
    clock: SharedClock,
    shutdown: CancellationToken,
    mut reload: tokio::sync::mpsc::Receiver<()>,
    started: impl FnOnce(DaemonHandle) + Send,
) -> Result<(), DaemonError> {
    // Held until this function returns; the kernel releases it if the process dies.
    let sqlite_lock = take_sqlite_lock(&settings.database.url)?;
    let store = store::open(&settings.database.url).await?;
    if sqlite_lock.is_some() {
        // No other daemon can use this file: its running runs were left by one that stopped
        // (a crash, a SIGKILL before `Restart=on-failure`), so they resume now rather than
        // when their leases expire.
        let rescued = store.rescue_running(clock.now()).await?;
        if rescued > 0 {
            tracing::warn!(
                count = rescued,
                "Rescued the runs a previous daemon left running"
            );
            metrics::counter!("asana_worker_lease_rescues_total").increment(rescued);
        }
    }
    let stored = crate::credentials::load_stored(&*store, &settings).await?;
    let stored_names: Vec<String> = stored.iter().map(|c| c.name.clone()).collect();
    if !stored_names.is_empty() {
        tracing::info!(count = stored_names.len(), "Loaded stored credentials");
    }
    let initial = load_jobs_with(&settings, &stored_names).map_err(DaemonError::Jobs)?;
    // A declared credential without its token fails the jobs that use it at load (above); one
    // that no job uses yet is worth a warning before someone adds such a job.
    for (name, reason) in ValidationContext::from_settings(&settings)
        .checking_secrets(&settings)
        .unavailable
    {
        tracing::warn!(credential = %name, reason = %reason, "Credential has no token; jobs that name it will be refused until it has one");
    }
    tracing::info!(jobs = initial.len(), dir = %settings.jobs.dir.display(), database = %redact_url(&settings.database.url), "Loaded job definitions");
    register_series(&initial, &settings, &stored_names);
    let (announce_tx, announce_rx) =
        watch::channel(announcement(&settings.jobs.dir, &initial, clock.now()));
    let (jobs_tx, jobs_rx) = watch::channel::<JobSet<Kind>>(Arc::new(initial));
    // The key ring seals refreshed OAuth tokens; without stored credentials a missing key is
    // no error (one added later is loaded by the periodic reload, which needs the key anyway).
    let ring = match crate::credentials::key_ring(&settings) {
        Ok(ring) => Some(Arc::new(ring)),
        Err(error) if !stored.is_empty() => return Err(error.into()),
        Err(_) => None,
    };
    let clients = ClientPool::with_runtime(
        &settings,
        stored,
        PoolRuntime {
            store: Some(store.clone()),
            clock: clock.clone(),
            ring,
        },
    );
    let owner = process_owner();
    // Several processes can share a PostgreSQL database: each credential is then run by one
    // of them at a time. A SQLite database has one daemon (its lock), which only announces
    // its job set.
    let sharing = !settings.database.url.starts_with("sqlite:");
    let leases = Arc::new(
        CredentialLeases::new(
            store.clone(),
            clock.clone(),
            owner.clone(),
            Duration::from_secs(settings.worker.credential_lease_secs.max(1)),
            Arc::new(PoolBudgets(clients.clone())),
            announce_rx.clone(),
        )
        .sharing_credentials(sharing),
    );
    let health = crate::health::Health::new();
    let tracker = TaskTracker::new();
    let components = CancellationToken::new();

    let scheduler = Scheduler::new(
        store.clone(),
        clock.clone(),
        jobs_rx.clone(),
        owner.clone(),
        Duration::from_millis(settings.scheduler.tick_ms.max(10)),
        Duration::from_secs(settings.scheduler.leader_lease_secs.max(1)),
    )
    .with_health(health.clone())
    .with_leadership_gate(Arc::new(FreshJobFiles(leases.clone())));
    let last_tick = scheduler.last_tick();
    let accepting = Arc::new(AtomicBool::new(false));
    let mut admin_addr = None;
    if settings.admin.enabled {
        let listener = admin::bind(settings.admin.listen).await?;
        admin_addr = listener.local_addr().ok();
        let state = AdminState {
            store: store.clone(),
            metrics: crate::telemetry::install_metrics(),
            scheduler_last_tick: last_tick.clone(),
            scheduler_stall_after: Duration::from_millis(
                settings.scheduler.tick_ms.saturating_mul(5).max(10_000),
            ),
            accepting: accepting.clone(),
            clock: clock.clone(),
            health: health.clone(),
            readiness: Arc::new(CredentialReadiness {
                credentials: settings.credentials.clone(),
                jobs: jobs_rx.clone(),
                leases: leases.clone(),
            }),
        };
        let admin_token_sha256 = match &settings.admin.token_file {
            None => None,
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| DaemonError::AdminToken {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                if token.trim().len() < 16 {
                    return Err(DaemonError::AdminToken {
                        path: path.display().to_string(),
                        reason: "it holds fewer than 16 characters".into(),
                    });
                }
                Some(crate::status::token_digest(&token))
            }
        };
        let status = crate::status::router(crate::status::StatusSource {
            admin_token_sha256,
            store: store.clone(),
            jobs: jobs_rx.clone(),
            clients: clients.clone(),
            leases: leases.clone(),
            clock: clock.clone(),
            limits: settings
                .credentials
                .iter()
                .map(|(name, credential)| {
                    (
                        name.clone(),
                        credential
                            .requests_per_minute
                            .unwrap_or(match credential.tier {
                                crate::config::settings::CredentialTier::Free => 150,
                                crate::config::settings::CredentialTier::Paid => 1500,
                            }),
                    )
                })
                .collect(),
        });
        let stop = components.clone();
        tracker.spawn(async move { admin::serve(listener, state, status, stop).await });
        tracing::info!(addr = %admin_addr.map(|a| a.to_string()).unwrap_or_default(), "Admin server listening (/healthz /readyz /metrics)");
    }
    {
        let stop = components.clone();
        tracker.spawn(async move { scheduler.run(stop).await });
    }
    let runner = Arc::new(
        KindRunner::new(jobs_rx.clone(), clients.clone())
            .with_sink_context(crate::sinks::SinkContext::from_settings(&settings)),
    );
    let pool = Arc::new(
        WorkerPool::new(
            store.clone(),
            clock.clone(),
            runner,
            PoolSettings {
                owner: owner.clone(),
                concurrency: settings.worker.concurrency,
                per_kind: settings.worker.per_kind.clone(),
                kinds: Kind::NAMES.iter().map(|name| name.to_string()).collect(),
                lease: Duration::from_secs(settings.worker.lease_secs),
                heartbeat: Duration::from_secs(settings.worker.heartbeat_secs),
                poll_interval: Duration::from_millis(settings.worker.poll_interval_ms.max(10)),
                shutdown_grace: Duration::from_secs(settings.worker.shutdown_grace_secs),
            },
        )
        .with_health(health.clone())
        .with_credential_leases(leases.clone()),
    );
    // The first round runs before the pool claims anything, so that a replica starts with its
    // share of the credentials instead of claiming nothing for a round.
    if let Err(error) = leases.round().await {
        tracing::warn!(%error, "Could not take credential leases at start; retrying every round");
    }
    let leases_stop = CancellationToken::new();
    let leases_task = {
        let leases = leases.clone();
        let stop = leases_stop.clone();
        tokio::spawn(async move { leases.run(stop).await })
    };
    let pool_stop = CancellationToken::new();
    let pool_task = {
        let stop = pool_stop.clone();
        tokio::spawn(pool.run(stop))
    };
    accepting.store(true, Ordering::Relaxed);
    notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(owner = %owner, "Daemon started");
    started(DaemonHandle {
        store: store.clone(),
        jobs: jobs_rx.clone(),
        admin_addr,
    });

    let watchdog = sd_watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut prune_tick = tokio::time::interval(Duration::from_secs(3600));
    let mut credentials_tick = tokio::time::interval(Duration::from_secs(
        settings.credentials_store.reload_interval_secs.max(1),
    ));
    credentials_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hygiene_tick = tokio::time::interval(Duration::from_secs(
        settings.credentials_store.hygiene_interval_secs.max(1),
    ));
    hygiene_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stored_names = stored_names;
    // Job files are also re-read when they change on disk (a ConfigMap update swaps a symlink
    // rather than writing a file, which file-change notifications can miss; a fingerprint of
    // names, sizes and modification times, polled, sees it).
    let mut jobs_tick = tokio::time::interval(JOB_FILES_POLL);
    jobs_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut job_files = job_files_fingerprint(&settings.jobs.dir);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = jobs_tick.tick() => {
                let now = job_files_fingerprint(&settings.jobs.dir);
                if now != job_files {
                    job_files = now;
                    tracing::info!(dir = %settings.jobs.dir.display(), "Job files changed on disk; reloading");
                    reload_jobs(&settings, &stored_names, &jobs_tx, &announce_tx, &clock);
                }
            }
            Some(()) = reload.recv() => {
                if let Some(names) = reload_credentials(&settings, &*store, &clients).await {
                    stored_names = names;
                }
                reload_jobs(&settings, &stored_names, &jobs_tx, &announce_tx, &clock);
            }
            _ = credentials_tick.tick() => {
                if let Some(names) = reload_credentials(&settings, &*store, &clients).await
                    && names != stored_names
                {
                    // A credential was added or removed: job files naming it become valid.
                    stored_names = names;
                    reload_jobs(&settings, &stored_names, &jobs_tx, &announce_tx, &clock);
                }
            }
            _ = hygiene_tick.tick() => {
                match store.list_credentials().await {
                    Ok(rows) => {
                        crate::credentials::monitor::export_hygiene(&rows, clock.now(), &settings.credentials_store);
                    }
                    Err(error) => tracing::warn!(%error, "Could not read the stored credentials for the hygiene check"),
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => notify(&[sd_notify::NotifyState::Watchdog]),
            _ = prune_tick.tick() => {
                let cutoff = clock.now() - chrono::Duration::days(i64::from(settings.worker.history_retention_days));
                match store.prune_runs(cutoff).await {
                    Ok(0) => {}
                    Ok(count) => tracing::info!(count, "Pruned old run history"),
                    Err(error) => tracing::warn!(%error, "Could not prune run history"),
                }
            }
        }
    }
    tracing::info!("Shutting down: draining running jobs");
    notify(&[sd_notify::NotifyState::Stopping]);
    accepting.store(false, Ordering::Relaxed);
    pool_stop.cancel();
    let _ = pool_task.await;
    // The runs have ended or been released: the credentials go to the other replicas now,
    // with the moment of their last use.
    leases_stop.cancel();
    let _ = leases_task.await;
    components.cancel();
    tracker.close();
    tracker.wait().await;
    tracing::info!("Stopped");
    Ok(())
}

/// Re-reads the stored credentials into the pool (a `creds add --replace` or `creds authorize
/// --replace` takes effect without a restart). Returns their names, or None when they cannot be
/// read (the credentials in use keep working).
async fn reload_credentials(
    settings: &Settings,
    store: &dyn Store,
    clients: &ClientPool,
) -> Option<Vec<String>> {
    match crate::credentials::load_stored(store, settings).await {
        Ok(stored) => {
            let mut names: Vec<String> = stored.iter().map(|c| c.name.clone()).collect();
            names.sort();
            let changed = clients.reload_stored(stored);
            if !changed.is_empty() {
                tracing::info!(credentials = ?changed, "Reloaded stored credentials");
            }
            Some(names)
        }
        Err(error) => {
            tracing::error!(%error, "Could not reload the stored credentials; the ones loaded before stay in use");
            None
        }
    }
}

/// How often the job directory is checked for changes.
const JOB_FILES_POLL: Duration = Duration::from_secs(5);

/// Names, sizes and modification times of the `*.toml` files of `dir` (following symlinks, as a
/// ConfigMap mount uses them), sorted; empty when the directory cannot be read.
fn job_files_fingerprint(
    dir: &std::path::Path,
) -> Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "toml"))
        .filter_map(|entry| {
            let metadata = std::fs::metadata(entry.path()).ok()?;
            Some((entry.file_name(), metadata.len(), metadata.modified().ok()))
        })
        .collect();
    files.sort();
    files
}

/// Registers at zero the counters alerts watch, for these jobs and every credential (see
/// `telemetry::catalog`).
fn register_series(jobs: &[Job], settings: &Settings, stored: &[String]) {
    // The recorder must be in place first, or the series go to the no-op recorder.
    crate::telemetry::install_metrics();
    crate::telemetry::catalog::register_at_zero(
        jobs.iter().map(|job| (job.name.as_str(), job.kind.name())),
        settings
            .credentials
            .keys()
            .map(String::as_str)
            .chain(stored.iter().map(String::as_str)),
    );
}

/// Re-reads the job files; keeps the running set when the new one is invalid.
fn reload_jobs(
    settings: &Settings,
    stored: &[String],
    jobs: &watch::Sender<JobSet<Kind>>,
    announce: &watch::Sender<JobSetAnnouncement>,
    clock: &SharedClock,
) {
    match load_jobs_with(settings, stored) {
        Ok(new_jobs) => {
            let next = announcement(&settings.jobs.dir, &new_jobs, clock.now());
            tracing::info!(jobs = new_jobs.len(), job_set = %next.version, "Reloaded job definitions");
            announce.send_if_modified(|current| {
                // The set's age counts from the last change, not from every reload.
                let changed = current.version != next.version
                    || current.jobs_by_credential != next.jobs_by_credential;
                if changed {
                    *current = next;
                }
                changed
            });
            register_series(&new_jobs, settings, stored);
            metrics::counter!("asana_worker_config_reloads_total").increment(1);
            let _ = jobs.send(Arc::new(new_jobs));
        }
        Err(problems) => {
            tracing::error!(problems = %problems, "Reload refused: the job files are invalid; the previous jobs keep running");
            metrics::counter!("asana_worker_config_reload_failures_total").increment(1);
        }
    }
}

fn notify(states: &[sd_notify::NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(error) = sd_notify::notify(states)
    {
        tracing::warn!(%error, "Could not notify systemd");
    }
}

fn sd_watchdog_interval() -> Option<Duration> {
    let micros: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(micros / 2).max(Duration::from_millis(1)))
}

pub use crate::store::redact_url;

/// The config file path given on the command line or in `ASANA_WORKER_CONFIG`.
pub fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| std::env::var_os("ASANA_WORKER_CONFIG").map(PathBuf::from))
}
