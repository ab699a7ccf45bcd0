//! End-to-end encryption key management: `/keys/upload`, `/keys/query` (with the cross-signing
//! keys and signatures of `cross_signing`), `/keys/claim`, `/keys/changes`, and the E2EE parts
//! of `/sync` (device-list changes, one-time key counts, unused fallback key types). Keys of
//! users of other servers are asked for over federation; the local halves are shared with the
//! federation endpoints (`federation::user_keys`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::future::join_all;
use ruma::api::client::keys::{claim_keys, get_key_changes, get_keys, upload_keys};
use ruma::encryption::{DeviceKeys, OneTimeKey};
use ruma::events::room::member::MembershipState;
use ruma::serde::Raw;
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, UInt, UserId,
};
use serde_json::{Value, json};

use crate::client::{cross_signing, tokens};
use crate::db::e2ee::{self, FallbackKeyRecord, OneTimeKeyRecord};
use crate::db::{rooms, users};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, federation, route};

pub fn routes(r: &mut Router) {
    route!(r, upload_keys::v3::Request, upload);
    route!(r, get_keys::v3::Request, query);
    route!(r, claim_keys::v3::Request, claim);
    route!(r, get_key_changes::v3::Request, changes);
}

/// Two JSON texts with the same meaning (key order and whitespace aside).
fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn check_one_time_key(id: &str, key: &Raw<OneTimeKey>) -> Result<()> {
    key.deserialize()
        .map(|_| ())
        .map_err(|e| MatrixError::bad_json(format!("one-time key {id} is malformed: {e}")))
}

async fn upload(
    hs: &Homeserver,
    ctx: Ctx,
    req: upload_keys::v3::Request,
) -> Result<upload_keys::v3::Response> {
    let session = ctx.session()?;
    let (user, device) = (&session.user_id, &session.device_id);

    if let Some(raw) = &req.device_keys {
        let keys: DeviceKeys = raw
            .deserialize()
            .map_err(|e| MatrixError::bad_json(format!("device_keys is malformed: {e}")))?;
        if keys.user_id != *user || keys.device_id != *device {
            return Err(MatrixError::invalid_param(format!(
                "device_keys belong to {} / {}, but this session is {user} / {device}",
                keys.user_id, keys.device_id
            )));
        }
    }
    for (id, key) in &req.one_time_keys {
        check_one_time_key(id.as_str(), key)?;
    }
    let mut fallback_algorithms = BTreeSet::new();
    for (id, key) in &req.fallback_keys {
        check_one_time_key(id.as_str(), key)?;
        if !fallback_algorithms.insert(id.algorithm()) {
            return Err(MatrixError::invalid_param(format!(
                "only one fallback key per algorithm may be uploaded; got several for {}",
                id.algorithm()
            )));
        }
    }

    // Claims read-then-delete under this lock too, so a key can never be both kept and handed out.
    let _guard = hs.write_lock().await;
    let mut batch = Batch::new();

    let mut device_list_changed = false;
    if let Some(raw) = &req.device_keys {
        let old = e2ee::device_keys(hs, user, device).await?;
        if !old
            .as_ref()
            .is_some_and(|old| same_json(old.json().get(), raw.json().get()))
        {
            // Cross-signing signatures of the device vouch for the keys they signed; once those
            // change they are stale and would only confuse verifiers.
            if let Some(old) = &old
                && cross_signing::signed_content(old.json().get())
                    != cross_signing::signed_content(raw.json().get())
            {
                e2ee::delete_signatures_of(hs, &mut batch, user, e2ee::SignedKey::Device(device))
                    .await?;
            }
            e2ee::put_device_keys(&mut batch, user, device, raw);
            device_list_changed = true;
        }
    }

    if !req.one_time_keys.is_empty() {
        let existing = e2ee::one_time_keys(hs, user, device).await?;
        let by_id: HashMap<&str, &Raw<OneTimeKey>> = existing
            .iter()
            .map(|k| (k.record.id.as_str(), &k.record.key))
            .collect();
        let seq = existing.iter().map(|k| k.seq).max().map_or(0, |s| s + 1);
        for (id, key) in &req.one_time_keys {
            match by_id.get(id.as_str()) {
                // Clients retry uploads whose response they missed; the same key again is fine.
                Some(old) if same_json(old.json().get(), key.json().get()) => {}
                Some(_) => {
                    return Err(MatrixError::invalid_param(format!(
                        "one-time key {id} already exists with different content"
                    )));
                }
                None => e2ee::put_one_time_key(
                    &mut batch,
                    user,
                    device,
                    seq,
                    &OneTimeKeyRecord {
                        id: id.clone(),
                        key: key.clone(),
                    },
                )?,
            }
        }
    }

    for (id, key) in &req.fallback_keys {
        let old = e2ee::fallback_key_for(hs, user, device, &id.algorithm()).await?;
        // Re-uploading the current fallback key must not make a used key look fresh.
        let used = old.is_some_and(|o| {
            o.id == *id && same_json(o.key.json().get(), key.json().get()) && o.used
        });
        e2ee::put_fallback_key(
            &mut batch,
            user,
            device,
            &FallbackKeyRecord {
                id: id.clone(),
                key: key.clone(),
                used,
            },
        )?;
    }

    if device_list_changed {
        let pos = hs.alloc_pos();
        e2ee::record_key_change(&mut batch, pos, user);
        hs.commit(batch).await?;
        tracing::debug!(%user, %device, pos, "device keys changed");
    } else if !batch.is_empty() {
        hs.store.write(batch).await?;
    }
    drop(_guard);
    if device_list_changed {
        crate::federation::devices::announce(hs, user, device).await?;
    }

    Ok(upload_keys::v3::Response::new(
        one_time_key_counts(hs, user, device).await?,
    ))
}

