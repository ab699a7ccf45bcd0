//! The outbound queue: one durable queue per destination, one transaction in flight per
//! destination, PDUs (≤ 50) and EDUs (≤ 100) batched, failures retried with capped
//! exponential backoff.
//!
//! Layout:
//! - `outbox`: destination, seq (u64 BE) → [`Item`]. Rows are written in the same batch as
//!   the event they carry, so an event acknowledged to a client is queued as durably as it
//!   is stored; they are deleted when the destination acknowledged the transaction.
//! - `destinations`: destination → [`Backoff`], while it is failing.
//!
//! A transaction's id is derived from the first and last sequence numbers it carries. Items
//! only leave the queue once acknowledged, so a retry carries the same items under the same
//! id, and a receiver that already applied it answers from its record (idempotent on both
//! sides). A destination that is down costs one timer, nothing per event beyond its rows.
//!
//! The host drives [`run`] as a background future; tests call [`flush`] to send what is due.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{join_all, select};
use futures::stream::FuturesUnordered;
use ruma::api::federation::transactions::send_transaction_message;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName, UInt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::client;
use crate::Homeserver;
use crate::db::rooms::get_pdu;
use crate::db::{from_json, key, pos_bytes, prefix, to_json};
use crate::error::Result;
use crate::storage::{Batch, Direction, KeyRange};

pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

/// First retry after a failure; doubles per failure up to [`MAX_BACKOFF_MS`].
pub const MIN_BACKOFF_MS: u64 = 2_000;
pub const MAX_BACKOFF_MS: u64 = 60 * 60 * 1000;

/// After an intermediary held a transaction for an absent destination, the next one waits
/// this long (unless the queue already fills a transaction). A server that comes back clears
/// it along with every backoff ([`forget_backoff`]).
pub const HELD_GATHER_MS: u64 = 500;

/// How long one transaction may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// An event id: the PDU is read from storage when sent.
    Pdu(ruma::OwnedEventId),
    Edu(Value),
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Backoff {
    pub failures: u32,
    pub retry_at: u64,
}

/// The sender's memory: who is in flight, who is backing off, and a flag for new items.
#[derive(Default)]
pub struct Outbox {
    in_flight: RefCell<HashSet<OwnedServerName>>,
    backoff: RefCell<HashMap<OwnedServerName, Backoff>>,
    /// Destinations with items, as far as this process knows (loaded on first use).
    pending: RefCell<Option<HashSet<OwnedServerName>>>,
    /// Bumped by every enqueue, so the background loop knows to look again.
    enqueued: Cell<u64>,
}

/// Queues `item` for each of `destinations` in `batch`. Call [`queued`] once the batch is
/// durable.
pub fn enqueue<'a>(
    hs: &Homeserver,
    batch: &mut Batch,
    destinations: impl IntoIterator<Item = &'a ServerName>,
    item: &Item,
) -> Result<Vec<OwnedServerName>> {
    let row = to_json(item)?;
    let mut out = Vec::new();
    for dest in destinations {
        if dest == hs.server_name() {
            continue;
        }
        let seq = hs.alloc_pos();
        batch.put(
            "outbox",
            key(&[dest.as_bytes(), &pos_bytes(seq)]),
            row.clone(),
        );
        out.push(dest.to_owned());
    }
    Ok(out)
}

/// Tells the sender that `destinations` have new durable items.
pub fn queued(hs: &Homeserver, destinations: impl IntoIterator<Item = OwnedServerName>) {
    let outbox = &hs.federation.outbox;
    if let Some(p) = outbox.pending.borrow_mut().as_mut() {
        p.extend(destinations);
    }
    outbox.enqueued.set(outbox.enqueued.get() + 1);
    hs.notifier.notify();
}

/// Queues one EDU for `destinations` in a write of its own.
pub async fn send_edu<'a>(
    hs: &Homeserver,
    destinations: impl IntoIterator<Item = &'a ServerName>,
    edu: Value,
) -> Result<()> {
    let mut batch = Batch::new();
    let dests = enqueue(hs, &mut batch, destinations, &Item::Edu(edu))?;
    if dests.is_empty() {
        return Ok(());
    }
    hs.commit(batch).await?;
    queued(hs, dests);
    Ok(())
}

