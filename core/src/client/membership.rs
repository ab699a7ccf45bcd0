//! Room membership: join, invite, leave, forget, kick, ban, unban, and member lists.

use ruma::api::client::membership::invite_user::v3::InvitationRecipient;
use ruma::api::client::membership::{
    ban_user, forget_room, get_member_events, invite_user, join_room_by_id,
    join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room, unban_user,
};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomOrAliasId, UserId};
use serde_json::{Value, json};

use super::{directory, raw, tokens};
use crate::db::rooms::{self, MembershipRecord};
use crate::db::{key, to_json, users};
use crate::error::{MatrixError, Result};
use crate::room::txn::{NewEvent, RoomTxn};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, join_room_by_id::v3::Request, join_by_id);
    route!(
        r,
        join_room_by_id_or_alias::v3::Request,
        join_by_id_or_alias
    );
    route!(r, invite_user::v3::Request, invite);
    route!(r, leave_room::v3::Request, leave);
    route!(r, forget_room::v3::Request, forget);
    route!(r, kick_user::v3::Request, kick);
    route!(r, ban_user::v3::Request, ban);
    route!(r, unban_user::v3::Request, unban);
    route!(r, joined_rooms::v3::Request, list_joined_rooms);
    route!(r, joined_members::v3::Request, list_joined_members);
    route!(r, get_member_events::v3::Request, list_members);
}

