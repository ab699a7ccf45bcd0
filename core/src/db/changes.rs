//! Which parts of storage changed since a stream position, known without reading storage.
//!
//! An incremental `/sync` asks a dozen "anything after position p?" questions (timeline per
//! room, to-device, account data, receipts, device lists, ...). In the browser each is an
//! IndexedDB scan of ~0.5 ms even when the answer is "nothing", which is nearly always. The
//! server is its storage's only writer, so it can know the answer: [`Tracked`] wraps the
//! storage and notes, for every write, the newest stream position allocated at that moment
//! (an upper bound of every position the write can carry) per tree, and per first key part
//! (room or user) for the trees in [`PARTITIONED`]. Writes before this boot are unknown, so
//! anything at or below the boot position counts as changed.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use async_trait::async_trait;

use crate::storage::{Batch, Direction, Durable, KeyRange, Op, Storage, StorageResult};

/// Trees tracked per first key part as well as as a whole.
const PARTITIONED: &[&str] = &[
    "timeline",
    "state_history",
    "to_device",
    "account_data_stream",
    "memberships",
    "one_time_keys",
    "fallback_keys",
    "relations",
    "room_members",
];

/// When a part was last written: the stream position then, and a write sequence number (for
/// caches of things that carry no position, such as key counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub pos: u64,
    pub seq: u64,
}

#[derive(Debug)]
pub struct ChangeClock {
    /// The server's allocated stream position, shared with `Homeserver`.
    next_pos: Rc<Cell<u64>>,
    boot: Mark,
    seq: Cell<u64>,
    trees: RefCell<HashMap<&'static str, Mark>>,
    parts: RefCell<HashMap<(&'static str, Vec<u8>), Mark>>,
}

impl ChangeClock {
    pub fn new(next_pos: Rc<Cell<u64>>) -> Self {
        let boot = Mark {
            pos: next_pos.get(),
            seq: 0,
        };
        Self {
            next_pos,
            boot,
            seq: Cell::new(0),
            trees: RefCell::default(),
            parts: RefCell::default(),
        }
    }

    fn note(&self, touched: &Touched) {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let mark = Mark {
            pos: self.next_pos.get(),
            seq,
        };
        let mut trees = self.trees.borrow_mut();
        for tree in &touched.trees {
            trees.insert(tree, mark);
        }
        let mut parts = self.parts.borrow_mut();
        for part in &touched.parts {
            parts.insert(part.clone(), mark);
        }
    }

    /// When `tree` was last written (the boot mark if not since boot).
    pub fn tree(&self, tree: &str) -> Mark {
        self.trees.borrow().get(tree).copied().unwrap_or(self.boot)
    }

    /// When the keys of `tree` starting with `part` were last written. `tree` must be one of
    /// the partitioned trees.
    pub fn part(&self, tree: &'static str, part: &[u8]) -> Mark {
        debug_assert!(PARTITIONED.contains(&tree), "{tree} is not partitioned");
        self.parts
            .borrow()
            .get(&(tree, part.to_vec()))
            .copied()
            .unwrap_or(self.boot)
    }

    /// The sequence number a cache should remember when it starts reading: comparing it with
    /// a part's `seq` later tells whether anything was written since, even mid-read.
    pub fn seq(&self) -> u64 {
        self.seq.get()
    }

    /// The stream position this server booted at: what was written up to it is unknown.
    pub fn boot_pos(&self) -> u64 {
        self.boot.pos
    }

    /// Whether the `part` keys of `tree` were not written since boot.
    pub fn part_untouched_since_boot(&self, tree: &'static str, part: &[u8]) -> bool {
        self.part(tree, part) == self.boot
    }

    /// Whether `tree` may hold anything written after stream position `since`.
    pub fn tree_changed_since(&self, tree: &str, since: u64) -> bool {
        self.tree(tree).pos > since
    }

