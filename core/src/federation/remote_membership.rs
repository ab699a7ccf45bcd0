//! Membership handshakes this server starts for its users: joining a room it is not in
//! (`make_join` + `send_join` v2), inviting a user of another server (`invite` v2), and
//! rejecting an invite to a room it is not in (`make_leave` + `send_leave` v2).

use std::rc::Rc;

use ruma::api::federation::membership::RawStrippedState;
use ruma::api::federation::membership::{
    create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
    prepare_knock_event, prepare_leave_event,
};
use ruma::canonical_json::CanonicalJsonValue;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{hash_and_sign_event, reference_hash};
use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Value, json};

use super::client;
use crate::Homeserver;
use crate::db::key;
use crate::db::rooms::{self, Pdu};
use crate::db::state_groups::{self, StateMap};
use crate::error::{MatrixError, Result};
use crate::room::ingest::{self, AcceptError, Accepted};
use crate::room::txn::{NewEvent, RoomTxn, SUPPORTED_VERSIONS, supported_version};

/// The state types an invite carries as stripped state (the spec's recommendation).
const INVITE_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// Signs a membership template a resident server handed out, after checking it is the one
/// asked for. Returns the signed event and its id.
fn sign_template(
    hs: &Homeserver,
    rules: &RoomVersionRules,
    template: &Value,
    user: &UserId,
    room: &RoomId,
    content: Value,
) -> Result<(Value, OwnedEventId)> {
    let bad = |why: &str| MatrixError::unknown(format!("the resident server's template {why}"));
    let obj = template
        .as_object()
        .ok_or_else(|| bad("is not an object"))?;
    if obj.get("type").and_then(Value::as_str) != Some("m.room.member")
        || obj.get("state_key").and_then(Value::as_str) != Some(user.as_str())
        || obj.get("sender").and_then(Value::as_str) != Some(user.as_str())
        || obj.get("room_id").and_then(Value::as_str) != Some(room.as_str())
    {
        return Err(bad("is not this user's membership in this room"));
    }
    let mut event = template.clone();
    if let Some(o) = event.as_object_mut() {
        // What the resident server put into the content (a restricted join's authoriser)
        // stays; the profile and reason are ours.
        let mut merged = o.get("content").cloned().unwrap_or_else(|| json!({}));
        if let (Some(m), Some(c)) = (merged.as_object_mut(), content.as_object()) {
            for (k, v) in c {
                m.insert(k.clone(), v.clone());
            }
        }
        o.insert("content".into(), merged);
        o.insert("origin_server_ts".into(), json!(hs.now_ms()));
        o.insert("origin".into(), json!(hs.server_name()));
        for k in ["signatures", "hashes", "unsigned", "event_id"] {
            o.remove(k);
        }
    }
    let CanonicalJsonValue::Object(mut object) =
        ruma::canonical_json::to_canonical_value(&event)
            .map_err(|e| bad(&format!("is not canonical JSON: {e}")))?
    else {
        return Err(bad("is not an object"));
    };
    hash_and_sign_event(
        hs.server_name().as_str(),
        &hs.key.pair,
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| MatrixError::unknown(format!("signing: {e}")))?;
    let hash = reference_hash(&object, rules).map_err(|e| MatrixError::unknown(e.to_string()))?;
    let id = OwnedEventId::try_from(format!("${hash}"))
        .map_err(|e| MatrixError::unknown(e.to_string()))?;
    Ok((serde_json::to_value(&object)?, id))
}

fn remote_error(e: client::FederationError) -> MatrixError {
    e.to_client_error()
}

/// Joins `user` to `room` through the first of `via` that answers.
pub async fn join(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    via: &[OwnedServerName],
    content: Value,
) -> Result<OwnedRoomId> {
    let mut last_error = MatrixError::not_found("no server to join through: give one with `via`");
    for server in via.iter().filter(|s| *s != hs.server_name()) {
        match join_via(hs, user, room, server, content.clone()).await {
            Ok(()) => return Ok(room.to_owned()),
            Err(e) => {
                tracing::info!(%room, %server, error = %e, "remote join failed");
                last_error = e;
            }
        }
    }
    Err(last_error)
}

