//! Authenticated media for other servers: `GET /_matrix/federation/v1/media/download/{mediaId}`
//! and `/thumbnail/{mediaId}`, answered as `multipart/mixed` (ruma writes the parts). Only this
//! server's own media is served; what it fetched from others is not passed on.

use ruma::api::federation::authenticated_media::{
    Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
};

use crate::client::media::{download_for_federation, thumbnail_for_federation};
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_content::v1::Request, download);
    route!(r, get_content_thumbnail::v1::Request, thumbnail);
}

async fn download(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_content::v1::Request,
) -> Result<get_content::v1::Response> {
    let (file, content_type, disposition) =
        download_for_federation(hs, &req.media_id, req.timeout_ms).await?;
    Ok(get_content::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(Content::new(file, content_type, disposition)),
    ))
}

async fn thumbnail(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_content_thumbnail::v1::Request,
) -> Result<get_content_thumbnail::v1::Response> {
    let (file, content_type, disposition) = thumbnail_for_federation(
        hs,
        &req.media_id,
        req.width,
        req.height,
        req.method,
        req.animated,
        req.timeout_ms,
    )
    .await?;
    Ok(get_content_thumbnail::v1::Response::new(
        ContentMetadata::new(),
        FileOrLocation::File(Content::new(file, content_type, disposition)),
    ))
}
