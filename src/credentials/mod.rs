//! Credentials: where tokens come from and the clients that use them.
//!
//! Credentials are declared in configuration (`[credentials.NAME]` with `token_file` or
//! `token_env`; a changed token file is re-read, so a rotated Kubernetes Secret or systemd
//! credential takes effect without a restart) or stored encrypted in the database (`creds add`,
//! `creds authorize`; see [`crypto`]), re-read by the daemon so a replacement needs no restart
//! either. OAuth credentials get an [`oauth::OAuthProvider`] that refreshes their access token;
//! [`monitor`] records states, use, owners and hygiene. Tokens are held in [`SecretString`] and
//! never logged.

pub mod crypto;
pub mod monitor;
pub mod oauth;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::asana::{AsanaClient, ClientConfig};
use crate::budget::{BudgetConfig, BudgetRegistry, Tier};
use crate::clock::SharedClock;
use crate::config::settings::{AsanaSettings, CredentialSettings, CredentialTier, Settings};

/// Errors obtaining a credential's token or client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// No credential has this name.
    #[error("unknown credential {0:?}; declare it under [credentials.{0}] in config.toml")]
    Unknown(String),
    /// The token file could not be read.
    #[error(
        "cannot read the token of credential {name:?} from {path}: {source}; check the file exists and is readable by the daemon"
    )]
    ReadFile {
        /// Credential.
        name: String,
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The environment variable is not set.
    #[error(
        "the token of credential {name:?} should be in the environment variable {var}, which is not set"
    )]
    MissingEnv {
        /// Credential.
        name: String,
        /// Variable.
        var: String,
    },
    /// The token is empty.
    #[error("the token of credential {0:?} is empty")]
    Empty(String),
    /// The client could not be built.
    #[error("cannot build the Asana client for credential {name:?}: {message}")]
    Client {
        /// Credential.
        name: String,
        /// Why.
        message: String,
    },
    /// A stored credential could not be decrypted, or no master key is configured.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The stored credentials could not be read.
    #[error("cannot read the stored credentials: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A stored credential decrypted but its content is not what this version expects.
    #[error("{0}")]
    Corrupt(String),
    /// A name is both declared in config.toml and stored in the database.
    #[error(
        "credential {0:?} is both declared under [credentials.{0}] in config.toml and stored in the database (`creds add`); remove one of them"
    )]
    Duplicate(String),
}

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file holding the token (trailing whitespace ignored).
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Stored encrypted in the database (`creds add`), decrypted when the pool was built.
    Stored,
}

/// Reads a token from its source.
pub fn read_token(name: &str, source: &TokenSource) -> Result<SecretString, CredentialError> {
    let text = match source {
        TokenSource::File(path) => {
            let path = crate::config::settings::resolve_secret_path(path);
            std::fs::read_to_string(&path).map_err(|source| CredentialError::ReadFile {
                name: name.to_string(),
                path: path.display().to_string(),
                source,
            })?
        }
        TokenSource::Env(var) => std::env::var(var).map_err(|_| CredentialError::MissingEnv {
            name: name.to_string(),
            var: var.clone(),
        })?,
        TokenSource::Stored => return Err(CredentialError::Unknown(name.to_string())),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(CredentialError::Empty(name.to_string()));
    }
    Ok(SecretString::from(token.to_string()))
}

fn modified(source: &TokenSource) -> Option<SystemTime> {
    match source {
        TokenSource::File(path) => {
            std::fs::metadata(crate::config::settings::resolve_secret_path(path))
                .and_then(|m| m.modified())
                .ok()
        }
        TokenSource::Env(_) | TokenSource::Stored => None,
    }
}

/// One configured credential.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    /// Name jobs refer to.
    pub name: String,
    /// Token source.
    pub source: TokenSource,
    /// Rate-limit tier.
    pub tier: Tier,
    /// Override of the requests per minute.
    pub requests_per_minute: Option<u32>,
}

impl CredentialSpec {
    fn from_settings(name: &str, settings: &CredentialSettings) -> Self {
        let source = match settings.token_location(name) {
            crate::config::settings::TokenLocation::File(path) => TokenSource::File(path),
            crate::config::settings::TokenLocation::Env(variable) => TokenSource::Env(variable),
        };
        Self {
            name: name.to_string(),
            source,
            tier: match settings.tier {
                CredentialTier::Free => Tier::Free,
                CredentialTier::Paid => Tier::Paid,
            },
            requests_per_minute: settings.requests_per_minute,
        }
    }
}

