//! Credential leases: when several daemons share one database, each credential is run by one
//! process at a time, so that process's budget is the token's whole budget (requests per minute,
//! searches, concurrent reads and writes, export slots) and no two processes spend the same
//! quota blind to each other. See ARCHITECTURE.md, "Replicas share a token's budget".
//!
//! Every round (a third of the lease's length) the keeper announces this process in the
//! `replicas` table, counts the live ones, renews the credential leases it holds and takes free
//! ones up to its fair share (`ceil(credentials / replicas)`), giving back, once their runs
//! have ended here, those above it. The worker pool claims no run of a job whose credential
//! this process does not hold ([`CredentialLeases::excluded_jobs`]).
//!
//! A lease taken from another process makes the budget wait until that process's requests
//! have left Asana's window: a process handing a lease over records when it last used the
//! token; one that died is assumed to have used it until its lease expired.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::store::{ReplicaRow, Store, StoreError};

/// The prefix of a credential's lease name in the `leases` table.
pub const LEASE_PREFIX: &str = "credential:";

/// What the keeper needs from the budgets of the credentials it takes and gives back.
pub trait CredentialBudgets: Send + Sync + std::fmt::Debug {
    /// How long ago the credential's last request that Asana still counts ended (zero while
    /// one is in flight); None when none counts any more.
    fn last_use_age(&self, credential: &str) -> Option<Duration>;

    /// The credential was taken over from another process that used it `last_use_age` ago:
    /// wait until that use has left Asana's window before sending.
    fn taken_over(&self, credential: &str, last_use_age: Duration);
}

/// What this process announces about itself besides its liveness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSetAnnouncement {
    /// The job set's fingerprint.
    pub version: String,
    /// How many jobs it has.
    pub jobs: usize,
    /// The jobs of each credential that enabled jobs use.
    pub jobs_by_credential: BTreeMap<String, Vec<String>>,
    /// Since when this process runs this set.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct Held {
    credentials: BTreeSet<String>,
    /// False until the first round: until then no job's credential is known to be held.
    started: bool,
    /// The live replicas at the last round.
    replicas: Vec<ReplicaRow>,
    /// Since when the live replicas have run different job sets, if they do.
    disagreeing_since: Option<DateTime<Utc>>,
    /// Whether that disagreement has been reported.
    reported: bool,
    /// The version last exported as `asana_worker_job_set_info`.
    exported_version: Option<String>,
}

/// The credential leases of this process, and the announcement of its job set.
#[derive(Debug)]
pub struct CredentialLeases {
    store: Arc<dyn Store>,
    clock: SharedClock,
    owner: String,
    ttl: Duration,
    budgets: Arc<dyn CredentialBudgets>,
    announcement: tokio::sync::watch::Receiver<JobSetAnnouncement>,
    /// Runs in progress in this process, by job name (the pool keeps it).
    running: Arc<Mutex<BTreeMap<String, usize>>>,
    held: Mutex<Held>,
    started_at: DateTime<Utc>,
    /// False on SQLite (one daemon): the process runs every credential and only announces
    /// itself.
    sharing: bool,
}