async fn join_via(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    server: &ServerName,
    content: Value,
) -> Result<()> {
    let mut req = prepare_join_event::v1::Request::new(room.to_owned(), user.to_owned());
    req.ver = SUPPORTED_VERSIONS
        .iter()
        .filter_map(|v| RoomVersionId::try_from(*v).ok())
        .collect();
    let made = client::send(hs, server, req).await.map_err(remote_error)?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    let rules = supported_version(&version).ok_or_else(|| {
        MatrixError::unsupported_room_version(format!("room version {version} is not supported"))
    })?;
    let template: Value = serde_json::from_str(made.event.get())
        .map_err(|e| MatrixError::unknown(format!("make_join answer: {e}")))?;
    let (signed, event_id) = sign_template(hs, &rules, &template, user, room, content)?;
    let req = create_join_event::v2::Request::new(
        room.to_owned(),
        event_id.clone(),
        serde_json::value::to_raw_value(&signed)?,
    );
    let joined = client::send(hs, server, req).await.map_err(remote_error)?;
    let state = joined.room_state;
    // A restricted join comes back counter-signed by the resident server: use that copy.
    let join_value: Value = match &state.event {
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or(signed),
        None => signed,
    };

    let mut state_events = Vec::new();
    for raw in &state.state {
        if let Ok(v) = serde_json::from_str::<Value>(raw.get()) {
            match ingest::verify(hs, &rules, room, &v).await {
                Ok(p) => state_events.push(p),
                Err(e) => tracing::info!(error = %e, "dropped a state event of the join answer"),
            }
        }
    }
    let mut chain = Vec::new();
    for raw in &state.auth_chain {
        if let Ok(v) = serde_json::from_str::<Value>(raw.get())
            && let Ok(p) = ingest::verify(hs, &rules, room, &v).await
        {
            chain.push(p);
        }
    }
    let join_pdu = ingest::verify(hs, &rules, room, &join_value)
        .await
        .map_err(|e| MatrixError::unknown(format!("our own join did not verify: {e}")))?;
    let create_version = state_events
        .iter()
        .find(|p| p.event_type == "m.room.create" && p.state_key.as_deref() == Some(""))
        .map(|p| {
            p.content
                .get("room_version")
                .and_then(Value::as_str)
                .unwrap_or("1")
                .to_owned()
        })
        .ok_or_else(|| MatrixError::unknown("the join answer has no m.room.create"))?;
    if create_version != version.as_str() {
        return Err(MatrixError::unknown(
            "the join answer's room version does not match",
        ));
    }
    persist_join(hs, room, version, state_events, chain, join_pdu).await
}

/// Writes a room this server just joined: the state and auth chain as outliers, the state as
/// the room's current state, and the join as the first event of its timeline.
async fn persist_join(
    hs: &Homeserver,
    room: &RoomId,
    version: RoomVersionId,
    state_events: Vec<Pdu>,
    chain: Vec<Pdu>,
    mut join: Pdu,
) -> Result<()> {
    let _lock = hs.write_lock().await;
    let mut txn = match RoomTxn::open(hs, room).await {
        Ok(t) => t,
        Err(e) if e.errcode == "M_NOT_FOUND" => RoomTxn::create(hs, room.to_owned(), version)?,
        Err(e) => return Err(e),
    };
    txn.skip_outbound = true;
    // Room below the join for the history before it, fetched later by backfill.
    let floor = hs.current_pos().max(txn.hs().alloc_pos());
    hs.skip_positions(crate::room::backfill::SPACE);
    let first = hs.alloc_pos();
    txn.record.backfill = Some((first, floor));
    let mut all = chain;
    all.extend(state_events.iter().cloned());
    let stored = ingest::store_outliers(&mut txn, all).await?;
    let mut before = StateMap::new();
    for p in &state_events {
        if let Some(sk) = &p.state_key {
            before.insert((p.event_type.clone(), sk.clone()), p.event_id.clone());
        }
    }
    ingest::check_against(&txn, &join, &before)
        .await
        .map_err(|e| MatrixError::forbidden(format!("the join is not allowed: {e}")))?;
    let hs2 = txn.hs();
    let before_group =
        state_groups::store(hs2, &mut txn.batch, &mut txn.groups, None, before.clone()).await?;
    let mut after = before.clone();
    if let Some(sk) = &join.state_key
        && let Some(prev) = after.insert(
            ("m.room.member".to_owned(), sk.clone()),
            join.event_id.clone(),
        )
        && let Some(p) = stored.iter().find(|p| p.event_id == prev)
    {
        join.meta.prev_content = Some(p.content.clone());
        join.meta.prev_sender = Some(p.sender.clone());
        join.meta.replaces_state = Some(p.event_id.clone());
    }
    let after_group = state_groups::store(
        hs2,
        &mut txn.batch,
        &mut txn.groups,
        Some(before_group),
        after,
    )
    .await?;
    // The room's state as it was when we joined becomes current, ahead of the join.
    for ((t, k), id) in &before {
        if txn.state.get(&(t.clone(), k.clone())) == Some(id) {
            continue;
        }
        let event = stored.iter().find(|p| &p.event_id == id).cloned();
        let pos = hs2.alloc_pos();
        txn.set_current(t, k, event.as_deref(), pos)?;
    }
    let pos = hs2.alloc_pos();
    join.pos = pos;
    join.meta.pos = pos;
    join.meta.state_before = Some(before_group);
    join.meta.state_after = Some(after_group);
    join.meta.outlier = false;
    txn.put_event(&join)?;
    txn.batch.put(
        "timeline",
        key(&[room.as_bytes(), &crate::db::pos_bytes(pos)]),
        join.event_id.as_bytes(),
    );
    let sk = join.state_key.clone().unwrap_or_default();
    txn.set_current("m.room.member", &sk, Some(&join), pos)?;
    txn.record.extremities = vec![join.event_id.clone()];
    txn.record.depth = txn.record.depth.max(join.depth);
    txn.record.current_group = Some(after_group);
    txn.index_and_effects(join).await?;
    txn.commit().await?;
    Ok(())
}

