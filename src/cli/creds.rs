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
    /// The stored credentials (never their tokens).
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
    let store = crate::store::open(&settings.database.url)
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
        CredsCommand::List { json: as_json } => list(&*store, as_json).await,
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
    if settings.credentials.contains_key(&name) {
        return Err(UsageError(format!(
            "credential {name:?} is already declared under [credentials.{name}] in the settings; choose another name"
        ))
        .into());
    }
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

fn age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

async fn list(store: &dyn Store, as_json: bool) -> anyhow::Result<u8> {
    let rows = store.list_credentials().await?;
    let now = SystemClock.now();
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
    match crate::store::open(url).await {
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
