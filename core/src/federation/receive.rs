//! `PUT /send/{txnId}`: PDUs and EDUs from another server.
//!
//! Each PDU goes through `room::ingest`: one bad PDU fails only itself (consecutive PDUs of a
//! room share one write, see [`receive_pdus`]). When its
//! predecessors are unknown, the gap is filled before the write lock is taken: first with
//! `get_missing_events` (bounded), then, for what is still missing, with the state at the
//! missing event (`/state`), whose events are kept as outliers. Auth events come from
//! `/event_auth`. Transaction ids are remembered per origin, so a retried transaction is
//! answered from the record instead of being applied twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use ruma::api::federation::authorization::get_event_authorization;
use ruma::api::federation::event::{get_missing_events, get_room_state};
use ruma::api::federation::transactions::send_transaction_message;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt};
use serde_json::Value;

use super::client;
use crate::db::rooms::{self, Pdu};
use crate::db::state_groups;
use crate::db::{key, to_json};
use crate::error::{MatrixError, Result};
use crate::room::ingest::{self, AcceptError, Accepted, Refusal};
use crate::room::txn::{RoomTxn, supported_version};
use crate::router::Router;
use crate::storage::Batch;
use crate::write::Issued;
use crate::{Ctx, Homeserver, route};

/// How many PDUs one gap may pull in through `get_missing_events`, all rounds together.
pub const MAX_GAP_EVENTS: usize = 50;

/// Rounds of fetching before a PDU whose past cannot be found is refused.
const MAX_ROUNDS: usize = 4;

pub fn routes(r: &mut Router) {
    route!(r, send_transaction_message::v1::Request, send);
}

async fn send(
    hs: &Homeserver,
    ctx: Ctx,
    req: send_transaction_message::v1::Request,
) -> Result<send_transaction_message::v1::Response> {
    let origin = ctx.origin()?.to_owned();
    if req.origin != origin {
        return Err(MatrixError::forbidden(
            "the transaction's origin is not the signing server",
        ));
    }
    if req.pdus.len() > super::outbox::MAX_PDUS || req.edus.len() > super::outbox::MAX_EDUS {
        return Err(MatrixError::bad_json(format!(
            "a transaction carries at most {} PDUs and {} EDUs",
            super::outbox::MAX_PDUS,
            super::outbox::MAX_EDUS
        )));
    }
    let txn_key = key(&[origin.as_bytes(), req.transaction_id.as_bytes()]);
    // In an ordered channel the check waits for the turn: a read now would wait for the write
    // of the transaction ahead (IndexedDB orders them), and the signature checks below are
    // what should run meanwhile.
    if ctx.arrival.is_none()
        && let Some(answer) = answered_before(hs, &txn_key).await?
    {
        return Ok(answer);
    }
    let values: Vec<Value> = req
        .pdus
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.get()).ok())
        .collect();
    let checked = verify_pdus(hs, &values).await;
    if let Some(arrival) = ctx.arrival {
        // Read now what the turn will look up: once the transaction ahead has issued its
        // write, a read would wait for that write to be committed.
        let (events, answer) = futures::future::join(
            prefetch(hs, &checked),
            hs.store.get("inbound_txns", &txn_key),
        )
        .await;
        events?;
        answer?;
        hs.federation.arrivals.turn(arrival, &origin).await?;
        // Applied already (a retry), perhaps while this one was in flight.
        if let Some(answer) = answered_before(hs, &txn_key).await? {
            return Ok(answer);
        }
    } else {
        prefetch(hs, &checked).await?;
    }
    // Without EDUs the record can go with the last PDUs' write: there is nothing left that a
    // retry answered from the record would skip.
    let record_with_pdus = req.edus.is_empty().then_some(txn_key.as_slice());
    let Applied {
        outcomes,
        recorded,
        in_flight,
    } = apply_pdus(hs, &origin, &values, checked, record_with_pdus).await?;
    for outcome in &outcomes {
        match outcome {
            Ok(_) => {}
            Err((Some(id), why)) => {
                tracing::info!(%origin, event_id = %id, error = %why, "refused a PDU");
            }
            Err((None, why)) => {
                tracing::info!(%origin, error = %why, "refused a PDU without an id");
            }
        }
    }
    let results = record_of(&outcomes);
    for edu in &req.edus {
        if let Ok(v) = serde_json::from_str::<Value>(edu.json().get())
            && let Err(e) = super::edus::receive(hs, &origin, &v).await
        {
            tracing::info!(%origin, error = %e, "refused an EDU");
        }
    }
    let recording = async {
        if !recorded {
            let mut batch = Batch::new();
            batch.put("inbound_txns", txn_key, to_json(&results)?);
            let _lock = hs.write_lock().await;
            hs.commit(batch).await?;
        }
        Ok::<_, MatrixError>(())
    }
    .await;
    // Everything this transaction writes is issued: the next one may take its turn while the
    // last write is committed. Only its answer waits for that, and it is waited for even when
    // recording failed, so that its events become visible (or its failure known) at once.
    if let Some(arrival) = ctx.arrival {
        hs.federation.arrivals.pass(arrival);
    }
    if let Some(write) = in_flight {
        write.durable().await?;
    }
    recording?;
    Ok(send_transaction_message::v1::Response::new(
        results
            .into_iter()
            .map(|(k, v)| (k, v.map_or(Ok(()), Err)))
            .collect(),
    ))
}

