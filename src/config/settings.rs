//! Daemon settings: `config.toml` plus `ASANA_WORKER__SECTION__KEY` environment overrides (the
//! config crate), every field with a safe default so the daemon runs with no file at all.
//!
//! Durations name their unit (`lease_secs`), addresses default to loopback, and secrets never
//! appear here: credentials name a file or an environment variable that holds the token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors loading settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or an override could not be parsed.
    #[error("invalid configuration: {0}; check config.toml and ASANA_WORKER__* variables")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// All daemon settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where state lives.
    pub database: DatabaseSettings,
    /// Where job files live.
    pub jobs: JobsSettings,
    /// The admin HTTP server (`/healthz`, `/readyz`, `/metrics`).
    pub admin: AdminSettings,
    /// Logging.
    pub log: LogSettings,
    /// OpenTelemetry export.
    pub telemetry: TelemetrySettings,
    /// Workers and leases.
    pub worker: WorkerSettings,
    /// The scheduler.
    pub scheduler: SchedulerSettings,
    /// How to reach Asana.
    pub asana: AsanaSettings,
    /// Credentials declared in configuration (token read from a file or the environment).
    pub credentials: BTreeMap<String, CredentialSettings>,
    /// Credentials stored (encrypted) in the database by `creds add`.
    pub credentials_store: CredentialsStoreSettings,
    /// OAuth credentials (`creds authorize`): the authorization server and token refresh.
    pub oauth: OAuthSettings,
}

/// OAuth settings. The client secret and tokens are never here: `creds authorize` reads the
/// secret from a file, standard input or an environment variable and stores everything
/// encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthSettings {
    /// Origin of the OAuth endpoints (`/-/oauth_authorize`, `/-/oauth_token`,
    /// `/-/oauth_revoke`). Unset: `asana.base_url` without its `/api/1.0` path
    /// (`https://app.asana.com`, or the simulator's origin).
    pub auth_base_url: Option<String>,
    /// Refresh an access token this many seconds before it expires, so no request is sent
    /// with a token about to lapse (Asana's tokens live one hour).
    pub refresh_margin_secs: u64,
    /// Where `creds authorize` listens for the browser's redirect; loopback only, port 0
    /// picks a free one (register `http://127.0.0.1:PORT/callback` with a fixed port in the
    /// Asana app when it requires an exact redirect URI).
    pub callback_listen: SocketAddr,
}

impl Default for OAuthSettings {
    fn default() -> Self {
        Self {
            auth_base_url: None,
            refresh_margin_secs: 300,
            callback_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

impl Settings {
    /// The origin of the OAuth endpoints: `oauth.auth_base_url`, or `asana.base_url` without
    /// its `/api/1.0` path.
    pub fn oauth_base_url(&self) -> String {
        match &self.oauth.auth_base_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let base = self.asana.base_url.trim_end_matches('/');
                base.strip_suffix("/api/1.0").unwrap_or(base).to_string()
            }
        }
    }
}

/// Where the master key of stored credentials comes from, how often the daemon re-reads them,
/// and the hygiene thresholds of `creds list` and the hygiene metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CredentialsStoreSettings {
    /// File holding the master key(s), one `vN:KEY` per line (mode 0600). When unset,
    /// `$CREDENTIALS_DIRECTORY/master-key` (systemd `LoadCredential=`) is used, then the
    /// environment variable `ASANA_WORKER_MASTER_KEY` (with a warning).
    pub master_key_file: Option<PathBuf>,
    /// The daemon re-reads stored credentials this often (and on SIGHUP), so `creds add
    /// --replace` or `creds authorize --replace` takes effect without a restart.
    pub reload_interval_secs: u64,
    /// Warn about personal access tokens older than this many days (rotate them).
    pub pat_max_age_days: u32,
    /// Warn about credentials no job has used for this many days (delete them).
    pub unused_warning_days: u32,
    /// How often the daemon recomputes the hygiene metric.
    pub hygiene_interval_secs: u64,
    /// `last_used_at` is written at most this often per credential (it is a hint, not a log).
    pub last_used_write_secs: u64,
}

impl Default for CredentialsStoreSettings {
    fn default() -> Self {
        Self {
            master_key_file: None,
            reload_interval_secs: 30,
            pat_max_age_days: 90,
            unused_warning_days: 30,
            hygiene_interval_secs: 300,
            last_used_write_secs: 60,
        }
    }
}

/// Database settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` (default, created if missing) or `postgres://USER@HOST/DB` for several
    /// replicas.
    pub url: String,
    /// A file holding the URL instead (a PostgreSQL URL carries its password): a Kubernetes
    /// Secret or a systemd credential (a relative path is looked up in
    /// `$CREDENTIALS_DIRECTORY` first). Read at start; when set it replaces `url`, so a
    /// deployment can point a shared config file at another database through
    /// `ASANA_WORKER__DATABASE__URL_FILE`.
    pub url_file: Option<PathBuf>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://asana-worker.sqlite".into(),
            url_file: None,
        }
    }
}

