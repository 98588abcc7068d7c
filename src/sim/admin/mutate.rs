//! `POST /_sim/mutate`: a test changes the work graph as Asana's users would, through the model's
//! changes (so every change records its events), and learns exactly what changed. Either N random
//! changes drawn from a seed (`{"seed": 7, "count": 50}`: the same seed on the same world makes
//! the same changes), or a list of explicit ones (`{"changes": [{"kind": "move_task", …}]}`).
//!
//! Imports the state and the model's changes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::json;

use super::admin_error;
use crate::sim::model::changes::{Change, Outcome};
use crate::sim::state::SharedState;

/// Most random changes one request makes (each holds the world's lock a little longer).
const MAX_RANDOM_CHANGES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MutateRequest {
    /// Seed of the random changes.
    #[serde(default)]
    seed: u64,
    /// How many random changes to make.
    #[serde(default)]
    count: usize,
    /// Explicit changes, applied in order instead of random ones.
    changes: Option<Vec<Change>>,
}

/// Applies the changes and answers `{"applied": [change + changed + created]}`. An explicit change
/// naming an object that does not exist stops the list there: 400 with the changes applied
/// before it.
pub async fn mutate(State(state): State<SharedState>, body: Bytes) -> Response {
    let request: MutateRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "invalid request: {error}; send {{\"seed\": N, \"count\": N}} or \
                     {{\"changes\": [{{\"kind\": …}}]}}"
                ),
            );
        }
    };
    if request.count > MAX_RANDOM_CHANGES {
        return admin_error(
            StatusCode::BAD_REQUEST,
            format!("count is at most {MAX_RANDOM_CHANGES} per request"),
        );
    }
    state.edit(|edit| {
        let mut applied: Vec<Outcome> = Vec::new();
        match request.changes {
            Some(changes) => {
                for change in changes {
                    match change.apply(edit) {
                        Ok(outcome) => applied.push(outcome),
                        Err(missing) => {
                            let body = json!({ "error": missing.to_string(), "applied": applied });
                            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
                        }
                    }
                }
            }
            None => {
                let mut rng = ChaCha8Rng::seed_from_u64(request.seed);
                // Some draws find nothing to change (a task without tags to remove): retry, but
                // never forever on a world with nothing in it.
                let mut attempts = 0;
                while applied.len() < request.count && attempts < request.count * 20 {
                    attempts += 1;
                    for change in Change::random(edit.world(), &mut rng) {
                        if let Ok(outcome) = change.apply(edit) {
                            applied.push(outcome);
                        }
                    }
                }
            }
        }
        axum::Json(json!({ "applied": applied })).into_response()
    })
}
