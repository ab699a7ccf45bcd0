//! Reading a room's graph: `event`, `state`, `state_ids`, `event_auth`, `get_missing_events`
//! and `backfill`. A server may read a room only while one of its users is joined to it, or
//! when the room is world-readable; events its users could not see (history visibility at the
//! event) reach it redacted.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::rc::Rc;

use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::backfill::get_backfill;
use ruma::api::federation::event::{
    get_event, get_missing_events, get_room_state, get_room_state_ids,
};
use ruma::events::room::member::MembershipState;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, ServerName, UInt};
use serde_json::value::RawValue;

use crate::db::rooms::{self, Pdu, get_pdu};
use crate::db::state_groups::StateMap;
use crate::error::{MatrixError, Result};
use crate::room::graph;
use crate::room::txn::RoomTxn;
use crate::router::Router;
use crate::visibility::HistoryVisibility;
use crate::{Ctx, Homeserver, route};

/// Most events one `get_missing_events` or `backfill` answer carries.
const MAX_EVENTS: usize = 100;

/// Most events an auth chain answer carries (a room's whole membership history at worst).
const MAX_AUTH_CHAIN: usize = 50_000;

pub fn routes(r: &mut Router) {
    route!(r, get_event::v1::Request, event);
    route!(r, get_room_state::v1::Request, state);
    route!(r, get_room_state_ids::v1::Request, state_ids);
    route!(r, get_event_authorization::v1::Request, event_auth);
    route!(r, get_missing_events::v1::Request, missing_events);
    route!(r, get_backfill::v1::Request, backfill);
}