    /// Whether the `part` keys of `tree` may hold anything written after `since`.
    pub fn part_changed_since(&self, tree: &'static str, part: &[u8], since: u64) -> bool {
        self.part(tree, part).pos > since
    }
}

/// The trees and tree parts one batch writes.
#[derive(Debug, Default)]
struct Touched {
    trees: Vec<&'static str>,
    parts: Vec<(&'static str, Vec<u8>)>,
}

impl Touched {
    fn of(batch: &Batch) -> Self {
        let mut t = Self::default();
        for op in &batch.ops {
            let (Op::Put { tree, key, .. } | Op::Delete { tree, key }) = op;
            if !t.trees.contains(tree) {
                t.trees.push(tree);
            }
            if PARTITIONED.contains(tree) {
                let part = (*tree, first_part(key).to_vec());
                if !t.parts.contains(&part) {
                    t.parts.push(part);
                }
            }
        }
        t
    }
}

/// The first part of a key built by `db::key`.
fn first_part(key: &[u8]) -> &[u8] {
    key.split(|b| *b == 0).next().unwrap_or(key)
}

/// The storage as the server sees it. Every write is noted on the clock before it starts, so a
/// reader that checks the clock afterwards never misses it, and again once it has ended, so an
/// answer computed while it was in flight (`Homeserver::memo`) is not kept as current.
pub struct Tracked {
    inner: Rc<dyn Storage>,
    clock: Rc<ChangeClock>,
}

impl Tracked {
    pub fn new(inner: Rc<dyn Storage>, clock: Rc<ChangeClock>) -> Self {
        Self { inner, clock }
    }
}

#[async_trait(?Send)]
impl Storage for Tracked {
    async fn get(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.inner.get(tree, key).await
    }

    async fn get_many(
        &self,
        tree: &'static str,
        keys: &[Vec<u8>],
    ) -> StorageResult<Vec<Option<Vec<u8>>>> {
        self.inner.get_many(tree, keys).await
    }

    async fn scan(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(tree, range, direction, limit).await
    }

    async fn begin_write(&self, batch: Batch) -> StorageResult<Durable> {
        let touched = Touched::of(&batch);
        self.clock.note(&touched);
        let durable = match self.inner.begin_write(batch).await {
            Ok(durable) => durable,
            Err(e) => {
                self.clock.note(&touched);
                return Err(e);
            }
        };
        let clock = self.clock.clone();
        Ok(Box::pin(async move {
            let result = durable.await;
            clock.note(&touched);
            result
        }))
    }

    async fn size_estimate(&self) -> StorageResult<u64> {
        self.inner.size_estimate().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::key;
    use crate::storage::MemoryStorage;

    #[test]
    fn writes_are_noted_per_tree_and_part_at_the_allocated_position() {
        futures::executor::block_on(async {
            let pos = Rc::new(Cell::new(10));
            let clock = Rc::new(ChangeClock::new(pos.clone()));
            let store = Tracked::new(Rc::new(MemoryStorage::new()), clock.clone());
            // Nothing known before boot: everything up to the boot position may have changed.
            assert!(clock.tree_changed_since("receipts", 9));
            assert!(!clock.tree_changed_since("receipts", 10));
            assert!(clock.part_changed_since("timeline", b"!a", 9));

            pos.set(12);
            let mut b = Batch::new();
            b.put("timeline", key(&[b"!a", b"x"]), b"1".to_vec());
            store.write(b).await.expect("write");
            assert!(clock.part_changed_since("timeline", b"!a", 11));
            assert!(!clock.part_changed_since("timeline", b"!a", 12));
            assert!(!clock.part_changed_since("timeline", b"!b", 10));
            assert!(clock.tree_changed_since("timeline", 11));
            assert!(!clock.tree_changed_since("receipts", 10));
            // Noted when the write started and again when it ended.
            assert_eq!(clock.seq(), 2);
            assert_eq!(clock.part("timeline", b"!a").seq, 2);
        });
    }
}