/// The answer recorded for a transaction this server has already applied.
async fn answered_before(
    hs: &Homeserver,
    txn_key: &[u8],
) -> Result<Option<send_transaction_message::v1::Response>> {
    let Some(done) = hs.store.get("inbound_txns", txn_key).await? else {
        return Ok(None);
    };
    let pdus: BTreeMap<OwnedEventId, Option<String>> = crate::db::from_json(&done)?;
    Ok(Some(send_transaction_message::v1::Response::new(
        pdus.into_iter()
            .map(|(k, v)| (k, v.map_or(Ok(()), Err)))
            .collect(),
    )))
}

/// The room and rules of a PDU, for a room this server is in.
pub async fn room_of(
    hs: &Homeserver,
    value: &Value,
) -> std::result::Result<(OwnedRoomId, RoomVersionRules), String> {
    let room = value
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
        .ok_or_else(|| "no valid room_id".to_owned())?;
    // The cached room state, not the stored record: every PDU of a transaction asks, and
    // decoding the record each time cost more than the lookups it answers.
    let state = rooms::room_state(hs, &room)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("this server is not in {room}"))?;
    let version = &state.record.version;
    let rules = supported_version(version)
        .ok_or_else(|| format!("room version {version} is not supported"))?;
    Ok((room, rules))
}

pub type Received = std::result::Result<(OwnedEventId, Accepted), (Option<OwnedEventId>, String)>;

/// The PDUs of one transaction, in order. Consecutive PDUs of one room whose past is known
/// are accepted in one room transaction, so a backlog costs one storage write per run rather
/// than one per event (an IndexedDB commit costs far more than the puts in it). A PDU whose
/// past is missing ends its run: the run so far is written, then it takes the one-PDU path
/// that fills the gap, and the next run starts after it.
///
/// With `record` (an `inbound_txns` key), the transaction's results are written there in the
/// same write as the last run when that run ends the transaction; the `bool` says whether
/// they were.
pub async fn receive_pdus(
    hs: &Homeserver,
    origin: &ServerName,
    values: &[Value],
    record: Option<&[u8]>,
) -> Result<(Vec<Received>, bool)> {
    let checked = verify_pdus(hs, values).await;
    prefetch(hs, &checked).await?;
    let applied = apply_pdus(hs, origin, values, checked, record).await?;
    if let Some(write) = applied.in_flight {
        write.durable().await?;
    }
    Ok((applied.outcomes, applied.recorded))
}

