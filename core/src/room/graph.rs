//! The state before and after events, and state resolution where branches merge.

use std::collections::HashMap;
use std::rc::Rc;

use ruma::OwnedEventId;
use ruma::events::StateEventType;
use ruma::room_version_rules::StateResolutionVersion;
use ruma::state_res::utils::event_id_set::EventIdSet;

use crate::db::rooms::{Pdu, state_at};
use crate::db::state_groups::{self, StateMap};
use crate::error::{MatrixError, Result};
use crate::room::txn::RoomTxn;

/// The room state after `pdu`, and its group (`None` for an event older than state groups,
/// whose state is rebuilt from the state history of its line-shaped room).
pub async fn state_after(txn: &RoomTxn<'_>, pdu: &Pdu) -> Result<(Option<u64>, Rc<StateMap>)> {
    match pdu.meta.state_after {
        Some(group) => {
            let (_, map) = state_groups::load(txn.hs(), &txn.groups, group).await?;
            Ok((Some(group), map))
        }
        None => {
            let map = state_at(txn.hs(), &txn.room_id, pdu.pos).await?;
            Ok((None, Rc::new(map)))
        }
    }
}

/// The state before an event whose parents are `prevs`: the state after the parent, or the
/// resolution of the states after each of them. A merged state gets a group of its own.
pub async fn state_before(
    txn: &mut RoomTxn<'_>,
    prevs: &[Rc<Pdu>],
) -> Result<(Option<u64>, Rc<StateMap>)> {
    let mut states: Vec<(Option<u64>, Rc<StateMap>)> = Vec::with_capacity(prevs.len());
    for p in prevs {
        let s = state_after(txn, p).await?;
        if !states
            .iter()
            .any(|(g, m)| (g.is_some() && *g == s.0) || *m == s.1)
        {
            states.push(s);
        }
    }
    match states.len() {
        0 => Ok((None, Rc::new(StateMap::new()))),
        1 => Ok(states.remove(0)),
        _ => {
            let maps: Vec<Rc<StateMap>> = states.iter().map(|(_, m)| m.clone()).collect();
            let resolved = resolve(txn, &maps).await?;
            let parent = states.iter().find_map(|(g, _)| *g);
            let hs = txn.hs();
            let group = state_groups::store(
                hs,
                &mut txn.batch,
                &mut txn.groups,
                parent,
                resolved.clone(),
            )
            .await?;
            Ok((Some(group), Rc::new(resolved)))
        }
    }
}

/// State resolution v2 over `maps`. States that agree on every key resolve to their union
/// without loading anything; otherwise the events and their full auth chains are loaded
/// (ruma's algorithm asks for events synchronously) and ruma decides.
pub async fn resolve(txn: &RoomTxn<'_>, maps: &[Rc<StateMap>]) -> Result<StateMap> {
    let mut union = StateMap::new();
    let mut conflicted = false;
    for m in maps {
        for (k, v) in m.iter() {
            match union.get(k) {
                Some(existing) if existing != v => conflicted = true,
                Some(_) => {}
                None => {
                    union.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !conflicted && maps.iter().all(|m| m.len() == union.len()) {
        return Ok(union);
    }
    let StateResolutionVersion::V2(res_rules) = &txn.rules.state_res else {
        return Err(MatrixError::unknown(
            "this room version does not use state resolution v2",
        ));
    };

    let mut events: HashMap<OwnedEventId, Rc<Pdu>> = HashMap::new();
    let mut chains: Vec<EventIdSet<OwnedEventId>> = Vec::with_capacity(maps.len());
    for m in maps {
        let mut chain = EventIdSet::new();
        let mut stack: Vec<OwnedEventId> = m.values().cloned().collect();
        while let Some(id) = stack.pop() {
            let pdu = match events.get(&id) {
                Some(p) => p.clone(),
                None => match txn.fetch(&id).await? {
                    Some(p) => {
                        events.insert(id.clone(), p.clone());
                        p
                    }
                    None => continue,
                },
            };
            for a in &pdu.auth_events {
                if chain.insert(a.clone()) {
                    stack.push(a.clone());
                }
            }
        }
        chains.push(chain);
    }
    let ruma_maps: Vec<ruma::state_res::StateMap<OwnedEventId>> = maps
        .iter()
        .map(|m| {
            m.iter()
                .map(|((t, k), id)| ((StateEventType::from(t.as_str()), k.clone()), id.clone()))
                .collect()
        })
        .collect();
    let resolved = ruma::state_res::resolve(
        &txn.rules.authorization,
        res_rules,
        ruma_maps.iter(),
        chains,
        |id| events.get(id).map(|p| &**p),
        |_| None,
    )
    .map_err(|e| MatrixError::unknown(format!("state resolution failed: {e}")))?;
    Ok(resolved
        .into_iter()
        .map(|((t, k), id)| ((t.to_string(), k), id))
        .collect())
}
