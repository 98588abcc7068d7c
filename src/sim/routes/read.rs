//! The read-endpoint skeleton, written once: `GET /x/{gid}` and `GET /parent/{gid}/x` (or
//! `GET /x?filter=`) answer through the same code, so every read endpoint shares Asana's 404
//! bodies, `limit` validation, offsets and `next_page`, and `opt_fields` projection.
//!
//! An endpoint group registers its reads on its router:
//!
//! ```ignore
//! Router::new()
//!     .get_one("/teams/{team_gid}", TEAM)
//!     .get_list("/workspaces/{workspace_gid}/teams", |read| {
//!         read.path(WORKSPACE)?;
//!         Ok(read.world.teams.gids())
//!     })
//! ```
//!
//! A [`Kind`] says what a 404 calls an object, how the world finds a live one, and whether free
//! tokens get a 402 for it (premium features); a list's selector gets a [`Read`] (the world,
//! read-locked for the whole answer, the parameters, the caller and the path's gid) and returns
//! the gids to list, in order. Every object named by a path or a parameter passes [`admit`]: 402
//! for a premium kind and a free token, 403 for a project (or a section or task only in such
//! projects) the token may not access.
//!
//! Imports the state, the world, [`super::params`], [`super::request`] and [`super::answer`];
//! never an endpoint module.

use axum::Router;
use axum::routing::get;
use serde_json::Value;

use super::answer::{paginate, paginate_values, single};
use super::params::Params;
use super::request::ApiRequest;
use crate::sim::config::Tier;
use crate::sim::model::world::World;
use crate::sim::state::{Caller, SharedState};
use crate::sim::wire::{ApiError, ApiResult};

/// A kind of object a request names: what a 404 calls it, and how the world finds a live one.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The resource type, also the name in `{name}: Unknown object: not found`.
    pub name: &'static str,
    /// How to find the live object a gid names for the user `me`, when being an object of
    /// this resource type is not all it takes.
    lookup: Option<Lookup>,
    /// For premium features: the 402 message a free token gets instead of the object.
    premium: Option<&'static str>,
}

/// Finds the live object a gid names for the user `me` (the second and third arguments).
type Lookup = fn(&World, &str, &str) -> Option<String>;

impl Kind {
    /// Objects of resource type `name`, found by gid.
    pub const fn typed(name: &'static str) -> Kind {
        Kind {
            name,
            lookup: None,
            premium: None,
        }
    }

    /// Objects of resource type `name` that only premium workspaces have: free tokens get 402
    /// with `message`.
    pub const fn premium(name: &'static str, message: &'static str) -> Kind {
        Kind {
            name,
            lookup: None,
            premium: Some(message),
        }
    }

    /// The gid of the live object of this kind that `gid` names for the user `me`; 404 naming
    /// the kind when there is none.
    pub fn find(&self, world: &World, gid: &str, me: &str) -> Result<String, ApiError> {
        let found = match self.lookup {
            Some(lookup) => lookup(world, gid, me),
            None => (world.kind_of(gid) == Some(self.name)).then(|| gid.to_string()),
        };
        found.ok_or_else(|| ApiError::not_found(self.name))
    }
}

/// The 402 message of portfolios for free tokens.
pub const PORTFOLIOS_PREMIUM: &str = "Portfolios are only available to premium users.";
/// The 402 message of goals for free tokens.
pub const GOALS_PREMIUM: &str = "Goals are only available to premium users.";
/// The 402 message of task dependencies for free tokens.
pub const DEPENDENCIES_PREMIUM: &str = "Task dependencies are only available to premium users.";
/// The 402 message of time tracking for free tokens.
pub const TIME_TRACKING_PREMIUM: &str = "Time tracking is only available to premium users.";
/// The 403 message of a project (or its contents) the token may not access.
pub const NO_ACCESS_MESSAGE: &str =
    "Forbidden: you do not have access to this project. Ask a project admin to add you.";

