//! Other servers' signing keys: where the key that checks a signature comes from.
//!
//! - A *key-named* server's key is its name: the 64 hex digits decode to the ed25519 public
//!   key, under the key id `ed25519:<first 8 digits>`. Nothing is fetched, nothing trusted on
//!   first use.
//! - A *named* server's keys are fetched from its `/_matrix/key/v2/server`, checked (the
//!   server's own name, its self-signature by the keys it lists) and kept in the
//!   `server_keys` tree and in memory until `valid_until_ts`, or seven days if that is sooner
//!   (the spec's cap). An unknown key id or an expired key causes one refetch; after any fetch
//!   that did not yield the key, the server is not asked again for [`FETCH_COOLDOWN_MS`], so a
//!   peer sending bad signatures cannot make this server fetch once per request.
//!
//! Layout of the `server_keys` tree: server name → [`ServerKeys`] (JSON).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use futures::lock::Mutex;
use ruma::api::federation::discovery::ServerSigningKeys;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, PublicKeySet};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

use super::client;
use crate::Homeserver;
use crate::db::{from_json, to_json};
use crate::error::MatrixError;
use crate::keys::{key_from_name, key_id_for_name};
use crate::storage::Batch;

const TREE: &str = "server_keys";

/// The longest a fetched key is trusted, whatever `valid_until_ts` says (the spec's cap).
pub const MAX_KEY_LIFETIME_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// After a fetch that did not give the key asked for, how long the server is not asked again.
pub const FETCH_COOLDOWN_MS: u64 = 30_000;

/// How long a key fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A named server's keys as last fetched and checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerKeys {
    pub server_name: OwnedServerName,
    /// Key id → unpadded base64 public key: valid for requests and events until
    /// `valid_until`.
    pub verify_keys: BTreeMap<String, String>,
    /// Key id → the key and when it stopped being used: valid for events signed before.
    pub old_verify_keys: BTreeMap<String, OldKey>,
    /// The lesser of the response's `valid_until_ts` and seven days after the fetch.
    pub valid_until: u64,
    pub fetched_at: u64,
    /// The response exactly as the server signed it, for notary answers.
    pub signed: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OldKey {
    pub key: String,
    pub expired_ts: u64,
}

/// Why no key could check a signature.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyLookupError {
    #[error("{server} has no key {key_id}")]
    UnknownKey { server: String, key_id: String },
    #[error("the key {key_id} of {server} has expired")]
    Expired { server: String, key_id: String },
    #[error("the keys of {server} could not be fetched: {reason}")]
    Fetch { server: String, reason: String },
    #[error("the keys of {server} were fetched moments ago; not asking again yet")]
    CoolingDown { server: String },
    #[error("storage failed while looking up keys: {0}")]
    Storage(MatrixError),
}

impl KeyLookupError {
    /// As the answer to a request whose signature this key was to check: `401 M_UNAUTHORIZED`
    /// (a storage failure stays what it is).
    pub fn into_request_error(self) -> MatrixError {
        match self {
            Self::Storage(e) => e,
            other => MatrixError::unauthorized(format!("cannot verify the signature: {other}")),
        }
    }
}

/// The memory side of the key cache, held by [`super::State`].
#[derive(Default)]
pub struct KeyCache {
    known: RefCell<HashMap<OwnedServerName, Rc<ServerKeys>>>,
    /// When each server was last asked for its keys.
    last_fetch: RefCell<HashMap<OwnedServerName, u64>>,
    /// One fetch per server at a time: requests arriving together wait for it.
    locks: RefCell<HashMap<OwnedServerName, Rc<Mutex<()>>>>,
}

impl KeyCache {
    fn known(&self, server: &ServerName) -> Option<Rc<ServerKeys>> {
        self.known.borrow().get(server).cloned()
    }

    fn lock(&self, server: &ServerName) -> Rc<Mutex<()>> {
        self.locks
            .borrow_mut()
            .entry(server.to_owned())
            .or_default()
            .clone()
    }
}

enum Lookup {
    Found(Base64),
    Expired,
    Unknown,
}

