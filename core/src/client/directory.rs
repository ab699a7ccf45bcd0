//! Room aliases and the public room directory.
//!
//! Layout: `aliases`: alias → `{room_id, creator}`; `room_aliases`: room_id, alias → "";
//! `directory`: room_id → "" for rooms published in the public list.

use http::StatusCode;
use ruma::api::client::alias::{create_alias, delete_alias, get_alias};
use ruma::api::client::directory::{
    get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
};
use ruma::api::client::room::aliases;
use ruma::directory::{PublicRoomsChunk, PublicRoomsChunkInit};
use ruma::events::room::member::MembershipState;
use ruma::room::{JoinRuleKind, RoomType};
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{key, prefix, rooms, to_json};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, create_alias::v3::Request, put_alias_endpoint);
    route!(r, get_alias::v3::Request, get_alias_endpoint);
    route!(r, delete_alias::v3::Request, delete_alias_endpoint);
    route!(r, aliases::v3::Request, room_aliases);
    route!(r, get_public_rooms::v3::Request, public_rooms);
    route!(
        r,
        get_public_rooms_filtered::v3::Request,
        public_rooms_filtered
    );
    route!(r, get_room_visibility::v3::Request, get_visibility);
    route!(r, set_room_visibility::v3::Request, set_visibility);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AliasRecord {
    room_id: OwnedRoomId,
    creator: OwnedUserId,
}

pub async fn resolve_local_alias(
    hs: &Homeserver,
    alias: &RoomAliasId,
) -> Result<Option<OwnedRoomId>> {
    Ok(hs
        .get_json::<AliasRecord>("aliases", alias.as_bytes())
        .await?
        .map(|r| r.room_id))
}

pub fn put_alias(
    batch: &mut Batch,
    alias: &RoomAliasId,
    room: &RoomId,
    creator: &UserId,
) -> Result<()> {
    let rec = AliasRecord {
        room_id: room.to_owned(),
        creator: creator.to_owned(),
    };
    batch.put("aliases", alias.as_bytes(), to_json(&rec)?);
    batch.put(
        "room_aliases",
        key(&[room.as_bytes(), alias.as_bytes()]),
        Vec::new(),
    );
    Ok(())
}

pub fn move_alias(
    batch: &mut Batch,
    alias: &RoomAliasId,
    from: &RoomId,
    to: &RoomId,
    creator: &UserId,
) -> Result<()> {
    batch.delete("room_aliases", key(&[from.as_bytes(), alias.as_bytes()]));
    put_alias(batch, alias, to, creator)
}

pub async fn local_aliases_of(hs: &Homeserver, room: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
    let pfx = prefix(&[room.as_bytes()]);
    Ok(hs
        .scan_prefix("room_aliases", &pfx)
        .await?
        .into_iter()
        .filter_map(|(k, _)| {
            OwnedRoomAliasId::try_from(String::from_utf8_lossy(&k[pfx.len()..]).as_ref()).ok()
        })
        .collect())
}

pub fn set_published(batch: &mut Batch, room: &RoomId, published: bool) {
    if published {
        batch.put("directory", room.as_bytes(), Vec::new());
    } else {
        batch.delete("directory", room.as_bytes().to_vec());
    }
}

pub async fn is_published(hs: &Homeserver, room: &RoomId) -> Result<bool> {
    Ok(hs.store.get("directory", room.as_bytes()).await?.is_some())
}

async fn put_alias_endpoint(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_alias::v3::Request,
) -> Result<create_alias::v3::Response> {
    let user = ctx.user_id()?;
    if req.room_alias.server_name() != hs.server_name() {
        return Err(MatrixError::invalid_param(
            "aliases can only be created on this server's domain",
        ));
    }
    if rooms::room_record(hs, &req.room_id).await?.is_none() {
        return Err(MatrixError::not_found("room not found"));
    }
    if rooms::membership(hs, &req.room_id, user).await? != Some(MembershipState::Join) {
        return Err(MatrixError::forbidden(
            "you must be joined to the room to give it an alias",
        ));
    }
    let _lock = hs.write_lock().await;
    if resolve_local_alias(hs, &req.room_alias).await?.is_some() {
        return Err(MatrixError::new(
            StatusCode::CONFLICT,
            "M_UNKNOWN",
            format!("room alias {} already exists", req.room_alias),
        ));
    }
    let mut batch = Batch::new();
    put_alias(&mut batch, &req.room_alias, &req.room_id, user)?;
    hs.commit(batch).await?;
    Ok(create_alias::v3::Response::new())
}

