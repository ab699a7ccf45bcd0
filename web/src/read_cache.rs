//! A write-through cache of point reads in front of IndexedDB.
//!
//! Every IndexedDB read is a transaction of its own and costs about half a millisecond in
//! Chromium; a message send does several. The server is the database's only writer (the
//! server worker holds the `hearth-server` Web Lock for as long as it runs), so what it last
//! wrote or read is what the database holds, and answers can come from memory.
//!
//! Coherence rules:
//! - a batch updates the cache for every key it touches (absent keys included) when it is
//!   issued: IndexedDB runs every later read after it, so the cache answers as they would;
//! - a read fills only keys the cache does not hold: a key a commit wrote while the read was
//!   in flight is held already (with the committed value), so an older value read before
//!   that commit can never overwrite it;
//! - when the cache drops something a commit told it (a clear, the budget, a value too big
//!   to keep), reads in flight at that moment fill nothing, since they can no longer tell
//!   whether their key was written under them;
//! - a batch that then fails empties the cache (it showed what never reached the database).
//!
//! Reads overlap commits all the time: a federation transaction's lookups are issued while
//! the previous transaction's write is still in flight, and refusing every such fill would
//! send each of its events to IndexedDB again, one read transaction each.

use std::collections::HashMap;

use hearth_core::storage::{Batch, Op};

/// Values larger than this are not worth the memory (media blobs, big state snapshots).
const MAX_CACHED_VALUE: usize = 64 * 1024;
/// The cache empties itself when it grows past this many bytes of keys and values.
const BUDGET_BYTES: usize = 32 * 1024 * 1024;

type Entry = Option<Vec<u8>>;

#[derive(Debug, Default)]
pub struct ReadCache {
    entries: HashMap<(&'static str, Vec<u8>), Entry>,
    bytes: usize,
    /// Bumped by every commit and every time the cache forgets; reads remember it.
    epoch: u64,
    /// The epoch at which the cache last dropped values it had been told: a read that
    /// started before it fills nothing.
    forgot_at: u64,
    hits: u64,
    /// Misses per tree, to tell which reads go to IndexedDB.
    misses_by_tree: std::collections::BTreeMap<&'static str, u64>,
}

/// Taken when a read starts; hands the answer back to the cache when it ends.
#[derive(Debug, Clone, Copy)]
pub struct ReadTicket(u64);

impl ReadCache {
    /// `Some(answer)` when the cache knows the key (`Some(None)`: known to be absent).
    pub fn get(&mut self, tree: &'static str, key: &[u8]) -> Option<Entry> {
        match self.entries.get(&(tree, key.to_vec())) {
            Some(entry) => {
                self.hits += 1;
                Some(entry.clone())
            }
            None => {
                *self.misses_by_tree.entry(tree).or_default() += 1;
                None
            }
        }
    }

    pub fn ticket(&self) -> ReadTicket {
        ReadTicket(self.epoch)
    }

    /// Remembers what a read found, unless the cache holds the key already (a commit or a
    /// read got there first) or forgot something since the read started.
    pub fn fill(&mut self, ticket: ReadTicket, tree: &'static str, key: &[u8], value: &Entry) {
        if ticket.0 < self.forgot_at || self.entries.contains_key(&(tree, key.to_vec())) {
            return;
        }
        self.insert(tree, key.to_vec(), value.clone());
    }

    /// Applies a batch that has been issued to IndexedDB.
    pub fn committed(&mut self, batch: &Batch) {
        self.epoch += 1;
        for op in &batch.ops {
            match op {
                Op::Put { tree, key, value } => self.insert(tree, key.clone(), Some(value.clone())),
                Op::Delete { tree, key } => self.insert(tree, key.clone(), None),
            }
        }
    }

    /// Forgets everything (the connection closed; the database may change under us).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.forgot();
    }

    fn forgot(&mut self) {
        self.epoch += 1;
        self.forgot_at = self.epoch;
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }

    pub fn misses(&self) -> u64 {
        self.misses_by_tree.values().sum()
    }

    pub fn misses_by_tree(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.misses_by_tree
    }

