//! URL previews: `GET /_matrix/client/v1/media/preview_url` and the deprecated
//! `GET /_matrix/media/v3/preview_url`.
//!
//! Decision: this server declines to preview. The core makes no outbound HTTP requests (in
//! the browser it could fetch only CORS-enabled pages, and fetching arbitrary URLs on behalf of
//! users is a privacy and SSRF hazard besides), so it has nothing to build a preview from.
//!
//! How it declines: the spec documents no error for this endpoint (only `429`), and describes
//! the `200` body as "the OpenGraph data for the URL, which may be empty". So a valid request
//! is answered `200 {}` — no preview data — which clients render as "no preview", quietly and
//! without retrying. A request whose `url` is not an absolute `http(s)` URL is
//! `400 M_INVALID_PARAM`, as it would be on a server that previews.

use ruma::api::client::authenticated_media::get_media_preview as preview_v1;
#[allow(deprecated)]
use ruma::api::client::media::get_media_preview as preview_v3;
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};

use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, preview_v1::v1::Request, preview);
    #[allow(deprecated)]
    {
        route!(r, preview_v3::v3::Request, preview_deprecated);
    }
}

/// The (empty) OpenGraph data for `url`, once `url` is checked.
fn decline(url: &str) -> Result<Box<RawValue>> {
    let parsed = url::Url::parse(url)
        .map_err(|e| MatrixError::invalid_param(format!("url is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(MatrixError::invalid_param(
            "only http and https URLs can be previewed",
        ));
    }
    Ok(to_raw_value(&json!({}))?)
}

async fn preview(
    _hs: &Homeserver,
    ctx: Ctx,
    req: preview_v1::v1::Request,
) -> Result<preview_v1::v1::Response> {
    ctx.user_id()?;
    Ok(preview_v1::v1::Response::from_raw_value(decline(&req.url)?))
}

#[allow(deprecated)]
async fn preview_deprecated(
    _hs: &Homeserver,
    ctx: Ctx,
    req: preview_v3::v3::Request,
) -> Result<preview_v3::v3::Response> {
    ctx.user_id()?;
    Ok(preview_v3::v3::Response::from_raw_value(decline(&req.url)?))
}
