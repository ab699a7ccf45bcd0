//! `/sync`: initial and incremental, long-polling on the server's notifier.
//!
//! A sync token is the global stream position (`s<pos>`); a sync at `since = p` reports every
//! change with a position above `p`. The response is built from the durable position read at
//! the start, so anything committed meanwhile is reported by the next sync, never lost.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use futures::FutureExt;
use ruma::api::client::filter::{FilterDefinition, RoomEventFilter};
use ruma::api::client::sync::sync_events::v3::{
    Filter, InvitedRoom, JoinedRoom, LeftRoom, Request, Response, State, StateEvents, Timeline,
};
use ruma::api::client::sync::sync_events::{DeviceLists, UnreadNotificationsCount};
use ruma::events::room::member::MembershipState;
use ruma::presence::PresenceState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};

use super::events::filter_matches;
use super::{account_data, filter, keys, presence, raw, to_device, tokens, typing};
use crate::db::rooms::{self, MembershipRecord, Pdu};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Direction;
use crate::visibility::RoomView;
use crate::{Ctx, Homeserver, Session, route};

/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Long polls stay under the browsers' 5-minute fetch cap.
const MAX_TIMEOUT_MS: u64 = 280_000;
/// To-device messages per sync; the rest come with the next one.
const TO_DEVICE_LIMIT: usize = 100;
/// State events sent to stripped-state consumers (invites).
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

pub fn routes(r: &mut Router) {
    route!(r, Request, sync);
}

async fn resolve_filter(
    hs: &Homeserver,
    user: &UserId,
    f: &Option<Filter>,
) -> Result<FilterDefinition> {
    match f {
        None => Ok(FilterDefinition::default()),
        Some(Filter::FilterDefinition(def)) => Ok(def.clone()),
        Some(Filter::FilterId(id)) => filter::load_filter(hs, user, id)
            .await?
            .ok_or_else(|| MatrixError::not_found(format!("unknown filter {id}"))),
        Some(_) => Ok(FilterDefinition::default()),
    }
}

async fn sync(hs: &Homeserver, ctx: Ctx, req: Request) -> Result<Response> {
    let session = ctx.session()?.clone();
    let filter = resolve_filter(hs, &session.user_id, &req.filter).await?;
    let (since, to_device_since) = match &req.since {
        Some(t) => {
            let (pos, td) = tokens::parse_sync(t)?;
            (Some(pos), td.unwrap_or(pos))
        }
        None => (None, 0),
    };
    if req.set_presence != PresenceState::Offline || since.is_none() {
        presence::set_from_sync(hs, &session.user_id, req.set_presence.clone()).await?;
    }
    let timeout_ms = req
        .timeout
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .min(MAX_TIMEOUT_MS);
    let deadline = hs.now_ms() + timeout_ms;
    // Messages delivered by the previous sync may now be forgotten.
    if since.is_some() {
        to_device::ack_to_device(hs, &session.user_id, &session.device_id, to_device_since).await?;
    }
    loop {
        let generation = hs.notifier.generation();
        let resp = build(
            hs,
            &session,
            since.unwrap_or(0),
            to_device_since,
            req.full_state,
            &filter,
        )
        .await?;
        let now = hs.now_ms();
        if since.is_none() || req.full_state || has_news(&resp) || now >= deadline {
            return Ok(resp);
        }
        // Wake at the deadline, or earlier when a typing notice expires.
        let mut wake_at = deadline;
        if let Some(exp) = typing::next_expiry_ms(hs) {
            wake_at = wake_at.min(exp.max(now + 1));
        }
        let sleep = hs
            .world
            .sleep(Duration::from_millis(wake_at.saturating_sub(now)));
        futures::select! {
            _ = hs.notifier.changed_since(generation).fuse() => {},
            _ = sleep.fuse() => {},
        }
    }
}

fn has_news(r: &Response) -> bool {
    !(r.rooms.join.is_empty()
        && r.rooms.invite.is_empty()
        && r.rooms.leave.is_empty()
        && r.rooms.knock.is_empty()
        && r.presence.events.is_empty()
        && r.account_data.events.is_empty()
        && r.to_device.events.is_empty()
        && r.device_lists.changed.is_empty()
        && r.device_lists.left.is_empty())
}

