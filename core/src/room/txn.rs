//! The room write path, shared by the client and federation APIs. Creating local events: build the PDU, hash and sign it, check it against the auth rules
//! with ruma's `state-res`, and append it to the room — all of one API call in one batch.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue, redact_in_place};
use ruma::events::StateEventType;
use ruma::events::room::member::MembershipState;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{hash_and_sign_event, reference_hash};
use ruma::state_res::{
    auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules,
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use crate::Homeserver;
use crate::db::rooms::{
    EventMeta, MembershipRecord, Pdu, RoomRecord, RoomState, StateKey, StoredEvent, get_pdu,
};
use crate::db::state_groups::{self, PendingGroups};
use crate::db::{key, pos_bytes, to_json};
use crate::error::{MatrixError, Result};
use crate::storage::Batch;

/// An event a local user wants to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub sender: OwnedUserId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
    /// `(device_id, txn_id)` for idempotent sends.
    pub txn: Option<(String, String)>,
    /// Overrides `origin_server_ts` (appservice-style timestamp massaging is not offered to
    /// clients; this exists for deterministic tests).
    pub ts: Option<u64>,
}

impl NewEvent {
    pub fn state(sender: &UserId, event_type: &str, state_key: &str, content: Value) -> Self {
        Self {
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
            txn: None,
            ts: None,
        }
    }

    pub fn message(sender: &UserId, event_type: &str, content: Value) -> Self {
        Self {
            sender: sender.to_owned(),
            event_type: event_type.to_owned(),
            state_key: None,
            content,
            redacts: None,
            txn: None,
            ts: None,
        }
    }

    pub fn with_txn(mut self, device: &str, txn_id: &str) -> Self {
        self.txn = Some((device.to_owned(), txn_id.to_owned()));
        self
    }
}

/// The room versions this server creates and accepts.
pub fn supported_version(v: &RoomVersionId) -> Option<RoomVersionRules> {
    match v {
        RoomVersionId::V6
        | RoomVersionId::V7
        | RoomVersionId::V8
        | RoomVersionId::V9
        | RoomVersionId::V10
        | RoomVersionId::V11 => v.rules(),
        _ => None,
    }
}

/// The spec's limit on `prev_events` (and `auth_events`) per PDU.
pub const MAX_PREV_EVENTS: usize = 20;

/// The largest depth canonical JSON can carry (its integers stop at `2^53 - 1`).
pub const MAX_DEPTH: u64 = (1 << 53) - 1;

pub const SUPPORTED_VERSIONS: &[&str] = &["6", "7", "8", "9", "10", "11"];

/// A room being written to: a working copy of its state plus the batch that will make the
/// new events durable. Hold the server's write lock while one is open.
pub struct RoomTxn<'a> {
    hs: &'a Homeserver,
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    pub rules: RoomVersionRules,
    pub(crate) record: RoomRecord,
    pub state: BTreeMap<StateKey, OwnedEventId>,
    /// State groups this transaction wrote (see `db::state_groups`).
    pub(crate) groups: PendingGroups,
    pending: HashMap<OwnedEventId, Rc<Pdu>>,
    /// Membership changes in this transaction, overriding what storage says.
    pending_members: HashMap<OwnedUserId, MembershipState>,
    pub batch: Batch,
    pub appended: Vec<Rc<Pdu>>,
    /// Set when this server's new events must not be queued for other servers (a join
    /// through `send_join`: the resident server forwards it).
    pub skip_outbound: bool,
    /// Destinations queued by this transaction, to wake the sender for once it is durable.
    outbound: Vec<ruma::OwnedServerName>,
}