/// Device keys as served by `/keys/query`: the uploaded object plus the cross-signing signatures
/// uploaded for it since, and `unsigned.device_display_name`. Edited as a JSON map so that fields
/// this server does not know survive (signatures cover them).
fn served_device_keys(
    raw: &Raw<DeviceKeys>,
    display_name: Option<&str>,
    signatures: &[e2ee::StoredSignature],
) -> Result<Raw<DeviceKeys>> {
    if display_name.is_none() && signatures.is_empty() {
        return Ok(raw.clone());
    }
    let mut obj: serde_json::Map<String, Value> = serde_json::from_str(raw.json().get())
        .map_err(|e| MatrixError::unknown(format!("stored device keys are corrupt: {e}")))?;
    cross_signing::merge_signatures(&mut obj, signatures);
    if let Some(name) = display_name {
        let unsigned = obj.entry("unsigned").or_insert_with(|| json!({}));
        if let Some(u) = unsigned.as_object_mut() {
            u.insert(
                "device_display_name".to_owned(),
                Value::String(name.to_owned()),
            );
        }
    }
    Ok(Raw::from_json(serde_json::value::to_raw_value(&obj)?))
}

/// Who is asking for a local user's device keys, which decides what they are shown.
#[derive(Debug, Clone, Copy)]
pub enum KeyRequester<'a> {
    /// A local user: device display names, and the signatures of the keys' owner and their own.
    User(&'a UserId),
    /// Another server: the owner's signatures only, and no device display names (they tend
    /// to name people's phones and places; Synapse withholds them over federation too).
    Server,
}

