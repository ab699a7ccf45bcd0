//! Cross-signing (spec: "Cross-signing"): a user's master, self-signing and user-signing keys
//! (`/keys/device_signing/upload`) and the signatures made with or of them
//! (`/keys/signatures/upload`). `/keys/query` serves both through [`add_to_query`] and
//! [`merge_signatures`].
//!
//! User-interactive auth: as the spec allows, a client may publish its first master key, or send
//! again exactly the keys already stored (a retry whose response was lost), without
//! re-authenticating. Replacing any stored key needs UIA: a stolen access token alone must not
//! be able to swap the keys other users trust.
//!
//! Who hears of a change: new master or self-signing keys, and signatures of one's own devices or
//! master key, change what everyone sharing a room with the user sees in `/keys/query`; a new
//! user-signing key, and signatures of other users' master keys, are visible to the user alone,
//! so only their own devices are told (`/sync` `device_lists.changed`, `/keys/changes`).

use std::collections::{BTreeMap, BTreeSet};

use http::StatusCode;
use ruma::api::client::keys::{get_keys, upload_signatures, upload_signing_keys};
use ruma::encryption::{CrossSigningKey, DeviceKeys, KeyUsage};
use ruma::serde::{Base64, Raw};
use ruma::signatures::{to_canonical_json_string_for_signing, verify_canonical_json_bytes};
use ruma::{CanonicalJsonObject, OwnedDeviceId, OwnedUserId, SigningKeyAlgorithm, UserId};
use serde_json::{Value, json};

use crate::client::uia::{self, Operation, UiaError};
use crate::db::e2ee::{self, SignedKey, StoredSignature};
use crate::db::users;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route, uia_route};

pub fn routes(r: &mut Router) {
    uia_route!(r, upload_signing_keys::v3::Request, upload_signing_keys);
    route!(r, upload_signatures::v3::Request, upload_signatures);
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures

/// A cross-signing key whose shape has been checked.
struct ParsedKey {
    raw: Raw<CrossSigningKey>,
    /// The ed25519 public key in unpadded base64, which is also the name in its key id.
    public: String,
    public_bytes: Vec<u8>,
}

impl ParsedKey {
    fn key_id(&self) -> String {
        format!("ed25519:{}", self.public)
    }
}

/// Checks what the spec requires of a cross-signing key of `user` used for `usage`: it is the
/// user's, says so in `usage`, and holds exactly one ed25519 public key named after itself.
fn parse_key(
    raw: &Raw<CrossSigningKey>,
    user: &UserId,
    usage: &KeyUsage,
    field: &str,
) -> Result<ParsedKey> {
    let key: CrossSigningKey = raw
        .deserialize()
        .map_err(|e| MatrixError::bad_json(format!("{field} is malformed: {e}")))?;
    if key.user_id != user {
        return Err(MatrixError::invalid_param(format!(
            "{field} belongs to {}, not to {user}",
            key.user_id
        )));
    }
    if !key.usage.iter().any(|u| u.as_str() == usage.as_str()) {
        return Err(MatrixError::invalid_param(format!(
            "{field} must list \"{}\" in its usage",
            usage.as_str()
        )));
    }
    let mut keys = key.keys.iter();
    let (Some((id, value)), None) = (keys.next(), keys.next()) else {
        return Err(MatrixError::invalid_param(format!(
            "{field} must hold exactly one public key"
        )));
    };
    if id.algorithm() != SigningKeyAlgorithm::Ed25519 {
        return Err(MatrixError::invalid_param(format!(
            "{field} must be an ed25519 key"
        )));
    }
    if id.key_name().as_str() != value {
        return Err(MatrixError::invalid_param(format!(
            "{field}: the key id must be ed25519:<the public key>"
        )));
    }
    let bytes = Base64::<ruma::serde::base64::Standard>::parse(value)
        .ok()
        .filter(|b| b.as_bytes().len() == 32)
        .ok_or_else(|| {
            MatrixError::invalid_param(format!(
                "{field}: the public key is not 32 bytes of unpadded base64"
            ))
        })?;
    Ok(ParsedKey {
        raw: raw.clone(),
        public: value.clone(),
        public_bytes: bytes.as_bytes().to_vec(),
    })
}

/// A stored key; it was checked on upload, so a failure here means the record is corrupt.
fn parse_stored(raw: &Raw<CrossSigningKey>, user: &UserId, usage: &KeyUsage) -> Result<ParsedKey> {
    parse_key(raw, user, usage, usage.as_str()).map_err(|e| {
        MatrixError::unknown(format!("stored cross-signing key is corrupt: {}", e.error))
    })
}

fn canonical_object(json: &str) -> Option<CanonicalJsonObject> {
    serde_json::from_str(json).ok()
}

/// The text a signature of `object` covers: its canonical JSON without `signatures` and
/// `unsigned`.
fn signed_text(object: &CanonicalJsonObject) -> Option<String> {
    to_canonical_json_string_for_signing(object).ok()
}

/// The signed content of a JSON text, for comparing two versions of one key.
pub fn signed_content(json: &str) -> Option<String> {
    signed_text(&canonical_object(json)?)
}

fn signatures_by<'a>(
    object: &'a CanonicalJsonObject,
    signer: &UserId,
) -> Option<&'a CanonicalJsonObject> {
    object
        .get("signatures")?
        .as_object()?
        .get(signer.as_str())?
        .as_object()
}