/// `m.room.member` content for `user` with their profile (display name and avatar) attached.
pub async fn member_content(
    hs: &Homeserver,
    user: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> Result<Value> {
    let mut c = bare_content(membership, reason);
    if let Some(rec) = users::get_user(hs, user).await? {
        if let Some(d) = rec.displayname {
            c["displayname"] = json!(d);
        }
        if let Some(a) = rec.avatar_url {
            c["avatar_url"] = json!(a);
        }
    }
    Ok(c)
}

/// `m.room.member` content without a profile (leave, kick, ban, unban), with the optional reason.
fn bare_content(membership: &str, reason: Option<&str>) -> Value {
    let mut c = json!({ "membership": membership });
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    c
}

/// Joins `user` to a room this server knows, by the auth rules (join rules, bans, invites).
pub async fn join(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    if crate::db::rooms::room_record(hs, room).await?.is_none() {
        return join_remote(hs, user, room, reason, via).await;
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    if txn.membership(user).await? == Some(MembershipState::Join) {
        // Already joined: the spec makes join idempotent.
        return Ok(room.to_owned());
    }
    let mut content = member_content(hs, user, "join", reason).await?;
    // Restricted rooms: a local member with invite power vouches for the join (see `knock`).
    if let Some(via) = super::knock::join_authoriser(hs, &txn, user).await? {
        content["join_authorised_via_users_server"] = json!(via);
    }
    txn.append(NewEvent::state(
        user,
        "m.room.member",
        user.as_str(),
        content,
    ))
    .await?;
    txn.commit().await?;
    Ok(room.to_owned())
}

/// Joins a room this server is not in, through `via`, the server that invited the user, or
/// the server named in the room id.
async fn join_remote(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    reason: Option<&str>,
    via: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    let mut servers: Vec<OwnedServerName> = via.to_vec();
    if let Some(rec) = crate::db::rooms::membership_record(hs, room, user)
        .await?
        .or(invite_record(hs, user, room).await?)
        && let Some(invite) = crate::db::rooms::get_pdu(hs, rec.event_id.as_str()).await?
    {
        if let Some(v) = &invite.meta.invite_via {
            servers.push(v.clone());
        }
        servers.push(invite.sender.server_name().to_owned());
    }
    if let Some(s) = room.server_name() {
        servers.push(s.to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    servers.retain(|s| seen.insert(s.clone()));
    if servers.iter().all(|s| s == hs.server_name()) {
        return Err(MatrixError::not_found(
            "no known servers: this server does not know that room",
        ));
    }
    let content = member_content(hs, user, "join", reason).await?;
    crate::federation::remote_membership::join(hs, user, room, &servers, content).await
}

/// The user's record in `memberships` for a room this server may not be in.
async fn invite_record(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
) -> Result<Option<crate::db::rooms::MembershipRecord>> {
    Ok(crate::db::rooms::membership_records_for_user(hs, user)
        .await?
        .into_iter()
        .find(|(r, _)| r == room)
        .map(|(_, rec)| rec))
}

async fn join_by_id(
    hs: &Homeserver,
    ctx: Ctx,
    req: join_room_by_id::v3::Request,
) -> Result<join_room_by_id::v3::Response> {
    let room = join(hs, ctx.user_id()?, &req.room_id, req.reason.as_deref(), &[]).await?;
    Ok(join_room_by_id::v3::Response::new(room))
}

async fn join_by_id_or_alias(
    hs: &Homeserver,
    ctx: Ctx,
    req: join_room_by_id_or_alias::v3::Request,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let (room_id, mut via) = resolve_room_and_servers(hs, &req.room_id_or_alias).await?;
    via.splice(0..0, req.via.iter().cloned());
    let room = join(hs, ctx.user_id()?, &room_id, req.reason.as_deref(), &via).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room))
}

/// A room id or alias as a room id, with the servers an alias's directory named.
pub async fn resolve_room_and_servers(
    hs: &Homeserver,
    id: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    if let Ok(alias) = ruma::OwnedRoomAliasId::try_from(id.as_str())
        && alias.server_name() != hs.server_name()
    {
        let answer = crate::federation::client::query_directory(hs, &alias)
            .await
            .map_err(|e| match e {
                crate::federation::client::FederationError::Remote { status: 404, .. } => {
                    MatrixError::not_found(format!("room alias {alias} not found"))
                }
                other => other.to_client_error(),
            })?;
        return Ok((answer.room_id, answer.servers));
    }
    Ok((resolve_room(hs, id).await?, Vec::new()))
}

pub async fn resolve_room(hs: &Homeserver, id: &RoomOrAliasId) -> Result<OwnedRoomId> {
    match <&RoomId>::try_from(id.as_str()) {
        Ok(room) => Ok(room.to_owned()),
        Err(_) => {
            let alias = ruma::OwnedRoomAliasId::try_from(id.as_str())
                .map_err(|e| MatrixError::invalid_param(format!("invalid room alias: {e}")))?;
            directory::resolve_local_alias(hs, &alias)
                .await?
                .ok_or_else(|| MatrixError::not_found(format!("room alias {alias} not found")))
        }
    }
}

/// Changes another user's membership (invite, kick, ban, unban) as `sender`.
async fn change_other(
    hs: &Homeserver,
    sender: &UserId,
    room: &RoomId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
) -> Result<()> {
    if membership == "invite" && target.server_name() != hs.server_name() {
        {
            let _lock = hs.write_lock().await;
            let txn = RoomTxn::open(hs, room).await?;
            match txn.membership(target).await? {
                Some(MembershipState::Join) => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} is already in the room"
                    )));
                }
                Some(MembershipState::Ban) => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} is banned from the room"
                    )));
                }
                Some(MembershipState::Invite) => return Ok(()),
                _ => {}
            }
        }
        let content = bare_content("invite", reason);
        return crate::federation::remote_membership::invite(hs, sender, room, target, content)
            .await;
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    let content = match membership {
        "invite" => {
            match users::get_user(hs, target).await? {
                None => {
                    return Err(MatrixError::not_found(format!(
                        "user {target} does not exist"
                    )));
                }
                Some(u) if u.deactivated => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} has deactivated their account"
                    )));
                }
                Some(_) => {}
            }
            match txn.membership(target).await? {
                Some(MembershipState::Join) => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} is already in the room"
                    )));
                }
                Some(MembershipState::Ban) => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} is banned from the room"
                    )));
                }
                Some(MembershipState::Invite) => return Ok(()),
                _ => {}
            }
            member_content(hs, target, "invite", reason).await?
        }
        "leave" if txn.membership(target).await? == Some(MembershipState::Ban) => {
            // unban
            bare_content("leave", reason)
        }
        "leave" => {
            // kick: only someone currently in the room (joined, invited or knocking).
            match txn.membership(target).await? {
                Some(MembershipState::Join)
                | Some(MembershipState::Invite)
                | Some(MembershipState::Knock) => {}
                _ => {
                    return Err(MatrixError::forbidden(format!(
                        "{target} is not in the room"
                    )));
                }
            }
            bare_content("leave", reason)
        }
        _ => bare_content(membership, reason),
    };
    txn.append(NewEvent::state(
        sender,
        "m.room.member",
        target.as_str(),
        content,
    ))
    .await?;
    txn.commit().await?;
    Ok(())
}

