//! The daemon in-process with two credentials: a service account declared in config and an
//! OAuth credential stored encrypted. Revoking the OAuth grant mid-run (the simulator's admin
//! API) ends only that credential's runs, as needs_reauth with a message naming what to run,
//! sets the state metric and records the state; the service account's runs carry on. Replacing
//! the stored credential takes effect without a restart.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asana_worker::clock::{Clock, SystemClock};
use asana_worker::config::settings::{
    CredentialKind, CredentialSettings, CredentialTier, Settings,
};
use asana_worker::credentials::crypto::{KeyRing, MasterKey};
use asana_worker::daemon::{self, DaemonHandle};
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{Enqueued, RunState};
use support::oauth::{self, CLIENT_ID, CLIENT_SECRET};
use tokio_util::sync::CancellationToken;

const JOBS: [(&str, &str); 5] = [
    ("check-sa-0", "sa"),
    ("check-sa-1", "sa"),
    ("check-ora-0", "ora"),
    ("check-ora-1", "ora"),
    ("check-pat-0", "pat"),
];

/// Runs every job once and returns each run's final state and error.
async fn run_all(handle: &DaemonHandle) -> BTreeMap<String, (RunState, Option<String>)> {
    let jobs = handle.jobs.borrow().clone();
    let mut ids = Vec::new();
    for job in jobs.iter() {
        let now = SystemClock.now();
        match handle
            .store
            .enqueue(asana_worker::scheduler::manual_run(job, now), now)
            .await
            .unwrap()
        {
            Enqueued::Inserted(run) => ids.push((job.name.clone(), run.id)),
            Enqueued::Duplicate => panic!("duplicate manual run"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = BTreeMap::new();
    while done.len() < ids.len() {
        for (name, id) in &ids {
            let run = handle.store.get_run(*id).await.unwrap().unwrap();
            if matches!(
                run.state,
                RunState::Completed | RunState::NeedsReauth | RunState::Failed | RunState::Dead
            ) {
                done.insert(name.clone(), (run.state, run.last_error.clone()));
            }
        }
        assert!(Instant::now() < deadline, "runs did not finish: {done:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done
}

async fn metrics(handle: &DaemonHandle) -> String {
    reqwest::get(format!("http://{}/metrics", handle.admin_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The daemon's metrics are process-wide and the scenarios use the same credential names: run
/// at once, one scenario's gauges overwrite the other's (`ora` shown active again while this
/// one expects it revoked). One scenario at a time.
static ONE_SCENARIO_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_oauth_grant_mid_run_ends_only_its_jobs_and_a_replacement_is_picked_up() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    scenario(None, Reload::Periodic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_is_picked_up_on_sighup() {
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    scenario(None, Reload::Sighup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_postgres() {
    let Some(db) = support::pg::TestDatabase::create("daemon OAuth revocation on PostgreSQL").await
    else {
        return;
    };
    let _alone = ONE_SCENARIO_AT_A_TIME.lock().await;
    scenario(Some(db.url.clone()), Reload::Periodic).await;
}

/// A stored PAT row (as `creds add` writes it).
async fn store_pat(
    store: &Arc<dyn asana_worker::store::Store>,
    ring: &KeyRing,
    name: &str,
    token: &str,
) {
    let id = uuid::Uuid::new_v4();
    let sealed = ring
        .seal(id, name, &secrecy::SecretString::from(token.to_string()))
        .unwrap();
    let row = asana_worker::store::CredentialRow {
        id,
        name: name.into(),
        kind: "pat".into(),
        tier: "paid".into(),
        tenant: None,
        key_version: sealed.key_version as i32,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        owner_gid: None,
        owner_name: None,
        owner_email: None,
        state: "active".into(),
        created_at: SystemClock.now(),
        last_used_at: None,
        last_validated_at: None,
        last_error: None,
    };
    assert!(store.put_credential(&row, true).await.unwrap());
}

/// How the daemon learns of replaced credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reload {
    /// `reload_interval_secs = 1`.
    Periodic,
    /// Only SIGHUP (the interval is an hour).
    Sighup,
}

async fn scenario(pg_url: Option<String>, reload: Reload) {
    let mut sim_config = SimConfig::default();
    sim_config.timing.activity_per_minute = 0.0;
    sim_config.timing.audit_events_per_minute = 0.0;
    let sim = SimServer::start(sim_config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir(&jobs_dir).unwrap();
    for (name, credential) in JOBS {
        std::fs::write(
            jobs_dir.join(format!("{name}.toml")),
            format!("name = \"{name}\"\nkind = \"credential_check\"\nevery = \"1h\"\ncredential = \"{credential}\"\nmax_attempts = 1\n"),
        )
        .unwrap();
    }
    let token = dir.path().join("sa.token");
    std::fs::write(&token, sim.token("service-account").unwrap()).unwrap();
    let key_file = dir.path().join("master.key");
    MasterKey::generate(1).write_new_file(&key_file).unwrap();
    let ring = KeyRing::load(&key_file).unwrap();

    let mut settings = Settings::default();
    settings.database.url =
        pg_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("state.sqlite").display()));
    settings.jobs.dir = jobs_dir;
    settings.asana.base_url = sim.base_url();
    settings.admin.listen = "127.0.0.1:0".parse().unwrap();
    settings.worker.concurrency = 4;
    settings.worker.poll_interval_ms = 20;
    settings.scheduler.tick_ms = 100;
    settings.credentials_store.master_key_file = Some(key_file);
    settings.credentials_store.reload_interval_secs = match reload {
        Reload::Periodic => 1,
        Reload::Sighup => 3600,
    };
    settings.credentials_store.hygiene_interval_secs = 1;
    settings.credentials.insert(
        "sa".into(),
        CredentialSettings {
            kind: CredentialKind::ServiceAccount,
            tier: CredentialTier::Paid,
            token_file: Some(token),
            token_env: None,
            requests_per_minute: None,
        },
    );
    let store = asana_worker::store::open(&settings.database.url)
        .await
        .unwrap();
    let secret = oauth::authorize(&sim, CLIENT_ID, CLIENT_SECRET, &SystemClock).await;
    oauth::store_oauth(&store, &ring, "ora", &secret, &SystemClock).await;
    // A PAT stored with a wrong token: its job needs re-authorization until it is replaced.
    store_pat(&store, &ring, "pat", "not-a-valid-token").await;

    let shutdown = CancellationToken::new();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (handle_tx, handle_rx) = tokio::sync::oneshot::channel::<DaemonHandle>();
    let task = {
        let shutdown = shutdown.clone();
        tokio::spawn(daemon::run(
            settings,
            Arc::new(SystemClock),
            shutdown,
            reload_rx,
            move |h| {
                let _ = handle_tx.send(h);
            },
        ))
    };
    let handle = handle_rx.await.unwrap();

    // Both credentials work; owners and last use are recorded for the stored one. The wrong
    // PAT ends its own run only.
    let first = run_all(&handle).await;
    for (job, (state, error)) in &first {
        if job.contains("-pat-") {
            assert_eq!(*state, RunState::NeedsReauth, "{job}: {error:?}");
            assert!(
                error
                    .as_deref()
                    .unwrap()
                    .contains("creds add pat --replace"),
                "{error:?}"
            );
        } else {
            assert_eq!(*state, RunState::Completed, "{job}: {error:?}");
        }
    }
    assert_eq!(
        handle
            .store
            .get_credential("pat")
            .await
            .unwrap()
            .unwrap()
            .state,
        "revoked"
    );
    let row = handle.store.get_credential("ora").await.unwrap().unwrap();
    assert!(
        row.owner_gid.is_some() && row.last_validated_at.is_some(),
        "{row:?}"
    );
    assert!(row.last_used_at.is_some(), "{row:?}");

    // Revoke the grant at "Asana": only the OAuth credential's runs end, as needs_reauth.
    oauth::revoke(&sim, &secret.refresh_token).await;
    let second = run_all(&handle).await;
    for (job, (state, error)) in &second {
        if job.contains("-pat-") {
            assert_eq!(*state, RunState::NeedsReauth, "{job}: {error:?}");
        } else if job.contains("-ora-") {
            assert_eq!(*state, RunState::NeedsReauth, "{job}: {error:?}");
            let error = error.as_deref().unwrap();
            assert!(error.contains("credential \"ora\""), "{error}");
            assert!(error.contains("creds authorize ora --replace"), "{error}");
        } else {
            assert_eq!(*state, RunState::Completed, "{job}: {error:?}");
        }
    }
    let row = handle.store.get_credential("ora").await.unwrap().unwrap();
    assert_eq!(row.state, "revoked");
    let text = metrics(&handle).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("asana_worker_credential_state{")
                && l.contains("credential=\"ora\"")
                && l.contains("state=\"revoked\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("asana_worker_credential_state{")
                && l.contains("credential=\"sa\"")
                && l.contains("state=\"active\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("asana_worker_credential_rejections_total{")
                && l.contains("credential=\"ora\"")
                && !l.ends_with(" 0")
        ),
        "{text}"
    );
    // The hygiene metric reports the rejected credential.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&handle).await;
        if text.lines().any(|l| {
            l.starts_with("asana_worker_credential_hygiene_warnings{")
                && l.contains("credential=\"ora\"")
                && l.contains("reason=\"rejected\"")
                && l.ends_with(" 1")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no hygiene warning:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for secret_text in [&secret.access_token, &secret.refresh_token] {
        use secrecy::ExposeSecret;
        assert!(!metrics(&handle).await.contains(secret_text.expose_secret()));
    }

    // Authorize again and replace the stored credentials (as `creds authorize --replace` and
    // `creds add --replace` do): picked up without a restart.
    let fresh = oauth::authorize(&sim, CLIENT_ID, CLIENT_SECRET, &SystemClock).await;
    oauth::store_oauth(&handle.store, &ring, "ora", &fresh, &SystemClock).await;
    store_pat(&handle.store, &ring, "pat", &sim.token("pat-paid").unwrap()).await;
    if reload == Reload::Sighup {
        reload_tx.send(()).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let third = run_all(&handle).await;
        if third
            .values()
            .all(|(state, _)| *state == RunState::Completed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replaced credential was not picked up: {third:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let text = metrics(&handle).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("asana_worker_credential_state{")
                && l.contains("credential=\"ora\"")
                && l.contains("state=\"active\"")
                && l.ends_with(" 1")),
        "{text}"
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
    sim.shutdown().await;
}
