//! Client config (account data): `GET/PUT /user/{userId}/account_data/{type}` and the per-room
//! variant, plus the store that `/sync`, read markers and push rules write through.
//!
//! Layout:
//! - `account_data`: user, room (empty for global), type → [`Record`] (latest value)
//! - `account_data_stream`: user, pos → [`StreamEntry`]; exactly one entry per (room, type),
//!   the one of its latest write, so an incremental sync reads only what changed.

use std::collections::BTreeMap;
use std::ops::Bound;

use http::StatusCode;
use ruma::api::client::config::{
    get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
};
use ruma::events::push_rules::PushRulesEventContent;
use ruma::events::{AnyGlobalAccountDataEvent, AnyRoomAccountDataEvent};
use ruma::push::Ruleset;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};

use crate::db::{from_json, key, pos_bytes, prefix, to_json};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::{Batch, Direction, KeyRange, prefix_successor};
use crate::{Ctx, Homeserver, route};

/// Types the server maintains itself; clients change them through their own endpoints
/// (read markers, push rules), never through the generic account data API.
pub const SERVER_MANAGED: &[&str] = &["m.fully_read", "m.push_rules"];

pub const PUSH_RULES: &str = "m.push_rules";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub pos: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<OwnedRoomId>,
    pub event_type: String,
    pub content: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StreamEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room_id: Option<OwnedRoomId>,
    event_type: String,
}

pub fn routes(r: &mut Router) {
    route!(r, get_global_account_data::v3::Request, get_global);
    route!(r, set_global_account_data::v3::Request, set_global);
    route!(r, get_room_account_data::v3::Request, get_room);
    route!(r, set_room_account_data::v3::Request, set_room);
}

fn record_key(user: &UserId, room: Option<&RoomId>, event_type: &str) -> Vec<u8> {
    key(&[
        user.as_bytes(),
        room.map(|r| r.as_bytes()).unwrap_or_default(),
        event_type.as_bytes(),
    ])
}

fn stream_key(user: &UserId, pos: u64) -> Vec<u8> {
    key(&[user.as_bytes(), &pos_bytes(pos)])
}

/// The stored content of one account data type, or `None`.
pub async fn get(
    hs: &Homeserver,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
) -> Result<Option<Value>> {
    let rec: Option<Record> = hs
        .get_json("account_data", &record_key(user, room, event_type))
        .await?;
    Ok(rec.map(|r| r.content))
}

/// Writes `content` at stream position `pos` into `batch`, replacing the previous value and
/// its stream entry. Call with the write lock held and `pos` freshly allocated.
pub async fn put(
    hs: &Homeserver,
    batch: &mut Batch,
    pos: u64,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
    content: Value,
) -> Result<()> {
    let rk = record_key(user, room, event_type);
    let previous: Option<Record> = match batch.pending("account_data", &rk) {
        Some(Some(bytes)) => Some(from_json(bytes)?),
        Some(None) => None,
        None => hs.get_json("account_data", &rk).await?,
    };
    if let Some(prev) = previous {
        batch.delete("account_data_stream", stream_key(user, prev.pos));
    }
    let rec = Record {
        pos,
        room_id: room.map(ToOwned::to_owned),
        event_type: event_type.to_owned(),
        content,
    };
    batch.put("account_data", rk, to_json(&rec)?);
    batch.put(
        "account_data_stream",
        stream_key(user, pos),
        to_json(&StreamEntry {
            room_id: rec.room_id.clone(),
            event_type: rec.event_type.clone(),
        })?,
    );
    Ok(())
}

/// Stores one value under its own stream position and wakes `/sync`.
pub async fn put_now(
    hs: &Homeserver,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
    content: Value,
) -> Result<()> {
    let _g = hs.write_lock().await;
    let pos = hs.alloc_pos();
    let mut batch = Batch::new();
    put(hs, &mut batch, pos, user, room, event_type, content).await?;
    hs.commit(batch).await
}

