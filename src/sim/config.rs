//! The simulator's configuration: which tokens exist, how big the seeded world is, how fast time
//! runs, and which faults to inject. Read from a small TOML file (`asana-worker sim --config`) or
//! built in code by tests; every field has a default so an empty file is a working simulator.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Errors loading a simulator config.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    /// The file could not be read.
    #[error("cannot read simulator config {path}: {source}; check the path and its permissions")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid simulator config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's description, with line and column.
        message: String,
    },
    /// The values are inconsistent.
    #[error("invalid simulator config: {0}")]
    Invalid(String),
}

/// The whole simulator configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of the deterministic world; the same seed always produces the same objects and gids.
    pub seed: u64,
    /// How many times faster than real time simulated time runs. Rate-limit windows, offset and
    /// token expiry, export durations and event generation all follow simulated time, so a
    /// benchmark that spans many quota windows finishes in seconds. `Retry-After` values are in
    /// simulated seconds; a client must divide them by the same factor.
    pub time_scale: f64,
    /// Size of the generated world.
    pub world: WorldSize,
    /// Tokens the simulator accepts. When empty, [`SimConfig::default_tokens`] is used.
    pub tokens: Vec<TokenSpec>,
    /// OAuth applications for the `/-/oauth_*` endpoints.
    pub oauth_clients: Vec<OAuthClientSpec>,
    /// Lifetimes and pacing.
    pub timing: Timing,
    /// Limits, as Asana documents them; configurable only so tests can provoke them cheaply.
    pub limits: LimitSpec,
    /// Faults injected into responses from the start; can be changed at runtime under `/_sim/faults`.
    pub faults: FaultSpec,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            time_scale: 1.0,
            world: WorldSize::default(),
            tokens: Vec::new(),
            oauth_clients: Vec::new(),
            timing: Timing::default(),
            limits: LimitSpec::default(),
            faults: FaultSpec::default(),
        }
    }
}

