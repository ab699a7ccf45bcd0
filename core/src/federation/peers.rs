//! The servers this one federates with, for a host's status page: every server with a joined
//! member in a room where this server has one, with how many such rooms, how many items wait
//! in the queue for it, and its backoff.

use std::collections::BTreeMap;

use ruma::OwnedRoomId;
use serde::Serialize;

use super::events;
use crate::Homeserver;
use crate::db::prefix;
use crate::error::Result;
use crate::storage::{Direction, KeyRange};

/// Queued items are counted up to this many; a status page needs no exact figure past it.
pub const QUEUE_COUNT_CAP: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub server: String,
    /// Rooms shared with it.
    pub rooms: usize,
    /// PDUs and EDUs waiting to be sent to it (at most [`QUEUE_COUNT_CAP`]).
    pub queued: usize,
    /// Failed sends in a row; 0 when the last one went through.
    pub failures: u32,
    /// When the next attempt may start (ms since the epoch), if it is backing off.
    pub retry_at: Option<u64>,
}

/// Every peer, by name.
pub async fn list(hs: &Homeserver) -> Result<Vec<Peer>> {
    let mut shared: BTreeMap<String, usize> = BTreeMap::new();
    for (k, _) in hs.scan_prefix("rooms", &[]).await? {
        let Ok(room) = OwnedRoomId::try_from(String::from_utf8_lossy(&k).as_ref()) else {
            continue;
        };
        if !events::server_in_room(hs, &room, hs.server_name()).await? {
            continue;
        }
        for s in events::servers_in_room(hs, &room).await? {
            *shared.entry(s.to_string()).or_default() += 1;
        }
    }
    let backoffs = super::outbox::backoffs(hs);
    let mut out = Vec::with_capacity(shared.len());
    for (server, rooms) in shared {
        let queued = hs
            .store
            .scan(
                "outbox",
                KeyRange::prefix(&prefix(&[server.as_bytes()])),
                Direction::Forward,
                QUEUE_COUNT_CAP,
            )
            .await?
            .len();
        let backoff = ruma::ServerName::parse(&server)
            .ok()
            .and_then(|name| backoffs.get(&name).copied());
        out.push(Peer {
            server,
            rooms,
            queued,
            failures: backoff.map_or(0, |b| b.failures),
            retry_at: backoff.filter(|b| b.failures > 0).map(|b| b.retry_at),
        });
    }
    Ok(out)
}
