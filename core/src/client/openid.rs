//! OpenID tokens: `POST /user/{userId}/openid/request_token`.
//!
//! The token proves the user's identity to a third party, which checks it through the
//! federation endpoint `GET /_matrix/federation/v1/openid/userinfo` ([`user_for_token`]). It is
//! not an access token: it lives in its own tree and authenticates nothing else.
//!
//! Layout of the `openid` tree:
//! - `t` · token → [`OpenIdToken`]
//! - `e` · expiry (big-endian ms) · token → empty, so that expired tokens are swept in order
//!   without reading the whole tree.

use std::ops::Bound;
use std::time::Duration;

use ruma::OwnedUserId;
use ruma::api::client::account::request_openid_token;
use ruma::authentication::TokenType;
use serde::{Deserialize, Serialize};

use crate::db::{from_json, key, pos_bytes, prefix, to_json, users};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::{Batch, Direction, KeyRange};
use crate::{Ctx, Homeserver, route};

const TREE: &str = "openid";

/// How long a token stays valid. Third parties exchange it right away.
pub const TOKEN_LIFETIME_MS: u64 = 60 * 60 * 1000;

/// Most expired tokens removed by one request, so that the sweep stays cheap.
const SWEEP_LIMIT: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenIdToken {
    pub user_id: OwnedUserId,
    pub expires_at: u64,
}

pub fn routes(r: &mut Router) {
    route!(r, request_openid_token::v3::Request, request_token);
}

fn token_key(token: &str) -> Vec<u8> {
    key(&[b"t", token.as_bytes()])
}

fn expiry_key(expires_at: u64, token: &str) -> Vec<u8> {
    key(&[b"e", &pos_bytes(expires_at), token.as_bytes()])
}

async fn request_token(
    hs: &Homeserver,
    ctx: Ctx,
    req: request_openid_token::v3::Request,
) -> Result<request_openid_token::v3::Response> {
    let user = ctx.user_id()?;
    if req.user_id != *user {
        return Err(MatrixError::forbidden(
            "you may only request OpenID tokens for yourself",
        ));
    }
    let now = hs.now_ms();
    let token = hs.random_string(32);
    let expires_at = now.saturating_add(TOKEN_LIFETIME_MS);
    let mut batch = Batch::new();
    sweep_expired(hs, &mut batch, now).await?;
    batch.put(
        TREE,
        token_key(&token),
        to_json(&OpenIdToken {
            user_id: user.clone(),
            expires_at,
        })?,
    );
    batch.put(TREE, expiry_key(expires_at, &token), Vec::new());
    hs.store.write(batch).await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        TokenType::Bearer,
        hs.owned_server_name(),
        Duration::from_millis(TOKEN_LIFETIME_MS),
    ))
}

/// Adds the removal of tokens that expired by `now` to `batch`.
async fn sweep_expired(hs: &Homeserver, batch: &mut Batch, now: u64) -> Result<()> {
    let start = prefix(&[b"e"]);
    let end = key(&[b"e", &pos_bytes(now.saturating_add(1))]);
    let range = KeyRange::new(Bound::Included(start.clone()), Bound::Excluded(end));
    for (k, _) in hs
        .store
        .scan(TREE, range, Direction::Forward, SWEEP_LIMIT)
        .await?
    {
        // `e` · 8-byte expiry · separator · token
        if let Some(token) = k.get(start.len() + 9..) {
            batch.delete(TREE, token_key(&String::from_utf8_lossy(token)));
        }
        batch.delete(TREE, k);
    }
    Ok(())
}

/// The user an OpenID token was issued to, for the federation `openid/userinfo` endpoint.
/// Unknown and expired tokens, and tokens of accounts deactivated since, are
/// `401 M_UNKNOWN_TOKEN`.
pub async fn user_for_token(hs: &Homeserver, token: &str) -> Result<OwnedUserId> {
    let unknown = || MatrixError::unknown_token("unknown or expired OpenID token");
    let rec: OpenIdToken = match hs.store.get(TREE, &token_key(token)).await? {
        Some(v) => from_json(&v)?,
        None => return Err(unknown()),
    };
    if hs.now_ms() >= rec.expires_at {
        return Err(unknown());
    }
    let active = users::get_user(hs, &rec.user_id)
        .await?
        .is_some_and(|u| !u.deactivated);
    if !active {
        return Err(unknown());
    }
    Ok(rec.user_id)
}