async fn pending_destinations(hs: &Homeserver) -> Result<HashSet<OwnedServerName>> {
    let outbox = &hs.federation.outbox;
    if let Some(p) = outbox.pending.borrow().as_ref() {
        return Ok(p.clone());
    }
    // First use after a start: every destination with rows, and its stored backoff.
    let mut found = HashSet::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let range = KeyRange::new(
            std::ops::Bound::Excluded(from.clone()),
            std::ops::Bound::Unbounded,
        );
        let rows = hs
            .store
            .scan("outbox", range, Direction::Forward, 1)
            .await?;
        let Some((k, _)) = rows.first() else { break };
        let dest = k.split(|b| *b == 0).next().unwrap_or_default();
        if let Ok(name) = ServerName::parse(String::from_utf8_lossy(dest).as_ref()) {
            found.insert(name);
        }
        // Skip past every row of this destination.
        let mut next = dest.to_vec();
        next.push(1);
        from = next;
    }
    for (k, v) in hs.scan_prefix("destinations", &[]).await? {
        if let (Ok(name), Ok(b)) = (
            ServerName::parse(String::from_utf8_lossy(&k).as_ref()),
            from_json::<Backoff>(&v),
        ) {
            outbox.backoff.borrow_mut().insert(name, b);
        }
    }
    *outbox.pending.borrow_mut() = Some(found.clone());
    Ok(found)
}

/// Destinations with items that are not being sent to and not backing off.
async fn due(hs: &Homeserver) -> Result<Vec<OwnedServerName>> {
    let now = hs.now_ms();
    let outbox = &hs.federation.outbox;
    Ok(pending_destinations(hs)
        .await?
        .into_iter()
        .filter(|d| !outbox.in_flight.borrow().contains(d))
        .filter(|d| {
            outbox
                .backoff
                .borrow()
                .get(d)
                .is_none_or(|b| b.retry_at <= now)
        })
        .collect())
}

/// Sends one transaction to every destination that is due, concurrently, and waits for them
/// all (tests drive delivery with this). Returns how many were acknowledged.
pub async fn flush(hs: &Homeserver) -> Result<usize> {
    let due = due(hs).await?;
    let results = join_all(due.iter().map(|d| send_one(hs, d))).await;
    Ok(results
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count())
}

/// The earliest time a backing-off destination may be retried.
fn next_retry(hs: &Homeserver) -> Option<u64> {
    hs.federation
        .outbox
        .backoff
        .borrow()
        .values()
        .map(|b| b.retry_at)
        .min()
}

