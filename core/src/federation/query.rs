//! Queries: `GET /_matrix/federation/v1/query/profile` and `/query/directory`.

use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::{OwnedServerName, UserId};

use crate::client::directory::resolve_local_alias;
use crate::client::profile::public_profile;
use crate::db::rooms;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_profile_information::v1::Request, profile);
    route!(r, get_room_information::v1::Request, directory);
}

/// Refuses a query about a user of another server (the spec has requesters ask only the
/// user's own server).
pub fn check_local_user(hs: &Homeserver, user: &UserId) -> Result<()> {
    if user.server_name() != hs.server_name() {
        return Err(MatrixError::invalid_param(format!(
            "{user} is not a user of this server"
        )));
    }
    Ok(())
}

/// The whole public profile, or only `field`; `404` if the user or the field does not exist.
async fn profile(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_profile_information::v1::Request,
) -> Result<get_profile_information::v1::Response> {
    check_local_user(hs, &req.user_id)?;
    let mut fields = public_profile(hs, &req.user_id).await?;
    if let Some(field) = &req.field {
        let value = fields.remove(field.as_str()).ok_or_else(|| {
            MatrixError::not_found(format!("{} has no {}", req.user_id, field.as_str()))
        })?;
        fields = [(field.as_str().to_owned(), value)].into_iter().collect();
    }
    Ok(fields.into_iter().collect())
}

/// The room a local alias names, and the servers in it: this one first, then those of the
/// joined members.
async fn directory(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_room_information::v1::Request,
) -> Result<get_room_information::v1::Response> {
    let not_found = || MatrixError::not_found(format!("room alias {} not found", req.room_alias));
    if req.room_alias.server_name() != hs.server_name() {
        return Err(not_found());
    }
    let room = resolve_local_alias(hs, &req.room_alias)
        .await?
        .ok_or_else(not_found)?;
    let mut servers: Vec<OwnedServerName> = vec![hs.owned_server_name()];
    for member in rooms::joined_members(hs, &room).await? {
        let server = member.server_name();
        if !servers.iter().any(|s| s == server) {
            servers.push(server.to_owned());
        }
    }
    Ok(get_room_information::v1::Response::new(room, servers))
}
