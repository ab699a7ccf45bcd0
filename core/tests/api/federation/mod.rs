//! The Server-Server API: request authentication, peers' keys, the read-only endpoints, the
//! client API asking other servers, and the in-process network's hooks. Servers talk through
//! `testing::network`; requests made by hand are signed with `federation::auth::sign_request`
//! and handed to `Homeserver::handle`.

mod auth;
mod endpoints;
mod identity;
mod network;
mod outbound;
mod rooms;
mod server_keys;
#[cfg(not(target_arch = "wasm32"))]
mod spec_schemas;

use hearth_core::Homeserver;
use hearth_core::federation::auth::sign_request;
use hearth_core::testing::TestResponse;
use http::{Method, Request, Response};
use ruma::ServerName;
use serde_json::Value;

/// A request for `to`'s federation API, unsigned.
pub fn request(method: Method, path: &str, body: Option<&Value>) -> Request<Vec<u8>> {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// A request from `from` to `to`, X-Matrix signed by `from`.
pub fn signed(
    from: &Homeserver,
    to: &ServerName,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Request<Vec<u8>> {
    let mut req = request(method, path, body);
    sign_request(from, to, &mut req).unwrap();
    req
}

pub fn decode(resp: Response<Vec<u8>>) -> TestResponse {
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = resp.into_body();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    TestResponse {
        status,
        body,
        raw,
        headers,
    }
}

/// Hands `req` to `hs` and decodes the answer.
pub async fn call(hs: &Homeserver, req: Request<Vec<u8>>) -> TestResponse {
    decode(hs.handle(req).await)
}

pub fn enc(s: &str) -> String {
    hearth_core::testing::enc(s)
}