/// The simulated organization.
pub const WORKSPACE: Kind = Kind::typed("workspace");
/// A user, named by gid, email address or `me`.
pub const USER: Kind = Kind {
    name: "user",
    lookup: Some(|world, gid, me| world.find_user(gid, me)),
    premium: None,
};
/// A task or subtask that is not in the trash, nor under a parent that is.
pub const TASK: Kind = Kind {
    name: "task",
    lookup: Some(|world, gid, _| world.task_alive(gid).then(|| gid.to_string())),
    premium: None,
};
/// A team.
pub const TEAM: Kind = Kind::typed("team");
/// A project.
pub const PROJECT: Kind = Kind::typed("project");
/// A section.
pub const SECTION: Kind = Kind::typed("section");
/// A story.
pub const STORY: Kind = Kind::typed("story");
/// A tag.
pub const TAG: Kind = Kind::typed("tag");
/// A custom field.
pub const CUSTOM_FIELD: Kind = Kind::typed("custom_field");
/// A status update.
pub const STATUS_UPDATE: Kind = Kind::typed("status_update");
/// A user's membership of a team.
pub const TEAM_MEMBERSHIP: Kind = Kind::typed("team_membership");
/// A user's membership of a project.
pub const PROJECT_MEMBERSHIP: Kind = Kind::typed("project_membership");
/// An attachment.
pub const ATTACHMENT: Kind = Kind::typed("attachment");
/// A portfolio (premium).
pub const PORTFOLIO: Kind = Kind::premium("portfolio", PORTFOLIOS_PREMIUM);
/// A user's membership of a portfolio (premium).
pub const PORTFOLIO_MEMBERSHIP: Kind = Kind::premium("portfolio_membership", PORTFOLIOS_PREMIUM);
/// A goal (premium).
pub const GOAL: Kind = Kind::premium("goal", GOALS_PREMIUM);
/// A time-tracking entry (premium).
pub const TIME_TRACKING_ENTRY: Kind = Kind::premium("time_tracking_entry", TIME_TRACKING_PREMIUM);

/// Whether `caller` may read the object `gid` of `kind`: 402 when the kind is a premium feature
/// and the token a free one, 403 when it is a project the token may not access, or a section of
/// one, or a task only in such projects.
pub fn admit(world: &World, caller: &Caller, kind: Kind, gid: &str) -> Result<(), ApiError> {
    if let Some(message) = kind.premium {
        require_premium(caller, message)?;
    }
    let forbidden = &caller.record.forbidden_projects;
    if forbidden.is_empty() {
        return Ok(());
    }
    let blocked = |project: &str| forbidden.iter().any(|f| f == project);
    let denied = match kind.name {
        "project" => blocked(gid),
        "section" => world.sections.get(gid).is_some_and(|s| blocked(&s.project)),
        "task" => world.tasks.get(gid).is_some_and(|t| {
            !t.memberships.is_empty() && t.memberships.iter().all(|(p, _)| blocked(p))
        }),
        _ => false,
    };
    if denied {
        return Err(ApiError::forbidden(NO_ACCESS_MESSAGE));
    }
    Ok(())
}

/// 402 with `message` unless `caller` acts in a premium workspace.
pub fn require_premium(caller: &Caller, message: &str) -> Result<(), ApiError> {
    if caller.record.tier == Tier::Free {
        return Err(ApiError::payment_required(message));
    }
    Ok(())
}

/// What a list's selector reads: the world (locked for the whole answer), the parameters, the
/// caller and the gid the path names.
#[derive(Debug)]
pub struct Read<'a> {
    /// The world.
    pub world: &'a World,
    /// The query parameters.
    pub params: &'a Params,
    caller: &'a Caller,
    gid: &'a str,
}