impl<'a> RoomTxn<'a> {
    /// Opens an existing room. `M_NOT_FOUND` when this server does not know it.
    pub async fn open(hs: &'a Homeserver, room: &RoomId) -> Result<Self> {
        let rs = crate::db::rooms::room_state(hs, room)
            .await?
            .ok_or_else(|| MatrixError::not_found("this server does not know that room"))?;
        let rules = supported_version(&rs.record.version)
            .ok_or_else(|| MatrixError::unsupported_room_version("room version not supported"))?;
        Ok(Self {
            hs,
            room_id: room.to_owned(),
            version: rs.record.version.clone(),
            rules,
            record: rs.record.clone(),
            state: rs.state.clone(),
            groups: PendingGroups::default(),
            pending: HashMap::new(),
            pending_members: HashMap::new(),
            batch: Batch::new(),
            appended: Vec::new(),
            skip_outbound: false,
            outbound: Vec::new(),
        })
    }

    /// Starts a brand-new room; the first event appended must be its `m.room.create`.
    pub fn create(hs: &'a Homeserver, room: OwnedRoomId, version: RoomVersionId) -> Result<Self> {
        let rules = supported_version(&version).ok_or_else(|| {
            MatrixError::unsupported_room_version(format!(
                "room version {version} is not supported"
            ))
        })?;
        Ok(Self {
            hs,
            room_id: room,
            record: RoomRecord {
                version: version.clone(),
                extremities: Vec::new(),
                depth: 0,
                created_ts: hs.now_ms(),
                current_group: None,
                backfill: None,
                pending_redactions: Some(0),
                indexed: Some(0),
            },
            version,
            rules,
            state: BTreeMap::new(),
            groups: PendingGroups::default(),
            pending: HashMap::new(),
            pending_members: HashMap::new(),
            batch: Batch::new(),
            appended: Vec::new(),
            skip_outbound: false,
            outbound: Vec::new(),
        })
    }

    pub async fn fetch(&self, id: &OwnedEventId) -> Result<Option<Rc<Pdu>>> {
        if let Some(p) = self.pending.get(id) {
            return Ok(Some(p.clone()));
        }
        get_pdu(self.hs, id.as_str()).await
    }

    /// The current (working) state event of `(type, state_key)`.
    pub async fn state_event(&self, event_type: &str, state_key: &str) -> Result<Option<Rc<Pdu>>> {
        match self
            .state
            .get(&(event_type.to_owned(), state_key.to_owned()))
        {
            Some(id) => self.fetch(id).await,
            None => Ok(None),
        }
    }

    pub async fn state_content(&self, event_type: &str, state_key: &str) -> Result<Option<Value>> {
        Ok(self
            .state_event(event_type, state_key)
            .await?
            .map(|p| p.content.clone()))
    }

    /// The user's membership in the working state.
    pub async fn membership(&self, user: &UserId) -> Result<Option<MembershipState>> {
        Ok(self
            .state_event("m.room.member", user.as_str())
            .await?
            .and_then(|p| p.membership()))
    }

    /// Power levels in the working state.
    pub async fn power_levels(&self) -> Result<crate::db::power::PowerLevels> {
        let pl = self.state_content("m.room.power_levels", "").await?;
        let creator = self
            .state_event("m.room.create", "")
            .await?
            .map(|c| c.sender.clone());
        Ok(crate::db::power::PowerLevels::new(
            pl.as_ref(),
            creator.as_deref(),
        ))
    }

