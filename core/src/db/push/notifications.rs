//! The notifications that evaluating new events produced, stored so that a message costs a
//! few room-level records however many members the room has.
//!
//! Most members get the same actions for an event (the default `notify`, or nothing for a
//! notice). So an event records its room's **default outcome** once, and only members whose
//! outcome differs get a record of their own (an *exception*): the sender (the default counts
//! every local member; their own messages never notify them), mentioned users (highlight),
//! users who muted the room or ignore the sender, keyword matches, an invited user. Who the
//! default applied to is the room's local members at that event, kept as **spans** per
//! (user, room) that change only when the membership does. An event has a default only when
//! that takes fewer rows: in a room of two, the one notified member's exception is cheaper.
//!
//! Layout of the `notifications` tree. Users, rooms and action sets are interned to `u32` ids
//! (4 bytes big-endian in keys), positions are big-endian `u64`:
//!
//! | key | value |
//! |---|---|
//! | `I` | the next id |
//! | `U` · user | the user's id |
//! | `R` · room | [`RoomRow`]: the room's id, its running default counts, member fingerprint |
//! | `r` room-id | the room id (for `GET /notifications`) |
//! | `A` · actions JSON / `a` actions-id | action set → id / id → action set |
//! | `E` room-id pos | [`EventRow`]: default actions of an event that notifies by default, the room's counts up to it, ts, event id |
//! | `M` room-id | the user ids with an open span in the room |
//! | `S` user-id room-id | [`Span`]s: when the user was among the room's local members, with the room's counts at both ends |
//! | `X` user-id room-id pos | [`Exception`]: the user's own outcome for an event, with their running count difference |
//! | `Y` user-id room-id | the user's latest running count difference in the room |
//!
//! The unread counts of (user, room) with a read receipt at position `r` are the default
//! notifications inside the user's spans after `r` (differences of the room's running counts,
//! kept in the spans and `E` rows) plus their exceptions' differences after `r` (`Y` minus the
//! `X` row at or before `r`): a handful of point reads, and with a receipt at most two
//! one-row scans. `GET /notifications` merges, newest first, each room's `E` rows inside
//! the user's spans with the user's `X` rows there.
//!
//! A message thus costs the room one `E` row (about 80 bytes) and one `X` row for its sender
//! (about 30), or in a room of two one `X` row (about 90), whatever the member count. Nothing
//! is pruned: at that cost the user's notification history can stay complete, as
//! `GET /notifications` lists read ones too (`read: true`), and the `E` rows are what counts
//! against an old read receipt are computed from. Keys of the earlier per-member layout (`n`,
//! `c`, `t`) are neither read nor written.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;

use ruma::push::Action;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::Homeserver;
use crate::db::{from_json, key, pos_bytes, pos_from, to_json};
use crate::error::{MatrixError, Result};
use crate::storage::{Batch, Direction, KeyRange};

const TREE: &str = "notifications";

/// One notification as `GET /notifications` lists it.
#[derive(Debug, Clone)]
pub struct NotificationRecord {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    /// When the notification was produced, ms since the epoch.
    pub ts: u64,
}

/// What evaluating an event against one user's push rules gave.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub user: OwnedUserId,
    /// The actions when they notify; `None` when the event does not notify the user.
    pub actions: Option<Vec<Action>>,
}

/// An event's evaluation: the room's local members when it was appended and each evaluated
/// user's outcome (every local member but the sender, and an invited local user).
pub struct Evaluated<'a> {
    pub room: &'a RoomId,
    pub event_id: &'a OwnedEventId,
    pub sender: &'a UserId,
    pub pos: u64,
    pub ts: u64,
    pub local_members: &'a [&'a OwnedUserId],
    pub outcomes: Vec<Outcome>,
}

/// `R` · room: `[id, notify, highlight, fingerprint]`, the room's running counts of events
/// that notify by default, and a fingerprint of the local member set the spans reflect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RoomRow(u32, u64, u64, u64);

/// `E` room-id pos: `[notify, highlight, actions-id, ts, event id]`, the room's running counts
/// including this event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventRow(u64, u64, u32, u64, OwnedEventId);

