//! The content repository: uploads (direct and via a reserved `mxc://` URI), downloads,
//! thumbnails and configuration, under both `/_matrix/media/v3/...` (unauthenticated, deprecated
//! in v1.11) and `/_matrix/client/v1/media/...` (authenticated media).

use std::rc::Rc;
use std::time::Duration;

use http::HeaderValue;
use ruma::api::client::authenticated_media as authed;
use ruma::api::client::media::{
    create_content, create_content_async, create_mxc_uri, get_content, get_content_as_filename,
    get_content_thumbnail, get_media_config, is_safe_inline_content_type,
};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, Metadata};
use ruma::http_headers::{ContentDisposition, ContentDispositionType};
use ruma::{MilliSecondsSinceUnixEpoch, OwnedMxcUri, ServerName, UInt, UserId};

use crate::db::media::{self as store, MediaRecord, Thumbnail};
use crate::error::{MatrixError, Result};
use crate::router::{BodyKind, Handler, Lookup, Router, auth_of, json_response, request_error};
use crate::storage::Batch;
use crate::thumbnail;
use crate::{Ctx, Homeserver};

/// How long an `mxc://` URI reserved with `/media/v1/create` waits for its content (the spec's
/// recommended 24 hours).
const PENDING_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;
/// Reserved-but-unused URIs one user may hold at once.
const MAX_PENDING_PER_USER: usize = 10;
/// Longest a download waits for content that has not been uploaded yet, whatever `timeout_ms` says.
const MAX_DOWNLOAD_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting download looks again.
const PENDING_POLL: Duration = Duration::from_millis(200);
/// Largest undecodable image served as its own thumbnail.
const MAX_ORIGINAL_AS_THUMBNAIL: u64 = 1024 * 1024;
/// Served with every media response: uploaded content must never run script on this origin,
/// which is also the origin of the homeserver and its client.
const CONTENT_SECURITY_POLICY: &str = concat!(
    "sandbox; default-src 'none'; script-src 'none'; ",
    "style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
);

/// Registers a media endpoint like `route!` does, and adds the media security headers to every
/// response it gives (errors included).
macro_rules! media_route {
    ($router:expr, $req:ty, $handler:path) => {
        media_route!($router, $req, $handler, BodyKind::JsonObject)
    };
    ($router:expr, $req:ty, $handler:path, $body:expr) => {{
        let mut staging = Router::default();
        $crate::route!(staging, $req, $handler);
        add_with_media_headers::<$req>($router, &staging, $body);
    }};
}

/// Moves the endpoint `R` from `staging` (where `route!` built its parsing, authentication and
/// serialisation) into `r`, wrapped so its responses carry the media headers.
fn add_with_media_headers<R: IncomingRequest + 'static>(
    r: &mut Router,
    staging: &Router,
    body: BodyKind,
) {
    for path in R::PATH_BUILDER.all_paths() {
        let Lookup::Found(inner, _, _) = staging.lookup(&R::METHOD, path) else {
            tracing::error!(path, "media route missing from its staging router");
            continue;
        };
        r.add_raw_with(R::METHOD, path, body, with_media_headers(inner.clone()));
    }
}

fn with_media_headers(inner: Handler) -> Handler {
    Rc::new(move |hs, req, args| {
        let fut = inner(hs, req, args);
        Box::pin(async move {
            let mut resp = fut.await;
            let h = resp.headers_mut();
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            );
            h.insert(
                "cross-origin-resource-policy",
                HeaderValue::from_static("cross-origin"),
            );
            h.insert(
                "x-content-type-options",
                HeaderValue::from_static("nosniff"),
            );
            resp
        })
    })
}