    /// The unsigned PDU for `ev` on top of the current extremities, with the auth events the
    /// rules ask for from the working state (loaded, for the synchronous auth checks), how
    /// many extremities it leaves out, and its depth.
    async fn prepare(&self, ev: &NewEvent) -> Result<Prepared> {
        let hs = self.hs;
        let raw_content = serde_json::value::to_raw_value(&ev.content)?;
        let kind = ruma::events::TimelineEventType::from(ev.event_type.as_str());
        let auth_types = auth_types_for_event(
            &kind,
            &ev.sender,
            ev.state_key.as_deref(),
            &raw_content,
            &self.rules.authorization,
        )
        .map_err(|e| {
            MatrixError::bad_json(format!("invalid content for {}: {e}", ev.event_type))
        })?;

        // The auth events, loaded now because the auth-rule callbacks are synchronous.
        let mut auth_state: HashMap<StateKey, Rc<Pdu>> = HashMap::new();
        let mut auth_ids = Vec::new();
        for (t, k) in &auth_types {
            let sk = (t.to_string(), k.clone());
            if let Some(id) = self.state.get(&sk)
                && let Some(p) = self.fetch(id).await?
            {
                auth_ids.push(p.event_id.clone());
                auth_state.insert(sk, p);
            }
        }

        // The new event builds on the newest forward extremities (the spec caps prev_events
        // at 20); those it leaves out stay extremities and are merged by a later event.
        let skip = self
            .record
            .extremities
            .len()
            .saturating_sub(MAX_PREV_EVENTS);
        let prev_events: Vec<OwnedEventId> = self.record.extremities[skip..].to_vec();
        let mut depth = 0;
        for id in &prev_events {
            if let Some(p) = self.fetch(id).await? {
                depth = depth.max(p.depth);
            }
        }
        let depth = depth.saturating_add(1).min(MAX_DEPTH);
        let mut pdu_json = json!({
            "auth_events": auth_ids,
            "content": ev.content,
            "depth": depth,
            "origin_server_ts": ev.ts.unwrap_or_else(|| hs.now_ms()),
            "prev_events": prev_events,
            "room_id": self.room_id,
            "sender": ev.sender,
            "type": ev.event_type,
        });
        if let Some(obj) = pdu_json.as_object_mut() {
            if let Some(sk) = &ev.state_key {
                obj.insert("state_key".into(), json!(sk));
            }
            if let Some(r) = &ev.redacts {
                // Room version 11 moved `redacts` into the content; older versions read it at
                // the top level. The endpoint has already put it into the content.
                if !self.rules.redaction.keep_room_redaction_redacts {
                    obj.insert("redacts".into(), json!(r));
                }
            }
        }
        Ok((pdu_json, auth_state, skip, depth))
    }

    /// The event a remote user would make joining, leaving or knocking (`make_join` and
    /// friends): the unsigned PDU, checked against the current state so that a request the
    /// rules would refuse is refused now.
    pub async fn template(&self, ev: &NewEvent) -> Result<Value> {
        let (pdu_json, auth_state, _, _) = self.prepare(ev).await?;
        let placeholder = OwnedEventId::try_from("$template:hearth.invalid")
            .map_err(|e| MatrixError::unknown(e.to_string()))?;
        let pdu = Pdu::from_parts(placeholder, pdu_json.clone(), EventMeta::default())?;
        check_auth(&self.rules, &pdu, &auth_state)?;
        Ok(pdu_json)
    }

