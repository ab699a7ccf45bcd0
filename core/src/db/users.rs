//! Users, devices and access tokens.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ruma::thirdparty::ThirdPartyIdentifier;
use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{from_json, key, prefix, to_json};
use crate::error::{MatrixError, Result};
use crate::storage::Batch;
use crate::{Homeserver, Session};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct UserRecord {
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub deactivated: bool,
    #[serde(default)]
    pub is_guest: bool,
    #[serde(default)]
    pub displayname: Option<String>,
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// The server's owner: the first account registered (see `client::moderation`).
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub suspended: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: OwnedDeviceId,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub last_seen_ts: Option<u64>,
    #[serde(default)]
    pub last_seen_ip: Option<String>,
    /// The device's current access token, so that deleting the device revokes it.
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The refresh token that the last `/refresh` replaced. The spec keeps it valid until the
    /// client uses the new access or refresh token, so a client that lost the `/refresh`
    /// response can retry with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_refresh_token: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Expiry in ms since the epoch, for tokens issued together with a refresh token.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The previous refresh token of the device, revoked when this access token is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revokes_refresh_token: Option<String>,
}

/// What a refresh token (tree `refresh_tokens`) refreshes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// The credentials handed to a client at login, registration or refresh.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Lifetime of the access token; only tokens that come with a refresh token expire.
    pub expires_in_ms: Option<u64>,
}

pub async fn get_user(hs: &Homeserver, user_id: &UserId) -> Result<Option<UserRecord>> {
    hs.get_json("users", user_id.as_bytes()).await
}

pub fn put_user(batch: &mut Batch, user_id: &UserId, rec: &UserRecord) -> Result<()> {
    batch.put("users", user_id.as_bytes(), to_json(rec)?);
    Ok(())
}

pub async fn get_device(
    hs: &Homeserver,
    user_id: &UserId,
    device_id: &str,
) -> Result<Option<DeviceRecord>> {
    hs.get_json("devices", &key(&[user_id.as_bytes(), device_id.as_bytes()]))
        .await
}

pub fn put_device(batch: &mut Batch, user_id: &UserId, rec: &DeviceRecord) -> Result<()> {
    batch.put(
        "devices",
        key(&[user_id.as_bytes(), rec.device_id.as_bytes()]),
        to_json(rec)?,
    );
    Ok(())
}

pub async fn list_devices(hs: &Homeserver, user_id: &UserId) -> Result<Vec<DeviceRecord>> {
    hs.scan_prefix("devices", &prefix(&[user_id.as_bytes()]))
        .await?
        .iter()
        .map(|(_, v)| from_json(v))
        .collect()
}

pub fn put_token(batch: &mut Batch, token: &str, rec: &TokenRecord) -> Result<()> {
    batch.put("tokens", token.as_bytes(), to_json(rec)?);
    Ok(())
}

/// Removes a device and everything that authenticates as it. The caller removes the device's
/// E2EE keys as well.
pub fn delete_device(hs: &Homeserver, batch: &mut Batch, user_id: &UserId, dev: &DeviceRecord) {
    revoke_tokens(hs, batch, dev);
    batch.delete(
        "devices",
        key(&[user_id.as_bytes(), dev.device_id.as_bytes()]),
    );
}

/// Revokes the device's access token and every refresh token that could mint a new one.
fn revoke_tokens(hs: &Homeserver, batch: &mut Batch, dev: &DeviceRecord) {
    batch.delete("tokens", dev.access_token.as_bytes().to_vec());
    hs.caches.tokens.borrow_mut().remove(&dev.access_token);
    for rt in [&dev.refresh_token, &dev.previous_refresh_token]
        .into_iter()
        .flatten()
    {
        batch.delete("refresh_tokens", rt.as_bytes().to_vec());
    }
}

async fn token_record(hs: &Homeserver, token: &str) -> Result<Option<TokenRecord>> {
    let cached = hs.caches.tokens.borrow().get(token).cloned();
    if cached.is_some() {
        return Ok(cached);
    }
    let rec: Option<TokenRecord> = hs.get_json("tokens", token.as_bytes()).await?;
    if let Some(rec) = &rec {
        hs.caches
            .tokens
            .borrow_mut()
            .insert(token.to_owned(), rec.clone());
    }
    Ok(rec)
}

fn unknown_token() -> MatrixError {
    MatrixError::unknown_token("unknown access token").with("soft_logout", false.into())
}

