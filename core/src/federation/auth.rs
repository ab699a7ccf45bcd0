//! Request authentication between servers: the `Authorization: X-Matrix` header.
//!
//! Every request this server sends is signed ([`sign_request`]; ruma's request types do it
//! for [`super::client`]). Every request to an endpoint whose ruma metadata says
//! `ServerSignatures` is checked before its body is parsed or its handler runs
//! ([`authenticate`]): the header parses, its `destination` (when present; the spec has
//! receivers accept its absence from servers older than v1.3) is this server, and the
//! origin's key ([`super::server_keys`]) verifies the signature over method, URI, origin,
//! destination and body. Any failure is `401 M_UNAUTHORIZED` and nothing else happens.

use http::Request;
use ruma::api::federation::authentication::{XMatrix, XMatrixSigningInput};
use ruma::signatures::PublicKeyMap;
use ruma::{OwnedServerName, ServerName};

use super::server_keys;
use crate::Homeserver;
use crate::error::{MatrixError, Result};

/// Checks the X-Matrix signature of `req` and returns the server that made it.
pub async fn authenticate<B: AsRef<[u8]>>(
    hs: &Homeserver,
    req: &Request<B>,
) -> Result<OwnedServerName> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| MatrixError::unauthorized("missing X-Matrix Authorization header"))?;
    let credentials = XMatrix::try_from(header).map_err(|e| {
        MatrixError::unauthorized(format!("invalid X-Matrix Authorization header: {e}"))
    })?;
    if let Some(destination) = &credentials.destination
        && destination != hs.server_name()
    {
        return Err(MatrixError::unauthorized(format!(
            "this request is for {destination}, and this server is {}",
            hs.server_name()
        )));
    }
    if req.uri().path_and_query().is_none() {
        return Err(MatrixError::unauthorized(
            "the request has no path to verify",
        ));
    }
    let body = req.body().as_ref();
    // The signature covers the body as JSON: a body that is not JSON cannot have been signed,
    // and is refused the way any endpoint refuses it.
    if !body.is_empty() && serde_json::from_slice::<serde_json::Value>(body).is_err() {
        return Err(MatrixError::not_json("request body is not valid JSON"));
    }
    let origin = credentials.origin.clone();
    let key = server_keys::request_key(hs, &origin, credentials.key.as_str())
        .await
        .map_err(server_keys::KeyLookupError::into_request_error)?;
    let keys: PublicKeyMap = [(
        origin.to_string(),
        [(credentials.key.to_string(), key)].into_iter().collect(),
    )]
    .into_iter()
    .collect();
    credentials
        .verify_http_request(req, hs.server_name(), &keys)
        .map_err(|e| {
            tracing::info!(%origin, error = %e, path = req.uri().path(), "refused a federation request");
            MatrixError::unauthorized(format!("invalid X-Matrix signature: {e}"))
        })?;
    Ok(origin)
}

/// Signs `req` as this server for `destination`, setting its `Authorization` header. For
/// requests built by hand; ruma's request types sign themselves (see [`super::client`]).
pub fn sign_request(
    hs: &Homeserver,
    destination: &ServerName,
    req: &mut Request<Vec<u8>>,
) -> Result<()> {
    let input =
        XMatrixSigningInput::new(hs.owned_server_name(), destination.to_owned(), &hs.key.pair);
    let credentials = XMatrix::sign_http_request(req, input)
        .map_err(|e| MatrixError::unknown(format!("cannot sign the request: {e}")))?;
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from(&credentials),
    );
    Ok(())
}
