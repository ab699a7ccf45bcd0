//! The state of a room before and after every event, without a full copy per event.
//!
//! A room is a graph: two events can share a parent, and an event can have several. So "the
//! state before this event" is a property of the event, not of a stream position. Each
//! distinct state is a *state group*; an event records the group before it and the group
//! after it (the same group for a non-state event, so messages cost nothing here).
//!
//! A group is stored as a delta against a parent group. Every [`SNAPSHOT_EVERY`] links the
//! chain is cut with a full copy, so loading any group reads at most that many rows, and a
//! room with `S` state events costs `O(S)` rows plus one snapshot per [`SNAPSHOT_EVERY`].
//!
//! Layout: `state_groups`: group id (u64 BE, taken from the stream position counter so it
//! is unique and durable) → [`StoredGroup`].

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use ruma::OwnedEventId;
use serde::{Deserialize, Serialize};

use super::rooms::StateKey;
use super::{from_json, pos_bytes, to_json};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::Batch;

/// A room state: `(type, state_key) → event id`.
pub type StateMap = BTreeMap<StateKey, OwnedEventId>;

/// Longest delta chain before a group is stored whole.
pub const SNAPSHOT_EVERY: u32 = 32;

/// Groups kept decoded in memory; beyond this the cache starts over (groups are cheap to
/// rebuild: at most [`SNAPSHOT_EVERY`] reads).
const CACHE_MAX: usize = 512;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredGroup {
    /// The group this one is a delta against; `None` for a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    /// Links from here to the snapshot the chain starts at.
    #[serde(default)]
    pub links: u32,
    /// `(type, state_key, event)`; `None` removes the key (state resolution can drop one).
    pub delta: Vec<(String, String, Option<OwnedEventId>)>,
}

/// Groups written by a transaction that is not durable yet: visible to that transaction
/// only, published to the cache after the commit.
#[derive(Debug, Default)]
pub struct PendingGroups {
    groups: HashMap<u64, (u32, Rc<StateMap>)>,
}

impl PendingGroups {
    pub fn publish(self, hs: &Homeserver) {
        for (id, (links, map)) in self.groups {
            put_cached(hs, id, links, map);
        }
    }
}

fn put_cached(hs: &Homeserver, id: u64, links: u32, map: Rc<StateMap>) {
    let mut cache = hs.caches.state_groups.borrow_mut();
    if cache.len() >= CACHE_MAX {
        cache.clear();
    }
    cache.insert(id, (links, map));
}

fn corrupt(id: u64, why: &str) -> MatrixError {
    MatrixError::unknown(format!("state group {id} is unusable: {why}"))
}

/// The state a group stands for, and its chain length.
pub async fn load(
    hs: &Homeserver,
    pending: &PendingGroups,
    id: u64,
) -> Result<(u32, Rc<StateMap>)> {
    if let Some((links, map)) = pending.groups.get(&id) {
        return Ok((*links, map.clone()));
    }
    if let Some((links, map)) = hs.caches.state_groups.borrow().get(&id) {
        return Ok((*links, map.clone()));
    }
    // Walk up to a snapshot (or a cached ancestor), then apply the deltas back down.
    let mut chain: Vec<StoredGroup> = Vec::new();
    let mut base: Option<Rc<StateMap>> = None;
    let mut at = id;
    loop {
        if chain.len() > SNAPSHOT_EVERY as usize + 1 {
            return Err(corrupt(id, "delta chain longer than the snapshot interval"));
        }
        let cached = pending.groups.get(&at).map(|(_, m)| m.clone()).or_else(|| {
            hs.caches
                .state_groups
                .borrow()
                .get(&at)
                .map(|(_, m)| m.clone())
        });
        if let Some(map) = cached {
            base = Some(map);
            break;
        }
        let bytes = hs
            .store
            .get("state_groups", &pos_bytes(at))
            .await?
            .ok_or_else(|| corrupt(at, "missing"))?;
        let group: StoredGroup = from_json(&bytes)?;
        let parent = group.parent;
        chain.push(group);
        match parent {
            Some(p) => at = p,
            None => break,
        }
    }
    let mut map: StateMap = base.map(|b| (*b).clone()).unwrap_or_default();
    let links = chain.first().map_or(0, |g| g.links);
    for group in chain.iter().rev() {
        apply(&mut map, &group.delta);
    }
    let map = Rc::new(map);
    put_cached(hs, id, links, map.clone());
    Ok((links, map))
}

fn apply(map: &mut StateMap, delta: &[(String, String, Option<OwnedEventId>)]) {
    for (t, k, id) in delta {
        match id {
            Some(id) => {
                map.insert((t.clone(), k.clone()), id.clone());
            }
            None => {
                map.remove(&(t.clone(), k.clone()));
            }
        }
    }
}

/// The changes that turn `from` into `to`.
pub fn diff(from: &StateMap, to: &StateMap) -> Vec<(String, String, Option<OwnedEventId>)> {
    let mut out = Vec::new();
    for (k, id) in to {
        if from.get(k) != Some(id) {
            out.push((k.0.clone(), k.1.clone(), Some(id.clone())));
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            out.push((k.0.clone(), k.1.clone(), None));
        }
    }
    out
}

/// Stores `state` as a new group, as a delta against `parent` when one is given and its chain
/// is short enough, else whole. Returns the new group's id.
pub async fn store(
    hs: &Homeserver,
    batch: &mut Batch,
    pending: &mut PendingGroups,
    parent: Option<u64>,
    state: StateMap,
) -> Result<u64> {
    let id = hs.alloc_pos();
    let stored = match parent {
        Some(p) => {
            let (links, base) = load(hs, pending, p).await?;
            if links + 1 >= SNAPSHOT_EVERY {
                snapshot(&state)
            } else {
                StoredGroup {
                    parent: Some(p),
                    links: links + 1,
                    delta: diff(&base, &state),
                }
            }
        }
        None => snapshot(&state),
    };
    batch.put("state_groups", pos_bytes(id).to_vec(), to_json(&stored)?);
    pending.groups.insert(id, (stored.links, Rc::new(state)));
    Ok(id)
}

fn snapshot(state: &StateMap) -> StoredGroup {
    StoredGroup {
        parent: None,
        links: 0,
        delta: state
            .iter()
            .map(|((t, k), id)| (t.clone(), k.clone(), Some(id.clone())))
            .collect(),
    }
}
