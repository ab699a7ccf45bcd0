//! The durable store-and-forward queue: transactions for servers that are not connected.
//!
//! Stored in one `redb` file (`DATA/queue.redb`). redb is pure Rust (no C toolchain, no
//! background threads), ACID with copy-on-write B-trees and crash-safe commits, keeps one
//! file that a second process cannot open for writing (so two relays cannot both deliver
//! one queue), and is actively maintained with a stable file format. The alternative,
//! `fjall`, is an LSM tree built for heavy write loads with compaction threads of its own;
//! this queue sees few, small, bursty writes and reads them back in order once, which a
//! B-tree with one ordered key range per destination serves directly.
//!
//! Layout: table `items` maps `(destination, seq)` to the request frame as the destination
//! will receive it (the source's name in place of the destination, id 0); `seq` grows per
//! destination, so a range scan is FIFO order. Table `destinations` keeps per destination
//! `(next seq, count, bytes)`, written in the same transaction, so the bounds are known at
//! start without reading every item.
//!
//! One thread owns the database. Operations arrive over a channel and are applied in arrival
//! order; whatever has queued up while a commit ran is written in the next single transaction
//! (group commit), and an enqueue is answered only after its transaction is durable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use crate::metrics::QueueGauges;

const ITEMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("items");
const DESTINATIONS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("destinations");

/// The database file inside the data directory.
pub const FILE_NAME: &str = "queue.redb";

/// Most operations applied in one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_count: u64,
    pub max_bytes: u64,
    pub max_total_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the queue for this destination is full ({0})")]
    Full(String),
    #[error("queue store failed: {0}")]
    Store(String),
    #[error("the queue store is closed")]
    Closed,
}

impl<E: Into<redb::Error>> From<E> for QueueError {
    fn from(e: E) -> Self {
        QueueError::Store(e.into().to_string())
    }
}

/// A stored transaction: its sequence number in its destination's queue, and its frame.
pub type Item = (u64, Vec<u8>);

