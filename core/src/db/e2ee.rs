//! End-to-end encryption records: device identity keys, one-time and fallback keys, the log of
//! device-list changes, and the per-device to-device inbox.
//!
//! Layout (every key built with [`super::key`]):
//! - `device_keys`: `user, device` → the device keys object exactly as uploaded (signatures cover
//!   every field, so it is never re-serialised through a typed struct).
//! - `one_time_keys`: `user, device, algorithm, upload seq (u64 BE), key name` →
//!   [`OneTimeKeyRecord`].
//!   The upload sequence makes a forward scan hand keys out in upload order.
//! - `fallback_keys`: `user, device, algorithm` → [`FallbackKeyRecord`] (one per algorithm).
//! - `key_changes`: `stream pos (u64 BE), user` → empty when every user sharing a room with
//!   `user` must hear of the change, or the one user id allowed to (a change only that user can
//!   see: their own user-signing key, their signatures of other users' master keys).
//! - `cross_signing`: `"key", user, usage` → the cross-signing key exactly as uploaded; and
//!   `"sig", target user, target kind, target id, signer, signer key id` → one signature (unpadded
//!   base64) uploaded through `/keys/signatures/upload`. Kept apart from the signed object so a
//!   device re-uploading its keys, or a key being replaced, cannot lose or resurrect them.
//! - `to_device`: `user, device, stream pos (u64 BE)` → [`ToDeviceRecord`]. Position 0 is never
//!   allocated to anything, so its slot holds the device's delivery mark (u64 BE): the newest
//!   position `/sync` has handed to the device.
//! - `to_device_txns`: `sender, sender device, txn id` → empty: transactions already applied.

use std::collections::BTreeMap;
use std::ops::Bound;

use ruma::encryption::{CrossSigningKey, DeviceKeys, KeyUsage, OneTimeKey};
use ruma::serde::Raw;
use ruma::{DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedOneTimeKeyId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{from_json, key, pos_bytes, pos_from, prefix, to_json};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Batch, Direction, KeyRange};

// ---------------------------------------------------------------------------------------------
// Device identity keys

