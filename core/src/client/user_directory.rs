//! The user directory: `POST /user_directory/search`.
//!
//! Who can be found is the spec's minimum: users who share a room with the searcher, and users
//! joined to public rooms (join rule `public`). The directory is computed per request from
//! room memberships — no index to keep in step — which costs one member scan per such room.
//! Display names and avatars come from a local user's profile, or from the member event of a
//! remote user.

use std::collections::BTreeMap;

use ruma::api::client::user_directory::search_users;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId};
use serde_json::Value;

use super::knock::parse_join_rule;
use crate::db::{rooms, users};
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

/// The most results one search returns, whatever the client asks for.
const MAX_LIMIT: u64 = 100;

pub fn routes(r: &mut Router) {
    route!(r, search_users::v3::Request, search);
}

/// A user the searcher may find: whether they share a room, and one room where they are joined
/// (for the profile of a remote user).
struct Candidate {
    shares_room: bool,
    room: OwnedRoomId,
}

async fn is_public(hs: &Homeserver, room: &RoomId) -> Result<bool> {
    let jr = rooms::state_event(hs, room, "m.room.join_rules", "").await?;
    Ok(jr
        .and_then(|p| parse_join_rule(&p.content))
        .is_some_and(|r| r == ruma::room::JoinRule::Public))
}

async fn candidates(
    hs: &Homeserver,
    searcher: &ruma::UserId,
) -> Result<BTreeMap<OwnedUserId, Candidate>> {
    let mut out: BTreeMap<OwnedUserId, Candidate> = BTreeMap::new();
    for room in rooms::joined_rooms(hs, searcher).await? {
        for user in rooms::joined_members(hs, &room).await? {
            out.entry(user).or_insert_with(|| Candidate {
                shares_room: true,
                room: room.clone(),
            });
        }
    }
    for (k, _) in hs.scan_prefix("rooms", b"").await? {
        let Ok(room) = OwnedRoomId::try_from(String::from_utf8_lossy(&k).as_ref()) else {
            continue;
        };
        if !is_public(hs, &room).await? {
            continue;
        }
        for user in rooms::joined_members(hs, &room).await? {
            out.entry(user).or_insert_with(|| Candidate {
                shares_room: false,
                room: room.clone(),
            });
        }
    }
    Ok(out)
}

/// Display name and avatar, or `None` for a deactivated local user.
async fn profile(
    hs: &Homeserver,
    user: &ruma::UserId,
    room: &RoomId,
) -> Result<Option<(Option<String>, Option<String>)>> {
    if user.server_name() == hs.server_name() {
        return Ok(match users::get_user(hs, user).await? {
            Some(rec) if !rec.deactivated => Some((rec.displayname, rec.avatar_url)),
            _ => None,
        });
    }
    let member = rooms::state_event(hs, room, "m.room.member", user.as_str()).await?;
    let field = |name: &str| {
        member
            .as_ref()
            .filter(|p| p.membership() == Some(MembershipState::Join))
            .and_then(|p| {
                p.content
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
    };
    Ok(Some((field("displayname"), field("avatar_url"))))
}

async fn search(
    hs: &Homeserver,
    ctx: Ctx,
    req: search_users::v3::Request,
) -> Result<search_users::v3::Response> {
    let me = ctx.user_id()?;
    let term = req.search_term.to_lowercase();
    let words: Vec<&str> = term.split_whitespace().collect();
    let limit = u64::from(req.limit).min(MAX_LIMIT) as usize;

    // (rank key, result): users sharing a room first, then those whose name or id starts with
    // the search term, then by user id.
    let mut found = Vec::new();
    for (user, c) in candidates(hs, me).await? {
        let Some((name, avatar)) = profile(hs, &user, &c.room).await? else {
            continue;
        };
        let id_lc = user.as_str().to_lowercase();
        let name_lc = name.as_deref().map(str::to_lowercase).unwrap_or_default();
        if !words
            .iter()
            .all(|w| id_lc.contains(w) || name_lc.contains(w))
        {
            continue;
        }
        let prefix = !term.is_empty()
            && (user.localpart().to_lowercase().starts_with(term.trim())
                || name_lc.starts_with(term.trim()));
        let mut entry = search_users::v3::User::new(user.clone());
        entry.display_name = name;
        entry.avatar_url = avatar.map(OwnedMxcUri::from).filter(|a| a.is_valid());
        found.push(((!c.shares_room, !prefix, user), entry));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let limited = found.len() > limit;
    let results = found.into_iter().take(limit).map(|(_, u)| u).collect();
    Ok(search_users::v3::Response::new(results, limited))
}
