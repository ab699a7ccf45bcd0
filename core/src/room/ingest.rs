//! A PDU from another server, through the checks the spec lists for a received PDU, in its
//! order: format and size, signatures, content hash (redacting on a mismatch), auth against
//! the event's own auth events, auth against the state before the event, and a soft-fail
//! check against the room's current state.
//!
//! Steps 1–3 ([`verify`]) need no lock and may fetch signing keys. Steps 4–6 and the write
//! ([`accept`]) run inside a [`RoomTxn`], under the write lock; they never touch the network:
//! an event whose predecessors are unknown comes back as [`Refusal::Missing`], and the
//! caller fetches them first (see `federation::receive`).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use ruma::canonical_json::{CanonicalJsonValue, redact_in_place};
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{
    PublicKeyMap, Verified, reference_hash, required_server_signatures_to_verify_event,
    verify_event,
};
use ruma::state_res::{
    auth_types_for_event, check_pdu_format, check_state_dependent_auth_rules,
    check_state_independent_auth_rules,
};
use ruma::{OwnedEventId, RoomId};

use super::graph;
use crate::Homeserver;
use crate::db::rooms::{EventMeta, Pdu, StateKey, get_pdu};
use crate::db::state_groups::{self, StateMap};
use crate::error::{MatrixError, Result};
use crate::room::txn::RoomTxn;

/// Why a PDU was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed PDU: {0}")]
    Format(String),
    #[error("bad signatures: {0}")]
    Signatures(String),
    #[error("not allowed by its auth events: {0}")]
    AuthEvents(String),
    #[error("not allowed by the state before it: {0}")]
    StateBefore(String),
    /// Events it refers to that this server does not have (or has without their state).
    #[error("refers to {} unknown event(s)", .0.len())]
    Missing(Vec<OwnedEventId>),
}

/// How an accepted PDU ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// In the timeline and, for a state event, the state.
    Timeline,
    /// Allowed where it sits in the graph but not by the current state: kept, never shown.
    SoftFailed,
    /// Already known.
    Duplicate,
}

/// Steps 1 to 3: the PDU's format and size, every required signature, and its content hash.
/// Returns the event with its id (redacted if its content hash did not match).
pub async fn verify(
    hs: &Homeserver,
    rules: &RoomVersionRules,
    room: &RoomId,
    value: &serde_json::Value,
) -> std::result::Result<Pdu, Refusal> {
    let format = |e: String| Refusal::Format(e);
    let CanonicalJsonValue::Object(mut object) = ruma::canonical_json::to_canonical_value(value)
        .map_err(|e| format(format!("not canonical JSON: {e}")))?
    else {
        return Err(format("not a JSON object".into()));
    };
    crate::limits::pdu(&object).map_err(|e| format(e.error.clone()))?;
    check_pdu_format(&object, &rules.event_format).map_err(format)?;
    match object.get("room_id") {
        Some(CanonicalJsonValue::String(r)) if r == room.as_str() => {}
        _ => return Err(format(format!("not an event of {room}"))),
    }

    let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
        .map_err(|e| Refusal::Signatures(e.to_string()))?;
    let signatures = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(s)) => s.clone(),
        _ => return Err(Refusal::Signatures("no signatures".into())),
    };
    let mut keys: PublicKeyMap = BTreeMap::new();
    for server in &servers {
        let Some(CanonicalJsonValue::Object(by_key)) = signatures.get(server.as_str()) else {
            return Err(Refusal::Signatures(format!("not signed by {server}")));
        };
        let mut set = BTreeMap::new();
        for key_id in by_key.keys() {
            if let Ok(k) = crate::federation::server_keys::request_key(hs, server, key_id).await {
                set.insert(key_id.clone(), k);
            }
        }
        if set.is_empty() {
            return Err(Refusal::Signatures(format!("no usable key of {server}")));
        }
        keys.insert(server.to_string(), set);
    }
    let verified =
        verify_event(&keys, &object, rules).map_err(|e| Refusal::Signatures(e.to_string()))?;
    let hash = reference_hash(&object, rules).map_err(|e| format(e.to_string()))?;
    let event_id =
        OwnedEventId::try_from(format!("${hash}")).map_err(|e| format(format!("event id: {e}")))?;
    if verified == Verified::Signatures {
        // The spec: an event whose content does not match its hash is kept redacted.
        tracing::info!(%event_id, "content hash mismatch: keeping the event redacted");
        redact_in_place(&mut object, &rules.redaction, None)
            .map_err(|e| format(format!("redaction: {e}")))?;
    }
    let json = serde_json::to_value(&object).map_err(|e| format(e.to_string()))?;
    Pdu::from_parts(event_id, json, EventMeta::default()).map_err(|e| format(e.error.clone()))
}

