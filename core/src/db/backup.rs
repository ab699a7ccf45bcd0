//! Server-side key backup records (spec: "Server-side key backups").
//!
//! Layout of the `key_backup` tree (every key built with [`super::key`]):
//! - `"version", user, version (u64 BE)` → [`VersionRecord`]. A deleted version keeps its record
//!   (marked deleted, its keys gone), so its number is never handed out again and deleting it a
//!   second time still succeeds, as the spec asks.
//! - `"session", user, version (u64 BE), room, session id` → the session's key data exactly as
//!   uploaded. Room ids cannot contain NUL, so whatever follows the room is the session id.
//!
//! Versions are numbered from 1 per user; clients treat them as opaque strings.

use ruma::api::client::backup::KeyBackupData;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{from_json, key, pos_bytes, prefix, to_json};
use crate::Homeserver;
use crate::error::{MatrixError, Result};
use crate::storage::{Batch, Direction, KeyRange};

const TREE: &str = "key_backup";

/// One backup version of one user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    pub algorithm: String,
    /// Algorithm-dependent; stored as sent, since clients sign it.
    pub auth_data: Box<RawValue>,
    /// Bumped on every change of the stored keys; served as the opaque `etag`.
    pub etag: u64,
    /// How many session keys the version holds.
    pub count: u64,
    pub deleted: bool,
}

fn version_prefix(user: &UserId) -> Vec<u8> {
    prefix(&[b"version", user.as_bytes()])
}

fn version_key(user: &UserId, version: u64) -> Vec<u8> {
    key(&[b"version", user.as_bytes(), &pos_bytes(version)])
}

/// Every version record of the user, newest first, deleted ones included.
async fn versions(hs: &Homeserver, user: &UserId) -> Result<Vec<(u64, VersionRecord)>> {
    let p = version_prefix(user);
    let rows = hs
        .store
        .scan(TREE, KeyRange::prefix(&p), Direction::Backward, usize::MAX)
        .await?;
    rows.iter()
        .map(|(k, v)| {
            let n = k
                .get(p.len()..)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("version key"))?;
            Ok((n, from_json(v)?))
        })
        .collect()
}

/// The newest version that was not deleted: the one keys are written to.
pub async fn current_version(
    hs: &Homeserver,
    user: &UserId,
) -> Result<Option<(u64, VersionRecord)>> {
    Ok(versions(hs, user)
        .await?
        .into_iter()
        .find(|(_, r)| !r.deleted))
}

/// The number the next version gets: one past every version ever created, deleted ones too.
pub async fn next_version(hs: &Homeserver, user: &UserId) -> Result<u64> {
    Ok(versions(hs, user)
        .await?
        .first()
        .map_or(1, |(n, _)| n.saturating_add(1)))
}

/// A version record, deleted or not.
pub async fn get_version(
    hs: &Homeserver,
    user: &UserId,
    version: u64,
) -> Result<Option<VersionRecord>> {
    hs.get_json(TREE, &version_key(user, version)).await
}

pub fn put_version(
    batch: &mut Batch,
    user: &UserId,
    version: u64,
    record: &VersionRecord,
) -> Result<()> {
    batch.put(TREE, version_key(user, version), to_json(record)?);
    Ok(())
}

fn sessions_prefix(user: &UserId, version: u64, room: Option<&RoomId>) -> Vec<u8> {
    match room {
        Some(room) => prefix(&[
            b"session",
            user.as_bytes(),
            &pos_bytes(version),
            room.as_bytes(),
        ]),
        None => prefix(&[b"session", user.as_bytes(), &pos_bytes(version)]),
    }
}

fn session_key(user: &UserId, version: u64, room: &RoomId, session: &str) -> Vec<u8> {
    let mut k = sessions_prefix(user, version, Some(room));
    k.extend_from_slice(session.as_bytes());
    k
}

pub async fn get_session(
    hs: &Homeserver,
    user: &UserId,
    version: u64,
    room: &RoomId,
    session: &str,
) -> Result<Option<Raw<KeyBackupData>>> {
    hs.get_json(TREE, &session_key(user, version, room, session))
        .await
}

pub fn put_session(
    batch: &mut Batch,
    user: &UserId,
    version: u64,
    room: &RoomId,
    session: &str,
    data: &Raw<KeyBackupData>,
) {
    batch.put(
        TREE,
        session_key(user, version, room, session),
        data.json().get().as_bytes().to_vec(),
    );
}

pub fn delete_session(
    batch: &mut Batch,
    user: &UserId,
    version: u64,
    room: &RoomId,
    session: &str,
) {
    batch.delete(TREE, session_key(user, version, room, session));
}

/// One stored session key with where it lives.
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub storage_key: Vec<u8>,
    pub room: OwnedRoomId,
    pub session: String,
    pub data: Raw<KeyBackupData>,
}

/// The session keys of a version, of one room or of all rooms, in room then session order.
pub async fn sessions(
    hs: &Homeserver,
    user: &UserId,
    version: u64,
    room: Option<&RoomId>,
) -> Result<Vec<StoredSession>> {
    let version_prefix = sessions_prefix(user, version, None);
    let rows = hs
        .scan_prefix(TREE, &sessions_prefix(user, version, room))
        .await?;
    rows.into_iter()
        .map(|(k, v)| {
            let rest = k
                .get(version_prefix.len()..)
                .ok_or_else(|| corrupt("session key"))?;
            let split = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or_else(|| corrupt("session key"))?;
            let room = std::str::from_utf8(rest.get(..split).unwrap_or_default())
                .ok()
                .and_then(|r| OwnedRoomId::try_from(r).ok())
                .ok_or_else(|| corrupt("session room"))?;
            let session = std::str::from_utf8(rest.get(split + 1..).unwrap_or_default())
                .map_err(|_| corrupt("session id"))?
                .to_owned();
            Ok(StoredSession {
                storage_key: k,
                room,
                session,
                data: from_json(&v)?,
            })
        })
        .collect()
}

/// Removes every backup of the user, versions and keys (for account deactivation). The records go
/// entirely: the account can never log in again to reuse a version number.
pub async fn delete_all_backups(hs: &Homeserver, batch: &mut Batch, user: &UserId) -> Result<()> {
    for part in [b"version".as_slice(), b"session".as_slice()] {
        for (k, _) in hs
            .scan_prefix(TREE, &prefix(&[part, user.as_bytes()]))
            .await?
        {
            batch.delete(TREE, k);
        }
    }
    Ok(())
}

fn corrupt(what: &str) -> MatrixError {
    MatrixError::unknown(format!("corrupt key backup record: {what}"))
}