pub async fn session_for_token(hs: &Homeserver, token: &str) -> Result<Session> {
    let rec = token_record(hs, token).await?.ok_or_else(unknown_token)?;
    if let Some(exp) = rec.expires_at
        && hs.now_ms() >= exp
    {
        return Err(
            MatrixError::unknown_token("access token has expired").with("soft_logout", true.into())
        );
    }
    if let Some(old) = &rec.revokes_refresh_token {
        revoke_replaced_refresh_token(hs, token, old).await?;
    }
    if flags(hs, &rec.user_id).await?.0 {
        return Err(MatrixError::new(
            http::StatusCode::UNAUTHORIZED,
            "M_USER_LOCKED",
            "this account has been locked",
        )
        .with("soft_logout", true.into()));
    }
    Ok(Session {
        user_id: rec.user_id,
        device_id: rec.device_id,
        access_token: token.to_owned(),
    })
}

/// The first use of an access token minted by `/refresh` proves that the client holds the new
/// credentials, so the refresh token they replaced stops working (spec: `POST /refresh`).
async fn revoke_replaced_refresh_token(hs: &Homeserver, token: &str, old: &str) -> Result<()> {
    let _g = hs.write_lock().await;
    // Re-read under the lock: the device may have been deleted or refreshed in the meantime.
    let Some(mut rec) = hs
        .get_json::<TokenRecord>("tokens", token.as_bytes())
        .await?
    else {
        hs.caches.tokens.borrow_mut().remove(token);
        return Err(unknown_token());
    };
    if rec.revokes_refresh_token.as_deref() != Some(old) {
        return Ok(());
    }
    let mut batch = Batch::new();
    batch.delete("refresh_tokens", old.as_bytes().to_vec());
    if let Some(mut dev) = get_device(hs, &rec.user_id, rec.device_id.as_str()).await?
        && dev.previous_refresh_token.as_deref() == Some(old)
    {
        dev.previous_refresh_token = None;
        put_device(&mut batch, &rec.user_id, &dev)?;
    }
    rec.revokes_refresh_token = None;
    put_token(&mut batch, token, &rec)?;
    hs.store.write(batch).await?;
    hs.caches.tokens.borrow_mut().insert(token.to_owned(), rec);
    Ok(())
}

/// Exchanges a refresh token for new credentials (spec: `POST /refresh`). The presented token
/// stays valid until the new access or refresh token is used, so a client that lost this
/// response can try again; any other token is refused with `M_UNKNOWN_TOKEN`.
pub async fn refresh(hs: &Homeserver, refresh_token: &str) -> Result<IssuedTokens> {
    let invalid = || {
        MatrixError::unknown_token("unknown or already used refresh token")
            .with("soft_logout", false.into())
    };
    let _g = hs.write_lock().await;
    let rec: RefreshTokenRecord = hs
        .get_json("refresh_tokens", refresh_token.as_bytes())
        .await?
        .ok_or_else(invalid)?;
    let mut dev = get_device(hs, &rec.user_id, rec.device_id.as_str())
        .await?
        .ok_or_else(invalid)?;
    let mut batch = Batch::new();
    if dev.refresh_token.as_deref() == Some(refresh_token) {
        // The client moved on to this token, so the one it replaced can no longer be wanted.
        if let Some(older) = dev.previous_refresh_token.take() {
            batch.delete("refresh_tokens", older.as_bytes().to_vec());
        }
    } else if dev.previous_refresh_token.as_deref() == Some(refresh_token) {
        // The tokens of the last refresh were never used: the client lost them. Replace them.
        if let Some(unused) = dev.refresh_token.take() {
            batch.delete("refresh_tokens", unused.as_bytes().to_vec());
        }
    } else {
        return Err(invalid());
    }
    batch.delete("tokens", dev.access_token.as_bytes().to_vec());
    hs.caches.tokens.borrow_mut().remove(&dev.access_token);
    dev.previous_refresh_token = Some(refresh_token.to_owned());
    let issued = mint_tokens(
        hs,
        &mut batch,
        &rec.user_id,
        &mut dev,
        true,
        Some(refresh_token.to_owned()),
    )?;
    put_device(&mut batch, &rec.user_id, &dev)?;
    hs.commit(batch).await?;
    Ok(issued)
}

/// Gives `dev` a fresh access token (and a refresh token when the client supports them),
/// revoking everything that authenticated as the device before, and writes the device.
pub fn issue_tokens(
    hs: &Homeserver,
    batch: &mut Batch,
    user_id: &UserId,
    dev: &mut DeviceRecord,
    with_refresh: bool,
) -> Result<IssuedTokens> {
    revoke_tokens(hs, batch, dev);
    dev.previous_refresh_token = None;
    let issued = mint_tokens(hs, batch, user_id, dev, with_refresh, None)?;
    put_device(batch, user_id, dev)?;
    Ok(issued)
}

