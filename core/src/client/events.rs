//! Sending and reading room events: send, state, redact, `/event`, `/context`, `/messages`.

use std::collections::BTreeSet;
use std::rc::Rc;

use ruma::api::Direction as ApiDirection;
use ruma::api::client::context::get_context;
use ruma::api::client::filter::RoomEventFilter;
use ruma::api::client::message::{get_message_events, send_message_event};
use ruma::api::client::redact::redact_event;
use ruma::api::client::room::get_room_event;
use ruma::api::client::state::{get_state_event_for_key, get_state_events, send_state_event};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};

use super::{raw, tokens};
use crate::db::rooms::{self, Pdu};
use crate::error::{MatrixError, Result};
use crate::room::txn::{NewEvent, RoomTxn};
use crate::router::Router;
use crate::storage::Direction;
use crate::visibility::{self, RoomView};
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, send_message_event::v3::Request, send_message);
    route!(r, send_state_event::v3::Request, send_state);
    route!(r, get_state_events::v3::Request, get_state);
    route!(r, get_state_event_for_key::v3::Request, get_state_for_key);
    route!(r, redact_event::v3::Request, redact);
    route!(r, get_room_event::v3::Request, get_event);
    route!(r, get_context::v3::Request, context);
    route!(r, get_message_events::v3::Request, messages);
}

fn parse_content(raw_json: &str) -> Result<Value> {
    let v: Value =
        serde_json::from_str(raw_json).map_err(|e| MatrixError::not_json(e.to_string()))?;
    if !v.is_object() {
        return Err(MatrixError::bad_json("event content must be a JSON object"));
    }
    Ok(v)
}

async fn send_message(
    hs: &Homeserver,
    ctx: Ctx,
    req: send_message_event::v3::Request,
) -> Result<send_message_event::v3::Response> {
    let s = ctx.session()?;
    let event_type = req.event_type.to_string();
    let content = parse_content(req.body.json().get())?;
    if event_type == "m.room.redaction" {
        let target = content
            .get("redacts")
            .and_then(Value::as_str)
            .and_then(|s| OwnedEventId::try_from(s).ok())
            .ok_or_else(|| {
                MatrixError::bad_json("m.room.redaction needs `redacts` in its content")
            })?;
        let id = do_redact(
            hs,
            &s.user_id,
            s.device_id.as_str(),
            &req.room_id,
            &target,
            content,
            req.txn_id.as_str(),
        )
        .await?;
        return Ok(send_message_event::v3::Response::new(id));
    }
    let _lock = hs.write_lock().await;
    if let Some(id) =
        rooms::txn_event(hs, &s.user_id, s.device_id.as_str(), req.txn_id.as_str()).await?
    {
        return Ok(send_message_event::v3::Response::new(id));
    }
    let mut txn = RoomTxn::open(hs, &req.room_id)
        .await
        .map_err(forbidden_if_unknown)?;
    if txn.membership(&s.user_id).await? != Some(MembershipState::Join) {
        return Err(MatrixError::forbidden("you are not joined to this room"));
    }
    // Relation rules the spec puts on the sender's server (threads, duplicate annotations).
    super::relations::check_new_relation(hs, &s.user_id, &req.room_id, &event_type, &content)
        .await?;
    let ev = NewEvent::message(&s.user_id, &event_type, content)
        .with_txn(s.device_id.as_str(), req.txn_id.as_str());
    let pdu = txn.append(ev).await?;
    let id = pdu.event_id.clone();
    txn.commit().await?;
    Ok(send_message_event::v3::Response::new(id))
}

/// An unknown room looks the same as one you are not in, so as not to leak which exist.
fn forbidden_if_unknown(e: MatrixError) -> MatrixError {
    if e.errcode == "M_NOT_FOUND" {
        MatrixError::forbidden("you are not joined to this room")
    } else {
        e
    }
}

