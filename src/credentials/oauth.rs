//! OAuth credentials: the authorization server's endpoints, the sealed secret of a stored OAuth
//! credential, and the token provider that refreshes its access token.
//!
//! A stored OAuth credential keeps its client id, client secret, refresh token, access token
//! and the access token's expiry in one JSON document sealed like any other token (the row's
//! `ciphertext`; XChaCha20-Poly1305, credential id as associated data). Nothing of it is stored in
//! clear, so no extra columns (and no migration) were needed: `state`, `last_used_at`,
//! `last_validated_at` and the owner columns of `0002_credentials.sql` already cover the rest.
//!
//! [`OAuthProvider`] hands the client its access token. It refreshes ahead of expiry (a margin
//! from `[oauth] refresh_margin_secs`) and after a 401 "expired", holding one async mutex per
//! credential across the exchange, so 50 jobs needing a token at once cause exactly one refresh
//! (Airbyte's Asana source refreshes dozens of times per run). New tokens are sealed and
//! written to the store before anyone uses them; `invalid_grant` marks the credential revoked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

use super::CredentialError;
use super::crypto::KeyRing;
use super::monitor::CredentialMonitor;
use crate::asana::{AsanaError, TokenProvider, USER_AGENT};
use crate::clock::SharedClock;
use crate::store::Store;

/// The secrets of a stored OAuth credential (sealed as one JSON document).
pub struct OAuthSecret {
    /// The app's client id (not secret, but kept with the rest so the row format is uniform).
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: SecretString,
    /// The long-lived refresh token.
    pub refresh_token: SecretString,
    /// The current access token.
    pub access_token: SecretString,
    /// When the access token expires (worker clock).
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for OAuthSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthSecret")
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Clone for OAuthSecret {
    fn clone(&self) -> Self {
        Self {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            refresh_token: self.refresh_token.clone(),
            access_token: self.access_token.clone(),
            expires_at: self.expires_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u32,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    access_token: String,
    expires_at: i64,
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.client_secret.zeroize();
        self.refresh_token.zeroize();
        self.access_token.zeroize();
    }
}

impl OAuthSecret {
    /// The document to seal.
    pub fn to_plaintext(&self) -> SecretString {
        let wire = Wire {
            v: 1,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.expose_secret().to_string(),
            refresh_token: self.refresh_token.expose_secret().to_string(),
            access_token: self.access_token.expose_secret().to_string(),
            expires_at: self.expires_at.timestamp_micros(),
        };
        let text = Zeroizing::new(serde_json::to_string(&wire).unwrap_or_default());
        SecretString::from(text.as_str().to_string())
    }

    /// Parses an opened document; `name` names the credential in the error.
    pub fn from_plaintext(name: &str, text: &SecretString) -> Result<Self, CredentialError> {
        let wire: Wire = serde_json::from_str(text.expose_secret()).map_err(|_| {
            CredentialError::Corrupt(format!(
                "the stored OAuth credential {name:?} decrypted, but its content is not the expected document; run `asana-worker creds authorize {name} --replace`"
            ))
        })?;
        Ok(Self {
            client_id: wire.client_id.clone(),
            client_secret: SecretString::from(wire.client_secret.clone()),
            refresh_token: SecretString::from(wire.refresh_token.clone()),
            access_token: SecretString::from(wire.access_token.clone()),
            expires_at: DateTime::from_timestamp_micros(wire.expires_at).unwrap_or_default(),
        })
    }
}

/// The OAuth endpoints of Asana (or the simulator) at an origin such as `https://app.asana.com`.
#[derive(Debug, Clone)]
pub struct OAuthEndpoints {
    base: String,
    http: reqwest::Client,
}

/// A token endpoint's answer.
pub struct TokenResponse {
    /// The new access token.
    pub access_token: SecretString,
    /// A new refresh token, when the server rotates them (Asana does not; others may).
    pub refresh_token: Option<SecretString>,
    /// Lifetime of the access token, seconds (server time).
    pub expires_in: u64,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenWire {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Drop for TokenWire {
    fn drop(&mut self) {
        self.access_token.zeroize();
        if let Some(token) = &mut self.refresh_token {
            token.zeroize();
        }
    }
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub struct Pkce {
    /// Sent with the code exchange.
    pub verifier: SecretString,
    /// Sent with the authorization request.
    pub challenge: String,
}

impl Pkce {
    /// A fresh random pair.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::rng().random();
        let verifier = URL_SAFE_NO_PAD.encode(bytes);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier: SecretString::from(verifier),
            challenge,
        }
    }
}

/// A random `state` value for an authorization request.
pub fn random_state() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

impl OAuthEndpoints {
    /// Endpoints at `base` (an origin; https, or http on loopback).
    pub fn new(base: &str, timeout: std::time::Duration) -> Result<Self, AsanaError> {
        let base = crate::asana::validate_base_url(base)?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AsanaError::Setup(e.to_string()))?;
        Ok(Self { base, http })
    }

    /// The URL a person opens to authorize the app.
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        state: &str,
        challenge: &str,
    ) -> String {
        let mut url = reqwest::Url::parse(&format!("{}/-/oauth_authorize", self.base))
            .expect("validated base URL");
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("state", state)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        url.to_string()
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Vec<u8>, AsanaError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .map_err(AsanaError::from_reqwest)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(AsanaError::from_reqwest)?;
        if !status.is_success() {
            return Err(AsanaError::from_response(status, &headers, &body));
        }
        Ok(body.to_vec())
    }

    fn token_response(body: &[u8]) -> Result<TokenResponse, AsanaError> {
        let wire: TokenWire = serde_json::from_slice(body).map_err(|e| AsanaError::Decode {
            context: "OAuth token response".into(),
            message: e.to_string(),
        })?;
        Ok(TokenResponse {
            access_token: SecretString::from(wire.access_token.clone()),
            refresh_token: wire.refresh_token.clone().map(SecretString::from),
            expires_in: wire.expires_in.unwrap_or(3600),
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        code: &str,
        redirect_uri: &str,
        verifier: &SecretString,
    ) -> Result<TokenResponse, AsanaError> {
        let body = Zeroizing::new(
            self.post_form(
                "/-/oauth_token",
                &[
                    ("grant_type", "authorization_code"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose_secret()),
                    ("code", code),
                    ("redirect_uri", redirect_uri),
                    ("code_verifier", verifier.expose_secret()),
                ],
            )
            .await?,
        );
        Self::token_response(&body)
    }

    /// Exchanges a refresh token for a new access token.
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, AsanaError> {
        let body = Zeroizing::new(
            self.post_form(
                "/-/oauth_token",
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client_id),
                    ("client_secret", client_secret.expose_secret()),
                    ("refresh_token", refresh_token.expose_secret()),
                ],
            )
            .await?,
        );
        Self::token_response(&body)
    }

    /// Revokes a refresh token (and every access token issued from it).
    pub async fn revoke(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        refresh_token: &SecretString,
    ) -> Result<(), AsanaError> {
        self.post_form(
            "/-/oauth_revoke",
            &[
                ("client_id", client_id),
                ("client_secret", client_secret.expose_secret()),
                ("token", refresh_token.expose_secret()),
            ],
        )
        .await
        .map(|_| ())
    }
}

/// Where a refreshed credential is written back to.
#[derive(Debug, Clone)]
pub struct Persist {
    /// The store holding the credential row.
    pub store: Arc<dyn Store>,
    /// The master keys to seal with.
    pub ring: Arc<KeyRing>,
}

struct Tokens {
    secret: OAuthSecret,
    /// Set once the grant is known to be gone; every later call fails at once, without asking
    /// the token endpoint again.
    revoked: Option<String>,
    /// The refresh margin for the current token: the configured one, but at most half the
    /// token's lifetime, so short-lived tokens are not refreshed on every request.
    margin: chrono::Duration,
}

/// The [`TokenProvider`] of one OAuth credential. See the module documentation.
pub struct OAuthProvider {
    id: Uuid,
    name: String,
    endpoints: OAuthEndpoints,
    clock: SharedClock,
    margin: chrono::Duration,
    time_scale: f64,
    persist: Option<Persist>,
    monitor: Arc<CredentialMonitor>,
    tokens: tokio::sync::Mutex<Tokens>,
    refreshes: AtomicU64,
}

impl std::fmt::Debug for OAuthProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthProvider")
            .field("credential", &self.name)
            .finish_non_exhaustive()
    }
}