fn room_allowed(filter: &FilterDefinition, room: &RoomId) -> bool {
    let rf = &filter.room;
    if rf.not_rooms.iter().any(|r| r == room) {
        return false;
    }
    rf.rooms
        .as_ref()
        .is_none_or(|rooms| rooms.iter().any(|r| r == room))
}

fn timeline_limit(f: &RoomEventFilter) -> usize {
    f.limit
        .map(|l| u64::from(l) as usize)
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, 1000)
}

/// The timeline of a room in `(since, upto]`: the newest `limit` events that pass the filter
/// and that the user may see, oldest first, and whether older ones were left out.
async fn timeline(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    since: u64,
    upto: u64,
    f: &RoomEventFilter,
) -> Result<(Vec<Rc<Pdu>>, bool)> {
    if !hs
        .changes
        .part_changed_since("timeline", room.as_bytes(), since)
    {
        return Ok((Vec::new(), false));
    }
    // Loaded only for a room with something new: an idle room costs no view.
    let view = RoomView::load(hs, user, room).await?;
    let limit = timeline_limit(f);
    let mut out = Vec::new();
    let mut cursor = upto;
    let mut limited = false;
    'scan: loop {
        // Skip stretches of history the user may not see without reading them.
        match view.candidate_at_or_below(cursor) {
            Some(c) if c > since => cursor = c,
            _ => break,
        }
        let page =
            rooms::timeline_events(hs, room, since, cursor, Direction::Backward, limit + 1).await?;
        if page.is_empty() {
            break;
        }
        for p in page {
            cursor = p.pos.saturating_sub(1);
            if filter_matches(f, &p) && view.allows(&p) {
                if out.len() == limit {
                    limited = true;
                    break 'scan;
                }
                out.push(p);
            }
        }
        if cursor <= since {
            break;
        }
    }
    out.reverse();
    Ok((out, limited))
}

fn state_filter_allows(f: &RoomEventFilter, p: &Pdu) -> bool {
    filter_matches(f, p)
}

/// State for the `state` section: everything at `at` (initial / full_state / newly joined),
/// or the changes in `(since, at]` (incremental). Member events are lazy-loaded when the filter
/// asks: only the senders of `timeline` and the user themselves.
async fn state_section(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    since: Option<u64>,
    at: u64,
    f: &FilterDefinition,
    timeline: &[Rc<Pdu>],
) -> Result<Vec<Rc<Pdu>>> {
    let ids: BTreeMap<rooms::StateKey, ruma::OwnedEventId> = match since {
        None => rooms::state_at(hs, room, at).await?,
        Some(s) => {
            let mut m = BTreeMap::new();
            for (_, t, sk, id) in rooms::state_changes(hs, room, s, at).await? {
                m.insert((t, sk), id);
            }
            m
        }
    };
    let lazy = !f.room.state.lazy_load_options.is_disabled();
    let senders: BTreeSet<&UserId> = timeline.iter().map(|p| &*p.sender).collect();
    let in_timeline: BTreeSet<&ruma::EventId> = timeline.iter().map(|p| &*p.event_id).collect();
    let mut out = Vec::new();
    for ((t, sk), id) in ids {
        if in_timeline.contains(&*id) {
            continue;
        }
        if lazy && t == "m.room.member" && sk != user.as_str() {
            let Ok(member) = <&UserId>::try_from(sk.as_str()) else {
                continue;
            };
            if !senders.contains(member) {
                continue;
            }
        }
        let Some(p) = rooms::get_pdu(hs, id.as_str()).await? else {
            continue;
        };
        if state_filter_allows(&f.room.state, &p) {
            out.push(p);
        }
    }
    // Lazy-loaded members who sent timeline events but whose member event is older than the
    // incremental window still have to be sent once; the client may not have them.
    if lazy && since.is_some() {
        let have: BTreeSet<String> = out.iter().filter_map(|p| p.state_key.clone()).collect();
        let current = rooms::state_at(hs, room, at).await?;
        for s in senders {
            if have.contains(s.as_str()) {
                continue;
            }
            if let Some(id) = current.get(&("m.room.member".to_owned(), s.to_string())) {
                if in_timeline.contains(&**id) {
                    continue;
                }
                if let Some(p) = rooms::get_pdu(hs, id.as_str()).await? {
                    out.push(p);
                }
            }
        }
    }
    Ok(out)
}

