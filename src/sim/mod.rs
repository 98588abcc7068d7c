//! The Asana simulator (`asana-worker sim`): an HTTP server on loopback that speaks Asana's wire
//! format and enforces Asana's documented limits, with a seeded world, faults on demand and an
//! admin API under `/_sim/`. Every test, demo and benchmark of the worker runs against it.
//!
//! Layers, each importing only the ones below it (see ARCHITECTURE.md, "Simulator"):
//! - foundations: [`config`], [`clock`], [`wire`] (envelope, errors, pagination offsets,
//!   `opt_fields`, query encoding), [`input`] (request fields), [`limits`];
//! - [`model`]: the world, the event log, the exports, and the changes that record events;
//! - [`state`]: the model behind its locks, with tokens, limits, faults and clock;
//! - adapters: [`routes`] (Asana's API, one module per endpoint group, never importing each
//!   other), [`admin`] (the `/_sim/` control surface), [`background`] (activity, audit events,
//!   export runner) and [`middleware`] (authentication, limits, faults);
//! - this module, which assembles the server.

pub mod admin;
pub mod background;
pub mod bench;
pub mod clock;
pub mod config;
pub mod input;
pub mod limits;
pub mod middleware;
pub mod model;
pub mod routes;
pub mod state;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::serve::ListenerExt;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::SimConfig;
use state::{Extensions, SharedState, SimState, TokenRecord};

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick another port or free this one")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::SimConfigError),
}

/// A running simulator.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    state: SharedState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    server: JoinHandle<()>,
}

/// Derives the token string of a configured token without a fixed secret.
fn generated_secret(seed: u64, name: &str) -> String {
    let digest = Sha256::digest(format!("{seed}:{name}").as_bytes());
    format!("2/{}", hex::encode(&digest[..16]))
}

impl SimServer {
    /// Starts a simulator on a free loopback port.
    pub async fn start(config: SimConfig) -> Result<SimServer, SimError> {
        Self::start_on(config, "127.0.0.1:0").await
    }

    /// Starts a simulator on `addr`.
    pub async fn start_on(config: SimConfig, addr: &str) -> Result<SimServer, SimError> {
        config.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| SimError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let state = build_state(config, local);
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        background::spawn(&state, &tasks, &shutdown);
        let app = router(state.clone());
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(SimServer {
            addr: local,
            state,
            shutdown,
            tasks,
            server,
        })
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/1.0`, what a client uses as its base URL.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// `http://127.0.0.1:PORT`, where `/-/oauth_*` and `/_sim/` live.
    pub fn origin(&self) -> String {
        self.state.origin.clone()
    }

    /// The token string of a configured token, by name.
    pub fn token(&self, name: &str) -> Option<String> {
        self.state
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, record)| record.name == name)
            .map(|(token, _)| token.clone())
    }

    /// The shared state, for tests that inspect the world directly.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// Stops serving and waits for background tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.server.await;
    }
}

fn build_state(config: SimConfig, addr: SocketAddr) -> SharedState {
    let clock = clock::SimClock::new(Utc::now(), config.time_scale);
    let world = model::world::World::generate(config.seed, &config.world, clock.now());
    let mut tokens = HashMap::new();
    for spec in config.effective_tokens() {
        let user_gid = world
            .users
            .at(spec.user)
            .map(|u| u.gid.clone())
            .unwrap_or_default();
        let secret = spec
            .secret
            .clone()
            .unwrap_or_else(|| generated_secret(config.seed, &spec.name));
        let forbidden_projects = spec
            .forbidden_projects
            .iter()
            .filter_map(|&i| world.projects.at(i).map(|p| p.gid.clone()))
            .collect();
        tokens.insert(
            secret,
            TokenRecord {
                name: spec.name.clone(),
                kind: spec.kind,
                tier: spec.tier,
                user_gid,
                enterprise: spec.enterprise,
                expires_at: None,
                revoked: false,
                grant: None,
                forbidden_projects,
                workspace_events_refused: false,
            },
        );
    }
    let origin = format!("http://{addr}");
    Arc::new(SimState {
        limits: limits::Limits::new(config.limits.clone()),
        faults: RwLock::new(config.faults.clone()),
        offsets: wire::OffsetCodec::new(config.seed),
        base_url: format!("{origin}/api/1.0"),
        origin,
        clock,
        world: RwLock::new(world),
        tokens: RwLock::new(tokens),
        grants: RwLock::new(HashMap::new()),
        auth_codes: Mutex::new(HashMap::new()),
        extensions: Extensions::default(),
        config,
    })
}

/// The full application: API routes behind the limits middleware, plus OAuth, downloads and admin.
pub fn router(state: SharedState) -> Router {
    let api = routes::api_routes()
        .fallback(|| async { wire::ApiError::no_route() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::api_layer,
        ));
    Router::new()
        .nest("/api/1.0", api)
        .merge(routes::public_routes())
        .nest("/_sim", admin::routes())
        .with_state(state)
}
