//! Membership handshakes asked of this server: `make_join`/`send_join` (v2),
//! `make_leave`/`send_leave` (v2) and `invite` (v2).
//!
//! A resident server hands out a template built on its current extremities; the joining
//! server signs it and sends it back; the event then goes through the same checks as any
//! received PDU (`room::ingest`), and the resident server forwards it to the other servers in
//! the room.

use ruma::api::federation::membership::{
    RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event,
    prepare_join_event, prepare_knock_event, prepare_leave_event,
};
use ruma::canonical_json::CanonicalJsonValue;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Value, json};

use super::events::{auth_chain, pdu_raw, servers_in_room};
use super::outbox::{self, Item};
use crate::db::rooms::{self, Pdu};
use crate::db::state_groups;
use crate::error::{MatrixError, Result};
use crate::room::ingest::{self, AcceptError, Accepted};
use crate::room::txn::{NewEvent, RoomTxn, supported_version};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, prepare_join_event::v1::Request, make_join);
    route!(r, create_join_event::v2::Request, send_join);
    route!(r, prepare_leave_event::v1::Request, make_leave);
    route!(r, create_leave_event::v2::Request, send_leave);
    route!(r, create_invite::v2::Request, invite);
    route!(r, prepare_knock_event::v1::Request, make_knock);
    route!(r, create_knock_event::v1::Request, send_knock);
}

/// The state types a knocking user may see (the spec's recommendation for stripped state).
const KNOCK_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

async fn make_knock(
    hs: &Homeserver,
    ctx: Ctx,
    req: prepare_knock_event::v1::Request,
) -> Result<prepare_knock_event::v1::Response> {
    check_origin_user(ctx.origin()?, &req.user_id)?;
    let (version, pdu) = template(hs, &req.room_id, &req.user_id, "knock", Some(&req.ver)).await?;
    Ok(prepare_knock_event::v1::Response::new(
        version,
        serde_json::value::to_raw_value(&pdu)?,
    ))
}

async fn send_knock(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_knock_event::v1::Request,
) -> Result<create_knock_event::v1::Response> {
    let origin = ctx.origin()?.to_owned();
    accept_membership(
        hs,
        &origin,
        &req.room_id,
        &req.event_id,
        &req.pdu,
        MembershipState::Knock,
    )
    .await?;
    let mut state = Vec::new();
    for t in KNOCK_STATE {
        if let Some(p) = rooms::state_event(hs, &req.room_id, t, "").await? {
            state.push(RawStrippedState::Pdu(pdu_raw(&p)?));
        }
    }
    Ok(create_knock_event::v1::Response::new(state))
}

fn incompatible(version: &RoomVersionId) -> MatrixError {
    let mut e = MatrixError::new(
        http::StatusCode::BAD_REQUEST,
        "M_INCOMPATIBLE_ROOM_VERSION",
        format!("the room has version {version}, which the joining server does not support"),
    );
    e.extra.insert("room_version".into(), json!(version));
    e
}

fn check_origin_user(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() != origin {
        return Err(MatrixError::forbidden(format!(
            "{origin} cannot speak for {user}"
        )));
    }
    Ok(())
}

/// A membership template for `user`, built on the current extremities. `versions` are those
/// the asking server supports, when it says (`make_join`, `make_knock`); without `ver` it
/// supports only version 1, the spec's default.
async fn template(
    hs: &Homeserver,
    room: &RoomId,
    user: &UserId,
    membership: &str,
    versions: Option<&[RoomVersionId]>,
) -> Result<(RoomVersionId, Value)> {
    let txn = RoomTxn::open(hs, room).await?;
    if let Some(v) = versions
        && !v.contains(&txn.version)
    {
        return Err(incompatible(&txn.version));
    }
    let mut content = json!({ "membership": membership });
    if membership == "join"
        && let Some(via) = crate::client::knock::join_authoriser(hs, &txn, user).await?
    {
        // A restricted room: one of our members vouches for the join (and this server signs
        // it in `send_join`).
        content["join_authorised_via_users_server"] = json!(via);
    }
    let mut ev = NewEvent::state(user, "m.room.member", user.as_str(), content);
    ev.ts = Some(hs.now_ms());
    let pdu = txn.template(&ev).await?;
    Ok((txn.version.clone(), pdu))
}

async fn make_join(
    hs: &Homeserver,
    ctx: Ctx,
    req: prepare_join_event::v1::Request,
) -> Result<prepare_join_event::v1::Response> {
    check_origin_user(ctx.origin()?, &req.user_id)?;
    let (version, pdu) = template(hs, &req.room_id, &req.user_id, "join", Some(&req.ver)).await?;
    let mut resp = prepare_join_event::v1::Response::new(serde_json::value::to_raw_value(&pdu)?);
    resp.room_version = Some(version);
    Ok(resp)
}