    /// Builds, signs and auth-checks an event, then adds it to the batch and the working state.
    pub async fn append(&mut self, ev: NewEvent) -> Result<Rc<Pdu>> {
        let hs = self.hs;
        crate::limits::event_type(&ev.event_type)?;
        if let Some(sk) = &ev.state_key {
            crate::limits::state_key(sk)?;
        }
        if ev.sender.server_name() == hs.server_name()
            && crate::db::users::flags(hs, &ev.sender).await?.1
        {
            // A suspended account may still leave rooms and redact its own events.
            let leaving = ev.event_type == "m.room.member"
                && ev.state_key.as_deref() == Some(ev.sender.as_str())
                && ev.content.get("membership").and_then(Value::as_str) == Some("leave");
            let own_redaction = match &ev.redacts {
                Some(target) => self
                    .fetch(target)
                    .await?
                    .is_some_and(|p| p.sender == ev.sender),
                None => false,
            };
            if !leaving && !own_redaction {
                return Err(crate::db::users::suspended_error());
            }
        }
        let (pdu_json, auth_state, skip, depth) = self.prepare(&ev).await?;
        let CanonicalJsonValue::Object(mut object) =
            ruma::canonical_json::to_canonical_value(&pdu_json).map_err(|e| {
                MatrixError::bad_json(format!("event is not valid canonical JSON: {e}"))
            })?
        else {
            return Err(MatrixError::unknown("event did not serialise to an object"));
        };
        hash_and_sign_event(
            hs.server_name().as_str(),
            &hs.key.pair,
            &mut object,
            &self.rules.redaction,
        )
        .map_err(|e| match e {
            ruma::signatures::JsonError::PduTooLarge => MatrixError::too_large(format!(
                "the event exceeds the {}-byte limit",
                crate::limits::MAX_PDU_BYTES
            )),
            other => MatrixError::unknown(format!("signing failed: {other}")),
        })?;
        crate::limits::pdu(&object)?;
        let hash = reference_hash(&object, &self.rules)
            .map_err(|e| MatrixError::unknown(format!("hashing: {e}")))?;
        let event_id = OwnedEventId::try_from(format!("${hash}"))
            .map_err(|e| MatrixError::unknown(format!("event id: {e}")))?;

        // What this event replaces in the state, for `unsigned.prev_content`.
        let mut meta = EventMeta {
            txn: ev.txn.clone(),
            state_before: self.current_group().await?,
            ..EventMeta::default()
        };
        if let Some(sk) = &ev.state_key
            && let Some(prev_id) = self.state.get(&(ev.event_type.clone(), sk.clone()))
            && let Some(prev) = self.fetch(prev_id).await?
        {
            meta.prev_content = Some(prev.content.clone());
            meta.prev_sender = Some(prev.sender.clone());
            meta.replaces_state = Some(prev.event_id.clone());
        }
        let mut pdu = Pdu::from_parts(event_id.clone(), serde_json::to_value(&object)?, meta)?;

        check_auth(&self.rules, &pdu, &auth_state)?;

        // Append.
        let pos = hs.alloc_pos();
        pdu.pos = pos;
        pdu.meta.pos = pos;
        if let Some(sk) = pdu.state_key.clone() {
            let mut after = self.state.clone();
            after.insert((pdu.event_type.clone(), sk), event_id.clone());
            let group = state_groups::store(
                hs,
                &mut self.batch,
                &mut self.groups,
                pdu.meta.state_before,
                after,
            )
            .await?;
            pdu.meta.state_after = Some(group);
        } else {
            pdu.meta.state_after = pdu.meta.state_before;
        }
        self.put_event(&pdu)?;
        self.batch.put(
            "timeline",
            key(&[self.room_id.as_bytes(), &pos_bytes(pos)]),
            event_id.as_bytes(),
        );
        if let Some(sk) = &pdu.state_key {
            let sk = sk.clone();
            self.set_current(&pdu.event_type.clone(), &sk, Some(&pdu), pos)?;
        }
        self.record.current_group = pdu.meta.state_after;
        if let Some((device, txn_id)) = &ev.txn {
            self.batch.put(
                "txn_ids",
                key(&[ev.sender.as_bytes(), device.as_bytes(), txn_id.as_bytes()]),
                event_id.as_bytes(),
            );
        }
        let mut extremities: Vec<OwnedEventId> = self.record.extremities[..skip].to_vec();
        extremities.push(event_id.clone());
        self.record.extremities = extremities;
        self.record.depth = self.record.depth.max(depth);
        self.index_and_effects(pdu).await
    }