fn signature_in<'a>(
    object: &'a CanonicalJsonObject,
    signer: &UserId,
    key_id: &str,
) -> Option<&'a str> {
    signatures_by(object, signer)?.get(key_id)?.as_str()
}

/// Whether `signature` is a valid ed25519 signature of `text` by `public_key`.
fn verifies(public_key: &[u8], signature: &str, text: &str) -> bool {
    let Ok(sig) = Base64::<ruma::serde::base64::Standard>::parse(signature) else {
        return false;
    };
    verify_canonical_json_bytes(
        &SigningKeyAlgorithm::Ed25519,
        public_key,
        sig.as_bytes(),
        text.as_bytes(),
    )
    .is_ok()
}

fn invalid_signature(error: impl Into<String>) -> MatrixError {
    MatrixError::new(StatusCode::BAD_REQUEST, "M_INVALID_SIGNATURE", error)
}

/// Adds uploaded signatures to a key object's `signatures`, leaving every other field as it was
/// (signatures cover fields this server does not know).
pub fn merge_signatures(obj: &mut serde_json::Map<String, Value>, sigs: &[StoredSignature]) {
    if sigs.is_empty() {
        return;
    }
    let all = obj.entry("signatures").or_insert_with(|| json!({}));
    let Some(all) = all.as_object_mut() else {
        return;
    };
    for sig in sigs {
        let by_signer = all.entry(sig.signer.as_str()).or_insert_with(|| json!({}));
        if let Some(by_signer) = by_signer.as_object_mut() {
            by_signer.insert(sig.key_id.clone(), Value::String(sig.signature.clone()));
        }
    }
}

/// Uploaded signatures of `target` that `requester` may see: those of the key's owner (their own
/// devices and keys vouching for each other) and the requester's own. Who else trusts a user is
/// nobody else's business.
pub async fn visible_signatures(
    hs: &Homeserver,
    requester: &UserId,
    owner: &UserId,
    target: SignedKey<'_>,
) -> Result<Vec<StoredSignature>> {
    Ok(e2ee::signatures_of(hs, owner, target)
        .await?
        .into_iter()
        .filter(|s| s.signer == owner || s.signer == requester)
        .collect())
}

fn with_signatures(
    raw: &Raw<CrossSigningKey>,
    sigs: &[StoredSignature],
) -> Result<Raw<CrossSigningKey>> {
    if sigs.is_empty() {
        return Ok(raw.clone());
    }
    let mut obj: serde_json::Map<String, Value> = serde_json::from_str(raw.json().get())
        .map_err(|e| MatrixError::unknown(format!("stored cross-signing key is corrupt: {e}")))?;
    merge_signatures(&mut obj, sigs);
    Ok(Raw::from_json(serde_json::value::to_raw_value(&obj)?))
}

