//! The OAuth token provider against the simulator, with real stores: one refresh for 50
//! concurrent callers, refresh ahead of expiry on a manual clock, refresh and retry once after a
//! 401 "expired", `invalid_grant` marking the credential revoked and ending the job as
//! needs_reauth, and refreshed tokens written back encrypted (SQLite and PostgreSQL).

mod support;

use std::sync::Arc;

use asana_worker::asana::{AsanaError, CallContext};
use asana_worker::budget::Priority;
use asana_worker::clock::{Clock, ManualClock};
use asana_worker::config::settings::Settings;
use asana_worker::credentials::crypto::{KeyRing, MasterKey};
use asana_worker::credentials::{self, ClientPool, PoolRuntime, StoredSecret};
use asana_worker::sim::{SimConfig, SimServer};
use asana_worker::store::{self, Store};
use asana_worker::worker::JobOutcome;
use chrono::{TimeZone, Utc};
use secrecy::ExposeSecret;
use support::oauth::{self, CLIENT_ID, CLIENT_SECRET};
use support::pg::TestDatabase;
use support::sim::SimAdmin;

struct Env {
    sim: SimServer,
    store: Arc<dyn Store>,
    ring: Arc<KeyRing>,
    clock: ManualClock,
    settings: Settings,
    _dir: tempfile::TempDir,
}

async fn env(ttl_secs: u64, pg: Option<&TestDatabase>) -> Env {
    let mut config = SimConfig::default();
    config.timing.activity_per_minute = 0.0;
    config.timing.audit_events_per_minute = 0.0;
    config.timing.access_token_ttl_secs = ttl_secs;
    let sim = SimServer::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = match pg {
        Some(db) => db.url.clone(),
        None => format!("sqlite://{}", dir.path().join("state.sqlite").display()),
    };
    let store = store::open(&url).await.unwrap();
    let mut settings = Settings::default();
    settings.database.url = url;
    settings.asana.base_url = sim.base_url();
    settings.oauth.refresh_margin_secs = 300;
    Env {
        sim,
        store,
        ring: Arc::new(KeyRing::single(MasterKey::generate(1))),
        clock: ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()),
        settings,
        _dir: dir,
    }
}

impl Env {
    async fn pool(&self) -> Arc<ClientPool> {
        let rows = self.store.list_credentials().await.unwrap();
        let stored = rows
            .iter()
            .map(|row| credentials::open_row(&self.ring, row).unwrap())
            .collect();
        ClientPool::with_runtime(
            &self.settings,
            stored,
            PoolRuntime {
                store: Some(self.store.clone()),
                clock: Arc::new(self.clock.clone()),
                ring: Some(self.ring.clone()),
            },
        )
    }

    async fn stored_secret(&self, name: &str) -> credentials::oauth::OAuthSecret {
        let row = self.store.get_credential(name).await.unwrap().unwrap();
        match credentials::open_row(&self.ring, &row).unwrap().secret {
            StoredSecret::OAuth(secret) => secret,
            StoredSecret::Token(_) => panic!("not an OAuth credential"),
        }
    }
}