pub async fn device_keys(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<Option<Raw<DeviceKeys>>> {
    hs.get_json("device_keys", &key(&[user.as_bytes(), device.as_bytes()]))
        .await
}

/// Every device of `user` that has uploaded identity keys.
pub async fn all_device_keys(
    hs: &Homeserver,
    user: &UserId,
) -> Result<Vec<(OwnedDeviceId, Raw<DeviceKeys>)>> {
    let rows = hs
        .scan_prefix("device_keys", &prefix(&[user.as_bytes()]))
        .await?;
    let user_prefix_len = prefix(&[user.as_bytes()]).len();
    rows.iter()
        .map(|(k, v)| {
            let device = k
                .get(user_prefix_len..)
                .ok_or_else(|| corrupt("device_keys key"))?;
            let device = std::str::from_utf8(device).map_err(|_| corrupt("device_keys key"))?;
            Ok((OwnedDeviceId::from(device), from_json(v)?))
        })
        .collect()
}

pub fn put_device_keys(
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
    keys: &Raw<DeviceKeys>,
) {
    batch.put(
        "device_keys",
        key(&[user.as_bytes(), device.as_bytes()]),
        keys.json().get().as_bytes().to_vec(),
    );
}

// ---------------------------------------------------------------------------------------------
// One-time keys

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OneTimeKeyRecord {
    pub id: OwnedOneTimeKeyId,
    pub key: Raw<OneTimeKey>,
}

/// A stored one-time key together with the storage key it lives under and its upload sequence.
#[derive(Debug, Clone)]
pub struct StoredOneTimeKey {
    pub storage_key: Vec<u8>,
    pub seq: u64,
    pub record: OneTimeKeyRecord,
}

fn otk_key(user: &UserId, device: &DeviceId, id: &OwnedOneTimeKeyId, seq: u64) -> Vec<u8> {
    let algorithm = id.algorithm();
    key(&[
        user.as_bytes(),
        device.as_bytes(),
        algorithm.as_str().as_bytes(),
        &pos_bytes(seq),
        id.key_name().as_str().as_bytes(),
    ])
}

/// Every unclaimed one-time key of the device, in storage order.
pub async fn one_time_keys(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<Vec<StoredOneTimeKey>> {
    let rows = hs
        .scan_prefix(
            "one_time_keys",
            &prefix(&[user.as_bytes(), device.as_bytes()]),
        )
        .await?;
    rows.into_iter()
        .map(|(k, v)| {
            let record: OneTimeKeyRecord = from_json(&v)?;
            let seq = seq_of_otk_key(&k, &record).ok_or_else(|| corrupt("one_time_keys key"))?;
            Ok(StoredOneTimeKey {
                storage_key: k,
                seq,
                record,
            })
        })
        .collect()
}

/// The upload sequence sits just before the key name, separated from it by one NUL.
fn seq_of_otk_key(storage_key: &[u8], record: &OneTimeKeyRecord) -> Option<u64> {
    let name_len = record.id.key_name().as_str().len();
    let end = storage_key.len().checked_sub(name_len + 1)?;
    pos_from(storage_key.get(..end)?)
}

pub fn put_one_time_key(
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
    seq: u64,
    record: &OneTimeKeyRecord,
) -> Result<()> {
    batch.put(
        "one_time_keys",
        otk_key(user, device, &record.id, seq),
        to_json(record)?,
    );
    Ok(())
}

/// The oldest unclaimed one-time key of `algorithm`, if any.
pub async fn oldest_one_time_key(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    algorithm: &OneTimeKeyAlgorithm,
) -> Result<Option<(Vec<u8>, OneTimeKeyRecord)>> {
    let p = prefix(&[
        user.as_bytes(),
        device.as_bytes(),
        algorithm.as_str().as_bytes(),
    ]);
    let rows = hs
        .store
        .scan("one_time_keys", KeyRange::prefix(&p), Direction::Forward, 1)
        .await?;
    match rows.into_iter().next() {
        Some((k, v)) => Ok(Some((k, from_json(&v)?))),
        None => Ok(None),
    }
}

/// Unclaimed one-time keys per algorithm.
pub async fn count_one_time_keys(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<BTreeMap<OneTimeKeyAlgorithm, u64>> {
    let mut counts = BTreeMap::new();
    for k in one_time_keys(hs, user, device).await? {
        *counts.entry(k.record.id.algorithm()).or_insert(0) += 1;
    }
    Ok(counts)
}

// ---------------------------------------------------------------------------------------------
// Fallback keys

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackKeyRecord {
    pub id: OwnedOneTimeKeyId,
    pub key: Raw<OneTimeKey>,
    /// Set once the key has been handed out by `/keys/claim`; cleared by a new upload.
    pub used: bool,
}

fn fallback_key(user: &UserId, device: &DeviceId, algorithm: &OneTimeKeyAlgorithm) -> Vec<u8> {
    key(&[
        user.as_bytes(),
        device.as_bytes(),
        algorithm.as_str().as_bytes(),
    ])
}

pub async fn fallback_key_for(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    algorithm: &OneTimeKeyAlgorithm,
) -> Result<Option<FallbackKeyRecord>> {
    hs.get_json("fallback_keys", &fallback_key(user, device, algorithm))
        .await
}

pub async fn fallback_keys(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<Vec<FallbackKeyRecord>> {
    hs.scan_prefix(
        "fallback_keys",
        &prefix(&[user.as_bytes(), device.as_bytes()]),
    )
    .await?
    .iter()
    .map(|(_, v)| from_json(v))
    .collect()
}

pub fn put_fallback_key(
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
    record: &FallbackKeyRecord,
) -> Result<()> {
    batch.put(
        "fallback_keys",
        fallback_key(user, device, &record.id.algorithm()),
        to_json(record)?,
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Device-list change log

/// Records that `user`'s device list changed at stream position `pos`, for everyone who shares a
/// room with them.
pub fn record_key_change(batch: &mut Batch, pos: u64, user: &UserId) {
    batch.put(
        "key_changes",
        key(&[&pos_bytes(pos), user.as_bytes()]),
        Vec::new(),
    );
}

/// Records a change of `user`'s keys at `pos` that only `audience` may hear of. Do not record a
/// public change of the same user at the same position: the later write wins.
pub fn record_private_key_change(batch: &mut Batch, pos: u64, user: &UserId, audience: &UserId) {
    batch.put(
        "key_changes",
        key(&[&pos_bytes(pos), user.as_bytes()]),
        audience.as_bytes().to_vec(),
    );
}

/// One entry of the device-list change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    pub user: OwnedUserId,
    /// `None`: everyone sharing a room with `user` hears of it; `Some(u)`: only `u` does.
    pub audience: Option<OwnedUserId>,
}

/// Changes at a position in `(after, upto]`, oldest first, each distinct change once.
pub async fn key_changes_between(hs: &Homeserver, after: u64, upto: u64) -> Result<Vec<KeyChange>> {
    if upto <= after || !hs.changes.tree_changed_since("key_changes", after) {
        return Ok(Vec::new());
    }
    let range = KeyRange::new(
        Bound::Included(pos_bytes(after.saturating_add(1)).to_vec()),
        Bound::Excluded(pos_bytes(upto.saturating_add(1)).to_vec()),
    );
    let rows = hs
        .store
        .scan("key_changes", range, Direction::Forward, usize::MAX)
        .await?;
    let mut changes = Vec::new();
    for (k, v) in rows {
        // Position (8 bytes), NUL, user id.
        let user = k.get(9..).ok_or_else(|| corrupt("key_changes key"))?;
        let user = parse_user(user).ok_or_else(|| corrupt("key_changes user"))?;
        let audience = if v.is_empty() {
            None
        } else {
            Some(parse_user(&v).ok_or_else(|| corrupt("key_changes audience"))?)
        };
        let change = KeyChange { user, audience };
        if !changes.contains(&change) {
            changes.push(change);
        }
    }
    Ok(changes)
}

fn parse_user(bytes: &[u8]) -> Option<OwnedUserId> {
    OwnedUserId::try_from(std::str::from_utf8(bytes).ok()?).ok()
}

// ---------------------------------------------------------------------------------------------
// Cross-signing keys and their signatures

const CS_TREE: &str = "cross_signing";

fn cross_signing_key_key(user: &UserId, usage: &KeyUsage) -> Vec<u8> {
    key(&[b"key", user.as_bytes(), usage.as_str().as_bytes()])
}

/// The user's cross-signing key for `usage`, exactly as uploaded.
pub async fn cross_signing_key(
    hs: &Homeserver,
    user: &UserId,
    usage: &KeyUsage,
) -> Result<Option<Raw<CrossSigningKey>>> {
    hs.get_json(CS_TREE, &cross_signing_key_key(user, usage))
        .await
}

pub fn put_cross_signing_key(
    batch: &mut Batch,
    user: &UserId,
    usage: &KeyUsage,
    raw: &Raw<CrossSigningKey>,
) {
    batch.put(
        CS_TREE,
        cross_signing_key_key(user, usage),
        raw.json().get().as_bytes().to_vec(),
    );
}

/// What a signature uploaded through `/keys/signatures/upload` signs.
#[derive(Debug, Clone, Copy)]
pub enum SignedKey<'a> {
    /// A device's identity keys.
    Device(&'a DeviceId),
    /// The master cross-signing key with this public key (unpadded base64).
    Master(&'a str),
}

impl SignedKey<'_> {
    fn parts(&self) -> (&'static [u8], &[u8]) {
        match self {
            Self::Device(d) => (b"device", d.as_bytes()),
            Self::Master(k) => (b"master", k.as_bytes()),
        }
    }
}

fn signatures_prefix(target_user: &UserId, target: SignedKey<'_>) -> Vec<u8> {
    let (kind, id) = target.parts();
    prefix(&[b"sig", target_user.as_bytes(), kind, id])
}

/// One stored signature: who signed, with which key, and the signature itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSignature {
    pub signer: OwnedUserId,
    pub key_id: String,
    pub signature: String,
}

pub fn put_signature(
    batch: &mut Batch,
    target_user: &UserId,
    target: SignedKey<'_>,
    sig: &StoredSignature,
) {
    let mut k = signatures_prefix(target_user, target);
    k.extend_from_slice(&key(&[sig.signer.as_bytes(), sig.key_id.as_bytes()]));
    batch.put(CS_TREE, k, sig.signature.as_bytes().to_vec());
}

/// Every signature uploaded for `target` of `target_user`.
pub async fn signatures_of(
    hs: &Homeserver,
    target_user: &UserId,
    target: SignedKey<'_>,
) -> Result<Vec<StoredSignature>> {
    let p = signatures_prefix(target_user, target);
    let rows = hs.scan_prefix(CS_TREE, &p).await?;
    rows.iter()
        .map(|(k, v)| {
            let rest = k.get(p.len()..).ok_or_else(|| corrupt("signature key"))?;
            // Neither user ids nor key ids contain NUL.
            let mut parts = rest.splitn(2, |b| *b == 0);
            let signer = parts
                .next()
                .and_then(parse_user)
                .ok_or_else(|| corrupt("signature signer"))?;
            let key_id = parts
                .next()
                .and_then(|b| std::str::from_utf8(b).ok())
                .ok_or_else(|| corrupt("signature key id"))?;
            let signature = std::str::from_utf8(v).map_err(|_| corrupt("signature value"))?;
            Ok(StoredSignature {
                signer,
                key_id: key_id.to_owned(),
                signature: signature.to_owned(),
            })
        })
        .collect()
}

/// Drops every uploaded signature of `target`: the key they signed is gone or was replaced.
pub async fn delete_signatures_of(
    hs: &Homeserver,
    batch: &mut Batch,
    target_user: &UserId,
    target: SignedKey<'_>,
) -> Result<()> {
    for (k, _) in hs
        .scan_prefix(CS_TREE, &signatures_prefix(target_user, target))
        .await?
    {
        batch.delete(CS_TREE, k);
    }
    Ok(())
}

/// Removes the user's cross-signing keys and every signature uploaded of their keys (for account
/// deactivation). Returns whether they had any keys: if so, that is a device-list change the
/// caller records at a stream position.
pub async fn delete_cross_signing(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
) -> Result<bool> {
    let keys = hs
        .scan_prefix(CS_TREE, &prefix(&[b"key", user.as_bytes()]))
        .await?;
    let had_keys = !keys.is_empty();
    let sigs = hs
        .scan_prefix(CS_TREE, &prefix(&[b"sig", user.as_bytes()]))
        .await?;
    for (k, _) in keys.into_iter().chain(sigs) {
        batch.delete(CS_TREE, k);
    }
    Ok(had_keys)
}

// ---------------------------------------------------------------------------------------------
// To-device inbox

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToDeviceRecord {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub content: Box<serde_json::value::RawValue>,
}

pub fn put_to_device(
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
    pos: u64,
    record: &ToDeviceRecord,
) -> Result<()> {
    batch.put(
        "to_device",
        key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(pos)]),
        to_json(record)?,
    );
    Ok(())
}

fn inbox_range(user: &UserId, device: &DeviceId, after: u64, upto: u64) -> KeyRange {
    KeyRange::new(
        Bound::Included(key(&[
            user.as_bytes(),
            device.as_bytes(),
            &pos_bytes(after.saturating_add(1)),
        ])),
        Bound::Excluded(key(&[
            user.as_bytes(),
            device.as_bytes(),
            &pos_bytes(upto.saturating_add(1)),
        ])),
    )
}

/// Up to `limit` messages for the device with positions in `(after, upto]`, oldest first.
pub async fn to_device_between(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, ToDeviceRecord)>> {
    if upto <= after
        || !hs
            .changes
            .part_changed_since("to_device", user.as_bytes(), after)
    {
        return Ok(Vec::new());
    }
    let rows = hs
        .store
        .scan(
            "to_device",
            inbox_range(user, device, after, upto),
            Direction::Forward,
            limit,
        )
        .await?;
    rows.iter()
        .map(|(k, v)| {
            Ok((
                pos_from(k).ok_or_else(|| corrupt("to_device key"))?,
                from_json(v)?,
            ))
        })
        .collect()
}

/// Whether the device has no to-device messages waiting at all.
pub async fn inbox_is_empty(hs: &Homeserver, user: &UserId, device: &DeviceId) -> Result<bool> {
    Ok(hs
        .store
        .scan(
            "to_device",
            inbox_range(user, device, 0, u64::MAX - 1),
            Direction::Forward,
            1,
        )
        .await?
        .is_empty())
}

/// Deletes the device's messages with positions up to and including `upto`.
pub async fn delete_to_device_upto(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
    upto: u64,
) -> Result<()> {
    let rows = hs
        .store
        .scan(
            "to_device",
            inbox_range(user, device, 0, upto),
            Direction::Forward,
            usize::MAX,
        )
        .await?;
    for (k, _) in rows {
        batch.delete("to_device", k);
    }
    Ok(())
}

fn txn_key(sender: &UserId, device: &DeviceId, txn_id: &str) -> Vec<u8> {
    key(&[sender.as_bytes(), device.as_bytes(), txn_id.as_bytes()])
}

pub async fn to_device_txn_seen(
    hs: &Homeserver,
    sender: &UserId,
    device: &DeviceId,
    txn_id: &str,
) -> Result<bool> {
    Ok(hs
        .store
        .get("to_device_txns", &txn_key(sender, device, txn_id))
        .await?
        .is_some())
}

pub fn put_to_device_txn(batch: &mut Batch, sender: &UserId, device: &DeviceId, txn_id: &str) {
    batch.put(
        "to_device_txns",
        txn_key(sender, device, txn_id),
        Vec::new(),
    );
}

// ---------------------------------------------------------------------------------------------
// Device removal

/// Deletes every E2EE record of the device: identity keys, one-time and fallback keys, its
/// to-device inbox, the transaction ids it used and the cross-signing signatures of it. Returns
/// whether it had identity keys.
pub async fn delete_device(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
) -> Result<bool> {
    let had_keys = device_keys(hs, user, device).await?.is_some();
    batch.delete("device_keys", key(&[user.as_bytes(), device.as_bytes()]));
    delete_signatures_of(hs, batch, user, SignedKey::Device(device)).await?;
    let device_prefix = prefix(&[user.as_bytes(), device.as_bytes()]);
    for tree in [
        "one_time_keys",
        "fallback_keys",
        "to_device",
        "to_device_txns",
    ] {
        for (k, _) in hs.scan_prefix(tree, &device_prefix).await? {
            batch.delete(tree, k);
        }
    }
    Ok(had_keys)
}

fn corrupt(what: &str) -> MatrixError {
    MatrixError::unknown(format!("corrupt record: {what}"))
}
