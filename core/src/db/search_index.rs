//! The search index (tree `search`: `room · word · pos → event id`), read by `client::search`
//! (which documents the query side).
//!
//! The index is written behind the timeline, not in the batch that appends an event: a
//! message has a posting per distinct word, so indexing inline would make a ten-word message
//! cost a dozen rows where its other records cost three, and a browser catching up on a
//! backlog pays per row. Each room's record keeps a marker (`RoomRecord::indexed`): its
//! timeline events up to that position are indexed. [`run`] brings the markers up once
//! writes have been quiet for [`IDLE`], and `/search` brings the rooms it searches up first,
//! so no search misses an event. Backfilled history (positions below the marker) is still
//! indexed in its own batch; a redaction removes postings only of an event already indexed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::{Either, select};
use ruma::{OwnedEventId, OwnedRoomId, RoomId};

use serde_json::Value;

use super::rooms::{Pdu, StoredEvent, room_record, timeline_range};
use super::{from_json, key, pos_bytes};
use crate::Homeserver;
use crate::error::Result;
use crate::room::txn::RoomTxn;
use crate::storage::{Batch, Direction};

/// The index tree.
pub const SEARCH_TREE: &str = "search";
/// Longer words are indexed (and searched) by their first this many characters.
pub const MAX_WORD_CHARS: usize = 40;
/// Distinct words indexed per event; the rest of a very long text is not searchable.
pub const MAX_WORDS_PER_EVENT: usize = 256;
/// The searchable key and text of an event, if it has one.
pub fn searchable<'a>(event_type: &str, content: &'a Value) -> Option<(&'static str, &'a str)> {
    let (k, field) = match event_type {
        "m.room.message" => ("content.body", "body"),
        "m.room.name" => ("content.name", "name"),
        "m.room.topic" => ("content.topic", "topic"),
        _ => return None,
    };
    content.get(field).and_then(Value::as_str).map(|t| (k, t))
}
/// The words of a text, as indexed and searched: alphanumeric runs, lowercased, truncated.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase().chars().take(MAX_WORD_CHARS).collect())
        .collect()
}

fn index_keys(pdu: &Pdu) -> Vec<Vec<u8>> {
    let Some((_, text)) = searchable(&pdu.event_type, &pdu.content) else {
        return Vec::new();
    };
    let distinct: BTreeSet<String> = words(text).into_iter().take(MAX_WORDS_PER_EVENT).collect();
    distinct
        .iter()
        .map(|w| key(&[pdu.room_id.as_bytes(), w.as_bytes(), &pos_bytes(pdu.pos)]))
        .collect()
}

/// Adds an event's words to the index: backfilled history in the batch that stores it (it
/// lands below the room's marker), the rest behind the timeline ([`index_chunk`]).
pub fn index_event(batch: &mut Batch, pdu: &Pdu) {
    for k in index_keys(pdu) {
        batch.put(SEARCH_TREE, k, pdu.event_id.as_bytes());
    }
}

/// Removes an event's words from the index (on redaction), given its original content.
pub fn unindex_event(batch: &mut Batch, pdu: &Pdu) {
    for k in index_keys(pdu) {
        batch.delete(SEARCH_TREE, k);
    }
}

/// Timeline events indexed per write when catching up.
pub const CHUNK: usize = 250;
/// How long writes must have been quiet before [`run`] indexes: a catch-up's writes should
/// not share the storage with the index's.
pub const IDLE: Duration = Duration::from_millis(1_500);
/// The most events one `/search` indexes before it answers; past that, the background
/// indexer finishes the job and results may miss the newest events until it has.
pub const MAX_PER_SEARCH: usize = 20_000;

/// Rooms whose index may be behind their timeline.
#[derive(Debug)]
pub struct Backlog {
    rooms: RefCell<BTreeSet<OwnedRoomId>>,
    /// Every room may be behind: after boot, or after a failed write.
    all: Cell<bool>,
}

impl Default for Backlog {
    fn default() -> Self {
        Self {
            rooms: RefCell::default(),
            all: Cell::new(true),
        }
    }
}

impl Backlog {
    /// The room has timeline events the index may not have.
    pub fn note(&self, room: &RoomId) {
        if !self.all.get() {
            self.rooms.borrow_mut().insert(room.to_owned());
        }
    }

    /// Any room may be behind (the caches were dropped).
    pub fn note_all(&self) {
        self.all.set(true);
        self.rooms.borrow_mut().clear();
    }

