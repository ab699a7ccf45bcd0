//! History from before this server joined a room, fetched from a server in the room
//! (`/backfill`) when a client pages back past the first event this server has.
//!
//! A remote join leaves [`SPACE`] stream positions unused below the join; backfilled events
//! take them going down, newest first, so `/messages` reaches them in the order of the graph
//! and `/sync` (which only moves forward from what a client has seen) never shows them as
//! new. They are checked like any received PDU up to their auth events; the state before them
//! is not known and not needed: they change nothing in the room's current state, and raise no
//! notifications.

use std::collections::HashMap;
use std::rc::Rc;

use ruma::api::federation::backfill::get_backfill;
use ruma::{OwnedEventId, RoomId, UInt};
use serde_json::Value;

use super::ingest;
use crate::Homeserver;
use crate::db::rooms::{self, Pdu};
use crate::error::{MatrixError, Result};
use crate::room::txn::{RoomTxn, supported_version};
use crate::storage::Direction;

/// Positions left free below a remote join.
pub const SPACE: u64 = 1 << 20;

/// How long one server may take to answer, while a client waits.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Most events asked for at once.
const MAX_BATCH: usize = 100;

/// Fetches up to `limit` events from before the room's earliest timeline event. Returns the
/// position a backward scan resumes from, if anything was added.
pub async fn backfill(hs: &Homeserver, room: &RoomId, limit: usize) -> Result<Option<u64>> {
    let Some(record) = rooms::room_record(hs, room).await? else {
        return Ok(None);
    };
    let Some((lowest, floor)) = record.backfill else {
        return Ok(None);
    };
    if lowest <= floor + 1 {
        return Ok(None);
    }
    let rules = supported_version(&record.version)
        .ok_or_else(|| MatrixError::unsupported_room_version("room version not supported"))?;
    // The earliest event of the timeline, and what it follows that this server lacks.
    let first = rooms::timeline_range(hs, room, 0, u64::MAX, Direction::Forward, 1).await?;
    let Some((_, first_id)) = first.first() else {
        return Ok(None);
    };
    let Some(first) = rooms::get_pdu(hs, first_id.as_str()).await? else {
        return Ok(None);
    };
    let mut from: Vec<OwnedEventId> = Vec::new();
    for id in &first.prev_events {
        match rooms::get_pdu(hs, id.as_str()).await? {
            Some(p) if !p.meta.outlier => {}
            _ => from.push(id.clone()),
        }
    }
    if from.is_empty() {
        return Ok(None);
    }
    // A client waits on this: ask the room's own server first, then those not known to be
    // failing, each for a short while.
    let in_room = crate::federation::events::servers_in_room(hs, room).await?;
    let failing = crate::federation::outbox::backoffs(hs);
    let mut servers: Vec<_> = in_room.iter().cloned().collect();
    servers.sort_by_key(|s| {
        (
            Some(s.as_ref()) != room.server_name(),
            failing.contains_key(s),
        )
    });
    let limit = limit.clamp(1, MAX_BATCH);
    for server in &servers {
        let req = get_backfill::v1::Request::new(
            room.to_owned(),
            from.clone(),
            UInt::new_saturating(limit as u64),
        );
        let answer =
            match crate::federation::client::send_with_timeout(hs, server, req, TIMEOUT).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::info!(%room, %server, error = %e, "backfill request failed");
                    continue;
                }
            };
        let mut events: Vec<Pdu> = Vec::new();
        for raw in &answer.pdus {
            let Ok(value) = serde_json::from_str::<Value>(raw.get()) else {
                continue;
            };
            match ingest::verify(hs, &rules, room, &value).await {
                Ok(p) => events.push(p),
                Err(e) => tracing::info!(%room, error = %e, "dropped a backfilled event"),
            }
        }
        // Newest first, so positions go down with the graph.
        events.sort_by_key(|p| std::cmp::Reverse(p.depth));
        let resume = store(hs, room, events).await?;
        if resume.is_some() {
            return Ok(resume);
        }
    }
    Ok(None)
}

async fn store(hs: &Homeserver, room: &RoomId, events: Vec<Pdu>) -> Result<Option<u64>> {
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    let Some((mut lowest, floor)) = txn.record().backfill else {
        return Ok(None);
    };
    let resume = lowest.saturating_sub(1);
    let mut added = 0;
    let mut known: HashMap<OwnedEventId, Rc<Pdu>> = HashMap::new();
    for mut pdu in events {
        if lowest <= floor + 1 {
            break;
        }
        if let Some(p) = txn.fetch(&pdu.event_id).await?
            && !p.meta.outlier
        {
            continue;
        }
        // Its auth events must be known and must allow it.
        let mut auth = HashMap::new();
        for id in &pdu.auth_events {
            let found = match known.get(id) {
                Some(p) => Some(p.clone()),
                None => txn.fetch(id).await?,
            };
            if let Some(p) = found {
                auth.insert(id.clone(), p);
            }
        }
        if auth.len() != pdu.auth_events.len()
            || ingest::check_auth_events(&txn.rules, &pdu, &auth).is_err()
        {
            tracing::info!(event_id = %pdu.event_id, "backfilled event not allowed by its auth events");
            continue;
        }
        lowest -= 1;
        pdu.pos = lowest;
        pdu.meta.pos = lowest;
        pdu.meta.outlier = false;
        txn.put_event(&pdu)?;
        txn.batch.put(
            "timeline",
            crate::db::key(&[room.as_bytes(), &crate::db::pos_bytes(lowest)]),
            pdu.event_id.as_bytes(),
        );
        crate::db::search_index::index_event(&mut txn.batch, &pdu);
        let pdu = txn.add_outlier_cached(pdu);
        known.insert(pdu.event_id.clone(), pdu);
        added += 1;
    }
    if added == 0 {
        return Ok(None);
    }
    txn.set_backfill(lowest, floor);
    txn.commit().await?;
    Ok(Some(resume))
}