/// The identity keys of `user`'s devices that still exist (all of them, or those in `wanted`),
/// as `requester` may see them; `None` if there is no such user.
pub(crate) async fn local_device_keys(
    hs: &Homeserver,
    requester: KeyRequester<'_>,
    user: &UserId,
    wanted: &[OwnedDeviceId],
) -> Result<Option<BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>>> {
    if users::get_user(hs, user).await?.is_none() {
        return Ok(None);
    }
    // Only devices that still exist: keys are never served for a deleted device.
    let names: HashMap<OwnedDeviceId, Option<String>> = users::list_devices(hs, user)
        .await?
        .into_iter()
        .map(|d| (d.device_id, d.display_name))
        .collect();
    let mut devices = BTreeMap::new();
    for (device, raw) in e2ee::all_device_keys(hs, user).await? {
        let Some(name) = names.get(&device) else {
            continue;
        };
        if !wanted.is_empty() && !wanted.contains(&device) {
            continue;
        }
        // The owner's own signatures are what anyone may see; a local requester also sees theirs.
        let (signer, name) = match requester {
            KeyRequester::User(u) => (u, name.as_deref()),
            KeyRequester::Server => (user, None),
        };
        let sigs =
            cross_signing::visible_signatures(hs, signer, user, e2ee::SignedKey::Device(&device))
                .await?;
        devices.insert(device, served_device_keys(&raw, name, &sigs)?);
    }
    Ok(Some(devices))
}

/// Users of other servers are asked for at their servers, one request per server, all at
/// once; a server that fails lands in `failures`.
async fn query(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_keys::v3::Request,
) -> Result<get_keys::v3::Response> {
    let requester = ctx.user_id()?;
    let mut resp = get_keys::v3::Response::new();
    let mut remote: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> =
        BTreeMap::new();
    for (user, wanted) in &req.device_keys {
        if user.server_name() != hs.server_name() {
            remote
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user.clone(), wanted.clone());
            continue;
        }
        let Some(devices) =
            local_device_keys(hs, KeyRequester::User(requester), user, wanted).await?
        else {
            continue;
        };
        resp.device_keys.insert(user.clone(), devices);
        cross_signing::add_to_query(hs, requester, user, &mut resp).await?;
    }
    let timeout = federation_timeout(req.timeout);
    let answers = join_all(remote.into_iter().map(|(server, users)| async move {
        let answer = federation::client::query_keys(hs, &server, users, timeout).await;
        (server, answer)
    }))
    .await;
    for (server, answer) in answers {
        match answer {
            Ok(answer) => {
                // A server answers for its own users only.
                let own = |u: &UserId| u.server_name() == server;
                resp.device_keys
                    .extend(answer.device_keys.into_iter().filter(|(u, _)| own(u)));
                resp.master_keys
                    .extend(answer.master_keys.into_iter().filter(|(u, _)| own(u)));
                resp.self_signing_keys
                    .extend(answer.self_signing_keys.into_iter().filter(|(u, _)| own(u)));
            }
            Err(e) => {
                tracing::info!(%server, error = %e, "keys query over federation failed");
                resp.failures.insert(server.to_string(), e.failure());
            }
        }
    }
    Ok(resp)
}

/// How long to wait for other servers: the client's `timeout`, 10 seconds by default (the
/// spec's default for `/keys/query` and `/keys/claim`).
fn federation_timeout(requested: Option<Duration>) -> Duration {
    requested
        .unwrap_or(Duration::from_secs(10))
        .min(Duration::from_secs(60))
}

/// Claimed one-time keys: user → device → key id → key.
pub(crate) type Claimed = BTreeMap<OwnedUserId, claim_keys::v3::OneTimeKeys>;

async fn claim(
    hs: &Homeserver,
    ctx: Ctx,
    req: claim_keys::v3::Request,
) -> Result<claim_keys::v3::Response> {
    ctx.session()?;
    let mut failures = BTreeMap::new();
    let mut local = BTreeMap::new();
    let mut remote_claims: BTreeMap<OwnedServerName, BTreeMap<_, _>> = BTreeMap::new();
    for (user, devices) in req.one_time_keys {
        if user.server_name() == hs.server_name() {
            local.insert(user, devices);
        } else {
            remote_claims
                .entry(user.server_name().to_owned())
                .or_default()
                .insert(user, devices);
        }
    }
    let mut claimed = claim_local(hs, &local).await?;
    let timeout = federation_timeout(req.timeout);
    let answers = join_all(
        remote_claims
            .into_iter()
            .map(|(server, claims)| async move {
                let answer = federation::client::claim_keys(hs, &server, claims, timeout).await;
                (server, answer)
            }),
    )
    .await;
    for (server, answer) in answers {
        match answer {
            Ok(answer) => claimed.extend(
                answer
                    .one_time_keys
                    .into_iter()
                    .filter(|(u, _)| u.server_name() == server),
            ),
            Err(e) => {
                tracing::info!(%server, error = %e, "key claim over federation failed");
                failures.insert(server.to_string(), e.failure());
            }
        }
    }
    let mut resp = claim_keys::v3::Response::new(claimed);
    resp.failures = failures;
    Ok(resp)
}

