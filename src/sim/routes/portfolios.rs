//! Portfolios (premium: free tokens get 402): `GET /portfolios?workspace=&owner=`,
//! `GET /portfolios/{gid}`, `GET /portfolios/{gid}/items`,
//! `GET /portfolios/{gid}/portfolio_memberships?user=`,
//! `GET /portfolio_memberships?portfolio=|workspace=&user=`, `GET /portfolio_memberships/{gid}`.
//!
//! As Asana documents `GET /portfolios`: a service account sees every portfolio of the workspace
//! (or the `owner`'s); any other token only the portfolios its own user owns.

use axum::Router;

use super::read::{
    PORTFOLIO, PORTFOLIO_MEMBERSHIP, PORTFOLIOS_PREMIUM, Read, ReadRoutes, USER, WORKSPACE,
};
use crate::sim::config::TokenKind;
use crate::sim::model::world::PortfolioMembership;
use crate::sim::state::SharedState;
use crate::sim::wire::ApiError;

/// Routes of this group.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .get_list("/portfolios", list_portfolios)
        .get_one("/portfolios/{portfolio_gid}", PORTFOLIO)
        .get_list("/portfolios/{portfolio_gid}/items", |read| {
            let portfolio = read.path(PORTFOLIO)?;
            let items = read.world.portfolios.get(&portfolio).map(|p| &p.items);
            Ok(items
                .into_iter()
                .flatten()
                .filter(|item| read.world.projects.get(item).is_some())
                .cloned()
                .collect())
        })
        .get_list(
            "/portfolios/{portfolio_gid}/portfolio_memberships",
            |read| {
                let portfolio = read.path(PORTFOLIO)?;
                memberships(read, Some(&portfolio))
            },
        )
        .get_list("/portfolio_memberships", |read| {
            read.premium(PORTFOLIOS_PREMIUM)?;
            match read.find_param(PORTFOLIO, "portfolio")? {
                Some(portfolio) => memberships(read, Some(&portfolio)),
                None if read.params.get("workspace").is_some()
                    && read.params.get("user").is_some() =>
                {
                    read.find_param(WORKSPACE, "workspace")?;
                    memberships(read, None)
                }
                None => Err(ApiError::bad_request(
                    "You must specify portfolio, portfolio and user, or workspace and user",
                )),
            }
        })
        .get_one(
            "/portfolio_memberships/{portfolio_membership_gid}",
            PORTFOLIO_MEMBERSHIP,
        )
}

/// `GET /portfolios`: the workspace's portfolios the caller may list.
fn list_portfolios(read: &Read<'_>) -> Result<Vec<String>, ApiError> {
    read.premium(PORTFOLIOS_PREMIUM)?;
    read.find(WORKSPACE, read.params.require("workspace")?)?;
    let owner = read.find_param(USER, "owner")?;
    let service_account = read.caller().record.kind == TokenKind::ServiceAccount;
    let me = read.me();
    Ok(read.world.portfolios.gids_where(|p| {
        owner.as_ref().is_none_or(|o| &p.owner == o) && (service_account || p.owner == me)
    }))
}

/// The portfolio memberships of `portfolio` (all portfolios when `None`), of the `user`
/// parameter's user when given.
fn memberships(read: &Read<'_>, portfolio: Option<&str>) -> Result<Vec<String>, ApiError> {
    let user = read.find_param(USER, "user")?;
    let keep = |m: &PortfolioMembership| user.as_ref().is_none_or(|u| &m.user == u);
    Ok(match portfolio {
        Some(portfolio) => read
            .world
            .portfolio_memberships
            .gids_within(portfolio, keep),
        None => read.world.portfolio_memberships.gids_where(keep),
    })
}
