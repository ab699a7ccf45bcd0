//! Typing notifications: `PUT /rooms/{roomId}/typing/{userId}` and the `m.typing` ephemeral
//! event `/sync` delivers.
//!
//! Typing is ephemeral, so it lives in memory only (a restart forgets who was typing, which is
//! what clients expect of a 30-second hint). Every change of a room's typing set takes a stream
//! position and commits it, which wakes long-polling syncs.
//!
//! Expiry is lazy: the core has no spawner to run a timer task, so nothing fires when a notice
//! times out. Instead [`next_expiry_ms`] tells `/sync` when the earliest notice expires, so a
//! long-poll can cap its wait there; when it wakes and calls [`typing_since`], expired notices
//! are dropped under a fresh stream position, which also wakes every other waiting sync.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use ruma::api::client::typing::create_typing_event::v3::{Request, Response, Typing};
use ruma::events::AnySyncEphemeralRoomEvent;
use ruma::events::room::member::MembershipState;
use ruma::events::typing::TypingEventContent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use crate::client::push::route_filled;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver};

/// The timeout used when a client says it is typing without saying for how long.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Longest a single notice may last; clients re-send while the user keeps typing.
pub const MAX_TIMEOUT_MS: u64 = 120_000;

/// Who is typing where. Held in [`crate::db::Caches`].
#[derive(Debug, Default)]
pub struct TypingState {
    rooms: RefCell<HashMap<OwnedRoomId, RoomTyping>>,
}

#[derive(Debug, Default)]
struct RoomTyping {
    /// Typing users and when their notice expires (ms since the epoch).
    users: BTreeMap<OwnedUserId, u64>,
    /// Stream position of the last change of `users`.
    changed_pos: u64,
}

impl RoomTyping {
    fn has_expired(&self, now: u64) -> bool {
        self.users.values().any(|until| *until <= now)
    }
}

pub fn routes(r: &mut Router) {
    route_filled::<Request, _, _>(r, default_timeout, |hs, ctx, req| async move {
        set_typing(&hs, ctx, req).await
    });
}

/// The spec lets `timeout` be omitted only when `typing` is false; we also accept it missing
/// when `typing` is true and use [`DEFAULT_TIMEOUT_MS`].
fn default_timeout(body: &mut serde_json::Map<String, Value>) -> Result<()> {
    if body.get("typing") == Some(&Value::Bool(true)) && !body.contains_key("timeout") {
        body.insert("timeout".into(), json!(DEFAULT_TIMEOUT_MS));
    }
    Ok(())
}

async fn set_typing(hs: &Homeserver, ctx: Ctx, req: Request) -> Result<Response> {
    if ctx.user_id()? != &req.user_id {
        return Err(MatrixError::forbidden(
            "cannot set the typing state of another user",
        ));
    }
    if crate::db::rooms::membership(hs, &req.room_id, &req.user_id).await?
        != Some(MembershipState::Join)
    {
        return Err(MatrixError::forbidden("you are not joined to this room"));
    }
    let until = match req.state {
        Typing::Yes(info) => {
            let ms = u64::try_from(info.timeout.as_millis())
                .unwrap_or(u64::MAX)
                .min(MAX_TIMEOUT_MS);
            Some(hs.now_ms().saturating_add(ms))
        }
        Typing::No => None,
    };
    set(hs, &req.room_id, &req.user_id, until).await?;
    // Other servers in the room hear of it too.
    let servers = crate::federation::events::servers_in_room(hs, &req.room_id).await?;
    if !servers.is_empty() {
        let edu = json!({
            "edu_type": "m.typing",
            "content": {
                "room_id": req.room_id,
                "user_id": req.user_id,
                "typing": until.is_some(),
            },
        });
        crate::federation::outbox::send_edu(hs, servers.iter().map(|s| &**s), edu).await?;
    }
    Ok(Response::new())
}

/// Marks `user` as typing in `room` until `until` (ms since the epoch), or as not typing.
/// Also used for typing notices arriving over federation.
pub async fn set(hs: &Homeserver, room: &RoomId, user: &UserId, until: Option<u64>) -> Result<()> {
    let _g = hs.write_lock().await;
    let now = hs.now_ms();
    let changed = {
        let mut rooms = hs.caches.typing.rooms.borrow_mut();
        let rt = rooms.entry(room.to_owned()).or_default();
        let before = rt.users.len();
        rt.users.retain(|_, t| *t > now);
        let expired = rt.users.len() != before;
        let changed = match until {
            Some(t) => rt.users.insert(user.to_owned(), t).is_none() || expired,
            None => rt.users.remove(user).is_some() || expired,
        };
        if changed {
            rt.changed_pos = hs.alloc_pos();
        }
        changed
    };
    if changed {
        hs.commit(Batch::new()).await?;
    }
    Ok(())
}

/// Drops expired notices in every room, under a new stream position when any expired.
async fn purge_expired(hs: &Homeserver) -> Result<()> {
    let now = hs.now_ms();
    if !hs
        .caches
        .typing
        .rooms
        .borrow()
        .values()
        .any(|rt| rt.has_expired(now))
    {
        return Ok(());
    }
    let _g = hs.write_lock().await;
    let now = hs.now_ms();
    let changed = {
        let mut rooms = hs.caches.typing.rooms.borrow_mut();
        let mut pos = None;
        for rt in rooms.values_mut().filter(|rt| rt.has_expired(now)) {
            rt.users.retain(|_, t| *t > now);
            rt.changed_pos = *pos.get_or_insert_with(|| hs.alloc_pos());
        }
        pos.is_some()
    };
    if changed {
        hs.commit(Batch::new()).await?;
    }
    Ok(())
}

/// The room's full `m.typing` event when its typing set changed after `since`, or — for an
/// initial sync (`since == 0`) — when anyone is typing. Do not call with the write lock held.
pub async fn typing_since(
    hs: &Homeserver,
    room: &RoomId,
    since: u64,
) -> Result<Option<Raw<AnySyncEphemeralRoomEvent>>> {
    purge_expired(hs).await?;
    let now = hs.now_ms();
    let users: Vec<OwnedUserId> = {
        let rooms = hs.caches.typing.rooms.borrow();
        let Some(rt) = rooms.get(room) else {
            return Ok(None);
        };
        let users: Vec<OwnedUserId> = rt
            .users
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(u, _)| u.clone())
            .collect();
        let report = if since == 0 {
            !users.is_empty()
        } else {
            rt.changed_pos > since
        };
        if !report {
            return Ok(None);
        }
        users
    };
    let event = json!({ "type": "m.typing", "content": TypingEventContent::new(users) });
    Ok(Some(Raw::from_json(serde_json::value::to_raw_value(
        &event,
    )?)))
}

/// When the earliest pending typing notice expires (ms since the epoch), if any is pending.
/// A long-polling `/sync` should wake up by then so the expiry reaches its client.
pub fn next_expiry_ms(hs: &Homeserver) -> Option<u64> {
    let now = hs.now_ms();
    hs.caches
        .typing
        .rooms
        .borrow()
        .values()
        .flat_map(|rt| rt.users.values().copied())
        .filter(|t| *t > now)
        .min()
}

/// Users currently typing in `room` (for federation and tests).
pub fn typing_users(hs: &Homeserver, room: &RoomId) -> Vec<OwnedUserId> {
    let now = hs.now_ms();
    hs.caches
        .typing
        .rooms
        .borrow()
        .get(room)
        .map(|rt| {
            rt.users
                .iter()
                .filter(|(_, t)| **t > now)
                .map(|(u, _)| u.clone())
                .collect()
        })
        .unwrap_or_default()
}