/// With lazy-loaded members, a gapless incremental timeline still brings the member events of
/// its senders (but the user), or a client that was never sent them cannot name them. This server
/// does not remember which members each device already has, so it sends them again each time,
/// as the spec lets a server do. The timeline has no gap, so each sender's membership at its start
/// is the current one unless the timeline itself changes it (then the timeline carries it).
async fn senders_members(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    f: &FilterDefinition,
    timeline: &[Rc<Pdu>],
) -> Result<Vec<Rc<Pdu>>> {
    let senders: BTreeSet<&UserId> = timeline
        .iter()
        .map(|p| &*p.sender)
        .filter(|s| *s != user)
        .collect();
    let in_timeline: BTreeSet<&ruma::EventId> = timeline.iter().map(|p| &*p.event_id).collect();
    let mut out = Vec::new();
    for s in senders {
        let Some(p) = rooms::state_event(hs, room, "m.room.member", s.as_str()).await? else {
            continue;
        };
        if !in_timeline.contains(&*p.event_id) && state_filter_allows(&f.room.state, &p) {
            out.push(p);
        }
    }
    Ok(out)
}

async fn sync_events(
    hs: &Homeserver,
    events: &[Rc<Pdu>],
    now_ms: u64,
    s: &Session,
) -> Result<Vec<ruma::serde::Raw<ruma::events::AnySyncTimelineEvent>>> {
    let mut out: Vec<serde_json::Value> = events
        .iter()
        .map(|p| p.to_sync(now_ms, Some((&s.user_id, s.device_id.as_str()))))
        .collect();
    // Timeline events carry their bundled aggregations (edits, threads, references).
    super::relations::bundle(hs, &s.user_id, &mut out).await?;
    out.iter().map(raw).collect()
}

fn state_events<T>(events: &[Rc<Pdu>], now_ms: u64) -> Result<Vec<ruma::serde::Raw<T>>> {
    events
        .iter()
        .map(|p| raw(&p.to_sync(now_ms, None)))
        .collect()
}

async fn summary(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
) -> Result<ruma::api::client::sync::sync_events::v3::RoomSummary> {
    let members = rooms::members(hs, room).await?;
    let mut s = ruma::api::client::sync::sync_events::v3::RoomSummary::new();
    let joined = members
        .iter()
        .filter(|(_, r)| r.membership == MembershipState::Join)
        .count();
    let invited = members
        .iter()
        .filter(|(_, r)| r.membership == MembershipState::Invite)
        .count();
    s.joined_member_count = Some(UInt::new_saturating(joined as u64));
    s.invited_member_count = Some(UInt::new_saturating(invited as u64));
    let has_name = rooms::state_event(hs, room, "m.room.name", "")
        .await?
        .is_some()
        || rooms::state_event(hs, room, "m.room.canonical_alias", "")
            .await?
            .is_some();
    if !has_name {
        s.heroes = members
            .iter()
            .filter(|(u, r)| {
                **u != *user
                    && matches!(
                        r.membership,
                        MembershipState::Join | MembershipState::Invite
                    )
            })
            .map(|(u, _)| u.clone())
            .take(5)
            .collect();
    }
    Ok(s)
}