impl Read<'_> {
    /// The path's gid as a live object of `kind` the caller may read; 404 naming the kind when it
    /// names none, 402 or 403 as [`admit`] says.
    pub fn path(&self, kind: Kind) -> Result<String, ApiError> {
        self.find(kind, self.gid)
    }

    /// `gid` (from a parameter) as a live object of `kind` the caller may read; 404 naming the
    /// kind when it names none, 402 or 403 as [`admit`] says.
    pub fn find(&self, kind: Kind, gid: &str) -> Result<String, ApiError> {
        let found = kind.find(self.world, gid, self.me())?;
        admit(self.world, self.caller, kind, &found)?;
        Ok(found)
    }

    /// An optional parameter naming a live object of `kind` the caller may read.
    pub fn find_param(&self, kind: Kind, key: &str) -> Result<Option<String>, ApiError> {
        self.params
            .get(key)
            .map(|gid| self.find(kind, gid))
            .transpose()
    }

    /// 402 with `message` unless the caller acts in a premium workspace.
    pub fn premium(&self, message: &str) -> Result<(), ApiError> {
        require_premium(self.caller, message)
    }

    /// The caller's user gid, what `me` stands for.
    pub fn me(&self) -> &str {
        &self.caller.record.user_gid
    }

    /// Who calls.
    pub fn caller(&self) -> &Caller {
        self.caller
    }
}

/// A list's selector: the items to list, in order, or why there are none to list.
pub type Select<T> = fn(&Read<'_>) -> Result<Vec<T>, ApiError>;

/// Registering read endpoints on a router.
pub trait ReadRoutes {
    /// `GET path`: the object of `kind` the path's gid names, in full or per `opt_fields`.
    fn get_one(self, path: &'static str, kind: Kind) -> Self;

    /// `GET path`: the objects `select` picks, compact or per `opt_fields`, paginated.
    fn get_list(self, path: &'static str, select: Select<String>) -> Self;

    /// `GET path`: objects without a gid of their own to look up (shallow JSON, `compact` its
    /// compact fields), rendered and paginated like [`Self::get_list`].
    fn get_value_list(
        self,
        path: &'static str,
        compact: &'static [&'static str],
        select: Select<Value>,
    ) -> Self;
}

impl ReadRoutes for Router<SharedState> {
    fn get_one(self, path: &'static str, kind: Kind) -> Self {
        self.route(
            path,
            get(move |request: ApiRequest| async move { one(&request, kind) }),
        )
    }

    fn get_list(self, path: &'static str, select: Select<String>) -> Self {
        self.route(
            path,
            get(move |request: ApiRequest| async move {
                list(&request, path, select, |read, path, gids| {
                    paginate(&request.state, read.world, path, read.params, gids)
                })
            }),
        )
    }

    fn get_value_list(
        self,
        path: &'static str,
        compact: &'static [&'static str],
        select: Select<Value>,
    ) -> Self {
        self.route(
            path,
            get(move |request: ApiRequest| async move {
                list(&request, path, select, |read, path, items| {
                    paginate_values(
                        &request.state,
                        read.world,
                        path,
                        read.params,
                        items,
                        compact,
                    )
                })
            }),
        )
    }
}

fn one(request: &ApiRequest, kind: Kind) -> ApiResult {
    let world = request.state.world();
    let gid = kind.find(&world, &request.gid, request.me())?;
    admit(&world, &request.caller, kind, &gid)?;
    single(&world, &gid, &request.params, kind.name)
}

fn list<T>(
    request: &ApiRequest,
    template: &str,
    select: Select<T>,
    answer: impl FnOnce(&Read<'_>, &str, &[T]) -> ApiResult,
) -> ApiResult {
    let world = request.state.world();
    let read = Read {
        world: &world,
        params: &request.params,
        caller: &request.caller,
        gid: &request.gid,
    };
    let items = select(&read)?;
    answer(&read, &path_of(template, &request.gid), &items)
}

/// The request's path below `/api/1.0`: `template` with its `{…}` segment replaced by `gid`.
/// Offsets are bound to it and `next_page` repeats it.
fn path_of(template: &str, gid: &str) -> String {
    match (template.find('{'), template.find('}')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{gid}{}", &template[..open], &template[close + 1..])
        }
        _ => template.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::path_of;

    #[test]
    fn list_paths_are_their_template_with_the_gid() {
        assert_eq!(
            path_of("/teams/{team_gid}/projects", "12"),
            "/teams/12/projects"
        );
        assert_eq!(path_of("/users/{user_gid}/teams", "me"), "/users/me/teams");
        assert_eq!(path_of("/tags", ""), "/tags");
    }
}