/// What [`apply_pdus`] did.
pub struct Applied {
    pub outcomes: Vec<Received>,
    /// Whether the outcomes were recorded (under the `record` key) with the last write.
    pub recorded: bool,
    /// The last write, issued and visible to every later reader and writer but perhaps not
    /// durable yet: nothing may be acknowledged before [`Issued::durable`] says it is.
    pub in_flight: Option<Issued>,
}

/// A PDU whose signatures and hashes were checked, with its room; or what it is answered.
pub type Checked = std::result::Result<(OwnedRoomId, Pdu), Received>;

/// Signatures and hashes, outside the write lock (a key may have to be fetched), and before a
/// transaction's turn to write (see [`super::arrival`]).
pub async fn verify_pdus(hs: &Homeserver, values: &[Value]) -> Vec<Checked> {
    let mut checked: Vec<Checked> = Vec::with_capacity(values.len());
    for value in values {
        checked.push(match room_of(hs, value).await {
            Err(e) => Err(Err((None, e))),
            Ok((room, rules)) => match ingest::verify(hs, &rules, &room, value).await {
                Ok(pdu) => Ok((room, pdu)),
                Err(e) => Err(Err((ingest::event_id_of(value, &rules), e.to_string()))),
            },
        });
    }
    checked
}

/// Most of a transaction's events are new to this server, and each is looked up before it is
/// accepted: one read for them all, where a browser would pay a read transaction for each
/// (its storage remembers the answers).
pub async fn prefetch(hs: &Homeserver, checked: &[Checked]) -> Result<()> {
    let ids: Vec<Vec<u8>> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .map(|(_, pdu)| pdu.event_id.as_bytes().to_vec())
        .collect();
    hs.store.get_many("events", &ids).await?;
    Ok(())
}

/// [`receive_pdus`] after [`verify_pdus`] and [`prefetch`]: `checked` holds one entry per
/// value.
pub async fn apply_pdus(
    hs: &Homeserver,
    origin: &ServerName,
    values: &[Value],
    checked: Vec<Checked>,
    record: Option<&[u8]>,
) -> Result<Applied> {
    let mut out: Vec<Received> = Vec::with_capacity(values.len());
    let mut recorded = false;
    let mut in_flight = None;
    let mut i = 0;
    while i < checked.len() {
        let room = match &checked[i] {
            Err(r) => {
                out.push(r.clone());
                i += 1;
                continue;
            }
            Ok((room, _)) => room.clone(),
        };
        let mut gap = None;
        {
            let lock = hs.write_lock().await;
            let mut txn = RoomTxn::open(hs, &room).await?;
            let mut run = Vec::new();
            while let Some(Ok((r, pdu))) = checked.get(i) {
                if *r != room {
                    break;
                }
                match ingest::accept(&mut txn, pdu.clone()).await {
                    Ok(a) => run.push(Ok((pdu.event_id.clone(), a))),
                    Err(AcceptError::Refused(Refusal::Missing(_))) => {
                        gap = Some(i);
                        i += 1;
                        break;
                    }
                    // Nothing of the run is written: the whole transaction fails and is
                    // retried by its sender.
                    Err(AcceptError::Server(e)) => return Err(e),
                    Err(e) => run.push(Err((Some(pdu.event_id.clone()), e.to_string()))),
                }
                i += 1;
            }
            out.extend(run);
            recorded = false;
            if let Some(k) = record
                && gap.is_none()
                && i == checked.len()
            {
                txn.batch
                    .put("inbound_txns", k.to_vec(), to_json(&record_of(&out))?);
                recorded = true;
            }
            if gap.is_none() && i == checked.len() {
                // The last write: the next transaction may be prepared while this one is
                // committed.
                in_flight = txn.issue().await?.1;
                drop(lock);
            } else {
                txn.commit().await?;
            }
        }
        if let Some(at) = gap {
            out.push(receive_pdu(hs, origin, &values[at]).await);
        }
    }
    Ok(Applied {
        outcomes: out,
        recorded,
        in_flight,
    })
}