/// Adds `user`'s cross-signing keys to a `/keys/query` answer for `requester`: master and
/// self-signing keys for anyone, the user-signing key only for its owner.
pub async fn add_to_query(
    hs: &Homeserver,
    requester: &UserId,
    user: &UserId,
    resp: &mut get_keys::v3::Response,
) -> Result<()> {
    if let Some(raw) = e2ee::cross_signing_key(hs, user, &KeyUsage::Master).await? {
        let master = parse_stored(&raw, user, &KeyUsage::Master)?;
        let sigs =
            visible_signatures(hs, requester, user, SignedKey::Master(&master.public)).await?;
        resp.master_keys
            .insert(user.to_owned(), with_signatures(&raw, &sigs)?);
    }
    if let Some(raw) = e2ee::cross_signing_key(hs, user, &KeyUsage::SelfSigning).await? {
        resp.self_signing_keys.insert(user.to_owned(), raw);
    }
    if requester == user
        && let Some(raw) = e2ee::cross_signing_key(hs, user, &KeyUsage::UserSigning).await?
    {
        resp.user_signing_keys.insert(user.to_owned(), raw);
    }
    Ok(())
}

/// `user`'s master key (with its owner's signatures) and self-signing key as other servers
/// see them: the user-signing key is never shared.
pub async fn public_keys(
    hs: &Homeserver,
    user: &UserId,
) -> Result<(Option<Raw<CrossSigningKey>>, Option<Raw<CrossSigningKey>>)> {
    let master = match e2ee::cross_signing_key(hs, user, &KeyUsage::Master).await? {
        Some(raw) => {
            let master = parse_stored(&raw, user, &KeyUsage::Master)?;
            let sigs =
                visible_signatures(hs, user, user, SignedKey::Master(&master.public)).await?;
            Some(with_signatures(&raw, &sigs)?)
        }
        None => None,
    };
    let self_signing = e2ee::cross_signing_key(hs, user, &KeyUsage::SelfSigning).await?;
    Ok((master, self_signing))
}

// ---------------------------------------------------------------------------------------------
// POST /keys/device_signing/upload

