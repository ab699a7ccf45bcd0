//! Rooms: events (PDUs), timelines, current state and memberships.
//!
//! Layout (all keys 0x00-separated, positions big-endian u64):
//! - `events`: event_id → `{"pdu": <signed PDU>, "meta": EventMeta}`
//! - `rooms`: room_id → [`RoomRecord`] (version, forward extremities, depth)
//! - `timeline`: room_id, pos → event_id (the room's events in stream order)
//! - `state`: room_id, type, state_key → event_id (current state)
//! - `state_history`: room_id, pos → `[type, state_key, event_id]` (every state change, so state
//!   at any position can be rebuilt and deltas between positions read directly)
//! - `memberships`: user_id, room_id → [`MembershipRecord`] (the user's current membership)
//! - `room_members`: room_id, user_id → [`MembershipRecord`]
//! - `member_history`: room_id, user_id, pos → membership (for history visibility)
//! - `txn_ids`: user_id, device_id, txn_id → event_id

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use ruma::events::TimelineEventType;
use ruma::events::room::member::MembershipState;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{from_json, key, pos_bytes, pos_from, prefix};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Direction, KeyRange};

/// What the server keeps about an event besides the PDU itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventMeta {
    pub pos: u64,
    /// The content of the state event this one replaced, for `unsigned.prev_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_sender: Option<OwnedUserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces_state: Option<OwnedEventId>,
    /// `(device_id, txn_id)` of the local client that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redacted_because: Option<Value>,
    #[serde(default)]
    pub rejected: bool,
    /// The state group before this event and after it (see `db::state_groups`). `None`
    /// before: the event has no state before it (`m.room.create`) or predates state groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<u64>,
    /// Known only for auth chains and state (from a join or a gap): never in a timeline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
    /// Passed the auth rules at its own place in the graph but not against the room's current
    /// state: stored, never shown to clients, never built upon.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_failed: bool,
    /// For an invite to a room this server is not in: the stripped state the inviting server
    /// sent, and that server (to join or reject through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_state: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_via: Option<ruma::OwnedServerName>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub pdu: Value,
    pub meta: EventMeta,
}

/// A stored event with what the server knows about it.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_type: String,
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    pub raw_content: Box<RawValue>,
    pub origin_server_ts: u64,
    /// The full signed PDU as JSON (redacted if the event was redacted).
    pub json: Value,
    /// Stream position at which it was appended to the timeline.
    pub pos: u64,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
    pub meta: EventMeta,
}

fn bad(what: &str) -> MatrixError {
    MatrixError::unknown(format!("stored event is malformed: {what}"))
}

