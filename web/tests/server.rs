//! `HearthServer` as `www/server-worker.js` uses it, inside a SharedWorker (where the server
//! lives in production: no `window`, IndexedDB and crypto from the worker's global scope).

#![cfg(target_arch = "wasm32")]

use std::cell::Cell;

use hearth_web::HearthServer;
use js_sys::{Array, Reflect, Uint8Array};
use serde_json::{Value, json};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_shared_worker);

thread_local! {
    static NEXT_DB: Cell<u32> = const { Cell::new(0) };
}

fn unique_name(label: &str) -> String {
    let n = NEXT_DB.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    format!("hearth-server-test-{label}-{}-{n}", js_sys::Date::now())
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &key.into()).expect("property")
}

async fn call(
    server: &HearthServer,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let pairs = Array::new();
    for (k, v) in headers {
        pairs.push(&Array::of2(&(*k).into(), &(*v).into()));
    }
    let answer =
        JsFuture::from(server.handle(method.into(), url.into(), pairs, Uint8Array::from(body)))
            .await
            .expect("handle never rejects");
    let status = get(&answer, "status").as_f64().expect("numeric status") as u16;
    let headers = Array::from(&get(&answer, "headers"))
        .iter()
        .map(|p| {
            let p = Array::from(&p);
            (
                p.get(0).as_string().expect("name"),
                p.get(1).as_string().expect("value"),
            )
        })
        .collect();
    let bytes = Uint8Array::new(&get(&answer, "body")).to_vec();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    Answer {
        status,
        headers,
        body,
    }
}

const BASE: &str = "http://127.0.0.1:8008";

async fn register(server: &HearthServer, user: &str) -> String {
    let body = json!({ "username": user, "password": "correct horse battery", "auth": { "type": "m.login.dummy" } });
    let a = call(
        server,
        "POST",
        &format!("{BASE}/_matrix/client/v3/register"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[wasm_bindgen_test]
async fn versions_answers_with_json_and_cors() {
    let server = HearthServer::start(unique_name("versions"))
        .await
        .expect("start");
    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/versions"),
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(
        a.body["versions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x == "v1.11")),
        "{}",
        a.body
    );
    assert!(
        a.headers
            .iter()
            .any(|(k, v)| k == "access-control-allow-origin" && v == "*")
    );
    assert!(
        a.headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
}

#[wasm_bindgen_test]
async fn server_name_is_the_stored_key_and_survives_restart() {
    let db = unique_name("identity");
    let first = HearthServer::start(db.clone()).await.expect("first boot");
    let name = first.server_name();
    assert_eq!(name.len(), 64);
    assert!(
        name.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{name}"
    );
    first.close();
    drop(first);

    let second = HearthServer::start(db).await.expect("second boot");
    assert_eq!(
        second.server_name(),
        name,
        "same database, same key, same name"
    );
    let other = HearthServer::start(unique_name("identity-other"))
        .await
        .expect("other boot");
    assert_ne!(
        other.server_name(),
        name,
        "a fresh database draws a fresh key"
    );
}

#[wasm_bindgen_test]
async fn well_known_points_at_the_request_origin() {
    let server = HearthServer::start(unique_name("wellknown"))
        .await
        .expect("start");
    let a = call(
        &server,
        "GET",
        "http://localhost:9123/.well-known/matrix/client",
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["m.homeserver"]["base_url"], "http://localhost:9123");
}

#[wasm_bindgen_test]
async fn unknown_endpoint_and_bad_input_are_matrix_errors() {
    let server = HearthServer::start(unique_name("errors"))
        .await
        .expect("start");
    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/v3/no/such/thing"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );

    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/v3/account/whoami"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );

    let a = call(
        &server,
        "BAD METHOD",
        &format!("{BASE}/_matrix/client/versions"),
        &[],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (400, Some("M_UNRECOGNIZED"))
    );

    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/versions"),
        &[("bad header", "x")],
        b"",
    )
    .await;
    assert_eq!(a.status, 400);

    let a = call(
        &server,
        "POST",
        &format!("{BASE}/_matrix/client/v3/register"),
        &[("content-type", "application/json")],
        b"{not json",
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (400, Some("M_NOT_JSON"))
    );
}

#[wasm_bindgen_test]
async fn authorization_header_reaches_the_core() {
    let server = HearthServer::start(unique_name("auth"))
        .await
        .expect("start");
    let token = register(&server, "alice").await;
    let bearer = format!("Bearer {token}");
    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/v3/account/whoami"),
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["user_id"],
        format!("@alice:{}", server.server_name())
    );

    let a = call(
        &server,
        "GET",
        &format!("{BASE}/_matrix/client/v3/account/whoami"),
        &[("authorization", "Bearer not-a-token")],
        b"",
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );
}

#[wasm_bindgen_test]
async fn status_reports_identity_counts_and_storage() {
    let server = HearthServer::start(unique_name("status"))
        .await
        .expect("start");
    let status = JsFuture::from(server.status()).await.expect("status");
    assert_eq!(
        get(&status, "serverName").as_string(),
        Some(server.server_name())
    );
    assert_eq!(
        get(&status, "version").as_string().as_deref(),
        Some(hearth_core::VERSION)
    );
    assert_eq!(get(&status, "users").as_f64(), Some(0.0));
    assert_eq!(get(&status, "rooms").as_f64(), Some(0.0));
    assert_eq!(
        get(&status, "relay").as_string().as_deref(),
        Some("not connected")
    );
    assert!(get(&status, "storageError").is_null());

    register(&server, "bob").await;
    let status = JsFuture::from(server.status()).await.expect("status");
    assert_eq!(get(&status, "users").as_f64(), Some(1.0));
    assert!(
        get(&status, "storageBytes")
            .as_f64()
            .is_some_and(|b| b > 0.0)
    );
}

#[wasm_bindgen_test]
async fn storage_failure_becomes_retryable_error_and_is_reported() {
    let server = HearthServer::start(unique_name("failure"))
        .await
        .expect("start");
    assert!(server.take_storage_error().is_undefined());
    server.close();
    let body = json!({ "username": "carol", "password": "correct horse battery", "auth": { "type": "m.login.dummy" } });
    let a = call(
        &server,
        "POST",
        &format!("{BASE}/_matrix/client/v3/register"),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (503, Some("M_UNKNOWN")),
        "{}",
        a.body
    );
    assert!(a.body["retry_after_ms"].as_u64().is_some());

    let failure = server.take_storage_error();
    assert_eq!(
        get(&failure, "kind").as_string().as_deref(),
        Some("unavailable")
    );
    assert!(server.take_storage_error().is_undefined(), "reported once");
}

#[wasm_bindgen_test]
async fn start_on_a_blocked_database_rejects_with_kind() {
    let name = unique_name("blocked");
    // An old connection at a lower version that never closes blocks our upgrade.
    let stale = indexed_db_futures::database::Database::open(name.clone())
        .with_version(1u32)
        .await
        .expect("stale open");
    let err = match HearthServer::start(name).await {
        Ok(_) => panic!("start must fail while blocked"),
        Err(e) => e,
    };
    assert_eq!(
        get(&err, "kind").as_string().as_deref(),
        Some("unavailable")
    );
    assert_eq!(
        get(&err, "name").as_string().as_deref(),
        Some("HearthError")
    );
    stale.close();
}