#[allow(deprecated)]
pub fn routes(r: &mut Router) {
    // The spec's only request bodies that are not JSON: uploads are the file's bytes.
    media_route!(r, create_content::v3::Request, upload, BodyKind::Bytes);
    media_route!(r, create_mxc_uri::v1::Request, create);
    for path in create_content_async::v3::Request::PATH_BUILDER.all_paths() {
        r.add_raw_with(
            http::Method::PUT,
            path,
            BodyKind::Bytes,
            with_media_headers(upload_to_reserved_route()),
        );
    }
    media_route!(r, get_media_config::v3::Request, config_v3);
    media_route!(r, get_content::v3::Request, download_v3);
    media_route!(r, get_content_as_filename::v3::Request, download_as_v3);
    media_route!(r, get_content_thumbnail::v3::Request, thumbnail_v3);
    media_route!(r, authed::get_media_config::v1::Request, config_v1);
    media_route!(r, authed::get_content::v1::Request, download_v1);
    media_route!(
        r,
        authed::get_content_as_filename::v1::Request,
        download_as_v1
    );
    media_route!(r, authed::get_content_thumbnail::v1::Request, thumbnail_v1);
}

// ---------------------------------------------------------------------------------------------
// Uploads

fn upload_limit(hs: &Homeserver) -> usize {
    hs.config.max_body_bytes
}

fn check_size(hs: &Homeserver, len: usize) -> Result<()> {
    if len > upload_limit(hs) {
        return Err(MatrixError::too_large(format!(
            "cannot upload files larger than {} bytes",
            upload_limit(hs)
        )));
    }
    Ok(())
}

fn mxc(server: &ServerName, media_id: &str) -> OwnedMxcUri {
    OwnedMxcUri::from(format!("mxc://{server}/{media_id}"))
}

/// Media ids this server hands out are `[A-Za-z0-9_-]`; anything else cannot exist here (and
/// must not reach storage keys, which use NUL as a separator).
fn valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 255
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn new_record(
    uploader: &UserId,
    now: u64,
    content_type: Option<String>,
    filename: Option<String>,
) -> MediaRecord {
    MediaRecord {
        uploader: uploader.to_owned(),
        created_ts: now,
        content_type,
        filename,
        size: 0,
        chunks: 0,
        pending_until: None,
    }
}

fn write_content(
    batch: &mut Batch,
    server: &ServerName,
    media_id: &str,
    rec: &mut MediaRecord,
    file: &[u8],
) -> Result<()> {
    rec.chunks = store::put_content(batch, server, media_id, file)?;
    rec.size = file.len() as u64;
    rec.pending_until = None;
    store::put_record(batch, server, media_id, rec)
}

async fn upload(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_content::v3::Request,
) -> Result<create_content::v3::Response> {
    let user = ctx.user_id()?;
    check_size(hs, req.file.len())?;
    let media_id = hs.random_string(24);
    let server = hs.server_name();
    let mut rec = new_record(user, hs.now_ms(), req.content_type, req.filename);
    let mut batch = Batch::new();
    write_content(&mut batch, server, &media_id, &mut rec, &req.file)?;
    hs.store.write(batch).await?;
    tracing::debug!(%user, media_id, size = rec.size, "media uploaded");
    Ok(create_content::v3::Response::new(mxc(server, &media_id)))
}

async fn create(
    hs: &Homeserver,
    ctx: Ctx,
    _req: create_mxc_uri::v1::Request,
) -> Result<create_mxc_uri::v1::Response> {
    let user = ctx.user_id()?;
    let now = hs.now_ms();
    let server = hs.server_name();
    // Count and reserve under the lock, so concurrent requests cannot overshoot the limit.
    let _guard = hs.write_lock().await;
    let mut batch = Batch::new();
    let user_prefix_len = crate::db::prefix(&[user.as_bytes()]).len();
    let mut live = 0;
    for (k, expires_at) in store::pending_for_user(hs, user).await? {
        if expires_at > now {
            live += 1;
            continue;
        }
        // A lapsed reservation: forget it and the empty record behind it.
        if let Some(media_id) = k
            .get(user_prefix_len..)
            .and_then(|m| std::str::from_utf8(m).ok())
        {
            store::delete_record(&mut batch, server, media_id);
        }
        batch.delete("media_pending", k);
    }
    if live >= MAX_PENDING_PER_USER {
        if !batch.is_empty() {
            hs.store.write(batch).await?;
        }
        return Err(MatrixError::limit_exceeded(format!(
            "at most {MAX_PENDING_PER_USER} media uploads may be pending at once"
        ))
        .with("retry_after_ms", serde_json::json!(60_000)));
    }
    let media_id = hs.random_string(24);
    let expires_at = now + PENDING_LIFETIME_MS;
    let mut rec = new_record(user, now, None, None);
    rec.pending_until = Some(expires_at);
    store::put_record(&mut batch, server, &media_id, &rec)?;
    store::put_pending(&mut batch, user, &media_id, expires_at);
    hs.store.write(batch).await?;

    let mut resp = create_mxc_uri::v1::Response::new(mxc(server, &media_id));
    resp.unused_expires_at = Some(MilliSecondsSinceUnixEpoch(UInt::new_saturating(expires_at)));
    Ok(resp)
}