fn same_json(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

async fn upload_signing_keys(
    hs: &Homeserver,
    ctx: Ctx,
    req: upload_signing_keys::v3::Request,
) -> Result<upload_signing_keys::v3::Response, UiaError> {
    let user = ctx.user_id()?.clone();
    let offered = [
        (KeyUsage::Master, req.master_key.as_ref(), "master_key"),
        (
            KeyUsage::SelfSigning,
            req.self_signing_key.as_ref(),
            "self_signing_key",
        ),
        (
            KeyUsage::UserSigning,
            req.user_signing_key.as_ref(),
            "user_signing_key",
        ),
    ];
    // A key without a field the spec requires makes the whole body malformed (`M_BAD_JSON`),
    // whatever else is wrong with the other keys.
    for (_, raw, field) in &offered {
        if let Some(raw) = raw {
            raw.deserialize()
                .map_err(|e| MatrixError::bad_json(format!("{field} is malformed: {e}")))?;
        }
    }

    // Held from the "is there a master key yet?" check to the write, so two first uploads cannot
    // both skip UIA.
    let _g = hs.write_lock().await;
    let mut stored = BTreeMap::new();
    for (usage, _, _) in &offered {
        if let Some(raw) = e2ee::cross_signing_key(hs, &user, usage).await? {
            stored.insert(usage.as_str().to_owned(), raw);
        }
    }
    let is_new = |usage: &KeyUsage, raw: &Raw<CrossSigningKey>| {
        !stored
            .get(usage.as_str())
            .is_some_and(|s| same_json(s.json().get(), raw.json().get()))
    };
    let changes = offered
        .iter()
        .any(|(usage, raw, _)| raw.is_some_and(|raw| is_new(usage, raw)));
    let stored_master = stored.get(KeyUsage::Master.as_str()).cloned();

    if !changes && stored_master.is_some() {
        return Ok(upload_signing_keys::v3::Response::new());
    }
    let done = match stored_master {
        Some(_) => {
            let op = Operation::sensitive(hs, "device_signing_upload", &user).await?;
            Some(uia::authenticate(hs, &op, req.auth.as_ref()).await?)
        }
        None => None,
    };

    let master = match (&req.master_key, &stored_master) {
        (Some(raw), _) => parse_key(raw, &user, &KeyUsage::Master, "master_key")?,
        (None, Some(raw)) => parse_stored(raw, &user, &KeyUsage::Master)?,
        (None, None) => {
            return Err(MatrixError::missing_param(
                "no master key is available: upload master_key together with the other keys",
            )
            .into());
        }
    };
    let mut uploads = Vec::new();
    for (usage, raw, field) in &offered {
        let Some(raw) = raw else { continue };
        let key = if *usage == KeyUsage::Master {
            parse_key(raw, &user, usage, field)?
        } else {
            let key = parse_key(raw, &user, usage, field)?;
            let object = canonical_object(raw.json().get())
                .ok_or_else(|| MatrixError::bad_json(format!("{field} is not canonical JSON")))?;
            let signed = signature_in(&object, &user, &master.key_id())
                .zip(signed_text(&object))
                .is_some_and(|(sig, text)| verifies(&master.public_bytes, sig, &text));
            if !signed {
                return Err(invalid_signature(format!(
                    "{field} is not signed by the master key {}",
                    master.key_id()
                ))
                .into());
            }
            key
        };
        uploads.push((usage.clone(), key));
    }
    let devices = users::list_devices(hs, &user).await?;
    for (_, key) in &uploads {
        if devices.iter().any(|d| d.device_id.as_str() == key.public) {
            return Err(MatrixError::forbidden(format!(
                "the public key {} is already in use as a device id",
                key.public
            ))
            .into());
        }
    }

    let mut batch = Batch::new();
    if let Some(done) = done {
        done.consume(&mut batch);
    }
    let (mut public_change, mut private_change) = (false, false);
    for (usage, key) in &uploads {
        if !is_new(usage, &key.raw) {
            continue;
        }
        if *usage == KeyUsage::Master
            && let Some(old) = &stored_master
        {
            // Signatures of the old master key say nothing about the new one.
            let old = parse_stored(old, &user, &KeyUsage::Master)?;
            e2ee::delete_signatures_of(hs, &mut batch, &user, SignedKey::Master(&old.public))
                .await?;
        }
        e2ee::put_cross_signing_key(&mut batch, &user, usage, &key.raw);
        if *usage == KeyUsage::UserSigning {
            private_change = true;
        } else {
            public_change = true;
        }
    }
    let pos = hs.alloc_pos();
    if public_change {
        e2ee::record_key_change(&mut batch, pos, &user);
    } else if private_change {
        e2ee::record_private_key_change(&mut batch, pos, &user, &user);
    }
    hs.commit(batch).await?;
    tracing::info!(%user, pos, "cross-signing keys uploaded");
    Ok(upload_signing_keys::v3::Response::new())
}

// ---------------------------------------------------------------------------------------------
// POST /keys/signatures/upload

/// Why one signed object was not accepted: an entry of the response's `failures`.
struct Rejection {
    errcode: &'static str,
    error: String,
}

impl Rejection {
    fn invalid(error: impl Into<String>) -> Self {
        Self {
            errcode: "M_INVALID_SIGNATURE",
            error: error.into(),
        }
    }

    fn not_found(error: impl Into<String>) -> Self {
        Self {
            errcode: "M_NOT_FOUND",
            error: error.into(),
        }
    }

    fn into_failure(self) -> Result<upload_signatures::v3::Failure> {
        // ruma keeps the fields private; its serde form is the spec's `{errcode, error}`.
        Ok(serde_json::from_value(
            json!({ "errcode": self.errcode, "error": self.error }),
        )?)
    }
}

type Checked<T> = std::result::Result<T, Rejection>;

/// A signature that passed every check, and what it signs.
struct NewSignature {
    target_user: OwnedUserId,
    target: Target,
    sig: StoredSignature,
}

enum Target {
    Device(OwnedDeviceId),
    Master(String),
}

impl Target {
    fn as_signed_key(&self) -> SignedKey<'_> {
        match self {
            Self::Device(d) => SignedKey::Device(d),
            Self::Master(k) => SignedKey::Master(k),
        }
    }
}