impl Pdu {
    pub fn from_parts(event_id: OwnedEventId, pdu: Value, meta: EventMeta) -> Result<Self> {
        let obj = pdu.as_object().ok_or_else(|| bad("not an object"))?;
        let str_field = |k: &str| obj.get(k).and_then(Value::as_str);
        let room_id = OwnedRoomId::try_from(str_field("room_id").ok_or_else(|| bad("room_id"))?)
            .map_err(|_| bad("room_id"))?;
        let sender = OwnedUserId::try_from(str_field("sender").ok_or_else(|| bad("sender"))?)
            .map_err(|_| bad("sender"))?;
        let event_type = str_field("type").ok_or_else(|| bad("type"))?.to_owned();
        let content = obj.get("content").cloned().unwrap_or_else(|| json!({}));
        let raw_content = serde_json::value::to_raw_value(&content)?;
        let ids = |k: &str| -> Vec<OwnedEventId> {
            obj.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .filter_map(|s| OwnedEventId::try_from(s).ok())
                        .collect()
                })
                .unwrap_or_default()
        };
        let redacts = content
            .get("redacts")
            .and_then(Value::as_str)
            .or_else(|| str_field("redacts"))
            .and_then(|s| OwnedEventId::try_from(s).ok())
            .filter(|_| event_type == "m.room.redaction");
        Ok(Self {
            event_id,
            room_id,
            sender,
            kind: TimelineEventType::from(event_type.as_str()),
            event_type,
            state_key: str_field("state_key").map(str::to_owned),
            raw_content,
            origin_server_ts: obj
                .get("origin_server_ts")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            prev_events: ids("prev_events"),
            auth_events: ids("auth_events"),
            redacts,
            depth: obj.get("depth").and_then(Value::as_u64).unwrap_or(0),
            pos: meta.pos,
            content,
            json: pdu,
            meta,
        })
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    /// The event in the client format (`ClientEvent`), as `/event`, `/messages` and `/context`
    /// return it. `viewer_device` adds `transaction_id` for the device that sent it.
    pub fn to_client(&self, now_ms: u64, viewer: Option<(&UserId, &str)>) -> Value {
        let mut v = self.to_sync(now_ms, viewer);
        if let Some(o) = v.as_object_mut() {
            o.insert("room_id".into(), json!(self.room_id));
        }
        v
    }

    /// The event in the `/sync` format (no `room_id`).
    pub fn to_sync(&self, now_ms: u64, viewer: Option<(&UserId, &str)>) -> Value {
        let mut unsigned = serde_json::Map::new();
        unsigned.insert(
            "age".into(),
            json!(now_ms.saturating_sub(self.origin_server_ts)),
        );
        if let Some(pc) = &self.meta.prev_content {
            unsigned.insert("prev_content".into(), pc.clone());
            if let Some(ps) = &self.meta.prev_sender {
                unsigned.insert("prev_sender".into(), json!(ps));
            }
            if let Some(r) = &self.meta.replaces_state {
                unsigned.insert("replaces_state".into(), json!(r));
            }
        }
        if let Some(rb) = &self.meta.redacted_because {
            unsigned.insert("redacted_because".into(), rb.clone());
        }
        if let (Some((user, device)), Some((txn_device, txn_id))) = (viewer, &self.meta.txn)
            && user == self.sender
            && device == txn_device
        {
            unsigned.insert("transaction_id".into(), json!(txn_id));
        }
        let mut out = serde_json::Map::new();
        out.insert("content".into(), self.content.clone());
        out.insert("event_id".into(), json!(self.event_id));
        out.insert("origin_server_ts".into(), json!(self.origin_server_ts));
        out.insert("sender".into(), json!(self.sender));
        out.insert("type".into(), json!(self.event_type));
        if let Some(sk) = &self.state_key {
            out.insert("state_key".into(), json!(sk));
        }
        if let Some(r) = &self.redacts {
            // Clients of every room version read `redacts` at the top level too.
            out.insert("redacts".into(), json!(r));
        }
        out.insert("unsigned".into(), Value::Object(unsigned));
        Value::Object(out)
    }

    /// Stripped state (`{content, sender, state_key, type}`), for invites and knocks.
    pub fn to_stripped(&self) -> Value {
        json!({
            "content": self.content,
            "sender": self.sender,
            "state_key": self.state_key.clone().unwrap_or_default(),
            "type": self.event_type,
        })
    }

    pub fn membership(&self) -> Option<MembershipState> {
        if self.event_type != "m.room.member" {
            return None;
        }
        self.content
            .get("membership")
            .and_then(Value::as_str)
            .map(MembershipState::from)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(self.origin_server_ts))
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.raw_content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        self.meta.rejected
    }
}

/// Per-room bookkeeping that is not itself state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: RoomVersionId,
    pub extremities: Vec<OwnedEventId>,
    pub depth: u64,
    #[serde(default)]
    pub created_ts: u64,
    /// The state group of the current state: the resolved state after the extremities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_group: Option<u64>,
    /// For a room joined over federation: the lowest timeline position in use and the lowest
    /// it may use. History fetched by backfill takes the positions below the first, so that
    /// `/messages` finds it going backwards (see `room::backfill`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<(u64, u64)>,
    /// Redactions of this room waiting for their targets (`pending_redactions`), so that an
    /// arriving event looks there only when some wait. `None` for a room recorded before the
    /// count existed: every event looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_redactions: Option<u32>,
    /// The search index's marker: timeline events up to this position are indexed (see
    /// `db::search_index`). `None` for a room recorded before the index was written behind
    /// the timeline: its events were indexed as they arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indexed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: MembershipState,
    pub event_id: OwnedEventId,
    pub pos: u64,
    #[serde(default)]
    pub forgotten: bool,
}

/// The current state of a room: `(type, state_key) → event id`, plus room bookkeeping.
#[derive(Debug, Clone)]
pub struct RoomState {
    pub room_id: OwnedRoomId,
    pub record: RoomRecord,
    pub state: BTreeMap<(String, String), OwnedEventId>,
}

pub type StateKey = (String, String);

