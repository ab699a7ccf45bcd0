//! The storage abstraction: ordered key-value trees with atomic multi-tree write batches.
//!
//! The shape maps one-to-one onto IndexedDB (a tree is an object store, a batch is one
//! read-write transaction), onto `BTreeMap`s for the in-memory backend, and onto any
//! ordered embedded store natively. Keys are compared as raw bytes.

pub mod conformance;
mod memory;

use std::ops::Bound;

use async_trait::async_trait;

pub use memory::MemoryStorage;

/// Every tree the server uses. IndexedDB needs the full list when it opens the database; its
/// version counts the trees, so adding one upgrades the database by itself (see
/// `hearth-web`'s `indexeddb.rs`). Changing what a tree holds means bumping [`SCHEMA_VERSION`].
pub const TREES: &[&str] = &[
    "meta",
    "users",
    "devices",
    "tokens",
    "refresh_tokens",
    "uia_sessions",
    "events",
    "event_positions",
    "timeline",
    "stream",
    "state",
    "state_history",
    "member_history",
    "memberships",
    "room_members",
    "rooms",
    "txn_ids",
    "account_data",
    "account_data_stream",
    "aliases",
    "room_aliases",
    "filters",
    "receipts",
    "presence",
    "device_keys",
    "one_time_keys",
    "fallback_keys",
    "cross_signing",
    "key_changes",
    "to_device",
    "to_device_txns",
    "media",
    "media_data",
    "media_pending",
    "media_thumbnails",
    "pushers",
    "notifications",
    "relations",
    "search",
    "threads",
    "reports",
    "key_backup",
    "openid",
    "threepids",
    "profile_fields",
    "erased_users",
    "directory",
    "server_keys",
    "state_groups",
    "outbox",
    "inbound_txns",
    "destinations",
    "pending_redactions",
    "test",
];

/// The version of the tree layout. Backends that persist data store it and migrate on change.
pub const SCHEMA_VERSION: u32 = 1;

/// Errors a storage backend reports. They become `M_UNKNOWN` (or `M_RESOURCE_LIMIT_EXCEEDED`
/// for quota) responses; nothing of the failed batch is visible afterwards.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    #[error("unknown tree {0:?}")]
    UnknownTree(String),
    #[error("storage quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A write that has been issued (see [`Storage::begin_write`]): resolves when the batch is
/// durable, or with why it is not. Dropping it does not cancel the write.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = StorageResult<()>>>>;

/// The direction of a range scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// One change inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        tree: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: &'static str,
        key: Vec<u8>,
    },
}

/// A set of changes across trees that a backend applies atomically: all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, tree: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            tree,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, tree: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            tree,
            key: key.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
    }

    /// The same effect with one op per key: the last one. A room transaction that takes in
    /// many events rewrites some rows once per event (a room's unread counts); a backend that
    /// pays per put (IndexedDB) writes each of them once.
    pub fn last_per_key(self) -> Batch {
        let mut seen: std::collections::HashSet<(&'static str, Vec<u8>)> =
            std::collections::HashSet::with_capacity(self.ops.len());
        let mut ops: Vec<Op> = Vec::with_capacity(self.ops.len());
        for op in self.ops.into_iter().rev() {
            let (Op::Put { tree, key, .. } | Op::Delete { tree, key }) = &op;
            if seen.insert((tree, key.clone())) {
                ops.push(op);
            }
        }
        ops.reverse();
        Batch { ops }
    }

    /// The value this batch would leave for `key`, if it touches it: `Some(None)` for a delete.
    pub fn pending(&self, tree: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.ops.iter().rev().find_map(|op| match op {
            Op::Put {
                tree: t,
                key: k,
                value,
            } if *t == tree && k == key => Some(Some(&value[..])),
            Op::Delete { tree: t, key: k } if *t == tree && k == key => Some(None),
            _ => None,
        })
    }
}

/// A key range for scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    pub fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        }
    }

    pub fn new(start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Self {
        Self { start, end }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let after_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let before_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        after_start && before_end
    }

    /// True when no key can be inside the range (IndexedDB rejects such ranges outright).
    pub fn is_empty(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Included(s), Bound::Included(e)) => s > e,
            (Bound::Included(s), Bound::Excluded(e))
            | (Bound::Excluded(s), Bound::Included(e))
            | (Bound::Excluded(s), Bound::Excluded(e)) => s >= e,
            _ => false,
        }
    }
}

/// The smallest key greater than every key that starts with `prefix`.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An ordered key-value store with atomic batches. No `Send` bound: wasm is single-threaded.
#[async_trait(?Send)]
pub trait Storage {
    async fn get(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;

    /// Up to `limit` entries inside `range`, in key order (`Forward`) or reverse key order.
    async fn scan(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Point reads of several keys of one tree, answered in the keys' order. A backend that
    /// pays per read transaction (IndexedDB) does them all in one.
    async fn get_many(
        &self,
        tree: &'static str,
        keys: &[Vec<u8>],
    ) -> StorageResult<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(tree, k).await?);
        }
        Ok(out)
    }

    /// Applies every op of the batch, or none of them.
    async fn write(&self, batch: Batch) -> StorageResult<()> {
        self.begin_write(batch).await?.await
    }

    /// Issues a write and returns once it is issued, not once it is durable, so the caller
    /// can go on preparing the next one while the backend commits this one (a browser spends
    /// most of a federation catch-up waiting for IndexedDB commits).
    ///
    /// The contract:
    /// - every read and write that starts after this returns sees the batch, as if written;
    /// - a write still in flight is waited for first, and when the write issued last failed,
    ///   this one fails too without being issued, since whoever prepared it may have read
    ///   what failed (the one after it goes through again);
    /// - the returned [`Durable`] says whether the batch became durable. If it fails, nothing
    ///   of the batch stays visible.
    async fn begin_write(&self, batch: Batch) -> StorageResult<Durable>;

    /// Approximate bytes stored, for the status page.
    async fn size_estimate(&self) -> StorageResult<u64> {
        Ok(0)
    }
}