async fn build(
    hs: &Homeserver,
    s: &Session,
    since: u64,
    to_device_since: u64,
    full_state: bool,
    f: &FilterDefinition,
) -> Result<Response> {
    let user = &s.user_id;
    let now_pos = hs.current_pos();
    let now_ms = hs.now_ms();
    let mut resp = Response::new(tokens::format(now_pos));
    let (global_data, room_data) = account_data::account_data_since(hs, user, since).await?;

    for (room, rec) in rooms::membership_records_for_user(hs, user).await? {
        if rec.forgotten || !room_allowed(f, &room) || rec.pos > now_pos {
            continue;
        }
        match rec.membership {
            MembershipState::Join => {
                if let Some(j) = joined_room(
                    hs, s, &room, &rec, since, now_pos, now_ms, full_state, f, &room_data,
                )
                .await?
                {
                    resp.rooms.join.insert(room, j);
                }
            }
            MembershipState::Invite if rec.pos > since => {
                resp.rooms
                    .invite
                    .insert(room.clone(), invited_room(hs, &room, &rec).await?);
            }
            // Knocks: stripped state and the knock itself (`knock::knocked_room`).
            MembershipState::Knock if rec.pos > since => {
                resp.rooms.knock.insert(
                    room.clone(),
                    super::knock::knocked_room(hs, &room, &rec).await?,
                );
            }
            MembershipState::Leave | MembershipState::Ban
                if (since > 0 && rec.pos > since) || (f.room.include_leave && since == 0) =>
            {
                resp.rooms.leave.insert(
                    room.clone(),
                    left_room(hs, s, &room, &rec, since, now_ms, f).await?,
                );
            }
            _ => {}
        }
    }

    resp.account_data.events = global_data;
    resp.presence.events = presence::presence_since(hs, user, since).await?;
    let (to_device, truncated) = to_device::to_device_since(
        hs,
        user,
        &s.device_id,
        to_device_since,
        now_pos,
        TO_DEVICE_LIMIT,
    )
    .await?;
    resp.to_device.events = to_device;
    resp.next_batch = tokens::format_sync(now_pos, truncated);
    let (changed, left) = keys::device_lists_between(hs, user, since, now_pos).await?;
    resp.device_lists = DeviceLists::new();
    resp.device_lists.changed = changed;
    resp.device_lists.left = left;
    resp.device_one_time_keys_count = keys::one_time_key_counts(hs, user, &s.device_id).await?;
    resp.device_unused_fallback_key_types =
        Some(keys::unused_fallback_key_types(hs, user, &s.device_id).await?);
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    hs: &Homeserver,
    s: &Session,
    room: &OwnedRoomId,
    rec: &MembershipRecord,
    since: u64,
    now_pos: u64,
    now_ms: u64,
    full_state: bool,
    f: &FilterDefinition,
    room_data: &BTreeMap<OwnedRoomId, Vec<ruma::serde::Raw<ruma::events::AnyRoomAccountDataEvent>>>,
) -> Result<Option<JoinedRoom>> {
    let user = &s.user_id;
    // A room joined since the last sync is new to the client: send it whole. (A join → join
    // change, such as a new display name, is not a new join.)
    let fresh = since == 0
        || (rec.pos > since
            && rooms::membership_at(hs, room, user, since).await? != Some(MembershipState::Join));
    let room_since = if fresh { 0 } else { since };
    let (events, limited) = timeline(hs, user, room, room_since, now_pos, &f.room.timeline).await?;
    let start = events
        .first()
        .map(|p| p.pos.saturating_sub(1))
        .unwrap_or(now_pos);
    let state = if fresh || full_state {
        state_section(hs, user, room, None, start, f, &events).await?
    } else if limited {
        state_section(hs, user, room, Some(since), start, f, &events).await?
    } else if !f.room.state.lazy_load_options.is_disabled() {
        senders_members(hs, user, room, f, &events).await?
    } else {
        Vec::new()
    };
    let mut ephemeral = Vec::new();
    if let Some(t) = typing::typing_since(hs, room, since).await? {
        ephemeral.push(t);
    }
    if let Some(r) = super::receipts::receipts_since(hs, user, room, since).await? {
        ephemeral.push(r);
    }
    let account_data = room_data.get(room).cloned().unwrap_or_default();
    if !fresh
        && !full_state
        && events.is_empty()
        && state.is_empty()
        && ephemeral.is_empty()
        && account_data.is_empty()
    {
        return Ok(None);
    }
    let mut j = JoinedRoom::new();
    j.timeline = Timeline::new();
    j.timeline.limited = limited;
    j.timeline.prev_batch = Some(tokens::format(start));
    j.timeline.events = sync_events(hs, &events, now_ms, s).await?;
    let mut st = StateEvents::new();
    st.events = state_events(&state, now_ms)?;
    j.state = State::Before(st);
    j.ephemeral.events = ephemeral;
    j.account_data.events = account_data;
    let (notes, highlights) = super::push::notification_counts(hs, user, room).await?;
    j.unread_notifications = UnreadNotificationsCount::new();
    j.unread_notifications.notification_count = Some(UInt::new_saturating(notes));
    j.unread_notifications.highlight_count = Some(UInt::new_saturating(highlights));
    let members_changed = events
        .iter()
        .chain(state.iter())
        .any(|p| p.event_type == "m.room.member");
    if fresh || members_changed {
        j.summary = summary(hs, user, room).await?;
    }
    Ok(Some(j))
}

