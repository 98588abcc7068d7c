//! Shared state of a running simulator: the world, the token registry, limits, faults and clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::clock::SimClock;
use super::config::{FaultSpec, SimConfig, Tier, TokenKind};
use super::limits::Limits;
use super::wire::OffsetCodec;
use super::world::World;

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

/// State owned by individual endpoint groups.
#[derive(Debug, Default)]
pub struct Extensions {
    /// Events API state (sync tokens, event log).
    pub events: Mutex<super::routes::events::EventLog>,
    /// Exports and jobs.
    pub exports: Mutex<super::routes::exports::ExportRegistry>,
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

    /// Current faults.
    pub fn faults(&self) -> FaultSpec {
        self.faults.read().unwrap_or_else(|p| p.into_inner()).clone()
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