async fn make_leave(
    hs: &Homeserver,
    ctx: Ctx,
    req: prepare_leave_event::v1::Request,
) -> Result<prepare_leave_event::v1::Response> {
    check_origin_user(ctx.origin()?, &req.user_id)?;
    let (version, pdu) = template(hs, &req.room_id, &req.user_id, "leave", None).await?;
    Ok(prepare_leave_event::v1::Response::new(
        Some(version),
        serde_json::value::to_raw_value(&pdu)?,
    ))
}

/// Checks a signed membership event sent back by `origin`, adds it to the room and queues it
/// for the other servers in the room. Returns it with what it became.
async fn accept_membership(
    hs: &Homeserver,
    origin: &ServerName,
    room: &RoomId,
    event_id: &OwnedEventId,
    raw: &serde_json::value::RawValue,
    membership: MembershipState,
) -> Result<std::rc::Rc<Pdu>> {
    let record = rooms::room_record(hs, room)
        .await?
        .ok_or_else(|| MatrixError::not_found("this server is not in that room"))?;
    let rules = supported_version(&record.version)
        .ok_or_else(|| MatrixError::unsupported_room_version("room version not supported"))?;
    let mut value: Value = serde_json::from_str(raw.get())
        .map_err(|e| MatrixError::bad_json(format!("the event is not JSON: {e}")))?;
    // A restricted join vouched for by one of our users carries this server's signature too.
    let authoriser = value
        .get("content")
        .and_then(|c| c.get("join_authorised_via_users_server"))
        .and_then(Value::as_str)
        .and_then(|u| ruma::OwnedUserId::try_from(u).ok());
    if membership == MembershipState::Join
        && authoriser.is_some_and(|u| u.server_name() == hs.server_name())
    {
        let CanonicalJsonValue::Object(mut object) =
            ruma::canonical_json::to_canonical_value(&value)
                .map_err(|e| MatrixError::bad_json(e.to_string()))?
        else {
            return Err(MatrixError::bad_json("the event is not an object"));
        };
        ruma::signatures::sign_event(
            hs.server_name().as_str(),
            &hs.key.pair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| MatrixError::unknown(format!("signing the join: {e}")))?;
        value = serde_json::to_value(&object)?;
    }
    let pdu = ingest::verify(hs, &rules, room, &value)
        .await
        .map_err(|e| MatrixError::bad_json(e.to_string()))?;
    if &pdu.event_id != event_id {
        return Err(MatrixError::bad_json(format!(
            "the event's id is {}, not {event_id}",
            pdu.event_id
        )));
    }
    let sender_is_target = pdu.state_key.as_deref() == Some(pdu.sender.as_str());
    if pdu.event_type != "m.room.member"
        || !sender_is_target
        || pdu.membership() != Some(membership.clone())
    {
        return Err(MatrixError::bad_json(format!(
            "expected the {} event of its own sender",
            membership.as_str()
        )));
    }
    check_origin_user(origin, &pdu.sender)?;

    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    match ingest::accept(&mut txn, pdu.clone()).await {
        Ok(Accepted::Timeline) | Ok(Accepted::Duplicate) => {}
        Ok(Accepted::SoftFailed) => {
            return Err(MatrixError::forbidden(
                "the room's current state does not allow it",
            ));
        }
        Err(AcceptError::Refused(r)) => return Err(MatrixError::forbidden(r.to_string())),
        Err(AcceptError::Server(e)) => return Err(e),
    }
    // The other servers in the room learn of it from us: the joining server is not in
    // the room yet (or no longer) and cannot tell them.
    let mut dests = servers_in_room_txn(&txn).await?;
    dests.retain(|d| d != origin);
    let queued = outbox::enqueue(
        hs,
        &mut txn.batch,
        dests.iter().map(|d| &**d),
        &Item::Pdu(pdu.event_id.clone()),
    )?;
    txn.commit().await?;
    outbox::queued(hs, queued);
    rooms::get_pdu(hs, event_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::unknown("the accepted event is gone"))
}