/// Claims one key per requested device of local users: the oldest one-time key of the
/// algorithm, else the fallback key (marked used). Users of other servers are skipped.
pub(crate) async fn claim_local(
    hs: &Homeserver,
    claims: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
) -> Result<Claimed> {
    let mut claimed = Claimed::new();
    let guard = hs.write_lock().await;
    let mut batch = Batch::new();
    for (user, devices) in claims {
        if user.server_name() != hs.server_name() {
            continue;
        }
        for (device, algorithm) in devices {
            let key = if let Some((storage_key, rec)) =
                e2ee::oldest_one_time_key(hs, user, device, algorithm).await?
            {
                batch.delete("one_time_keys", storage_key);
                Some((rec.id, rec.key))
            } else if let Some(mut fallback) =
                e2ee::fallback_key_for(hs, user, device, algorithm).await?
            {
                if !fallback.used {
                    fallback.used = true;
                    e2ee::put_fallback_key(&mut batch, user, device, &fallback)?;
                }
                Some((fallback.id, fallback.key))
            } else {
                None
            };
            if let Some((id, key)) = key {
                claimed
                    .entry(user.clone())
                    .or_default()
                    .entry(device.clone())
                    .or_default()
                    .insert(id, key);
            }
        }
    }
    if !batch.is_empty() {
        hs.store.write(batch).await?;
    }
    drop(guard);
    Ok(claimed)
}

async fn changes(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_key_changes::v3::Request,
) -> Result<get_key_changes::v3::Response> {
    let user = ctx.user_id()?;
    // `from` and `to` are `/sync` `next_batch` tokens.
    let from = tokens::parse(&req.from)?;
    let to = tokens::parse(&req.to)?.min(hs.current_pos());
    let (changed, left) = device_lists_between(hs, user, from, to).await?;
    Ok(get_key_changes::v3::Response::new(changed, left))
}

/// [`device_lists_between`] from `since` up to now.
pub async fn device_list_changes(
    hs: &Homeserver,
    user: &UserId,
    since: u64,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    device_lists_between(hs, user, since, hs.current_pos()).await
}