/// How long replicas may run different job sets before it is reported: a reload (the job
/// directory is polled every 5 s) plus the time a ConfigMap update takes to reach every pod.
pub const JOB_SET_DISAGREEMENT_GRACE: Duration = Duration::from_secs(90);

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl CredentialLeases {
    /// A keeper for `owner`'s leases of length `ttl`, taking each credential's jobs from
    /// `announcement`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: SharedClock,
        owner: String,
        ttl: Duration,
        budgets: Arc<dyn CredentialBudgets>,
        announcement: tokio::sync::watch::Receiver<JobSetAnnouncement>,
    ) -> Self {
        let started_at = clock.now();
        Self {
            store,
            clock,
            owner,
            ttl,
            budgets,
            announcement,
            running: Arc::default(),
            held: Mutex::default(),
            started_at,
            sharing: true,
        }
    }

    /// With `false`, the process holds no leases and claims every job's runs (a SQLite
    /// database, which one daemon uses); it still announces its job set.
    pub fn sharing_credentials(mut self, sharing: bool) -> Self {
        self.sharing = sharing;
        self
    }

    /// This process's job set and the other live replicas', for `/readyz`: version, jobs,
    /// since when, and a disagreement between replicas with its age.
    pub fn job_set_report(&self) -> serde_json::Value {
        let announcement = self.announcement.borrow().clone();
        let state = lock(&self.held);
        let replicas: Vec<serde_json::Value> = state
            .replicas
            .iter()
            .map(|r| {
                serde_json::json!({
                    "owner": r.owner,
                    "job_set": r.job_set,
                    "jobs": r.jobs,
                    "since": r.job_set_since,
                    "version": r.version,
                })
            })
            .collect();
        serde_json::json!({
            "version": announcement.version,
            "jobs": announcement.jobs,
            "since": announcement.since,
            "replicas": replicas,
            "disagreeing_since": state.disagreeing_since,
        })
    }

    /// The map of runs in progress by job that the worker pool must keep up to date.
    pub fn running_jobs(&self) -> Arc<Mutex<BTreeMap<String, usize>>> {
        self.running.clone()
    }

    /// Whether credentials are shared out between processes (PostgreSQL); without, this
    /// process runs every credential.
    pub fn is_sharing(&self) -> bool {
        self.sharing
    }

    /// The credentials this process holds now.
    pub fn held(&self) -> BTreeSet<String> {
        lock(&self.held).credentials.clone()
    }

    /// Jobs whose runs this process must not claim: those of credentials it does not hold.
    /// Jobs this process does not define are not listed (it cannot know their credential); a
    /// worker that claims one leaves it for a replica that defines it.
    pub fn excluded_jobs(&self) -> Vec<String> {
        if !self.sharing {
            return Vec::new();
        }
        let held = lock(&self.held);
        let announcement = self.announcement.borrow();
        announcement
            .jobs_by_credential
            .iter()
            .filter(|(credential, _)| !held.started || !held.credentials.contains(*credential))
            .flat_map(|(_, jobs)| jobs.iter().cloned())
            .collect()
    }

    /// Why this process should not lead the scheduler, if it should not: a live replica
    /// announced a different job set that it loaded after this process loaded its own (a
    /// ConfigMap update that has not reached this pod yet).
    pub fn newer_job_set_elsewhere(&self) -> Option<String> {
        let announcement = self.announcement.borrow();
        let state = lock(&self.held);
        state
            .replicas
            .iter()
            .filter(|r| r.owner != self.owner)
            .find(|r| r.job_set != announcement.version && r.job_set_since > announcement.since)
            .map(|r| {
                format!(
                    "replica {} runs job set {} since {}, newer than this replica's {} (since {})",
                    r.owner,
                    r.job_set,
                    r.job_set_since.to_rfc3339(),
                    announcement.version,
                    announcement.since.to_rfc3339()
                )
            })
    }

    /// Runs rounds until `shutdown`, then hands every held lease over.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval((self.ttl / 3).max(Duration::from_millis(100)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = every.tick() => {
                    match self.round().await {
                        Ok(()) => failing = false,
                        Err(error) => {
                            if !failing {
                                tracing::warn!(%error, "Could not renew the credential leases; runs of credentials whose lease expires stop being claimed here");
                            }
                            failing = true;
                        }
                    }
                }
            }
        }
        self.hand_over_all().await;
    }

    /// One round: announce, count replicas, renew, take, give back.
    pub async fn round(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let announcement = self.announcement.borrow().clone();
        self.store
            .announce_replica(&ReplicaRow {
                owner: self.owner.clone(),
                job_set: announcement.version.clone(),
                jobs: i32::try_from(announcement.jobs).unwrap_or(i32::MAX),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_at: self.started_at,
                seen_at: now,
                expires_at: now + chrono::Duration::from_std(self.ttl).unwrap_or_default(),
                job_set_since: announcement.since,
            })
            .await?;
        let live = self.store.live_replicas(now).await?;
        self.watch_job_sets(&announcement, live, now);
        if !self.sharing {
            lock(&self.held).started = true;
            return Ok(());
        }
        let replicas = lock(&self.held).replicas.len().max(1);
        let wanted: BTreeSet<String> = announcement.jobs_by_credential.keys().cloned().collect();
        let share = wanted.len().div_ceil(replicas);
        let mut held = self.held();

        // Renew what is held; a lease lost meanwhile (this process stalled past its expiry)
        // is dropped at once.
        for credential in held.clone() {
            if !self
                .store
                .acquire_lease(&lease_name(&credential), &self.owner, now, self.ttl)
                .await?
            {
                tracing::warn!(credential = %credential, "Lost the credential's lease to another replica; its jobs run there now");
                held.remove(&credential);
            }
        }
        // Give back credentials no job uses any more, and those above the fair share once
        // none of their runs is in progress here.
        let running = self.running_credentials(&announcement);
        let surplus = held.len().saturating_sub(share);
        let idle: Vec<String> = held
            .iter()
            .filter(|c| !wanted.contains(*c) || !running.contains(*c))
            .cloned()
            .collect();
        let mut given_back = 0;
        for credential in idle {
            let unused = !wanted.contains(&credential);
            if !unused && given_back >= surplus {
                continue;
            }
            if !unused {
                given_back += 1;
            }
            self.hand_over(&credential).await?;
            held.remove(&credential);
        }
        // Take free credentials up to the share, in an order of this process's own so that
        // replicas starting together do not all reach for the same one first.
        let mut candidates: Vec<&String> = wanted.iter().filter(|c| !held.contains(*c)).collect();
        candidates.sort_by_key(|c| spread_key(&self.owner, c));
        for credential in candidates {
            if held.len() >= share {
                break;
            }
            let name = lease_name(credential);
            let before = self.store.get_lease(&name).await?;
            if before.as_ref().is_some_and(|lease| lease.expires_at > now) {
                continue;
            }
            if self
                .store
                .acquire_lease(&name, &self.owner, now, self.ttl)
                .await?
            {
                if let Some(previous) = before.filter(|lease| lease.owner != self.owner) {
                    let age = (now - previous.expires_at).to_std().unwrap_or_default();
                    tracing::info!(credential = %credential, previous = %previous.owner, "Took over a credential's lease");
                    self.budgets.taken_over(credential, age);
                } else {
                    tracing::info!(credential = %credential, "Took a credential's lease; its jobs run in this replica");
                }
                metrics::counter!("asana_worker_credential_lease_acquisitions_total", "token" => credential.clone())
                    .increment(1);
                held.insert(credential.clone());
            }
        }
        let mut state = lock(&self.held);
        state.credentials = held;
        state.started = true;
        for credential in &wanted {
            metrics::gauge!("asana_worker_credential_lease_held", "token" => credential.clone())
                .set(if state.credentials.contains(credential) {
                    1.0
                } else {
                    0.0
                });
        }
        metrics::gauge!("asana_worker_replicas").set(replicas as f64);
        Ok(())
    }

    /// Records the live replicas and reports job sets that have differed between them for
    /// longer than [`JOB_SET_DISAGREEMENT_GRACE`] (a log line once per episode and the
    /// `asana_worker_job_set_disagreement` gauge).
    fn watch_job_sets(
        &self,
        announcement: &JobSetAnnouncement,
        live: Vec<ReplicaRow>,
        now: DateTime<Utc>,
    ) {
        let versions: BTreeSet<&str> = live
            .iter()
            .map(|r| r.job_set.as_str())
            .chain([announcement.version.as_str()])
            .collect();
        let mut state = lock(&self.held);
        if state.exported_version.as_deref() != Some(announcement.version.as_str()) {
            if let Some(old) = state.exported_version.take() {
                metrics::gauge!("asana_worker_job_set_info", "version" => old).set(0.0);
            }
            metrics::gauge!("asana_worker_job_set_info", "version" => announcement.version.clone())
                .set(1.0);
            state.exported_version = Some(announcement.version.clone());
        }
        if versions.len() > 1 {
            let since = *state.disagreeing_since.get_or_insert(now);
            let lasted = (now - since).to_std().unwrap_or_default();
            if lasted >= JOB_SET_DISAGREEMENT_GRACE && !state.reported {
                let sets: Vec<String> = live
                    .iter()
                    .map(|r| format!("{} runs {} ({} jobs)", r.owner, r.job_set, r.jobs))
                    .collect();
                tracing::error!(
                    lasted_secs = lasted.as_secs(),
                    replicas = %sets.join("; "),
                    "Replicas have run different job files for longer than a reload takes; check that every replica mounts the same job directory (a ConfigMap not updated everywhere, a pod with local files)"
                );
                state.reported = true;
            }
            metrics::gauge!("asana_worker_job_set_disagreement").set(if state.reported {
                1.0
            } else {
                0.0
            });
        } else {
            if state.reported {
                tracing::info!(job_set = %announcement.version, "Every replica runs the same job files again");
            }
            state.disagreeing_since = None;
            state.reported = false;
            metrics::gauge!("asana_worker_job_set_disagreement").set(0.0);
        }
        state.replicas = live;
    }

    /// Credentials with a run in progress in this process.
    fn running_credentials(&self, announcement: &JobSetAnnouncement) -> BTreeSet<String> {
        let running = lock(&self.running);
        announcement
            .jobs_by_credential
            .iter()
            .filter(|(_, jobs)| {
                jobs.iter()
                    .any(|job| running.get(job).is_some_and(|n| *n > 0))
            })
            .map(|(credential, _)| credential.clone())
            .collect()
    }

    async fn hand_over(&self, credential: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        // The moment of the last use Asana still counts; long ago when none does.
        let last_use = match self.budgets.last_use_age(credential) {
            Some(age) => now - chrono::Duration::from_std(age).unwrap_or_default(),
            None => DateTime::<Utc>::UNIX_EPOCH,
        };
        self.store
            .hand_over_lease(&lease_name(credential), &self.owner, last_use)
            .await?;
        tracing::info!(credential = %credential, "Handed a credential's lease over");
        Ok(())
    }

    async fn hand_over_all(&self) {
        let held = std::mem::take(&mut lock(&self.held).credentials);
        for credential in held {
            if let Err(error) = self.hand_over(&credential).await {
                tracing::warn!(%error, credential = %credential, "Could not hand a credential's lease over; another replica takes it when it expires");
            }
        }
        if let Err(error) = self
            .store
            .retire_replica(&self.owner, self.clock.now() - chrono::Duration::days(1))
            .await
        {
            tracing::warn!(%error, "Could not remove this replica's announcement; it expires by itself");
        }
    }
}

/// The lease guarding `credential`.
pub fn lease_name(credential: &str) -> String {
    format!("{LEASE_PREFIX}{credential}")
}

/// A per-process order of credentials (a hash of owner and name).
fn spread_key(owner: &str, credential: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (owner, credential).hash(&mut hasher);
    hasher.finish()
}