/// Global and per-room account data changed after `since` (everything when `since` is 0),
/// latest value of each type. The initial sync always carries `m.push_rules`, the server's
/// defaults when the user never changed them.
pub async fn account_data_since(
    hs: &Homeserver,
    user: &UserId,
    since: u64,
) -> Result<(
    Vec<Raw<AnyGlobalAccountDataEvent>>,
    BTreeMap<OwnedRoomId, Vec<Raw<AnyRoomAccountDataEvent>>>,
)> {
    let records: Vec<Record> = if since == 0 {
        hs.scan_prefix("account_data", &prefix(&[user.as_bytes()]))
            .await?
            .iter()
            .map(|(_, v)| from_json(v))
            .collect::<Result<_>>()?
    } else if !hs
        .changes
        .part_changed_since("account_data_stream", user.as_bytes(), since)
    {
        Vec::new()
    } else {
        let user_prefix = prefix(&[user.as_bytes()]);
        let start = stream_key(user, since.saturating_add(1));
        let end = match prefix_successor(&user_prefix) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let rows = hs
            .store
            .scan(
                "account_data_stream",
                KeyRange::new(Bound::Included(start), end),
                Direction::Forward,
                usize::MAX,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (_, v) in rows {
            let entry: StreamEntry = from_json(&v)?;
            let rk = record_key(user, entry.room_id.as_deref(), &entry.event_type);
            if let Some(rec) = hs.get_json::<Record>("account_data", &rk).await? {
                out.push(rec);
            }
        }
        out
    };

    let mut global = Vec::new();
    let mut rooms: BTreeMap<OwnedRoomId, Vec<Raw<AnyRoomAccountDataEvent>>> = BTreeMap::new();
    let mut saw_push_rules = false;
    for rec in records {
        let raw = event_json(&rec.event_type, &rec.content)?;
        match rec.room_id {
            Some(room) => rooms.entry(room).or_default().push(Raw::from_json(raw)),
            None => {
                saw_push_rules |= rec.event_type == PUSH_RULES;
                global.push(Raw::from_json(raw));
            }
        }
    }
    if since == 0 && !saw_push_rules {
        let content =
            serde_json::to_value(PushRulesEventContent::new(Ruleset::server_default(user)))?;
        global.push(Raw::from_json(event_json(PUSH_RULES, &content)?));
    }
    Ok((global, rooms))
}

fn event_json(event_type: &str, content: &Value) -> Result<Box<RawValue>> {
    Ok(to_raw_value(
        &json!({ "type": event_type, "content": content }),
    )?)
}

fn check_owner(ctx: &Ctx, user: &UserId) -> Result<()> {
    if ctx.user_id()? != user {
        return Err(MatrixError::forbidden(
            "cannot access account data of other users",
        ));
    }
    Ok(())
}

fn check_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() || event_type.contains('\0') {
        return Err(MatrixError::invalid_param("invalid account data type"));
    }
    Ok(())
}

fn check_writable(event_type: &str) -> Result<()> {
    check_type(event_type)?;
    if SERVER_MANAGED.contains(&event_type) {
        // The spec's status for server-managed types is 405 with M_BAD_JSON.
        return Err(MatrixError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_BAD_JSON",
            format!("cannot set {event_type} through this API"),
        ));
    }
    Ok(())
}

/// The body of a PUT, which must be a JSON object.
fn content_object(raw: &RawValue) -> Result<Value> {
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|e| MatrixError::not_json(e.to_string()))?;
    if !v.is_object() {
        return Err(MatrixError::bad_json(
            "account data content must be a JSON object",
        ));
    }
    Ok(v)
}

/// Reads a type for a GET, answering `m.push_rules` with the effective rules.
async fn get_for_client(
    hs: &Homeserver,
    user: &UserId,
    room: Option<&RoomId>,
    event_type: &str,
) -> Result<Box<RawValue>> {
    check_type(event_type)?;
    let content = match get(hs, user, room, event_type).await? {
        Some(c) => c,
        None if room.is_none() && event_type == PUSH_RULES => {
            serde_json::to_value(PushRulesEventContent::new(Ruleset::server_default(user)))?
        }
        None => return Err(MatrixError::not_found("account data not found")),
    };
    Ok(to_raw_value(&content)?)
}

async fn get_global(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_global_account_data::v3::Request,
) -> Result<get_global_account_data::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    let raw = get_for_client(hs, &req.user_id, None, &req.event_type.to_string()).await?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(
        raw,
    )))
}

async fn get_room(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_room_account_data::v3::Request,
) -> Result<get_room_account_data::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    let raw = get_for_client(
        hs,
        &req.user_id,
        Some(&req.room_id),
        &req.event_type.to_string(),
    )
    .await?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(
        raw,
    )))
}

async fn set_global(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_global_account_data::v3::Request,
) -> Result<set_global_account_data::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    let event_type = req.event_type.to_string();
    check_writable(&event_type)?;
    let content = content_object(req.data.json())?;
    put_now(hs, &req.user_id, None, &event_type, content).await?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn set_room(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_room_account_data::v3::Request,
) -> Result<set_room_account_data::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    let event_type = req.event_type.to_string();
    check_writable(&event_type)?;
    let content = content_object(req.data.json())?;
    put_now(hs, &req.user_id, Some(&req.room_id), &event_type, content).await?;
    Ok(set_room_account_data::v3::Response::new())
}
