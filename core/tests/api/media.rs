//! The content repository: uploads, downloads, thumbnails, configuration, both the deprecated
//! `/_matrix/media/v3` and the authenticated `/_matrix/client/v1/media` paths.

use std::io::Cursor;
use std::rc::Rc;

use hearth_core::db::users::{self, UserRecord};
use hearth_core::storage::{Batch, KeyRange, MemoryStorage};
use hearth_core::testing::{TestClient, TestResponse, TestWorld, enc, test_server};
use hearth_core::{Config, Homeserver};
use http::Method;
use image::{DynamicImage, ImageFormat, RgbImage, RgbaImage};
use ruma::OwnedUserId;
use ruma::http_headers::ContentDisposition;
use serde_json::{Value, json};

/// A user with one logged-in device, created directly in storage.
async fn user(hs: &Homeserver, localpart: &str) -> TestClient {
    let user_id = OwnedUserId::try_from(format!("@{localpart}:{}", hs.server_name())).unwrap();
    let mut batch = Batch::new();
    users::put_user(
        &mut batch,
        &user_id,
        &UserRecord {
            created_ts: hs.now_ms(),
            ..Default::default()
        },
    )
    .unwrap();
    let (dev, _) = users::new_device(hs, &mut batch, &user_id, None, None, false).unwrap();
    hs.store.write(batch).await.unwrap();
    TestClient {
        hs: hs.clone(),
        token: Some(dev.access_token),
        user_id: user_id.to_string(),
        device_id: dev.device_id.to_string(),
    }
}

/// Uploads `bytes` and returns `(server name, media id)`.
async fn upload(
    c: &TestClient,
    bytes: Vec<u8>,
    content_type: &str,
    filename: Option<&str>,
) -> (String, String) {
    let path = match filename {
        Some(f) => format!("/_matrix/media/v3/upload?filename={}", enc(f)),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    let r = c
        .request_raw(Method::POST, &path, bytes, content_type)
        .await;
    let uri = r.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    let rest = uri.strip_prefix("mxc://").expect("an mxc:// URI");
    let (server, id) = rest.split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

fn header<'a>(r: &'a TestResponse, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The `Content-Disposition` header as `(type, filename)`, however the filename is quoted.
fn disposition(r: &TestResponse) -> (String, Option<String>) {
    let d: ContentDisposition = header(r, "content-disposition")
        .parse()
        .expect("a valid Content-Disposition");
    (d.disposition_type.to_string(), d.filename)
}

fn disp(kind: &str, filename: Option<&str>) -> (String, Option<String>) {
    (kind.to_owned(), filename.map(str::to_owned))
}

fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    }))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

/// Decodes a served image and returns its format and dimensions.
fn served_image(r: &TestResponse) -> (ImageFormat, u32, u32) {
    let format = image::guess_format(&r.raw).expect("the response is an image");
    let img = image::load_from_memory(&r.raw).unwrap();
    (format, img.width(), img.height())
}

// ---------------------------------------------------------------------------------------------
// Upload and download

#[tokio::test]
async fn uploaded_content_downloads_unchanged_with_its_type_and_name() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(
        &alice,
        b"hello world".to_vec(),
        "text/plain",
        Some("greeting.txt"),
    )
    .await;
    assert_eq!(server, hs.server_name().as_str());

    let r = TestClient::anonymous(&hs)
        .get(&format!("/_matrix/media/v3/download/{server}/{id}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.raw, b"hello world");
    assert_eq!(header(&r, "content-type"), "text/plain");
    assert_eq!(disposition(&r), disp("inline", Some("greeting.txt")));
    assert!(
        header(&r, "content-security-policy").starts_with("sandbox"),
        "downloads are sandboxed"
    );
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
}

#[tokio::test]
async fn download_with_a_file_name_uses_that_name() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(
        &alice,
        b"%PDF-1.4".to_vec(),
        "application/pdf",
        Some("a.pdf"),
    )
    .await;
    let r = alice
        .get(&format!(
            "/_matrix/client/v1/media/download/{server}/{id}/report.pdf"
        ))
        .await;
    assert_eq!(r.raw, b"%PDF-1.4");
    assert_eq!(disposition(&r), disp("attachment", Some("report.pdf")));
    let r = alice
        .get(&format!(
            "/_matrix/media/v3/download/{server}/{id}/other.pdf"
        ))
        .await;
    assert_eq!(disposition(&r), disp("attachment", Some("other.pdf")));
    // Non-ASCII names survive (RFC 8187 encoding in the header).
    let (server, id) = upload(
        &alice,
        b"%PDF-1.4".to_vec(),
        "application/pdf",
        Some("résumé \"final\".pdf"),
    )
    .await;
    let r = alice
        .get(&format!("/_matrix/client/v1/media/download/{server}/{id}"))
        .await;
    assert!(header(&r, "content-disposition").is_ascii());
    assert_eq!(
        disposition(&r),
        disp("attachment", Some("résumé \"final\".pdf"))
    );
}

