//! Presence: `GET/PUT /presence/{userId}/status`, `/sync?set_presence=`, and the `m.presence`
//! events `/sync` delivers.
//!
//! Layout: `presence`: user → [`PresenceRecord`]. Every write takes a stream position, stored in
//! the record, so an incremental sync reads the records of the users it may see and keeps
//! those newer than its token.
//!
//! Visibility: a user's presence is visible to themselves and to users sharing a joined room
//! with them; anyone else gets `403 M_FORBIDDEN` from the GET endpoint, as the spec allows.

use std::time::Duration;

use ruma::api::client::presence::{get_presence, set_presence};
use ruma::events::presence::{PresenceEvent, PresenceEventContent};
use ruma::presence::PresenceState;
use ruma::serde::Raw;
use ruma::{OwnedMxcUri, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::db::to_json;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

/// A user counts as "currently active" this long after their last activity.
pub const ACTIVE_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: PresenceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_msg: Option<String>,
    /// Last activity, ms since the epoch.
    pub last_active_ts: u64,
    /// Stream position of the last change.
    pub pos: u64,
}

impl PresenceRecord {
    fn last_active_ago(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_active_ts)
    }

    fn currently_active(&self, now: u64) -> bool {
        self.presence == PresenceState::Online && self.last_active_ago(now) < ACTIVE_WINDOW_MS
    }
}

pub fn routes(r: &mut Router) {
    route!(r, get_presence::v3::Request, get_status);
    route!(r, set_presence::v3::Request, set_status);
}

pub async fn get_record(hs: &Homeserver, user: &UserId) -> Result<Option<PresenceRecord>> {
    hs.get_json("presence", user.as_bytes()).await
}

fn check_state(state: &PresenceState) -> Result<()> {
    match state {
        PresenceState::Online | PresenceState::Offline | PresenceState::Unavailable => Ok(()),
        other => Err(MatrixError::invalid_param(format!(
            "unknown presence state {other}"
        ))),
    }
}

/// Stores a new presence for `user`, marking them active now. Call with the write lock held.
async fn write(
    hs: &Homeserver,
    user: &UserId,
    presence: PresenceState,
    status_msg: Option<String>,
) -> Result<()> {
    let pos = hs.alloc_pos();
    let rec = PresenceRecord {
        presence,
        status_msg,
        last_active_ts: hs.now_ms(),
        pos,
    };
    let mut batch = Batch::new();
    batch.put("presence", user.as_bytes(), to_json(&rec)?);
    hs.commit(batch).await?;
    if user.server_name() == hs.server_name() {
        announce(hs, user, &rec).await?;
    }
    Ok(())
}

/// Tells every server sharing a room with `user` of their presence (`m.presence` EDU).
async fn announce(hs: &Homeserver, user: &UserId, rec: &PresenceRecord) -> Result<()> {
    let mut servers = std::collections::BTreeSet::new();
    for room in crate::db::rooms::joined_rooms(hs, user).await? {
        servers.extend(crate::federation::events::servers_in_room(hs, &room).await?);
    }
    if servers.is_empty() {
        return Ok(());
    }
    let now = hs.now_ms();
    let mut entry = json!({
        "user_id": user,
        "presence": rec.presence,
        "last_active_ago": rec.last_active_ago(now),
        "currently_active": rec.currently_active(now),
    });
    if let Some(m) = &rec.status_msg {
        entry["status_msg"] = json!(m);
    }
    let edu = json!({ "edu_type": "m.presence", "content": { "push": [entry] } });
    crate::federation::outbox::send_edu(hs, servers.iter().map(|s| &**s), edu).await
}

/// Presence of users of `origin`, from an `m.presence` EDU.
pub async fn receive_remote(
    hs: &Homeserver,
    origin: &ruma::ServerName,
    content: &serde_json::Value,
) -> Result<()> {
    let Some(push) = content.get("push").and_then(serde_json::Value::as_array) else {
        return Ok(());
    };
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    let now = hs.now_ms();
    for entry in push {
        let Some(user) = entry
            .get("user_id")
            .and_then(serde_json::Value::as_str)
            .and_then(|u| <&UserId>::try_from(u).ok())
        else {
            continue;
        };
        let Some(presence) = entry
            .get("presence")
            .and_then(serde_json::Value::as_str)
            .map(PresenceState::from)
        else {
            continue;
        };
        if user.server_name() != origin || check_state(&presence).is_err() {
            continue;
        }
        let ago = entry
            .get("last_active_ago")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let rec = PresenceRecord {
            presence,
            status_msg: entry
                .get("status_msg")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            last_active_ts: now.saturating_sub(ago),
            pos: hs.alloc_pos(),
        };
        batch.put("presence", user.as_bytes(), to_json(&rec)?);
    }
    if batch.is_empty() {
        return Ok(());
    }
    hs.commit(batch).await
}

