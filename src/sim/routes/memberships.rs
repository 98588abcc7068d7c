//! Memberships: team memberships (`GET /team_memberships?team=|user=&workspace=`,
//! `/team_memberships/{gid}`, `/teams/{gid}/team_memberships`,
//! `/users/{gid}/team_memberships?workspace=`), project memberships
//! (`GET /projects/{gid}/project_memberships?user=`, `/project_memberships/{gid}`), and the
//! generic memberships API (`GET /memberships?parent=&member=`, `/memberships/{gid}`) over
//! project and portfolio memberships, where every membership's `resource_type` is `membership`.

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use super::read::{
    PORTFOLIO, PORTFOLIO_MEMBERSHIP, PROJECT, PROJECT_MEMBERSHIP, Read, ReadRoutes, TEAM,
    TEAM_MEMBERSHIP, USER, WORKSPACE, admit,
};
use super::request::ApiRequest;
use crate::sim::model::world::World;
use crate::sim::state::SharedState;
use crate::sim::wire::{self, ApiError, ApiResult, Detail, Resolver};

/// Compact fields of the generic memberships (`MembershipCompact`).
const MEMBERSHIP_COMPACT: &[&str] = &[
    "gid",
    "resource_type",
    "resource_subtype",
    "parent",
    "member",
    "access_level",
];

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/team_memberships", team_memberships)
        .get_one("/team_memberships/{team_membership_gid}", TEAM_MEMBERSHIP)
        .get_list("/teams/{team_gid}/team_memberships", |read| {
            let team = read.path(TEAM)?;
            Ok(read.world.team_memberships.gids_within(&team, |_| true))
        })
        .get_list("/users/{user_gid}/team_memberships", |read| {
            read.find(WORKSPACE, read.params.require("workspace")?)?;
            let user = read.path(USER)?;
            Ok(memberships_of_user(read.world, &user))
        })
        .get_list("/projects/{project_gid}/project_memberships", |read| {
            let project = read.path(PROJECT)?;
            let user = read.find_param(USER, "user")?;
            Ok(read
                .world
                .project_memberships
                .gids_within(&project, |m| user.as_ref().is_none_or(|u| &m.user == u)))
        })
        .get_one(
            "/project_memberships/{project_membership_gid}",
            PROJECT_MEMBERSHIP,
        )
        .get_value_list("/memberships", MEMBERSHIP_COMPACT, |read| {
            let world = read.world;
            Ok(memberships(read)?
                .iter()
                .filter_map(|gid| as_membership(world, gid))
                .collect())
        })
        .route("/memberships/{membership_gid}", get(one_membership))
}

/// `GET /team_memberships`: a team's memberships, or a user's in a workspace.
fn team_memberships(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    let team = read.find_param(TEAM, "team")?;
    let user = read.find_param(USER, "user")?;
    let workspace = read.find_param(WORKSPACE, "workspace")?;
    match (team, user, workspace) {
        (Some(team), user, _) => Ok(read
            .world
            .team_memberships
            .gids_within(&team, |m| user.as_ref().is_none_or(|u| &m.user == u))),
        (None, Some(user), Some(_)) => Ok(memberships_of_user(read.world, &user)),
        (None, Some(_), None) => Err(ApiError::bad_request(
            "workspace: Missing input. A user's team memberships need a workspace",
        )),
        (None, None, _) => Err(ApiError::bad_request(
            "team: Missing input. Specify a team, or a user and a workspace",
        )),
    }
}

/// Every team membership of `user`, in order.
fn memberships_of_user(world: &World, user: &str) -> Vec<String> {
    world.team_memberships.gids_where(|m| m.user == user)
}

/// `GET /memberships`: the memberships of a project or portfolio (`parent`), optionally of one
/// `member`; or, without a parent, the project memberships of a team (`member` with
/// `resource_subtype=project_membership`), which the simulated world has none of (its projects
/// are shared with users, not teams).
fn memberships(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    let member = read.params.get("member");
    let Some(parent) = read.params.get("parent") else {
        let subtype = read.params.get("resource_subtype");
        return match (member, subtype) {
            (Some(team), Some("project_membership")) => {
                read.find(TEAM, team)?;
                Ok(Vec::new())
            }
            _ => Err(ApiError::bad_request(
                "parent: Missing input. Specify a parent, or a team member with \
                 resource_subtype=project_membership",
            )),
        };
    };
    let keep = |user: &String| member.is_none_or(|m| m == user);
    match read.world.kind_of(parent) {
        Some("project") => {
            let project = read.find(PROJECT, parent)?;
            Ok(read
                .world
                .project_memberships
                .gids_within(&project, |m| keep(&m.user)))
        }
        Some("portfolio") => {
            let portfolio = read.find(PORTFOLIO, parent)?;
            Ok(read
                .world
                .portfolio_memberships
                .gids_within(&portfolio, |m| keep(&m.user)))
        }
        Some(_) => Err(ApiError::bad_request(
            "parent: Only memberships of projects and portfolios are simulated",
        )),
        None => Err(ApiError::not_found("parent")),
    }
}

/// A project or portfolio membership as the memberships API shows it (shallow).
fn as_membership(world: &World, gid: &str) -> Option<Value> {
    let (mut shallow, _) = world.resolve(gid)?;
    shallow["resource_type"] = json!("membership");
    Some(shallow)
}

/// `GET /memberships/{gid}`: a project or portfolio membership, in full or per `opt_fields`.
async fn one_membership(request: ApiRequest) -> ApiResult {
    let world = request.state.world();
    let kind = match world.kind_of(&request.gid) {
        Some("portfolio_membership") => PORTFOLIO_MEMBERSHIP,
        _ => PROJECT_MEMBERSHIP,
    };
    let gid = kind
        .find(&world, &request.gid, request.me())
        .map_err(|_| ApiError::not_found("membership"))?;
    admit(&world, &request.caller, kind, &gid)?;
    let shallow = as_membership(&world, &gid).ok_or_else(|| ApiError::not_found("membership"))?;
    let fields = request.params.fields();
    wire::ok(wire::project(
        &shallow,
        MEMBERSHIP_COMPACT,
        fields,
        Detail::Full,
        &*world,
    ))
}