impl SimConfig {
    /// Loads a TOML config file.
    pub fn load(path: &Path) -> Result<Self, SimConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| SimConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|error| match error {
            SimConfigError::Parse { message, .. } => SimConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses a TOML config.
    pub fn from_toml(text: &str) -> Result<Self, SimConfigError> {
        let config: SimConfig = toml::from_str(text).map_err(|error| SimConfigError::Parse {
            path: "<inline>".into(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that the type system cannot.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(SimConfigError::Invalid(format!(
                "time_scale must be a positive number, got {}",
                self.time_scale
            )));
        }
        if self.world.users == 0 {
            return Err(SimConfigError::Invalid(
                "world.users must be at least 1 (tokens need an owner)".into(),
            ));
        }
        if self.world.projects > 0 && self.world.teams == 0 {
            return Err(SimConfigError::Invalid(
                "world.projects needs at least one team to own them (world.teams = 0)".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for token in &self.tokens {
            if !names.insert(token.name.as_str()) {
                return Err(SimConfigError::Invalid(format!(
                    "token name {:?} is declared twice",
                    token.name
                )));
            }
            if token.user >= self.world.users {
                return Err(SimConfigError::Invalid(format!(
                    "token {:?} names user index {} but the world has {} users (0-based)",
                    token.name, token.user, self.world.users
                )));
            }
        }
        for token in &self.tokens {
            if let Some(project) = token
                .forbidden_projects
                .iter()
                .find(|&&p| p >= self.world.projects)
            {
                return Err(SimConfigError::Invalid(format!(
                    "token {:?} forbids project index {project} but the world has {} projects \
                     (0-based)",
                    token.name, self.world.projects
                )));
            }
        }
        self.faults.check().map_err(SimConfigError::Invalid)
    }

    /// The tokens in effect: the configured ones, or a default set covering every kind.
    pub fn effective_tokens(&self) -> Vec<TokenSpec> {
        if self.tokens.is_empty() {
            Self::default_tokens()
        } else {
            self.tokens.clone()
        }
    }

    /// A service account of an Enterprise paid workspace, a paid PAT and a free PAT.
    pub fn default_tokens() -> Vec<TokenSpec> {
        vec![
            TokenSpec {
                name: "service-account".into(),
                kind: TokenKind::ServiceAccount,
                tier: Tier::Paid,
                user: 0,
                enterprise: true,
                secret: Some("sim-sa-0001".into()),
                forbidden_projects: Vec::new(),
            },
            TokenSpec {
                name: "pat-paid".into(),
                kind: TokenKind::Pat,
                tier: Tier::Paid,
                user: 1.min(WorldSize::default().users - 1),
                enterprise: true,
                secret: Some("sim-pat-paid-0001".into()),
                forbidden_projects: Vec::new(),
            },
            TokenSpec {
                name: "pat-free".into(),
                kind: TokenKind::Pat,
                tier: Tier::Free,
                user: 2.min(WorldSize::default().users - 1),
                enterprise: false,
                secret: Some("sim-pat-free-0001".into()),
                forbidden_projects: Vec::new(),
            },
        ]
    }

    /// OAuth clients in effect: the configured ones, or one default client.
    pub fn effective_oauth_clients(&self) -> Vec<OAuthClientSpec> {
        if self.oauth_clients.is_empty() {
            vec![OAuthClientSpec::default()]
        } else {
            self.oauth_clients.clone()
        }
    }
}

/// Size of the seeded world.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldSize {
    /// Users in the organization (index 0 is the service account's user).
    pub users: usize,
    /// Teams.
    pub teams: usize,
    /// Projects in the workspace, dealt out to the teams in turn; every seventh is archived.
    pub projects: usize,
    /// Sections per project.
    pub sections_per_project: usize,
    /// Top-level tasks per project.
    pub tasks_per_project: usize,
    /// Subtasks per task, at most.
    pub max_subtasks: usize,
    /// Stories per task, at most.
    pub max_stories: usize,
    /// Attachments per task, at most.
    pub max_attachments: usize,
    /// Tags in the workspace.
    pub tags: usize,
    /// Custom fields in the workspace.
    pub custom_fields: usize,
    /// Audit-log events generated before the start, spread over `audit_backfill_days`.
    pub audit_events: usize,
    /// How many days back the pre-generated audit events reach (at most 90 are retained).
    pub audit_backfill_days: u32,
}

impl Default for WorldSize {
    fn default() -> Self {
        Self {
            users: 12,
            teams: 3,
            projects: 9,
            sections_per_project: 3,
            tasks_per_project: 40,
            max_subtasks: 3,
            max_stories: 3,
            max_attachments: 2,
            tags: 6,
            custom_fields: 4,
            audit_events: 2_000,
            audit_backfill_days: 7,
        }
    }
}

/// The kind of a token, which decides what it may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Service account token: audit log and exports allowed on Enterprise workspaces.
    ServiceAccount,
    /// Personal access token.
    Pat,
    /// OAuth access token (issued by `/-/oauth_token`; not declared in config).
    Oauth,
}

/// Rate-limit tier of the workspace a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// 150 requests per minute; premium features (search, portfolios, goals, dependencies, time
    /// tracking) answer 402.
    Free,
    /// 1,500 requests per minute.
    Paid,
}

/// A token the simulator accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Name shown at start and used by the admin API.
    pub name: String,
    /// What kind of token it is.
    pub kind: TokenKind,
    /// Free or paid.
    #[serde(default = "default_tier")]
    pub tier: Tier,
    /// Index of the owning user in the generated world.
    #[serde(default)]
    pub user: usize,
    /// Whether the workspace is an Enterprise one (audit log and exports allowed).
    #[serde(default)]
    pub enterprise: bool,
    /// The token string; generated from the seed when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Indexes (0-based, in creation order) of the projects this token may not access: they
    /// stay listed, but reading them or their contents answers 403, as for a private project
    /// the token's user was removed from. Changeable at runtime under `/_sim/tokens/`.
    #[serde(default)]
    pub forbidden_projects: Vec<usize>,
}

fn default_tier() -> Tier {
    Tier::Paid
}

/// An OAuth application.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClientSpec {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// Index of the user who authorizes the app (the simulator consents on their behalf).
    pub user: usize,
    /// Tier of the workspace its access tokens act in.
    pub tier: Tier,
    /// Whether that workspace is Enterprise.
    pub enterprise: bool,
}

impl Default for OAuthClientSpec {
    fn default() -> Self {
        Self {
            client_id: "sim-oauth-client".into(),
            client_secret: "sim-oauth-secret".into(),
            user: 1,
            tier: Tier::Paid,
            enterprise: true,
        }
    }
}

/// Lifetimes and pacing, in simulated seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timing {
    /// Pagination offsets expire after this long (Asana's observed offsets carry about 15 min).
    pub offset_ttl_secs: u64,
    /// OAuth access tokens' `expires_in`.
    pub access_token_ttl_secs: u64,
    /// Events sync tokens expire after this long (Asana: always within 24 h).
    pub sync_token_ttl_secs: u64,
    /// Export download URLs expire after this long (the spec's presigned example: 300 s).
    pub download_url_ttl_secs: u64,
    /// How long an export stays `pending` / `not_started`.
    pub export_pending_secs: u64,
    /// How long an export stays `started` / `in_progress`.
    pub export_running_secs: u64,
    /// Audit-log events generated per simulated minute while running (0 = none).
    pub audit_events_per_minute: f64,
    /// Task changes (with their events) generated per simulated minute (0 = none).
    pub activity_per_minute: f64,
    /// Audit-log retention in days.
    pub audit_retention_days: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            offset_ttl_secs: 15 * 60,
            access_token_ttl_secs: 3600,
            sync_token_ttl_secs: 24 * 3600,
            download_url_ttl_secs: 300,
            export_pending_secs: 5,
            export_running_secs: 20,
            audit_events_per_minute: 10.0,
            activity_per_minute: 6.0,
            audit_retention_days: 90,
        }
    }
}