#[tokio::test]
async fn active_content_is_served_as_an_attachment() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    for ct in [
        "text/html",
        "image/svg+xml",
        "application/javascript",
        "text/html; charset=utf-8",
    ] {
        let (server, id) = upload(&alice, b"<script>alert(1)</script>".to_vec(), ct, None).await;
        let r = alice
            .get(&format!("/_matrix/client/v1/media/download/{server}/{id}"))
            .await;
        assert_eq!(disposition(&r), disp("attachment", None), "{ct}");
        assert!(header(&r, "content-security-policy").contains("script-src 'none'"));
    }
    // Parameters do not hide a safe type.
    let (server, id) = upload(&alice, b"plain".to_vec(), "text/plain; charset=utf-8", None).await;
    let r = alice
        .get(&format!("/_matrix/client/v1/media/download/{server}/{id}"))
        .await;
    assert_eq!(disposition(&r), disp("inline", None));
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
}

#[tokio::test]
async fn content_without_a_type_is_octet_stream() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let r = alice
        .hs
        .handle(
            http::Request::builder()
                .method(Method::POST)
                .uri("/_matrix/media/v3/upload")
                .header(
                    "authorization",
                    format!("Bearer {}", alice.token.clone().unwrap()),
                )
                .body(vec![1, 2, 3])
                .unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    let uri = v["content_uri"].as_str().unwrap();
    let r = alice
        .get(&format!(
            "/_matrix/client/v1/media/download/{}",
            uri.strip_prefix("mxc://").unwrap()
        ))
        .await;
    assert_eq!(r.raw, vec![1, 2, 3]);
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(disposition(&r), disp("attachment", None));
}

#[tokio::test]
async fn large_files_are_stored_in_chunks_and_reassembled() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bytes: Vec<u8> = (0..700 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let (server, id) = upload(&alice, bytes.clone(), "application/octet-stream", None).await;

    let chunks = hs
        .store
        .scan(
            "media_data",
            KeyRange::prefix(format!("{server}\0{id}\0").as_bytes()),
            hearth_core::storage::Direction::Forward,
            usize::MAX,
        )
        .await
        .unwrap();
    assert_eq!(chunks.len(), 3, "700 KiB in 256 KiB records");
    assert!(chunks.iter().all(|(_, v)| v.len() <= 256 * 1024));

    let r = alice
        .get(&format!("/_matrix/client/v1/media/download/{server}/{id}"))
        .await;
    assert_eq!(r.raw.len(), bytes.len());
    assert!(r.raw == bytes, "content changed on the way through storage");
}

