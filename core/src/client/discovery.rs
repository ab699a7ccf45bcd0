//! Server discovery and capabilities: `/versions`, `/.well-known/matrix/client`.

use std::collections::BTreeMap;
use std::rc::Rc;

use http::{Method, StatusCode};
use ruma::api::client::discovery::get_supported_versions;
use serde_json::json;

use crate::error::Result;
use crate::router::{Router, json_response};
use crate::{Ctx, Homeserver, route};

/// The spec versions whose Client-Server API this server speaks.
pub const SPEC_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
    "v1.9", "v1.10", "v1.11", "v1.12",
];

pub fn routes(r: &mut Router) {
    route!(r, get_supported_versions::Request, versions);
    r.add_raw(
        Method::GET,
        "/.well-known/matrix/client",
        Rc::new(|hs: Homeserver, req, _| {
            Box::pin(async move {
                // Same origin: the client already talks to us, so the base URL is our own.
                // The browser host passes absolute URLs (scheme and authority included); plain
                // HTTP hosts send a Host header.
                let base = match (req.uri().scheme_str(), req.uri().authority()) {
                    (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                    _ => req
                        .headers()
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(|h| format!("http://{h}"))
                        .unwrap_or_else(|| format!("https://{}", hs.server_name())),
                };
                json_response(
                    StatusCode::OK,
                    &json!({ "m.homeserver": { "base_url": base } }),
                )
            })
        }),
    );
}

async fn versions(
    _hs: &Homeserver,
    _ctx: Ctx,
    _req: get_supported_versions::Request,
) -> Result<get_supported_versions::Response> {
    let mut resp = get_supported_versions::Response::new(
        SPEC_VERSIONS.iter().map(|v| v.to_string()).collect(),
    );
    resp.unstable_features = BTreeMap::from([
        ("org.matrix.msc2285.stable".to_owned(), true),
        ("org.matrix.msc3440.stable".to_owned(), true),
        ("org.matrix.msc3827.stable".to_owned(), true),
        // Mutual rooms (MSC2666), served at its unstable and v1 paths.
        ("uk.half-shot.msc2666.query_mutual_rooms".to_owned(), true),
        (
            "uk.half-shot.msc2666.query_mutual_rooms.stable".to_owned(),
            true,
        ),
    ]);
    Ok(resp)
}
