//! The search index (tree `search`: `room · word · pos → event id`), read by `client::search`
//! (which documents the query side).
//!
//! The index is written behind the timeline, not in the batch that appends an event: a
//! message has a posting per distinct word, so indexing inline would make a ten-word message
//! cost a dozen rows where its other records cost three, and a browser catching up on a
//! backlog pays per row. Each room's record keeps a marker (`RoomRecord::indexed`): its
//! timeline events up to that position are indexed. `room::indexer` brings the markers up,
//! in the background once writes are quiet and for the rooms a `/search` searches, so no
//! search misses an event. Backfilled history (positions below the marker) is still indexed
//! in its own batch; a redaction removes postings only of an event already indexed.

use std::collections::BTreeSet;

use serde_json::Value;

use super::rooms::Pdu;
use super::{key, pos_bytes};
use crate::storage::Batch;

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
/// lands below the room's marker), the rest behind the timeline (`room::indexer`).
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