async fn get_alias_endpoint(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_alias::v3::Request,
) -> Result<get_alias::v3::Response> {
    if req.room_alias.server_name() != hs.server_name() {
        // Another server's alias: that server's directory answers.
        let answer = crate::federation::client::query_directory(hs, &req.room_alias)
            .await
            .map_err(|e| match e {
                crate::federation::client::FederationError::Remote { status: 404, .. } => {
                    MatrixError::not_found(format!("room alias {} not found", req.room_alias))
                }
                other => other.to_client_error(),
            })?;
        return Ok(get_alias::v3::Response::new(answer.room_id, answer.servers));
    }
    let room = resolve_local_alias(hs, &req.room_alias)
        .await?
        .ok_or_else(|| {
            MatrixError::not_found(format!("room alias {} not found", req.room_alias))
        })?;
    Ok(get_alias::v3::Response::new(
        room,
        vec![hs.owned_server_name()],
    ))
}

async fn delete_alias_endpoint(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_alias::v3::Request,
) -> Result<delete_alias::v3::Response> {
    let user = ctx.user_id()?;
    let _lock = hs.write_lock().await;
    let rec: AliasRecord = hs
        .get_json("aliases", req.room_alias.as_bytes())
        .await?
        .ok_or_else(|| {
            MatrixError::not_found(format!("room alias {} not found", req.room_alias))
        })?;
    // The alias's creator may delete it, and so may anyone allowed to change the room's
    // canonical alias.
    let allowed = rec.creator == *user || {
        let pl = rooms::state_event(hs, &rec.room_id, "m.room.power_levels", "").await?;
        let create = rooms::state_event(hs, &rec.room_id, "m.room.create", "").await?;
        let levels = crate::db::power::PowerLevels::new(
            pl.as_ref().map(|p| &p.content),
            create.as_ref().map(|c| &*c.sender),
        );
        levels.user(user) >= levels.event("m.room.canonical_alias", true)
    };
    if !allowed {
        return Err(MatrixError::forbidden("you may not delete this alias"));
    }
    let mut batch = Batch::new();
    batch.delete("aliases", req.room_alias.as_bytes().to_vec());
    batch.delete(
        "room_aliases",
        key(&[rec.room_id.as_bytes(), req.room_alias.as_bytes()]),
    );
    hs.commit(batch).await?;
    Ok(delete_alias::v3::Response::new())
}

async fn room_aliases(
    hs: &Homeserver,
    ctx: Ctx,
    req: aliases::v3::Request,
) -> Result<aliases::v3::Response> {
    let user = ctx.user_id()?;
    let visible = rooms::membership(hs, &req.room_id, user).await? == Some(MembershipState::Join)
        || rooms::state_event(hs, &req.room_id, "m.room.history_visibility", "")
            .await?
            .is_some_and(|p| {
                p.content.get("history_visibility").and_then(Value::as_str)
                    == Some("world_readable")
            });
    if !visible {
        return Err(MatrixError::forbidden("you are not a member of this room"));
    }
    Ok(aliases::v3::Response::new(
        local_aliases_of(hs, &req.room_id).await?,
    ))
}