pub async fn get_pdu(hs: &Homeserver, event_id: &str) -> Result<Option<Rc<Pdu>>> {
    if let Some(p) = hs.caches.pdus.borrow().get(event_id) {
        return Ok(Some(p.clone()));
    }
    let Ok(id) = OwnedEventId::try_from(event_id) else {
        return Ok(None);
    };
    let Some(stored) = hs
        .get_json::<StoredEvent>("events", event_id.as_bytes())
        .await?
    else {
        return Ok(None);
    };
    let pdu = Rc::new(Pdu::from_parts(id, stored.pdu, stored.meta)?);
    hs.caches.put_pdu(pdu.clone());
    Ok(Some(pdu))
}

pub async fn room_record(hs: &Homeserver, room: &RoomId) -> Result<Option<RoomRecord>> {
    hs.get_json("rooms", room.as_bytes()).await
}

/// The current state of a room, cached.
pub async fn room_state(hs: &Homeserver, room: &RoomId) -> Result<Option<Rc<RoomState>>> {
    if let Some(s) = hs.caches.room_state.borrow().get(room) {
        return Ok(Some(s.clone()));
    }
    let Some(record) = room_record(hs, room).await? else {
        return Ok(None);
    };
    let mut state = BTreeMap::new();
    let pfx = prefix(&[room.as_bytes()]);
    for (k, v) in hs.scan_prefix("state", &pfx).await? {
        let rest = &k[pfx.len()..];
        let mut parts = rest.splitn(2, |b| *b == 0);
        let (Some(t), Some(sk)) = (parts.next(), parts.next()) else {
            continue;
        };
        let id = OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref())
            .map_err(|_| bad("state id"))?;
        state.insert(
            (
                String::from_utf8_lossy(t).into_owned(),
                String::from_utf8_lossy(sk).into_owned(),
            ),
            id,
        );
    }
    let rs = Rc::new(RoomState {
        room_id: room.to_owned(),
        record,
        state,
    });
    hs.caches
        .room_state
        .borrow_mut()
        .insert(room.to_owned(), rs.clone());
    Ok(Some(rs))
}

/// The current state event of `(event_type, state_key)`.
pub async fn state_event(
    hs: &Homeserver,
    room: &RoomId,
    event_type: &str,
    state_key: &str,
) -> Result<Option<Rc<Pdu>>> {
    let Some(rs) = room_state(hs, room).await? else {
        return Ok(None);
    };
    match rs.state.get(&(event_type.to_owned(), state_key.to_owned())) {
        Some(id) => get_pdu(hs, id.as_str()).await,
        None => Ok(None),
    }
}

/// Every event of the current state.
pub async fn current_state_events(hs: &Homeserver, room: &RoomId) -> Result<Vec<Rc<Pdu>>> {
    let Some(rs) = room_state(hs, room).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(rs.state.len());
    for id in rs.state.values() {
        if let Some(p) = get_pdu(hs, id.as_str()).await? {
            out.push(p);
        }
    }
    Ok(out)
}

pub async fn membership_record(
    hs: &Homeserver,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<MembershipRecord>> {
    hs.get_json("room_members", &key(&[room.as_bytes(), user.as_bytes()]))
        .await
}

pub async fn membership(
    hs: &Homeserver,
    room: &RoomId,
    user: &UserId,
) -> Result<Option<MembershipState>> {
    Ok(membership_record(hs, room, user)
        .await?
        .map(|r| r.membership))
}

/// Every member of a room with their membership record.
pub type Members = Vec<(OwnedUserId, MembershipRecord)>;

/// Members of a room with their current membership. Remembered until the room's members
/// change: every send (push evaluation) and every sync (summaries) asks.
pub async fn members(hs: &Homeserver, room: &RoomId) -> Result<Rc<Members>> {
    hs.memo("room_members", room.as_bytes(), room.as_bytes(), || async {
        let pfx = prefix(&[room.as_bytes()]);
        let mut out = Vec::new();
        for (k, v) in hs.scan_prefix("room_members", &pfx).await? {
            let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&k[pfx.len()..]).as_ref())
            else {
                continue;
            };
            out.push((user, from_json::<MembershipRecord>(&v)?));
        }
        Ok(out)
    })
    .await
}

pub async fn joined_members(hs: &Homeserver, room: &RoomId) -> Result<Vec<OwnedUserId>> {
    Ok(members(hs, room)
        .await?
        .iter()
        .filter(|(_, r)| r.membership == MembershipState::Join)
        .map(|(u, _)| u.clone())
        .collect())
}