/// The background sender. Each destination's transaction runs on its own: a peer that hangs
/// holds only its own queue (until [`SEND_TIMEOUT`]), while new items for others go out as
/// soon as they are queued. Runs until the host drops it.
pub async fn run(hs: Homeserver) {
    let hs = &hs;
    let mut sending = FuturesUnordered::new();
    loop {
        let seen = hs.federation.outbox.enqueued.get();
        let generation = hs.notifier.generation();
        match due(hs).await {
            Ok(dests) => {
                for d in dests {
                    // Marked before the first poll, so the next round does not start it twice.
                    hs.federation
                        .outbox
                        .in_flight
                        .borrow_mut()
                        .insert(d.clone());
                    sending.push(async move {
                        let r = send_batch(hs, &d).await;
                        hs.federation.outbox.in_flight.borrow_mut().remove(&d);
                        if let Err(e) = r {
                            tracing::warn!(destination = %d, error = %e, "federation sender failed");
                        }
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "federation sender: reading the queue failed"),
        }
        if hs.federation.outbox.enqueued.get() != seen {
            continue;
        }
        let wait = next_retry(hs)
            .map(|at| Duration::from_millis(at.saturating_sub(hs.now_ms()).max(10)))
            .unwrap_or(Duration::from_secs(30));
        let woken = Box::pin(hs.notifier.changed_since(generation));
        let timer = hs.world.sleep(wait);
        let wake = select(woken, timer);
        if sending.is_empty() {
            wake.await;
        } else {
            // A finished send may leave more items behind (over 50 PDUs): look again.
            select(sending.next(), wake).await;
        }
    }
}

/// One transaction to `dest`: `Ok(true)` if it was acknowledged.
async fn send_one(hs: &Homeserver, dest: &ServerName) -> Result<bool> {
    let outbox = &hs.federation.outbox;
    outbox.in_flight.borrow_mut().insert(dest.to_owned());
    let result = send_batch(hs, dest).await;
    outbox.in_flight.borrow_mut().remove(dest);
    result
}

async fn send_batch(hs: &Homeserver, dest: &ServerName) -> Result<bool> {
    let pfx = prefix(&[dest.as_bytes()]);
    let rows = hs
        .store
        .scan(
            "outbox",
            KeyRange::prefix(&pfx),
            Direction::Forward,
            MAX_PDUS + MAX_EDUS,
        )
        .await?;
    if rows.is_empty() {
        if let Some(p) = hs.federation.outbox.pending.borrow_mut().as_mut() {
            p.remove(dest);
        }
        return Ok(false);
    }
    let mut pdus: Vec<Box<RawValue>> = Vec::new();
    let mut edus = Vec::new();
    let mut taken: Vec<Vec<u8>> = Vec::new();
    for (k, v) in &rows {
        let item: Item = match from_json(v) {
            Ok(i) => i,
            Err(_) => {
                taken.push(k.clone());
                continue;
            }
        };
        match item {
            Item::Pdu(id) if pdus.len() < MAX_PDUS => {
                if let Some(p) = get_pdu(hs, id.as_str()).await? {
                    pdus.push(super::events::pdu_raw(&p)?);
                }
                taken.push(k.clone());
            }
            Item::Edu(e) if edus.len() < MAX_EDUS => {
                edus.push(ruma::serde::Raw::from_json(
                    serde_json::value::to_raw_value(&e)?,
                ));
                taken.push(k.clone());
            }
            _ => break,
        }
    }
    let first = taken
        .first()
        .and_then(|k| crate::db::pos_from(k))
        .unwrap_or(0);
    let last = taken
        .last()
        .and_then(|k| crate::db::pos_from(k))
        .unwrap_or(0);
    let txn_id = OwnedTransactionId::from(format!("{first}-{last}"));
    let mut request = send_transaction_message::v1::Request::new(
        txn_id,
        hs.owned_server_name(),
        MilliSecondsSinceUnixEpoch(UInt::new_saturating(hs.now_ms())),
    );
    request.pdus = pdus;
    request.edus = edus;
    let full = request.pdus.len() == MAX_PDUS || request.edus.len() == MAX_EDUS;
    let answer = client::send_noting_held(hs, dest, request, SEND_TIMEOUT).await;
    let mut batch = Batch::new();
    let acknowledged = match answer {
        Ok((resp, held)) => {
            for (id, r) in &resp.pdus {
                if let Err(e) = r {
                    tracing::info!(%dest, event_id = %id, error = %e, "peer refused a PDU");
                }
            }
            for k in taken {
                batch.delete("outbox", k);
            }
            let mut backoff = hs.federation.outbox.backoff.borrow_mut();
            backoff.remove(dest);
            if held && !full {
                // The destination is away and nobody waits on its latency: let items gather,
                // so its backlog arrives in a few full transactions instead of one per event.
                backoff.insert(
                    dest.to_owned(),
                    Backoff {
                        failures: 0,
                        retry_at: hs.now_ms().saturating_add(HELD_GATHER_MS),
                    },
                );
            }
            batch.delete("destinations", dest.as_bytes().to_vec());
            true
        }
        Err(e) => {
            let mut b = hs
                .federation
                .outbox
                .backoff
                .borrow()
                .get(dest)
                .copied()
                .unwrap_or_default();
            b.failures = b.failures.saturating_add(1);
            let delay = MIN_BACKOFF_MS
                .saturating_mul(1u64 << b.failures.saturating_sub(1).min(20))
                .min(MAX_BACKOFF_MS);
            b.retry_at = hs.now_ms().saturating_add(delay);
            tracing::info!(%dest, error = %e, failures = b.failures, retry_in_ms = delay, "transaction failed");
            hs.federation
                .outbox
                .backoff
                .borrow_mut()
                .insert(dest.to_owned(), b);
            batch.put("destinations", dest.as_bytes().to_vec(), to_json(&b)?);
            false
        }
    };
    let _lock = hs.write_lock().await;
    hs.commit(batch).await?;
    Ok(acknowledged)
}

/// Forgets every backoff in memory, so the next [`flush`] retries at once (a host whose
/// network came back, and tests whose clocks do not run).
pub fn forget_backoff(hs: &Homeserver) {
    hs.federation.outbox.backoff.borrow_mut().clear();
}

/// Destinations that are backing off, and until when: for tests and status pages.
pub fn backoffs(hs: &Homeserver) -> BTreeMap<OwnedServerName, Backoff> {
    hs.federation
        .outbox
        .backoff
        .borrow()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}