struct CachedClient {
    client: AsanaClient,
    modified: Option<SystemTime>,
}

/// The decrypted secret of a stored credential.
#[derive(Clone)]
pub enum StoredSecret {
    /// A PAT or service account token.
    Token(SecretString),
    /// An OAuth credential (client, refresh and access tokens).
    OAuth(oauth::OAuthSecret),
}

/// A credential stored in the database, decrypted.
pub struct StoredCredential {
    /// Row id; a replaced credential (`--replace`) has a new one.
    pub id: uuid::Uuid,
    /// Name jobs refer to.
    pub name: String,
    /// `service_account`, `pat` or `oauth`.
    pub kind: String,
    /// Rate-limit tier.
    pub tier: Tier,
    /// State recorded in the store.
    pub state: String,
    /// The secret.
    pub secret: StoredSecret,
}

impl StoredCredential {
    /// The bearer token to use now: the PAT, or the OAuth access token as stored.
    pub fn token(&self) -> SecretString {
        match &self.secret {
            StoredSecret::Token(token) => token.clone(),
            StoredSecret::OAuth(secret) => secret.access_token.clone(),
        }
    }
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("tier", &self.tier)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The master key ring of `settings`, or [`crypto::CryptoError::NoKey`].
pub fn key_ring(settings: &Settings) -> Result<crypto::KeyRing, CredentialError> {
    Ok(
        crypto::KeyRing::from_settings(settings.credentials_store.master_key_file.as_deref())?
            .ok_or(crypto::CryptoError::NoKey)?,
    )
}

/// Decrypts one row.
pub fn open_row(
    ring: &crypto::KeyRing,
    row: &crate::store::CredentialRow,
) -> Result<StoredCredential, CredentialError> {
    let sealed = crypto::Sealed {
        key_version: u32::try_from(row.key_version).unwrap_or(u32::MAX),
        nonce: row.nonce.clone(),
        ciphertext: row.ciphertext.clone(),
    };
    let plaintext = ring.open(row.id, &row.name, &sealed)?;
    let secret = if row.kind == "oauth" {
        StoredSecret::OAuth(oauth::OAuthSecret::from_plaintext(&row.name, &plaintext)?)
    } else {
        StoredSecret::Token(plaintext)
    };
    Ok(StoredCredential {
        id: row.id,
        tier: if row.tier == "free" {
            Tier::Free
        } else {
            Tier::Paid
        },
        name: row.name.clone(),
        kind: row.kind.clone(),
        state: row.state.clone(),
        secret,
    })
}

/// Reads and decrypts every credential stored in `store`. Needs no master key when there are
/// none; with some and no key configured it fails with [`crypto::CryptoError::NoKey`], and a
/// wrong key or a tampered row fails with the name of the credential (never its plaintext).
pub async fn load_stored(
    store: &dyn crate::store::Store,
    settings: &Settings,
) -> Result<Vec<StoredCredential>, CredentialError> {
    let rows = store.list_credentials().await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ring = key_ring(settings)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if settings.credentials.contains_key(&row.name) {
            return Err(CredentialError::Duplicate(row.name));
        }
        out.push(open_row(&ring, &row)?);
    }
    Ok(out)
}

/// What the pool needs beyond settings to run OAuth credentials and record states: the store
/// (refreshed tokens are written back, states and use recorded), the clock, and the key ring.
#[derive(Clone)]
pub struct PoolRuntime {
    /// The store of stored credentials.
    pub store: Option<Arc<dyn crate::store::Store>>,
    /// Wall time (token expiry, last use).
    pub clock: SharedClock,
    /// Master keys, to seal refreshed tokens.
    pub ring: Option<Arc<crypto::KeyRing>>,
}

impl std::fmt::Debug for PoolRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolRuntime").finish_non_exhaustive()
    }
}

impl Default for PoolRuntime {
    fn default() -> Self {
        Self {
            store: None,
            clock: Arc::new(crate::clock::SystemClock),
            ring: None,
        }
    }
}

struct StoredEntry {
    id: uuid::Uuid,
    state: String,
    secret: StoredSecret,
}

