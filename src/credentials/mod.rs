//! Credentials: where tokens come from and the clients that use them.
//!
//! This module currently serves credentials declared in configuration (`[credentials.NAME]` with
//! `token_file` or `token_env`). A token file is re-read when it changes (a rotated Kubernetes
//! Secret or systemd credential takes effect without a restart). Tokens are held in
//! [`SecretString`] and never logged.

pub mod crypto;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::asana::{AsanaClient, ClientConfig};
use crate::budget::{BudgetConfig, BudgetRegistry, Tier};
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

/// Resolves `$CREDENTIALS_DIRECTORY/…` for systemd `LoadCredential=`: a relative `token_file`
/// is looked up there first when the variable is set.
fn resolve_token_path(path: &Path) -> PathBuf {
    if path.is_relative()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
    {
        let candidate = Path::new(&dir).join(path);
        if candidate.exists() {
            return candidate;
        }
    }
    path.to_path_buf()
}

/// Reads a token from its source.
pub fn read_token(name: &str, source: &TokenSource) -> Result<SecretString, CredentialError> {
    let text = match source {
        TokenSource::File(path) => {
            let path = resolve_token_path(path);
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
        TokenSource::File(path) => std::fs::metadata(resolve_token_path(path))
            .and_then(|m| m.modified())
            .ok(),
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
        let source = match (&settings.token_file, &settings.token_env) {
            (Some(path), _) => TokenSource::File(path.clone()),
            (None, Some(var)) => TokenSource::Env(var.clone()),
            (None, None) => TokenSource::Env(format!("ASANA_WORKER_TOKEN_{}", name.to_uppercase())),
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

/// A credential stored in the database, decrypted.
pub struct StoredCredential {
    /// Name jobs refer to.
    pub name: String,
    /// Rate-limit tier.
    pub tier: Tier,
    /// The token.
    pub token: SecretString,
}

impl std::fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCredential")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .finish_non_exhaustive()
    }
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
    let ring =
        crypto::KeyRing::from_settings(settings.credentials_store.master_key_file.as_deref())?
            .ok_or(crypto::CryptoError::NoKey)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if settings.credentials.contains_key(&row.name) {
            return Err(CredentialError::Duplicate(row.name));
        }
        let sealed = crypto::Sealed {
            key_version: u32::try_from(row.key_version).unwrap_or(u32::MAX),
            nonce: row.nonce,
            ciphertext: row.ciphertext,
        };
        let token = ring.open(row.id, &row.name, &sealed)?;
        out.push(StoredCredential {
            tier: if row.tier == "free" {
                Tier::Free
            } else {
                Tier::Paid
            },
            name: row.name,
            token,
        });
    }
    Ok(out)
}

/// Hands out one client per credential for the whole process (so every job using a token shares
/// its budget), re-reading token files that changed.
pub struct ClientPool {
    specs: BTreeMap<String, CredentialSpec>,
    stored: BTreeMap<String, SecretString>,
    asana: AsanaSettings,
    budgets: BudgetRegistry,
    clients: Mutex<BTreeMap<String, CachedClient>>,
}

impl std::fmt::Debug for ClientPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPool")
            .field("credentials", &self.specs.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ClientPool {
    /// A pool over the credentials declared in `settings`.
    pub fn from_settings(settings: &Settings) -> Arc<Self> {
        Self::with_stored(settings, Vec::new())
    }

    /// A pool over the credentials declared in `settings` plus `stored` ones (see
    /// [`load_stored`]).
    pub fn with_stored(settings: &Settings, stored: Vec<StoredCredential>) -> Arc<Self> {
        let mut specs: BTreeMap<String, CredentialSpec> = settings
            .credentials
            .iter()
            .map(|(name, s)| (name.clone(), CredentialSpec::from_settings(name, s)))
            .collect();
        let mut tokens = BTreeMap::new();
        for credential in stored {
            specs.insert(
                credential.name.clone(),
                CredentialSpec {
                    name: credential.name.clone(),
                    source: TokenSource::Stored,
                    tier: credential.tier,
                    requests_per_minute: None,
                },
            );
            tokens.insert(credential.name, credential.token);
        }
        Arc::new(Self {
            specs,
            stored: tokens,
            asana: settings.asana.clone(),
            budgets: BudgetRegistry::new(),
            clients: Mutex::new(BTreeMap::new()),
        })
    }

    /// Names of the known credentials.
    pub fn names(&self) -> Vec<String> {
        self.specs.keys().cloned().collect()
    }

    /// The client of `name`: built on first use, its token refreshed when the token file changed.
    pub fn client(&self, name: &str) -> Result<AsanaClient, CredentialError> {
        let spec = self
            .specs
            .get(name)
            .ok_or_else(|| CredentialError::Unknown(name.to_string()))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
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
        let token = match &spec.source {
            TokenSource::Stored => self
                .stored
                .get(name)
                .cloned()
                .ok_or_else(|| CredentialError::Unknown(name.to_string()))?,
            source => read_token(name, source)?,
        };
        let mut budget_config = BudgetConfig::new(name, spec.tier);
        budget_config.time_scale = self.asana.time_scale;
        if let Some(limit) = spec.requests_per_minute {
            budget_config.requests_per_minute = Some(limit);
        }
        let budget = self
            .budgets
            .budget(budget_config, &format!("credential:{name}"))
            .map_err(|e| CredentialError::Client {
                name: name.to_string(),
                message: e.to_string(),
            })?;
        let config = ClientConfig {
            connect_timeout_secs: self.asana.connect_timeout_secs,
            request_timeout_secs: self.asana.request_timeout_secs,
            ..ClientConfig::with_base_url(self.asana.base_url.clone())
        };
        let client =
            AsanaClient::new(config, token, budget).map_err(|e| CredentialError::Client {
                name: name.to_string(),
                message: e.to_string(),
            })?;
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