impl DatabaseSettings {
    /// Replaces `url` with the content of `url_file`, when one is set.
    fn read_url_file(&mut self) -> Result<(), SettingsError> {
        let Some(file) = &self.url_file else {
            return Ok(());
        };
        let path = resolve_secret_path(file);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            SettingsError::Invalid(format!(
                "database.url_file {:?} cannot be read: {error}; mount the Secret or create the file (mode 0600)",
                path.display().to_string()
            ))
        })?;
        let url = text.trim();
        if url.is_empty() {
            return Err(SettingsError::Invalid(format!(
                "database.url_file {:?} is empty; write the database URL into it",
                path.display().to_string()
            )));
        }
        self.url = url.to_string();
        Ok(())
    }
}

/// Job file settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsSettings {
    /// Directory of `*.toml` job files.
    pub dir: PathBuf,
}

impl Default for JobsSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("jobs"),
        }
    }
}

/// Admin HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Listen address; loopback unless you mean to expose it.
    pub listen: SocketAddr,
    /// Set false to run without the admin server.
    pub enabled: bool,
    /// File holding the admin token that enables the status page's actions (`POST
    /// /api/jobs/NAME/run`, `POST /api/runs/ID/retry`, with `Authorization: Bearer TOKEN`).
    /// Unset: the page and its API are read-only.
    pub token_file: Option<std::path::PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            enabled: true,
            token_file: None,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Text or JSON.
    pub format: LogFormat,
    /// Filter in tracing's `EnvFilter` syntax.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// OpenTelemetry settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP endpoint (e.g. `http://127.0.0.1:4318`); traces are exported only when set.
    pub otlp_endpoint: Option<String>,
}

/// Worker settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Runs executed at once by this process.
    pub concurrency: usize,
    /// Per-kind caps (e.g. `org_export = 2`), within `concurrency`.
    pub per_kind: BTreeMap<String, usize>,
    /// Lease length; another worker rescues a run whose lease ran out.
    pub lease_secs: u64,
    /// How often a running job renews its lease.
    pub heartbeat_secs: u64,
    /// How often an idle worker looks for due runs.
    pub poll_interval_ms: u64,
    /// On SIGTERM, how long running jobs get to checkpoint and stop.
    pub shutdown_grace_secs: u64,
    /// Finished runs older than this are deleted.
    pub history_retention_days: u32,
    /// With PostgreSQL, each credential's jobs run in one replica at a time, which holds the
    /// credential's lease for this long and renews it every third of it; when that replica
    /// dies, another takes the credential over within this time.
    pub credential_lease_secs: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 8,
            per_kind: BTreeMap::new(),
            lease_secs: 60,
            heartbeat_secs: 15,
            poll_interval_ms: 500,
            shutdown_grace_secs: 25,
            history_retention_days: 30,
            credential_lease_secs: 30,
        }
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often the scheduler checks for due fires.
    pub tick_ms: u64,
    /// Leadership lease; only the leader enqueues fires.
    pub leader_lease_secs: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            tick_ms: 1000,
            leader_lease_secs: 30,
        }
    }
}

/// How to reach Asana.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsanaSettings {
    /// API base URL; https is required except for loopback (the simulator).
    pub base_url: String,
    /// For the simulator only: its `--time-scale`, so budgets and `Retry-After` match.
    pub time_scale: f64,
    /// TCP connect timeout.
    pub connect_timeout_secs: u64,
    /// Whole-request timeout.
    pub request_timeout_secs: u64,
}

impl Default for AsanaSettings {
    fn default() -> Self {
        Self {
            base_url: "https://app.asana.com/api/1.0".into(),
            time_scale: 1.0,
            connect_timeout_secs: 10,
            request_timeout_secs: 60,
        }
    }
}

/// Kind of a configured credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// Service account token.
    ServiceAccount,
    /// Personal access token.
    Pat,
}

/// Rate-limit tier of a credential's workspace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialTier {
    /// 150 requests per minute.
    Free,
    /// 1,500 requests per minute.
    #[default]
    Paid,
}

/// A credential declared in configuration. The token itself is read from `token_file` (e.g. a
/// mounted Kubernetes Secret, re-read when it changes) or from the environment variable
/// `token_env`; never from the configuration file or the command line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// Service account or PAT.
    pub kind: CredentialKind,
    /// Free or paid.
    #[serde(default)]
    pub tier: CredentialTier,
    /// File holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// Override of the requests per minute (defaults from the tier).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
}

/// Where a declared credential's token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A file (relative paths are looked up in systemd's `$CREDENTIALS_DIRECTORY` first).
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl CredentialSettings {
    /// Where the token of the credential `name` is read from: `token_file`, else `token_env`,
    /// else the variable `ASANA_WORKER_TOKEN_<NAME>`.
    pub fn token_location(&self, name: &str) -> TokenLocation {
        match (&self.token_file, &self.token_env) {
            (Some(path), _) => TokenLocation::File(path.clone()),
            (None, Some(variable)) => TokenLocation::Env(variable.clone()),
            (None, None) => TokenLocation::Env(format!(
                "ASANA_WORKER_TOKEN_{}",
                name.to_uppercase().replace(['-', '.'], "_")
            )),
        }
    }
}