/// Invites `target`, a user of another server: the event is built and checked here, signed
/// by the target's server, then added to the room and sent to everyone in it.
pub async fn invite(
    hs: &Homeserver,
    sender: &UserId,
    room: &RoomId,
    target: &UserId,
    content: Value,
) -> Result<()> {
    let (pdu, version, stripped) = {
        let _lock = hs.write_lock().await;
        let mut txn = RoomTxn::open(hs, room).await?;
        // Since Matrix 1.16 the invite's room state travels as full PDUs.
        let mut stripped = Vec::new();
        for t in INVITE_STATE {
            if let Some(p) = txn.state_event(t, "").await? {
                stripped.push(RawStrippedState::Pdu(super::events::pdu_raw(&p)?));
            }
        }
        if let Some(p) = txn.state_event("m.room.member", sender.as_str()).await? {
            stripped.push(RawStrippedState::Pdu(super::events::pdu_raw(&p)?));
        }
        let pdu = txn
            .append(NewEvent::state(
                sender,
                "m.room.member",
                target.as_str(),
                content,
            ))
            .await?;
        // Not committed: the event is added once the target's server has signed it.
        (pdu, txn.version.clone(), stripped)
    };
    let rules = supported_version(&version)
        .ok_or_else(|| MatrixError::unsupported_room_version("room version not supported"))?;
    let req = create_invite::v2::Request::new(
        room.to_owned(),
        pdu.event_id.clone(),
        version,
        super::events::pdu_raw(&pdu)?,
        stripped,
    );
    let answer = client::send(hs, target.server_name(), req)
        .await
        .map_err(|e| match e {
            client::FederationError::Remote { error, .. } => MatrixError::forbidden(format!(
                "{} refused the invite: {error}",
                target.server_name()
            )),
            other => other.to_client_error(),
        })?;
    let signed: Value = serde_json::from_str(answer.event.get())
        .map_err(|e| MatrixError::unknown(format!("the signed invite is not JSON: {e}")))?;
    let signed_by_target = signed
        .get("signatures")
        .and_then(|s| s.get(target.server_name().as_str()))
        .is_some();
    let checked = ingest::verify(hs, &rules, room, &signed)
        .await
        .map_err(|e| MatrixError::unknown(format!("the signed invite does not verify: {e}")))?;
    if checked.event_id != pdu.event_id || !signed_by_target {
        return Err(MatrixError::unknown(
            "the invited server did not return our invite with its signature",
        ));
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    match ingest::accept(&mut txn, checked).await {
        Ok(Accepted::Timeline) | Ok(Accepted::Duplicate) => {}
        Ok(Accepted::SoftFailed) => {
            return Err(MatrixError::forbidden(
                "the room's state changed and no longer allows it",
            ));
        }
        Err(AcceptError::Refused(r)) => return Err(MatrixError::forbidden(r.to_string())),
        Err(AcceptError::Server(e)) => return Err(e),
    }
    txn.commit().await?;
    Ok(())
}

/// Rejects an invite to a room this server is not in, through the server that sent it.
pub async fn reject_invite(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    invite: &Rc<Pdu>,
    reason: Option<&str>,
) -> Result<()> {
    let mut servers: Vec<OwnedServerName> = Vec::new();
    if let Some(v) = &invite.meta.invite_via {
        servers.push(v.clone());
    }
    servers.push(invite.sender.server_name().to_owned());
    let mut content = json!({ "membership": "leave" });
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    let mut last = MatrixError::not_found("no server to reject the invite through");
    for server in servers.iter().filter(|s| *s != hs.server_name()) {
        let made = match client::send(
            hs,
            server,
            prepare_leave_event::v1::Request::new(room.to_owned(), user.to_owned()),
        )
        .await
        {
            Ok(m) => m,
            Err(e) => {
                last = e.to_client_error();
                continue;
            }
        };
        let version = made.room_version.unwrap_or(RoomVersionId::V1);
        let Some(rules) = supported_version(&version) else {
            continue;
        };
        let template: Value = serde_json::from_str(made.event.get())
            .map_err(|e| MatrixError::unknown(format!("make_leave answer: {e}")))?;
        let (signed, event_id) = sign_template(hs, &rules, &template, user, room, content.clone())?;
        let req = create_leave_event::v2::Request::new(
            room.to_owned(),
            event_id.clone(),
            serde_json::value::to_raw_value(&signed)?,
        );
        if let Err(e) = client::send(hs, server, req).await {
            last = e.to_client_error();
            continue;
        }
        let leave = Pdu::from_parts(event_id, signed, Default::default())?;
        let _lock = hs.write_lock().await;
        rooms::record_out_of_room_membership(hs, user, leave).await?;
        return Ok(());
    }
    Err(last)
}

/// Knocks on a room this server is not in, through the first of `via` that answers. The knock
/// is remembered with the room's stripped state, for `/sync`'s `knock` section.
pub async fn knock(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    via: &[OwnedServerName],
    content: Value,
) -> Result<()> {
    let mut last = MatrixError::not_found("no server to knock through: give one with `via`");
    for server in via.iter().filter(|s| *s != hs.server_name()) {
        let mut req = prepare_knock_event::v1::Request::new(room.to_owned(), user.to_owned());
        req.ver = SUPPORTED_VERSIONS
            .iter()
            .filter_map(|v| RoomVersionId::try_from(*v).ok())
            .collect();
        let made = match client::send(hs, server, req).await {
            Ok(m) => m,
            Err(e) => {
                last = remote_error(e);
                continue;
            }
        };
        let rules = supported_version(&made.room_version).ok_or_else(|| {
            MatrixError::unsupported_room_version(format!(
                "room version {} is not supported",
                made.room_version
            ))
        })?;
        let template: Value = serde_json::from_str(made.event.get())
            .map_err(|e| MatrixError::unknown(format!("make_knock answer: {e}")))?;
        let (signed, event_id) = sign_template(hs, &rules, &template, user, room, content.clone())?;
        let req = create_knock_event::v1::Request::new(
            room.to_owned(),
            event_id.clone(),
            serde_json::value::to_raw_value(&signed)?,
        );
        let answer = match client::send(hs, server, req).await {
            Ok(a) => a,
            Err(e) => {
                last = remote_error(e);
                continue;
            }
        };
        let stripped: Vec<Value> = answer
            .knock_room_state
            .iter()
            .filter_map(super::membership::stripped_of)
            .collect();
        let mut pdu = Pdu::from_parts(event_id, signed, Default::default())?;
        pdu.meta.invite_state = Some(stripped);
        pdu.meta.invite_via = Some(server.clone());
        let _lock = hs.write_lock().await;
        rooms::record_out_of_room_membership(hs, user, pdu).await?;
        return Ok(());
    }
    Err(last)
}
