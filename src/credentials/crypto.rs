//! Encryption of stored credentials at rest (ARCHITECTURE.md, "Invariants": secrets).
//!
//! Tokens are sealed with XChaCha20-Poly1305 under a 32-byte master key. Each row keeps the
//! version of the key that sealed it, a random 24-byte nonce, and is bound to its credential id
//! and key version through the associated data, so a ciphertext copied onto another row, or
//! relabelled with another key version, fails to open.
//!
//! The master key file holds one key per line, `vN:KEY`, where KEY is 32 bytes in base64 or hex;
//! a single line without `vN:` is version 1. Blank lines and `#` comments are ignored. The
//! highest version is the current one (new rows are sealed with it); older versions stay
//! readable until `creds rotate-key` has re-encrypted every row, after which they can be removed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

/// Length of a master key in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// Name of the key file under `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=master-key:…`).
pub const SYSTEMD_KEY_NAME: &str = "master-key";
/// Environment variable accepted (with a warning) as the master key.
pub const KEY_ENV: &str = "ASANA_WORKER_MASTER_KEY";

const FORMAT_HINT: &str = "each line is `vN:KEY` with KEY 32 bytes in base64 or hex; create one with `asana-worker creds init-key PATH`";

/// Errors of the key ring and of sealing and opening credentials. Messages never contain key
/// material or plaintext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key file could not be read or written.
    #[error(
        "cannot access the master key file {path}: {source}; check master_key_file and its permissions"
    )]
    Io {
        /// File.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the key file is malformed.
    #[error("master key from {origin}, line {line}: {message}; {FORMAT_HINT}")]
    Format {
        /// File or variable.
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The key file holds no key.
    #[error("master key from {0} holds no key; {FORMAT_HINT}")]
    Empty(String),
    /// A row was sealed under a key version the ring does not have.
    #[error(
        "credential {name:?} is encrypted under master key version {version}, but the master key file only holds versions {known:?}; add that key back to master_key_file (or delete and re-add the credential)"
    )]
    UnknownVersion {
        /// Credential.
        name: String,
        /// Version on the row.
        version: u32,
        /// Versions in the ring.
        known: Vec<u32>,
    },
    /// Authentication failed: wrong key, or the row was changed.
    #[error(
        "cannot decrypt credential {name:?} with master key version {version}: either master_key_file holds a different key than the one that encrypted it, or the stored row was tampered with; no plaintext was produced. Restore the right key, or delete and re-add the credential"
    )]
    Decrypt {
        /// Credential.
        name: String,
        /// Version on the row.
        version: u32,
    },
    /// Sealing failed (should not happen with valid keys).
    #[error("cannot encrypt credential {0:?}")]
    Encrypt(String),
    /// A rotation target version is not newer than the keys in use.
    #[error(
        "the new key has version {new}, but the master key file already holds version {current}; give the new key a higher version (`asana-worker creds init-key PATH --version {next}`)"
    )]
    StaleVersion {
        /// New key's version.
        new: u32,
        /// Current version.
        current: u32,
        /// Suggested version.
        next: u32,
    },
    /// No key was configured but one is needed.
    #[error(
        "stored credentials need a master key, and none is configured: set [credentials_store] master_key_file in config.toml, or run under systemd with LoadCredential=master-key:PATH (create a key with `asana-worker creds init-key PATH`)"
    )]
    NoKey,
}

/// One master key. The bytes are wiped from memory when dropped.
pub struct MasterKey {
    version: u32,
    bytes: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("bytes", &"[redacted]")
            .finish()
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate(version: u32) -> Self {
        let mut key = Key::generate();
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        bytes.copy_from_slice(key.as_slice());
        key.as_mut_slice().zeroize();
        Self { version, bytes }
    }

