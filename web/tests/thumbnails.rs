//! Thumbnails made by the browser's codecs (the wasm has none), inside a SharedWorker as in
//! production: real images drawn on a canvas, uploaded, thumbnailed, and the answers decoded.

#![cfg(target_arch = "wasm32")]

use hearth_web::HearthServer;
use js_sys::{Array, Reflect, Uint8Array};
use serde_json::{Value, json};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{
    Blob, ImageBitmap, ImageEncodeOptions, OffscreenCanvas, OffscreenCanvasRenderingContext2d,
};

wasm_bindgen_test_configure!(run_in_shared_worker);

const BASE: &str = "http://127.0.0.1:8008";

struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("JSON body")
    }
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).expect("property")
}

async fn call(
    server: &HearthServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    let pairs = Array::new();
    for (k, v) in headers {
        pairs.push(&Array::of2(&(*k).into(), &(*v).into()));
    }
    let url = format!("{BASE}{path}");
    let answer = JsFuture::from(server.handle(method.into(), url, pairs, Uint8Array::from(body)))
        .await
        .expect("handle never rejects");
    Raw {
        status: get(&answer, "status").as_f64().expect("numeric status") as u16,
        headers: Array::from(&get(&answer, "headers"))
            .iter()
            .map(|p| {
                let p = Array::from(&p);
                (
                    p.get(0).as_string().expect("name"),
                    p.get(1).as_string().expect("value"),
                )
            })
            .collect(),
        bytes: Uint8Array::new(&get(&answer, "body")).to_vec(),
    }
}

/// A `width` x `height` image, left half red and right half blue, encoded as `kind`.
async fn draw(width: u32, height: u32, kind: &str) -> Vec<u8> {
    let canvas = OffscreenCanvas::new(width, height).expect("canvas");
    let ctx: OffscreenCanvasRenderingContext2d = canvas
        .get_context("2d")
        .expect("context")
        .expect("2d")
        .unchecked_into();
    ctx.set_fill_style_str("#ff0000");
    ctx.fill_rect(0.0, 0.0, f64::from(width / 2), f64::from(height));
    ctx.set_fill_style_str("#0000ff");
    ctx.fill_rect(
        f64::from(width / 2),
        0.0,
        f64::from(width - width / 2),
        f64::from(height),
    );
    let options = ImageEncodeOptions::new();
    options.set_type(kind);
    let blob: Blob = JsFuture::from(
        canvas
            .convert_to_blob_with_options(&options)
            .expect("encode"),
    )
    .await
    .expect("encoded")
    .unchecked_into();
    let buffer = JsFuture::from(blob.array_buffer()).await.expect("bytes");
    Uint8Array::new(&buffer).to_vec()
}

/// Decodes `bytes` with the browser and gives its size.
async fn size_of(bytes: &[u8]) -> (u32, u32) {
    let blob =
        Blob::new_with_u8_array_sequence(&Array::of1(&Uint8Array::from(bytes))).expect("blob");
    let global = js_sys::global();
    let create: js_sys::Function = get(&global, "createImageBitmap").unchecked_into();
    let promise: js_sys::Promise = create.call1(&global, &blob).expect("call").unchecked_into();
    let bitmap: ImageBitmap = JsFuture::from(promise)
        .await
        .expect("a decodable image")
        .unchecked_into();
    (bitmap.width(), bitmap.height())
}

async fn setup(label: &str) -> (HearthServer, String, String) {
    let name = format!("hearth-thumbnail-test-{label}-{}", js_sys::Date::now());
    let server = HearthServer::start(name).await.expect("start");
    let body = json!({ "username": "alice", "password": "correct horse battery", "auth": { "type": "m.login.dummy" } });
    let r = call(
        &server,
        "POST",
        "/_matrix/client/v3/register",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);
    let token = format!(
        "Bearer {}",
        r.json()["access_token"].as_str().expect("token")
    );
    let server_name = server.server_name();
    (server, token, server_name)
}

async fn upload(server: &HearthServer, token: &str, kind: &str, bytes: &[u8]) -> String {
    let r = call(
        server,
        "POST",
        "/_matrix/media/v3/upload",
        &[("authorization", token), ("content-type", kind)],
        bytes,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    let uri = r.json()["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned();
    uri.rsplit('/').next().expect("media id").to_owned()
}

async fn thumbnail(
    server: &HearthServer,
    token: &str,
    server_name: &str,
    id: &str,
    query: &str,
) -> Raw {
    call(
        server,
        "GET",
        &format!("/_matrix/client/v1/media/thumbnail/{server_name}/{id}?{query}"),
        &[("authorization", token)],
        b"",
    )
    .await
}

#[wasm_bindgen_test]
async fn png_is_cropped_to_the_standard_size() {
    let (server, token, name) = setup("crop").await;
    let id = upload(
        &server,
        &token,
        "image/png",
        &draw(200, 100, "image/png").await,
    )
    .await;
    let r = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(size_of(&r.bytes).await, (32, 32));
}

#[wasm_bindgen_test]
async fn jpeg_is_scaled_keeping_its_aspect_and_stays_jpeg() {
    let (server, token, name) = setup("scale").await;
    let id = upload(
        &server,
        &token,
        "image/jpeg",
        &draw(1000, 500, "image/jpeg").await,
    )
    .await;
    let r = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=300&height=200&method=scale",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    // The standard 320x240 box, aspect 2:1 kept.
    assert_eq!(size_of(&r.bytes).await, (320, 160));
    // Made once, then served from the cache: the same bytes.
    let again = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=300&height=200&method=scale",
    )
    .await;
    assert_eq!(again.bytes, r.bytes);
}

#[wasm_bindgen_test]
async fn small_original_stands_in_for_its_thumbnail() {
    let (server, token, name) = setup("original").await;
    let png = draw(20, 10, "image/png").await;
    let id = upload(&server, &token, "image/png", &png).await;
    let r = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.bytes, png);
}

#[wasm_bindgen_test]
async fn corrupt_image_is_a_matrix_error() {
    let (server, token, name) = setup("corrupt").await;
    // A PNG header claiming 100x100 pixels, then garbage.
    let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    bytes.extend_from_slice(&100u32.to_be_bytes());
    bytes.extend_from_slice(&100u32.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0xAB; 64]);
    let id = upload(&server, &token, "image/png", &bytes).await;
    let r = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=32&height=32&method=crop",
    )
    .await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.bytes));
    assert_eq!(r.json()["errcode"], "M_UNKNOWN");
}

/// `jpeg` with an APP1 Exif segment (big-endian TIFF) saying `orientation`, after SOI.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01".to_vec();
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[wasm_bindgen_test]
async fn a_sideways_photo_is_thumbnailed_upright() {
    let (server, token, name) = setup("exif").await;
    // Stored 1000x500 with EXIF orientation 6: upright it is 500x1000.
    let photo = with_orientation(&draw(1000, 500, "image/jpeg").await, 6);
    assert_eq!(
        size_of(&photo).await,
        (500, 1000),
        "the browser shows it upright"
    );
    let id = upload(&server, &token, "image/jpeg", &photo).await;
    let r = thumbnail(
        &server,
        &token,
        &name,
        &id,
        "width=300&height=200&method=scale",
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.bytes));
    // The 320x240 box, upright aspect 1:2 kept.
    assert_eq!(size_of(&r.bytes).await, (120, 240));
}
