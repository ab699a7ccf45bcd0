//! Profiles: display name and avatar, and their propagation into the user's room memberships.
//! The other profile fields are in `profile_fields.rs`; `GET /profile/{userId}` serves both.

use std::collections::BTreeMap;

use ruma::api::client::profile::{get_avatar_url, get_display_name, get_profile};
use ruma::events::room::member::{MembershipState, RoomMemberEventContent};
use ruma::profile::ProfileFieldName;
use ruma::{OwnedMxcUri, UserId};
use serde_json::{Value, json};

use crate::client::profile_fields;
use crate::db::rooms;
use crate::db::users::{self, UserRecord};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, federation, route};

pub fn routes(r: &mut Router) {
    route!(r, get_profile::v3::Request, profile);
    route!(r, get_display_name::v3::Request, display_name);
    route!(r, get_avatar_url::v3::Request, avatar_url);
    // After the routes above, so that their literal `displayname`/`avatar_url` paths win for
    // `GET`. `PUT` goes to the generic field endpoint for these two as well: the current spec
    // (v1.16's `PUT /profile/{userId}/{keyName}`) requires the field in the body, where ruma's
    // `set_display_name`/`set_avatar_url` read a missing one as "clear it".
    profile_fields::routes(r);
}

/// The profile of a user of this server; users of other servers are `404` like unknown users
/// (the `GET` endpoints ask their server instead: [`remote_field`]).
pub(crate) async fn local_profile(hs: &Homeserver, user: &UserId) -> Result<UserRecord> {
    let not_found = || MatrixError::not_found("Profile not found");
    if user.server_name() != hs.server_name() {
        return Err(not_found());
    }
    users::get_user(hs, user).await?.ok_or_else(not_found)
}

/// Every field of a local user's profile (display name, avatar, extended fields), as
/// `GET /profile/{userId}` and the federation profile query serve it.
pub(crate) async fn public_profile(
    hs: &Homeserver,
    user: &UserId,
) -> Result<BTreeMap<String, serde_json::Value>> {
    let record = local_profile(hs, user).await?;
    let mut fields = profile_fields::custom_fields(hs, user).await?;
    if let Some(name) = record.displayname {
        fields.insert("displayname".to_owned(), json!(name));
    }
    if let Some(url) = record.avatar_url {
        fields.insert("avatar_url".to_owned(), json!(url));
    }
    Ok(fields)
}

/// A user of another server's profile comes from their server's federation profile query.
async fn profile(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_profile::v3::Request,
) -> Result<get_profile::v3::Response> {
    let mut resp = get_profile::v3::Response::new();
    if req.user_id.server_name() != hs.server_name() {
        let remote = federation::client::query_profile(hs, &req.user_id, None)
            .await
            .map_err(|e| e.to_client_error())?;
        for (field, value) in remote.iter() {
            resp.data.set(field.clone(), value.clone());
        }
        return Ok(resp);
    }
    for (field, value) in public_profile(hs, &req.user_id).await? {
        resp.data.set(field, value);
    }
    Ok(resp)
}

/// One field of a user of another server's profile, from their server's federation profile
/// query. A field the answer lacks or gives as `null` (Synapse's way to say "not set") is `404`
/// like a local user's missing field.
pub(crate) async fn remote_field(hs: &Homeserver, user: &UserId, field: &str) -> Result<Value> {
    let remote = federation::client::query_profile(hs, user, Some(ProfileFieldName::from(field)))
        .await
        .map_err(|e| e.to_client_error())?;
    remote
        .get(field)
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| MatrixError::not_found(format!("this user has no {field}")))
}

/// A string field of a remote profile; anything else is the remote server's fault.
async fn remote_string(hs: &Homeserver, user: &UserId, field: &str) -> Result<String> {
    match remote_field(hs, user, field).await? {
        Value::String(s) => Ok(s),
        other => Err(MatrixError::new(
            http::StatusCode::BAD_GATEWAY,
            "M_UNKNOWN",
            format!(
                "{} sent a {field} that is not a string: {other}",
                user.server_name()
            ),
        )),
    }
}

