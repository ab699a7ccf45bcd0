//! Relations between events (`m.relates_to`): the index of each event's children and the list
//! of a room's thread activity.
//!
//! Layout (keys 0x00-separated, positions big-endian u64):
//! - `relations`: parent event id, rel_type, pos → child event id. Written by
//!   [`RoomTxn::append`](crate::room::txn::RoomTxn::append) for every event with a `rel_type`; an
//!   entry outlives a redaction of its child, so readers check that the child still relates.
//! - `threads`: room id, pos → thread root id, one entry per `m.thread` child. The newest
//!   entries of a room name its most recently active threads, so `/threads` reads them
//!   backwards instead of scanning the timeline.

use std::ops::Bound;

use ruma::{EventId, OwnedEventId, RoomId};
use serde_json::Value;

use super::rooms::Pdu;
use super::{key, pos_bytes, pos_from, prefix};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Batch, Direction, KeyRange};

pub const THREAD: &str = "m.thread";
pub const REPLACE: &str = "m.replace";
pub const REFERENCE: &str = "m.reference";
pub const ANNOTATION: &str = "m.annotation";

/// One entry of the relations index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub pos: u64,
    pub rel_type: String,
    pub event_id: OwnedEventId,
}

fn corrupt(what: &str) -> MatrixError {
    MatrixError::unknown(format!("corrupt relations index: {what}"))
}

fn parse_id(bytes: &[u8]) -> Result<OwnedEventId> {
    OwnedEventId::try_from(String::from_utf8_lossy(bytes).as_ref()).map_err(|_| corrupt("event id"))
}

/// The children of `parent`, of one relation type or of all, oldest first.
pub async fn children(
    hs: &Homeserver,
    parent: &EventId,
    rel_type: Option<&str>,
) -> Result<Vec<Child>> {
    // An event made since boot whose relations were never written has none: nothing can
    // relate to an event id before the event exists (it is a hash of the event). This spares
    // every new event of a `/sync` a scan.
    if hs
        .changes
        .part_untouched_since_boot("relations", parent.as_bytes())
        && super::rooms::get_pdu(hs, parent.as_str())
            .await?
            .is_some_and(|p| p.pos > hs.changes.boot_pos())
    {
        return Ok(Vec::new());
    }
    let pfx = match rel_type {
        Some(t) => prefix(&[parent.as_bytes(), t.as_bytes()]),
        None => prefix(&[parent.as_bytes()]),
    };
    let mut out = Vec::new();
    for (k, v) in hs.scan_prefix("relations", &pfx).await? {
        // The key ends in `rel_type · 0x00 · pos`; the position is a fixed 8 bytes and may itself
        // contain zero bytes, so it is cut from the end rather than split on separators.
        let rest = k.get(pfx.len()..).ok_or_else(|| corrupt("key"))?;
        let pos = pos_from(rest).ok_or_else(|| corrupt("position"))?;
        let rel = match rel_type {
            Some(t) => t.to_owned(),
            None => {
                let end = rest.len().checked_sub(9).ok_or_else(|| corrupt("key"))?;
                String::from_utf8_lossy(rest.get(..end).ok_or_else(|| corrupt("key"))?).into_owned()
            }
        };
        out.push(Child {
            pos,
            rel_type: rel,
            event_id: parse_id(&v)?,
        });
    }
    out.sort_by_key(|c| c.pos);
    Ok(out)
}

/// The position of the newest `rel_type` child of `parent` at or below `upto`.
pub async fn latest_child_pos(
    hs: &Homeserver,
    parent: &EventId,
    rel_type: &str,
    upto: u64,
) -> Result<Option<u64>> {
    let start = prefix(&[parent.as_bytes(), rel_type.as_bytes()]);
    let end = key(&[parent.as_bytes(), rel_type.as_bytes(), &pos_bytes(upto)]);
    let range = KeyRange::new(Bound::Included(start), Bound::Included(end));
    let rows = hs
        .store
        .scan("relations", range, Direction::Backward, 1)
        .await?;
    Ok(rows.first().and_then(|(k, _)| pos_from(k)))
}

/// Whether `child` still relates to `parent` with `rel_type`: same room, and its (possibly
/// redacted) content still says so. A redaction strips `m.relates_to` and so breaks the
/// relationship, as the spec asks.
pub fn still_relates(child: &Pdu, parent: &Pdu, rel_type: &str) -> bool {
    if child.room_id != parent.room_id || child.meta.rejected {
        return false;
    }
    let Some(rel) = child.content.get("m.relates_to") else {
        return false;
    };
    rel.get("rel_type").and_then(Value::as_str) == Some(rel_type)
        && rel.get("event_id").and_then(Value::as_str) == Some(parent.event_id.as_str())
}

/// The `rel_type` of an event's own relation, if it has one.
pub fn rel_type_of(pdu: &Pdu) -> Option<&str> {
    pdu.content.get("m.relates_to")?.get("rel_type")?.as_str()
}

/// Adds the thread-activity entry of a new `m.thread` child to `batch`.
pub fn index_thread_activity(batch: &mut Batch, room: &RoomId, pos: u64, root: &str) {
    batch.put(
        "threads",
        key(&[room.as_bytes(), &pos_bytes(pos)]),
        root.as_bytes(),
    );
}

/// Thread activity of the room at or below position `upto`, newest first, at most `limit`
/// entries: `(pos of the thread event, root id)`. A busy thread appears once per event.
pub async fn thread_activity(
    hs: &Homeserver,
    room: &RoomId,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, OwnedEventId)>> {
    let start = prefix(&[room.as_bytes()]);
    let end = key(&[room.as_bytes(), &pos_bytes(upto)]);
    let range = KeyRange::new(Bound::Included(start), Bound::Included(end));
    let rows = hs
        .store
        .scan("threads", range, Direction::Backward, limit)
        .await?;
    rows.iter()
        .map(|(k, v)| {
            Ok((
                pos_from(k).ok_or_else(|| corrupt("thread position"))?,
                parse_id(v)?,
            ))
        })
        .collect()
}