/// The uploader's own keys, loaded once per request.
struct Signer {
    user: OwnedUserId,
    master: Option<ParsedKey>,
    self_signing: Option<ParsedKey>,
    user_signing: Option<ParsedKey>,
    devices: BTreeMap<OwnedDeviceId, Raw<DeviceKeys>>,
}

impl Signer {
    async fn load(hs: &Homeserver, user: &UserId) -> Result<Self> {
        let load = async |usage: KeyUsage| -> Result<Option<ParsedKey>> {
            match e2ee::cross_signing_key(hs, user, &usage).await? {
                Some(raw) => Ok(Some(parse_stored(&raw, user, &usage)?)),
                None => Ok(None),
            }
        };
        // Keys of deleted devices may not vouch for anything.
        let live: BTreeSet<OwnedDeviceId> = users::list_devices(hs, user)
            .await?
            .into_iter()
            .map(|d| d.device_id)
            .collect();
        Ok(Self {
            user: user.to_owned(),
            master: load(KeyUsage::Master).await?,
            self_signing: load(KeyUsage::SelfSigning).await?,
            user_signing: load(KeyUsage::UserSigning).await?,
            devices: e2ee::all_device_keys(hs, user)
                .await?
                .into_iter()
                .filter(|(d, _)| live.contains(d))
                .collect(),
        })
    }
}

/// Whether `sig` is already known for the key: in the object as uploaded with the key, or among
/// the signatures uploaded since.
fn already_known(
    stored_object: &CanonicalJsonObject,
    uploaded: &[StoredSignature],
    signer: &UserId,
    key_id: &str,
    sig: &str,
) -> bool {
    signature_in(stored_object, signer, key_id) == Some(sig)
        || uploaded
            .iter()
            .any(|s| s.signer == signer && s.key_id == key_id && s.signature == sig)
}

/// The signed object must be the stored key plus signatures; anything else is a signature of
/// some other key.
fn check_matches(object: &CanonicalJsonObject, stored: &str, what: &str) -> Checked<String> {
    let text = signed_text(object);
    let stored = signed_content(stored);
    match (text, stored) {
        (Some(a), Some(b)) if a == b => Ok(a),
        _ => Err(Rejection::invalid(format!(
            "the signed object does not match the stored {what}"
        ))),
    }
}