enum Op {
    Enqueue {
        dest: String,
        frame: Vec<u8>,
        reply: oneshot::Sender<Result<u64, QueueError>>,
    },
    Peek {
        dest: String,
        /// The first item after this seq; from the start when `None`.
        after: Option<u64>,
        reply: oneshot::Sender<Result<Option<Item>, QueueError>>,
    },
    Remove {
        dest: String,
        seq: u64,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    next_seq: u64,
    count: u64,
    bytes: u64,
}

#[derive(Default)]
struct Gauges {
    transactions: AtomicU64,
    bytes: AtomicU64,
    destinations: AtomicU64,
}

pub struct QueueStore {
    tx: Mutex<Option<mpsc::Sender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    gauges: Arc<Gauges>,
}

impl QueueStore {
    /// Opens (or creates) `dir/queue.redb`, or an in-memory store when `dir` is `None`.
    /// Returns the store and how many transactions wait for each destination.
    pub fn open(
        dir: Option<&Path>,
        limits: QueueLimits,
    ) -> Result<(Self, HashMap<String, u64>), QueueError> {
        let mut builder = Database::builder();
        // redb's page cache is a ceiling, not an allocation; the queue is read once per item.
        builder.set_cache_size(32 << 20);
        let db = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| QueueError::Store(format!("{}: {e}", dir.display())))?;
                let path = dir.join(FILE_NAME);
                builder
                    .create(&path)
                    .map_err(|e| QueueError::Store(format!("{}: {e}", path.display())))?
            }
            None => builder.create_with_backend(redb::backends::InMemoryBackend::new())?,
        };
        let mut metas = HashMap::new();
        {
            let txn = db.begin_write()?;
            // Creates both tables on first use, so later reads need not handle their absence.
            txn.open_table(ITEMS)?;
            let table = txn.open_table(DESTINATIONS)?;
            for row in table.iter()? {
                let (k, v) = row?;
                let (next_seq, count, bytes) = v.value();
                metas.insert(
                    k.value().to_owned(),
                    Meta {
                        next_seq,
                        count,
                        bytes,
                    },
                );
            }
            drop(table);
            txn.commit()?;
        }
        let counts = metas
            .iter()
            .filter(|(_, m)| m.count > 0)
            .map(|(d, m)| (d.clone(), m.count))
            .collect();
        let gauges = Arc::new(Gauges::default());
        let worker = Worker {
            db,
            metas,
            limits,
            gauges: gauges.clone(),
        };
        worker.publish();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay-queue".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| QueueError::Store(format!("cannot start the queue thread: {e}")))?;
        Ok((
            Self {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                gauges,
            },
            counts,
        ))
    }

    fn send(&self, op: Op) -> Result<(), QueueError> {
        let guard = self.tx.lock().map_err(|_| QueueError::Closed)?;
        guard
            .as_ref()
            .ok_or(QueueError::Closed)?
            .send(op)
            .map_err(|_| QueueError::Closed)
    }

    /// Appends a transaction for `dest`; resolves once it is durable, to the destination's
    /// queue length, or to [`QueueError::Full`].
    pub async fn enqueue(&self, dest: &str, frame: Vec<u8>) -> Result<u64, QueueError> {
        self.submit(dest, frame).await
    }

    /// Hands a transaction to the store now, so that its place in the queue is fixed by the
    /// order of calls, and returns a future of the outcome to await anywhere.
    pub fn submit(
        &self,
        dest: &str,
        frame: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<u64, QueueError>> + use<> {
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Op::Enqueue {
            dest: dest.to_owned(),
            frame,
            reply,
        });
        async move {
            sent?;
            rx.await.map_err(|_| QueueError::Closed)?
        }
    }

    /// The oldest transaction waiting for `dest`, with every earlier operation applied.
    pub async fn peek(&self, dest: &str) -> Result<Option<Item>, QueueError> {
        self.peek_after(dest, None).await
    }

    /// The oldest transaction waiting for `dest` after `seq` (from the start when `None`).
    pub async fn peek_after(
        &self,
        dest: &str,
        seq: Option<u64>,
    ) -> Result<Option<Item>, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::Peek {
            dest: dest.to_owned(),
            after: seq,
            reply,
        })?;
        rx.await.map_err(|_| QueueError::Closed)?
    }

    /// Removes a delivered transaction. Applied before any later operation; not awaited,
    /// since a removal lost in a crash only means one more delivery, which the destination
    /// recognises by its transaction id.
    pub fn remove(&self, dest: &str, seq: u64) -> Result<(), QueueError> {
        self.send(Op::Remove {
            dest: dest.to_owned(),
            seq,
        })
    }

    pub fn gauges(&self) -> QueueGauges {
        QueueGauges {
            transactions: self.gauges.transactions.load(Relaxed),
            bytes: self.gauges.bytes.load(Relaxed),
            destinations: self.gauges.destinations.load(Relaxed),
        }
    }

    /// Applies everything already sent, makes it durable and closes the database.
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the queue thread ended abnormally");
            }
        }
    }
}

