//! Shared state of a running simulator: the model (world, event log, exports) behind its locks,
//! the token registry, limits, faults and clock.
//!
//! Imports the model layer and the foundations (config, clock, limits, wire), never routes: every
//! layer above (routes, admin, background tasks, middleware) reaches the model through here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::clock::SimClock;
use super::config::{FaultSpec, SimConfig, Tier, TokenKind};
use super::limits::Limits;
use super::model::edit::Edit;
use super::model::events::EventLog;
use super::model::exports::registry::ExportRegistry;
use super::model::world::World;
use super::wire::OffsetCodec;

/// A token the simulator accepts, and what it may do.
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    /// Name (configured tokens) or `oauth:<client>` (issued access tokens).
    pub name: String,
    /// Kind of token.
    pub kind: TokenKind,
    /// Rate-limit tier.
    pub tier: Tier,
    /// Owning user's gid.
    pub user_gid: String,
    /// Whether the workspace is Enterprise.
    pub enterprise: bool,
    /// Expiry of OAuth access tokens.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revoked tokens answer 401.
    pub revoked: bool,
    /// For OAuth access tokens: the refresh token they were issued from.
    pub grant: Option<String>,
    /// Projects this token may not read (403), as for private projects its user cannot see.
    pub forbidden_projects: Vec<String>,
    /// The workspace's event stream answers this token 403 (`PUT /_sim/tokens/{name}/workspace_events`).
    pub workspace_events_refused: bool,
}

/// Who is calling, as resolved from the `Authorization` header.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token string (limits are per token).
    pub token: String,
    /// Its record at the time of the request.
    pub record: TokenRecord,
}

/// An OAuth refresh token (a grant), from which access tokens are issued.
#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    /// The client it was issued to.
    pub client_id: String,
    /// The user who authorized.
    pub user_gid: String,
    /// Tier of the workspace.
    pub tier: Tier,
    /// Whether Enterprise.
    pub enterprise: bool,
    /// Scopes granted, space separated.
    pub scope: String,
    /// Revoked grants answer `invalid_grant`.
    pub revoked: bool,
    /// How many refresh-grant exchanges were made with it.
    pub refreshes: u64,
}

/// Everything a handler may need.
#[derive(Debug)]
pub struct SimState {
    /// The configuration the simulator started with.
    pub config: SimConfig,
    /// Simulated time.
    pub clock: SimClock,
    /// The organization and its objects.
    pub world: RwLock<World>,
    /// Accepted tokens by token string.
    pub tokens: RwLock<HashMap<String, TokenRecord>>,
    /// OAuth refresh tokens by token string.
    pub grants: RwLock<HashMap<String, Grant>>,
    /// Pending OAuth authorization codes: code → (client id, redirect uri, PKCE challenge, scope).
    pub auth_codes: Mutex<HashMap<String, AuthCode>>,
    /// Rate limits and statistics.
    pub limits: Limits,
    /// Faults currently injected.
    pub faults: RwLock<FaultSpec>,
    /// Offsets codec.
    pub offsets: OffsetCodec,
    /// Base URL of the API (`http://127.0.0.1:PORT/api/1.0`), for `next_page.uri` and downloads.
    pub base_url: String,
    /// Origin (`http://127.0.0.1:PORT`).
    pub origin: String,
    /// Extension slots for endpoint groups that keep their own state (events, exports, …).
    pub extensions: Extensions,
}

/// An issued OAuth authorization code.
#[derive(Debug, Clone)]
pub struct AuthCode {
    /// Client it was issued to.
    pub client_id: String,
    /// Redirect URI it was issued for.
    pub redirect_uri: String,
    /// PKCE `code_challenge` (S256), if any.
    pub code_challenge: Option<String>,
    /// Requested scope.
    pub scope: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
}

/// Model state besides the world, each behind its own lock.
#[derive(Debug, Default)]
pub struct Extensions {
    /// Events API state (sync tokens, event log).
    pub events: Mutex<EventLog>,
    /// Exports and jobs.
    pub exports: Mutex<ExportRegistry>,
}

/// Shared handle to the state.
pub type SharedState = Arc<SimState>;

impl SimState {
    /// Simulated unix seconds, for offsets and expiries.
    pub fn now_unix(&self) -> i64 {
        self.clock.now().timestamp()
    }

    /// Reads the world.
    pub fn world(&self) -> std::sync::RwLockReadGuard<'_, World> {
        self.world.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the world.
    pub fn world_mut(&self) -> std::sync::RwLockWriteGuard<'_, World> {
        self.world.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the world and records the events the change causes. Both locks are held for the
    /// whole change (world first, then the log: the order every caller keeps), so no reader sees a
    /// change without its events; `now` is read under them, so no reader passes that instant first.
    /// Events are lost at the rate of the `drop_events` fault in force when the change starts.
    pub fn edit<R>(&self, change: impl FnOnce(&mut Edit<'_>) -> R) -> R {
        let loss_rate = self.faults().drop_events;
        let mut world = self.world_mut();
        let mut log = self.events();
        let now = self.clock.now();
        change(&mut Edit::new(&mut world, &mut log, now, loss_rate))
    }

    /// The event log and its sync tokens.
    pub fn events(&self) -> MutexGuard<'_, EventLog> {
        self.extensions
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The exports and jobs.
    pub fn exports(&self) -> MutexGuard<'_, ExportRegistry> {
        self.extensions
            .exports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest creation time of an audit event still retained at `now`.
    pub fn audit_cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::days(i64::from(self.config.timing.audit_retention_days))
    }

    /// Current faults.
    pub fn faults(&self) -> FaultSpec {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Looks a token up.
    pub fn token(&self, token: &str) -> Option<TokenRecord> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }
}
