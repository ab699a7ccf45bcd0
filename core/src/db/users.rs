//! Users, devices and access tokens.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    /// Expiry in ms since the epoch, for tokens issued together with a refresh token.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

pub async fn get_user(hs: &Homeserver, user_id: &UserId) -> Result<Option<UserRecord>> {
    hs.get_json("users", user_id.as_bytes()).await
}

pub fn put_user(batch: &mut Batch, user_id: &UserId, rec: &UserRecord) -> Result<()> {
    batch.put("users", user_id.as_bytes(), to_json(rec)?);
    Ok(())
}

pub async fn get_device(hs: &Homeserver, user_id: &UserId, device_id: &str) -> Result<Option<DeviceRecord>> {
    hs.get_json("devices", &key(&[user_id.as_bytes(), device_id.as_bytes()])).await
}

pub fn put_device(batch: &mut Batch, user_id: &UserId, rec: &DeviceRecord) -> Result<()> {
    batch.put("devices", key(&[user_id.as_bytes(), rec.device_id.as_bytes()]), to_json(rec)?);
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
    batch.delete("tokens", dev.access_token.as_bytes().to_vec());
    hs.caches.tokens.borrow_mut().remove(&dev.access_token);
    if let Some(rt) = &dev.refresh_token {
        batch.delete("refresh_tokens", rt.as_bytes().to_vec());
    }
    batch.delete("devices", key(&[user_id.as_bytes(), dev.device_id.as_bytes()]));
}

pub async fn session_for_token(hs: &Homeserver, token: &str) -> Result<Session> {
    let cached = hs.caches.tokens.borrow().get(token).cloned();
    let rec = match cached {
        Some(r) => r,
        None => {
            let rec: TokenRecord = hs
                .get_json("tokens", token.as_bytes())
                .await?
                .ok_or_else(|| MatrixError::unknown_token("unknown access token").with("soft_logout", false.into()))?;
            hs.caches.tokens.borrow_mut().insert(token.to_owned(), rec.clone());
            rec
        }
    };
    if let Some(exp) = rec.expires_at {
        if hs.now_ms() >= exp {
            return Err(MatrixError::unknown_token("access token has expired").with("soft_logout", true.into()));
        }
    }
    Ok(Session { user_id: rec.user_id, device_id: rec.device_id, access_token: token.to_owned() })
}

pub fn hash_password(hs: &Homeserver, password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    hs.world.fill_random(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| MatrixError::unknown(format!("salt: {e}")))?;
    argon2(hs)?
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| MatrixError::unknown(format!("password hashing failed: {e}")))
}

pub fn verify_password(hs: &Homeserver, hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else { return false };
    // The parameters stored in the hash win over the configured ones.
    argon2(hs).map(|a| a.verify_password(password.as_bytes(), &parsed).is_ok()).unwrap_or(false)
}

fn argon2(hs: &Homeserver) -> Result<Argon2<'static>> {
    let params = Params::new(hs.config.password_hash_memory_kib.max(8), 2, 1, None)
        .map_err(|e| MatrixError::unknown(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// A fresh device with a fresh access token, written into `batch`.
pub fn new_device(
    hs: &Homeserver,
    batch: &mut Batch,
    user_id: &UserId,
    device_id: Option<OwnedDeviceId>,
    display_name: Option<String>,
    expires: bool,
) -> Result<(DeviceRecord, Option<u64>)> {
    let device_id = device_id.unwrap_or_else(|| OwnedDeviceId::from(hs.random_string(10).to_uppercase()));
    let access_token = format!("syt_{}", hs.random_string(32));
    let expires_in = if expires { hs.config.access_token_lifetime_ms } else { None };
    let rec = DeviceRecord {
        device_id: device_id.clone(),
        display_name,
        last_seen_ts: Some(hs.now_ms()),
        last_seen_ip: None,
        access_token: access_token.clone(),
        refresh_token: None,
    };
    put_device(batch, user_id, &rec)?;
    put_token(
        batch,
        &access_token,
        &TokenRecord {
            user_id: user_id.to_owned(),
            device_id,
            expires_at: expires_in.map(|ms| hs.now_ms() + ms),
        },
    )?;
    Ok((rec, expires_in))
}