impl Drop for QueueStore {
    fn drop(&mut self) {
        // The thread ends on its own when the channel closes; nothing to wait for here.
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

struct Worker {
    db: Database,
    metas: HashMap<String, Meta>,
    limits: QueueLimits,
    gauges: Arc<Gauges>,
}

enum Reply {
    Enqueued(
        oneshot::Sender<Result<u64, QueueError>>,
        Result<u64, QueueError>,
    ),
    Peeked(
        oneshot::Sender<Result<Option<Item>, QueueError>>,
        Result<Option<Item>, QueueError>,
    ),
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Op>) {
        let mut unsynced = false;
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let durable = batch.iter().any(|op| matches!(op, Op::Enqueue { .. }));
            let replies = self.apply(batch, durable);
            unsynced = !durable;
            for reply in replies {
                // A requester that went away no longer needs its answer.
                match reply {
                    Reply::Enqueued(tx, r) => drop(tx.send(r)),
                    Reply::Peeked(tx, r) => drop(tx.send(r)),
                }
            }
        }
        if unsynced {
            // Removals were committed without an fsync; one durable commit covers them.
            let synced = self
                .db
                .begin_write()
                .map_err(redb::Error::from)
                .and_then(|mut txn| {
                    let _ = txn.set_durability(Durability::Immediate);
                    txn.commit().map_err(redb::Error::from)
                });
            if let Err(e) = synced {
                tracing::warn!("queue: final sync failed: {e}");
            }
        }
        tracing::info!("queue store closed");
    }

