//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`,
//! `POST /rooms/{roomId}/read_markers`, and the `m.receipt` ephemeral event of `/sync`.
//!
//! Layout (`receipts` tree):
//! - `l`, room, receipt type, user, thread → [`ReceiptRecord`]: each user's latest receipt
//! - `s`, room, pos → [`ReceiptRecord`]: the same receipts by stream position; a receipt that is
//!   replaced loses its entry, so the stream holds exactly the latest receipts
//!
//! `m.fully_read` is not a receipt but the room account data of that type. Receipts and
//! markers only move forward: one pointing at an older event than the current one is ignored.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use ruma::api::client::read_marker::set_read_marker;
use ruma::api::client::receipt::create_receipt;
use ruma::events::AnySyncEphemeralRoomEvent;
use ruma::events::receipt::{Receipt, ReceiptEventContent, ReceiptThread, ReceiptType};
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedUserId, RoomId, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client::account_data;
use crate::db::rooms::{Pdu, get_pdu};
use crate::db::{from_json, key, pos_bytes, prefix, to_json};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::{Batch, Direction, KeyRange, prefix_successor};
use crate::{Ctx, Homeserver, route};

pub const FULLY_READ: &str = "m.fully_read";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub receipt_type: String,
    pub user_id: OwnedUserId,
    pub event_id: OwnedEventId,
    /// Timeline position of the receipted event, for ordering and unread counts.
    pub event_pos: u64,
    pub ts: u64,
    /// `None` for an unthreaded receipt, else `main` or the thread root's event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// Stream position of this receipt.
    pub pos: u64,
}

/// What one request asks to move.
enum Marker {
    Receipt(ReceiptType),
    FullyRead,
}

struct Planned {
    marker: Marker,
    pdu: Rc<Pdu>,
    thread: ReceiptThread,
}

pub fn routes(r: &mut Router) {
    route!(r, create_receipt::v3::Request, post_receipt);
    route!(r, set_read_marker::v3::Request, post_read_markers);
}

fn latest_key(room: &RoomId, receipt_type: &str, user: &UserId, thread: Option<&str>) -> Vec<u8> {
    key(&[
        b"l",
        room.as_bytes(),
        receipt_type.as_bytes(),
        user.as_bytes(),
        thread.unwrap_or_default().as_bytes(),
    ])
}

fn stream_key(room: &RoomId, pos: u64) -> Vec<u8> {
    key(&[b"s", room.as_bytes(), &pos_bytes(pos)])
}

/// The latest receipt of one type (unthreaded when `thread` is `None`).
pub async fn latest(
    hs: &Homeserver,
    room: &RoomId,
    receipt_type: &ReceiptType,
    user: &UserId,
    thread: Option<&str>,
) -> Result<Option<ReceiptRecord>> {
    hs.get_json(
        "receipts",
        &latest_key(room, receipt_type.as_str(), user, thread),
    )
    .await
}