    /// What every event that reaches the timeline gets, local or remote: the relation and
    /// search indexes, push rules and notifications, and its redaction taking effect.
    pub(crate) async fn index_and_effects(&mut self, pdu: Pdu) -> Result<Rc<Pdu>> {
        let pos = pdu.pos;
        // Index relations (`m.relates_to`) so that `/relations`, threads and aggregations can
        // find an event's children without scanning the room.
        if let Some(rel) = pdu.content.get("m.relates_to")
            && let (Some(rel_type), Some(parent)) = (
                rel.get("rel_type").and_then(Value::as_str),
                rel.get("event_id").and_then(Value::as_str),
            )
        {
            self.batch.put(
                "relations",
                key(&[parent.as_bytes(), rel_type.as_bytes(), &pos_bytes(pos)]),
                pdu.event_id.as_bytes(),
            );
            // Thread activity per room, for `/threads` (layout in db/relations.rs).
            if rel_type == crate::db::relations::THREAD {
                crate::db::relations::index_thread_activity(
                    &mut self.batch,
                    &self.room_id,
                    pos,
                    parent,
                );
            }
        }
        // The search index follows behind (db/search_index.rs). A room whose events were
        // indexed as they arrived starts its marker here.
        if self.record.indexed.is_none() {
            self.record.indexed = Some(pos.saturating_sub(1));
        }
        let pdu = Rc::new(pdu);
        // Visible to this transaction first: a redaction waiting for it finds it.
        self.pending.insert(pdu.event_id.clone(), pdu.clone());
        self.after_append(&pdu).await?;
        self.appended.push(pdu.clone());
        Ok(pdu)
    }

    /// Keeps an event that is not (yet) part of the timeline: an auth or state event learned
    /// from a join or a gap, or a soft-failed one. It is stored, findable by id, and never
    /// shown in a timeline.
    pub(crate) fn add_outlier(&mut self, pdu: Pdu) -> Result<Rc<Pdu>> {
        self.put_event(&pdu)?;
        let pdu = Rc::new(pdu);
        self.pending.insert(pdu.event_id.clone(), pdu.clone());
        Ok(pdu)
    }

    /// Keeps an already written event in this transaction's view (and the cache after the
    /// commit).
    pub(crate) fn add_outlier_cached(&mut self, pdu: Pdu) -> Rc<Pdu> {
        let pdu = Rc::new(pdu);
        self.pending.insert(pdu.event_id.clone(), pdu.clone());
        pdu
    }

    pub(crate) fn set_backfill(&mut self, lowest: u64, floor: u64) {
        self.record.backfill = Some((lowest, floor));
    }

