//! Spaces and room previews: `GET /rooms/{roomId}/hierarchy` and
//! `GET /room_summary/{roomIdOrAlias}`.
//!
//! A space's children are its `m.space.child` state events with a non-empty `via`; only rooms
//! whose `m.room.create` type is `m.space` have children (the spec: the event "has no effect in
//! rooms which are not spaces"). `m.space.parent` plays no part here: the spec leaves parent
//! events out of `/hierarchy`. Rooms this server does not know would need federation, which is
//! not available, so they are skipped.
//!
//! Pagination recomputes the walk and skips what earlier pages returned; the token carries the
//! root, the skip count and the walk's parameters, so a token cannot be reused with others.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::api::client::room::get_summary;
use ruma::api::client::space::{SpaceHierarchyRoomsChunk, get_hierarchy};
use ruma::events::room::member::MembershipState;
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::room::{JoinRule, JoinRuleSummary, RoomSummary, RoomType};
use ruma::serde::Raw;
use ruma::{
    EventEncryptionAlgorithm, OwnedMxcUri, OwnedRoomAliasId, OwnedRoomId, RoomId, UInt, UserId,
};
use serde_json::{Value, json};

use super::knock::{meets_allow, parse_join_rule};
use super::membership::resolve_room;
use crate::db::rooms;
use crate::error::{MatrixError, Result};
use crate::room::txn::supported_version;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

/// Rooms per page when the client does not say, and the most it may ask for.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 100;
/// How deep the walk goes when the client does not say, and the deepest it may ask for.
const DEFAULT_MAX_DEPTH: u64 = 10;
const MAX_DEPTH: u64 = 50;
/// Rooms visited by one request at most, whatever the tree looks like.
const MAX_VISITED: usize = 2_000;

pub fn routes(r: &mut Router) {
    route!(r, get_hierarchy::v1::Request, hierarchy);
    route!(r, get_summary::v1::Request, summary);
}