    /// The key's version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The `vN:BASE64` line for a key file.
    fn to_line(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "v{}:{}\n",
            self.version,
            base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice())
        ))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        let mut key = Key::from(*self.bytes);
        let cipher = XChaCha20Poly1305::new(&key);
        key.as_mut_slice().zeroize();
        cipher
    }

    /// Writes a new key file holding this key, mode 0600; refuses to overwrite a file.
    pub fn write_new_file(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(self.to_line().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// A row's sealed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Version of the key that sealed it.
    pub key_version: u32,
    /// Random nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// The master keys by version; the highest is current.
#[derive(Debug)]
pub struct KeyRing {
    keys: BTreeMap<u32, MasterKey>,
}

fn decode_key(text: &str) -> Option<Zeroizing<[u8; KEY_LEN]>> {
    let decoded = Zeroizing::new(if text.len() == KEY_LEN * 2 {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(text))
            .ok()?
    });
    if decoded.len() != KEY_LEN {
        return None;
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    bytes.copy_from_slice(&decoded);
    Some(bytes)
}

fn associated_data(id: Uuid, version: u32) -> Vec<u8> {
    format!("asana-worker credential {id} key v{version}").into_bytes()
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(key: MasterKey) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(key.version, key);
        Self { keys }
    }

    /// Parses key file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, CryptoError> {
        let mut keys = BTreeMap::new();
        let format = |line: usize, message: &str| CryptoError::Format {
            origin: origin.to_string(),
            line,
            message: message.to_string(),
        };
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (version, key) = match line.split_once(':') {
                Some((tag, key)) if tag.starts_with('v') => {
                    let version: u32 = tag[1..]
                        .parse()
                        .map_err(|_| format(index + 1, "the version after `v` is not a number"))?;
                    (version, key.trim())
                }
                _ => (1, line),
            };
            let bytes = decode_key(key)
                .ok_or_else(|| format(index + 1, "the key is not 32 bytes of base64 or hex"))?;
            if keys.insert(version, MasterKey { version, bytes }).is_some() {
                return Err(format(index + 1, "this version appears twice"));
            }
        }
        if keys.is_empty() {
            return Err(CryptoError::Empty(origin.to_string()));
        }
        Ok(Self { keys })
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| CryptoError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        Self::parse(&text, &path.display().to_string())
    }

    /// The ring named by the settings: `master_key_file`, else `$CREDENTIALS_DIRECTORY/master-key`,
    /// else `$ASANA_WORKER_MASTER_KEY` (with a warning: the environment leaks to child processes
    /// and `/proc`). None when nothing is configured.
    pub fn from_settings(master_key_file: Option<&Path>) -> Result<Option<Self>, CryptoError> {
        if let Some(path) = master_key_file {
            return Self::load(path).map(Some);
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let path = PathBuf::from(dir).join(SYSTEMD_KEY_NAME);
            if path.exists() {
                return Self::load(&path).map(Some);
            }
        }
        if let Ok(value) = std::env::var(KEY_ENV) {
            let value = Zeroizing::new(value);
            tracing::warn!(
                variable = KEY_ENV,
                "Using the master key from the environment; prefer master_key_file or systemd LoadCredential="
            );
            return Self::parse(&value, KEY_ENV).map(Some);
        }
        Ok(None)
    }

    /// The current (highest) version.
    pub fn current_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    /// Versions held.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Whether both rings hold the very same key under `version`.
    pub fn same_key(&self, other: &KeyRing, version: u32) -> bool {
        match (self.keys.get(&version), other.keys.get(&version)) {
            (Some(a), Some(b)) => *a.bytes == *b.bytes,
            _ => false,
        }
    }

    /// Adds the keys of `other` (for rotation: old keys to read, the new one to write).
    pub fn merge(&mut self, other: KeyRing) {
        self.keys.extend(other.keys);
    }

    /// Seals `token` for the credential `id` (named `name` in errors) under the current key.
    pub fn seal(&self, id: Uuid, name: &str, token: &SecretString) -> Result<Sealed, CryptoError> {
        let key = self
            .keys
            .values()
            .next_back()
            .ok_or_else(|| CryptoError::Encrypt(name.to_string()))?;
        let nonce = XNonce::generate();
        let aad = associated_data(id, key.version);
        let ciphertext = key
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: token.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Encrypt(name.to_string()))?;
        Ok(Sealed {
            key_version: key.version,
            nonce: nonce.as_slice().to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed token of credential `id`.
    pub fn open(&self, id: Uuid, name: &str, sealed: &Sealed) -> Result<SecretString, CryptoError> {
        let key =
            self.keys
                .get(&sealed.key_version)
                .ok_or_else(|| CryptoError::UnknownVersion {
                    name: name.to_string(),
                    version: sealed.key_version,
                    known: self.versions(),
                })?;
        let decrypt = || CryptoError::Decrypt {
            name: name.to_string(),
            version: sealed.key_version,
        };
        let nonce = XNonce::try_from(sealed.nonce.as_slice()).map_err(|_| decrypt())?;
        let aad = associated_data(id, sealed.key_version);
        let plain = Zeroizing::new(
            key.cipher()
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad,
                    },
                )
                .map_err(|_| decrypt())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| decrypt())?;
        Ok(SecretString::from(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> SecretString {
        SecretString::from("canary-7f3a".to_string())
    }

    #[test]
    fn sealed_tokens_open_only_with_their_id_key_and_bytes() {
        let ring = KeyRing::single(MasterKey::generate(1));
        let id = Uuid::new_v4();
        let sealed = ring.seal(id, "sa", &token()).unwrap();
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"canary-7f3a"));
        assert_eq!(
            ring.open(id, "sa", &sealed).unwrap().expose_secret(),
            "canary-7f3a"
        );
        // Another row's id.
        assert!(matches!(
            ring.open(Uuid::new_v4(), "sa", &sealed),
            Err(CryptoError::Decrypt { .. })
        ));
        // A flipped bit.
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        let error = ring.open(id, "sa", &tampered).unwrap_err();
        assert!(error.to_string().contains("tampered"), "{error}");
        // Another key with the same version.
        let other = KeyRing::single(MasterKey::generate(1));
        assert!(matches!(
            other.open(id, "sa", &sealed),
            Err(CryptoError::Decrypt { .. })
        ));
        // A relabelled version.
        let mut relabelled = sealed.clone();
        relabelled.key_version = 2;
        assert!(matches!(
            ring.open(id, "sa", &relabelled),
            Err(CryptoError::UnknownVersion { version: 2, .. })
        ));
    }

    #[test]
    fn key_files_parse_versions_base64_and_hex() {
        let key = [7u8; KEY_LEN];
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let text = format!("# keys\nv1:{}\n\nv3:{b64}\n", hex::encode(key));
        let ring = KeyRing::parse(&text, "test").unwrap();
        assert_eq!(ring.versions(), vec![1, 3]);
        assert_eq!(ring.current_version(), 3);
        assert_eq!(KeyRing::parse(&b64, "t").unwrap().versions(), vec![1]);
        let error = KeyRing::parse("v1:short", "t").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        assert!(!error.to_string().contains("short"), "{error}");
        assert!(matches!(
            KeyRing::parse("# nothing\n", "t"),
            Err(CryptoError::Empty(_))
        ));
        assert!(KeyRing::parse(&format!("v1:{b64}\nv1:{b64}"), "t").is_err());
    }

    #[test]
    fn generated_key_files_are_private_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let key = MasterKey::generate(4);
        key.write_new_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.versions(), vec![4]);
        let id = Uuid::new_v4();
        let sealed = KeyRing::single(key).seal(id, "x", &token()).unwrap();
        assert_eq!(
            ring.open(id, "x", &sealed).unwrap().expose_secret(),
            "canary-7f3a"
        );
        assert!(MasterKey::generate(5).write_new_file(&path).is_err());
        assert!(!format!("{ring:?}").contains(&hex::encode(*ring.keys[&4].bytes)));
    }
}