async fn display_name(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_display_name::v3::Request,
) -> Result<get_display_name::v3::Response> {
    let name = if req.user_id.server_name() != hs.server_name() {
        remote_string(hs, &req.user_id, "displayname").await?
    } else {
        local_profile(hs, &req.user_id)
            .await?
            .displayname
            .ok_or_else(|| MatrixError::not_found("this user has no display name"))?
    };
    let mut resp = get_display_name::v3::Response::default();
    resp.displayname = Some(name);
    Ok(resp)
}

async fn avatar_url(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_avatar_url::v3::Request,
) -> Result<get_avatar_url::v3::Response> {
    let url = if req.user_id.server_name() != hs.server_name() {
        remote_string(hs, &req.user_id, "avatar_url").await?
    } else {
        local_profile(hs, &req.user_id)
            .await?
            .avatar_url
            .ok_or_else(|| MatrixError::not_found("this user has no avatar"))?
    };
    let mut resp = get_avatar_url::v3::Response::default();
    resp.avatar_url = Some(OwnedMxcUri::from(url));
    Ok(resp)
}

/// Applies `change` to the caller's own profile, then carries the new profile into every room
/// the caller has joined.
pub(crate) async fn update(
    hs: &Homeserver,
    ctx: &Ctx,
    target: &UserId,
    change: impl FnOnce(&mut UserRecord),
) -> Result<()> {
    let user = ctx.user_id()?;
    if target != user {
        return Err(MatrixError::forbidden(
            "you can only change your own profile",
        ));
    }
    let record = {
        let _g = hs.write_lock().await;
        let mut record = users::get_user(hs, user)
            .await?
            .ok_or_else(|| MatrixError::not_found("Profile not found"))?;
        change(&mut record);
        let custom = profile_fields::custom_fields(hs, user).await?;
        crate::limits::profile(profile_fields::profile_size(&record, &custom)?)?;
        let mut batch = Batch::new();
        users::put_user(&mut batch, user, &record)?;
        hs.commit(batch).await?;
        record
    };
    propagate(hs, user, &record).await;
    Ok(())
}

/// Sends a fresh `m.room.member` join event with the new profile into each joined room. Each
/// room's event is its own write (sending takes the write lock), so a failure in one room is
/// logged and the others still get the change: the profile itself is already saved.
async fn propagate(hs: &Homeserver, user: &UserId, record: &UserRecord) {
    let joined = match rooms::joined_rooms(hs, user).await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(user = %user, error = %e, "cannot list joined rooms for profile propagation");
            return;
        }
    };
    let avatar = record.avatar_url.clone().map(OwnedMxcUri::from);
    for room in joined {
        let current = match rooms::state_event(hs, &room, "m.room.member", user.as_str()).await {
            Ok(Some(pdu)) => pdu,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "cannot read membership for profile propagation");
                continue;
            }
        };
        let Ok(mut content) =
            serde_json::from_value::<RoomMemberEventContent>(current.content.clone())
        else {
            tracing::warn!(room = %room, "unreadable membership event; profile not propagated");
            continue;
        };
        if content.membership != MembershipState::Join {
            continue;
        }
        if content.displayname == record.displayname && content.avatar_url == avatar {
            continue;
        }
        content.displayname = record.displayname.clone();
        content.avatar_url = avatar.clone();
        // These describe the act of joining; a profile update is not one, and a copied
        // `join_authorised_via_users_server` would fail the auth rules (it needs that server's
        // signature).
        content.join_authorized_via_users_server = None;
        content.reason = None;
        let value = match serde_json::to_value(&content) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "cannot serialise membership content");
                continue;
            }
        };
        if let Err(e) =
            rooms::send_state_event(hs, user, &room, "m.room.member", user.as_str(), value).await
        {
            tracing::warn!(room = %room, error = %e, "profile change not propagated");
        }
    }
}