async fn fifty_callers_make_one_refresh(env: Env) {
    let secret = oauth::authorize(&env.sim, CLIENT_ID, CLIENT_SECRET, &env.clock).await;
    oauth::store_oauth(&env.store, &env.ring, "ora", &secret, &env.clock).await;
    let pool = env.pool().await;
    let client = pool.client("ora").unwrap();
    // Inside the refresh margin: every caller wants a fresh token at once.
    env.clock.advance(chrono::Duration::seconds(3600 - 120));
    let mut calls = Vec::new();
    for i in 0..50 {
        let client = client.for_job(CallContext::new(format!("job-{i}"), Priority::Scheduled));
        calls.push(tokio::spawn(async move { client.me(&["name"]).await }));
    }
    for call in calls {
        call.await.unwrap().expect("every caller succeeds");
    }
    assert_eq!(
        oauth::refreshes(&env.sim, &secret.refresh_token).await,
        1,
        "50 concurrent callers made exactly one refresh"
    );
    // The new access token was written back, encrypted, before it was used.
    let stored = env.stored_secret("ora").await;
    assert_ne!(
        stored.access_token.expose_secret(),
        secret.access_token.expose_secret()
    );
    assert_eq!(
        stored.refresh_token.expose_secret(),
        secret.refresh_token.expose_secret()
    );
    assert_eq!(
        stored.expires_at,
        env.clock.now() + chrono::Duration::seconds(3600)
    );
    let row = env.store.get_credential("ora").await.unwrap().unwrap();
    assert_eq!(row.state, "active");
    for token in [&stored.access_token, &stored.refresh_token] {
        assert!(
            !row.ciphertext
                .windows(token.expose_secret().len())
                .any(|w| w == token.expose_secret().as_bytes())
        );
    }
    // Still valid: no further refresh.
    client.me(&["name"]).await.unwrap();
    assert_eq!(oauth::refreshes(&env.sim, &secret.refresh_token).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_make_exactly_one_refresh_on_sqlite() {
    fifty_callers_make_one_refresh(env(3600, None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_callers_make_exactly_one_refresh_on_postgres() {
    let Some(db) = TestDatabase::create("OAuth single-flight refresh on PostgreSQL").await else {
        return;
    };
    fifty_callers_make_one_refresh(env(3600, Some(&db)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_token_is_refreshed_ahead_of_expiry_on_the_clock() {
    let env = env(3600, None).await;
    let secret = oauth::authorize(&env.sim, CLIENT_ID, CLIENT_SECRET, &env.clock).await;
    oauth::store_oauth(&env.store, &env.ring, "ora", &secret, &env.clock).await;
    let pool = env.pool().await;
    let client = pool.client("ora").unwrap();
    client.me(&["name"]).await.unwrap();
    // Just outside the 5-minute margin: no refresh.
    env.clock.advance(chrono::Duration::seconds(3600 - 301));
    client.me(&["name"]).await.unwrap();
    assert_eq!(oauth::refreshes(&env.sim, &secret.refresh_token).await, 0);
    // Inside it: refreshed before the request, the old token never expired at Asana.
    env.clock.advance(chrono::Duration::seconds(2));
    client.me(&["name"]).await.unwrap();
    assert_eq!(oauth::refreshes(&env.sim, &secret.refresh_token).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_expired_refreshes_and_retries_the_request_once() {
    // Tokens live 1 s at the simulator, whose clock moves 2 s while the worker's stands still:
    // only the 401 can tell the provider that the token expired.
    let env = env(1, None).await;
    let secret = oauth::authorize(&env.sim, CLIENT_ID, CLIENT_SECRET, &env.clock).await;
    let mut long_lived = secret.clone();
    long_lived.expires_at = env.clock.now() + chrono::Duration::hours(1);
    oauth::store_oauth(&env.store, &env.ring, "ora", &long_lived, &env.clock).await;
    let pool = env.pool().await;
    let client = pool.client("ora").unwrap();
    SimAdmin::of(&env.sim).advance(2).await;
    let me = client.me(&["name"]).await.expect("refreshed and retried");
    assert!(!me.gid.is_empty());
    assert_eq!(oauth::refreshes(&env.sim, &secret.refresh_token).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_marks_the_credential_revoked_and_the_job_needs_reauth() {
    let env = env(3600, None).await;
    let secret = oauth::authorize(&env.sim, CLIENT_ID, CLIENT_SECRET, &env.clock).await;
    oauth::store_oauth(&env.store, &env.ring, "ora", &secret, &env.clock).await;
    let pool = env.pool().await;
    let client = pool.client("ora").unwrap();
    client.me(&["name"]).await.unwrap();
    oauth::revoke(&env.sim, &secret.refresh_token).await;
    env.clock.advance(chrono::Duration::hours(2));
    let error = client.me(&["name"]).await.unwrap_err();
    assert!(
        matches!(&error, AsanaError::OAuth { error, .. } if error == "invalid_grant"),
        "{error:?}"
    );
    let job = asana_worker::jobs::parse_job(
        std::path::Path::new("jobs/check.toml"),
        "name = \"check\"\nkind = \"credential_check\"\nevery = \"5m\"\ncredential = \"ora\"\n",
        &asana_worker::config::jobs::ValidationContext {
            credentials: ["ora".to_string()].into_iter().collect(),
            ..Default::default()
        },
    )
    .unwrap();
    match asana_worker::jobs::outcome_for_error(&job, &error) {
        JobOutcome::NeedsReauth { error } => {
            assert!(error.contains("creds authorize ora --replace"), "{error}");
        }
        other => panic!("expected needs_reauth, got {other:?}"),
    }
    let row = env.store.get_credential("ora").await.unwrap().unwrap();
    assert_eq!(row.state, "revoked");
    assert!(
        row.last_error
            .as_deref()
            .is_some_and(|e| e.contains("creds authorize ora --replace")),
        "{row:?}"
    );
    assert_eq!(pool.monitor().state("ora").as_deref(), Some("revoked"));
    // Later calls fail at once without asking the token endpoint again.
    let again = client.me(&["name"]).await.unwrap_err();
    assert!(again.needs_reauth() && !again.is_transient(), "{again:?}");
    // A new pool reading the revoked row does not try either.
    let fresh = env.pool().await;
    let error = fresh
        .client("ora")
        .unwrap()
        .me(&["name"])
        .await
        .unwrap_err();
    assert!(error.needs_reauth(), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_token_endpoint_after_expiry_is_transient_and_marks_the_credential_expired()
{
    let mut env = env(3600, None).await;
    let secret = oauth::authorize(&env.sim, CLIENT_ID, CLIENT_SECRET, &env.clock).await;
    oauth::store_oauth(&env.store, &env.ring, "ora", &secret, &env.clock).await;
    // Nothing listens on port 1.
    env.settings.oauth.auth_base_url = Some("http://127.0.0.1:1".into());
    let pool = env.pool().await;
    let client = pool.client("ora").unwrap();
    env.clock.advance(chrono::Duration::hours(2));
    let error = client.me(&["name"]).await.unwrap_err();
    assert!(error.is_transient() && !error.needs_reauth(), "{error:?}");
    let row = env.store.get_credential("ora").await.unwrap().unwrap();
    assert_eq!(row.state, "expired");
    assert!(row.last_error.unwrap().contains("cannot refresh"));
    assert_eq!(pool.monitor().state("ora").as_deref(), Some("expired"));
}
