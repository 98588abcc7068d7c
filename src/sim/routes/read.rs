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
//! A [`Kind`] says what a 404 calls an object and how the world finds a live one; a list's
//! selector gets a [`Read`] (the world, read-locked for the whole answer, the parameters and the
//! path's gid) and returns the gids to list, in order.
//!
//! Imports the state, the world, [`super::params`], [`super::request`] and [`super::answer`];
//! never an endpoint module.

use axum::Router;
use axum::routing::get;
use serde_json::Value;

use super::answer::{paginate, paginate_values, single};
use super::params::Params;
use super::request::ApiRequest;
use crate::sim::model::world::World;
use crate::sim::state::SharedState;
use crate::sim::wire::{ApiError, ApiResult};

/// A kind of object a request names: what a 404 calls it, and how the world finds a live one.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// The resource type, also the name in `{name}: Unknown object: not found`.
    pub name: &'static str,
    /// How to find the live object a gid names for the user `me`, when being an object of
    /// this resource type is not all it takes.
    lookup: Option<Lookup>,
}

/// Finds the live object a gid names for the user `me` (the second and third arguments).
type Lookup = fn(&World, &str, &str) -> Option<String>;

impl Kind {
    /// Objects of resource type `name`, found by gid.
    pub const fn typed(name: &'static str) -> Kind {
        Kind { name, lookup: None }
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

/// The simulated organization.
pub const WORKSPACE: Kind = Kind::typed("workspace");
/// A user, named by gid, email address or `me`.
pub const USER: Kind = Kind {
    name: "user",
    lookup: Some(|world, gid, me| world.find_user(gid, me)),
};
/// A task or subtask that is not in the trash.
pub const TASK: Kind = Kind {
    name: "task",
    lookup: Some(|world, gid, _| {
        world
            .tasks
            .get(gid)
            .filter(|t| !t.deleted)
            .map(|t| t.gid.clone())
    }),
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

/// What a list's selector reads: the world (locked for the whole answer), the parameters, and
/// the gid the path names.
#[derive(Debug)]
pub struct Read<'a> {
    /// The world.
    pub world: &'a World,
    /// The query parameters.
    pub params: &'a Params,
    me: &'a str,
    gid: &'a str,
}

impl Read<'_> {
    /// The path's gid as a live object of `kind`; 404 naming the kind when it names none.
    pub fn path(&self, kind: Kind) -> Result<String, ApiError> {
        kind.find(self.world, self.gid, self.me)
    }

    /// `gid` (from a parameter) as a live object of `kind`; 404 naming the kind when it names
    /// none.
    pub fn find(&self, kind: Kind, gid: &str) -> Result<String, ApiError> {
        kind.find(self.world, gid, self.me)
    }

    /// The caller's user gid, what `me` stands for.
    pub fn me(&self) -> &str {
        self.me
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
        me: request.me(),
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