/// What `/send` answers (and remembers) for these outcomes: each PDU's id, with its error.
fn record_of(outcomes: &[Received]) -> BTreeMap<OwnedEventId, Option<String>> {
    outcomes
        .iter()
        .filter_map(|o| match o {
            Ok((id, _)) => Some((id.clone(), None)),
            Err((Some(id), why)) => Some((id.clone(), Some(why.clone()))),
            Err((None, _)) => None,
        })
        .collect()
}

/// One PDU from `origin`, with its gap filled from `origin` if needed.
pub async fn receive_pdu(hs: &Homeserver, origin: &ServerName, value: &Value) -> Received {
    let mut budget = MAX_GAP_EVENTS;
    receive_with_budget(hs, origin, value, &mut budget).await
}

fn receive_with_budget<'a>(
    hs: &'a Homeserver,
    origin: &'a ServerName,
    value: &'a Value,
    budget: &'a mut usize,
) -> Pin<Box<dyn Future<Output = Received> + 'a>> {
    Box::pin(async move {
        let (room, rules) = room_of(hs, value).await.map_err(|e| (None, e))?;
        // A PDU that fails its checks is still answered by id when one can be computed.
        let pdu = ingest::verify(hs, &rules, &room, value)
            .await
            .map_err(|e| (ingest::event_id_of(value, &rules), e.to_string()))?;
        let id = pdu.event_id.clone();
        let fail = |e: String| (Some(id.clone()), e);
        for round in 0..MAX_ROUNDS {
            let outcome = {
                let _lock = hs.write_lock().await;
                let mut txn = RoomTxn::open(hs, &room)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                match ingest::accept(&mut txn, pdu.clone()).await {
                    Ok(a) => {
                        txn.commit().await.map_err(|e| fail(e.to_string()))?;
                        Ok(a)
                    }
                    Err(e) => Err(e),
                }
            };
            match outcome {
                Ok(a) => return Ok((id, a)),
                Err(AcceptError::Refused(Refusal::Missing(missing))) if round + 1 < MAX_ROUNDS => {
                    fill_gap(hs, origin, &room, &rules, &pdu, &missing, budget)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        }
        Err(fail("its past could not be fetched".into()))
    })
}

/// Fetches what `pdu` refers to and this server lacks.
async fn fill_gap(
    hs: &Homeserver,
    origin: &ServerName,
    room: &RoomId,
    rules: &RoomVersionRules,
    pdu: &Pdu,
    missing: &[OwnedEventId],
    budget: &mut usize,
) -> Result<()> {
    let missing_auth = missing.iter().any(|m| pdu.auth_events.contains(m));
    if missing_auth {
        let req = get_event_authorization::v1::Request::new(room.to_owned(), pdu.event_id.clone());
        if let Ok(resp) = client::send(hs, origin, req).await {
            let mut events = Vec::new();
            for raw in resp.auth_chain {
                if let Ok(v) = serde_json::from_str::<Value>(raw.get())
                    && let Ok(p) = ingest::verify(hs, rules, room, &v).await
                {
                    events.push(p);
                }
            }
            store_outliers(hs, room, events, None).await?;
        }
    }
    let missing_prevs: Vec<&OwnedEventId> = missing
        .iter()
        .filter(|m| pdu.prev_events.contains(m))
        .collect();
    if missing_prevs.is_empty() {
        return Ok(());
    }
    // First the events between what we have and this one, oldest first.
    if *budget > 0 {
        let record = rooms::room_record(hs, room).await?;
        let earliest = record.map(|r| r.extremities).unwrap_or_default();
        let mut req = get_missing_events::v1::Request::new(
            room.to_owned(),
            earliest,
            vec![pdu.event_id.clone()],
        );
        req.limit = UInt::new_saturating((*budget).min(20) as u64);
        if let Ok(resp) = client::send(hs, origin, req).await {
            let mut values: Vec<Value> = resp
                .events
                .iter()
                .filter_map(|r| serde_json::from_str(r.get()).ok())
                .collect();
            values.sort_by_key(|v| v.get("depth").and_then(Value::as_u64).unwrap_or(0));
            for v in values.iter().take(*budget) {
                *budget = budget.saturating_sub(1);
                if let Err((_, e)) = receive_with_budget(hs, origin, v, budget).await {
                    tracing::debug!(error = %e, "a missing event was refused");
                }
            }
        }
    }
    // What is still missing: take the state at it from the origin and keep it as an outlier
    // with that state, so the graph can go on from there.
    for prev in missing_prevs {
        if rooms::get_pdu(hs, prev.as_str())
            .await?
            .is_some_and(|p| !p.meta.outlier || p.meta.state_after.is_some())
        {
            continue;
        }
        let event = client::send(
            hs,
            origin,
            ruma::api::federation::event::get_event::v1::Request::new(prev.clone()),
        )
        .await
        .map_err(|e| e.to_client_error())?;
        let Ok(value) = serde_json::from_str::<Value>(event.pdu.get()) else {
            continue;
        };
        let Ok(prev_pdu) = ingest::verify(hs, rules, room, &value).await else {
            continue;
        };
        let state = client::send(
            hs,
            origin,
            get_room_state::v1::Request::new(prev.clone(), room.to_owned()),
        )
        .await
        .map_err(|e| e.to_client_error())?;
        let mut events = Vec::new();
        for raw in state.auth_chain.iter().chain(state.pdus.iter()) {
            if let Ok(v) = serde_json::from_str::<Value>(raw.get())
                && let Ok(p) = ingest::verify(hs, rules, room, &v).await
            {
                events.push(p);
            }
        }
        let state_ids: Vec<OwnedEventId> = state
            .pdus
            .iter()
            .filter_map(|r| serde_json::from_str::<Value>(r.get()).ok())
            .filter_map(|v| ingest::event_id_of(&v, rules))
            .collect();
        store_outliers(hs, room, events, Some((prev_pdu, state_ids))).await?;
    }
    Ok(())
}

/// Keeps `events` as outliers; `with_state` is an event whose state before it is the given
/// ids, stored with its state so that later events can build on it.
pub async fn store_outliers(
    hs: &Homeserver,
    room: &RoomId,
    events: Vec<Pdu>,
    with_state: Option<(Pdu, Vec<OwnedEventId>)>,
) -> Result<()> {
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::open(hs, room).await?;
    let stored = ingest::store_outliers(&mut txn, events).await?;
    if let Some((mut pdu, ids)) = with_state {
        let mut before = state_groups::StateMap::new();
        for id in ids {
            let found = match stored.iter().find(|p| p.event_id == id) {
                Some(p) => Some(p.clone()),
                None => txn.fetch(&id).await?,
            };
            if let Some(p) = found
                && let Some(sk) = &p.state_key
            {
                before.insert((p.event_type.clone(), sk.clone()), p.event_id.clone());
            }
        }
        let hs = txn.hs();
        let before_group =
            state_groups::store(hs, &mut txn.batch, &mut txn.groups, None, before.clone()).await?;
        pdu.meta.state_before = Some(before_group);
        pdu.meta.state_after = Some(before_group);
        if let Some(sk) = &pdu.state_key {
            before.insert((pdu.event_type.clone(), sk.clone()), pdu.event_id.clone());
            let after = state_groups::store(
                hs,
                &mut txn.batch,
                &mut txn.groups,
                Some(before_group),
                before,
            )
            .await?;
            pdu.meta.state_after = Some(after);
        }
        pdu.meta.outlier = true;
        txn.add_outlier(pdu)?;
    }
    txn.commit().await?;
    Ok(())
}