/// `device_lists` of `/sync` and `/keys/changes` for positions in `(after, upto]`: users whose
/// keys changed or who now share a room with `user` (`changed`), and users who no longer share
/// any (`left`). Nothing for `after == 0` (an initial sync: the client fetches every key).
pub async fn device_lists_between(
    hs: &Homeserver,
    user: &UserId,
    after: u64,
    upto: u64,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    if after == 0 || upto <= after {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut changed = changes_between(hs, user, after, upto).await?;
    let (newly_shared, left) = sharing_changes(hs, user, after, upto).await?;
    for u in newly_shared {
        if !changed.contains(&u) {
            changed.push(u);
        }
    }
    Ok((changed, left))
}

/// Users whose keys changed at a position in `(after, upto]` in a way `user` may hear of: public
/// changes of users sharing a room with `user` (and of `user` themself, for their other devices),
/// and changes only `user` may see (their own user-signing key, their signatures of others).
async fn changes_between(
    hs: &Homeserver,
    user: &UserId,
    after: u64,
    upto: u64,
) -> Result<Vec<OwnedUserId>> {
    let log = e2ee::key_changes_between(hs, after, upto).await?;
    if log.is_empty() {
        return Ok(Vec::new());
    }
    let mut visible = rooms::users_sharing_room_with(hs, user).await?;
    visible.insert(user.to_owned());
    let mut changed: Vec<OwnedUserId> = Vec::new();
    for change in log {
        let heard = match &change.audience {
            None => visible.contains(&change.user),
            Some(audience) => audience == user,
        };
        if heard && !changed.contains(&change.user) {
            changed.push(change.user);
        }
    }
    Ok(changed)
}

/// Users who started sharing a room with `user` in `(since, upto]` (their devices are news to
/// the client: `device_lists.changed`), and users who no longer share any room with them
/// (`device_lists.left`).
pub async fn sharing_changes(
    hs: &Homeserver,
    user: &UserId,
    since: u64,
    upto: u64,
) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
    if since == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut joined = BTreeSet::new();
    let mut departed = BTreeSet::new();
    for (room, rec) in rooms::membership_records_for_user(hs, user).await? {
        if rec.pos > since && rec.pos <= upto {
            // The user's own membership changed: everyone in the room is new, or gone.
            let members = rooms::joined_members(hs, &room).await?;
            match rec.membership {
                MembershipState::Join => joined.extend(members),
                MembershipState::Leave | MembershipState::Ban => departed.extend(members),
                _ => {}
            }
        } else if rec.membership == MembershipState::Join {
            for (_, t, sk, id) in rooms::state_changes(hs, &room, since, upto).await? {
                if t != "m.room.member" {
                    continue;
                }
                let (Ok(member), Some(p)) = (
                    OwnedUserId::try_from(sk.as_str()),
                    rooms::get_pdu(hs, id.as_str()).await?,
                ) else {
                    continue;
                };
                match p.membership() {
                    Some(MembershipState::Join) => {
                        joined.insert(member);
                    }
                    Some(MembershipState::Leave | MembershipState::Ban) => {
                        departed.insert(member);
                    }
                    _ => {}
                }
            }
        }
    }
    let sharing = rooms::users_sharing_room_with(hs, user).await?;
    let changed = joined
        .into_iter()
        .filter(|u| u != user && sharing.contains(u))
        .collect();
    let left = departed
        .into_iter()
        .filter(|u| u != user && !sharing.contains(u))
        .collect();
    Ok((changed, left))
}

/// For `/sync`'s `device_one_time_keys_count` and `/keys/upload`. `signed_curve25519` is always
/// present (0 when none are left): clients treat a missing count as "unknown" and do not top up.
pub async fn one_time_key_counts(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<BTreeMap<OneTimeKeyAlgorithm, UInt>> {
    let slot = crate::db::key(&[user.as_bytes(), device.as_bytes()]);
    let counted = hs
        .memo("one_time_keys", user.as_bytes(), &slot, || {
            e2ee::count_one_time_keys(hs, user, device)
        })
        .await?;
    let mut counts: BTreeMap<OneTimeKeyAlgorithm, UInt> = counted
        .iter()
        .map(|(alg, n)| (alg.clone(), UInt::new_saturating(*n)))
        .collect();
    counts
        .entry(OneTimeKeyAlgorithm::SignedCurve25519)
        .or_insert(UInt::MIN);
    Ok(counts)
}

/// For `/sync`'s `device_unused_fallback_key_types`.
pub async fn unused_fallback_key_types(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
) -> Result<Vec<OneTimeKeyAlgorithm>> {
    let slot = crate::db::key(&[user.as_bytes(), device.as_bytes()]);
    let keys = hs
        .memo("fallback_keys", user.as_bytes(), &slot, || {
            e2ee::fallback_keys(hs, user, device)
        })
        .await?;
    Ok(keys
        .iter()
        .filter(|k| !k.used)
        .map(|k| k.id.algorithm())
        .collect())
}

/// Removes every E2EE record of a device that is being deleted (identity, one-time and fallback
/// keys, its to-device inbox) into `batch`. When the device had identity keys, this is a
/// device-list change that other users' `/sync` must see, so it allocates a stream position:
/// call it with `hs.write_lock()` held and write `batch` with `hs.commit`.
pub async fn delete_device_keys(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
    device: &DeviceId,
) -> Result<()> {
    if e2ee::delete_device(hs, batch, user, device).await? {
        let pos = hs.alloc_pos();
        e2ee::record_key_change(batch, pos, user);
    }
    Ok(())
}