async fn invited_room(
    hs: &Homeserver,
    room: &RoomId,
    rec: &MembershipRecord,
) -> Result<InvitedRoom> {
    let mut events = Vec::new();
    let invite = rooms::get_pdu(hs, rec.event_id.as_str()).await?;
    if let Some(invite) = &invite
        && let Some(state) = &invite.meta.invite_state
    {
        // An invite from another server to a room this server is not in: the state its
        // server sent along, then the invite itself.
        for v in state {
            events.push(raw(v)?);
        }
        let mut v = invite.to_stripped();
        v["event_id"] = serde_json::json!(invite.event_id);
        v["origin_server_ts"] = serde_json::json!(invite.origin_server_ts);
        events.push(raw(&v)?);
        let mut r = InvitedRoom::new();
        r.invite_state.events = events;
        return Ok(r);
    }
    for t in STRIPPED_STATE_TYPES {
        if let Some(p) = rooms::state_event(hs, room, t, "").await? {
            events.push(raw(&p.to_stripped())?);
        }
    }
    if let Some(invite) = rooms::get_pdu(hs, rec.event_id.as_str()).await? {
        if let Some(inviter) =
            rooms::state_event(hs, room, "m.room.member", invite.sender.as_str()).await?
        {
            events.push(raw(&inviter.to_stripped())?);
        }
        // The invite itself, with its event id, as clients expect.
        let mut v = invite.to_stripped();
        v["event_id"] = serde_json::json!(invite.event_id);
        v["origin_server_ts"] = serde_json::json!(invite.origin_server_ts);
        events.push(raw(&v)?);
    }
    let mut r = InvitedRoom::new();
    r.invite_state.events = events;
    Ok(r)
}

async fn left_room(
    hs: &Homeserver,
    s: &Session,
    room: &RoomId,
    rec: &MembershipRecord,
    since: u64,
    now_ms: u64,
    f: &FilterDefinition,
) -> Result<LeftRoom> {
    // The timeline stops at the leave (or kick/ban) event. A rescinded knock or rejected
    // invite leaves a room the user never saw: history visibility decides what it shows.
    let (events, limited) =
        timeline(hs, &s.user_id, room, since, rec.pos, &f.room.timeline).await?;
    let start = events
        .first()
        .map(|p| p.pos.saturating_sub(1))
        .unwrap_or(rec.pos);
    let state = if since == 0 || limited {
        state_section(
            hs,
            &s.user_id,
            room,
            (since > 0).then_some(since),
            start,
            f,
            &events,
        )
        .await?
    } else {
        Vec::new()
    };
    let mut l = LeftRoom::new();
    l.timeline = Timeline::new();
    l.timeline.limited = limited;
    l.timeline.prev_batch = Some(tokens::format(start));
    l.timeline.events = sync_events(hs, &events, now_ms, s).await?;
    let mut st = StateEvents::new();
    st.events = state_events(&state, now_ms)?;
    l.state = State::Before(st);
    Ok(l)
}

/// Users of this server with a membership in any room (for presence and device-list fan-out).
pub async fn interested_users(hs: &Homeserver, user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
    rooms::users_sharing_room_with(hs, user).await
}