    fn is_empty(&self) -> bool {
        !self.all.get() && self.rooms.borrow().is_empty()
    }
}

/// Indexes up to [`CHUNK`] of the room's timeline events past its marker, in one write, and
/// moves the marker past them. Returns how many events it looked at: fewer than [`CHUNK`]
/// means the room is up to date.
pub async fn index_chunk(hs: &Homeserver, room: &RoomId) -> Result<usize> {
    // Most rooms are up to date: find that out without the lock and the room's state.
    match room_record(hs, room).await? {
        Some(record) => match record.indexed {
            Some(from) if !unindexed(hs, room, from, 1).await?.is_empty() => {}
            // Up to date, or recorded before the marker existed (indexed as events arrived).
            _ => return Ok(0),
        },
        None => return Ok(0),
    }
    let _lock = hs.write_lock().await;
    let mut txn = match RoomTxn::open(hs, room).await {
        Ok(txn) => txn,
        // A version this server no longer reads: nothing to index.
        Err(_) => return Ok(0),
    };
    let Some(from) = txn.record.indexed else {
        return Ok(0);
    };
    let rows = unindexed(hs, room, from, CHUNK).await?;
    let Some(&(last, _)) = rows.last() else {
        return Ok(0);
    };
    // One read for the chunk, where `get_pdu` would pay a browser read transaction for each.
    let ids: Vec<Vec<u8>> = rows.iter().map(|(_, id)| id.as_bytes().to_vec()).collect();
    let events = hs.store.get_many("events", &ids).await?;
    for ((pos, id), stored) in rows.iter().zip(events) {
        let Some(stored) = stored else {
            continue;
        };
        let stored: StoredEvent = from_json(&stored)?;
        let mut pdu = Pdu::from_parts(id.clone(), stored.pdu, stored.meta)?;
        pdu.pos = *pos;
        index_event(&mut txn.batch, &pdu);
    }
    txn.record.indexed = Some(last);
    txn.commit().await?;
    Ok(rows.len())
}

/// Up to `limit` timeline events of `room` after position `from`, oldest first.
async fn unindexed(
    hs: &Homeserver,
    room: &RoomId,
    from: u64,
    limit: usize,
) -> Result<Vec<(u64, OwnedEventId)>> {
    timeline_range(hs, room, from, u64::MAX, Direction::Forward, limit).await
}

/// Brings the index of `rooms` up to date, indexing at most `budget` events.
pub async fn catch_up(hs: &Homeserver, rooms: &[OwnedRoomId], mut budget: usize) -> Result<()> {
    for room in rooms {
        while budget > 0 {
            let n = index_chunk(hs, room).await?;
            budget = budget.saturating_sub(n);
            if n < CHUNK {
                break;
            }
        }
    }
    Ok(())
}

/// The background indexer: whenever rooms have fallen behind and writes have been quiet for
/// [`IDLE`], indexes them chunk by chunk. Runs until the host drops it.
pub async fn run(hs: Homeserver) {
    loop {
        let seen = hs.notifier.generation();
        if hs.search.is_empty() {
            hs.notifier.changed_since(seen).await;
            continue;
        }
        // Quiet: no write for IDLE.
        if let Either::Left(_) = select(hs.notifier.changed_since(seen), hs.world.sleep(IDLE)).await
        {
            continue;
        }
        let rooms: Vec<OwnedRoomId> = if hs.search.all.replace(false) {
            hs.search.rooms.borrow_mut().clear();
            match hs.scan_prefix("rooms", &[]).await {
                Ok(rows) => rows
                    .into_iter()
                    .filter_map(|(k, _)| {
                        OwnedRoomId::try_from(String::from_utf8_lossy(&k).as_ref()).ok()
                    })
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "search indexer: listing rooms failed");
                    hs.search.note_all();
                    continue;
                }
            }
        } else {
            std::mem::take(&mut *hs.search.rooms.borrow_mut())
                .into_iter()
                .collect()
        };
        let mut rooms = std::collections::VecDeque::from(rooms);
        while let Some(room) = rooms.pop_front() {
            let before = hs.notifier.generation();
            match index_chunk(&hs, &room).await {
                Ok(n) if n >= CHUNK => rooms.push_back(room),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%room, error = %e, "search indexer failed");
                    hs.search.note(&room);
                }
            }
            // Someone else wrote meanwhile (the chunk's own write notifies once): the rest
            // waits for the next quiet spell.
            if hs.notifier.generation() > before + 1 {
                for room in rooms.drain(..) {
                    hs.search.note(&room);
                }
            }
        }
    }
}
