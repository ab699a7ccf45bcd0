//! Server-side key backups (spec: "Server-side key backups"): backup versions
//! (`/room_keys/version[/{version}]`) and the session keys stored in them
//! (`/room_keys/keys[/{roomId}[/{sessionId}]]`).
//!
//! The server never sees a key: `session_data` and `auth_data` are opaque to it. What it enforces
//! is the bookkeeping: only the current version (the newest one not deleted) takes new keys; a
//! stored key is replaced only by a better one, in the spec's order (verified beats unverified,
//! then the lower `first_message_index`, then the lower `forwarded_count`; a tie keeps the stored
//! key); `count` and `etag` follow every change. Any algorithm name is accepted, since clients try
//! out algorithms of their own; for the spec's `m.megolm_backup.v1.curve25519-aes-sha2`,
//! `auth_data` must carry the `public_key` the spec requires.

use std::collections::BTreeMap;

use ruma::api::client::backup::{
    BackupAlgorithm, KeyBackupData, RoomKeyBackup, add_backup_keys, add_backup_keys_for_room,
    add_backup_keys_for_session, create_backup_version, delete_backup_keys,
    delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
    get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
    get_latest_backup_info, update_backup_version,
};
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId, UInt, UserId};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::db::backup::{self, VersionRecord};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

/// The one backup algorithm the spec defines.
const MEGOLM_BACKUP_V1: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

pub fn routes(r: &mut Router) {
    route!(r, create_backup_version::v3::Request, create_version);
    route!(r, get_latest_backup_info::v3::Request, get_latest_version);
    route!(r, get_backup_info::v3::Request, get_version);
    route!(r, update_backup_version::v3::Request, update_version);
    route!(r, delete_backup_version::v3::Request, delete_version);
    route!(r, add_backup_keys::v3::Request, put_keys);
    route!(r, add_backup_keys_for_room::v3::Request, put_room_keys);
    route!(r, add_backup_keys_for_session::v3::Request, put_session_key);
    route!(r, get_backup_keys::v3::Request, get_keys);
    route!(r, get_backup_keys_for_room::v3::Request, get_room_keys);
    route!(r, get_backup_keys_for_session::v3::Request, get_session_key);
    route!(r, delete_backup_keys::v3::Request, delete_keys);
    route!(
        r,
        delete_backup_keys_for_room::v3::Request,
        delete_room_keys
    );
    route!(
        r,
        delete_backup_keys_for_session::v3::Request,
        delete_session_key
    );
}

// ---------------------------------------------------------------------------------------------
// Versions

/// The body of `POST /room_keys/version` and `PUT /room_keys/version/{version}`.
struct VersionBody {
    algorithm: String,
    auth_data: Box<RawValue>,
    /// Only in `PUT`, where it must repeat the path's version.
    version: Option<String>,
}

fn parse_version_body(raw: &Raw<BackupAlgorithm>) -> Result<VersionBody> {
    #[derive(Deserialize)]
    struct Body {
        algorithm: Option<Value>,
        auth_data: Option<Box<RawValue>>,
        version: Option<Value>,
    }
    let body: Body = serde_json::from_str(raw.json().get())
        .map_err(|e| MatrixError::bad_json(format!("the body must be a JSON object: {e}")))?;
    let algorithm = match body.algorithm {
        None => return Err(MatrixError::missing_param("algorithm is required")),
        Some(Value::String(a)) if !a.is_empty() => a,
        Some(_) => {
            return Err(MatrixError::bad_json(
                "algorithm must be a non-empty string",
            ));
        }
    };
    let auth_data = body
        .auth_data
        .ok_or_else(|| MatrixError::missing_param("auth_data is required"))?;
    let fields: serde_json::Map<String, Value> = serde_json::from_str(auth_data.get())
        .map_err(|_| MatrixError::bad_json("auth_data must be a JSON object"))?;
    if algorithm == MEGOLM_BACKUP_V1 && !fields.get("public_key").is_some_and(Value::is_string) {
        return Err(MatrixError::bad_json(format!(
            "auth_data of {MEGOLM_BACKUP_V1} needs public_key, a string"
        )));
    }
    let version = match body.version {
        None => None,
        Some(Value::String(v)) => Some(v),
        Some(_) => return Err(MatrixError::bad_json("version must be a string")),
    };
    Ok(VersionBody {
        algorithm,
        auth_data,
        version,
    })
}