/// Every room the user has a membership record in (forgotten rooms excluded).
pub async fn rooms_for_user(
    hs: &Homeserver,
    user: &UserId,
) -> Result<Vec<(OwnedRoomId, MembershipState)>> {
    Ok(membership_records_for_user(hs, user)
        .await?
        .into_iter()
        .filter(|(_, r)| !r.forgotten)
        .map(|(room, r)| (room, r.membership))
        .collect())
}

/// Every room the user has a membership record in, with the record. Remembered until the
/// user's memberships change: `/sync` asks several times per request.
pub async fn membership_records_for_user(
    hs: &Homeserver,
    user: &UserId,
) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
    let records = hs
        .memo("memberships", user.as_bytes(), user.as_bytes(), || async {
            let pfx = prefix(&[user.as_bytes()]);
            let mut out = Vec::new();
            for (k, v) in hs.scan_prefix("memberships", &pfx).await? {
                let Ok(room) =
                    OwnedRoomId::try_from(String::from_utf8_lossy(&k[pfx.len()..]).as_ref())
                else {
                    continue;
                };
                out.push((room, from_json::<MembershipRecord>(&v)?));
            }
            Ok(out)
        })
        .await?;
    Ok((*records).clone())
}

pub async fn joined_rooms(hs: &Homeserver, user: &UserId) -> Result<Vec<OwnedRoomId>> {
    Ok(rooms_for_user(hs, user)
        .await?
        .into_iter()
        .filter(|(_, m)| *m == MembershipState::Join)
        .map(|(r, _)| r)
        .collect())
}

/// Everyone joined to at least one room the user is joined to (the user included).
pub async fn users_sharing_room_with(
    hs: &Homeserver,
    user: &UserId,
) -> Result<BTreeSet<OwnedUserId>> {
    let mut out = BTreeSet::from([user.to_owned()]);
    for room in joined_rooms(hs, user).await? {
        out.extend(joined_members(hs, &room).await?);
    }
    Ok(out)
}

/// Records `user`'s membership in a room this server is not in (an invite or knock from or to
/// another server, or the rejection of one), keeping the event itself as an outlier. Call
/// with the write lock held.
pub async fn record_out_of_room_membership(
    hs: &Homeserver,
    user: &UserId,
    mut pdu: Pdu,
) -> Result<()> {
    let membership = pdu
        .membership()
        .ok_or_else(|| MatrixError::unknown("not a membership event"))?;
    let pos = hs.alloc_pos();
    pdu.meta.outlier = true;
    pdu.meta.pos = pos;
    let mut batch = crate::storage::Batch::new();
    batch.put(
        "events",
        pdu.event_id.as_bytes(),
        super::to_json(&StoredEvent {
            pdu: pdu.json.clone(),
            meta: pdu.meta.clone(),
        })?,
    );
    batch.put(
        "memberships",
        key(&[user.as_bytes(), pdu.room_id.as_bytes()]),
        super::to_json(&MembershipRecord {
            membership,
            event_id: pdu.event_id.clone(),
            pos,
            forgotten: false,
        })?,
    );
    hs.commit(batch).await
}

/// Builds, signs, auth-checks and appends a state event as `sender`.
pub async fn send_state_event(
    hs: &Homeserver,
    sender: &UserId,
    room: &RoomId,
    event_type: &str,
    state_key: &str,
    content: Value,
) -> Result<OwnedEventId> {
    let _lock = hs.write_lock().await;
    let mut txn = crate::room::txn::RoomTxn::open(hs, room).await?;
    let pdu = txn
        .append(crate::room::txn::NewEvent::state(
            sender, event_type, state_key, content,
        ))
        .await?;
    txn.commit().await?;
    Ok(pdu.event_id.clone())
}

/// Event ids of the room's timeline with positions in `(from, to]`, newest first when
/// `direction` is backward, at most `limit`.
pub async fn timeline_range(
    hs: &Homeserver,
    room: &RoomId,
    from_exclusive: u64,
    to_inclusive: u64,
    direction: Direction,
    limit: usize,
) -> Result<Vec<(u64, OwnedEventId)>> {
    if to_inclusive <= from_exclusive {
        return Ok(Vec::new());
    }
    let start = key(&[room.as_bytes(), &pos_bytes(from_exclusive)]);
    let end = key(&[room.as_bytes(), &pos_bytes(to_inclusive)]);
    let range = KeyRange::new(
        std::ops::Bound::Excluded(start),
        std::ops::Bound::Included(end),
    );
    let rows = hs.store.scan("timeline", range, direction, limit).await?;
    rows.into_iter()
        .map(|(k, v)| {
            let pos = pos_from(&k).ok_or_else(|| bad("timeline key"))?;
            let id = OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref())
                .map_err(|_| bad("timeline id"))?;
            Ok((pos, id))
        })
        .collect()
}