/// For `/sync?set_presence=`: records `state` only when it differs from the stored one, so
/// that a client polling with the same state does not write on every request.
pub async fn set_from_sync(hs: &Homeserver, user: &UserId, state: PresenceState) -> Result<()> {
    check_state(&state)?;
    let _g = hs.write_lock().await;
    let current = get_record(hs, user).await?;
    let unchanged = match &current {
        Some(rec) => rec.presence == state,
        None => state == PresenceState::Offline,
    };
    if unchanged {
        return Ok(());
    }
    write(hs, user, state, current.and_then(|r| r.status_msg)).await
}

/// The presence events of `viewer` and everyone sharing a room with them that changed after
/// `since` (every known one when `since` is 0).
pub async fn presence_since(
    hs: &Homeserver,
    viewer: &UserId,
    since: u64,
) -> Result<Vec<Raw<PresenceEvent>>> {
    let now = hs.now_ms();
    let mut out = Vec::new();
    for user in crate::db::rooms::users_sharing_room_with(hs, viewer).await? {
        let Some(rec) = get_record(hs, &user).await? else {
            continue;
        };
        if rec.pos <= since {
            continue;
        }
        let content = event_content(hs, &user, &rec, now).await?;
        let event = json!({ "type": "m.presence", "sender": user, "content": content });
        out.push(Raw::from_json(serde_json::value::to_raw_value(&event)?));
    }
    Ok(out)
}

async fn event_content(
    hs: &Homeserver,
    user: &UserId,
    rec: &PresenceRecord,
    now: u64,
) -> Result<PresenceEventContent> {
    let mut content = PresenceEventContent::new(rec.presence.clone());
    content.status_msg = rec.status_msg.clone();
    content.last_active_ago = Some(UInt::new_saturating(rec.last_active_ago(now)));
    content.currently_active = Some(rec.currently_active(now));
    if user.server_name() == hs.server_name()
        && let Some(profile) = crate::db::users::get_user(hs, user).await?
    {
        content.displayname = profile.displayname;
        content.avatar_url = profile.avatar_url.map(OwnedMxcUri::from);
    }
    Ok(content)
}

async fn may_see(hs: &Homeserver, viewer: &UserId, target: &UserId) -> Result<bool> {
    Ok(viewer == target
        || crate::db::rooms::users_sharing_room_with(hs, viewer)
            .await?
            .contains(target))
}

async fn get_status(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_presence::v3::Request,
) -> Result<get_presence::v3::Response> {
    let viewer = ctx.user_id()?;
    if !may_see(hs, viewer, &req.user_id).await? {
        return Err(MatrixError::forbidden(
            "you are not allowed to see this user's presence",
        ));
    }
    let now = hs.now_ms();
    let Some(rec) = get_record(hs, &req.user_id).await? else {
        return Ok(get_presence::v3::Response::new(PresenceState::Offline));
    };
    let mut resp = get_presence::v3::Response::new(rec.presence.clone());
    resp.status_msg = rec.status_msg.clone();
    resp.last_active_ago = Some(Duration::from_millis(rec.last_active_ago(now)));
    resp.currently_active = Some(rec.currently_active(now));
    Ok(resp)
}

async fn set_status(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_presence::v3::Request,
) -> Result<set_presence::v3::Response> {
    if ctx.user_id()? != &req.user_id {
        return Err(MatrixError::forbidden(
            "cannot set the presence of another user",
        ));
    }
    check_state(&req.presence)?;
    let _g = hs.write_lock().await;
    write(hs, &req.user_id, req.presence, req.status_msg).await?;
    Ok(set_presence::v3::Response::new())
}