impl TokenLocation {
    /// Whether a token can be read there now (not whether Asana accepts it), with the reason
    /// when it cannot: what an operator must fix before the credential's jobs can run.
    pub fn check(&self) -> Result<(), String> {
        match self {
            TokenLocation::File(path) => {
                check_secret_file(&resolve_secret_path(path)).map_err(|why| format!("token {why}"))
            }
            TokenLocation::Env(variable) => check_secret_env(variable),
        }
    }
}

/// Resolves `$CREDENTIALS_DIRECTORY/…` for systemd `LoadCredential=`: a relative secret path is
/// looked up there first when the variable is set.
pub fn resolve_secret_path(path: &Path) -> PathBuf {
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

/// Checks that a file holding a secret can be read and holds more than white space; the content
/// is dropped at once.
pub fn check_secret_file(path: &Path) -> Result<(), String> {
    let path = resolve_secret_path(path);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
            Err(format!("file {:?} is empty", path.display().to_string()))
        }
        Ok(mut bytes) => {
            zeroize::Zeroize::zeroize(&mut bytes);
            Ok(())
        }
        Err(error) => Err(format!(
            "file {:?} cannot be read: {error}",
            path.display().to_string()
        )),
    }
}

/// Checks that an environment variable holding a secret is set and not blank.
pub fn check_secret_env(variable: &str) -> Result<(), String> {
    match std::env::var(variable) {
        Ok(value) if value.trim().is_empty() => {
            Err(format!("environment variable {variable} is empty"))
        }
        Ok(_) => Ok(()),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {variable} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "environment variable {variable} is not valid UTF-8"
        )),
    }
}

impl Settings {
    /// Loads `path` (if given; a missing explicit file is an error) and `ASANA_WORKER__*`
    /// environment overrides, e.g. `ASANA_WORKER__DATABASE__URL`.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("ASANA_WORKER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.database.read_url_file()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks values the types cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.worker.concurrency == 0 {
            return Err(SettingsError::Invalid(
                "worker.concurrency must be at least 1".into(),
            ));
        }
        if self.worker.heartbeat_secs == 0
            || self.worker.heartbeat_secs.saturating_mul(2) > self.worker.lease_secs
        {
            return Err(SettingsError::Invalid(format!(
                "worker.heartbeat_secs ({}) must be at least 1 and at most half of worker.lease_secs ({})",
                self.worker.heartbeat_secs, self.worker.lease_secs
            )));
        }
        if !(self.asana.time_scale.is_finite() && self.asana.time_scale > 0.0) {
            return Err(SettingsError::Invalid(
                "asana.time_scale must be a positive number".into(),
            ));
        }
        for (name, credential) in &self.credentials {
            match (&credential.token_file, &credential.token_env) {
                (Some(_), Some(_)) => {
                    return Err(SettingsError::Invalid(format!(
                        "credentials.{name}: set token_file or token_env, not both"
                    )));
                }
                (None, None) => {
                    return Err(SettingsError::Invalid(format!(
                        "credentials.{name}: set token_file (a file holding the token) or token_env (an environment variable holding it)"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let settings = Settings::default();
        assert!(settings.admin.listen.ip().is_loopback());
        assert!(settings.database.url.starts_with("sqlite://"));
        settings.validate().unwrap();
    }

    #[test]
    fn a_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[worker]\nconcurrency = 3\n[credentials.sa]\nkind = \"service_account\"\ntoken_env = \"SA_TOKEN\"\n").unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(settings.worker.concurrency, 3);
        assert_eq!(
            settings.credentials["sa"].token_env.as_deref(),
            Some("SA_TOKEN")
        );
        std::fs::write(&path, "[worker]\nconcurency = 3\n").unwrap();
        let error = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("concurency"), "{error}");
    }

    #[test]
    fn the_database_url_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("database-url");
        std::fs::write(&secret, "postgres://worker:s3cret@db.example/asana\n").unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!("[database]\nurl_file = \"{}\"\n", secret.display()),
        )
        .unwrap();
        let settings = Settings::load(Some(&path)).unwrap();
        assert_eq!(
            settings.database.url,
            "postgres://worker:s3cret@db.example/asana"
        );

        std::fs::write(&secret, "  \n").unwrap();
        let error = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains("is empty"), "{error}");
        std::fs::remove_file(&secret).unwrap();
        let error = Settings::load(Some(&path)).unwrap_err().to_string();
        assert!(
            error.contains("cannot be read") && error.contains("database-url"),
            "{error}"
        );

        // url_file replaces a url from the file, as an environment override would.
        std::fs::write(&secret, "sqlite://x.sqlite").unwrap();
        std::fs::write(
            &path,
            format!(
                "[database]\nurl = \"sqlite://y.sqlite\"\nurl_file = \"{}\"\n",
                secret.display()
            ),
        )
        .unwrap();
        assert_eq!(
            Settings::load(Some(&path)).unwrap().database.url,
            "sqlite://x.sqlite"
        );
    }
}