/// Version strings are the decimal numbers this server hands out; anything else names no
/// version.
fn parse_version(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|n| n.to_string() == s)
}

fn unknown_version() -> MatrixError {
    MatrixError::not_found("Unknown backup version")
}

/// The version the request names, if it exists and was not deleted: readable, and deletable.
async fn existing_version(
    hs: &Homeserver,
    user: &UserId,
    version: &str,
) -> Result<(u64, VersionRecord)> {
    let n = parse_version(version).ok_or_else(unknown_version)?;
    match backup::get_version(hs, user, n).await? {
        Some(rec) if !rec.deleted => Ok((n, rec)),
        _ => Err(unknown_version()),
    }
}

/// The version the request names, which must be the current one: only it takes new keys.
async fn writable_version(
    hs: &Homeserver,
    user: &UserId,
    version: &str,
) -> Result<(u64, VersionRecord)> {
    let (current, rec) = backup::current_version(hs, user)
        .await?
        .ok_or_else(unknown_version)?;
    if parse_version(version) != Some(current) {
        return Err(MatrixError::wrong_room_keys_version(format!(
            "backup version {version} is not the current one, {current}"
        ))
        .with("current_version", json!(current.to_string())));
    }
    Ok((current, rec))
}

fn algorithm_json(rec: &VersionRecord) -> Result<Raw<BackupAlgorithm>> {
    let v = json!({ "algorithm": rec.algorithm, "auth_data": rec.auth_data });
    Ok(Raw::from_json(serde_json::value::to_raw_value(&v)?))
}

async fn create_version(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_backup_version::v3::Request,
) -> Result<create_backup_version::v3::Response> {
    let user = ctx.user_id()?;
    let body = parse_version_body(&req.algorithm)?;
    let _g = hs.write_lock().await;
    let n = backup::next_version(hs, user).await?;
    let rec = VersionRecord {
        algorithm: body.algorithm,
        auth_data: body.auth_data,
        etag: 0,
        count: 0,
        deleted: false,
    };
    let mut batch = Batch::new();
    backup::put_version(&mut batch, user, n, &rec)?;
    hs.store.write(batch).await?;
    tracing::info!(%user, version = n, "key backup version created");
    Ok(create_backup_version::v3::Response::new(n.to_string()))
}

async fn get_latest_version(
    hs: &Homeserver,
    ctx: Ctx,
    _req: get_latest_backup_info::v3::Request,
) -> Result<get_latest_backup_info::v3::Response> {
    let user = ctx.user_id()?;
    let (n, rec) = backup::current_version(hs, user)
        .await?
        .ok_or_else(|| MatrixError::not_found("No current backup version"))?;
    Ok(get_latest_backup_info::v3::Response::new(
        algorithm_json(&rec)?,
        UInt::new_saturating(rec.count),
        rec.etag.to_string(),
        n.to_string(),
    ))
}

async fn get_version(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_backup_info::v3::Request,
) -> Result<get_backup_info::v3::Response> {
    let user = ctx.user_id()?;
    let (n, rec) = existing_version(hs, user, &req.version).await?;
    Ok(get_backup_info::v3::Response::new(
        algorithm_json(&rec)?,
        UInt::new_saturating(rec.count),
        rec.etag.to_string(),
        n.to_string(),
    ))
}

/// Only `auth_data` may change: a backup's algorithm is fixed when it is created.
async fn update_version(
    hs: &Homeserver,
    ctx: Ctx,
    req: update_backup_version::v3::Request,
) -> Result<update_backup_version::v3::Response> {
    let user = ctx.user_id()?;
    let body = parse_version_body(&req.algorithm)?;
    let _g = hs.write_lock().await;
    let (n, mut rec) = existing_version(hs, user, &req.version).await?;
    if body.version.as_ref().is_some_and(|v| *v != req.version) {
        return Err(MatrixError::invalid_param(
            "the version in the body does not match the version in the path",
        ));
    }
    if body.algorithm != rec.algorithm {
        return Err(MatrixError::invalid_param(format!(
            "Algorithm does not match: this backup uses {}",
            rec.algorithm
        )));
    }
    rec.auth_data = body.auth_data;
    let mut batch = Batch::new();
    backup::put_version(&mut batch, user, n, &rec)?;
    hs.store.write(batch).await?;
    Ok(update_backup_version::v3::Response::new())
}