/// Steps 4 to 6, then the write: the event joins the graph, and the room's current state
/// becomes the resolution of its forward extremities.
pub async fn accept(
    txn: &mut RoomTxn<'_>,
    mut pdu: Pdu,
) -> std::result::Result<Accepted, AcceptError> {
    if let Some(known) = txn.fetch(&pdu.event_id).await?
        && (!known.meta.outlier || known.meta.state_after.is_some())
    {
        return Ok(Accepted::Duplicate);
    }

    // 4. Auth against its own auth events, which must all be known.
    let mut auth: HashMap<OwnedEventId, Rc<Pdu>> = HashMap::new();
    let mut missing = Vec::new();
    for id in &pdu.auth_events {
        match txn.fetch(id).await? {
            Some(p) if p.room_id == pdu.room_id => {
                auth.insert(id.clone(), p);
            }
            Some(_) => {
                return Err(
                    Refusal::AuthEvents(format!("auth event {id} is in another room")).into(),
                );
            }
            None => missing.push(id.clone()),
        }
    }
    // Its parents must be known with their state (a timeline event, or an outlier whose
    // state came from `/state_ids`).
    let mut prevs = Vec::with_capacity(pdu.prev_events.len());
    for id in &pdu.prev_events {
        match txn.fetch(id).await? {
            Some(p)
                if p.room_id == pdu.room_id
                    && (!p.meta.outlier || p.meta.state_after.is_some()) =>
            {
                prevs.push(p)
            }
            Some(p) if p.room_id != pdu.room_id => {
                return Err(Refusal::Format(format!("prev event {id} is in another room")).into());
            }
            _ => missing.push(id.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(Refusal::Missing(missing).into());
    }
    check_auth_events(&txn.rules, &pdu, &auth)?;
    let rules = txn.rules.clone();

    // 5. Auth against the state before the event, resolved from its parents.
    let (before_group, before) = graph::state_before(txn, &prevs).await?;
    let before_events = load_auth_state(txn, &pdu, &before).await?;
    if let Err(e) = check_state_dependent_auth_rules(&rules.authorization, &pdu, |t, k| {
        before_events
            .get(&(t.to_string(), k.to_owned()))
            .map(|p| &**p)
    }) {
        return Err(Refusal::StateBefore(e.to_string()).into());
    }

    // 6. Soft fail against the current state.
    let current = txn.state.clone();
    let current_events = load_auth_state(txn, &pdu, &current).await?;
    let soft_failed = check_state_dependent_auth_rules(&rules.authorization, &pdu, |t, k| {
        current_events
            .get(&(t.to_string(), k.to_owned()))
            .map(|p| &**p)
    })
    .is_err();

    // The write.
    let hs = txn.hs();
    pdu.meta.state_before = before_group;
    pdu.meta.state_after = before_group;
    if let Some(sk) = pdu.state_key.clone() {
        let mut after = (*before).clone();
        if let Some(prev) = after.insert((pdu.event_type.clone(), sk), pdu.event_id.clone())
            && let Some(p) = txn.fetch(&prev).await?
        {
            pdu.meta.prev_content = Some(p.content.clone());
            pdu.meta.prev_sender = Some(p.sender.clone());
            pdu.meta.replaces_state = Some(p.event_id.clone());
        }
        let group =
            state_groups::store(hs, &mut txn.batch, &mut txn.groups, before_group, after).await?;
        pdu.meta.state_after = Some(group);
    }
    if soft_failed {
        tracing::info!(event_id = %pdu.event_id, "soft-failed against the current state");
        pdu.meta.soft_failed = true;
        txn.add_outlier(pdu)?;
        return Ok(Accepted::SoftFailed);
    }
    let pos = hs.alloc_pos();
    pdu.pos = pos;
    pdu.meta.pos = pos;
    pdu.meta.outlier = false;
    txn.put_event(&pdu)?;
    txn.batch.put(
        "timeline",
        crate::db::key(&[pdu.room_id.as_bytes(), &crate::db::pos_bytes(pos)]),
        pdu.event_id.as_bytes(),
    );
    let mut extremities: Vec<OwnedEventId> = txn
        .record
        .extremities
        .iter()
        .filter(|e| !pdu.prev_events.contains(e))
        .cloned()
        .collect();
    extremities.push(pdu.event_id.clone());
    txn.record.extremities = extremities;
    txn.record.depth = txn.record.depth.max(pdu.depth);
    let pdu = txn.index_and_effects(pdu).await?;
    update_current_state(txn, &pdu).await?;
    Ok(Accepted::Timeline)
}

/// Step 4: the auth rules against the event's own auth events.
pub fn check_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    auth: &HashMap<OwnedEventId, Rc<Pdu>>,
) -> std::result::Result<(), Refusal> {
    check_state_independent_auth_rules(&rules.authorization, pdu, |id| auth.get(id).map(|p| &**p))
        .map_err(|e| Refusal::AuthEvents(e.to_string()))?;
    let auth_state: HashMap<StateKey, Rc<Pdu>> = auth
        .values()
        .filter_map(|p| Some(((p.event_type.clone(), p.state_key.clone()?), p.clone())))
        .collect();
    check_state_dependent_auth_rules(&rules.authorization, pdu, |t, k| {
        auth_state.get(&(t.to_string(), k.to_owned())).map(|p| &**p)
    })
    .map_err(|e| Refusal::AuthEvents(e.to_string()))
}

/// Steps 4 and 5 for an event whose state before it was handed over rather than derived
/// from its parents (the join this server makes through `send_join`).
pub async fn check_against(
    txn: &RoomTxn<'_>,
    pdu: &Pdu,
    state: &StateMap,
) -> std::result::Result<(), AcceptError> {
    let mut auth: HashMap<OwnedEventId, Rc<Pdu>> = HashMap::new();
    for id in &pdu.auth_events {
        match txn.fetch(id).await? {
            Some(p) => {
                auth.insert(id.clone(), p);
            }
            None => return Err(Refusal::Missing(vec![id.clone()]).into()),
        }
    }
    check_auth_events(&txn.rules, pdu, &auth)?;
    let events = load_auth_state(txn, pdu, state).await?;
    check_state_dependent_auth_rules(&txn.rules.authorization, pdu, |t, k| {
        events.get(&(t.to_string(), k.to_owned())).map(|p| &**p)
    })
    .map_err(|e| Refusal::StateBefore(e.to_string()))?;
    Ok(())
}

/// The id of a PDU given as JSON, by its room version's reference hash.
pub fn event_id_of(value: &serde_json::Value, rules: &RoomVersionRules) -> Option<OwnedEventId> {
    let CanonicalJsonValue::Object(object) =
        ruma::canonical_json::to_canonical_value(value).ok()?
    else {
        return None;
    };
    let hash = reference_hash(&object, rules).ok()?;
    OwnedEventId::try_from(format!("${hash}")).ok()
}

/// The events of `state` that the auth rules consult for `pdu`.
async fn load_auth_state(
    txn: &RoomTxn<'_>,
    pdu: &Pdu,
    state: &StateMap,
) -> Result<HashMap<StateKey, Rc<Pdu>>> {
    let types = auth_types_for_event(
        &pdu.kind,
        &pdu.sender,
        pdu.state_key.as_deref(),
        &pdu.raw_content,
        &txn.rules.authorization,
    )
    .map_err(|e| MatrixError::bad_json(format!("invalid content: {e}")))?;
    let mut out = HashMap::new();
    for (t, k) in types {
        let key = (StateEventType::to_string(&t), k);
        if let Some(id) = state.get(&key)
            && let Some(p) = txn.fetch(id).await?
        {
            out.insert(key, p);
        }
    }
    Ok(out)
}

/// Makes the room's current state the resolution of the states after its extremities, and
/// writes what changed (at the new event's position for its own key, at fresh positions for
/// what resolution changed elsewhere, so clients see those as state changes too).
async fn update_current_state(txn: &mut RoomTxn<'_>, newest: &Rc<Pdu>) -> Result<()> {
    let hs = txn.hs();
    let mut tips = Vec::new();
    for id in txn.record.extremities.clone() {
        if let Some(p) = txn.fetch(&id).await? {
            tips.push(p);
        }
    }
    let (group, resolved) = graph::state_before(txn, &tips).await?;
    let changes = state_groups::diff(&txn.state, &resolved);
    for (t, k, id) in changes {
        let event = match &id {
            Some(id) => txn.fetch(id).await?,
            None => None,
        };
        let pos = if id.as_ref() == Some(&newest.event_id) {
            newest.pos
        } else {
            hs.alloc_pos()
        };
        txn.set_current(&t, &k, event.as_deref(), pos)?;
    }
    txn.record.current_group = group;
    Ok(())
}

/// Keeps events learned as part of a state or auth chain (from a join or a gap) as outliers,
/// after the same signature checks. Returns those that passed.
pub async fn store_outliers(txn: &mut RoomTxn<'_>, events: Vec<Pdu>) -> Result<Vec<Rc<Pdu>>> {
    let mut out = Vec::with_capacity(events.len());
    for mut pdu in events {
        if let Some(known) = get_pdu(txn.hs(), pdu.event_id.as_str()).await? {
            out.push(known);
            continue;
        }
        pdu.meta.outlier = true;
        out.push(txn.add_outlier(pdu)?);
    }
    Ok(out)
}

/// What [`accept`] fails with: a refusal of the event, or a server-side failure.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Server(#[from] MatrixError),
}