#[tokio::test]
async fn unknown_media_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let server = hs.server_name().to_string();
    alice
        .get(&format!(
            "/_matrix/client/v1/media/download/{server}/nosuchmedia"
        ))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("/_matrix/media/v3/download/{server}/nosuchmedia"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("/_matrix/media/v3/download/{server}/bad%00id"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get("/_matrix/client/v1/media/download/remote.example/abc")
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!(
            "/_matrix/client/v1/media/thumbnail/{server}/nosuchmedia?width=32&height=32"
        ))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn authenticated_media_requires_a_token_and_legacy_media_does_not() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let (server, id) = upload(&alice, b"x".to_vec(), "text/plain", None).await;
    anon.get(&format!("/_matrix/client/v1/media/download/{server}/{id}"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.get(&format!(
        "/_matrix/client/v1/media/download/{server}/{id}/x.txt"
    ))
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    anon.get(&format!(
        "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=1&height=1"
    ))
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    anon.get("/_matrix/client/v1/media/config")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.request_raw(
        Method::POST,
        "/_matrix/media/v3/upload",
        b"x".to_vec(),
        "text/plain",
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    anon.request(Method::POST, "/_matrix/media/v1/create", None)
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    assert_eq!(
        anon.get(&format!("/_matrix/media/v3/download/{server}/{id}"))
            .await
            .raw,
        b"x"
    );
}

// ---------------------------------------------------------------------------------------------
// Size limits and configuration

async fn small_server(max_body_bytes: usize) -> Homeserver {
    let config = Config {
        max_body_bytes,
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    Homeserver::new(
        Rc::new(MemoryStorage::new()),
        Rc::new(TestWorld::new(3)),
        config,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn config_reports_the_upload_limit() {
    let hs = small_server(4096).await;
    let alice = user(&hs, "alice").await;
    assert_eq!(
        alice
            .get("/_matrix/client/v1/media/config")
            .await
            .assert_ok(),
        &json!({ "m.upload.size": 4096 })
    );
    assert_eq!(
        alice.get("/_matrix/media/v3/config").await.assert_ok(),
        &json!({ "m.upload.size": 4096 })
    );
}

#[tokio::test]
async fn uploads_over_the_limit_are_too_large() {
    let hs = small_server(4096).await;
    let alice = user(&hs, "alice").await;
    let r = alice
        .request_raw(
            Method::POST,
            "/_matrix/media/v3/upload",
            vec![0; 4097],
            "application/octet-stream",
        )
        .await;
    r.assert_error(413, "M_TOO_LARGE");
    let r = alice
        .request(Method::POST, "/_matrix/media/v1/create", None)
        .await;
    let uri = r.assert_ok()["content_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mxc://")
        .unwrap()
        .to_owned();
    let r = alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{uri}"),
            vec![0; 4097],
            "text/plain",
        )
        .await;
    r.assert_error(413, "M_TOO_LARGE");
    // Exactly at the limit is fine.
    upload(&alice, vec![0; 4096], "application/octet-stream", None).await;
}

// ---------------------------------------------------------------------------------------------
// Asynchronous upload: /media/v1/create then PUT

async fn create(c: &TestClient) -> (String, Value) {
    let r = c
        .request(Method::POST, "/_matrix/media/v1/create", None)
        .await;
    let v = r.assert_ok().clone();
    let uri = v["content_uri"]
        .as_str()
        .unwrap()
        .strip_prefix("mxc://")
        .unwrap()
        .to_owned();
    (uri, v)
}

#[tokio::test]
async fn reserved_uri_accepts_one_upload_from_its_creator() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let (uri, v) = create(&alice).await;
    assert!(
        v["unused_expires_at"].as_u64().unwrap() > hs.now_ms(),
        "{v}"
    );

    alice
        .get(&format!(
            "/_matrix/client/v1/media/download/{uri}?timeout_ms=0"
        ))
        .await
        .assert_error(504, "M_NOT_YET_UPLOADED");
    let put = format!("/_matrix/media/v3/upload/{uri}?filename=cat.txt");
    bob.request_raw(Method::PUT, &put, b"bob's".to_vec(), "text/plain")
        .await
        .assert_error(403, "M_FORBIDDEN");
    let r = alice
        .request_raw(Method::PUT, &put, b"meow".to_vec(), "text/plain")
        .await;
    assert_eq!(r.assert_ok(), &json!({}));
    alice
        .request_raw(Method::PUT, &put, b"again".to_vec(), "text/plain")
        .await
        .assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");

    let r = alice
        .get(&format!("/_matrix/client/v1/media/download/{uri}"))
        .await;
    assert_eq!(r.raw, b"meow");
    assert_eq!(disposition(&r), disp("inline", Some("cat.txt")));
}

#[tokio::test]
async fn upload_to_an_uri_that_was_never_reserved_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let server = hs.server_name().to_string();
    let r = alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{server}/madeup"),
            b"x".to_vec(),
            "text/plain",
        )
        .await;
    r.assert_error(404, "M_NOT_FOUND");
    let r = alice
        .request_raw(
            Method::PUT,
            "/_matrix/media/v3/upload/remote.example/abc",
            b"x".to_vec(),
            "text/plain",
        )
        .await;
    r.assert_error(404, "M_NOT_FOUND");
    // Media uploaded directly cannot be overwritten through this endpoint either.
    let (server, id) = upload(&alice, b"x".to_vec(), "text/plain", None).await;
    let r = alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{server}/{id}"),
            b"y".to_vec(),
            "text/plain",
        )
        .await;
    r.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
}

#[tokio::test]
async fn pending_uploads_are_limited_and_expire() {
    let (hs, world) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let mut uris = Vec::new();
    for _ in 0..10 {
        uris.push(create(&alice).await.0);
    }
    alice
        .request(Method::POST, "/_matrix/media/v1/create", None)
        .await
        .assert_error(429, "M_LIMIT_EXCEEDED");
    // Another user has their own allowance.
    create(&user(&hs, "bob").await).await;
    // Completing an upload frees its slot.
    alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{}", uris[0]),
            b"x".to_vec(),
            "text/plain",
        )
        .await
        .assert_ok();
    create(&alice).await;

    world.advance(25 * 60 * 60 * 1000);
    let r = alice
        .request_raw(
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{}", uris[1]),
            b"x".to_vec(),
            "text/plain",
        )
        .await;
    r.assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("/_matrix/client/v1/media/download/{}", uris[2]))
        .await
        .assert_error(404, "M_NOT_FOUND");
    for _ in 0..10 {
        create(&alice).await;
    }
}