/// The public directory entry of a room.
pub async fn public_chunk(hs: &Homeserver, room: &RoomId) -> Result<PublicRoomsChunk> {
    let state_str = |content: Option<Value>, field: &str| -> Option<String> {
        content
            .and_then(|c| c.get(field).and_then(Value::as_str).map(str::to_owned))
            .filter(|s| !s.is_empty())
    };
    let content = |t: &'static str| async move {
        Ok::<_, MatrixError>(
            rooms::state_event(hs, room, t, "")
                .await?
                .map(|p| p.content.clone()),
        )
    };
    let joined = rooms::joined_members(hs, room).await?.len() as u64;
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(joined),
        room_id: room.to_owned(),
        world_readable: false,
        guest_can_join: false,
    }
    .into();
    chunk.name = state_str(content("m.room.name").await?, "name");
    chunk.topic = state_str(content("m.room.topic").await?, "topic");
    chunk.canonical_alias = state_str(content("m.room.canonical_alias").await?, "alias")
        .and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    chunk.avatar_url =
        state_str(content("m.room.avatar").await?, "url").map(ruma::OwnedMxcUri::from);
    chunk.world_readable = state_str(
        content("m.room.history_visibility").await?,
        "history_visibility",
    )
    .as_deref()
        == Some("world_readable");
    chunk.guest_can_join = state_str(content("m.room.guest_access").await?, "guest_access")
        .as_deref()
        == Some("can_join");
    let join_rule = state_str(content("m.room.join_rules").await?, "join_rule")
        .unwrap_or_else(|| "invite".into());
    chunk.join_rule = JoinRuleKind::from(join_rule.as_str());
    chunk.room_type =
        state_str(content("m.room.create").await?, "type").map(|t| RoomType::from(t.as_str()));
    Ok(chunk)
}

/// The published rooms, biggest first, matching an optional search term and room types.
pub(crate) async fn list_public(
    hs: &Homeserver,
    limit: Option<UInt>,
    since: Option<&str>,
    term: Option<&str>,
    room_types: Option<&[ruma::directory::RoomTypeFilter]>,
) -> Result<(Vec<PublicRoomsChunk>, Option<String>, Option<String>, u64)> {
    let mut all = Vec::new();
    for (k, _) in hs.scan_prefix("directory", b"").await? {
        let Ok(room) = OwnedRoomId::try_from(String::from_utf8_lossy(&k).as_ref()) else {
            continue;
        };
        all.push(public_chunk(hs, &room).await?);
    }
    let term = term.map(str::to_lowercase).filter(|t| !t.is_empty());
    all.retain(|c| {
        let text_ok = term.as_ref().is_none_or(|t| {
            [
                c.name.as_deref(),
                c.topic.as_deref(),
                c.canonical_alias.as_ref().map(|a| a.as_str()),
            ]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(t.as_str()))
        });
        let type_ok = room_types.is_none_or(|types| {
            types.is_empty()
                || types.iter().any(|f| match f {
                    ruma::directory::RoomTypeFilter::Default => c.room_type.is_none(),
                    other => c.room_type.as_ref().map(|t| t.as_str()) == other.as_str(),
                })
        });
        text_ok && type_ok
    });
    all.sort_by(|a, b| {
        b.num_joined_members
            .cmp(&a.num_joined_members)
            .then(a.room_id.cmp(&b.room_id))
    });
    let total = all.len() as u64;
    let offset: usize = match since {
        Some(s) => s
            .strip_prefix('p')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| MatrixError::invalid_param("invalid `since` token"))?,
        None => 0,
    };
    let limit = limit.map(|l| u64::from(l) as usize).unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(all.len());
    let page: Vec<_> = all
        .into_iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .collect();
    let next = (end < total as usize).then(|| format!("p{end}"));
    let prev = (offset > 0).then(|| format!("p{}", offset.saturating_sub(limit)));
    Ok((page, next, prev, total))
}

/// The other server whose directory is asked for, if any.
fn remote_server<'a>(
    hs: &Homeserver,
    server: Option<&'a ruma::ServerName>,
) -> Option<&'a ruma::ServerName> {
    server.filter(|s| *s != hs.server_name())
}