async fn invite(
    hs: &Homeserver,
    ctx: Ctx,
    req: invite_user::v3::Request,
) -> Result<invite_user::v3::Response> {
    let InvitationRecipient::UserId(invitee) = &req.recipient else {
        return Err(MatrixError::forbidden(
            "third-party invites need an identity server, which this server does not use",
        ));
    };
    change_other(
        hs,
        ctx.user_id()?,
        &req.room_id,
        &invitee.user_id,
        "invite",
        invitee.reason.as_deref(),
    )
    .await?;
    Ok(invite_user::v3::Response::new())
}

async fn kick(
    hs: &Homeserver,
    ctx: Ctx,
    req: kick_user::v3::Request,
) -> Result<kick_user::v3::Response> {
    change_other(
        hs,
        ctx.user_id()?,
        &req.room_id,
        &req.user_id,
        "leave",
        req.reason.as_deref(),
    )
    .await?;
    Ok(kick_user::v3::Response::new())
}

async fn ban(
    hs: &Homeserver,
    ctx: Ctx,
    req: ban_user::v3::Request,
) -> Result<ban_user::v3::Response> {
    change_other(
        hs,
        ctx.user_id()?,
        &req.room_id,
        &req.user_id,
        "ban",
        req.reason.as_deref(),
    )
    .await?;
    Ok(ban_user::v3::Response::new())
}

async fn unban(
    hs: &Homeserver,
    ctx: Ctx,
    req: unban_user::v3::Request,
) -> Result<unban_user::v3::Response> {
    let user = ctx.user_id()?;
    if rooms::membership(hs, &req.room_id, &req.user_id).await? != Some(MembershipState::Ban) {
        return Err(MatrixError::forbidden(format!(
            "{} is not banned",
            req.user_id
        )));
    }
    change_other(
        hs,
        user,
        &req.room_id,
        &req.user_id,
        "leave",
        req.reason.as_deref(),
    )
    .await?;
    Ok(unban_user::v3::Response::new())
}

async fn leave(
    hs: &Homeserver,
    ctx: Ctx,
    req: leave_room::v3::Request,
) -> Result<leave_room::v3::Response> {
    let user = ctx.user_id()?;
    if crate::db::rooms::room_record(hs, &req.room_id)
        .await?
        .is_none()
    {
        // Not in the room: an invite (or knock) from another server is rejected there.
        let Some(rec) = invite_record(hs, user, &req.room_id).await? else {
            return Err(MatrixError::forbidden("you are not in this room"));
        };
        if rec.membership == MembershipState::Leave {
            return Ok(leave_room::v3::Response::new());
        }
        let invite = crate::db::rooms::get_pdu(hs, rec.event_id.as_str())
            .await?
            .ok_or_else(|| MatrixError::forbidden("you are not in this room"))?;
        crate::federation::remote_membership::reject_invite(
            hs,
            user,
            &req.room_id,
            &invite,
            req.reason.as_deref(),
        )
        .await?;
        return Ok(leave_room::v3::Response::new());
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, &req.room_id).await?;
    match txn.membership(user).await? {
        Some(MembershipState::Join)
        | Some(MembershipState::Invite)
        | Some(MembershipState::Knock) => {}
        Some(MembershipState::Leave) => return Ok(leave_room::v3::Response::new()),
        _ => return Err(MatrixError::forbidden("you are not in this room")),
    }
    let content = bare_content("leave", req.reason.as_deref());
    txn.append(NewEvent::state(
        user,
        "m.room.member",
        user.as_str(),
        content,
    ))
    .await?;
    txn.commit().await?;
    Ok(leave_room::v3::Response::new())
}