/// Deletes the version with all its keys. Its record stays, marked deleted, so a repeated delete
/// succeeds and the number is never reused.
async fn delete_version(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_backup_version::v3::Request,
) -> Result<delete_backup_version::v3::Response> {
    let user = ctx.user_id()?;
    let n = parse_version(&req.version).ok_or_else(unknown_version)?;
    let _g = hs.write_lock().await;
    let mut rec = backup::get_version(hs, user, n)
        .await?
        .ok_or_else(unknown_version)?;
    if rec.deleted {
        return Ok(delete_backup_version::v3::Response::new());
    }
    let mut batch = Batch::new();
    for s in backup::sessions(hs, user, n, None).await? {
        backup::delete_session(&mut batch, user, n, &s.room, &s.session);
    }
    rec.deleted = true;
    rec.count = 0;
    rec.etag = rec.etag.saturating_add(1);
    backup::put_version(&mut batch, user, n, &rec)?;
    hs.store.write(batch).await?;
    tracing::info!(%user, version = n, "key backup version deleted");
    Ok(delete_backup_version::v3::Response::new())
}

// ---------------------------------------------------------------------------------------------
// Session keys

/// What the server reads of a session key: the fields that decide which of two keys to keep.
/// `session_data` is algorithm-dependent, so it is only checked to be an object; ruma's typed
/// `KeyBackupData` would insist on the fields of one algorithm.
#[derive(Debug, Deserialize)]
struct KeyMeta {
    first_message_index: UInt,
    forwarded_count: UInt,
    is_verified: bool,
    #[serde(rename = "session_data")]
    _session_data: serde_json::Map<String, Value>,
}

impl KeyMeta {
    /// Whether `self` should replace `stored`.
    fn beats(&self, stored: &KeyMeta) -> bool {
        if self.is_verified != stored.is_verified {
            return self.is_verified;
        }
        if self.first_message_index != stored.first_message_index {
            return self.first_message_index < stored.first_message_index;
        }
        self.forwarded_count < stored.forwarded_count
    }
}

struct Upload {
    room: OwnedRoomId,
    session: String,
    data: Raw<KeyBackupData>,
    meta: KeyMeta,
}

fn upload(room: &RoomId, session: &str, data: &Raw<KeyBackupData>) -> Result<Upload> {
    if session.is_empty() {
        return Err(MatrixError::invalid_param("session ids cannot be empty"));
    }
    let meta: KeyMeta = data.deserialize_as_unchecked().map_err(|e| {
        MatrixError::bad_json(format!(
            "the key of session {session} in {room} is malformed: {e}"
        ))
    })?;
    Ok(Upload {
        room: room.to_owned(),
        session: session.to_owned(),
        data: data.clone(),
        meta,
    })
}

/// The `etag` and `count` of a version, as every key endpoint that writes answers them.
fn etag_count(rec: &VersionRecord) -> (String, UInt) {
    (rec.etag.to_string(), UInt::new_saturating(rec.count))
}

/// Stores the keys that are new or better than the stored ones, all in one batch.
async fn store_keys(
    hs: &Homeserver,
    user: &UserId,
    version: &str,
    uploads: Vec<Upload>,
) -> Result<(String, UInt)> {
    let _g = hs.write_lock().await;
    let (n, mut rec) = writable_version(hs, user, version).await?;
    let mut batch = Batch::new();
    let mut changed = false;
    for u in &uploads {
        let replace = match backup::get_session(hs, user, n, &u.room, &u.session).await? {
            None => {
                rec.count = rec.count.saturating_add(1);
                true
            }
            Some(stored) => {
                let stored: KeyMeta = stored.deserialize_as_unchecked().map_err(|e| {
                    MatrixError::unknown(format!("stored backup key is corrupt: {e}"))
                })?;
                u.meta.beats(&stored)
            }
        };
        if replace {
            backup::put_session(&mut batch, user, n, &u.room, &u.session, &u.data);
            changed = true;
        }
    }
    if changed {
        rec.etag = rec.etag.saturating_add(1);
        backup::put_version(&mut batch, user, n, &rec)?;
        hs.store.write(batch).await?;
    }
    Ok(etag_count(&rec))
}