async fn servers_in_room_txn(txn: &RoomTxn<'_>) -> Result<Vec<OwnedServerName>> {
    let hs = txn.hs();
    let mut out: Vec<OwnedServerName> = Vec::new();
    for u in txn.joined_members().await? {
        let s = u.server_name();
        if s != hs.server_name() && !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    Ok(out)
}

async fn send_join(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_join_event::v2::Request,
) -> Result<create_join_event::v2::Response> {
    let origin = ctx.origin()?.to_owned();
    let pdu = accept_membership(
        hs,
        &origin,
        &req.room_id,
        &req.event_id,
        &req.pdu,
        MembershipState::Join,
    )
    .await?;
    // The state before the join, and the auth chain of it and of the join.
    let state = match pdu.meta.state_before {
        Some(g) => {
            state_groups::load(hs, &state_groups::PendingGroups::default(), g)
                .await?
                .1
        }
        None => return Err(MatrixError::unknown("the join has no state before it")),
    };
    let mut state_pdus = Vec::with_capacity(state.len());
    for id in state.values() {
        if let Some(p) = rooms::get_pdu(hs, id.as_str()).await? {
            state_pdus.push(pdu_raw(&p)?);
        }
    }
    let chain = auth_chain(hs, state.values().cloned().chain([pdu.event_id.clone()])).await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = state_pdus;
    room_state.auth_chain = chain.iter().map(|p| pdu_raw(p)).collect::<Result<_>>()?;
    room_state.event = Some(pdu_raw(&pdu)?);
    let mut servers: Vec<String> = vec![hs.server_name().to_string()];
    servers.extend(
        servers_in_room(hs, &req.room_id)
            .await?
            .into_iter()
            .map(|s| s.to_string()),
    );
    room_state.servers_in_room = Some(servers);
    Ok(create_join_event::v2::Response::new(room_state))
}

async fn send_leave(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_leave_event::v2::Request,
) -> Result<create_leave_event::v2::Response> {
    let origin = ctx.origin()?.to_owned();
    accept_membership(
        hs,
        &origin,
        &req.room_id,
        &req.event_id,
        &req.pdu,
        MembershipState::Leave,
    )
    .await?;
    Ok(create_leave_event::v2::Response::new())
}

/// An entry of `invite_room_state` as the client API's stripped state. Since Matrix 1.16 the
/// entries are full PDUs; older servers send stripped events.
#[allow(deprecated)]
pub(crate) fn stripped_of(
    s: &ruma::api::federation::membership::RawStrippedState,
) -> Option<Value> {
    use ruma::api::federation::membership::RawStrippedState;
    let v: Value = match s {
        RawStrippedState::Stripped(raw) => serde_json::from_str(raw.json().get()).ok()?,
        RawStrippedState::Pdu(raw) => serde_json::from_str(raw.get()).ok()?,
        _ => return None,
    };
    Some(json!({
        "content": v.get("content")?,
        "sender": v.get("sender")?,
        "state_key": v.get("state_key")?,
        "type": v.get("type")?,
    }))
}

/// An invite for one of our users: checked, counter-signed, and remembered with the room's
/// stripped state so that the user sees it in `/sync` before this server is in the room.
async fn invite(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_invite::v2::Request,
) -> Result<create_invite::v2::Response> {
    let origin = ctx.origin()?.to_owned();
    let rules =
        supported_version(&req.room_version).ok_or_else(|| incompatible(&req.room_version))?;
    let value: Value = serde_json::from_str(req.event.get())
        .map_err(|e| MatrixError::bad_json(format!("the event is not JSON: {e}")))?;
    let mut pdu = ingest::verify(hs, &rules, &req.room_id, &value)
        .await
        .map_err(|e| MatrixError::bad_json(e.to_string()))?;
    if pdu.event_id != req.event_id {
        return Err(MatrixError::bad_json(
            "the event id does not match the event",
        ));
    }
    if pdu.event_type != "m.room.member" || pdu.membership() != Some(MembershipState::Invite) {
        return Err(MatrixError::bad_json("not an invite"));
    }
    check_origin_user(&origin, &pdu.sender)?;
    let invitee = pdu
        .state_key
        .as_deref()
        .and_then(|s| ruma::OwnedUserId::try_from(s).ok())
        .ok_or_else(|| MatrixError::bad_json("the invite has no user as state_key"))?;
    if invitee.server_name() != hs.server_name() {
        return Err(MatrixError::bad_json(format!(
            "{invitee} is not a user of this server"
        )));
    }
    match crate::db::users::get_user(hs, &invitee).await? {
        Some(u) if !u.deactivated => {}
        _ => return Err(MatrixError::not_found(format!("no user {invitee} here"))),
    }

    // Counter-sign, as the spec asks of the invited server.
    let CanonicalJsonValue::Object(mut object) =
        ruma::canonical_json::to_canonical_value(&value)
            .map_err(|e| MatrixError::bad_json(e.to_string()))?
    else {
        return Err(MatrixError::bad_json("the event is not an object"));
    };
    ruma::signatures::sign_event(
        hs.server_name().as_str(),
        &hs.key.pair,
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| MatrixError::unknown(format!("signing the invite: {e}")))?;
    let signed = serde_json::to_value(&object)?;

    let stripped: Vec<Value> = req
        .invite_room_state
        .iter()
        .filter_map(stripped_of)
        .collect();
    {
        let _lock = hs.write_lock().await;
        let known_room = rooms::room_record(hs, &req.room_id).await?.is_some();
        if !known_room {
            // Not in the room: the invite stands alone, with the state the inviter sent.
            pdu.json = signed.clone();
            pdu.meta.invite_state = Some(stripped);
            pdu.meta.invite_via = Some(origin.clone());
            rooms::record_out_of_room_membership(hs, &invitee, pdu).await?;
        }
        // In the room: the invite arrives as a PDU in the inviting server's transaction.
    }
    Ok(create_invite::v2::Response::new(
        serde_json::value::to_raw_value(&signed)?,
    ))
}