#[tokio::test]
async fn download_waits_for_content_that_is_being_uploaded() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (uri, _) = create(&alice).await;
    let path = format!("/_matrix/client/v1/media/download/{uri}?timeout_ms=5000");
    let waiter = alice.get(&path);
    let uploader = async {
        hs.world.sleep(std::time::Duration::from_millis(300)).await;
        alice
            .request_raw(
                Method::PUT,
                &format!("/_matrix/media/v3/upload/{uri}"),
                b"late".to_vec(),
                "text/plain",
            )
            .await
    };
    let (downloaded, uploaded) = tokio::join!(waiter, uploader);
    uploaded.assert_ok();
    assert_eq!(downloaded.status, 200, "{}", downloaded.body);
    assert_eq!(downloaded.raw, b"late");
}

// ---------------------------------------------------------------------------------------------
// Thumbnails

async fn thumbnail(c: &TestClient, server: &str, id: &str, query: &str) -> TestResponse {
    c.get(&format!(
        "/_matrix/client/v1/media/thumbnail/{server}/{id}?{query}"
    ))
    .await
}

#[tokio::test]
async fn png_thumbnails_are_downscaled_to_a_standard_size() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let png = encode(&gradient(1000, 500), ImageFormat::Png);
    let (server, id) = upload(&alice, png, "image/png", Some("wide.png")).await;

    // scale: the smallest standard box at least 100x100 is 320x240; the aspect ratio is kept.
    let r = thumbnail(&alice, &server, &id, "width=100&height=100&method=scale").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(header(&r, "content-type"), "image/png");
    assert_eq!(disposition(&r), disp("inline", Some("thumbnail.png")));
    assert_eq!(served_image(&r), (ImageFormat::Png, 320, 160));

    // crop: exactly the standard 96x96 square.
    let r = thumbnail(&alice, &server, &id, "width=64&height=64&method=crop").await;
    assert_eq!(served_image(&r), (ImageFormat::Png, 96, 96));

    // No method means scale; a size beyond the standard ones is honoured.
    let r = thumbnail(&alice, &server, &id, "width=900&height=900").await;
    assert_eq!(served_image(&r), (ImageFormat::Png, 900, 450));

    // The legacy path serves the same thumbnail.
    let legacy = alice
        .get(&format!(
            "/_matrix/media/v3/thumbnail/{server}/{id}?width=100&height=100&method=scale"
        ))
        .await;
    assert_eq!(served_image(&legacy), (ImageFormat::Png, 320, 160));
}

#[tokio::test]
async fn jpeg_thumbnails_are_jpeg() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let jpeg = encode(&gradient(640, 480), ImageFormat::Jpeg);
    let (server, id) = upload(&alice, jpeg, "image/jpeg", None).await;
    let r = thumbnail(&alice, &server, &id, "width=32&height=32&method=crop").await;
    assert_eq!(header(&r, "content-type"), "image/jpeg");
    assert_eq!(disposition(&r), disp("inline", Some("thumbnail.jpg")));
    assert_eq!(served_image(&r), (ImageFormat::Jpeg, 32, 32));
    let r = thumbnail(&alice, &server, &id, "width=300&height=200&method=scale").await;
    assert_eq!(served_image(&r), (ImageFormat::Jpeg, 320, 240));
}

#[tokio::test]
async fn gif_and_webp_are_thumbnailed_to_static_png() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(400, 400, |x, y| {
        image::Rgba([x as u8, y as u8, 0, 255])
    }));
    for (format, ct) in [
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::WebP, "image/webp"),
    ] {
        let (server, id) = upload(&alice, encode(&rgba, format), ct, None).await;
        let r = thumbnail(&alice, &server, &id, "width=96&height=96&method=crop").await;
        assert_eq!(served_image(&r), (ImageFormat::Png, 96, 96), "{ct}");
        assert_eq!(header(&r, "content-type"), "image/png");
        // Smaller than asked for, and animation not requested: re-encoded, not passed through.
        let r = thumbnail(&alice, &server, &id, "width=800&height=600&method=scale").await;
        assert_eq!(served_image(&r), (ImageFormat::Png, 400, 400), "{ct}");
    }
}