/// Hands out one client per credential for the whole process (so every job using a token shares
/// its budget), re-reading token files that changed and stored credentials that were replaced.
pub struct ClientPool {
    specs: Mutex<BTreeMap<String, CredentialSpec>>,
    stored: Mutex<BTreeMap<String, StoredEntry>>,
    asana: AsanaSettings,
    oauth_base: String,
    refresh_margin: chrono::Duration,
    runtime: PoolRuntime,
    monitor: Arc<monitor::CredentialMonitor>,
    budgets: BudgetRegistry,
    clients: Mutex<BTreeMap<String, CachedClient>>,
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPool")
            .field("credentials", &self.names())
            .finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl ClientPool {
    /// A pool over the credentials declared in `settings`.
    pub fn from_settings(settings: &Settings) -> Arc<Self> {
        Self::with_stored(settings, Vec::new())
    }

    /// A pool over the credentials declared in `settings` plus `stored` ones (see
    /// [`load_stored`]), without a store to write refreshed tokens or states back to.
    pub fn with_stored(settings: &Settings, stored: Vec<StoredCredential>) -> Arc<Self> {
        Self::with_runtime(settings, stored, PoolRuntime::default())
    }

    /// The daemon's pool: configured and `stored` credentials, OAuth refreshes written back to
    /// `runtime.store`, states and use recorded there.
    pub fn with_runtime(
        settings: &Settings,
        stored: Vec<StoredCredential>,
        runtime: PoolRuntime,
    ) -> Arc<Self> {
        let specs: BTreeMap<String, CredentialSpec> = settings
            .credentials
            .iter()
            .map(|(name, s)| (name.clone(), CredentialSpec::from_settings(name, s)))
            .collect();
        let monitor = monitor::CredentialMonitor::new(
            runtime.store.clone(),
            runtime.clock.clone(),
            std::time::Duration::from_secs(settings.credentials_store.last_used_write_secs),
        );
        let pool = Arc::new(Self {
            specs: Mutex::new(specs),
            stored: Mutex::new(BTreeMap::new()),
            asana: settings.asana.clone(),
            oauth_base: settings.oauth_base_url(),
            refresh_margin: chrono::Duration::seconds(
                i64::try_from(settings.oauth.refresh_margin_secs).unwrap_or(300),
            ),
            runtime,
            monitor,
            budgets: BudgetRegistry::new(),
            clients: Mutex::new(BTreeMap::new()),
        });
        // Configured credentials start as active (nothing is known against them yet); stored
        // ones take the state on their row.
        for name in settings.credentials.keys() {
            pool.monitor.set_state(name, "active");
        }
        pool.reload_stored(stored);
        pool
    }

    /// The monitor recording states, use and owners.
    pub fn monitor(&self) -> &Arc<monitor::CredentialMonitor> {
        &self.monitor
    }

    /// Names of the known credentials.
    pub fn names(&self) -> Vec<String> {
        lock(&self.specs).keys().cloned().collect()
    }

    /// Replaces the stored credentials with `stored` (freshly read from the database): a
    /// credential whose row was replaced (new id) gets a new client on next use, one deleted is
    /// forgotten, a new one becomes usable. Clients already handed out keep working on the old
    /// token until their job ends. Returns the names whose credential changed.
    pub fn reload_stored(&self, stored: Vec<StoredCredential>) -> Vec<String> {
        let mut specs = lock(&self.specs);
        let mut entries = lock(&self.stored);
        let mut clients = lock(&self.clients);
        let mut changed = Vec::new();
        let fresh: BTreeMap<String, StoredCredential> =
            stored.into_iter().map(|c| (c.name.clone(), c)).collect();
        let gone: Vec<String> = entries
            .keys()
            .filter(|name| !fresh.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            entries.remove(&name);
            specs.remove(&name);
            clients.remove(&name);
            changed.push(name);
        }
        for (name, credential) in fresh {
            let same = entries.get(&name).is_some_and(|e| e.id == credential.id);
            if same {
                continue;
            }
            let first_load = !entries.contains_key(&name);
            clients.remove(&name);
            specs.insert(
                name.clone(),
                CredentialSpec {
                    name: name.clone(),
                    source: TokenSource::Stored,
                    tier: credential.tier,
                    requests_per_minute: None,
                },
            );
            self.monitor.set_state(&name, &credential.state);
            entries.insert(
                name.clone(),
                StoredEntry {
                    id: credential.id,
                    state: credential.state,
                    secret: credential.secret,
                },
            );
            if !first_load {
                tracing::info!(credential = %name, "Stored credential was replaced; new runs use the new one");
            }
            changed.push(name);
        }
        self.monitor.set_stored(entries.keys().cloned());
        changed
    }

    /// The budget of `name`'s client if a job has used the credential in this process (for the
    /// status page, which must not read a token to show one).
    pub fn budget_in_use(&self, name: &str) -> Option<crate::budget::Budget> {
        lock(&self.clients)
            .get(name)
            .map(|cached| cached.client.budget().clone())
    }

    /// The client of `name`: built on first use, its token refreshed when the token file changed.
    pub fn client(&self, name: &str) -> Result<AsanaClient, CredentialError> {
        let spec = lock(&self.specs)
            .get(name)
            .cloned()
            .ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
        // Copied out first: `reload_stored` takes `stored` before `clients`, so this must never
        // hold `clients` while waiting for `stored`.
        let stored_entry = match &spec.source {
            TokenSource::Stored => lock(&self.stored)
                .get(name)
                .map(|e| (e.id, e.state.clone(), e.secret.clone())),
            _ => None,
        };
        let mut clients = lock(&self.clients);
        let now_modified = modified(&spec.source);
        if let Some(cached) = clients.get_mut(name) {
            if cached.modified != now_modified {
                let token = read_token(name, &spec.source)?;
                cached.client.replace_token(token);
                cached.modified = now_modified;
                tracing::info!(credential = %name, "Token file changed; using the new token");
            }
            return Ok(cached.client.clone());
        }
        let mut budget_config = BudgetConfig::new(name, spec.tier);
        budget_config.time_scale = self.asana.time_scale;
        if let Some(limit) = spec.requests_per_minute {
            budget_config.requests_per_minute = Some(limit);
        }
        let build_error = |message: String| CredentialError::Client {
            name: name.to_string(),
            message,
        };
        let budget = self
            .budgets
            .budget(budget_config, &format!("credential:{name}"))
            .map_err(|e| build_error(e.to_string()))?;
        let config = ClientConfig {
            connect_timeout_secs: self.asana.connect_timeout_secs,
            request_timeout_secs: self.asana.request_timeout_secs,
            ..ClientConfig::with_base_url(self.asana.base_url.clone())
        };
        let client = match &spec.source {
            TokenSource::Stored => {
                let (id, state, secret) =
                    stored_entry.ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
                match secret {
                    StoredSecret::Token(token) => AsanaClient::new(config, token.clone(), budget),
                    StoredSecret::OAuth(secret) => {
                        let endpoints = oauth::OAuthEndpoints::new(
                            &self.oauth_base,
                            std::time::Duration::from_secs(self.asana.request_timeout_secs.max(1)),
                        )
                        .map_err(|e| build_error(e.to_string()))?;
                        let persist = match (&self.runtime.store, &self.runtime.ring) {
                            (Some(store), Some(ring)) => Some(oauth::Persist {
                                store: store.clone(),
                                ring: ring.clone(),
                            }),
                            _ => None,
                        };
                        let provider = oauth::OAuthProvider::new(
                            id,
                            name,
                            secret,
                            state == "revoked",
                            endpoints,
                            self.runtime.clock.clone(),
                            oauth::ProviderOptions {
                                margin: self.refresh_margin,
                                time_scale: self.asana.time_scale,
                            },
                            persist,
                            self.monitor.clone(),
                        );
                        AsanaClient::with_provider(config, Arc::new(provider), budget)
                    }
                }
            }
            source => AsanaClient::new(config, read_token(name, source)?, budget),
        }
        .map_err(|e| build_error(e.to_string()))?;
        clients.insert(
            name.to_string(),
            CachedClient {
                client: client.clone(),
                modified: now_modified,
            },
        );
        Ok(client)
    }
}

/// True when `token` appears in `text` (for tests that hunt for leaked secrets).
pub fn leaks(text: &str, token: &SecretString) -> bool {
    let secret = token.expose_secret();
    !secret.is_empty() && text.contains(secret)
}