    /// Applies a batch in one transaction. On a failed commit every enqueue in it fails and the
    /// in-memory bounds are left as they were.
    fn apply(&mut self, batch: Vec<Op>, durable: bool) -> Vec<Reply> {
        let mut staged: HashMap<String, Meta> = HashMap::new();
        let mut replies = Vec::with_capacity(batch.len());
        let result = (|| -> Result<(), QueueError> {
            let mut txn = self.db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)?;
            }
            {
                let mut items = txn.open_table(ITEMS)?;
                let mut dests = txn.open_table(DESTINATIONS)?;
                let mut total: u64 = self.metas.values().map(|m| m.bytes).sum();
                for op in batch {
                    match op {
                        Op::Enqueue { dest, frame, reply } => {
                            let mut meta = staged
                                .get(&dest)
                                .or_else(|| self.metas.get(&dest))
                                .copied()
                                .unwrap_or_default();
                            let len = frame.len() as u64;
                            let full = if meta.count >= self.limits.max_count {
                                Some(format!("{} transactions", meta.count))
                            } else if meta.bytes + len > self.limits.max_bytes {
                                Some(format!("{} bytes", meta.bytes))
                            } else if total + len > self.limits.max_total_bytes {
                                Some("the relay's total queue size is reached".to_owned())
                            } else {
                                None
                            };
                            if let Some(why) = full {
                                replies.push(Reply::Enqueued(reply, Err(QueueError::Full(why))));
                                continue;
                            }
                            items.insert((dest.as_str(), meta.next_seq), frame.as_slice())?;
                            meta.next_seq += 1;
                            meta.count += 1;
                            meta.bytes += len;
                            total += len;
                            dests.insert(dest.as_str(), (meta.next_seq, meta.count, meta.bytes))?;
                            replies.push(Reply::Enqueued(reply, Ok(meta.count)));
                            staged.insert(dest, meta);
                        }
                        Op::Peek { dest, after, reply } => {
                            let from = match after {
                                None => 0,
                                Some(seq) => seq.saturating_add(1),
                            };
                            let head = items
                                .range((dest.as_str(), from)..=(dest.as_str(), u64::MAX))?
                                .next()
                                .transpose()?
                                .map(|(k, v)| (k.value().1, v.value().to_vec()));
                            replies.push(Reply::Peeked(reply, Ok(head)));
                        }
                        Op::Remove { dest, seq } => {
                            let removed =
                                items.remove((dest.as_str(), seq))?.map(|v| v.value().len());
                            let Some(len) = removed else { continue };
                            let mut meta = staged
                                .get(&dest)
                                .or_else(|| self.metas.get(&dest))
                                .copied()
                                .unwrap_or_default();
                            meta.count = meta.count.saturating_sub(1);
                            meta.bytes = meta.bytes.saturating_sub(len as u64);
                            total = total.saturating_sub(len as u64);
                            if meta.count == 0 {
                                // An empty queue starts again at 0: order only matters within it.
                                dests.remove(dest.as_str())?;
                                meta = Meta::default();
                            } else {
                                dests.insert(
                                    dest.as_str(),
                                    (meta.next_seq, meta.count, meta.bytes),
                                )?;
                            }
                            staged.insert(dest, meta);
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                for (dest, meta) in staged {
                    if meta.count == 0 {
                        self.metas.remove(&dest);
                    } else {
                        self.metas.insert(dest, meta);
                    }
                }
                self.publish();
                replies
            }
            Err(e) => {
                tracing::error!("queue: transaction failed: {e}");
                replies
                    .into_iter()
                    .map(|r| match r {
                        Reply::Enqueued(tx, Ok(_)) => Reply::Enqueued(tx, Err(e.clone())),
                        Reply::Peeked(tx, _) => Reply::Peeked(tx, Err(e.clone())),
                        other => other,
                    })
                    .collect()
            }
        }
    }

    fn publish(&self) {
        let (count, bytes) = self
            .metas
            .values()
            .fold((0, 0), |(c, b), m| (c + m.count, b + m.bytes));
        self.gauges.transactions.store(count, Relaxed);
        self.gauges.bytes.store(bytes, Relaxed);
        self.gauges
            .destinations
            .store(self.metas.len() as u64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QueueLimits = QueueLimits {
        max_count: 3,
        max_bytes: 100,
        max_total_bytes: 150,
    };

    #[tokio::test]
    async fn fifo_per_destination_bounded_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (q, counts) = QueueStore::open(Some(dir.path()), LIMITS).unwrap();
            assert!(counts.is_empty());
            assert_eq!(q.enqueue("a", b"1".to_vec()).await, Ok(1));
            assert_eq!(q.enqueue("a", b"2".to_vec()).await, Ok(2));
            assert_eq!(q.enqueue("b", vec![0; 60]).await, Ok(1));
            assert_eq!(q.enqueue("a", b"3".to_vec()).await, Ok(3));
            assert!(matches!(
                q.enqueue("a", b"4".to_vec()).await,
                Err(QueueError::Full(_))
            ));
            assert!(matches!(
                q.enqueue("b", vec![0; 41]).await,
                Err(QueueError::Full(_))
            ));
            assert!(matches!(
                q.enqueue("c", vec![0; 90]).await,
                Err(QueueError::Full(_))
            ));
            assert_eq!(q.peek("a").await, Ok(Some((0, b"1".to_vec()))));
            q.remove("a", 0).unwrap();
            assert_eq!(q.peek("a").await, Ok(Some((1, b"2".to_vec()))));
            // What a drainer with one item in flight reads next.
            assert_eq!(
                q.peek_after("a", Some(1)).await,
                Ok(Some((2, b"3".to_vec())))
            );
            assert_eq!(q.peek_after("a", Some(2)).await, Ok(None));
            assert_eq!(q.peek_after("b", Some(u64::MAX)).await, Ok(None));
            assert_eq!(q.gauges().transactions, 3);
            q.close().await;
        }
        let (q, counts) = QueueStore::open(Some(dir.path()), LIMITS).unwrap();
        assert_eq!(counts.get("a"), Some(&2));
        assert_eq!(counts.get("b"), Some(&1));
        assert_eq!(q.peek("a").await, Ok(Some((1, b"2".to_vec()))));
        q.remove("a", 1).unwrap();
        q.remove("a", 2).unwrap();
        assert_eq!(q.peek("a").await, Ok(None));
        assert_eq!(q.enqueue("a", b"5".to_vec()).await, Ok(1));
        assert_eq!(q.peek("a").await, Ok(Some((0, b"5".to_vec()))));
        q.close().await;
    }

    #[tokio::test]
    async fn a_second_relay_cannot_open_the_same_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (q, _) = QueueStore::open(Some(dir.path()), LIMITS).unwrap();
        assert!(QueueStore::open(Some(dir.path()), LIMITS).is_err());
        q.close().await;
        assert!(QueueStore::open(Some(dir.path()), LIMITS).is_ok());
    }
}