async fn send_state(
    hs: &Homeserver,
    ctx: Ctx,
    req: send_state_event::v3::Request,
) -> Result<send_state_event::v3::Response> {
    let user = ctx.user_id()?;
    let event_type = req.event_type.to_string();
    let content = parse_content(req.body.json().get())?;
    if event_type == "m.room.canonical_alias" {
        check_canonical_alias(hs, &req.room_id, &content).await?;
    }
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, &req.room_id)
        .await
        .map_err(forbidden_if_unknown)?;
    // Re-sending identical state is a no-op that returns the existing event, as in other
    // servers: clients retry state changes freely.
    if let Some(existing) = txn.state_event(&event_type, &req.state_key).await?
        && existing.content == content
        && existing.sender == *user
    {
        return Ok(send_state_event::v3::Response::new(
            existing.event_id.clone(),
        ));
    }
    let pdu = txn
        .append(NewEvent::state(user, &event_type, &req.state_key, content))
        .await?;
    let id = pdu.event_id.clone();
    txn.commit().await?;
    Ok(send_state_event::v3::Response::new(id))
}

/// `m.room.canonical_alias` may only name aliases that exist and point at this room.
async fn check_canonical_alias(hs: &Homeserver, room: &RoomId, content: &Value) -> Result<()> {
    let mut aliases = Vec::new();
    if let Some(a) = content.get("alias")
        && !a.is_null()
    {
        aliases.push(a.clone());
    }
    if let Some(alts) = content.get("alt_aliases") {
        let arr = alts
            .as_array()
            .ok_or_else(|| MatrixError::bad_json("alt_aliases must be an array"))?;
        aliases.extend(arr.iter().cloned());
    }
    for a in aliases {
        let s = a
            .as_str()
            .ok_or_else(|| MatrixError::bad_json("aliases must be strings"))?;
        let alias = ruma::OwnedRoomAliasId::try_from(s).map_err(|_| {
            MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                "M_BAD_ALIAS",
                format!("{s} is not a valid alias"),
            )
        })?;
        if alias.server_name() != hs.server_name() {
            continue;
        }
        let target = super::directory::resolve_local_alias(hs, &alias).await?;
        if target.as_deref() != Some(room) {
            return Err(MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                "M_BAD_ALIAS",
                format!("{alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

pub use crate::visibility::visible_upto;

async fn state_events_visible(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
) -> Result<Vec<Rc<Pdu>>> {
    match visible_upto(hs, user, room).await? {
        None => rooms::current_state_events(hs, room).await,
        Some(pos) => {
            let mut out = Vec::new();
            for id in rooms::state_at(hs, room, pos).await?.into_values() {
                if let Some(p) = rooms::get_pdu(hs, id.as_str()).await? {
                    out.push(p);
                }
            }
            Ok(out)
        }
    }
}

async fn get_state(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_state_events::v3::Request,
) -> Result<get_state_events::v3::Response> {
    let user = ctx.user_id()?;
    let now = hs.now_ms();
    let events = state_events_visible(hs, user, &req.room_id).await?;
    let room_state = events
        .iter()
        .map(|p| raw(&p.to_client(now, None)))
        .collect::<Result<Vec<_>>>()?;
    Ok(get_state_events::v3::Response::new(room_state))
}

async fn get_state_for_key(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_state_event_for_key::v3::Request,
) -> Result<get_state_event_for_key::v3::Response> {
    let user = ctx.user_id()?;
    let event_type = req.event_type.to_string();
    let pdu = match visible_upto(hs, user, &req.room_id).await? {
        None => rooms::state_event(hs, &req.room_id, &event_type, &req.state_key).await?,
        Some(pos) => {
            let state = rooms::state_at(hs, &req.room_id, pos).await?;
            match state.get(&(event_type.clone(), req.state_key.clone())) {
                Some(id) => rooms::get_pdu(hs, id.as_str()).await?,
                None => None,
            }
        }
    };
    let pdu =
        pdu.ok_or_else(|| MatrixError::not_found(format!("no {event_type} state with that key")))?;
    let value = match req.format {
        ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event => {
            pdu.to_client(hs.now_ms(), None)
        }
        _ => pdu.content.clone(),
    };
    Ok(get_state_event_for_key::v3::Response::new(
        serde_json::value::to_raw_value(&value)?,
    ))
}

async fn do_redact(
    hs: &Homeserver,
    user: &UserId,
    device: &str,
    room: &RoomId,
    target: &OwnedEventId,
    mut content: Value,
    txn_id: &str,
) -> Result<OwnedEventId> {
    let _lock = hs.write_lock().await;
    if let Some(id) = rooms::txn_event(hs, user, device, txn_id).await? {
        return Ok(id);
    }
    let mut txn = RoomTxn::open(hs, room)
        .await
        .map_err(forbidden_if_unknown)?;
    if txn.membership(user).await? != Some(MembershipState::Join) {
        return Err(MatrixError::forbidden("you are not joined to this room"));
    }
    let orig = rooms::get_pdu(hs, target.as_str())
        .await?
        .filter(|p| p.room_id == room)
        .ok_or_else(|| MatrixError::not_found("event not found in this room"))?;
    let pl = txn.power_levels().await?;
    if orig.sender != user && pl.user(user) < pl.redact() {
        return Err(MatrixError::forbidden(
            "you may only redact your own events without the redact power level",
        ));
    }
    content["redacts"] = json!(target);
    let mut ev = NewEvent::message(user, "m.room.redaction", content).with_txn(device, txn_id);
    ev.redacts = Some(target.clone());
    let pdu = txn.append(ev).await?;
    let id = pdu.event_id.clone();
    txn.commit().await?;
    Ok(id)
}

async fn redact(
    hs: &Homeserver,
    ctx: Ctx,
    req: redact_event::v3::Request,
) -> Result<redact_event::v3::Response> {
    let s = ctx.session()?;
    let mut content = json!({});
    if let Some(r) = &req.reason {
        content["reason"] = json!(r);
    }
    let id = do_redact(
        hs,
        &s.user_id,
        s.device_id.as_str(),
        &req.room_id,
        &req.event_id,
        content,
        req.txn_id.as_str(),
    )
    .await?;
    Ok(redact_event::v3::Response::new(id))
}

async fn get_event(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_room_event::v3::Request,
) -> Result<get_room_event::v3::Response> {
    let s = ctx.session()?;
    let not_found = || MatrixError::not_found("event not found");
    let pdu = rooms::get_pdu(hs, req.event_id.as_str())
        .await?
        .filter(|p| p.room_id == req.room_id)
        .ok_or_else(not_found)?;
    if !visibility::can_see(hs, &s.user_id, &pdu).await? {
        return Err(not_found());
    }
    let mut v = pdu.to_client(hs.now_ms(), Some((&s.user_id, s.device_id.as_str())));
    // Bundled aggregations (edits, threads, references), as the spec asks of served events.
    super::relations::bundle(hs, &s.user_id, std::slice::from_mut(&mut v)).await?;
    Ok(get_room_event::v3::Response::new(raw(&v)?))
}

/// Whether an event passes a room event filter's type, sender and URL conditions.
pub fn filter_matches(f: &RoomEventFilter, pdu: &Pdu) -> bool {
    let type_match = |pat: &String| {
        pat == &pdu.event_type
            || (pat.ends_with('*') && pdu.event_type.starts_with(&pat[..pat.len() - 1]))
    };
    if f.not_types.iter().any(type_match) {
        return false;
    }
    if f.types
        .as_ref()
        .is_some_and(|types| !types.iter().any(type_match))
    {
        return false;
    }
    if f.not_senders.contains(&pdu.sender)
        || f.senders.as_ref().is_some_and(|s| !s.contains(&pdu.sender))
    {
        return false;
    }
    if f.not_rooms.contains(&pdu.room_id)
        || f.rooms.as_ref().is_some_and(|r| !r.contains(&pdu.room_id))
    {
        return false;
    }
    if let Some(url) = &f.url_filter {
        let has_url = pdu.content.get("url").is_some_and(Value::is_string);
        let want = matches!(url, ruma::api::client::filter::UrlFilter::EventsWithUrl);
        if has_url != want {
            return false;
        }
    }
    true
}

/// Member events for the senders of `events` at the room's current (or capped) state, for
/// lazy-loading clients.
async fn member_state_for(
    hs: &Homeserver,
    room: &RoomId,
    events: &[Rc<Pdu>],
    upto: Option<u64>,
) -> Result<Vec<Rc<Pdu>>> {
    let senders: BTreeSet<&UserId> = events.iter().map(|p| &*p.sender).collect();
    let mut out = Vec::new();
    let capped = match upto {
        Some(pos) => Some(rooms::state_at(hs, room, pos).await?),
        None => None,
    };
    for s in senders {
        let pdu = match &capped {
            Some(state) => match state.get(&("m.room.member".to_owned(), s.to_string())) {
                Some(id) => rooms::get_pdu(hs, id.as_str()).await?,
                None => None,
            },
            None => rooms::state_event(hs, room, "m.room.member", s.as_str()).await?,
        };
        if let Some(p) = pdu {
            out.push(p);
        }
    }
    Ok(out)
}

async fn context(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_context::v3::Request,
) -> Result<get_context::v3::Response> {
    let s = ctx.session()?;
    let viewer = Some((&*s.user_id, s.device_id.as_str()));
    let not_found = || MatrixError::not_found("event not found");
    let pdu = rooms::get_pdu(hs, req.event_id.as_str())
        .await?
        .filter(|p| p.room_id == req.room_id)
        .ok_or_else(not_found)?;
    let view = RoomView::load(hs, &s.user_id, &req.room_id).await?;
    if !view.allows(&pdu) {
        return Err(not_found());
    }
    let upto = visible_upto(hs, &s.user_id, &req.room_id)
        .await
        .ok()
        .flatten()
        .unwrap_or(u64::MAX);
    let limit = u64::from(req.limit).min(100) as usize;
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let mut before = Vec::new();
    let mut cursor = pdu.pos;
    // Walk outwards, skipping what the filter or history visibility hides.
    while before.len() < before_n {
        let Some(top) = view.candidate_at_or_below(cursor.saturating_sub(1)) else {
            break;
        };
        let batch = rooms::timeline_events(
            hs,
            &req.room_id,
            0,
            top,
            Direction::Backward,
            before_n * 2 + 1,
        )
        .await?;
        let Some(last) = batch.last() else { break };
        cursor = last.pos;
        for p in batch {
            if before.len() < before_n && filter_matches(&req.filter, &p) && view.allows(&p) {
                before.push(p);
            }
        }
    }
    let mut after = Vec::new();
    let mut cursor = pdu.pos;
    while after.len() < after_n {
        let top = hs.current_pos().min(upto);
        let Some(bottom) = view.candidate_at_or_above(cursor + 1) else {
            break;
        };
        let batch = rooms::timeline_events(
            hs,
            &req.room_id,
            bottom - 1,
            top,
            Direction::Forward,
            after_n * 2 + 1,
        )
        .await?;
        let Some(last) = batch.last() else { break };
        cursor = last.pos;
        for p in batch {
            if after.len() < after_n && filter_matches(&req.filter, &p) && view.allows(&p) {
                after.push(p);
            }
        }
    }
    let start_pos = before
        .last()
        .map(|p| p.pos.saturating_sub(1))
        .unwrap_or(pdu.pos.saturating_sub(1));
    let end_pos = after.last().map(|p| p.pos).unwrap_or(pdu.pos);
    let now = hs.now_ms();
    let state_events = if !req.filter.lazy_load_options.is_disabled() {
        let mut all: Vec<Rc<Pdu>> = before.iter().chain(after.iter()).cloned().collect();
        all.push(pdu.clone());
        member_state_for(hs, &req.room_id, &all, Some(end_pos)).await?
    } else {
        let mut out = Vec::new();
        for id in rooms::state_at(hs, &req.room_id, end_pos)
            .await?
            .into_values()
        {
            if let Some(p) = rooms::get_pdu(hs, id.as_str()).await? {
                out.push(p);
            }
        }
        out
    };
    let mut resp = get_context::v3::Response::new();
    resp.start = Some(tokens::format(start_pos));
    resp.end = Some(tokens::format(end_pos));
    // Served events carry their bundled aggregations (edits, threads, references).
    let mut event = pdu.to_client(now, viewer);
    let mut events_before: Vec<Value> = before.iter().map(|p| p.to_client(now, viewer)).collect();
    let mut events_after: Vec<Value> = after.iter().map(|p| p.to_client(now, viewer)).collect();
    super::relations::bundle(hs, &s.user_id, std::slice::from_mut(&mut event)).await?;
    super::relations::bundle(hs, &s.user_id, &mut events_before).await?;
    super::relations::bundle(hs, &s.user_id, &mut events_after).await?;
    resp.event = Some(raw(&event)?);
    resp.events_before = events_before.iter().map(raw).collect::<Result<_>>()?;
    resp.events_after = events_after.iter().map(raw).collect::<Result<_>>()?;
    resp.state = state_events
        .iter()
        .map(|p| raw(&p.to_client(now, None)))
        .collect::<Result<_>>()?;
    Ok(resp)
}

async fn messages(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_message_events::v3::Request,
) -> Result<get_message_events::v3::Response> {
    let s = ctx.session()?;
    let viewer = Some((&*s.user_id, s.device_id.as_str()));
    let upto = visible_upto(hs, &s.user_id, &req.room_id)
        .await?
        .unwrap_or(u64::MAX);
    let limit = (u64::from(req.limit).clamp(1, 1000)) as usize;
    let limit = req
        .filter
        .limit
        .map(|l| (u64::from(l) as usize).clamp(1, limit))
        .unwrap_or(limit);
    let head = hs.current_pos().min(upto);
    let from = match &req.from {
        Some(t) => tokens::parse(t)?,
        None => match req.dir {
            ApiDirection::Backward => head,
            _ => 0,
        },
    };
    let to = match &req.to {
        Some(t) => Some(tokens::parse(t)?),
        None => None,
    };
    let view = RoomView::load(hs, &s.user_id, &req.room_id).await?;
    let mut chunk = Vec::new();
    let mut cursor = from;
    let mut exhausted = false;
    // Scan in pages until `limit` visible, matching events are found or the range ends,
    // skipping without reads what history visibility hides. Going back past the first event
    // this server has of a room it joined over federation asks a server in the room for the
    // history before it (backfill), once per request.
    let mut backfilled = false;
    loop {
        while chunk.len() < limit {
            let page = match req.dir {
                ApiDirection::Backward => {
                    let low = to.unwrap_or(0);
                    match view.candidate_at_or_below(cursor) {
                        Some(c) if c > low => cursor = c,
                        _ => {
                            cursor = low;
                            exhausted = true;
                            break;
                        }
                    }
                    rooms::timeline_range(
                        hs,
                        &req.room_id,
                        low,
                        cursor.min(head),
                        Direction::Backward,
                        limit * 2,
                    )
                    .await?
                }
                _ => {
                    let high = to.unwrap_or(head).min(head);
                    match view.candidate_at_or_above(cursor + 1) {
                        Some(c) if c <= high => cursor = c - 1,
                        _ => {
                            cursor = high.max(cursor);
                            exhausted = true;
                            break;
                        }
                    }
                    rooms::timeline_range(
                        hs,
                        &req.room_id,
                        cursor,
                        high,
                        Direction::Forward,
                        limit * 2,
                    )
                    .await?
                }
            };
            if page.is_empty() {
                exhausted = true;
                break;
            }
            for (pos, id) in page {
                if chunk.len() >= limit {
                    break;
                }
                cursor = match req.dir {
                    ApiDirection::Backward => pos - 1,
                    _ => pos,
                };
                let Some(p) = rooms::get_pdu(hs, id.as_str()).await? else {
                    continue;
                };
                if filter_matches(&req.filter, &p) && view.allows(&p) {
                    chunk.push(p);
                }
            }
        }
        if matches!(req.dir, ApiDirection::Backward)
            && exhausted
            && chunk.len() < limit
            && to.is_none()
            && !backfilled
        {
            backfilled = true;
            match crate::room::backfill::backfill(hs, &req.room_id, limit - chunk.len()).await {
                Ok(Some(resume)) => {
                    cursor = resume;
                    exhausted = false;
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::info!(room = %req.room_id, error = %e, "backfill failed"),
            }
        }
        break;
    }
    let now = hs.now_ms();
    let mut resp = get_message_events::v3::Response::new();
    resp.start = tokens::format(from);
    resp.end = if exhausted && chunk.len() < limit {
        None
    } else {
        Some(tokens::format(cursor))
    };
    if !req.filter.lazy_load_options.is_disabled() {
        let members =
            member_state_for(hs, &req.room_id, &chunk, (upto != u64::MAX).then_some(upto)).await?;
        resp.state = members
            .iter()
            .map(|p| raw(&p.to_client(now, None)))
            .collect::<Result<_>>()?;
    }
    // Served events carry their bundled aggregations (edits, threads, references).
    let mut events: Vec<Value> = chunk.iter().map(|p| p.to_client(now, viewer)).collect();
    super::relations::bundle(hs, &s.user_id, &mut events).await?;
    resp.chunk = events.iter().map(raw).collect::<Result<_>>()?;
    Ok(resp)
}