/// `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`. ruma 0.17's response type for it has
/// no constructor (it is empty and non-exhaustive), so this endpoint answers `{}` itself: see
/// [`upload_to_reserved_route`].
async fn upload_to_reserved(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_content_async::v3::Request,
) -> Result<()> {
    let user = ctx.user_id()?;
    let unknown = || {
        MatrixError::not_found(
            "unknown media id: it was not created with /media/v1/create or has expired",
        )
    };
    if req.server_name != hs.server_name() || !valid_media_id(&req.media_id) {
        return Err(unknown());
    }
    check_size(hs, req.file.len())?;
    let server = hs.server_name();
    let _guard = hs.write_lock().await;
    let mut rec = store::get(hs, server, &req.media_id)
        .await?
        .ok_or_else(unknown)?;
    if rec.uploader != *user {
        return Err(MatrixError::forbidden(
            "this media id was created by another user",
        ));
    }
    let Some(expires_at) = rec.pending_until else {
        return Err(MatrixError::cannot_overwrite_media(
            "media already uploaded",
        ));
    };
    if expires_at <= hs.now_ms() {
        return Err(unknown());
    }
    rec.content_type = req.content_type;
    rec.filename = req.filename;
    let mut batch = Batch::new();
    write_content(&mut batch, server, &req.media_id, &mut rec, &req.file)?;
    store::delete_pending(&mut batch, user, &req.media_id);
    hs.store.write(batch).await?;
    Ok(())
}

