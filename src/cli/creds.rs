//! `asana-worker creds …`: credentials stored encrypted in the database.
//!
//! A token is read from a file or standard input, never from the command line (argv is visible
//! to every user through `ps` and `/proc`). It is sealed with the master key before it reaches
//! the database, and no command prints it back.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use secrecy::SecretString;
use serde_json::json;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::common::{ConfigArgs, UsageError};
use crate::clock::{Clock, SystemClock};
use crate::config::settings::Settings;
use crate::credentials::crypto::{CryptoError, KeyRing, MasterKey, Sealed};
use crate::store::{CredentialRow, Reencrypted, Store};

/// Arguments of `creds`.
#[derive(Debug, Args)]
pub struct CredsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    command: CredsCommand,
}

/// Kinds `creds add` accepts (OAuth credentials come from `creds authorize`, later).
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AddKind {
    /// A service account token (Enterprise).
    #[value(name = "service_account", alias = "service-account")]
    ServiceAccount,
    /// A personal access token.
    Pat,
}

/// Rate-limit tier.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AddTier {
    /// Free workspace: 150 requests per minute.
    Free,
    /// Paid workspace: 1500 requests per minute.
    Paid,
}

/// `creds` subcommands.
#[derive(Debug, Subcommand)]
pub enum CredsCommand {
    /// Store a credential, its token read from --token-file or standard input (never argv).
    Add {
        /// Name jobs refer to (letters, digits, `-`, `_`).
        name: String,
        /// Kind of token.
        #[arg(long, value_enum)]
        kind: AddKind,
        /// Rate-limit tier.
        #[arg(long, value_enum, default_value = "paid")]
        tier: AddTier,
        /// Who the credential is for (a label).
        #[arg(long)]
        tenant: Option<String>,
        /// File holding the token; without it the token is read from standard input.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Replace a stored credential of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Authorize an OAuth app (authorization code with PKCE) and store its tokens encrypted:
    /// prints a URL to open in a browser and waits for the redirect on a loopback port.
    Authorize {
        /// Name jobs refer to.
        name: String,
        /// The app's client id.
        #[arg(long)]
        client_id: String,
        /// File holding the client secret (mode 0600); without it, --client-secret-env or
        /// standard input. Never on the command line.
        #[arg(long)]
        client_secret_file: Option<PathBuf>,
        /// Environment variable holding the client secret.
        #[arg(long)]
        client_secret_env: Option<String>,
        /// Rate-limit tier.
        #[arg(long, value_enum, default_value = "paid")]
        tier: AddTier,
        /// Who the credential is for (a label).
        #[arg(long)]
        tenant: Option<String>,
        /// Loopback address for the redirect (default [oauth] callback_listen, 127.0.0.1:0).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Give up waiting for the browser after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Replace a stored credential of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Check a credential against Asana (`users/me`): records its owner and state; exits 3 when
    /// Asana rejects it.
    Check {
        /// Its name (stored or declared in config.toml).
        name: String,
    },
    /// Revoke a stored credential and delete it: OAuth grants are revoked at Asana; PATs and
    /// service account tokens can only be revoked in Asana's developer console / admin console.
    Revoke {
        /// Its name.
        name: String,
    },
    /// The stored credentials (never their tokens), with hygiene warnings.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a stored credential.
    Delete {
        /// Its name.
        name: String,
    },
    /// Re-encrypt every stored credential under a new master key version.
    RotateKey {
        /// Key file holding the new key (`vN:KEY`, N above the current version), e.g. made by
        /// `creds init-key PATH --version N`.
        #[arg(long)]
        new_key_file: PathBuf,
        /// Rows re-encrypted per transaction.
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
    },
    /// Write a new random master key file (mode 0600); refuses to overwrite one.
    InitKey {
        /// Where to write it.
        path: PathBuf,
        /// The key's version.
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
}

/// Runs a `creds` subcommand.
pub async fn run(args: CredsArgs) -> anyhow::Result<u8> {
    if let CredsCommand::InitKey { path, version } = &args.command {
        MasterKey::generate(*version).write_new_file(path)?;
        println!(
            "Wrote a new master key (version {version}) to {} with mode 0600; set [credentials_store] master_key_file to it",
            path.display()
        );
        return Ok(super::EXIT_OK);
    }
    let settings = args.config.load()?;
    let store = crate::store::open_current(&settings.database.url)
        .await
        .context("opening the database")?;
    match args.command {
        CredsCommand::Add {
            name,
            kind,
            tier,
            tenant,
            token_file,
            replace,
        } => {
            add(
                &settings,
                &*store,
                NewCredential {
                    name,
                    kind,
                    tier,
                    tenant,
                },
                token_file.as_deref(),
                replace,
            )
            .await
        }
        CredsCommand::List { json: as_json } => list(&settings, &*store, as_json).await,
        CredsCommand::Authorize {
            name,
            client_id,
            client_secret_file,
            client_secret_env,
            tier,
            tenant,
            listen,
            timeout_secs,
            replace,
        } => {
            let secret =
                read_client_secret(client_secret_file.as_deref(), client_secret_env.as_deref())?;
            authorize(
                &settings,
                store,
                Authorize {
                    name,
                    client_id,
                    client_secret: secret,
                    tier,
                    tenant,
                    listen: listen.unwrap_or(settings.oauth.callback_listen),
                    timeout: std::time::Duration::from_secs(timeout_secs.max(1)),
                    replace,
                },
            )
            .await
        }
        CredsCommand::Check { name } => check(&settings, store, &name).await,
        CredsCommand::Revoke { name } => revoke(&settings, &*store, &name).await,
        CredsCommand::Delete { name } => {
            if store.delete_credential(&name).await? {
                println!("Deleted credential {name}");
                Ok(super::EXIT_OK)
            } else {
                Err(UsageError(format!("no stored credential is named {name:?}")).into())
            }
        }
        CredsCommand::RotateKey {
            new_key_file,
            batch_size,
        } => rotate(&settings, &*store, &new_key_file, batch_size.max(1)).await,
        CredsCommand::InitKey { .. } => Ok(super::EXIT_OK),
    }
}

struct NewCredential {
    name: String,
    kind: AddKind,
    tier: AddTier,
    tenant: Option<String>,
}

fn key_ring(settings: &Settings) -> anyhow::Result<KeyRing> {
    Ok(
        KeyRing::from_settings(settings.credentials_store.master_key_file.as_deref())?
            .ok_or(CryptoError::NoKey)?,
    )
}

/// Reads the token from `file`, or standard input; trailing whitespace is dropped.
fn read_token(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let mut text = Zeroizing::new(String::new());
    match file {
        Some(path) => {
            *text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token from {}", path.display()))?;
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Paste the token and press Enter:");
                stdin.read_line(&mut text).context("reading the token")?;
            } else {
                stdin
                    .lock()
                    .read_to_string(&mut text)
                    .context("reading the token from standard input")?;
            }
        }
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(UsageError(
            "the token is empty; pipe it on standard input or pass --token-file PATH".into(),
        )
        .into());
    }
    Ok(SecretString::from(token.to_string()))
}

async fn add(
    settings: &Settings,
    store: &dyn Store,
    new: NewCredential,
    token_file: Option<&Path>,
    replace: bool,
) -> anyhow::Result<u8> {
    let name = new.name;
    validate_name(settings, &name)?;
    let ring = key_ring(settings)?;
    let token = read_token(token_file)?;
    let id = Uuid::new_v4();
    let sealed = ring.seal(id, &name, &token)?;
    let row = CredentialRow {
        id,
        name: name.clone(),
        kind: match new.kind {
            AddKind::ServiceAccount => "service_account",
            AddKind::Pat => "pat",
        }
        .into(),
        tier: match new.tier {
            AddTier::Free => "free",
            AddTier::Paid => "paid",
        }
        .into(),
        tenant: new.tenant,
        key_version: i32::try_from(sealed.key_version).context("key version too large")?,
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
    if !store.put_credential(&row, replace).await? {
        return Err(UsageError(format!(
            "a credential named {name:?} is already stored; pass --replace to replace it"
        ))
        .into());
    }
    println!(
        "Stored credential {name} ({}, {}) encrypted under master key version {}",
        row.kind, row.tier, row.key_version
    );
    Ok(super::EXIT_OK)
}

/// Exit code of `creds check` when Asana rejects the credential.
pub const EXIT_REJECTED: u8 = 3;

fn validate_name(settings: &Settings, name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(UsageError(format!(
            "invalid credential name {name:?}: use letters, digits, `-` and `_`"
        ))
        .into());
    }
    if settings.credentials.contains_key(name) {
        return Err(UsageError(format!(
            "credential {name:?} is already declared under [credentials.{name}] in the settings; choose another name"
        ))
        .into());
    }
    Ok(())
}

/// The client secret from a file, an environment variable or standard input (never argv).
fn read_client_secret(file: Option<&Path>, env: Option<&str>) -> anyhow::Result<SecretString> {
    if let Some(var) = env {
        let value = Zeroizing::new(std::env::var(var).map_err(|_| {
            UsageError(format!(
                "the environment variable {var} (--client-secret-env) is not set"
            ))
        })?);
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(UsageError(format!("the environment variable {var} is empty")).into());
        }
        return Ok(SecretString::from(trimmed.to_string()));
    }
    read_token(file).map_err(|error| {
        error.context("reading the client secret (--client-secret-file, --client-secret-env or standard input)")
    })
}

struct Authorize {
    name: String,
    client_id: String,
    client_secret: SecretString,
    tier: AddTier,
    tenant: Option<String>,
    listen: std::net::SocketAddr,
    timeout: std::time::Duration,
    replace: bool,
}

/// What the browser's redirect brought back.
#[derive(Debug)]
enum Callback {
    Code { code: String, state: String },
    Error(String),
}

/// Serves `/callback` on `listener` until one redirect arrives with the expected `state`.
async fn wait_for_callback(
    listener: tokio::net::TcpListener,
    expected_state: String,
    timeout: std::time::Duration,
) -> anyhow::Result<String> {
    use axum::extract::{Query as AxQuery, State as AxState};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    type Slot = Arc<Mutex<Option<tokio::sync::oneshot::Sender<Callback>>>>;
    let (tx, rx) = tokio::sync::oneshot::channel::<Callback>();
    let slot: Slot = Arc::new(Mutex::new(Some(tx)));
    async fn callback(
        AxState(slot): AxState<Slot>,
        AxQuery(query): AxQuery<HashMap<String, String>>,
    ) -> (axum::http::StatusCode, &'static str) {
        let message = match (query.get("code"), query.get("error")) {
            (Some(code), _) => Callback::Code {
                code: code.clone(),
                state: query.get("state").cloned().unwrap_or_default(),
            },
            (None, Some(error)) => Callback::Error(format!(
                "{error}: {}",
                query
                    .get("error_description")
                    .map(String::as_str)
                    .unwrap_or("")
            )),
            (None, None) => {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    "This URL expects an OAuth redirect with a code.",
                );
            }
        };
        if let Some(tx) = slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(message);
        }
        (
            axum::http::StatusCode::OK,
            "asana-worker received the authorization; you can close this window.",
        )
    }
    let app = axum::Router::new()
        .route("/callback", axum::routing::get(callback))
        .with_state(slot);
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    let received = tokio::time::timeout(timeout, rx).await;
    stop.cancel();
    let _ = server.await;
    match received {
        Err(_) => anyhow::bail!(
            "no redirect arrived within {} s; run the command again and open the URL sooner (or raise --timeout-secs)",
            timeout.as_secs()
        ),
        Ok(Err(_)) => anyhow::bail!("the callback server stopped before a redirect arrived"),
        Ok(Ok(Callback::Error(error))) => anyhow::bail!(
            "the authorization was refused ({error}); check the client id and that the app may be installed in the workspace"
        ),
        Ok(Ok(Callback::Code { code, state })) => {
            if state != expected_state {
                anyhow::bail!(
                    "the redirect carried a different state than the request (possible cross-site request forgery); nothing was stored, run the command again"
                );
            }
            Ok(code)
        }
    }
}

