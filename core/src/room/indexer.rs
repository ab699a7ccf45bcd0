//! Keeps the search index (`db::search_index`) up with the timeline: each room's marker
//! (`RoomRecord::indexed`) is brought up in chunks, by [`run`] in the background once writes
//! have been quiet for [`IDLE`], and by `/search` for the rooms it searches ([`catch_up`]).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::{Either, select};
use ruma::{OwnedEventId, OwnedRoomId, RoomId};

use crate::Homeserver;
use crate::db::from_json;
use crate::db::rooms::{Pdu, StoredEvent, room_record, timeline_range};
use crate::db::search_index::index_event;
use crate::error::Result;
use crate::room::txn::RoomTxn;
use crate::storage::Direction;

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
