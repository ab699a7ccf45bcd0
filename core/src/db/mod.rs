//! The data layer: how the server's records are laid out in storage trees, and the
//! in-memory caches in front of them. Endpoint modules in `client/` call into here.

pub mod backup;
pub mod changes;
pub mod e2ee;
pub mod media;
pub mod power;
pub mod push;
pub mod relations;
pub mod rooms;
pub mod search_index;
pub mod state_groups;
pub mod users;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Direction, KeyRange, Op};

/// Joins key parts with a 0x00 separator. Matrix identifiers never contain NUL, so keys of
/// the same prefix sort together and prefix scans cannot bleed into a neighbour.
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(p);
    }
    out
}

/// `key(parts)` followed by the separator: the prefix of every key that extends `parts`.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

pub fn pos_bytes(pos: u64) -> [u8; 8] {
    pos.to_be_bytes()
}

pub fn pos_from(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        bytes.get(bytes.len().checked_sub(8)?..)?.try_into().ok()?,
    ))
}

pub fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(MatrixError::from)
}

pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| MatrixError::unknown(format!("corrupt record: {e}")))
}

impl Homeserver {
    /// Reads and decodes a JSON record.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        tree: &'static str,
        k: &[u8],
    ) -> Result<Option<T>> {
        match self.store.get(tree, k).await? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }

    /// Every entry under `prefix`, decoded, in key order.
    pub async fn scan_prefix(
        &self,
        tree: &'static str,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .store
            .scan(
                tree,
                KeyRange::prefix(prefix),
                Direction::Forward,
                usize::MAX,
            )
            .await?)
    }
}

impl Homeserver {
    /// `compute`'s answer, remembered until the `part` keys of `tree` (a tree the change
    /// clock partitions) are written again. For derived values read on every `/sync`.
    pub async fn memo<T: 'static, Fut>(
        &self,
        tree: &'static str,
        part: &[u8],
        key: &[u8],
        compute: impl FnOnce() -> Fut,
    ) -> Result<Rc<T>>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        let slot = (tree, key.to_vec());
        let known = self.caches.memo.borrow().get(&slot).cloned();
        if let Some((seq, value)) = known
            && self.changes.part(tree, part).seq <= seq
            && let Ok(value) = value.downcast::<T>()
        {
            return Ok(value);
        }
        // Remember the sequence from before the read: a write during it makes the answer stale.
        let started = self.changes.seq();
        let value = Rc::new(compute().await?);
        self.caches
            .memo
            .borrow_mut()
            .insert(slot, (started, value.clone()));
        Ok(value)
    }
}

/// Caches of hot records. A failed write clears them, so they never run ahead of storage.
#[derive(Default)]
pub struct Caches {
    pub tokens: RefCell<HashMap<String, users::TokenRecord>>,
    pub room_state: RefCell<HashMap<ruma::OwnedRoomId, Rc<rooms::RoomState>>>,
    pub pdus: RefCell<HashMap<ruma::OwnedEventId, Rc<rooms::Pdu>>>,
    /// `(locked, suspended)` per local user, checked on every request.
    pub user_flags: RefCell<HashMap<ruma::OwnedUserId, (bool, bool)>>,
    /// Effective push rules per user (stored rules merged with the server defaults).
    pub push_rules: RefCell<HashMap<ruma::OwnedUserId, Rc<ruma::push::Ruleset>>>,
    pub typing: crate::client::typing::TypingState,
    /// Transaction ids per `(user, device)` key prefix, complete for every device present:
    /// a send looks its id up on every request, and a new id is a miss no read cache can
    /// answer. Loaded and extended only under the write lock, like every txn id write.
    pub txn_ids: RefCell<HashMap<Vec<u8>, TxnIds>>,
    /// Answers remembered by [`Homeserver::memo`]: `(tree, key) → (write seq when computed,
    /// value)`.
    pub memo: RefCell<HashMap<(&'static str, Vec<u8>), Memo>>,
    /// Decoded state groups: id → (chain length, state). See [`state_groups`].
    pub state_groups: RefCell<HashMap<u64, (u32, Rc<state_groups::StateMap>)>>,
}

/// A remembered answer: the write sequence when it was computed, and the value.
pub type Memo = (u64, Rc<dyn std::any::Any>);

/// One device's transaction ids: id → event id.
pub type TxnIds = HashMap<Vec<u8>, Vec<u8>>;

/// A device with more transaction ids than this is looked up in storage instead (a bot that
/// sent a million messages should not pin them all in memory).
pub const MAX_CACHED_TXN_IDS_PER_DEVICE: usize = 20_000;

/// The transaction ids a batch records (`key → event id`), to extend the loaded sets with once
/// the batch is durable.
#[derive(Debug, Default)]
pub struct Touched {
    txn_ids: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Touched {
    pub fn of(batch: &crate::storage::Batch) -> Self {
        let txn_ids = batch
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Put {
                    tree: "txn_ids",
                    key,
                    value,
                } => Some((key.clone(), value.clone())),
                _ => None,
            })
            .collect();
        Self { txn_ids }
    }
}

/// A txn id key split into its `(user, device)` prefix and the id.
fn split_txn_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = key.iter().position(|b| *b == 0)?;
    let second = first + 1 + key[first + 1..].iter().position(|b| *b == 0)?;
    Some((&key[..=second], &key[second + 1..]))
}

/// Past this many cached events the cache starts over; events are cheap to reload.
const PDU_CACHE_MAX: usize = 20_000;

impl Caches {
    pub fn clear(&self) {
        self.tokens.borrow_mut().clear();
        self.room_state.borrow_mut().clear();
        self.pdus.borrow_mut().clear();
        self.user_flags.borrow_mut().clear();
        self.push_rules.borrow_mut().clear();
        self.txn_ids.borrow_mut().clear();
        self.memo.borrow_mut().clear();
        self.state_groups.borrow_mut().clear();
    }

    /// Brings the caches up to date with a batch that is now durable.
    pub fn committed(&self, touched: Touched) {
        if !touched.txn_ids.is_empty() {
            let mut known = self.txn_ids.borrow_mut();
            for (key, event_id) in touched.txn_ids {
                let Some((device, txn)) = split_txn_key(&key) else {
                    continue;
                };
                let full = match known.get_mut(device) {
                    Some(ids) => {
                        ids.insert(txn.to_vec(), event_id);
                        ids.len() >= MAX_CACHED_TXN_IDS_PER_DEVICE
                    }
                    None => false,
                };
                if full {
                    known.remove(device);
                }
            }
        }
    }

    pub fn put_pdu(&self, pdu: Rc<rooms::Pdu>) {
        let mut pdus = self.pdus.borrow_mut();
        if pdus.len() >= PDU_CACHE_MAX {
            pdus.clear();
        }
        pdus.insert(pdu.event_id.clone(), pdu);
    }
}