async fn forget(
    hs: &Homeserver,
    ctx: Ctx,
    req: forget_room::v3::Request,
) -> Result<forget_room::v3::Response> {
    let user = ctx.user_id()?;
    let _lock = hs.write_lock().await;
    let Some(mut rec) = rooms::membership_record(hs, &req.room_id, user).await? else {
        return Err(MatrixError::not_found("you have never been in this room"));
    };
    if matches!(
        rec.membership,
        MembershipState::Join | MembershipState::Invite | MembershipState::Knock
    ) {
        return Err(MatrixError::bad_json("leave the room before forgetting it"));
    }
    rec.forgotten = true;
    let mut batch = crate::storage::Batch::new();
    let v = to_json::<MembershipRecord>(&rec)?;
    batch.put(
        "memberships",
        key(&[user.as_bytes(), req.room_id.as_bytes()]),
        v.clone(),
    );
    batch.put(
        "room_members",
        key(&[req.room_id.as_bytes(), user.as_bytes()]),
        v,
    );
    hs.commit(batch).await?;
    Ok(forget_room::v3::Response::new())
}

async fn list_joined_rooms(
    hs: &Homeserver,
    ctx: Ctx,
    _req: joined_rooms::v3::Request,
) -> Result<joined_rooms::v3::Response> {
    Ok(joined_rooms::v3::Response::new(
        rooms::joined_rooms(hs, ctx.user_id()?).await?,
    ))
}

async fn list_joined_members(
    hs: &Homeserver,
    ctx: Ctx,
    req: joined_members::v3::Request,
) -> Result<joined_members::v3::Response> {
    let user = ctx.user_id()?;
    if rooms::room_record(hs, &req.room_id).await?.is_none() {
        return Err(MatrixError::forbidden("you are not a member of this room"));
    }
    if rooms::membership(hs, &req.room_id, user).await? != Some(MembershipState::Join) {
        return Err(MatrixError::forbidden("you are not a member of this room"));
    }
    let mut joined = std::collections::BTreeMap::new();
    for member in rooms::joined_members(hs, &req.room_id).await? {
        let ev = rooms::state_event(hs, &req.room_id, "m.room.member", member.as_str()).await?;
        let mut rm = joined_members::v3::RoomMember::new();
        if let Some(ev) = ev {
            rm.display_name = ev
                .content
                .get("displayname")
                .and_then(Value::as_str)
                .map(str::to_owned);
            rm.avatar_url = ev
                .content
                .get("avatar_url")
                .and_then(Value::as_str)
                .map(ruma::OwnedMxcUri::from);
        }
        joined.insert(member, rm);
    }
    Ok(joined_members::v3::Response::new(joined))
}

async fn list_members(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_member_events::v3::Request,
) -> Result<get_member_events::v3::Response> {
    let user = ctx.user_id()?;
    // Members see the current list, former members the list as it was when they left.
    let left_at = super::events::visible_upto(hs, user, &req.room_id).await?;
    let at = match &req.at {
        Some(t) => Some(tokens::parse(t)?),
        None => None,
    };
    let upto = match (at, left_at) {
        (Some(a), Some(l)) => Some(a.min(l)),
        (a, l) => a.or(l),
    };
    let member_ids: Vec<ruma::OwnedEventId> = match upto {
        Some(pos) => rooms::state_at(hs, &req.room_id, pos)
            .await?
            .into_iter()
            .filter(|((t, _), _)| t == "m.room.member")
            .map(|(_, id)| id)
            .collect(),
        None => rooms::room_state(hs, &req.room_id)
            .await?
            .map(|rs| {
                rs.state
                    .iter()
                    .filter(|((t, _), _)| t == "m.room.member")
                    .map(|(_, id)| id.clone())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let now = hs.now_ms();
    let mut chunk = Vec::new();
    for id in member_ids {
        let Some(p) = rooms::get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        let m = p.membership().unwrap_or(MembershipState::Leave);
        if req.membership.as_ref().is_some_and(|want| *want != m) {
            continue;
        }
        if req.not_membership.as_ref().is_some_and(|not| *not == m) {
            continue;
        }
        chunk.push(raw(&p.to_client(now, None))?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// Users of this server (for checks that a target exists).
pub fn is_local(hs: &Homeserver, user: &UserId) -> bool {
    user.server_name() == hs.server_name()
}

pub fn owned(u: &UserId) -> OwnedUserId {
    u.to_owned()
}