#[tokio::test]
async fn images_smaller_than_the_request_are_served_as_they_are() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let png = encode(&gradient(50, 40), ImageFormat::Png);
    let (server, id) = upload(&alice, png.clone(), "image/png", Some("tiny.png")).await;
    for query in [
        "width=320&height=240&method=scale",
        "width=96&height=96&method=crop",
    ] {
        let r = thumbnail(&alice, &server, &id, query).await;
        assert!(
            r.raw == png,
            "never upscaled: the original comes back ({query})"
        );
        assert_eq!(header(&r, "content-type"), "image/png");
        assert!(header(&r, "content-disposition").starts_with("inline"));
    }
}

#[tokio::test]
async fn crop_of_an_image_smaller_in_one_dimension_never_upscales() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(
        &alice,
        encode(&gradient(50, 500), ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    let r = thumbnail(&alice, &server, &id, "width=96&height=96&method=crop").await;
    assert_eq!(served_image(&r), (ImageFormat::Png, 50, 50));
}

#[tokio::test]
async fn repeated_thumbnail_requests_are_served_from_the_cache() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(
        &alice,
        encode(&gradient(700, 700), ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    let first = thumbnail(&alice, &server, &id, "width=90&height=90&method=crop").await;
    let cached = hs
        .store
        .scan(
            "media_thumbnails",
            KeyRange::all(),
            hearth_core::storage::Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(cached.len(), 1);
    // 90x90 and 64x64 both map to the standard 96x96 crop.
    let second = thumbnail(&alice, &server, &id, "width=64&height=64&method=crop").await;
    assert!(first.raw == second.raw);
    let cached = hs
        .store
        .scan(
            "media_thumbnails",
            KeyRange::all(),
            hearth_core::storage::Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert_eq!(cached.len(), 1, "one thumbnail per standard size");
}

#[tokio::test]
async fn content_that_is_not_an_image_cannot_be_thumbnailed() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(&alice, b"just text".to_vec(), "text/plain", None).await;
    thumbnail(&alice, &server, &id, "width=32&height=32")
        .await
        .assert_error(400, "M_UNKNOWN");
    // A PNG header with nothing behind it is an image this server cannot read.
    let (server, id) = upload(
        &alice,
        b"\x89PNG\r\n\x1a\nbroken".to_vec(),
        "image/png",
        None,
    )
    .await;
    thumbnail(&alice, &server, &id, "width=32&height=32")
        .await
        .assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn small_images_of_unknown_formats_are_their_own_thumbnail() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let avif = b"\x00\x00\x00\x1cftypavif-not-really".to_vec();
    let (server, id) = upload(&alice, avif.clone(), "image/avif", None).await;
    let r = thumbnail(&alice, &server, &id, "width=32&height=32").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.raw == avif);
    assert_eq!(header(&r, "content-type"), "image/avif");
    // But never active content.
    let (server, id) = upload(&alice, b"<svg/>".to_vec(), "image/svg+xml", None).await;
    thumbnail(&alice, &server, &id, "width=32&height=32")
        .await
        .assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn huge_images_are_too_large_to_thumbnail() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    // A 10000x10000 PNG header (the pixel data is never read: the size alone is refused).
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&10_000u32.to_be_bytes());
    png.extend_from_slice(&10_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&png[12..]);
    png.extend_from_slice(&crc.to_be_bytes());
    // An empty IDAT, so the header can be read to its end.
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(b"IDAT");
    png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
    let (server, id) = upload(&alice, png, "image/png", None).await;
    thumbnail(&alice, &server, &id, "width=32&height=32")
        .await
        .assert_error(413, "M_TOO_LARGE");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
async fn thumbnail_parameters_are_validated() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (server, id) = upload(
        &alice,
        encode(&gradient(100, 100), ImageFormat::Png),
        "image/png",
        None,
    )
    .await;
    thumbnail(&alice, &server, &id, "width=0&height=32")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    thumbnail(&alice, &server, &id, "width=32&height=-1")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    thumbnail(&alice, &server, &id, "width=32")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    thumbnail(&alice, &server, &id, "width=32&height=32&method=stretch")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}