async fn authorize(
    settings: &Settings,
    store: std::sync::Arc<dyn Store>,
    request: Authorize,
) -> anyhow::Result<u8> {
    use crate::credentials::oauth::{OAuthEndpoints, OAuthSecret, Pkce, random_state};
    let name = request.name.clone();
    validate_name(settings, &name)?;
    if !request.listen.ip().is_loopback() {
        return Err(UsageError(format!(
            "--listen {} is not a loopback address; the redirect must stay on this machine (use 127.0.0.1:PORT)",
            request.listen
        ))
        .into());
    }
    if !request.replace && store.get_credential(&name).await?.is_some() {
        return Err(UsageError(format!(
            "a credential named {name:?} is already stored; pass --replace to replace it"
        ))
        .into());
    }
    let ring = key_ring(settings)?;
    let endpoints = OAuthEndpoints::new(
        &settings.oauth_base_url(),
        std::time::Duration::from_secs(settings.asana.request_timeout_secs.max(1)),
    )?;
    let listener = tokio::net::TcpListener::bind(request.listen)
        .await
        .with_context(|| format!("listening on {} for the OAuth redirect", request.listen))?;
    let redirect_uri = format!("http://{}/callback", listener.local_addr()?);
    let pkce = Pkce::generate();
    let state = random_state();
    let url = endpoints.authorize_url(&request.client_id, &redirect_uri, &state, &pkce.challenge);
    println!("Open this URL in a browser and approve the app:\n{url}");
    println!("Waiting for the redirect on {redirect_uri} …");
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let code = wait_for_callback(listener, state, request.timeout).await?;
    let tokens = endpoints
        .exchange_code(
            &request.client_id,
            &request.client_secret,
            &code,
            &redirect_uri,
            &pkce.verifier,
        )
        .await
        .context("exchanging the authorization code at the token endpoint")?;
    let clock = SystemClock;
    let scale = if settings.asana.time_scale > 0.0 {
        settings.asana.time_scale
    } else {
        1.0
    };
    let secret = OAuthSecret {
        client_id: request.client_id.clone(),
        client_secret: request.client_secret.clone(),
        refresh_token: tokens.refresh_token.clone().ok_or_else(|| {
            anyhow::anyhow!("the token endpoint returned no refresh token; the daemon could not renew the access token, so nothing was stored")
        })?,
        access_token: tokens.access_token.clone(),
        expires_at: clock.now()
            + chrono::Duration::milliseconds((tokens.expires_in as f64 * 1000.0 / scale) as i64),
    };
    // Who the tokens act as, through a budget like every request.
    let tier = match request.tier {
        AddTier::Free => crate::budget::Tier::Free,
        AddTier::Paid => crate::budget::Tier::Paid,
    };
    let me = one_off_client(settings, &name, tier, tokens.access_token.clone())?
        .me(&["name", "email"])
        .await
        .context("asking Asana who the new token acts as (users/me)")?;
    let id = Uuid::new_v4();
    let sealed = ring.seal(id, &name, &secret.to_plaintext())?;
    let now = clock.now();
    let row = CredentialRow {
        id,
        name: name.clone(),
        kind: "oauth".into(),
        tier: match request.tier {
            AddTier::Free => "free",
            AddTier::Paid => "paid",
        }
        .into(),
        tenant: request.tenant,
        key_version: i32::try_from(sealed.key_version).context("key version too large")?,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
        owner_gid: Some(me.gid.clone()),
        owner_name: me.name.clone(),
        owner_email: me.email.clone(),
        state: "active".into(),
        created_at: now,
        last_used_at: None,
        last_validated_at: Some(now),
        last_error: None,
    };
    if !store.put_credential(&row, request.replace).await? {
        return Err(UsageError(format!(
            "a credential named {name:?} was stored meanwhile; pass --replace to replace it"
        ))
        .into());
    }
    println!(
        "Stored OAuth credential {name} acting as {} ({}), encrypted under master key version {}",
        me.name.as_deref().unwrap_or(&me.gid),
        me.email.as_deref().unwrap_or("no email"),
        row.key_version
    );
    Ok(super::EXIT_OK)
}