async fn public_rooms(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_public_rooms::v3::Request,
) -> Result<get_public_rooms::v3::Response> {
    if let Some(server) = remote_server(hs, req.server.as_deref()) {
        let mut ask = ruma::api::federation::directory::get_public_rooms::v1::Request::new();
        ask.limit = req.limit;
        ask.since = req.since.clone();
        let answer = crate::federation::client::public_rooms(hs, server, ask)
            .await
            .map_err(|e| e.to_client_error())?;
        let mut resp = get_public_rooms::v3::Response::new(answer.chunk);
        resp.next_batch = answer.next_batch;
        resp.prev_batch = answer.prev_batch;
        resp.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(resp);
    }
    let (chunk, next, prev, total) =
        list_public(hs, req.limit, req.since.as_deref(), None, None).await?;
    let mut resp = get_public_rooms::v3::Response::new(chunk);
    resp.next_batch = next;
    resp.prev_batch = prev;
    resp.total_room_count_estimate = Some(UInt::new_saturating(total));
    Ok(resp)
}

async fn public_rooms_filtered(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_public_rooms_filtered::v3::Request,
) -> Result<get_public_rooms_filtered::v3::Response> {
    if let Some(server) = remote_server(hs, req.server.as_deref()) {
        let mut ask =
            ruma::api::federation::directory::get_public_rooms_filtered::v1::Request::new();
        ask.limit = req.limit;
        ask.since = req.since.clone();
        ask.filter = req.filter.clone();
        ask.room_network = req.room_network.clone();
        let answer = crate::federation::client::public_rooms_filtered(hs, server, ask)
            .await
            .map_err(|e| e.to_client_error())?;
        let mut resp = get_public_rooms_filtered::v3::Response::new();
        resp.chunk = answer.chunk;
        resp.next_batch = answer.next_batch;
        resp.prev_batch = answer.prev_batch;
        resp.total_room_count_estimate = answer.total_room_count_estimate;
        return Ok(resp);
    }
    let (chunk, next, prev, total) = list_public(
        hs,
        req.limit,
        req.since.as_deref(),
        req.filter.generic_search_term.as_deref(),
        Some(&req.filter.room_types),
    )
    .await?;
    let mut resp = get_public_rooms_filtered::v3::Response::new();
    resp.chunk = chunk;
    resp.next_batch = next;
    resp.prev_batch = prev;
    resp.total_room_count_estimate = Some(UInt::new_saturating(total));
    Ok(resp)
}

async fn get_visibility(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_room_visibility::v3::Request,
) -> Result<get_room_visibility::v3::Response> {
    if rooms::room_record(hs, &req.room_id).await?.is_none() {
        return Err(MatrixError::not_found("room not found"));
    }
    let v = if is_published(hs, &req.room_id).await? {
        ruma::api::client::room::Visibility::Public
    } else {
        ruma::api::client::room::Visibility::Private
    };
    Ok(get_room_visibility::v3::Response::new(v))
}

async fn set_visibility(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_room_visibility::v3::Request,
) -> Result<set_room_visibility::v3::Response> {
    let user = ctx.user_id()?;
    if rooms::room_record(hs, &req.room_id).await?.is_none() {
        return Err(MatrixError::not_found("room not found"));
    }
    // Publishing needs the power to change the room's canonical alias, as in other servers.
    let pl = rooms::state_event(hs, &req.room_id, "m.room.power_levels", "").await?;
    let create = rooms::state_event(hs, &req.room_id, "m.room.create", "").await?;
    let levels = crate::db::power::PowerLevels::new(
        pl.as_ref().map(|p| &p.content),
        create.as_ref().map(|c| &*c.sender),
    );
    if rooms::membership(hs, &req.room_id, user).await? != Some(MembershipState::Join)
        || levels.user(user) < levels.event("m.room.canonical_alias", true)
    {
        return Err(MatrixError::forbidden(
            "you may not change this room's visibility",
        ));
    }
    let _lock = hs.write_lock().await;
    let mut batch = Batch::new();
    set_published(
        &mut batch,
        &req.room_id,
        req.visibility == ruma::api::client::room::Visibility::Public,
    );
    hs.commit(batch).await?;
    Ok(set_room_visibility::v3::Response::new())
}