/// Parses and authenticates like the router's own endpoints, then answers `200 {}`.
fn upload_to_reserved_route() -> Handler {
    type R = create_content_async::v3::Request;
    Rc::new(
        |hs: Homeserver, req: http::Request<Vec<u8>>, args: Vec<String>| {
            Box::pin(async move {
                let result = async {
                    let ctx = hs.authenticate(&req, auth_of::<R>()).await?;
                    let (parts, body) = req.into_parts();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let parsed = R::try_from_http_request(
                        http::Request::from_parts(parts, body.as_slice()),
                        &args,
                    )
                    .map_err(|e| request_error(e, &body))?;
                    upload_to_reserved(&hs, ctx, parsed).await
                }
                .await;
                match result {
                    Ok(()) => json_response(http::StatusCode::OK, &serde_json::json!({})),
                    Err(e) => e.into_response(),
                }
            })
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn upload_size(hs: &Homeserver) -> UInt {
    UInt::new_saturating(upload_limit(hs) as u64)
}

#[allow(deprecated)]
async fn config_v3(
    hs: &Homeserver,
    _ctx: Ctx,
    _req: get_media_config::v3::Request,
) -> Result<get_media_config::v3::Response> {
    Ok(get_media_config::v3::Response::new(upload_size(hs)))
}

async fn config_v1(
    hs: &Homeserver,
    _ctx: Ctx,
    _req: authed::get_media_config::v1::Request,
) -> Result<authed::get_media_config::v1::Response> {
    Ok(authed::get_media_config::v1::Response::new(upload_size(hs)))
}

// ---------------------------------------------------------------------------------------------
// Downloads

/// What a download or thumbnail answers with.
struct Served {
    file: Vec<u8>,
    content_type: String,
    disposition: ContentDisposition,
}

/// The media's record and bytes, waiting up to `timeout` for content that was reserved but not
/// uploaded yet.
async fn fetch(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    timeout: Duration,
) -> Result<(MediaRecord, Vec<u8>)> {
    if server != hs.server_name() {
        return fetch_remote(hs, server, media_id, timeout).await;
    }
    let unknown = || MatrixError::not_found("media not found");
    if !valid_media_id(media_id) {
        return Err(unknown());
    }
    let deadline = hs
        .now_ms()
        .saturating_add(timeout.min(MAX_DOWNLOAD_WAIT).as_millis() as u64);
    loop {
        let rec = store::get(hs, server, media_id)
            .await?
            .ok_or_else(unknown)?;
        let Some(expires_at) = rec.pending_until else {
            let bytes = store::read_content(hs, server, media_id, &rec).await?;
            return Ok((rec, bytes));
        };
        let now = hs.now_ms();
        if expires_at <= now {
            return Err(unknown());
        }
        if now >= deadline {
            return Err(MatrixError::not_yet_uploaded(
                "content has not yet been uploaded",
            ));
        }
        hs.world
            .sleep(PENDING_POLL.min(Duration::from_millis(deadline - now)))
            .await;
    }
}

/// Media of another server: the copy kept from an earlier fetch, or the server's own answer to
/// the federation download (kept for next time; thumbnails are made here from it).
async fn fetch_remote(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    timeout: Duration,
) -> Result<(MediaRecord, Vec<u8>)> {
    if !valid_media_id(media_id) {
        return Err(MatrixError::not_found("media not found"));
    }
    if let Some(rec) = store::get(hs, server, media_id).await?
        && !rec.is_pending()
    {
        let bytes = store::read_content(hs, server, media_id, &rec).await?;
        return Ok((rec, bytes));
    }
    let mut req = ruma::api::federation::authenticated_media::get_content::v1::Request::new(
        media_id.to_owned(),
    );
    req.timeout_ms = timeout.min(MAX_DOWNLOAD_WAIT);
    let answer = crate::federation::client::send(hs, server, req)
        .await
        .map_err(|e| match e {
            // Without federation there is no other server's media to be had: not found.
            crate::federation::client::FederationError::Transport(
                crate::federation::transport::TransportError::Disabled { .. },
            ) => MatrixError::not_found(format!(
                "media on {server} is not available: this server does not federate"
            )),
            other => other.to_client_error(),
        })?;
    let content = match answer.content {
        ruma::api::federation::authenticated_media::FileOrLocation::File(c) => c,
        _ => {
            return Err(MatrixError::new(
                http::StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                format!("{server} answered with a redirect, which this server does not follow"),
            ));
        }
    };
    check_size(hs, content.file.len()).map_err(|_| {
        MatrixError::too_large(format!("the media on {server} exceeds this server's limit"))
    })?;
    // Remote media has no local uploader; the record names the server it came from.
    let uploader = ruma::OwnedUserId::try_from(format!("@_media:{server}"))
        .map_err(|e| MatrixError::unknown(format!("remote media owner: {e}")))?;
    let filename = content
        .content_disposition
        .as_ref()
        .and_then(|d| d.filename.clone());
    let mut rec = new_record(
        &uploader,
        hs.now_ms(),
        content.content_type.clone(),
        filename,
    );
    let mut batch = Batch::new();
    write_content(&mut batch, server, media_id, &mut rec, &content.file)?;
    hs.store.write(batch).await?;
    Ok((rec, content.file))
}

/// The answer to another server's `GET /_matrix/federation/v1/media/download/{mediaId}`.
pub(crate) async fn download_for_federation(
    hs: &Homeserver,
    media_id: &str,
    timeout: Duration,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let s = download(hs, hs.server_name(), media_id, None, timeout).await?;
    Ok((s.file, s.content_type, s.disposition))
}

/// The answer to another server's thumbnail request for local media.
pub(crate) async fn thumbnail_for_federation(
    hs: &Homeserver,
    media_id: &str,
    width: UInt,
    height: UInt,
    method: Option<ruma::media::Method>,
    animated: Option<bool>,
    timeout: Duration,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let s = serve_thumbnail(
        hs,
        ThumbnailQuery {
            server: hs.server_name(),
            media_id,
            width,
            height,
            method,
            animated,
            timeout,
        },
    )
    .await?;
    Ok((s.file, s.content_type, s.disposition))
}

/// `text/plain; charset=utf-8` → `text/plain`.
fn mime_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The spec's "serving inline content" rule: inline only for types a browser cannot turn into
/// active content; everything else downloads as an attachment.
fn disposition_for(content_type: &str, filename: Option<String>) -> ContentDisposition {
    let kind = if is_safe_inline_content_type(&mime_essence(content_type)) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    ContentDisposition::new(kind).with_filename(filename)
}

async fn download(
    hs: &Homeserver,
    server: &ServerName,
    media_id: &str,
    filename: Option<String>,
    timeout: Duration,
) -> Result<Served> {
    let (rec, file) = fetch(hs, server, media_id, timeout).await?;
    let content_type = rec
        .content_type
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let disposition = disposition_for(&content_type, filename.or(rec.filename));
    Ok(Served {
        file,
        content_type,
        disposition,
    })
}

#[allow(deprecated)]
async fn download_v3(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_content::v3::Request,
) -> Result<get_content::v3::Response> {
    let s = download(hs, &req.server_name, &req.media_id, None, req.timeout_ms).await?;
    Ok(get_content::v3::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}

#[allow(deprecated)]
async fn download_as_v3(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_content_as_filename::v3::Request,
) -> Result<get_content_as_filename::v3::Response> {
    let s = download(
        hs,
        &req.server_name,
        &req.media_id,
        Some(req.filename),
        req.timeout_ms,
    )
    .await?;
    Ok(get_content_as_filename::v3::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}

async fn download_v1(
    hs: &Homeserver,
    _ctx: Ctx,
    req: authed::get_content::v1::Request,
) -> Result<authed::get_content::v1::Response> {
    let s = download(hs, &req.server_name, &req.media_id, None, req.timeout_ms).await?;
    Ok(authed::get_content::v1::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}

async fn download_as_v1(
    hs: &Homeserver,
    _ctx: Ctx,
    req: authed::get_content_as_filename::v1::Request,
) -> Result<authed::get_content_as_filename::v1::Response> {
    let s = download(
        hs,
        &req.server_name,
        &req.media_id,
        Some(req.filename),
        req.timeout_ms,
    )
    .await?;
    Ok(authed::get_content_as_filename::v1::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

struct ThumbnailQuery<'a> {
    server: &'a ServerName,
    media_id: &'a str,
    width: UInt,
    height: UInt,
    method: Option<ruma::media::Method>,
    animated: Option<bool>,
    timeout: Duration,
}

async fn serve_thumbnail(hs: &Homeserver, q: ThumbnailQuery<'_>) -> Result<Served> {
    let dim = |v: UInt, name: &str| -> Result<u32> {
        match u32::try_from(u64::from(v)) {
            Ok(0) => Err(MatrixError::invalid_param(format!(
                "{name} must be positive"
            ))),
            Ok(n) => Ok(n),
            Err(_) => Err(MatrixError::invalid_param(format!("{name} is too large"))),
        }
    };
    let (width, height) = (dim(q.width, "width")?, dim(q.height, "height")?);
    let method = match q.method {
        None | Some(ruma::media::Method::Scale) => thumbnail::Method::Scale,
        Some(ruma::media::Method::Crop) => thumbnail::Method::Crop,
        Some(other) => {
            return Err(MatrixError::invalid_param(format!(
                "unknown thumbnail method {:?}; use crop or scale",
                other.as_str()
            )));
        }
    };
    let animated = q.animated == Some(true);
    let (rec, file) = fetch(hs, q.server, q.media_id, q.timeout).await?;
    let plan = thumbnail::plan(width, height, method);
    let variant = format!(
        "{}{}",
        plan.variant(),
        if animated { "-animated" } else { "" }
    );

    let thumb = match store::get_thumbnail(hs, q.server, q.media_id, &variant).await? {
        Some(t) => t,
        None => {
            let t = match thumbnail::make(&*hs.world, &file, plan, animated).await {
                Ok(t) => t,
                Err(thumbnail::ThumbnailError::NotAnImage) if original_is_own_thumbnail(&rec) => {
                    Thumbnail::Original
                }
                Err(thumbnail::ThumbnailError::NotAnImage) => {
                    return Err(cannot_thumbnail(
                        "cannot generate thumbnails for the requested content".into(),
                    ));
                }
                Err(thumbnail::ThumbnailError::TooLarge { width, height }) => {
                    return Err(MatrixError::too_large(format!(
                        "content is too large to thumbnail ({width}x{height} pixels)"
                    )));
                }
                Err(thumbnail::ThumbnailError::Unreadable(e)) => {
                    tracing::debug!(media_id = q.media_id, error = %e, "thumbnailing failed");
                    return Err(cannot_thumbnail(format!(
                        "cannot generate a thumbnail for this image: {e}"
                    )));
                }
            };
            let mut batch = Batch::new();
            store::put_thumbnail(&mut batch, q.server, q.media_id, &variant, &t);
            // The thumbnail is already made; failing to cache it only costs time later.
            if let Err(e) = hs.store.write(batch).await {
                tracing::warn!(media_id = q.media_id, error = %e, "could not cache thumbnail");
            }
            t
        }
    };
    let inline = ContentDispositionType::Inline;
    Ok(match thumb {
        Thumbnail::Original => {
            let content_type = rec
                .content_type
                .unwrap_or_else(|| "application/octet-stream".to_owned());
            Served {
                file,
                content_type,
                disposition: ContentDisposition::new(inline).with_filename(rec.filename),
            }
        }
        Thumbnail::Image {
            content_type,
            bytes,
        } => {
            let name = if content_type == "image/jpeg" {
                "thumbnail.jpg"
            } else {
                "thumbnail.png"
            };
            Served {
                file: bytes,
                content_type,
                disposition: ContentDisposition::new(inline).with_filename(Some(name.into())),
            }
        }
    })
}

/// The spec's answer when content cannot be thumbnailed: `400 M_UNKNOWN`.
fn cannot_thumbnail(error: String) -> MatrixError {
    MatrixError::new(http::StatusCode::BAD_REQUEST, "M_UNKNOWN", error)
}

/// Content this server cannot decode may stand in as its own thumbnail only when it is a small
/// image of a type that is safe to show inline.
fn original_is_own_thumbnail(rec: &MediaRecord) -> bool {
    let essence = rec
        .content_type
        .as_deref()
        .map(mime_essence)
        .unwrap_or_default();
    essence.starts_with("image/")
        && is_safe_inline_content_type(&essence)
        && rec.size <= MAX_ORIGINAL_AS_THUMBNAIL
}

#[allow(deprecated)]
async fn thumbnail_v3(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_content_thumbnail::v3::Request,
) -> Result<get_content_thumbnail::v3::Response> {
    let s = serve_thumbnail(
        hs,
        ThumbnailQuery {
            server: &req.server_name,
            media_id: &req.media_id,
            width: req.width,
            height: req.height,
            method: req.method,
            animated: req.animated,
            timeout: req.timeout_ms,
        },
    )
    .await?;
    Ok(get_content_thumbnail::v3::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}

async fn thumbnail_v1(
    hs: &Homeserver,
    _ctx: Ctx,
    req: authed::get_content_thumbnail::v1::Request,
) -> Result<authed::get_content_thumbnail::v1::Response> {
    let s = serve_thumbnail(
        hs,
        ThumbnailQuery {
            server: &req.server_name,
            media_id: &req.media_id,
            width: req.width,
            height: req.height,
            method: req.method,
            animated: req.animated,
            timeout: req.timeout_ms,
        },
    )
    .await?;
    Ok(authed::get_content_thumbnail::v1::Response::new(
        s.file,
        s.content_type,
        s.disposition,
    ))
}