/// A client for one command, its requests spending a budget like the daemon's.
fn one_off_client(
    settings: &Settings,
    name: &str,
    tier: crate::budget::Tier,
    token: SecretString,
) -> anyhow::Result<crate::asana::AsanaClient> {
    let mut budget_config = crate::budget::BudgetConfig::new(name, tier);
    budget_config.time_scale = settings.asana.time_scale;
    let budget = crate::budget::BudgetRegistry::new()
        .budget(budget_config, &format!("credential:{name}"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = crate::asana::ClientConfig {
        connect_timeout_secs: settings.asana.connect_timeout_secs,
        request_timeout_secs: settings.asana.request_timeout_secs,
        ..crate::asana::ClientConfig::with_base_url(settings.asana.base_url.clone())
    };
    Ok(crate::asana::AsanaClient::new(config, token, budget)?)
}

/// `creds check NAME`.
async fn check(
    settings: &Settings,
    store: std::sync::Arc<dyn Store>,
    name: &str,
) -> anyhow::Result<u8> {
    use crate::credentials::{ClientPool, PoolRuntime, monitor::Owner};
    let stored = crate::credentials::load_stored(&*store, settings).await?;
    let ring = if stored.is_empty() {
        None
    } else {
        Some(std::sync::Arc::new(key_ring(settings)?))
    };
    let pool = ClientPool::with_runtime(
        settings,
        stored,
        PoolRuntime {
            store: Some(store.clone()),
            clock: std::sync::Arc::new(SystemClock),
            ring,
        },
    );
    let client = match pool.client(name) {
        Ok(client) => client,
        Err(crate::credentials::CredentialError::Unknown(_)) => {
            return Err(UsageError(format!(
                "no credential is named {name:?} (neither stored nor declared in config.toml)"
            ))
            .into());
        }
        Err(error) => return Err(error.into()),
    };
    match client.me(&["name", "email"]).await {
        Ok(me) => {
            let owner = Owner {
                gid: me.gid.clone(),
                name: me.name.clone(),
                email: me.email.clone(),
            };
            pool.monitor().validated(name, &owner).await;
            println!(
                "Credential {name} is valid: it acts as {} ({}, gid {})",
                me.name.as_deref().unwrap_or("-"),
                me.email.as_deref().unwrap_or("no email"),
                me.gid
            );
            Ok(super::EXIT_OK)
        }
        Err(error) if error.needs_reauth() => {
            let message = format!("Asana rejected credential {name:?}: {error}");
            pool.monitor().rejected(name, &message).await;
            eprintln!(
                "{message}\nThe token was revoked or expired, or its owner was deactivated. Replace it: \
                 `asana-worker creds authorize {name} --replace` (OAuth) or `asana-worker creds add {name} --replace` (PAT, service account)."
            );
            Ok(EXIT_REJECTED)
        }
        Err(error) => {
            let status = crate::store::CredentialStatus {
                state: "error".into(),
                last_error: Some(error.to_string()),
                ..Default::default()
            };
            let _ = store.set_credential_status(name, &status).await;
            Err(anyhow::anyhow!(
                "could not check credential {name:?}: {error}"
            ))
        }
    }
}

/// `creds revoke NAME`.
async fn revoke(settings: &Settings, store: &dyn Store, name: &str) -> anyhow::Result<u8> {
    let Some(row) = store.get_credential(name).await? else {
        return Err(UsageError(format!("no stored credential is named {name:?}")).into());
    };
    if row.kind == "oauth" {
        let ring = key_ring(settings)?;
        let opened = crate::credentials::open_row(&ring, &row)?;
        let crate::credentials::StoredSecret::OAuth(secret) = &opened.secret else {
            anyhow::bail!("credential {name:?} is marked oauth but holds a plain token");
        };
        let endpoints = crate::credentials::oauth::OAuthEndpoints::new(
            &settings.oauth_base_url(),
            std::time::Duration::from_secs(settings.asana.request_timeout_secs.max(1)),
        )?;
        endpoints
            .revoke(&secret.client_id, &secret.client_secret, &secret.refresh_token)
            .await
            .with_context(|| {
                format!("revoking the OAuth grant of {name:?} at Asana; nothing was deleted, run the command again")
            })?;
        store.delete_credential(name).await?;
        println!("Revoked the OAuth grant of {name} at Asana and deleted the credential");
    } else {
        store.delete_credential(name).await?;
        println!(
            "Deleted credential {name}. A {} cannot be revoked through the API: revoke it in Asana (developer console for personal access tokens, admin console for service accounts)",
            if row.kind == "pat" {
                "personal access token"
            } else {
                "service account token"
            }
        );
    }
    Ok(super::EXIT_OK)
}

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn list(settings: &Settings, store: &dyn Store, as_json: bool) -> anyhow::Result<u8> {
    use crate::credentials::monitor::hygiene;
    let rows = store.list_credentials().await?;
    let now = SystemClock.now();
    let thresholds = &settings.credentials_store;
    if as_json {
        let out: Vec<_> = rows
            .iter()
            .map(|row| {
                json!({
                    "name": row.name,
                    "kind": row.kind,
                    "tier": row.tier,
                    "tenant": row.tenant,
                    "state": row.state,
                    "owner": {"gid": row.owner_gid, "name": row.owner_name, "email": row.owner_email},
                    "key_version": row.key_version,
                    "created_at": row.created_at,
                    "age_seconds": (now - row.created_at).num_seconds().max(0),
                    "last_used_at": row.last_used_at,
                    "last_validated_at": row.last_validated_at,
                    "last_error": row.last_error,
                    "warnings": hygiene(row, now, thresholds)
                        .into_iter()
                        .map(|w| json!({"reason": w.reason, "message": w.message}))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(super::EXIT_OK);
    }
    if rows.is_empty() {
        println!("No stored credentials (add one with `asana-worker creds add NAME --kind …`)");
        return Ok(super::EXIT_OK);
    }
    println!(
        "{:<24} {:<16} {:<5} {:<10} {:<28} {:>6} {:<20} KEY",
        "NAME", "KIND", "TIER", "STATE", "OWNER", "AGE", "LAST USED"
    );
    for row in rows {
        let owner = row
            .owner_email
            .clone()
            .or(row.owner_name.clone())
            .or(row.owner_gid.clone())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<16} {:<5} {:<10} {:<28} {:>6} {:<20} v{}",
            row.name,
            row.kind,
            row.tier,
            row.state,
            owner,
            age((now - row.created_at).num_seconds().max(0)),
            row.last_used_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "never".into()),
            row.key_version
        );
        for warning in hygiene(&row, now, thresholds) {
            println!("  warning [{}]: {}", warning.reason, warning.message);
        }
    }
    Ok(super::EXIT_OK)
}

/// Re-encrypts every row not yet under the new key, one transaction per batch. Rows are
/// updated only while still under the version they were read with, so a concurrent `creds add`
/// is never overwritten; the daemon keeps running on the tokens it decrypted at start.
async fn rotate(
    settings: &Settings,
    store: &dyn Store,
    new_key_file: &Path,
    batch_size: usize,
) -> anyhow::Result<u8> {
    let old = key_ring(settings)?;
    let ring = KeyRing::load(new_key_file)?;
    let new_version = ring.current_version();
    // A new key needs a version of its own; reusing one would make rows sealed under the old
    // key of that version look already rotated (and unreadable).
    let already_present = old.same_key(&ring, new_version);
    if !already_present && old.versions().contains(&new_version)
        || new_version < old.current_version()
    {
        return Err(CryptoError::StaleVersion {
            new: new_version,
            current: old.current_version(),
            next: old.current_version() + 1,
        }
        .into());
    }
    // The old keys to open rows with, and the new one (the highest) to seal them.
    let mut readers = old;
    readers.merge(ring);
    let rows = store.list_credentials().await?;
    let mut changed = 0u64;
    let pending: Vec<&CredentialRow> = rows
        .iter()
        .filter(|row| u32::try_from(row.key_version).ok() != Some(new_version))
        .collect();
    for chunk in pending.chunks(batch_size) {
        let mut batch = Vec::with_capacity(chunk.len());
        for row in chunk {
            let sealed = Sealed {
                key_version: u32::try_from(row.key_version).unwrap_or(u32::MAX),
                nonce: row.nonce.clone(),
                ciphertext: row.ciphertext.clone(),
            };
            let token = readers.open(row.id, &row.name, &sealed)?;
            let resealed = readers.seal(row.id, &row.name, &token)?;
            debug_assert_eq!(resealed.key_version, new_version);
            batch.push(Reencrypted {
                id: row.id,
                from_version: row.key_version,
                key_version: i32::try_from(resealed.key_version)
                    .context("key version too large")?,
                nonce: resealed.nonce,
                ciphertext: resealed.ciphertext,
            });
        }
        changed += store.reencrypt_credentials(batch).await?;
    }
    let left = store
        .list_credentials()
        .await?
        .iter()
        .filter(|row| u32::try_from(row.key_version).ok() != Some(new_version))
        .count();
    if left > 0 {
        anyhow::bail!(
            "{left} credential(s) are still under an older key (changed meanwhile); run rotate-key again"
        );
    }
    println!(
        "Re-encrypted {changed} credential(s); all {} are now under master key version {new_version}. \
         Set master_key_file to {} (or keep only its v{new_version} line); the older keys can then be removed.",
        rows.len(),
        new_key_file.display()
    );
    Ok(super::EXIT_OK)
}

/// Names of the credentials stored in the database, for validating job files outside the
/// daemon. Empty (not an error) when the database does not exist yet or cannot be read: the
/// daemon checks again at start.
pub async fn stored_names(settings: &Settings) -> Vec<String> {
    let url = &settings.database.url;
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        && !Path::new(path.split('?').next().unwrap_or(path)).exists()
    {
        return Vec::new();
    }
    match crate::store::open_current(url).await {
        Ok(store) => match store.list_credentials().await {
            Ok(rows) => rows.into_iter().map(|row| row.name).collect(),
            Err(error) => {
                tracing::warn!(%error, "Cannot list the stored credentials");
                Vec::new()
            }
        },
        Err(error) => {
            tracing::warn!(%error, "Cannot open the database to list the stored credentials");
            Vec::new()
        }
    }
}