fn find(keys: &ServerKeys, key_id: &str, now: u64) -> Lookup {
    match keys.verify_keys.get(key_id) {
        Some(_) if now > keys.valid_until => Lookup::Expired,
        Some(key) => match Base64::parse(key) {
            Ok(k) => Lookup::Found(k),
            Err(_) => Lookup::Unknown,
        },
        None => Lookup::Unknown,
    }
}

/// The public key that checks a request `server` signed with `key_id`, valid now.
pub async fn request_key(
    hs: &Homeserver,
    server: &ServerName,
    key_id: &str,
) -> Result<Base64, KeyLookupError> {
    let unknown = || KeyLookupError::UnknownKey {
        server: server.to_string(),
        key_id: key_id.to_owned(),
    };
    if let Some(public) = key_from_name(server) {
        return if key_id_for_name(server).as_deref() == Some(key_id) {
            Ok(Base64::new(public.to_vec()))
        } else {
            Err(unknown())
        };
    }
    if server == hs.server_name() {
        return if key_id == hs.key.key_id {
            Ok(Base64::new(hs.key.public_key.to_vec()))
        } else {
            Err(unknown())
        };
    }
    let now = hs.now_ms();
    let cache = &hs.federation.keys;
    if let Some(keys) = cache.known(server)
        && let Lookup::Found(k) = find(&keys, key_id, now)
    {
        return Ok(k);
    }
    let lock = cache.lock(server);
    let _one_fetch = lock.lock().await;
    // Whoever held the lock may have fetched what we need, or storage may know it (after a
    // restart memory starts empty).
    let known = match cache.known(server) {
        Some(keys) => Some(keys),
        None => load(hs, server).await?,
    };
    let expired = match known.as_deref().map(|k| find(k, key_id, now)) {
        Some(Lookup::Found(k)) => return Ok(k),
        Some(Lookup::Expired) => true,
        _ => false,
    };
    let keys = refetch(hs, server, now).await?;
    match find(&keys, key_id, now) {
        Lookup::Found(k) => Ok(k),
        Lookup::Expired => Err(KeyLookupError::Expired {
            server: server.to_string(),
            key_id: key_id.to_owned(),
        }),
        Lookup::Unknown if expired => Err(KeyLookupError::Expired {
            server: server.to_string(),
            key_id: key_id.to_owned(),
        }),
        Lookup::Unknown => Err(unknown()),
    }
}

/// A named server's keys as a notary serves them: the cached response, refetched first when it
/// is not valid until `minimum_valid_until` (or the stored copy if the refetch fails, as the
/// spec asks of notaries). `None` if nothing was ever fetched.
pub async fn keys_for_notary(
    hs: &Homeserver,
    server: &ServerName,
    minimum_valid_until: u64,
) -> Result<Option<Rc<ServerKeys>>, KeyLookupError> {
    let cache = &hs.federation.keys;
    let lock = cache.lock(server);
    let _one_fetch = lock.lock().await;
    let known = match cache.known(server) {
        Some(keys) => Some(keys),
        None => load(hs, server).await?,
    };
    if let Some(keys) = &known
        && keys.valid_until >= minimum_valid_until
    {
        return Ok(known);
    }
    match refetch(hs, server, hs.now_ms()).await {
        Ok(keys) => Ok(Some(keys)),
        Err(KeyLookupError::Storage(e)) => Err(KeyLookupError::Storage(e)),
        Err(e) => {
            tracing::debug!(%server, error = %e, "notary: serving the keys last fetched");
            Ok(known)
        }
    }
}

/// The stored keys of `server`, remembered in memory.
async fn load(
    hs: &Homeserver,
    server: &ServerName,
) -> Result<Option<Rc<ServerKeys>>, KeyLookupError> {
    let stored = hs
        .store
        .get(TREE, server.as_bytes())
        .await
        .map_err(|e| KeyLookupError::Storage(e.into()))?;
    let Some(bytes) = stored else {
        return Ok(None);
    };
    let keys: Rc<ServerKeys> = Rc::new(from_json(&bytes).map_err(KeyLookupError::Storage)?);
    hs.federation
        .keys
        .known
        .borrow_mut()
        .insert(server.to_owned(), keys.clone());
    Ok(Some(keys))
}