/// Asana's documented limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests per minute for free workspaces.
    pub free_per_minute: u32,
    /// Requests per minute for paid workspaces.
    pub paid_per_minute: u32,
    /// Search requests per minute.
    pub search_per_minute: u32,
    /// Concurrent GETs per token.
    pub concurrent_reads: u32,
    /// Concurrent POST/PUT/PATCH/DELETE per token.
    pub concurrent_writes: u32,
    /// Concurrent export/duplication jobs per user.
    pub concurrent_jobs: u32,
}

impl Default for LimitSpec {
    fn default() -> Self {
        Self {
            free_per_minute: 150,
            paid_per_minute: 1500,
            search_per_minute: 60,
            concurrent_reads: 50,
            concurrent_writes: 15,
            concurrent_jobs: 5,
        }
    }
}

/// Faults to inject, as probabilities per request (0..=1) and latencies in real milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of requests answered 500 (with a `phrase`).
    pub error_500: f64,
    /// Share answered 502.
    pub error_502: f64,
    /// Share answered 503.
    pub error_503: f64,
    /// Share answered 504.
    pub error_504: f64,
    /// Share answered 429 regardless of quota (counted like any rejected request).
    pub error_429: f64,
    /// `Retry-After` (simulated seconds) sent with injected 429s.
    pub retry_after_secs: u64,
    /// Fixed latency added to every API request, in real milliseconds.
    pub latency_ms: u64,
    /// Extra uniformly random latency, 0..=jitter, in real milliseconds.
    pub jitter_ms: u64,
    /// Share of requests whose connection is cut before any response byte.
    pub reset: f64,
    /// Share of responses cut off halfway through the body.
    pub truncate: f64,
    /// Share of requests that never get an answer (held for `hang_ms`).
    pub hang: f64,
    /// How long a hung request is held, in real milliseconds.
    pub hang_ms: u64,
    /// Share of Events API events lost as they happen: the change is made, but no stream ever
    /// delivers its event (Asana delivers events at most once).
    pub drop_events: f64,
}

impl FaultSpec {
    /// Checks that every rate is a probability; the error names the first one that is not.
    pub fn check(&self) -> Result<(), String> {
        let rates = [
            ("error_500", self.error_500),
            ("error_502", self.error_502),
            ("error_503", self.error_503),
            ("error_504", self.error_504),
            ("error_429", self.error_429),
            ("reset", self.reset),
            ("truncate", self.truncate),
            ("hang", self.hang),
            ("drop_events", self.drop_events),
        ];
        match rates.iter().find(|(_, rate)| !(0.0..=1.0).contains(rate)) {
            Some((name, rate)) => Err(format!(
                "fault rates are probabilities between 0 and 1, got {name} = {rate}"
            )),
            None => Ok(()),
        }
    }
}
