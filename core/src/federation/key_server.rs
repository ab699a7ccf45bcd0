//! The key server: `GET /_matrix/key/v2/server` (this server's own keys, served by key-named
//! and named servers alike) and the notary endpoints `GET /_matrix/key/v2/query/{serverName}`
//! and `POST /_matrix/key/v2/query`, which answer with other servers' keys as they signed
//! them, countersigned by this server.

use ruma::api::federation::discovery::{
    ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
};
use ruma::serde::Base64;
use ruma::serde::Raw;
use ruma::{CanonicalJsonObject, ServerName};

use super::server_keys;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

/// How long peers may keep this server's key response. Synapse's default; the key id changes
/// with the key, so a long cache cannot outlive a key change unnoticed.
pub const KEY_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;

/// Most servers one batch notary query is answered for.
const MAX_NOTARY_SERVERS: usize = 50;

pub fn routes(r: &mut Router) {
    route!(r, get_server_keys::v2::Request, own_keys);
    route!(r, get_remote_server_keys::v2::Request, query_one);
    route!(r, get_remote_server_keys_batch::v2::Request, query_batch);
}

/// This server's key response, self-signed, valid for [`KEY_VALIDITY_MS`] from now.
pub fn own_key_object(hs: &Homeserver) -> Result<CanonicalJsonObject> {
    let name = hs.server_name().as_str();
    let key: Base64 = Base64::new(hs.key.public_key.to_vec());
    let key = key.encode();
    let valid_until = hs.now_ms().saturating_add(KEY_VALIDITY_MS);
    let value = serde_json::json!({
        "server_name": name,
        "verify_keys": { hs.key.key_id.as_str(): { "key": key } },
        "old_verify_keys": {},
        "valid_until_ts": valid_until,
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(value)?;
    ruma::signatures::sign_json(name, &hs.key.pair, &mut object)
        .map_err(|e| MatrixError::unknown(format!("cannot sign the key response: {e}")))?;
    Ok(object)
}

fn to_raw(object: &CanonicalJsonObject) -> Result<Raw<ServerSigningKeys>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(object)?))
}

async fn own_keys(
    hs: &Homeserver,
    _ctx: Ctx,
    _req: get_server_keys::v2::Request,
) -> Result<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(to_raw(
        &own_key_object(hs)?,
    )?))
}

/// `server`'s keys as a notary answers with them: its own signed response plus this server's
/// signature, or nothing when they cannot be had.
async fn notarised(
    hs: &Homeserver,
    server: &ServerName,
    minimum_valid_until: u64,
) -> Result<Option<Raw<ServerSigningKeys>>> {
    if server == hs.server_name() {
        return Ok(Some(to_raw(&own_key_object(hs)?)?));
    }
    let keys = match server_keys::keys_for_notary(hs, server, minimum_valid_until).await {
        Ok(Some(keys)) => keys,
        Ok(None) => return Ok(None),
        Err(server_keys::KeyLookupError::Storage(e)) => return Err(e),
        Err(_) => return Ok(None),
    };
    let mut object: CanonicalJsonObject = serde_json::from_str(&keys.signed)
        .map_err(|e| MatrixError::unknown(format!("stored key response is corrupt: {e}")))?;
    ruma::signatures::sign_json(hs.server_name().as_str(), &hs.key.pair, &mut object)
        .map_err(|e| MatrixError::unknown(format!("cannot countersign: {e}")))?;
    // `sign_json` adds to the signatures present: the origin's own stays next to ours.
    Ok(Some(to_raw(&object)?))
}

async fn query_one(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_remote_server_keys::v2::Request,
) -> Result<get_remote_server_keys::v2::Response> {
    let minimum = u64::from(req.minimum_valid_until_ts.get()).max(hs.now_ms());
    let found = notarised(hs, &req.server_name, minimum).await?;
    Ok(get_remote_server_keys::v2::Response::new(
        found.into_iter().collect(),
    ))
}

async fn query_batch(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_remote_server_keys_batch::v2::Request,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    if req.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(MatrixError::invalid_param(format!(
            "at most {MAX_NOTARY_SERVERS} servers per query"
        )));
    }
    let now = hs.now_ms();
    let mut out = Vec::new();
    for (server, criteria) in &req.server_keys {
        // The strictest criterion of the key ids asked for; any key of the server is returned.
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .map(|t| u64::from(t.get()))
            .max()
            .unwrap_or(now)
            .max(now);
        if let Some(raw) = notarised(hs, server, minimum).await? {
            out.push(raw);
        }
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(out))
}
