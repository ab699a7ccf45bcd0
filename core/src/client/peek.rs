//! Peeking without joining: `GET /rooms/{roomId}/initialSync` and `GET /events?room_id=`,
//! for members and, in `world_readable` rooms, for anyone.

use std::time::Duration;

use futures::FutureExt;
use ruma::api::client::peeking::{get_current_state, listen_to_new_events};
use ruma::events::room::member::MembershipState;
use ruma::{RoomId, UserId};

use super::events::visible_upto;
use super::{account_data, raw, tokens};
use crate::db::rooms;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Direction;
use crate::visibility::{RoomView, world_readable};
use crate::{Ctx, Homeserver, route};

/// Events in an initial-sync page.
const INITIAL_SYNC_LIMIT: usize = 20;
/// Longest wait of `/events`, as for `/sync`.
const MAX_TIMEOUT_MS: u64 = 280_000;

pub fn routes(r: &mut Router) {
    route!(r, get_current_state::v3::Request, initial_sync);
    route!(r, listen_to_new_events::v3::Request, events);
}

async fn initial_sync(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_current_state::v3::Request,
) -> Result<get_current_state::v3::Response> {
    let user = ctx.user_id()?;
    let room = &req.room_id;
    let upto = visible_upto(hs, user, room)
        .await?
        .unwrap_or_else(|| hs.current_pos());
    let now = hs.now_ms();
    let membership = rooms::membership(hs, room, user).await?;
    let view = RoomView::load(hs, user, room).await?;
    let mut events = Vec::new();
    for p in rooms::timeline_events(
        hs,
        room,
        0,
        upto,
        Direction::Backward,
        INITIAL_SYNC_LIMIT * 4,
    )
    .await?
    {
        if events.len() == INITIAL_SYNC_LIMIT {
            break;
        }
        if view.allows(&p) {
            events.push(p);
        }
    }
    events.reverse();
    let start = events
        .first()
        .map(|p| p.pos.saturating_sub(1))
        .unwrap_or(upto);
    let chunk = events
        .iter()
        .map(|p| raw(&p.to_client(now, None)))
        .collect::<Result<Vec<_>>>()?;
    let mut messages = get_current_state::v3::PaginationChunk::new(chunk, tokens::format(upto));
    messages.start = Some(tokens::format(start));
    let mut state = Vec::new();
    for id in rooms::state_at(hs, room, upto).await?.into_values() {
        if let Some(p) = rooms::get_pdu(hs, id.as_str()).await? {
            state.push(raw(&p.to_client(now, None))?);
        }
    }
    let mut resp = get_current_state::v3::Response::new(room.clone());
    resp.membership = membership;
    resp.messages = Some(messages);
    resp.state = state;
    resp.visibility = Some(if super::directory::is_published(hs, room).await? {
        ruma::api::client::room::Visibility::Public
    } else {
        ruma::api::client::room::Visibility::Private
    });
    if rooms::membership(hs, room, user).await? == Some(MembershipState::Join) {
        let (_, per_room) = account_data::account_data_since(hs, user, 0).await?;
        resp.account_data = per_room.get(room).cloned().unwrap_or_default();
    }
    Ok(resp)
}

async fn may_peek(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<()> {
    let joined = rooms::membership(hs, room, user).await? == Some(MembershipState::Join);
    if joined || world_readable(hs, room).await? {
        Ok(())
    } else {
        Err(MatrixError::forbidden("you may not peek into this room"))
    }
}

async fn events(
    hs: &Homeserver,
    ctx: Ctx,
    req: listen_to_new_events::v3::Request,
) -> Result<listen_to_new_events::v3::Response> {
    let user = ctx.user_id()?.clone();
    if rooms::room_record(hs, &req.room_id).await?.is_none() {
        return Err(MatrixError::forbidden("you may not peek into this room"));
    }
    may_peek(hs, &user, &req.room_id).await?;
    let from = match &req.from {
        Some(t) => tokens::parse(t)?,
        None => hs.current_pos(),
    };
    let timeout = req
        .timeout
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .min(MAX_TIMEOUT_MS as u128) as u64;
    let deadline = hs.now_ms() + timeout;
    loop {
        let generation = hs.notifier.generation();
        let upto = hs.current_pos();
        let now = hs.now_ms();
        const PAGE: usize = 100;
        let page =
            rooms::timeline_events(hs, &req.room_id, from, upto, Direction::Forward, PAGE).await?;
        // A full page ends at its last event; otherwise everything up to `upto` was seen.
        let end = if page.len() == PAGE {
            page.last().map_or(upto, |p| p.pos)
        } else {
            upto
        };
        let mut chunk = Vec::new();
        let view = RoomView::load(hs, &user, &req.room_id).await?;
        for p in &page {
            if view.allows(p) {
                chunk.push(raw(&p.to_client(now, None))?);
            }
        }
        if !chunk.is_empty() || now >= deadline {
            let mut resp = listen_to_new_events::v3::Response::new();
            resp.start = Some(tokens::format(from));
            resp.end = Some(tokens::format(end));
            resp.chunk = chunk;
            return Ok(resp);
        }
        let sleep = hs
            .world
            .sleep(Duration::from_millis(deadline.saturating_sub(now)));
        futures::select! {
            _ = hs.notifier.changed_since(generation).fuse() => {},
            _ = sleep.fuse() => {},
        }
    }
}