async fn put_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: add_backup_keys::v3::Request,
) -> Result<add_backup_keys::v3::Response> {
    let user = ctx.user_id()?;
    let mut uploads = Vec::new();
    for (room, keys) in &req.rooms {
        for (session, data) in &keys.sessions {
            uploads.push(upload(room, session, data)?);
        }
    }
    let (etag, count) = store_keys(hs, user, &req.version, uploads).await?;
    Ok(add_backup_keys::v3::Response::new(etag, count))
}

async fn put_room_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: add_backup_keys_for_room::v3::Request,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let user = ctx.user_id()?;
    let uploads = req
        .sessions
        .iter()
        .map(|(session, data)| upload(&req.room_id, session, data))
        .collect::<Result<Vec<_>>>()?;
    let (etag, count) = store_keys(hs, user, &req.version, uploads).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn put_session_key(
    hs: &Homeserver,
    ctx: Ctx,
    req: add_backup_keys_for_session::v3::Request,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let user = ctx.user_id()?;
    let uploads = vec![upload(&req.room_id, &req.session_id, &req.session_data)?];
    let (etag, count) = store_keys(hs, user, &req.version, uploads).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, count))
}

async fn get_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_backup_keys::v3::Request,
) -> Result<get_backup_keys::v3::Response> {
    let user = ctx.user_id()?;
    let (n, _) = existing_version(hs, user, &req.version).await?;
    let mut rooms: BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>> = BTreeMap::new();
    for s in backup::sessions(hs, user, n, None).await? {
        rooms.entry(s.room).or_default().insert(s.session, s.data);
    }
    Ok(get_backup_keys::v3::Response::new(
        rooms
            .into_iter()
            .map(|(room, sessions)| (room, RoomKeyBackup::new(sessions)))
            .collect(),
    ))
}

/// A room without keys answers `{"sessions": {}}`, as the spec says.
async fn get_room_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_backup_keys_for_room::v3::Request,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let user = ctx.user_id()?;
    let (n, _) = existing_version(hs, user, &req.version).await?;
    let sessions = backup::sessions(hs, user, n, Some(&req.room_id))
        .await?
        .into_iter()
        .map(|s| (s.session, s.data))
        .collect();
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

async fn get_session_key(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_backup_keys_for_session::v3::Request,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let user = ctx.user_id()?;
    let (n, _) = existing_version(hs, user, &req.version).await?;
    let data = backup::get_session(hs, user, n, &req.room_id, &req.session_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Key not found"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(data))
}

/// Deletes keys of any existing version (the spec restricts only uploads to the current one).
async fn remove_keys(
    hs: &Homeserver,
    user: &UserId,
    version: &str,
    room: Option<&RoomId>,
    session: Option<&str>,
) -> Result<(String, UInt)> {
    let _g = hs.write_lock().await;
    let (n, mut rec) = existing_version(hs, user, version).await?;
    let victims: Vec<(OwnedRoomId, String)> = match (room, session) {
        (Some(room), Some(session)) => backup::get_session(hs, user, n, room, session)
            .await?
            .map(|_| (room.to_owned(), session.to_owned()))
            .into_iter()
            .collect(),
        _ => backup::sessions(hs, user, n, room)
            .await?
            .into_iter()
            .map(|s| (s.room, s.session))
            .collect(),
    };
    if !victims.is_empty() {
        let mut batch = Batch::new();
        for (room, session) in &victims {
            backup::delete_session(&mut batch, user, n, room, session);
        }
        rec.count = rec.count.saturating_sub(victims.len() as u64);
        rec.etag = rec.etag.saturating_add(1);
        backup::put_version(&mut batch, user, n, &rec)?;
        hs.store.write(batch).await?;
    }
    Ok(etag_count(&rec))
}

async fn delete_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_backup_keys::v3::Request,
) -> Result<delete_backup_keys::v3::Response> {
    let (etag, count) = remove_keys(hs, ctx.user_id()?, &req.version, None, None).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, count))
}

async fn delete_room_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_backup_keys_for_room::v3::Request,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let user = ctx.user_id()?;
    let (etag, count) = remove_keys(hs, user, &req.version, Some(&req.room_id), None).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, count))
}

async fn delete_session_key(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_backup_keys_for_session::v3::Request,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let user = ctx.user_id()?;
    let (etag, count) = remove_keys(
        hs,
        user,
        &req.version,
        Some(&req.room_id),
        Some(&req.session_id),
    )
    .await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(
        etag, count,
    ))
}
