//! The join rules beyond `public` and `invite`: knocking (`POST /knock/{roomIdOrAlias}`, the
//! knocked rooms of `/sync`) and restricted joins (`restricted` / `knock_restricted` with
//! `allow` rules by room membership).
//!
//! The auth rules (ruma's state-res) decide whether a knock or a join is allowed: knocking needs
//! room version 7+, `restricted` 8+, `knock_restricted` 10+. What they cannot check is whether
//! the joining user satisfies an `allow` rule; that is the resident server's promise, made by
//! naming one of its members with invite power in `join_authorised_via_users_server`.

use ruma::api::client::knock::knock_room;
use ruma::api::client::sync::sync_events::v3::KnockedRoom;
use ruma::events::room::join_rules::RoomJoinRulesEventContent;
use ruma::events::room::member::MembershipState;
use ruma::room::{AllowRule, JoinRule, Restricted};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::membership::member_content;
use super::raw;
use crate::db::rooms::{self, MembershipRecord};
use crate::error::{MatrixError, Result};
use crate::room::txn::{NewEvent, RoomTxn};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

/// The state a knocking user is shown (the spec's recommended stripped state), besides their
/// own knock.
const KNOCK_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

pub fn routes(r: &mut Router) {
    route!(r, knock_room::v3::Request, knock);
}

async fn knock(
    hs: &Homeserver,
    ctx: Ctx,
    req: knock_room::v3::Request,
) -> Result<knock_room::v3::Response> {
    let user = ctx.user_id()?;
    let (room, mut via) =
        super::membership::resolve_room_and_servers(hs, &req.room_id_or_alias).await?;
    if rooms::room_record(hs, &room).await?.is_none() {
        // A room of other servers: knock through them.
        via.splice(0..0, req.via.iter().cloned());
        if let Some(s) = room.server_name() {
            via.push(s.to_owned());
        }
        let content = member_content(hs, user, "knock", req.reason.as_deref()).await?;
        crate::federation::remote_membership::knock(hs, user, &room, &via, content).await?;
        return Ok(knock_room::v3::Response::new(room));
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, &room).await?;
    match txn.membership(user).await? {
        // Knocking twice changes nothing; the first knock stands.
        Some(MembershipState::Knock) => return Ok(knock_room::v3::Response::new(room)),
        Some(MembershipState::Join) => {
            return Err(MatrixError::forbidden(
                "you are already joined to this room",
            ));
        }
        Some(MembershipState::Invite) => {
            return Err(MatrixError::forbidden(
                "you are already invited to this room: join it instead",
            ));
        }
        Some(MembershipState::Ban) => {
            return Err(MatrixError::forbidden("you are banned from this room"));
        }
        _ => {}
    }
    let content = member_content(hs, user, "knock", req.reason.as_deref()).await?;
    // The auth rules refuse (403) a room whose join rule or version does not allow knocking.
    txn.append(NewEvent::state(
        user,
        "m.room.member",
        user.as_str(),
        content,
    ))
    .await?;
    txn.commit().await?;
    Ok(knock_room::v3::Response::new(room))
}

/// The `/sync` entry of a room the user knocks on: its stripped state and the knock itself.
pub async fn knocked_room(
    hs: &Homeserver,
    room: &RoomId,
    rec: &MembershipRecord,
) -> Result<KnockedRoom> {
    let mut events = Vec::new();
    if let Some(knock) = rooms::get_pdu(hs, rec.event_id.as_str()).await?
        && let Some(state) = &knock.meta.invite_state
    {
        // A knock on a room this server is not in: the state the room's server sent back.
        for v in state {
            events.push(raw(v)?);
        }
        let mut v = knock.to_stripped();
        v["event_id"] = json!(knock.event_id);
        v["origin_server_ts"] = json!(knock.origin_server_ts);
        events.push(raw(&v)?);
        let mut r = KnockedRoom::new();
        r.knock_state.events = events;
        return Ok(r);
    }
    for t in KNOCK_STATE_TYPES {
        if let Some(p) = rooms::state_event(hs, room, t, "").await? {
            events.push(raw(&p.to_stripped())?);
        }
    }
    if let Some(knock) = rooms::get_pdu(hs, rec.event_id.as_str()).await? {
        let mut v = knock.to_stripped();
        v["event_id"] = json!(knock.event_id);
        v["origin_server_ts"] = json!(knock.origin_server_ts);
        events.push(raw(&v)?);
    }
    let mut r = KnockedRoom::new();
    r.knock_state.events = events;
    Ok(r)
}

/// The room's join rule, parsed; `None` when it has none or it does not parse (the auth rules
/// then treat the room as invite-only).
pub fn parse_join_rule(content: &Value) -> Option<JoinRule> {
    serde_json::from_value::<RoomJoinRulesEventContent>(content.clone())
        .ok()
        .map(|c| c.join_rule)
}

/// The `allow` conditions of a room whose version honours its `restricted` or `knock_restricted`
/// join rule, or `None` for every other room.
pub fn restricted_allow(
    rule: &JoinRule,
    rules: &ruma::room_version_rules::AuthorizationRules,
) -> Option<Restricted> {
    match rule {
        JoinRule::Restricted(r) if rules.restricted_join_rule => Some(r.clone()),
        JoinRule::KnockRestricted(r) if rules.knock_restricted_join_rule => Some(r.clone()),
        _ => None,
    }
}

/// Whether `user` meets one of the `allow` conditions: joined to one of the listed rooms.
pub async fn meets_allow(hs: &Homeserver, allow: &Restricted, user: &UserId) -> Result<bool> {
    for rule in &allow.allow {
        if let AllowRule::RoomMembership(m) = rule
            && rooms::membership(hs, &m.room_id, user).await? == Some(MembershipState::Join)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// For a join through a restricted join rule: checks that `user` meets an `allow` condition and
/// picks the local member who vouches for the join (`join_authorised_via_users_server`): the one
/// with the most power, as long as it suffices to invite. `None` when the join needs no
/// authoriser (other join rules, or the user is invited or already joined).
pub async fn join_authoriser(
    hs: &Homeserver,
    txn: &RoomTxn<'_>,
    user: &UserId,
) -> Result<Option<OwnedUserId>> {
    let Some(content) = txn.state_content("m.room.join_rules", "").await? else {
        return Ok(None);
    };
    let Some(rule) = parse_join_rule(&content) else {
        return Ok(None);
    };
    let Some(allow) = restricted_allow(&rule, &txn.rules.authorization) else {
        return Ok(None);
    };
    if matches!(
        txn.membership(user).await?,
        Some(MembershipState::Join | MembershipState::Invite)
    ) {
        return Ok(None);
    }
    if !meets_allow(hs, &allow, user).await? {
        let how = if matches!(rule, JoinRule::KnockRestricted(_)) {
            " (you may knock instead)"
        } else {
            ""
        };
        return Err(MatrixError::forbidden(format!(
            "you are not a member of any room this room's join rules allow{how}"
        )));
    }
    let pl = txn.power_levels().await?;
    let mut candidates: Vec<(i64, OwnedUserId)> = txn
        .joined_members()
        .await?
        .into_iter()
        .filter(|u| u.server_name() == hs.server_name())
        .map(|u| (pl.user(&u), u))
        .filter(|(level, _)| *level >= pl.invite())
        .collect();
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    match candidates.into_iter().next() {
        Some((_, u)) => Ok(Some(u)),
        None => Err(MatrixError::unable_to_authorise_join(
            "no member of this server in the room may invite, so the join cannot be authorised",
        )),
    }
}