/// Loads the events of a timeline range.
pub async fn timeline_events(
    hs: &Homeserver,
    room: &RoomId,
    from_exclusive: u64,
    to_inclusive: u64,
    direction: Direction,
    limit: usize,
) -> Result<Vec<Rc<Pdu>>> {
    let mut out = Vec::new();
    for (_, id) in timeline_range(hs, room, from_exclusive, to_inclusive, direction, limit).await? {
        if let Some(p) = get_pdu(hs, id.as_str()).await? {
            out.push(p);
        }
    }
    Ok(out)
}

/// State changes with positions in `(from, to]`, oldest first: `(pos, type, state_key, event_id)`.
pub async fn state_changes(
    hs: &Homeserver,
    room: &RoomId,
    from_exclusive: u64,
    to_inclusive: u64,
) -> Result<Vec<(u64, String, String, OwnedEventId)>> {
    if to_inclusive <= from_exclusive
        || !hs
            .changes
            .part_changed_since("state_history", room.as_bytes(), from_exclusive)
    {
        return Ok(Vec::new());
    }
    let start = key(&[room.as_bytes(), &pos_bytes(from_exclusive)]);
    let end = key(&[room.as_bytes(), &pos_bytes(to_inclusive)]);
    let range = KeyRange::new(
        std::ops::Bound::Excluded(start),
        std::ops::Bound::Included(end),
    );
    let rows = hs
        .store
        .scan("state_history", range, Direction::Forward, usize::MAX)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (k, v) in rows {
        let pos = pos_from(&k).ok_or_else(|| bad("state_history key"))?;
        let (t, sk, id): (String, String, OwnedEventId) = from_json(&v)?;
        out.push((pos, t, sk, id));
    }
    Ok(out)
}

/// The room's state as it was just after position `pos`.
pub async fn state_at(
    hs: &Homeserver,
    room: &RoomId,
    pos: u64,
) -> Result<BTreeMap<StateKey, OwnedEventId>> {
    let mut map = BTreeMap::new();
    for (_, t, sk, id) in state_changes(hs, room, 0, pos).await? {
        map.insert((t, sk), id);
    }
    Ok(map)
}

/// The user's membership in the room just after position `pos`.
pub async fn membership_at(
    hs: &Homeserver,
    room: &RoomId,
    user: &UserId,
    pos: u64,
) -> Result<Option<MembershipState>> {
    let start = prefix(&[room.as_bytes(), user.as_bytes()]);
    let end = key(&[room.as_bytes(), user.as_bytes(), &pos_bytes(pos)]);
    let range = KeyRange::new(
        std::ops::Bound::Included(start),
        std::ops::Bound::Included(end),
    );
    let rows = hs
        .store
        .scan("member_history", range, Direction::Backward, 1)
        .await?;
    Ok(rows
        .first()
        .map(|(_, v)| MembershipState::from(String::from_utf8_lossy(v).as_ref())))
}

/// The event a transaction id already produced, for idempotent sends. Call under the write
/// lock: the first lookup for a device loads all of its ids (see `Caches::txn_ids`).
pub async fn txn_event(
    hs: &Homeserver,
    user: &UserId,
    device: &str,
    txn_id: &str,
) -> Result<Option<OwnedEventId>> {
    let device_key = prefix(&[user.as_bytes(), device.as_bytes()]);
    let parse = |v: &[u8]| OwnedEventId::try_from(String::from_utf8_lossy(v).as_ref()).ok();
    if let Some(ids) = hs.caches.txn_ids.borrow().get(&device_key) {
        return Ok(ids.get(txn_id.as_bytes()).and_then(|v| parse(v)));
    }
    let ids: super::TxnIds = hs
        .scan_prefix("txn_ids", &device_key)
        .await?
        .into_iter()
        .map(|(k, v)| (k[device_key.len()..].to_vec(), v))
        .collect();
    let found = ids.get(txn_id.as_bytes()).and_then(|v| parse(v));
    if ids.len() < super::MAX_CACHED_TXN_IDS_PER_DEVICE {
        hs.caches.txn_ids.borrow_mut().insert(device_key, ids);
    }
    Ok(found)
}

pub fn is_event_id(s: &str) -> bool {
    <&EventId>::try_from(s).is_ok()
}