/// Whether `server` may see `pdu`, by the room's history visibility at the event (the spec's
/// rule for servers): `world_readable` and `shared` history is visible to any server in the
/// room; `invited` to a server with a user invited or joined at the event; `joined` to one
/// with a user joined at it.
pub async fn server_may_see(hs: &Homeserver, server: &ServerName, pdu: &Pdu) -> Result<bool> {
    let Some(group) = pdu.meta.state_before else {
        // Before state groups, or the room's first event: nothing to hide it by.
        return Ok(true);
    };
    // Read-only: no transaction (and no copy of the room's state) per event.
    let (_, state) = crate::db::state_groups::load(
        hs,
        &crate::db::state_groups::PendingGroups::default(),
        group,
    )
    .await?;
    let hv = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
        Some(id) => match get_pdu(hs, id.as_str()).await? {
            Some(p) => HistoryVisibility::from_content(&p.content),
            None => HistoryVisibility::Shared,
        },
        // The spec's default when the room has none.
        None => HistoryVisibility::Shared,
    };
    let allowed: &[MembershipState] = match hv {
        HistoryVisibility::WorldReadable | HistoryVisibility::Shared => return Ok(true),
        HistoryVisibility::Invited => &[MembershipState::Join, MembershipState::Invite],
        HistoryVisibility::Joined => &[MembershipState::Join],
    };
    for ((t, k), id) in state.iter() {
        if t != "m.room.member" || !k.ends_with(&format!(":{server}")) {
            continue;
        }
        if let Some(m) = get_pdu(hs, id.as_str()).await?.and_then(|p| p.membership())
            && allowed.contains(&m)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `pdu` as `server` may have it: whole, or redacted when history visibility hides it (the
/// graph stays whole, the content does not leak).
async fn pdu_for(hs: &Homeserver, server: &ServerName, pdu: &Pdu) -> Result<Box<RawValue>> {
    if server_may_see(hs, server, pdu).await? {
        return pdu_raw(pdu);
    }
    let rules = rooms::room_record(hs, &pdu.room_id)
        .await?
        .and_then(|r| crate::room::txn::supported_version(&r.version))
        .ok_or_else(|| MatrixError::unknown("room version not supported"))?;
    let mut json = pdu.json.clone();
    if let Some(o) = json.as_object_mut() {
        o.remove("unsigned");
        o.remove("event_id");
    }
    let ruma::CanonicalJsonValue::Object(mut object) =
        ruma::canonical_json::to_canonical_value(&json)
            .map_err(|e| MatrixError::unknown(format!("stored event: {e}")))?
    else {
        return Err(MatrixError::unknown("stored event is not an object"));
    };
    ruma::canonical_json::redact_in_place(&mut object, &rules.redaction, None)
        .map_err(|e| MatrixError::unknown(format!("redaction: {e}")))?;
    Ok(serde_json::value::to_raw_value(&object)?)
}

/// The PDU as it travels between servers.
pub fn pdu_raw(pdu: &Pdu) -> Result<Box<RawValue>> {
    let mut json = pdu.json.clone();
    if let Some(o) = json.as_object_mut() {
        o.remove("unsigned");
        o.remove("event_id");
    }
    Ok(serde_json::value::to_raw_value(&json)?)
}

/// Refuses a server none of whose users is joined to a room that is not world-readable.
pub async fn check_server_in_room(
    hs: &Homeserver,
    room: &RoomId,
    server: &ServerName,
) -> Result<()> {
    if rooms::room_record(hs, room).await?.is_none() {
        return Err(MatrixError::not_found(
            "this server does not know that room",
        ));
    }
    if server_in_room(hs, room, server).await?
        || crate::visibility::world_readable(hs, room).await?
    {
        return Ok(());
    }
    Err(MatrixError::forbidden(format!("{server} is not in {room}")))
}

pub async fn server_in_room(hs: &Homeserver, room: &RoomId, server: &ServerName) -> Result<bool> {
    Ok(rooms::members(hs, room)
        .await?
        .iter()
        .any(|(u, r)| u.server_name() == server && r.membership == MembershipState::Join))
}

/// Every server with a joined member in the room, this one excluded.
pub async fn servers_in_room(
    hs: &Homeserver,
    room: &RoomId,
) -> Result<BTreeSet<ruma::OwnedServerName>> {
    Ok(rooms::members(hs, room)
        .await?
        .iter()
        .filter(|(u, r)| {
            r.membership == MembershipState::Join && u.server_name() != hs.server_name()
        })
        .map(|(u, _)| u.server_name().to_owned())
        .collect())
}

async fn room_event(hs: &Homeserver, room: &RoomId, id: &OwnedEventId) -> Result<Rc<Pdu>> {
    match get_pdu(hs, id.as_str()).await? {
        Some(p) if p.room_id == room => Ok(p),
        _ => Err(MatrixError::not_found(format!("no event {id} in {room}"))),
    }
}

async fn event(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_event::v1::Request,
) -> Result<get_event::v1::Response> {
    let origin = ctx.origin()?.to_owned();
    let pdu = get_pdu(hs, req.event_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("no such event"))?;
    check_server_in_room(hs, &pdu.room_id, &origin).await?;
    Ok(get_event::v1::Response::new(
        hs.owned_server_name(),
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(hs.now_ms())),
        pdu_for(hs, &origin, &pdu).await?,
    ))
}

/// The state before `event` (the spec's "state at" the event; Synapse answers the same).
async fn state_before_event(
    hs: &Homeserver,
    room: &RoomId,
    event: &OwnedEventId,
) -> Result<Rc<StateMap>> {
    let pdu = room_event(hs, room, event).await?;
    match pdu.meta.state_before {
        Some(group) => Ok(crate::db::state_groups::load(
            hs,
            &crate::db::state_groups::PendingGroups::default(),
            group,
        )
        .await?
        .1),
        None if pdu.meta.state_after.is_some() || pdu.pos == 0 => Ok(Rc::new(StateMap::new())),
        None => {
            // A line-shaped room from before state groups: the state just before its position.
            let txn = RoomTxn::open(hs, room).await?;
            let (_, after) = graph::state_after(&txn, &pdu).await?;
            let mut before = (*after).clone();
            if let Some(sk) = &pdu.state_key {
                let key = (pdu.event_type.clone(), sk.clone());
                match &pdu.meta.replaces_state {
                    Some(prev) => {
                        before.insert(key, prev.clone());
                    }
                    None => {
                        before.remove(&key);
                    }
                }
            }
            Ok(Rc::new(before))
        }
    }
}

/// The full auth chain of `ids` (not including them), oldest first by depth.
pub async fn auth_chain(
    hs: &Homeserver,
    ids: impl IntoIterator<Item = OwnedEventId>,
) -> Result<Vec<Rc<Pdu>>> {
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in ids {
        if let Some(p) = get_pdu(hs, id.as_str()).await? {
            queue.extend(p.auth_events.iter().cloned());
        }
    }
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if out.len() >= MAX_AUTH_CHAIN || !seen.insert(id.clone()) {
            continue;
        }
        if let Some(p) = get_pdu(hs, id.as_str()).await? {
            queue.extend(p.auth_events.iter().cloned());
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.depth);
    Ok(out)
}

async fn state_ids(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_room_state_ids::v1::Request,
) -> Result<get_room_state_ids::v1::Response> {
    check_server_in_room(hs, &req.room_id, ctx.origin()?).await?;
    let state = state_before_event(hs, &req.room_id, &req.event_id).await?;
    let chain = auth_chain(hs, state.values().cloned()).await?;
    Ok(get_room_state_ids::v1::Response::new(
        chain.iter().map(|p| p.event_id.clone()).collect(),
        state.values().cloned().collect(),
    ))
}

async fn state(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_room_state::v1::Request,
) -> Result<get_room_state::v1::Response> {
    check_server_in_room(hs, &req.room_id, ctx.origin()?).await?;
    let state = state_before_event(hs, &req.room_id, &req.event_id).await?;
    let chain = auth_chain(hs, state.values().cloned()).await?;
    let mut pdus = Vec::with_capacity(state.len());
    for id in state.values() {
        if let Some(p) = get_pdu(hs, id.as_str()).await? {
            pdus.push(pdu_raw(&p)?);
        }
    }
    let chain = chain.iter().map(|p| pdu_raw(p)).collect::<Result<_>>()?;
    Ok(get_room_state::v1::Response::new(chain, pdus))
}

async fn event_auth(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_event_authorization::v1::Request,
) -> Result<get_event_authorization::v1::Response> {
    check_server_in_room(hs, &req.room_id, ctx.origin()?).await?;
    room_event(hs, &req.room_id, &req.event_id).await?;
    let chain = auth_chain(hs, [req.event_id.clone()]).await?;
    Ok(get_event_authorization::v1::Response::new(
        chain.iter().map(|p| pdu_raw(p)).collect::<Result<_>>()?,
    ))
}

/// Walks back from `latest` through `prev_events`, stopping at `earliest`, below `min_depth`
/// and at `limit` events; the answer is oldest first.
async fn missing_events(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_missing_events::v1::Request,
) -> Result<get_missing_events::v1::Response> {
    let origin = ctx.origin()?.to_owned();
    check_server_in_room(hs, &req.room_id, &origin).await?;
    let limit = usize::try_from(u64::from(req.limit))
        .unwrap_or(MAX_EVENTS)
        .min(MAX_EVENTS);
    let min_depth = u64::from(req.min_depth);
    let stop: HashSet<&OwnedEventId> = req.earliest_events.iter().collect();
    let mut seen: HashSet<OwnedEventId> = req.latest_events.iter().cloned().collect();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in &req.latest_events {
        if let Some(p) = get_pdu(hs, id.as_str()).await?
            && p.room_id == req.room_id
        {
            queue.extend(p.prev_events.iter().cloned());
        }
    }
    let mut out = Vec::new();
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if stop.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        let Some(p) = get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        if p.room_id != req.room_id || p.depth < min_depth || p.meta.outlier {
            continue;
        }
        queue.extend(p.prev_events.iter().cloned());
        out.push(p);
    }
    out.sort_by_key(|p| p.depth);
    let mut events = Vec::with_capacity(out.len());
    for p in &out {
        events.push(pdu_for(hs, &origin, p).await?);
    }
    Ok(get_missing_events::v1::Response::new(events))
}

/// Events before `v` (included), newest first, through `prev_events`.
async fn backfill(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_backfill::v1::Request,
) -> Result<get_backfill::v1::Response> {
    let origin = ctx.origin()?.to_owned();
    check_server_in_room(hs, &req.room_id, &origin).await?;
    let limit = usize::try_from(u64::from(req.limit))
        .unwrap_or(MAX_EVENTS)
        .min(MAX_EVENTS);
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = req.v.iter().cloned().collect();
    let mut out: Vec<Rc<Pdu>> = Vec::new();
    while let Some(id) = queue.pop_front() {
        if out.len() >= limit {
            break;
        }
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(p) = get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        if p.room_id != req.room_id || p.meta.outlier {
            continue;
        }
        queue.extend(p.prev_events.iter().cloned());
        out.push(p);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.depth));
    let mut pdus = Vec::with_capacity(out.len());
    for p in &out {
        pdus.push(pdu_for(hs, &origin, p).await?);
    }
    Ok(get_backfill::v1::Response::new(
        hs.owned_server_name(),
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(hs.now_ms())),
        pdus,
    ))
}