    fn insert(&mut self, tree: &'static str, key: Vec<u8>, value: Entry) {
        let value_len = value.as_ref().map_or(0, Vec::len);
        let cost = key.len() + value_len;
        if value_len > MAX_CACHED_VALUE {
            // Too big to keep, but a stale smaller copy must not survive either.
            if let Some(old) = self.entries.remove(&(tree, key.clone())) {
                self.bytes -= key.len() + old.as_ref().map_or(0, Vec::len);
            }
            self.forgot();
            return;
        }
        if self.bytes + cost > BUDGET_BYTES {
            // Rare, and rebuilding from IndexedDB is cheap: simpler than tracking recency.
            self.entries.clear();
            self.bytes = 0;
            self.forgot();
        }
        let old_cost = |old: &Entry, key: &Vec<u8>| key.len() + old.as_ref().map_or(0, Vec::len);
        let k = (tree, key);
        if let Some(old) = self.entries.get(&k) {
            self.bytes -= old_cost(old, &k.1);
        }
        self.bytes += cost;
        self.entries.insert(k, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(tree, key, Some(value))` puts, `(tree, key, None)` deletes.
    type TestOp<'a> = (&'static str, &'a [u8], Option<&'a [u8]>);

    fn batch(ops: &[TestOp<'_>]) -> Batch {
        let mut b = Batch::new();
        for (tree, key, value) in ops {
            match value {
                Some(v) => b.put(tree, key.to_vec(), v.to_vec()),
                None => b.delete(tree, key.to_vec()),
            }
        }
        b
    }

    #[test]
    fn commit_is_visible_including_deletes() {
        let mut c = ReadCache::default();
        c.committed(&batch(&[("t", b"a", Some(b"1")), ("t", b"b", None)]));
        assert_eq!(c.get("t", b"a"), Some(Some(b"1".to_vec())));
        assert_eq!(c.get("t", b"b"), Some(None));
        assert_eq!(c.get("t", b"c"), None);
        assert_eq!(c.get("u", b"a"), None, "trees are separate");
    }

    #[test]
    fn read_overlapping_a_commit_keeps_the_committed_value() {
        let mut c = ReadCache::default();
        let ticket = c.ticket();
        c.committed(&batch(&[("t", b"a", Some(b"new"))]));
        c.fill(ticket, "t", b"a", &Some(b"old".to_vec()));
        assert_eq!(c.get("t", b"a"), Some(Some(b"new".to_vec())));
        let ticket = c.ticket();
        c.fill(ticket, "t", b"z", &None);
        assert_eq!(c.get("t", b"z"), Some(None));
    }

    #[test]
    fn read_overlapping_a_commit_of_other_keys_fills() {
        let mut c = ReadCache::default();
        let ticket = c.ticket();
        c.committed(&batch(&[("t", b"a", Some(b"new"))]));
        c.fill(ticket, "t", b"b", &None);
        assert_eq!(c.get("t", b"b"), Some(None));
        // A commit after the fill still wins.
        c.committed(&batch(&[("t", b"b", Some(b"later"))]));
        assert_eq!(c.get("t", b"b"), Some(Some(b"later".to_vec())));
    }

    #[test]
    fn a_value_too_big_to_keep_stops_fills_in_flight() {
        let mut c = ReadCache::default();
        let ticket = c.ticket();
        let big = vec![0u8; MAX_CACHED_VALUE + 1];
        c.committed(&batch(&[("t", b"a", Some(&big))]));
        // The read may have started before that write: its (old) value must not be kept.
        c.fill(ticket, "t", b"a", &Some(b"old".to_vec()));
        assert_eq!(c.get("t", b"a"), None);
        c.fill(c.ticket(), "t", b"b", &None);
        assert_eq!(c.get("t", b"b"), Some(None), "later reads fill again");
    }

    #[test]
    fn a_budget_clear_stops_fills_in_flight() {
        let mut c = ReadCache::default();
        let ticket = c.ticket();
        c.committed(&batch(&[("t", b"a", Some(b"new"))]));
        let v = vec![0u8; MAX_CACHED_VALUE];
        let mut i = 0u32;
        while c.entries.contains_key(&("t", b"a".to_vec())) {
            c.committed(&batch(&[("u", &i.to_be_bytes(), Some(&v))]));
            i += 1;
        }
        c.fill(ticket, "t", b"a", &Some(b"old".to_vec()));
        assert_eq!(c.get("t", b"a"), None);
    }

    #[test]
    fn big_values_are_not_kept_and_evict_older_copies() {
        let mut c = ReadCache::default();
        c.committed(&batch(&[("t", b"a", Some(b"small"))]));
        let big = vec![0u8; MAX_CACHED_VALUE + 1];
        c.committed(&batch(&[("t", b"a", Some(&big))]));
        assert_eq!(c.get("t", b"a"), None);
        assert_eq!(c.bytes, 0);
    }

    #[test]
    fn budget_is_bounded() {
        let mut c = ReadCache::default();
        let v = vec![0u8; MAX_CACHED_VALUE];
        for i in 0..(BUDGET_BYTES / MAX_CACHED_VALUE + 10) as u32 {
            c.committed(&batch(&[("t", &i.to_be_bytes(), Some(&v))]));
            assert!(c.bytes <= BUDGET_BYTES);
        }
    }

    #[test]
    fn clear_forgets_and_invalidates_tickets() {
        let mut c = ReadCache::default();
        c.committed(&batch(&[("t", b"a", Some(b"1"))]));
        let ticket = c.ticket();
        c.clear();
        c.fill(ticket, "t", b"a", &Some(b"1".to_vec()));
        assert_eq!(c.get("t", b"a"), None);
    }
}