/// Writes new token records and points `dev` at them; revokes nothing.
fn mint_tokens(
    hs: &Homeserver,
    batch: &mut Batch,
    user_id: &UserId,
    dev: &mut DeviceRecord,
    with_refresh: bool,
    revokes_refresh_token: Option<String>,
) -> Result<IssuedTokens> {
    let access_token = format!("syt_{}", hs.random_string(32));
    // Only tokens that can be refreshed expire; others live until logout.
    let expires_in_ms = if with_refresh {
        hs.config.access_token_lifetime_ms
    } else {
        None
    };
    put_token(
        batch,
        &access_token,
        &TokenRecord {
            user_id: user_id.to_owned(),
            device_id: dev.device_id.clone(),
            expires_at: expires_in_ms.map(|ms| hs.now_ms().saturating_add(ms)),
            revokes_refresh_token,
        },
    )?;
    let refresh_token = if with_refresh {
        let rt = format!("syr_{}", hs.random_string(32));
        let rec = RefreshTokenRecord {
            user_id: user_id.to_owned(),
            device_id: dev.device_id.clone(),
        };
        batch.put("refresh_tokens", rt.as_bytes(), to_json(&rec)?);
        Some(rt)
    } else {
        None
    };
    dev.access_token = access_token.clone();
    dev.refresh_token = refresh_token.clone();
    Ok(IssuedTokens {
        access_token,
        refresh_token,
        expires_in_ms,
    })
}

/// The local user that a login or an `m.id.user` identifier names: a bare localpart or a full
/// user id of this server. Localparts are registered in lowercase, so matching ignores case.
pub fn local_user_id(hs: &Homeserver, name: &str) -> Option<OwnedUserId> {
    let localpart = if name.starts_with('@') {
        let id = UserId::parse(name).ok()?;
        if id.server_name() != hs.server_name() {
            return None;
        }
        id.localpart().to_lowercase()
    } else {
        name.to_lowercase()
    };
    UserId::parse_with_server_name(localpart, hs.server_name()).ok()
}

/// The user's third-party identifiers (tree `threepids`, key `user, medium, address`).
pub async fn list_threepids(
    hs: &Homeserver,
    user_id: &UserId,
) -> Result<Vec<ThirdPartyIdentifier>> {
    hs.scan_prefix("threepids", &prefix(&[user_id.as_bytes()]))
        .await?
        .iter()
        .map(|(_, v)| from_json(v))
        .collect()
}

pub fn hash_password(hs: &Homeserver, password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    hs.world.fill_random(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| MatrixError::unknown(format!("salt: {e}")))?;
    argon2(hs)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MatrixError::unknown(format!("password hashing failed: {e}")))
}

pub fn verify_password(hs: &Homeserver, hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    // The parameters stored in the hash win over the configured ones.
    argon2(hs)
        .map(|a| a.verify_password(password.as_bytes(), &parsed).is_ok())
        .unwrap_or(false)
}

fn argon2(hs: &Homeserver) -> Result<Argon2<'static>> {
    let params = Params::new(hs.config.password_hash_memory_kib.max(8), 2, 1, None)
        .map_err(|e| MatrixError::unknown(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A device id that `user_id` does not use yet.
pub async fn fresh_device_id(hs: &Homeserver, user_id: &UserId) -> Result<OwnedDeviceId> {
    for _ in 0..8 {
        let id = OwnedDeviceId::from(hs.random_string(10).to_uppercase());
        if get_device(hs, user_id, id.as_str()).await?.is_none() {
            return Ok(id);
        }
    }
    Err(MatrixError::unknown("could not find a free device id"))
}

/// A fresh device with fresh credentials, written into `batch`.
pub fn new_device(
    hs: &Homeserver,
    batch: &mut Batch,
    user_id: &UserId,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<String>,
    with_refresh: bool,
) -> Result<(DeviceRecord, IssuedTokens)> {
    let device_id =
        device_id.unwrap_or_else(|| OwnedDeviceId::from(hs.random_string(10).to_uppercase()));
    let mut dev = DeviceRecord {
        device_id,
        display_name,
        last_seen_ts: Some(hs.now_ms()),
        last_seen_ip: None,
        access_token: String::new(),
        refresh_token: None,
        previous_refresh_token: None,
    };
    let issued = mint_tokens(hs, batch, user_id, &mut dev, with_refresh, None)?;
    put_device(batch, user_id, &dev)?;
    Ok((dev, issued))
}

/// `(locked, suspended)` for a local user, cached: checked on every authenticated request.
pub async fn flags(hs: &Homeserver, user: &UserId) -> Result<(bool, bool)> {
    if let Some(f) = hs.caches.user_flags.borrow().get(user) {
        return Ok(*f);
    }
    let f = get_user(hs, user)
        .await?
        .map(|r| (r.locked, r.suspended))
        .unwrap_or((false, false));
    hs.caches.user_flags.borrow_mut().insert(user.to_owned(), f);
    Ok(f)
}

pub fn suspended_error() -> MatrixError {
    MatrixError::new(
        http::StatusCode::FORBIDDEN,
        "M_USER_SUSPENDED",
        "this account is suspended",
    )
}