fn content_str(content: Option<&Value>, field: &str) -> Option<String> {
    content
        .and_then(|c| c.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

async fn state_content(hs: &Homeserver, room: &RoomId, event_type: &str) -> Result<Option<Value>> {
    Ok(rooms::state_event(hs, room, event_type, "")
        .await?
        .map(|p| p.content.clone()))
}

/// Whether the room is a space (`m.room.create` with `type: m.space`).
async fn is_space(hs: &Homeserver, room: &RoomId) -> Result<bool> {
    Ok(content_str(
        state_content(hs, room, "m.room.create").await?.as_ref(),
        "type",
    )
    .as_deref()
        == Some("m.space"))
}

/// Whether `user` (`None`: an unauthenticated caller) may preview the room, by the spec's list
/// for `/hierarchy`: a member or invitee, or a room that is public, knockable, restricted to a
/// room the user is in, or world-readable. A banned user sees nothing.
pub async fn may_preview(hs: &Homeserver, user: Option<&UserId>, room: &RoomId) -> Result<bool> {
    let Some(state) = rooms::room_state(hs, room).await? else {
        return Ok(false);
    };
    if let Some(user) = user {
        match rooms::membership(hs, room, user).await? {
            Some(MembershipState::Ban) => return Ok(false),
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {
                return Ok(true);
            }
            _ => {}
        }
    }
    let world_readable = content_str(
        state_content(hs, room, "m.room.history_visibility")
            .await?
            .as_ref(),
        "history_visibility",
    )
    .as_deref()
        == Some("world_readable");
    if world_readable {
        return Ok(true);
    }
    let Some(rule) = state_content(hs, room, "m.room.join_rules")
        .await?
        .as_ref()
        .and_then(parse_join_rule)
    else {
        return Ok(false);
    };
    let Some(version_rules) = supported_version(&state.record.version) else {
        return Ok(false);
    };
    let auth = &version_rules.authorization;
    Ok(match &rule {
        JoinRule::Public => true,
        JoinRule::Knock => auth.knocking,
        JoinRule::KnockRestricted(_) if auth.knock_restricted_join_rule => true,
        JoinRule::Restricted(allow) if auth.restricted_join_rule => match user {
            Some(u) => meets_allow(hs, allow, u).await?,
            None => false,
        },
        _ => false,
    })
}

/// The spec's `RoomSummary` of a room this server knows.
pub async fn room_summary(hs: &Homeserver, room: &RoomId) -> Result<RoomSummary> {
    let state = rooms::room_state(hs, room)
        .await?
        .ok_or_else(|| MatrixError::not_found("room not found"))?;
    let join_rules = state_content(hs, room, "m.room.join_rules").await?;
    // No join rules event means invite-only to the auth rules; say so rather than ruma's
    // default (public).
    let join_rule: JoinRuleSummary = join_rules
        .as_ref()
        .and_then(parse_join_rule)
        .map(Into::into)
        .unwrap_or(JoinRuleSummary::Invite);
    let history = state_content(hs, room, "m.room.history_visibility").await?;
    let guests = state_content(hs, room, "m.room.guest_access").await?;
    let joined = rooms::joined_members(hs, room).await?.len() as u64;
    let mut s = RoomSummary::new(
        room.to_owned(),
        join_rule,
        content_str(guests.as_ref(), "guest_access").as_deref() == Some("can_join"),
        UInt::new_saturating(joined),
        content_str(history.as_ref(), "history_visibility").as_deref() == Some("world_readable"),
    );
    s.name = content_str(
        state_content(hs, room, "m.room.name").await?.as_ref(),
        "name",
    );
    s.topic = content_str(
        state_content(hs, room, "m.room.topic").await?.as_ref(),
        "topic",
    );
    s.canonical_alias = content_str(
        state_content(hs, room, "m.room.canonical_alias")
            .await?
            .as_ref(),
        "alias",
    )
    .and_then(|a| OwnedRoomAliasId::try_from(a).ok());
    s.avatar_url = content_str(
        state_content(hs, room, "m.room.avatar").await?.as_ref(),
        "url",
    )
    .map(OwnedMxcUri::from)
    .filter(|u| u.is_valid());
    s.room_type = content_str(
        state_content(hs, room, "m.room.create").await?.as_ref(),
        "type",
    )
    .map(|t| RoomType::from(t.as_str()));
    s.encryption = content_str(
        state_content(hs, room, "m.room.encryption").await?.as_ref(),
        "algorithm",
    )
    .map(|a| EventEncryptionAlgorithm::from(a.as_str()));
    s.room_version = Some(state.record.version.clone());
    Ok(s)
}

/// The valid `m.space.child` events of a space, in the spec's order (`order`, then timestamp,
/// then room id), as stripped events with `origin_server_ts`.
async fn children(
    hs: &Homeserver,
    space: &RoomId,
    suggested_only: bool,
) -> Result<Vec<(OwnedRoomId, Raw<HierarchySpaceChildEvent>)>> {
    let Some(state) = rooms::room_state(hs, space).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ((t, _), id) in state.state.iter() {
        if t != "m.space.child" {
            continue;
        }
        let Some(p) = rooms::get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        let mut v = p.to_stripped();
        v["origin_server_ts"] = json!(p.origin_server_ts);
        // Children whose content does not parse (no `via`, a bad server name, a redacted event)
        // are not children.
        let Ok(child) = serde_json::from_value::<HierarchySpaceChildEvent>(v.clone()) else {
            continue;
        };
        if child.content.via.is_empty() || (suggested_only && !child.content.suggested) {
            continue;
        }
        out.push((child, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter()
        .map(|(c, v)| Ok((c.state_key, super::raw(&v)?)))
        .collect()
}

/// What a `from` token pins: the walk's root and parameters, and how many rooms to skip.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    root: OwnedRoomId,
    max_depth: u64,
    suggested_only: bool,
    skip: usize,
}

impl Page {
    fn token(&self) -> String {
        let s = json!([self.root, self.max_depth, self.suggested_only, self.skip]).to_string();
        URL_SAFE_NO_PAD.encode(s)
    }

    fn parse(token: &str) -> Result<Self> {
        let bad = || MatrixError::invalid_param("unknown `from` token");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let (root, max_depth, suggested_only, skip): (OwnedRoomId, u64, bool, usize) =
            serde_json::from_slice(&bytes).map_err(|_| bad())?;
        Ok(Self {
            root,
            max_depth,
            suggested_only,
            skip,
        })
    }
}

async fn hierarchy(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_hierarchy::v1::Request,
) -> Result<get_hierarchy::v1::Response> {
    let user = ctx.user_id()?;
    let limit = match req.limit.map(u64::from) {
        Some(0) => {
            return Err(MatrixError::invalid_param(
                "limit must be greater than zero",
            ));
        }
        Some(l) => l.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    } as usize;
    let max_depth = req
        .max_depth
        .map(u64::from)
        .unwrap_or(DEFAULT_MAX_DEPTH)
        .min(MAX_DEPTH);
    let skip = match &req.from {
        None => 0,
        Some(t) => {
            let page = Page::parse(t)?;
            if page.root != req.room_id {
                return Err(MatrixError::invalid_param(
                    "the `from` token belongs to another room's hierarchy",
                ));
            }
            if page.max_depth != max_depth || page.suggested_only != req.suggested_only {
                return Err(MatrixError::invalid_param(
                    "suggested_only and max_depth cannot change on paginated requests",
                ));
            }
            page.skip
        }
    };
    if !may_preview(hs, Some(user), &req.room_id).await? {
        return Err(MatrixError::forbidden(
            "you are not allowed to view this room",
        ));
    }

    // Depth-first, children in the spec's order; each room once.
    let mut resp = get_hierarchy::v1::Response::new();
    let mut stack = vec![(req.room_id.clone(), 0u64)];
    let mut seen = HashSet::new();
    let mut listed = 0usize;
    while let Some((room, depth)) = stack.pop() {
        if seen.len() >= MAX_VISITED {
            break;
        }
        if !seen.insert(room.clone()) {
            continue;
        }
        if rooms::room_record(hs, &room).await?.is_none()
            || !may_preview(hs, Some(user), &room).await?
        {
            continue;
        }
        let kids = if is_space(hs, &room).await? {
            children(hs, &room, req.suggested_only).await?
        } else {
            Vec::new()
        };
        listed += 1;
        if listed > skip {
            if resp.rooms.len() == limit {
                resp.next_batch = Some(
                    Page {
                        root: req.room_id.clone(),
                        max_depth,
                        suggested_only: req.suggested_only,
                        skip: skip + limit,
                    }
                    .token(),
                );
                break;
            }
            let children_state = kids.iter().map(|(_, ev)| ev.clone()).collect();
            resp.rooms.push(SpaceHierarchyRoomsChunk::new(
                room_summary(hs, &room).await?,
                children_state,
            ));
        }
        if depth < max_depth {
            for (child, _) in kids.into_iter().rev() {
                if !seen.contains(&child) {
                    stack.push((child, depth + 1));
                }
            }
        }
    }
    Ok(resp)
}

async fn summary(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_summary::v1::Request,
) -> Result<get_summary::v1::Response> {
    let user = ctx.session.as_ref().map(|s| &*s.user_id);
    let not_found = || MatrixError::not_found("room not found");
    // An alias that resolves nowhere, a room this server does not know, and a room the caller
    // may not preview all look the same.
    let room = resolve_room(hs, &req.room_id_or_alias).await.map_err(|e| {
        if e.errcode == "M_NOT_FOUND" {
            not_found()
        } else {
            e
        }
    })?;
    if !may_preview(hs, user, &room).await? {
        return Err(not_found());
    }
    let mut resp = get_summary::v1::Response::new(room_summary(hs, &room).await?);
    if let Some(u) = user {
        resp.membership = Some(
            rooms::membership(hs, &room, u)
                .await?
                .unwrap_or(MembershipState::Leave),
        );
    }
    Ok(resp)
}