/// A signature of the uploader's master key by one of their devices (or by the master key
/// itself).
async fn sign_own_master(
    hs: &Homeserver,
    signer: &Signer,
    master: &ParsedKey,
    object: &CanonicalJsonObject,
) -> Result<Checked<Vec<NewSignature>>> {
    let text = match check_matches(object, master.raw.json().get(), "master key") {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    let Some(sigs) = signatures_by(object, &signer.user) else {
        return Ok(Err(Rejection::invalid(format!(
            "no signature by {} was sent",
            signer.user
        ))));
    };
    let stored_object = canonical_object(master.raw.json().get()).unwrap_or_default();
    let uploaded = e2ee::signatures_of(hs, &signer.user, SignedKey::Master(&master.public)).await?;
    let mut new = Vec::new();
    for (key_id, sig) in sigs {
        let Some(sig) = sig.as_str() else {
            return Ok(Err(Rejection::invalid(format!(
                "the signature {key_id} is not a string"
            ))));
        };
        if already_known(&stored_object, &uploaded, &signer.user, key_id, sig) {
            continue;
        }
        let public = if *key_id == master.key_id() {
            Some(master.public_bytes.clone())
        } else {
            device_signing_key(signer, key_id)
        };
        let Some(public) = public else {
            return Ok(Err(Rejection::invalid(format!(
                "{key_id} is not a key of any of your devices"
            ))));
        };
        if !verifies(&public, sig, &text) {
            return Ok(Err(Rejection::invalid(format!(
                "the signature by {key_id} is invalid"
            ))));
        }
        new.push(NewSignature {
            target_user: signer.user.clone(),
            target: Target::Master(master.public.clone()),
            sig: StoredSignature {
                signer: signer.user.clone(),
                key_id: key_id.clone(),
                signature: sig.to_owned(),
            },
        });
    }
    Ok(Ok(new))
}

/// The ed25519 key `ed25519:<device id>` of one of the signer's devices, decoded.
fn device_signing_key(signer: &Signer, key_id: &str) -> Option<Vec<u8>> {
    let device = key_id.strip_prefix("ed25519:")?;
    let keys = signer
        .devices
        .get(<&ruma::DeviceId>::from(device))?
        .deserialize()
        .ok()?;
    let public = keys
        .keys
        .iter()
        .find(|(id, _)| id.as_str() == key_id)
        .map(|(_, v)| v)?;
    let bytes = Base64::<ruma::serde::base64::Standard>::parse(public).ok()?;
    Some(bytes.as_bytes().to_vec())
}

/// A signature of one of the uploader's devices by their self-signing key.
async fn sign_own_device(
    hs: &Homeserver,
    signer: &Signer,
    device: &OwnedDeviceId,
    stored: &Raw<DeviceKeys>,
    object: &CanonicalJsonObject,
) -> Result<Checked<Vec<NewSignature>>> {
    let Some(ssk) = &signer.self_signing else {
        return Ok(Err(Rejection::not_found(
            "you have no self-signing key to sign devices with",
        )));
    };
    let text = match check_matches(object, stored.json().get(), "device keys") {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    let key_id = ssk.key_id();
    let Some(sig) = signature_in(object, &signer.user, &key_id) else {
        return Ok(Err(Rejection::invalid(format!(
            "the device keys are not signed by your self-signing key {key_id}"
        ))));
    };
    let stored_object = canonical_object(stored.json().get()).unwrap_or_default();
    let uploaded = e2ee::signatures_of(hs, &signer.user, SignedKey::Device(device)).await?;
    if already_known(&stored_object, &uploaded, &signer.user, &key_id, sig) {
        return Ok(Ok(Vec::new()));
    }
    if !verifies(&ssk.public_bytes, sig, &text) {
        return Ok(Err(Rejection::invalid(format!(
            "the signature by {key_id} is invalid"
        ))));
    }
    Ok(Ok(vec![NewSignature {
        target_user: signer.user.clone(),
        target: Target::Device(device.clone()),
        sig: StoredSignature {
            signer: signer.user.clone(),
            key_id,
            signature: sig.to_owned(),
        },
    }]))
}

/// A signature of another user's master key by the uploader's user-signing key.
async fn sign_other_master(
    hs: &Homeserver,
    signer: &Signer,
    target_user: &UserId,
    key_name: &str,
    object: &CanonicalJsonObject,
) -> Result<Checked<Vec<NewSignature>>> {
    let Some(usk) = &signer.user_signing else {
        return Ok(Err(Rejection::not_found(
            "you have no user-signing key to sign other users with",
        )));
    };
    let Some(raw) = e2ee::cross_signing_key(hs, target_user, &KeyUsage::Master).await? else {
        return Ok(Err(Rejection::not_found(format!(
            "{target_user} has no master key"
        ))));
    };
    let master = parse_stored(&raw, target_user, &KeyUsage::Master)?;
    if master.public != key_name {
        return Ok(Err(Rejection::not_found(format!(
            "{key_name} is not the master key of {target_user}; only master keys of other users \
             can be signed"
        ))));
    }
    let text = match check_matches(object, raw.json().get(), "master key") {
        Ok(t) => t,
        Err(r) => return Ok(Err(r)),
    };
    let key_id = usk.key_id();
    let Some(sig) = signature_in(object, &signer.user, &key_id) else {
        return Ok(Err(Rejection::invalid(format!(
            "the master key is not signed by your user-signing key {key_id}"
        ))));
    };
    let stored_object = canonical_object(raw.json().get()).unwrap_or_default();
    let uploaded = e2ee::signatures_of(hs, target_user, SignedKey::Master(&master.public)).await?;
    if already_known(&stored_object, &uploaded, &signer.user, &key_id, sig) {
        return Ok(Ok(Vec::new()));
    }
    if !verifies(&usk.public_bytes, sig, &text) {
        return Ok(Err(Rejection::invalid(format!(
            "the signature by {key_id} is invalid"
        ))));
    }
    Ok(Ok(vec![NewSignature {
        target_user: target_user.to_owned(),
        target: Target::Master(master.public),
        sig: StoredSignature {
            signer: signer.user.clone(),
            key_id,
            signature: sig.to_owned(),
        },
    }]))
}

async fn check_one(
    hs: &Homeserver,
    signer: &Signer,
    target_user: &UserId,
    key_id: &str,
    object: &CanonicalJsonObject,
) -> Result<Checked<Vec<NewSignature>>> {
    if target_user != signer.user {
        return sign_other_master(hs, signer, target_user, key_id, object).await;
    }
    if let Some(master) = signer.master.as_ref().filter(|m| m.public == key_id) {
        return sign_own_master(hs, signer, master, object).await;
    }
    let device = OwnedDeviceId::from(key_id);
    match signer.devices.get(&device) {
        Some(stored) => sign_own_device(hs, signer, &device, stored, object).await,
        None => Ok(Err(Rejection::not_found(format!(
            "{key_id} is neither your master key nor one of your devices with keys"
        )))),
    }
}

async fn upload_signatures(
    hs: &Homeserver,
    ctx: Ctx,
    req: upload_signatures::v3::Request,
) -> Result<upload_signatures::v3::Response> {
    let user = ctx.user_id()?.clone();
    // Refuse a malformed request as a whole before anything is stored.
    let mut objects = Vec::new();
    for (target_user, keys) in &req.signed_keys {
        for (key_id, json) in keys.iter() {
            let object = canonical_object(json.get()).ok_or_else(|| {
                MatrixError::bad_json(format!(
                    "the signed key {target_user} / {key_id} is not a JSON object"
                ))
            })?;
            objects.push((target_user.clone(), key_id.to_owned(), object));
        }
    }

    let _g = hs.write_lock().await;
    let signer = Signer::load(hs, &user).await?;
    let mut resp = upload_signatures::v3::Response::new();
    let mut accepted = Vec::new();
    for (target_user, key_id, object) in &objects {
        match check_one(hs, &signer, target_user, key_id, object).await? {
            Ok(new) => accepted.extend(new),
            Err(rejection) => {
                resp.failures
                    .entry(target_user.clone())
                    .or_default()
                    .insert(key_id.clone(), rejection.into_failure()?);
            }
        }
    }
    if accepted.is_empty() {
        return Ok(resp);
    }

    let mut batch = Batch::new();
    let pos = hs.alloc_pos();
    let mut own_keys_changed = false;
    let mut others = BTreeSet::new();
    for new in &accepted {
        e2ee::put_signature(
            &mut batch,
            &new.target_user,
            new.target.as_signed_key(),
            &new.sig,
        );
        if new.target_user == user {
            own_keys_changed = true;
        } else {
            others.insert(new.target_user.clone());
        }
    }
    if own_keys_changed {
        e2ee::record_key_change(&mut batch, pos, &user);
    }
    for other in &others {
        e2ee::record_private_key_change(&mut batch, pos, other, &user);
    }
    hs.commit(batch).await?;
    tracing::debug!(%user, count = accepted.len(), pos, "cross-signing signatures stored");
    Ok(resp)
}