/// Fetches, checks and stores `server`'s keys, unless it was asked within the cooldown. Call
/// with the server's fetch lock held.
async fn refetch(
    hs: &Homeserver,
    server: &ServerName,
    now: u64,
) -> Result<Rc<ServerKeys>, KeyLookupError> {
    let cache = &hs.federation.keys;
    if let Some(last) = cache.last_fetch.borrow().get(server)
        && now < last.saturating_add(FETCH_COOLDOWN_MS)
    {
        return Err(KeyLookupError::CoolingDown {
            server: server.to_string(),
        });
    }
    cache.last_fetch.borrow_mut().insert(server.to_owned(), now);
    let fetch_error = |reason: String| KeyLookupError::Fetch {
        server: server.to_string(),
        reason,
    };
    let answer = client::server_keys(hs, server, FETCH_TIMEOUT)
        .await
        .map_err(|e| fetch_error(e.to_string()))?;
    let keys =
        check_response(server, answer.server_key.json().get(), hs.now_ms()).map_err(fetch_error)?;
    let mut batch = Batch::new();
    batch.put(
        TREE,
        server.as_bytes().to_vec(),
        to_json(&keys).map_err(KeyLookupError::Storage)?,
    );
    hs.store
        .write(batch)
        .await
        .map_err(|e| KeyLookupError::Storage(e.into()))?;
    let keys = Rc::new(keys);
    cache
        .known
        .borrow_mut()
        .insert(server.to_owned(), keys.clone());
    tracing::info!(%server, keys = ?keys.verify_keys.keys().collect::<Vec<_>>(), valid_until = keys.valid_until, "fetched server keys");
    Ok(keys)
}

/// Checks a `/_matrix/key/v2/server` answer of `server`: its `server_name` is `server`, it
/// lists at least one verify key, and it is signed by `server` with the keys it lists (every
/// such signature must verify, and there must be one). A key-named server's answer must
/// also list the key its name stands for.
pub fn check_response(server: &ServerName, json: &str, now: u64) -> Result<ServerKeys, String> {
    let parsed: ServerSigningKeys =
        serde_json::from_str(json).map_err(|e| format!("not a server key object: {e}"))?;
    if parsed.server_name != server {
        return Err(format!("it describes {}, not {server}", parsed.server_name));
    }
    if parsed.verify_keys.is_empty() {
        return Err("it lists no verify keys".to_owned());
    }
    let listed: PublicKeySet = parsed
        .verify_keys
        .iter()
        .map(|(id, k)| (id.to_string(), k.key.clone()))
        .collect();
    if let Some(public) = key_from_name(server) {
        let id = key_id_for_name(server).unwrap_or_default();
        if listed.get(&id).map(|k| k.as_bytes()) != Some(&public[..]) {
            return Err("a key-named server must list the key its name is".to_owned());
        }
    }
    let mut object: CanonicalJsonObject =
        serde_json::from_str(json).map_err(|e| format!("not canonical JSON: {e}"))?;
    // Only the server's own signatures count here; a notary's would name keys we do not hold.
    let own = match object.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(server.as_str()).cloned(),
        _ => None,
    }
    .ok_or_else(|| "it is not signed by the server".to_owned())?;
    object.insert(
        "signatures".to_owned(),
        CanonicalJsonValue::Object(BTreeMap::from([(server.to_string(), own)])),
    );
    let map: PublicKeyMap = BTreeMap::from([(server.to_string(), listed)]);
    ruma::signatures::verify_json(&map, &object)
        .map_err(|e| format!("its self-signature does not verify: {e}"))?;
    let valid_until_ts = u64::from(parsed.valid_until_ts.get());
    Ok(ServerKeys {
        server_name: server.to_owned(),
        verify_keys: parsed
            .verify_keys
            .iter()
            .map(|(id, k)| (id.to_string(), k.key.encode()))
            .collect(),
        old_verify_keys: parsed
            .old_verify_keys
            .iter()
            .map(|(id, k)| {
                (
                    id.to_string(),
                    OldKey {
                        key: k.key.encode(),
                        expired_ts: u64::from(k.expired_ts.get()),
                    },
                )
            })
            .collect(),
        valid_until: valid_until_ts.min(now.saturating_add(MAX_KEY_LIFETIME_MS)),
        fetched_at: now,
        signed: json.to_owned(),
    })
}