/// Settings of an [`OAuthProvider`].
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Refresh this long before expiry.
    pub margin: chrono::Duration,
    /// The server's time scale (the simulator's `--time-scale`): `expires_in` is server time.
    pub time_scale: f64,
}

impl OAuthProvider {
    /// A provider for the stored credential `name` (row id `id`) holding `secret`; `revoked`
    /// when the store already records the grant as gone.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: Uuid,
        name: &str,
        secret: OAuthSecret,
        revoked: bool,
        endpoints: OAuthEndpoints,
        clock: SharedClock,
        options: ProviderOptions,
        persist: Option<Persist>,
        monitor: Arc<CredentialMonitor>,
    ) -> Self {
        Self {
            id,
            name: name.to_string(),
            endpoints,
            clock,
            margin: options.margin,
            time_scale: if options.time_scale > 0.0 {
                options.time_scale
            } else {
                1.0
            },
            persist,
            monitor,
            tokens: tokio::sync::Mutex::new(Tokens {
                secret,
                margin: options.margin,
                revoked: revoked.then(|| {
                    format!(
                        "credential {name:?} is recorded as revoked; run `asana-worker creds authorize {name} --replace`"
                    )
                }),
            }),
            refreshes: AtomicU64::new(0),
        }
    }

    /// Refresh exchanges made by this provider (successful or not).
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    fn revoked_error(message: &str) -> AsanaError {
        AsanaError::Credential {
            message: message.to_string(),
            transient: false,
        }
    }

    /// Refreshes while holding the lock (single flight), persists, then updates memory.
    async fn refresh_locked(&self, tokens: &mut Tokens) -> Result<(), AsanaError> {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let name = &self.name;
        tracing::debug!(credential = %name, "Refreshing the OAuth access token");
        let previous_state = self.monitor.state(name);
        self.monitor.set_state(name, "refreshing");
        let answer = self
            .endpoints
            .refresh(
                &tokens.secret.client_id,
                &tokens.secret.client_secret,
                &tokens.secret.refresh_token,
            )
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(error) if error.needs_reauth() => {
                metrics::counter!("asana_worker_oauth_refreshes_total", "credential" => name.clone(), "outcome" => "revoked").increment(1);
                let message = format!(
                    "the OAuth grant of credential {name:?} was revoked or is no longer valid ({error}); run `asana-worker creds authorize {name} --replace` to authorize it again"
                );
                tokens.revoked = Some(message.clone());
                self.monitor.rejected(name, &message).await;
                return Err(error);
            }
            Err(error) => {
                metrics::counter!("asana_worker_oauth_refreshes_total", "credential" => name.clone(), "outcome" => "error").increment(1);
                let message =
                    format!("cannot refresh the access token of credential {name:?}: {error}");
                if self.clock.now() >= tokens.secret.expires_at {
                    // The access token has lapsed: nothing works until a refresh succeeds.
                    self.monitor.degraded(name, "expired", &message).await;
                } else {
                    self.monitor
                        .set_state(name, previous_state.as_deref().unwrap_or("active"));
                    tracing::warn!(credential = %name, %error, "Could not refresh the OAuth access token ahead of expiry; the job will retry");
                }
                return Err(AsanaError::Credential {
                    message,
                    transient: error.is_transient()
                        || matches!(
                            error,
                            AsanaError::Decode { .. } | AsanaError::UnexpectedStatus { .. }
                        ),
                });
            }
        };
        let lifetime_ms = (response.expires_in as f64 * 1000.0 / self.time_scale) as i64;
        let fresh = OAuthSecret {
            client_id: tokens.secret.client_id.clone(),
            client_secret: tokens.secret.client_secret.clone(),
            refresh_token: response
                .refresh_token
                .clone()
                .unwrap_or_else(|| tokens.secret.refresh_token.clone()),
            access_token: response.access_token.clone(),
            expires_at: self.clock.now() + chrono::Duration::milliseconds(lifetime_ms),
        };
        // Persist before use: a rotated refresh token lost to a crash would lock the worker out.
        if let Some(persist) = &self.persist {
            let stored = async {
                let sealed = persist.ring.seal(self.id, name, &fresh.to_plaintext())?;
                persist
                    .store
                    .update_credential_secret(
                        self.id,
                        i32::try_from(sealed.key_version).unwrap_or(i32::MAX),
                        sealed.nonce,
                        sealed.ciphertext,
                        "active",
                    )
                    .await
                    .map_err(CredentialError::from)
            }
            .await;
            match stored {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    credential = %name,
                    "The stored credential was replaced or deleted while its token was refreshed; the daemon switches to the new one at its next reload"
                ),
                Err(error) => {
                    metrics::counter!("asana_worker_oauth_refreshes_total", "credential" => name.clone(), "outcome" => "error").increment(1);
                    self.monitor
                        .set_state(name, previous_state.as_deref().unwrap_or("active"));
                    return Err(AsanaError::Credential {
                        message: format!(
                            "refreshed the access token of credential {name:?} but could not store it ({error}); it was not used, the job will retry"
                        ),
                        transient: true,
                    });
                }
            }
        }
        metrics::counter!("asana_worker_oauth_refreshes_total", "credential" => name.clone(), "outcome" => "ok").increment(1);
        tracing::info!(credential = %name, expires_at = %fresh.expires_at, "Refreshed the OAuth access token");
        tokens.secret = fresh;
        tokens.margin = self
            .margin
            .min(chrono::Duration::milliseconds(lifetime_ms / 2));
        self.monitor.set_state(name, "active");
        Ok(())
    }
}

#[async_trait::async_trait]
impl TokenProvider for OAuthProvider {
    async fn token(&self) -> Result<SecretString, AsanaError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(message) = &tokens.revoked {
            return Err(Self::revoked_error(message));
        }
        if self.clock.now() + tokens.margin >= tokens.secret.expires_at {
            self.refresh_locked(&mut tokens).await?;
        }
        Ok(tokens.secret.access_token.clone())
    }

    async fn refresh_rejected(&self, rejected: &SecretString) -> Result<SecretString, AsanaError> {
        let mut tokens = self.tokens.lock().await;
        if let Some(message) = &tokens.revoked {
            return Err(Self::revoked_error(message));
        }
        // Another job already replaced the rejected token: use the new one.
        if tokens.secret.access_token.expose_secret() == rejected.expose_secret() {
            self.refresh_locked(&mut tokens).await?;
        }
        Ok(tokens.secret.access_token.clone())
    }
}