/// `S`: `[start, notify, highlight, end]`: the user was a local member at the room's events
/// from position `start` up to (not including) `end` (`None`: still is), and the room's
/// running counts just before `start` and, once ended, just before `end`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Span(u64, u64, u64, Option<(u64, u64, u64)>);

/// `X`: the user's outcome for one event where it differs from what the room's default gave
/// them, and their running difference (notify, highlight) up to and including it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Exception {
    /// Notified with these actions: `[notify, highlight, actions-id, ts, event id]`.
    Notified(i64, i64, u32, u64, OwnedEventId),
    /// Not notified: `[notify, highlight]`.
    Silent(i64, i64),
}

impl Exception {
    fn running(&self) -> (i64, i64) {
        match self {
            Self::Notified(n, h, ..) | Self::Silent(n, h) => (*n, *h),
        }
    }
}

fn id_bytes(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn user_key(user: &UserId) -> Vec<u8> {
    key(&[b"U", user.as_bytes()])
}

fn room_key(room: &RoomId) -> Vec<u8> {
    key(&[b"R", room.as_bytes()])
}

fn room_name_key(rid: u32) -> Vec<u8> {
    cat(&[b"r", &id_bytes(rid)])
}

fn actions_key(json: &str) -> Vec<u8> {
    key(&[b"A", json.as_bytes()])
}

fn actions_name_key(aid: u32) -> Vec<u8> {
    cat(&[b"a", &id_bytes(aid)])
}

fn event_key(rid: u32, pos: u64) -> Vec<u8> {
    cat(&[b"E", &id_bytes(rid), &pos_bytes(pos)])
}

fn members_key(rid: u32) -> Vec<u8> {
    cat(&[b"M", &id_bytes(rid)])
}

fn spans_key(uid: u32, rid: u32) -> Vec<u8> {
    cat(&[b"S", &id_bytes(uid), &id_bytes(rid)])
}

fn exception_key(uid: u32, rid: u32, pos: u64) -> Vec<u8> {
    cat(&[b"X", &id_bytes(uid), &id_bytes(rid), &pos_bytes(pos)])
}

fn running_key(uid: u32, rid: u32) -> Vec<u8> {
    cat(&[b"Y", &id_bytes(uid), &id_bytes(rid)])
}

fn id_from(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

fn corrupt() -> MatrixError {
    MatrixError::unknown("corrupt notification record")
}

/// A record as `batch` would leave it, else as stored.
async fn get_in(hs: &Homeserver, batch: &Batch, key: &[u8]) -> Result<Option<Vec<u8>>> {
    match batch.pending(TREE, key) {
        Some(v) => Ok(v.map(<[u8]>::to_vec)),
        None => Ok(hs.store.get(TREE, key).await?),
    }
}

async fn get_json_in<T: serde::de::DeserializeOwned>(
    hs: &Homeserver,
    batch: &Batch,
    key: &[u8],
) -> Result<Option<T>> {
    get_in(hs, batch, key)
        .await?
        .map(|v| from_json(&v))
        .transpose()
}

async fn allocate_id(hs: &Homeserver, batch: &mut Batch) -> Result<u32> {
    let next: u32 = get_json_in(hs, batch, b"I").await?.unwrap_or(1);
    let after = next
        .checked_add(1)
        .ok_or_else(|| MatrixError::unknown("notification ids exhausted"))?;
    batch.put(TREE, b"I".to_vec(), to_json(&after)?);
    Ok(next)
}

async fn user_id(hs: &Homeserver, batch: &mut Batch, user: &UserId) -> Result<u32> {
    let k = user_key(user);
    if let Some(id) = get_json_in(hs, batch, &k).await? {
        return Ok(id);
    }
    let id = allocate_id(hs, batch).await?;
    batch.put(TREE, k, to_json(&id)?);
    Ok(id)
}

async fn actions_id(hs: &Homeserver, batch: &mut Batch, json: &str) -> Result<u32> {
    let k = actions_key(json);
    if let Some(id) = get_json_in(hs, batch, &k).await? {
        return Ok(id);
    }
    let id = allocate_id(hs, batch).await?;
    batch.put(TREE, k, to_json(&id)?);
    batch.put(TREE, actions_name_key(id), json.as_bytes().to_vec());
    Ok(id)
}

/// The room's row, and whether it is new: created (with a new id) on the room's first
/// notification.
async fn room_row(hs: &Homeserver, batch: &mut Batch, room: &RoomId) -> Result<(RoomRow, bool)> {
    if let Some(row) = get_json_in(hs, batch, &room_key(room)).await? {
        return Ok((row, false));
    }
    let id = allocate_id(hs, batch).await?;
    batch.put(TREE, room_name_key(id), room.as_bytes().to_vec());
    Ok((RoomRow(id, 0, 0, 0), true))
}

fn highlights(actions: &Option<Vec<Action>>) -> bool {
    actions
        .as_ref()
        .is_some_and(|a| a.iter().any(Action::is_highlight))
}

fn actions_json(actions: &Option<Vec<Action>>) -> Result<Option<String>> {
    match actions {
        Some(a) if a.iter().any(Action::should_notify) => Ok(Some(serde_json::to_string(a)?)),
        _ => Ok(None),
    }
}

/// An order-independent fingerprint of a set of users: a change of the room's local members
/// is noticed without reading its member list.
fn fingerprint(users: &[&OwnedUserId]) -> u64 {
    let mut sum = u64::try_from(users.len()).unwrap_or(u64::MAX);
    for u in users {
        // FNV-1a, then splitmix64's finaliser so that sums of similar ids do not cancel.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in u.as_bytes() {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        sum = sum.wrapping_add(h ^ (h >> 31));
    }
    // 0 is a room that never had spans.
    sum.max(1)
}

/// Records an evaluated event into `batch`: the room's default outcome once, and an
/// exception for each user whose outcome differs from what the default gave them.
pub async fn record(hs: &Homeserver, batch: &mut Batch, ev: Evaluated<'_>) -> Result<()> {
    let local: HashSet<&UserId> = ev.local_members.iter().map(|u| u.as_ref()).collect();
    // Each outcome's identity (its actions as JSON; `None`: not notified), computed once.
    let mut outcomes: Vec<(&Outcome, Option<String>)> = Vec::with_capacity(ev.outcomes.len());
    for o in &ev.outcomes {
        outcomes.push((o, actions_json(&o.actions)?));
    }
    // The sender is not evaluated: their own events never notify them.
    let sender_outcome = Outcome {
        user: ev.sender.to_owned(),
        actions: None,
    };
    if !ev.outcomes.iter().any(|o| *o.user == *ev.sender) {
        outcomes.push((&sender_outcome, None));
    }

    // The default is the commonest notifying outcome among the members it applies to (every
    // local member but the sender), when it saves rows: with it, each member whose outcome
    // differs gets a row, and so does the sender (the default counts every local member);
    // without it, each notified member does. A tie goes to "no default".
    let mut groups: Vec<(&str, usize, &Outcome)> = Vec::new();
    let mut silent = 0;
    for (o, json) in &outcomes {
        if *o.user == *ev.sender || !local.contains(o.user.as_ref() as &UserId) {
            continue;
        }
        match json {
            Some(json) => match groups.iter_mut().find(|(j, ..)| j == json) {
                Some(g) => g.1 += 1,
                None => groups.push((json, 1, o)),
            },
            None => silent += 1,
        }
    }
    let sender_is_local = local.contains(ev.sender);
    let default = groups
        .iter()
        .max_by_key(|(_, n, _)| *n)
        .filter(|(_, n, _)| *n > silent + usize::from(sender_is_local))
        .map(|(json, _, o)| (*json, highlights(&o.actions)));
    if default.is_none() && outcomes.iter().all(|(_, json)| json.is_none()) {
        return Ok(());
    }

    let (mut room, new) = room_row(hs, batch, ev.room).await?;
    let before = room;
    let rid = room.0;
    if let Some((json, highlight)) = default {
        update_spans(hs, batch, &mut room, ev.local_members, ev.pos).await?;
        room.1 += 1;
        room.2 += u64::from(highlight);
        let aid = actions_id(hs, batch, json).await?;
        batch.put(
            TREE,
            event_key(rid, ev.pos),
            to_json(&EventRow(room.1, room.2, aid, ev.ts, ev.event_id.clone()))?,
        );
    }
    if new || room != before {
        batch.put(TREE, room_key(ev.room), to_json(&room)?);
    }

    for (o, json) in &outcomes {
        // What the room's default gave this user: it applies to every local member.
        let base = default.filter(|_| local.contains(o.user.as_ref() as &UserId));
        if json.as_deref() == base.map(|(j, _)| j) {
            continue;
        }
        let uid = user_id(hs, batch, &o.user).await?;
        let rk = running_key(uid, rid);
        let (mut n, mut h): (i64, i64) = get_json_in(hs, batch, &rk).await?.unwrap_or((0, 0));
        n += i64::from(json.is_some()) - i64::from(base.is_some());
        h += i64::from(json.is_some() && highlights(&o.actions))
            - i64::from(base.is_some_and(|(_, hl)| hl));
        batch.put(TREE, rk, to_json(&(n, h))?);
        let row = match json {
            Some(json) => Exception::Notified(
                n,
                h,
                actions_id(hs, batch, json).await?,
                ev.ts,
                ev.event_id.clone(),
            ),
            None => Exception::Silent(n, h),
        };
        batch.put(TREE, exception_key(uid, rid, ev.pos), to_json(&row)?);
    }
    Ok(())
}

/// Makes the room's open spans match `members` from `pos` on: spans of users no longer among
/// them end, spans of new ones start. Only runs when the member fingerprint changed.
async fn update_spans(
    hs: &Homeserver,
    batch: &mut Batch,
    room: &mut RoomRow,
    members: &[&OwnedUserId],
    pos: u64,
) -> Result<()> {
    let fp = fingerprint(members);
    if fp == room.3 {
        return Ok(());
    }
    let rid = room.0;
    let open: Vec<u32> = get_json_in(hs, batch, &members_key(rid))
        .await?
        .unwrap_or_default();
    let mut now = Vec::with_capacity(members.len());
    for m in members {
        now.push(user_id(hs, batch, m).await?);
    }
    now.sort_unstable();
    now.dedup();
    for uid in open.iter().filter(|u| now.binary_search(u).is_err()) {
        let k = spans_key(*uid, rid);
        let mut spans: Vec<Span> = get_json_in(hs, batch, &k).await?.unwrap_or_default();
        if let Some(last) = spans.last_mut()
            && last.3.is_none()
        {
            last.3 = Some((pos, room.1, room.2));
        }
        batch.put(TREE, k, to_json(&spans)?);
    }
    for uid in now.iter().filter(|u| !open.contains(u)) {
        let k = spans_key(*uid, rid);
        let mut spans: Vec<Span> = get_json_in(hs, batch, &k).await?.unwrap_or_default();
        spans.push(Span(pos, room.1, room.2, None));
        batch.put(TREE, k, to_json(&spans)?);
    }
    batch.put(TREE, members_key(rid), to_json(&now)?);
    room.3 = fp;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading

async fn stored_json<T: serde::de::DeserializeOwned>(
    hs: &Homeserver,
    key: &[u8],
) -> Result<Option<T>> {
    hs.get_json(TREE, key).await
}

/// The last row at or before `key` among those starting with `prefix`.
async fn last_at_or_before(
    hs: &Homeserver,
    prefix: &[u8],
    key: Vec<u8>,
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let rows = hs
        .store
        .scan(
            TREE,
            KeyRange::new(Bound::Included(prefix.to_vec()), Bound::Included(key)),
            Direction::Backward,
            1,
        )
        .await?;
    Ok(rows.into_iter().next())
}

/// `(notification_count, highlight_count)` of the room for the user: notifications for events
/// after the one their latest `m.read` / `m.read.private` receipt points to.
pub async fn counts(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<(u64, u64)> {
    let (Some(uid), Some(row)) = (
        stored_json::<u32>(hs, &user_key(user)).await?,
        stored_json::<RoomRow>(hs, &room_key(room)).await?,
    ) else {
        return Ok((0, 0));
    };
    let rid = row.0;
    let spans: Vec<Span> = stored_json(hs, &spans_key(uid, rid))
        .await?
        .unwrap_or_default();
    let running: Option<(i64, i64)> = stored_json(hs, &running_key(uid, rid)).await?;
    if spans.is_empty() && running.is_none() {
        return Ok((0, 0));
    }
    let read = crate::client::receipts::read_up_to(hs, user, room).await?;
    let (mut n, mut h) = running.unwrap_or((0, 0));
    if read > 0 && running.is_some() {
        let prefix = cat(&[b"X", &id_bytes(uid), &id_bytes(rid)]);
        if let Some((_, v)) = last_at_or_before(hs, &prefix, exception_key(uid, rid, read)).await? {
            let (rn, rh) = from_json::<Exception>(&v)?.running();
            n -= rn;
            h -= rh;
        }
    }
    let mut at_read: Option<(u64, u64)> = None;
    for Span(start, n0, h0, end) in spans {
        let (end_pos, n1, h1) = end.unwrap_or((u64::MAX, row.1, row.2));
        let (from_n, from_h) = if read < start {
            (n0, h0)
        } else if read < end_pos {
            match at_read {
                Some(c) => c,
                None => {
                    let prefix = cat(&[b"E", &id_bytes(rid)]);
                    let c = match last_at_or_before(hs, &prefix, event_key(rid, read)).await? {
                        Some((_, v)) => {
                            let e: EventRow = from_json(&v)?;
                            (e.0, e.1)
                        }
                        None => (0, 0),
                    };
                    at_read = Some(c);
                    c
                }
            }
        } else {
            continue;
        };
        n = n.saturating_add(i64::try_from(n1.saturating_sub(from_n)).unwrap_or(i64::MAX));
        h = h.saturating_add(i64::try_from(h1.saturating_sub(from_h)).unwrap_or(i64::MAX));
    }
    Ok((
        u64::try_from(n.max(0)).unwrap_or(0),
        u64::try_from(h.max(0)).unwrap_or(0),
    ))
}

/// A room's notifications for the user, newest first, read in chunks below `upper`.
struct RoomCursor {
    rid: u32,
    room_id: OwnedRoomId,
    spans: Vec<Span>,
    upper: u64,
    done: bool,
    /// Notifications read and not yet taken, newest first, by position.
    ready: VecDeque<(u64, Listed)>,
}

/// A notification as its `E` or `X` row gives it.
struct Listed {
    actions_id: u32,
    ts: u64,
    event_id: OwnedEventId,
}

impl RoomCursor {
    fn in_span(&self, pos: u64) -> bool {
        self.spans.iter().any(|Span(start, _, _, end)| {
            pos >= *start && end.is_none_or(|(end_pos, _, _)| pos < end_pos)
        })
    }

    /// Reads the next chunk until a notification is ready or the room has no more.
    async fn fill(&mut self, hs: &Homeserver, uid: u32) -> Result<()> {
        const CHUNK: usize = 64;
        while self.ready.is_empty() && !self.done {
            let events = match self.spans.first() {
                Some(Span(lowest, ..)) if *lowest < self.upper => {
                    hs.store
                        .scan(
                            TREE,
                            KeyRange::new(
                                Bound::Included(event_key(self.rid, *lowest)),
                                Bound::Excluded(event_key(self.rid, self.upper)),
                            ),
                            Direction::Backward,
                            CHUNK,
                        )
                        .await?
                }
                _ => Vec::new(),
            };
            let exceptions = hs
                .store
                .scan(
                    TREE,
                    KeyRange::new(
                        Bound::Included(exception_key(uid, self.rid, 0)),
                        Bound::Excluded(exception_key(uid, self.rid, self.upper)),
                    ),
                    Direction::Backward,
                    CHUNK,
                )
                .await?;
            let floor_of = |rows: &[(Vec<u8>, Vec<u8>)]| -> Result<u64> {
                match rows.last() {
                    Some((k, _)) if rows.len() == CHUNK => pos_from(k).ok_or_else(corrupt),
                    _ => Ok(0),
                }
            };
            let floor = floor_of(&events)?.max(floor_of(&exceptions)?);
            // Position → the user's notification there (`None`: an exception silenced it).
            let mut found: BTreeMap<u64, Option<Listed>> = BTreeMap::new();
            for (k, v) in &events {
                let pos = pos_from(k).ok_or_else(corrupt)?;
                if pos >= floor && self.in_span(pos) {
                    let EventRow(_, _, actions_id, ts, event_id) = from_json(v)?;
                    found.insert(
                        pos,
                        Some(Listed {
                            actions_id,
                            ts,
                            event_id,
                        }),
                    );
                }
            }
            for (k, v) in &exceptions {
                let pos = pos_from(k).ok_or_else(corrupt)?;
                if pos >= floor {
                    let own = match from_json(v)? {
                        Exception::Notified(_, _, actions_id, ts, event_id) => Some(Listed {
                            actions_id,
                            ts,
                            event_id,
                        }),
                        Exception::Silent(..) => None,
                    };
                    found.insert(pos, own);
                }
            }
            self.ready.extend(
                found
                    .into_iter()
                    .rev()
                    .filter_map(|(pos, l)| l.map(|l| (pos, l))),
            );
            self.upper = floor;
            self.done = floor == 0;
        }
        Ok(())
    }
}

/// One page of the user's notifications, newest first, older than position `before` when
/// given. Returns the page and, when more remain, the token of the next page.
pub async fn page(
    hs: &Homeserver,
    user: &UserId,
    before: Option<u64>,
    limit: usize,
    only_highlight: bool,
) -> Result<(Vec<(u64, NotificationRecord)>, Option<u64>)> {
    let Some(uid) = stored_json::<u32>(hs, &user_key(user)).await? else {
        return Ok((Vec::new(), None));
    };
    let upper = before.unwrap_or(u64::MAX);
    // Rooms where the user had spans or has exceptions.
    let mut rooms: HashMap<u32, Vec<Span>> = HashMap::new();
    for kind in [b"S", b"Y"] {
        let prefix = cat(&[kind, &id_bytes(uid)]);
        for (k, v) in hs.scan_prefix(TREE, &prefix).await? {
            let rid = k
                .get(prefix.len()..)
                .and_then(id_from)
                .ok_or_else(corrupt)?;
            let spans = rooms.entry(rid).or_default();
            if kind == b"S" {
                *spans = from_json(&v)?;
            }
        }
    }
    let mut cursors = Vec::with_capacity(rooms.len());
    for (rid, spans) in rooms {
        let name = hs
            .store
            .get(TREE, &room_name_key(rid))
            .await?
            .ok_or_else(corrupt)?;
        let room_id = OwnedRoomId::try_from(String::from_utf8(name).map_err(|_| corrupt())?)
            .map_err(|_| corrupt())?;
        cursors.push(RoomCursor {
            rid,
            room_id,
            spans,
            upper,
            done: upper == 0,
            ready: VecDeque::new(),
        });
    }
    let mut actions_of: HashMap<u32, Vec<Action>> = HashMap::new();
    let mut out: Vec<(u64, NotificationRecord)> = Vec::new();
    loop {
        for c in cursors.iter_mut() {
            c.fill(hs, uid).await?;
        }
        let Some(c) = cursors
            .iter_mut()
            .filter(|c| !c.ready.is_empty())
            .max_by_key(|c| c.ready.front().map(|r| r.0))
        else {
            return Ok((out, None));
        };
        let Some((
            pos,
            Listed {
                actions_id: aid,
                ts,
                event_id,
            },
        )) = c.ready.pop_front()
        else {
            return Ok((out, None));
        };
        let actions = match actions_of.get(&aid) {
            Some(a) => a.clone(),
            None => {
                let json = hs
                    .store
                    .get(TREE, &actions_name_key(aid))
                    .await?
                    .ok_or_else(corrupt)?;
                let a: Vec<Action> = from_json(&json)?;
                actions_of.insert(aid, a.clone());
                a
            }
        };
        let highlight = actions.iter().any(Action::is_highlight);
        if only_highlight && !highlight {
            continue;
        }
        if out.len() >= limit {
            let next = out.last().map(|(p, _)| *p);
            return Ok((out, next));
        }
        out.push((
            pos,
            NotificationRecord {
                room_id: c.room_id.clone(),
                event_id,
                actions,
                highlight,
                ts,
            },
        ));
    }
}