    pub fn hs(&self) -> &'a Homeserver {
        self.hs
    }

    pub fn record(&self) -> &RoomRecord {
        &self.record
    }

    /// The state group of the working state, creating it for a room that predates state
    /// groups. `None` while the room has no state (before its `m.room.create`).
    pub(crate) async fn current_group(&mut self) -> Result<Option<u64>> {
        if self.record.current_group.is_none() && !self.state.is_empty() {
            let group = state_groups::store(
                self.hs,
                &mut self.batch,
                &mut self.groups,
                None,
                self.state.clone(),
            )
            .await?;
            self.record.current_group = Some(group);
        }
        Ok(self.record.current_group)
    }

    /// Writes the event row.
    pub(crate) fn put_event(&mut self, pdu: &Pdu) -> Result<()> {
        self.batch.put(
            "events",
            pdu.event_id.as_bytes(),
            to_json(&StoredEvent {
                pdu: pdu.json.clone(),
                meta: pdu.meta.clone(),
            })?,
        );
        Ok(())
    }

    /// Makes `event` (or nothing) the current state of `(event_type, state_key)` as of stream
    /// position `pos`, with everything derived from it: the membership tables, and the state
    /// history that `/sync` reads deltas from.
    pub(crate) fn set_current(
        &mut self,
        event_type: &str,
        state_key: &str,
        event: Option<&Pdu>,
        pos: u64,
    ) -> Result<()> {
        let room = self.room_id.as_bytes();
        let state_row = key(&[room, event_type.as_bytes(), state_key.as_bytes()]);
        let sk = (event_type.to_owned(), state_key.to_owned());
        let Some(pdu) = event else {
            // Only state resolution removes a key, and only from a state no client saw as
            // final; the history keeps the last event so that `/sync` deltas stay readable.
            self.batch.delete("state", state_row);
            self.state.remove(&sk);
            return Ok(());
        };
        let event_id = &pdu.event_id;
        self.batch.put("state", state_row, event_id.as_bytes());
        self.batch.put(
            "state_history",
            key(&[room, &pos_bytes(pos)]),
            to_json(&(event_type, state_key, event_id))?,
        );
        self.state.insert(sk, event_id.clone());
        if let (Some(m), Ok(target)) = (pdu.membership(), OwnedUserId::try_from(state_key)) {
            let rec = to_json(&MembershipRecord {
                membership: m.clone(),
                event_id: event_id.clone(),
                pos,
                forgotten: false,
            })?;
            self.batch
                .put("room_members", key(&[room, target.as_bytes()]), rec.clone());
            self.batch
                .put("memberships", key(&[target.as_bytes(), room]), rec);
            self.batch.put(
                "member_history",
                key(&[room, target.as_bytes(), &pos_bytes(pos)]),
                m.as_str().as_bytes(),
            );
            self.pending_members.insert(target, m);
        }
        Ok(())
    }

    /// Side effects of a new event that belong in the same batch: notifications and redaction.
    async fn after_append(&mut self, pdu: &Rc<Pdu>) -> Result<()> {
        let members = self.joined_members().await?;
        crate::db::push::evaluate_event(self.hs, &mut self.batch, pdu, &members).await?;
        if let Some(target) = pdu.redacts.clone() {
            match self.fetch(&target).await? {
                Some(t) => {
                    if self.may_redact(pdu, &t).await? {
                        self.apply_redaction(pdu, &target).await?;
                    } else {
                        tracing::info!(redaction = %pdu.event_id, %target, "redaction not allowed: ignored");
                    }
                }
                // Its target has not arrived (a remote redaction can overtake it): it takes
                // effect when the target comes.
                None => {
                    self.batch.put(
                        "pending_redactions",
                        key(&[target.as_bytes(), pdu.event_id.as_bytes()]),
                        Vec::new(),
                    );
                    if let Some(n) = self.record.pending_redactions.as_mut() {
                        *n = n.saturating_add(1);
                    }
                }
            }
        }
        if pdu.sender.server_name() != self.hs.server_name()
            && self.record.pending_redactions != Some(0)
        {
            let pfx = crate::db::prefix(&[pdu.event_id.as_bytes()]);
            let mut waiting: Vec<Vec<u8>> = self
                .hs
                .scan_prefix("pending_redactions", &pfx)
                .await?
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            // Those this transaction recorded itself are not in storage yet.
            for op in &self.batch.ops {
                if let crate::storage::Op::Put { tree, key, .. } = op
                    && *tree == "pending_redactions"
                    && key.starts_with(&pfx)
                    && !waiting.contains(key)
                {
                    waiting.push(key.clone());
                }
            }
            for k in waiting {
                if self.batch.pending("pending_redactions", &k) == Some(None) {
                    continue;
                }
                let Ok(id) =
                    OwnedEventId::try_from(String::from_utf8_lossy(&k[pfx.len()..]).as_ref())
                else {
                    continue;
                };
                self.batch.delete("pending_redactions", k.clone());
                if let Some(n) = self.record.pending_redactions.as_mut() {
                    *n = n.saturating_sub(1);
                }
                if let Some(redaction) = self.fetch(&id).await?
                    && self.may_redact(&redaction, pdu).await?
                {
                    self.apply_redaction(&redaction, &pdu.event_id).await?;
                }
            }
        }
        Ok(())
    }

    /// The spec's redaction check, which the auth rules leave to servers: a user may redact
    /// events of their own server's users (their server vouches for them), or anything when
    /// their power level reaches `redact`. Local redactions were checked by the endpoint too.
    async fn may_redact(&self, redaction: &Pdu, target: &Pdu) -> Result<bool> {
        if redaction.room_id != target.room_id {
            return Ok(false);
        }
        if redaction.sender.server_name() == target.sender.server_name() {
            return Ok(true);
        }
        let power = self.power_levels().await?;
        Ok(power.user(&redaction.sender) >= power.redact())
    }

    /// Joined members as of the working state.
    pub async fn joined_members(&self) -> Result<Vec<OwnedUserId>> {
        let mut joined: Vec<OwnedUserId> = crate::db::rooms::joined_members(self.hs, &self.room_id)
            .await?
            .into_iter()
            .filter(|u| !self.pending_members.contains_key(u))
            .collect();
        joined.extend(
            self.pending_members
                .iter()
                .filter(|(_, m)| **m == MembershipState::Join)
                .map(|(u, _)| u.clone()),
        );
        Ok(joined)
    }

    /// Replaces the stored target event with its redacted form, per the room version's
    /// redaction algorithm. The endpoint has checked that the sender may redact it.
    async fn apply_redaction(&mut self, redaction: &Rc<Pdu>, target: &OwnedEventId) -> Result<()> {
        let Some(orig) = self.fetch(target).await? else {
            return Ok(());
        };
        if orig.room_id != self.room_id || orig.meta.redacted_because.is_some() {
            return Ok(());
        }
        // A redacted text is no longer searchable. Past the marker it is not indexed yet, and
        // the indexer will read the redacted event.
        if self.record.indexed.is_none_or(|marker| orig.pos <= marker) {
            crate::db::search_index::unindex_event(&mut self.batch, &orig);
        }
        let CanonicalJsonValue::Object(mut object) =
            ruma::canonical_json::to_canonical_value(&orig.json)
                .map_err(|e| MatrixError::unknown(format!("stored event: {e}")))?
        else {
            return Ok(());
        };
        let because_json = redaction.to_client(self.hs.now_ms(), None);
        // `redacted_because` lives in our event metadata, not in the stored PDU.
        redact_in_place(&mut object, &self.rules.redaction, None)
            .map_err(|e| MatrixError::unknown(format!("redaction failed: {e}")))?;
        let mut meta = orig.meta.clone();
        meta.redacted_because = Some(because_json);
        // prev_content of a redacted state event is redacted along with it.
        meta.prev_content = meta.prev_content.take().map(|mut pc| {
            if let Ok(CanonicalJsonValue::Object(mut c)) =
                ruma::canonical_json::to_canonical_value(&pc)
            {
                ruma::canonical_json::redact_content_in_place(
                    &mut c,
                    &self.rules.redaction,
                    &orig.event_type,
                );
                pc = serde_json::to_value(&c).unwrap_or(Value::Null);
            }
            pc
        });
        let redacted = Pdu::from_parts(orig.event_id.clone(), canonical_to_value(&object)?, meta)?;
        self.batch.put(
            "events",
            orig.event_id.as_bytes(),
            to_json(&StoredEvent {
                pdu: redacted.json.clone(),
                meta: redacted.meta.clone(),
            })?,
        );
        self.pending
            .insert(orig.event_id.clone(), Rc::new(redacted));
        Ok(())
    }

    /// Queues this server's new events for every other server in the room, and for the
    /// server of a user whose membership they change (a kicked or invited user's server must
    /// learn of it too).
    async fn queue_outbound(&mut self) -> Result<()> {
        let hs = self.hs;
        if self.skip_outbound {
            return Ok(());
        }
        let local: Vec<OwnedEventId> = self
            .appended
            .iter()
            .filter(|p| p.sender.server_name() == hs.server_name())
            .map(|p| p.event_id.clone())
            .collect();
        if local.is_empty() {
            return Ok(());
        }
        let mut dests: std::collections::BTreeSet<ruma::OwnedServerName> = self
            .joined_members()
            .await?
            .iter()
            .map(|u| u.server_name().to_owned())
            .collect();
        for p in &self.appended {
            if p.event_type == "m.room.member"
                && let Some(target) = p
                    .state_key
                    .as_deref()
                    .and_then(|s| <&UserId>::try_from(s).ok())
            {
                dests.insert(target.server_name().to_owned());
            }
        }
        dests.remove(hs.server_name());
        if dests.is_empty() {
            return Ok(());
        }
        for id in local {
            let queued = crate::federation::outbox::enqueue(
                hs,
                &mut self.batch,
                dests.iter().map(|d| &**d),
                &crate::federation::outbox::Item::Pdu(id),
            )?;
            self.outbound.extend(queued);
        }
        Ok(())
    }

    /// Makes everything durable in one write and publishes the new state to the caches.
    pub async fn commit(mut self) -> Result<Vec<Rc<Pdu>>> {
        if self.appended.is_empty() && self.batch.ops.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.finish().await?;
        self.hs.commit(batch).await?;
        Ok(self.publish())
    }

    /// [`RoomTxn::commit`] up to the point where storage has the write, and with the caches
    /// showing it already: the caller may release the write lock and then await
    /// [`Issued::durable`] (`None` when there was nothing to write). Readers without the lock
    /// may see the new state in the caches slightly before `/sync` shows its events.
    ///
    /// [`Issued::durable`]: crate::write::Issued::durable
    pub async fn issue(mut self) -> Result<(Vec<Rc<Pdu>>, Option<crate::write::Issued>)> {
        if self.appended.is_empty() && self.batch.ops.is_empty() {
            return Ok((Vec::new(), None));
        }
        let batch = self.finish().await?;
        let issued = self.hs.issue(batch).await?;
        Ok((self.publish(), Some(issued)))
    }

    /// Takes the batch (with the room record) out, for a caller that writes several rooms in
    /// one commit. Call [`RoomTxn::publish`] after the write succeeded.
    pub async fn finish(&mut self) -> Result<Batch> {
        self.queue_outbound().await?;
        let mut batch = std::mem::take(&mut self.batch);
        if !self.appended.is_empty() || !batch.ops.is_empty() {
            batch.put("rooms", self.room_id.as_bytes(), to_json(&self.record)?);
        }
        Ok(batch)
    }

    /// Publishes the written events and state to the caches.
    pub fn publish(self) -> Vec<Rc<Pdu>> {
        let hs = self.hs;
        if !self.appended.is_empty() {
            hs.search.note(&self.room_id);
        }
        self.groups.publish(hs);
        if !self.outbound.is_empty() {
            crate::federation::outbox::queued(hs, self.outbound.iter().cloned());
        }
        for p in self.pending.values() {
            hs.caches.put_pdu(p.clone());
        }
        hs.caches.room_state.borrow_mut().insert(
            self.room_id.clone(),
            Rc::new(RoomState {
                room_id: self.room_id.clone(),
                record: self.record,
                state: self.state,
            }),
        );
        self.appended
    }
}

type Prepared = (Value, HashMap<StateKey, Rc<Pdu>>, usize, u64);

/// Authorization, in the order ruma-state-res documents: state-independent rules against the
/// auth events, then the state-dependent rules against the state the auth events come from.
fn check_auth(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth_state: &HashMap<StateKey, Rc<Pdu>>,
) -> Result<()> {
    let by_id: HashMap<&OwnedEventId, &Pdu> =
        auth_state.values().map(|p| (&p.event_id, &**p)).collect();
    check_state_independent_auth_rules(&rules.authorization, pdu, |id| {
        by_id.get(&id.to_owned()).copied()
    })
    .map_err(|e| MatrixError::forbidden(format!("event not allowed: {e}")))?;
    check_state_dependent_auth_rules(&rules.authorization, pdu, |t: &StateEventType, k: &str| {
        auth_state.get(&(t.to_string(), k.to_owned())).map(|p| &**p)
    })
    .map_err(|e| MatrixError::forbidden(format!("event not allowed: {e}")))?;
    Ok(())
}

fn canonical_to_value(object: &CanonicalJsonObject) -> Result<Value> {
    Ok(serde_json::to_value(object)?)
}
