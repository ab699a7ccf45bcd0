//! The data layer: how the server's records are laid out in storage trees, and the
//! in-memory caches in front of them. Endpoint modules in `client/` call into here.

pub mod append;
pub mod backup;
pub mod e2ee;
pub mod media;
pub mod power;
pub mod push;
pub mod relations;
pub mod rooms;
pub mod users;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Direction, KeyRange};

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
    }

    pub fn put_pdu(&self, pdu: Rc<rooms::Pdu>) {
        let mut pdus = self.pdus.borrow_mut();
        if pdus.len() >= PDU_CACHE_MAX {
            pdus.clear();
        }
        pdus.insert(pdu.event_id.clone(), pdu);
    }
}