/// Timeline position up to which `user` has read `room`: the furthest of their unthreaded and
/// main-timeline `m.read` / `m.read.private` receipts (0 when there are none).
pub async fn read_up_to(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<u64> {
    let mut best = 0;
    for rt in [ReceiptType::Read, ReceiptType::ReadPrivate] {
        for thread in [None, Some("main")] {
            if let Some(rec) = latest(hs, room, &rt, user, thread).await? {
                best = best.max(rec.event_pos);
            }
        }
    }
    Ok(best)
}

/// The room's `m.receipt` event with the receipts sent after `since` (all when `since` is 0).
/// Private receipts are only shown to their owner.
pub async fn receipts_since(
    hs: &Homeserver,
    viewer: &UserId,
    room: &RoomId,
    since: u64,
) -> Result<Option<Raw<AnySyncEphemeralRoomEvent>>> {
    if !hs.changes.tree_changed_since("receipts", since) {
        return Ok(None);
    }
    let room_prefix = prefix(&[b"s", room.as_bytes()]);
    let end = match prefix_successor(&room_prefix) {
        Some(e) => Bound::Excluded(e),
        None => Bound::Unbounded,
    };
    let start = Bound::Included(stream_key(room, since.saturating_add(1)));
    let rows = hs
        .store
        .scan(
            "receipts",
            KeyRange::new(start, end),
            Direction::Forward,
            usize::MAX,
        )
        .await?;
    let mut content = ReceiptEventContent(BTreeMap::new());
    for (_, v) in rows {
        let rec: ReceiptRecord = from_json(&v)?;
        let receipt_type = ReceiptType::from(rec.receipt_type.as_str());
        if receipt_type == ReceiptType::ReadPrivate && rec.user_id != viewer {
            continue;
        }
        let mut receipt = Receipt::new(MilliSecondsSinceUnixEpoch(UInt::new_saturating(rec.ts)));
        receipt.thread = ReceiptThread::try_from(rec.thread.as_deref()).unwrap_or_default();
        content
            .entry(rec.event_id)
            .or_default()
            .entry(receipt_type)
            .or_default()
            .insert(rec.user_id, receipt);
    }
    if content.is_empty() {
        return Ok(None);
    }
    let event = json!({ "type": "m.receipt", "content": content });
    Ok(Some(Raw::from_json(serde_json::value::to_raw_value(
        &event,
    )?)))
}

/// Checks that `event_id` is an event of `room` and that `thread` fits the marker and event.
async fn plan(
    hs: &Homeserver,
    room: &RoomId,
    marker: Marker,
    event_id: &EventId,
    thread: ReceiptThread,
) -> Result<Planned> {
    let pdu = get_pdu(hs, event_id.as_str())
        .await?
        .filter(|p| p.room_id == room)
        .ok_or_else(|| MatrixError::not_found("event not found in this room"))?;
    match (&marker, &thread) {
        (Marker::FullyRead, ReceiptThread::Unthreaded) => {}
        (Marker::FullyRead, _) => {
            return Err(MatrixError::invalid_param(
                "thread_id cannot be given for m.fully_read",
            ));
        }
        (_, ReceiptThread::Unthreaded | ReceiptThread::Main) => {}
        (_, ReceiptThread::Thread(root)) => {
            if pdu.event_id != *root && thread_root(&pdu).as_deref() != Some(root.as_str()) {
                return Err(MatrixError::invalid_param(
                    "the event is not part of the thread given as thread_id",
                ));
            }
        }
        _ => {
            return Err(MatrixError::invalid_param(
                "thread_id must be \"main\" or a thread root's event id",
            ));
        }
    }
    Ok(Planned {
        marker,
        pdu,
        thread,
    })
}

/// The root of the thread an event belongs to, from its `m.thread` relation.
fn thread_root(pdu: &Pdu) -> Option<String> {
    let rel = pdu.content.get("m.relates_to")?;
    if rel.get("rel_type")?.as_str()? != "m.thread" {
        return None;
    }
    rel.get("event_id")?.as_str().map(str::to_owned)
}

async fn check_joined(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<()> {
    if crate::db::rooms::membership(hs, room, user).await? != Some(MembershipState::Join) {
        return Err(MatrixError::forbidden("you are not joined to this room"));
    }
    Ok(())
}

/// Timeline position of the event the user's read marker points at.
async fn fully_read_pos(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<Option<u64>> {
    let Some(content) = account_data::get(hs, user, Some(room), FULLY_READ).await? else {
        return Ok(None);
    };
    let Some(id) = content.get("event_id").and_then(Value::as_str) else {
        return Ok(None);
    };
    Ok(get_pdu(hs, id).await?.map(|p| p.pos))
}

/// Tells the other servers in the room of a public read receipt (`m.receipt` EDU).
async fn send_to_servers(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    event: &EventId,
    thread: Option<&str>,
) -> Result<()> {
    let servers = crate::federation::events::servers_in_room(hs, room).await?;
    if servers.is_empty() {
        return Ok(());
    }
    let mut data = json!({ "ts": hs.now_ms() });
    if let Some(t) = thread {
        data["thread_id"] = json!(t);
    }
    let edu = json!({
        "edu_type": "m.receipt",
        "content": { room.as_str(): { "m.read": { user.as_str(): {
            "event_ids": [event],
            "data": data,
        } } } },
    });
    crate::federation::outbox::send_edu(hs, servers.iter().map(|s| &**s), edu).await
}

/// Receipts from an `m.receipt` EDU: for users of `origin`, in rooms they are joined to, on
/// events this server has.
pub async fn receive_remote(
    hs: &Homeserver,
    origin: &ruma::ServerName,
    content: &Value,
) -> Result<()> {
    let Some(rooms) = content.as_object() else {
        return Ok(());
    };
    for (room, by_type) in rooms {
        let Ok(room) = <&RoomId>::try_from(room.as_str()) else {
            continue;
        };
        let Some(by_user) = by_type.get("m.read").and_then(Value::as_object) else {
            continue;
        };
        for (user, receipt) in by_user {
            let Ok(user) = <&UserId>::try_from(user.as_str()) else {
                continue;
            };
            if user.server_name() != origin
                || crate::db::rooms::membership(hs, room, user).await?
                    != Some(MembershipState::Join)
            {
                continue;
            }
            let Some(event) = receipt
                .get("event_ids")
                .and_then(Value::as_array)
                .and_then(|a| a.last())
                .and_then(Value::as_str)
                .and_then(|e| <&EventId>::try_from(e).ok())
            else {
                continue;
            };
            let thread = match receipt
                .get("data")
                .and_then(|d| d.get("thread_id"))
                .and_then(Value::as_str)
            {
                Some("main") => ReceiptThread::Main,
                Some(root) => match ruma::OwnedEventId::try_from(root) {
                    Ok(root) => ReceiptThread::Thread(root),
                    Err(_) => continue,
                },
                None => ReceiptThread::Unthreaded,
            };
            let Ok(planned) =
                plan(hs, room, Marker::Receipt(ReceiptType::Read), event, thread).await
            else {
                continue;
            };
            apply(hs, user, room, vec![planned]).await?;
        }
    }
    Ok(())
}

/// Moves every planned marker forward in one batch.
async fn apply(hs: &Homeserver, user: &UserId, room: &RoomId, planned: Vec<Planned>) -> Result<()> {
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    for p in planned {
        match p.marker {
            Marker::FullyRead => {
                if fully_read_pos(hs, user, room)
                    .await?
                    .is_some_and(|old| old >= p.pdu.pos)
                {
                    continue;
                }
                let pos = hs.alloc_pos();
                let content = json!({ "event_id": p.pdu.event_id });
                account_data::put(hs, &mut batch, pos, user, Some(room), FULLY_READ, content)
                    .await?;
            }
            Marker::Receipt(receipt_type) => {
                let thread = p.thread.as_str().map(str::to_owned);
                let lk = latest_key(room, receipt_type.as_str(), user, thread.as_deref());
                let old: Option<ReceiptRecord> = hs.get_json("receipts", &lk).await?;
                if old.as_ref().is_some_and(|o| o.event_pos >= p.pdu.pos) {
                    continue;
                }
                if let Some(o) = old {
                    batch.delete("receipts", stream_key(room, o.pos));
                }
                let pos = hs.alloc_pos();
                let rec = ReceiptRecord {
                    receipt_type: receipt_type.as_str().to_owned(),
                    user_id: user.to_owned(),
                    event_id: p.pdu.event_id.clone(),
                    event_pos: p.pdu.pos,
                    ts: hs.now_ms(),
                    thread,
                    pos,
                };
                let bytes = to_json(&rec)?;
                batch.put("receipts", lk, bytes.clone());
                batch.put("receipts", stream_key(room, pos), bytes);
            }
        }
    }
    if !batch.is_empty() {
        hs.commit(batch).await?;
    }
    Ok(())
}

async fn post_receipt(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_receipt::v3::Request,
) -> Result<create_receipt::v3::Response> {
    let user = ctx.user_id()?;
    let marker = match req.receipt_type {
        create_receipt::v3::ReceiptType::Read => Marker::Receipt(ReceiptType::Read),
        create_receipt::v3::ReceiptType::ReadPrivate => Marker::Receipt(ReceiptType::ReadPrivate),
        create_receipt::v3::ReceiptType::FullyRead => Marker::FullyRead,
        other => {
            return Err(MatrixError::invalid_param(format!(
                "unknown receipt type {other}"
            )));
        }
    };
    check_joined(hs, user, &req.room_id).await?;
    let public = matches!(marker, Marker::Receipt(ReceiptType::Read));
    let thread = req.thread.as_str().map(str::to_owned);
    let planned = plan(hs, &req.room_id, marker, &req.event_id, req.thread).await?;
    apply(hs, user, &req.room_id, vec![planned]).await?;
    if public {
        send_to_servers(hs, user, &req.room_id, &req.event_id, thread.as_deref()).await?;
    }
    Ok(create_receipt::v3::Response::new())
}

async fn post_read_markers(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_read_marker::v3::Request,
) -> Result<set_read_marker::v3::Response> {
    let user = ctx.user_id()?;
    check_joined(hs, user, &req.room_id).await?;
    let wanted = [
        (Marker::FullyRead, req.fully_read),
        (Marker::Receipt(ReceiptType::Read), req.read_receipt),
        (
            Marker::Receipt(ReceiptType::ReadPrivate),
            req.private_read_receipt,
        ),
    ];
    let mut planned = Vec::new();
    for (marker, event_id) in wanted {
        if let Some(event_id) = event_id {
            planned.push(
                plan(
                    hs,
                    &req.room_id,
                    marker,
                    &event_id,
                    ReceiptThread::Unthreaded,
                )
                .await?,
            );
        }
    }
    apply(hs, user, &req.room_id, planned).await?;
    Ok(set_read_marker::v3::Response::new())
}
