//! Room lookups beside the timeline: `GET /rooms/{roomId}/timestamp_to_event` (jump to a date)
//! and `GET /mutual_rooms` (the rooms two users share).

use std::collections::BTreeSet;

use ruma::api::Direction as ApiDirection;
use ruma::api::client::membership::get_mutual_rooms;
use ruma::api::client::room::get_event_by_timestamp;
use ruma::events::room::member::MembershipState;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId, UInt, UserId};

use crate::client::events::visible_upto;
use crate::db::rooms;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Direction;
use crate::{Ctx, Homeserver, route};

/// Events read per storage scan while looking for a timestamp.
const SCAN_PAGE: usize = 256;

/// Rooms per page of `/mutual_rooms`.
pub const MUTUAL_ROOMS_PAGE: usize = 50;

pub fn routes(r: &mut Router) {
    route!(r, get_event_by_timestamp::v1::Request, timestamp_to_event);
    route!(r, get_mutual_rooms::v1::Request, mutual_rooms);
    route!(
        r,
        get_mutual_rooms::unstable::Request,
        mutual_rooms_unstable
    );
}

/// The event closest to `ts` in direction `dir` that the caller may see: for `f` the earliest
/// event at or after `ts`, for `b` the latest at or before it. Timestamps come from the events'
/// senders and need not grow with the timeline, so every event of the visible range is
/// considered rather than stopping at the first one past `ts`; there is no timestamp index,
/// which is fine for the room sizes this server holds.
async fn timestamp_to_event(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_event_by_timestamp::v1::Request,
) -> Result<get_event_by_timestamp::v1::Response> {
    let user = ctx.user_id()?;
    let forward = matches!(req.dir, ApiDirection::Forward);
    let target = u64::from(req.ts.0);
    let upto = visible_upto(hs, user, &req.room_id)
        .await?
        .unwrap_or(u64::MAX);
    let head = hs.current_pos().min(upto);

    // (timestamp, position, id) of every event on the asked side of `ts`.
    let mut candidates: Vec<(u64, u64, OwnedEventId)> = Vec::new();
    let mut cursor = 0;
    loop {
        let page = rooms::timeline_range(
            hs,
            &req.room_id,
            cursor,
            head,
            Direction::Forward,
            SCAN_PAGE,
        )
        .await?;
        let Some((last, _)) = page.last() else { break };
        cursor = *last;
        for (pos, id) in page {
            let Some(pdu) = rooms::get_pdu(hs, id.as_str()).await? else {
                continue;
            };
            let ts = pdu.origin_server_ts;
            if (forward && ts >= target) || (!forward && ts <= target) {
                candidates.push((ts, pos, id));
            }
        }
    }
    // Closest first; among equal timestamps, the first one met going in `dir`.
    if forward {
        candidates.sort_unstable_by_key(|(ts, pos, _)| (*ts, *pos));
    } else {
        candidates
            .sort_unstable_by_key(|(ts, pos, _)| (std::cmp::Reverse(*ts), std::cmp::Reverse(*pos)));
    }
    let view = crate::visibility::RoomView::load(hs, user, &req.room_id).await?;
    for (ts, _, id) in candidates {
        let Some(pdu) = rooms::get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        if view.allows(&pdu) {
            return Ok(get_event_by_timestamp::v1::Response::new(
                id,
                MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)),
            ));
        }
    }
    Err(MatrixError::not_found(format!(
        "unable to find an event from {target} in the {} direction",
        if forward { "forward" } else { "backward" }
    )))
}

/// One page of the rooms both users are joined to, in room id order, the total count, and
/// the token of the next page. The token is the last room id of the page.
async fn shared_rooms_page(
    hs: &Homeserver,
    user: &UserId,
    other: &UserId,
    from: Option<&str>,
) -> Result<(Vec<OwnedRoomId>, usize, Option<String>)> {
    if other == user {
        return Err(MatrixError::invalid_param(
            "user_id must be another user than yourself",
        ));
    }
    let after = from
        .map(|t| {
            RoomId::parse(t)
                .map_err(|_| MatrixError::invalid_param(format!("invalid from token {t:?}")))
        })
        .transpose()?;
    let mine: BTreeSet<OwnedRoomId> = rooms::joined_rooms(hs, user).await?.into_iter().collect();
    let shared: Vec<OwnedRoomId> = rooms::rooms_for_user(hs, other)
        .await?
        .into_iter()
        .filter(|(room, m)| *m == MembershipState::Join && mine.contains(room))
        .map(|(room, _)| room)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let count = shared.len();
    let rest: Vec<OwnedRoomId> = match &after {
        Some(a) => shared.into_iter().filter(|r| r > a).collect(),
        None => shared,
    };
    let more = rest.len() > MUTUAL_ROOMS_PAGE;
    let page: Vec<OwnedRoomId> = rest.into_iter().take(MUTUAL_ROOMS_PAGE).collect();
    let next = if more {
        page.last().map(|r| r.to_string())
    } else {
        None
    };
    Ok((page, count, next))
}

async fn mutual_rooms(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_mutual_rooms::v1::Request,
) -> Result<get_mutual_rooms::v1::Response> {
    let (joined, count, next) =
        shared_rooms_page(hs, ctx.user_id()?, &req.user_id, req.from.as_deref()).await?;
    let mut resp = get_mutual_rooms::v1::Response::new(UInt::new_saturating(count as u64), joined);
    resp.next_batch = next;
    Ok(resp)
}

/// MSC2666's unstable path, which clients use before servers advertise the stable one.
async fn mutual_rooms_unstable(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_mutual_rooms::unstable::Request,
) -> Result<get_mutual_rooms::unstable::Response> {
    let (joined, _, next) =
        shared_rooms_page(hs, ctx.user_id()?, &req.user_id, req.from.as_deref()).await?;
    let mut resp = get_mutual_rooms::unstable::Response::new(joined);
    resp.next_batch = next;
    Ok(resp)
}
