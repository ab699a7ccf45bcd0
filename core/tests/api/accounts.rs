//! Accounts, sessions, devices, user-interactive auth, capabilities and the small endpoints
//! beside them (Client-Server API).

use std::rc::Rc;

use hearth_core::storage::{Batch, MemoryStorage};
use hearth_core::testing::{TestClient, TestResponse, TestWorld, enc, test_server};
use hearth_core::{Config, Homeserver};
use http::Method;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn as_user(hs: &Homeserver, token: &str) -> TestClient {
    TestClient {
        hs: hs.clone(),
        token: Some(token.to_owned()),
        user_id: String::new(),
        device_id: String::new(),
    }
}

async fn login(hs: &Homeserver, body: Value) -> TestResponse {
    TestClient::anonymous(hs)
        .post("/_matrix/client/v3/login", body)
        .await
}

async fn password_login(hs: &Homeserver, user: &str, extra: Value) -> TestResponse {
    let mut body = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": PASSWORD,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    login(hs, body).await
}

fn password_auth(user: &str, password: &str, session: &Value) -> Value {
    json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
        "session": session,
    })
}

/// Asserts a UIA 401 body offering exactly `stages` as its one flow; returns the session.
fn assert_uia(r: &TestResponse, stages: &[&str]) -> Value {
    assert_eq!(r.status.as_u16(), 401, "body: {}", r.body);
    assert_eq!(
        r.body["flows"],
        json!([{ "stages": stages }]),
        "body: {}",
        r.body
    );
    assert!(r.body["params"].is_object(), "params missing: {}", r.body);
    assert!(
        r.body["session"].as_str().is_some_and(|s| !s.is_empty()),
        "session missing: {}",
        r.body
    );
    r.body["session"].clone()
}

// ---------------------------------------------------------------------------------------------
// Registration

#[tokio::test]
async fn register_without_auth_answers_uia_with_dummy_flow() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    assert_uia(&r, &["m.login.dummy"]);
    // A first 401 is not a failure: no errcode, nothing completed yet.
    assert!(r.body.get("errcode").is_none(), "body: {}", r.body);
    assert!(
        r.body.get("completed").is_none_or(|c| c == &json!([])),
        "body: {}",
        r.body
    );
}

#[tokio::test]
async fn register_completes_dummy_stage_within_the_session() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    let body = json!({ "username": "alice", "password": PASSWORD });
    let session = assert_uia(
        &anon.post("/_matrix/client/v3/register", body).await,
        &["m.login.dummy"],
    );
    let r = anon
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    let v = r.assert_ok();
    assert_eq!(v["user_id"], format!("@alice:{}", hs.server_name()));
    assert!(v["access_token"].is_string() && v["device_id"].is_string());
    // The session was consumed by the registration.
    let again = anon
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "bob", "password": PASSWORD, "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    again.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn registered_token_works_and_whoami_names_user_device_and_guest_flag() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/account/whoami").await;
    let v = v.assert_ok();
    assert_eq!(v["user_id"], alice.user_id);
    assert_eq!(v["device_id"], alice.device_id);
    assert_eq!(v["is_guest"], false);
    // Old clients use r0.
    alice
        .get("/_matrix/client/r0/account/whoami")
        .await
        .assert_ok();
}

#[tokio::test]
async fn whoami_requires_a_valid_token() {
    let (hs, _) = test_server(1).await;
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let r = as_user(&hs, "syt_nonsense")
        .get("/_matrix/client/v3/account/whoami")
        .await;
    r.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(r.body["soft_logout"], false);
}

#[tokio::test]
async fn register_rejects_usernames_outside_the_localpart_grammar() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    for bad in [
        "Alice",
        "al ice",
        "al:ice",
        "@alice",
        "",
        "ålice",
        &"a".repeat(250),
    ] {
        let r = anon
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": bad, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        r.assert_error(400, "M_INVALID_USERNAME");
    }
    for good in ["a.b_c=d-e/f+g", "0123"] {
        let r = anon
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": good, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        r.assert_ok();
    }
}

#[tokio::test]
async fn taken_username_is_refused_before_authentication() {
    let (hs, _) = test_server(1).await;
    TestClient::register(&hs, "alice").await;
    // No `auth`: the username error still comes first, not a 401.
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD }),
        )
        .await;
    r.assert_error(400, "M_USER_IN_USE");
}

#[tokio::test]
async fn register_without_username_generates_a_valid_user_id() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    let v = r.assert_ok();
    let id = v["user_id"].as_str().unwrap();
    let parsed = ruma::UserId::parse(id).unwrap();
    assert_eq!(parsed.server_name(), hs.server_name());
    assert!(
        parsed
            .localpart()
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    let token = v["access_token"].as_str().unwrap();
    as_user(&hs, token)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
}

#[tokio::test]
async fn inhibit_login_registers_without_token_or_device() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD, "inhibit_login": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    let v = r.assert_ok();
    assert!(v["user_id"].is_string());
    assert!(
        v.get("access_token").is_none() && v.get("refresh_token").is_none(),
        "body: {v}"
    );
    assert!(v["device_id"].is_null(), "body: {v}");
    // The account exists: logging in works, and its only device is the new one.
    let v = password_login(&hs, "alice", json!({})).await;
    let token = v.assert_ok()["access_token"].as_str().unwrap().to_owned();
    let devices = as_user(&hs, &token).get("/_matrix/client/v3/devices").await;
    assert_eq!(devices.assert_ok()["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn register_honours_device_id_and_initial_display_name() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({
                "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" },
                "device_id": "MYPHONE", "initial_device_display_name": "Alice's phone",
            }),
        )
        .await;
    let v = r.assert_ok();
    assert_eq!(v["device_id"], "MYPHONE");
    let alice = as_user(&hs, v["access_token"].as_str().unwrap());
    let d = alice.get("/_matrix/client/v3/devices/MYPHONE").await;
    let d = d.assert_ok();
    assert_eq!(d["device_id"], "MYPHONE");
    assert_eq!(d["display_name"], "Alice's phone");
}

#[tokio::test]
async fn guest_registration_is_refused() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post("/_matrix/client/v3/register?kind=guest", json!({}))
        .await;
    r.assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let config = Config {
        registration_open: false,
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    let hs = Homeserver::new(
        Rc::new(MemoryStorage::new()),
        Rc::new(TestWorld::new(3)),
        config,
    )
    .await
    .unwrap();
    let anon = TestClient::anonymous(&hs);
    let r = anon
        .post("/_matrix/client/v3/register", json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }))
        .await;
    r.assert_error(403, "M_FORBIDDEN");
    anon.get("/_matrix/client/v3/register/available?username=alice")
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn register_rejects_malformed_bodies() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    let r = anon
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/register",
            b"{not json".to_vec(),
            "application/json",
        )
        .await;
    r.assert_error(400, "M_NOT_JSON");
    let r = anon
        .post("/_matrix/client/v3/register", json!({ "username": 5 }))
        .await;
    r.assert_error(400, "M_BAD_JSON");
    let r = anon
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": "", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    r.assert_error(400, "M_WEAK_PASSWORD");
}

#[tokio::test]
async fn username_availability_reports_free_taken_and_invalid() {
    let (hs, _) = test_server(1).await;
    TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let v = anon
        .get("/_matrix/client/v3/register/available?username=bob")
        .await;
    assert_eq!(v.assert_ok(), &json!({ "available": true }));
    anon.get("/_matrix/client/v3/register/available?username=alice")
        .await
        .assert_error(400, "M_USER_IN_USE");
    anon.get("/_matrix/client/v3/register/available?username=Bob")
        .await
        .assert_error(400, "M_INVALID_USERNAME");
    anon.get("/_matrix/client/v3/register/available")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

// ---------------------------------------------------------------------------------------------
// Login and logout

#[tokio::test]
async fn login_flows_offer_password() {
    let (hs, _) = test_server(1).await;
    let v = TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/login")
        .await;
    assert_eq!(
        v.assert_ok()["flows"],
        json!([{ "type": "m.login.password" }])
    );
}

#[tokio::test]
async fn login_accepts_localpart_full_user_id_and_legacy_user_field() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let full = alice.user_id.clone();
    let by_localpart = password_login(&hs, "alice", json!({})).await;
    let v = by_localpart.assert_ok();
    assert_eq!(v["user_id"], full);
    assert_eq!(v["home_server"], hs.server_name().as_str());
    assert!(v["access_token"].is_string() && v["device_id"].is_string());
    assert!(
        v.get("refresh_token").is_none() && v.get("expires_in_ms").is_none(),
        "body: {v}"
    );
    password_login(&hs, &full, json!({})).await.assert_ok();
    // Localparts are matched without regard to case.
    password_login(&hs, "ALICE", json!({})).await.assert_ok();
    let legacy = login(
        &hs,
        json!({ "type": "m.login.password", "user": "alice", "password": PASSWORD }),
    )
    .await;
    legacy.assert_ok();
}

#[tokio::test]
async fn login_with_wrong_password_or_unknown_user_is_forbidden() {
    let (hs, _) = test_server(1).await;
    TestClient::register(&hs, "alice").await;
    let wrong = login(
        &hs,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "nope" }),
    )
    .await;
    wrong.assert_error(403, "M_FORBIDDEN");
    password_login(&hs, "nobody", json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    password_login(&hs, "@alice:elsewhere.example", json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let email = login(
        &hs,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.thirdparty", "medium": "email", "address": "a@b.c" }, "password": PASSWORD }),
    )
    .await;
    email.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn login_with_unsupported_type_or_missing_fields_is_bad_request() {
    let (hs, _) = test_server(1).await;
    login(&hs, json!({ "type": "m.login.token", "token": "abc" }))
        .await
        .assert_error(400, "M_UNKNOWN");
    login(
        &hs,
        json!({ "type": "m.login.password", "password": PASSWORD }),
    )
    .await
    .assert_error(400, "M_MISSING_PARAM");
    login(
        &hs,
        json!({ "identifier": { "type": "m.id.user", "user": "alice" } }),
    )
    .await
    .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn deactivated_user_cannot_log_in() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let id = ruma::UserId::parse(alice.user_id.as_str()).unwrap();
    let mut rec = hearth_core::db::users::get_user(&hs, &id)
        .await
        .unwrap()
        .unwrap();
    rec.deactivated = true;
    let mut batch = Batch::new();
    hearth_core::db::users::put_user(&mut batch, &id, &rec).unwrap();
    hs.store.write(batch).await.unwrap();
    password_login(&hs, "alice", json!({}))
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
}

#[tokio::test]
async fn login_with_known_device_id_replaces_its_token() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let first = password_login(
        &hs,
        "alice",
        json!({ "device_id": "LAPTOP", "initial_device_display_name": "Laptop" }),
    )
    .await;
    let first = first.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = password_login(
        &hs,
        "alice",
        json!({ "device_id": "LAPTOP", "initial_device_display_name": "Ignored" }),
    )
    .await;
    let v = second.assert_ok();
    assert_eq!(v["device_id"], "LAPTOP");
    let second = v["access_token"].as_str().unwrap().to_owned();
    as_user(&hs, &first)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    as_user(&hs, &second)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
    // Still one device of that id, and it kept its name.
    let d = alice.get("/_matrix/client/v3/devices").await;
    let devices = d.assert_ok()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2);
    let laptop = devices.iter().find(|d| d["device_id"] == "LAPTOP").unwrap();
    assert_eq!(laptop["display_name"], "Laptop");
}

#[tokio::test]
async fn logout_revokes_the_token_and_deletes_the_device() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let other = password_login(&hs, "alice", json!({})).await;
    let other = as_user(&hs, other.assert_ok()["access_token"].as_str().unwrap());
    alice
        .post("/_matrix/client/v3/logout", json!({}))
        .await
        .assert_ok();
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let d = other.get("/_matrix/client/v3/devices").await;
    let devices = d.assert_ok()["devices"].as_array().unwrap().clone();
    assert!(
        devices
            .iter()
            .all(|d| d["device_id"] != alice.device_id.as_str()),
        "devices: {devices:?}"
    );
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
}

#[tokio::test]
async fn logout_all_revokes_every_token_of_the_user() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let other = password_login(&hs, "alice", json!({})).await;
    let other = as_user(&hs, other.assert_ok()["access_token"].as_str().unwrap());
    alice
        .post("/_matrix/client/v3/logout/all", json!({}))
        .await
        .assert_ok();
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    bob.get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
    let relogin = password_login(&hs, "alice", json!({})).await;
    let fresh = as_user(&hs, relogin.assert_ok()["access_token"].as_str().unwrap());
    let d = fresh.get("/_matrix/client/v3/devices").await;
    assert_eq!(d.assert_ok()["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logout_without_token_is_missing_token() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.post("/_matrix/client/v3/logout", json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.post("/_matrix/client/v3/logout/all", json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens

#[tokio::test]
async fn refreshable_login_expires_and_refresh_issues_working_credentials() {
    let (hs, world) = test_server(1).await;
    TestClient::register(&hs, "alice").await;
    let lifetime = hs.config.access_token_lifetime_ms.unwrap();
    let r = password_login(&hs, "alice", json!({ "refresh_token": true })).await;
    let v = r.assert_ok();
    assert_eq!(v["expires_in_ms"], lifetime);
    let access = v["access_token"].as_str().unwrap().to_owned();
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let device = v["device_id"].clone();
    as_user(&hs, &access)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();

    world.advance(lifetime + 1);
    let expired = as_user(&hs, &access)
        .get("/_matrix/client/v3/account/whoami")
        .await;
    expired.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], true);

    let anon = TestClient::anonymous(&hs);
    let r = anon
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
        )
        .await;
    let v = r.assert_ok();
    assert_eq!(v["expires_in_ms"], lifetime);
    let new_access = v["access_token"].as_str().unwrap().to_owned();
    let new_refresh = v["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, refresh);
    let who = as_user(&hs, &new_access)
        .get("/_matrix/client/v3/account/whoami")
        .await;
    assert_eq!(who.assert_ok()["device_id"], device);
}

#[tokio::test]
async fn old_refresh_token_stays_valid_until_the_new_credentials_are_used() {
    let (hs, _) = test_server(1).await;
    TestClient::register(&hs, "alice").await;
    let v = password_login(&hs, "alice", json!({ "refresh_token": true })).await;
    let refresh = v.assert_ok()["refresh_token"].as_str().unwrap().to_owned();
    let anon = TestClient::anonymous(&hs);

    // The client lost the first answer and retries with the same refresh token.
    let lost = anon
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
        )
        .await;
    let lost_access = lost.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let retry = anon
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
        )
        .await;
    let v = retry.assert_ok();
    let access = v["access_token"].as_str().unwrap().to_owned();
    let next_refresh = v["refresh_token"].as_str().unwrap().to_owned();
    // The retry replaced the lost credentials.
    as_user(&hs, &lost_access)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");

    // Using the new access token revokes the old refresh token.
    as_user(&hs, &access)
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
    let stale = anon
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": refresh }),
        )
        .await;
    stale.assert_error(401, "M_UNKNOWN_TOKEN");

    // Using the new refresh token revokes its predecessor as well.
    let v = anon
        .post(
            "/_matrix/client/v3/refresh",
            json!({ "refresh_token": next_refresh }),
        )
        .await;
    v.assert_ok();
    anon.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": refresh }),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn unknown_refresh_token_is_rejected_and_logout_revokes_refresh_tokens() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": "syr_nope" }),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
    anon.post("/_matrix/client/v3/refresh", json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");

    let r = anon
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD, "refresh_token": true, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    let v = r.assert_ok();
    assert!(v["expires_in_ms"].is_u64(), "body: {v}");
    let refresh = v["refresh_token"].as_str().unwrap().to_owned();
    let alice = as_user(&hs, v["access_token"].as_str().unwrap());
    alice
        .post("/_matrix/client/v3/logout", json!({}))
        .await
        .assert_ok();
    anon.post(
        "/_matrix/client/v3/refresh",
        json!({ "refresh_token": refresh }),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
}

// ---------------------------------------------------------------------------------------------
// Password change and user-interactive auth

#[tokio::test]
async fn password_change_requires_the_current_password_through_uia() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let body = json!({ "new_password": "new secret" });
    let first = alice
        .post("/_matrix/client/v3/account/password", body)
        .await;
    let session = assert_uia(&first, &["m.login.password"]);

    let wrong = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "new secret", "auth": password_auth("alice", "wrong", &session) }),
        )
        .await;
    assert_uia(&wrong, &["m.login.password"]);
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    assert_eq!(wrong.body["session"], session);

    let ok = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "new secret", "auth": password_auth("alice", PASSWORD, &session) }),
        )
        .await;
    ok.assert_ok();
    password_login(&hs, "alice", json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let v = login(
        &hs,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "alice" }, "password": "new secret" }),
    )
    .await;
    v.assert_ok();
}

#[tokio::test]
async fn password_change_logs_out_other_devices_unless_asked_not_to() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let other = as_user(
        &hs,
        password_login(&hs, "alice", json!({})).await.assert_ok()["access_token"]
            .as_str()
            .unwrap(),
    );

    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "second", "logout_devices": false, "auth": password_auth("alice", PASSWORD, &Value::Null) }),
        )
        .await;
    r.assert_ok();
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();

    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "third", "auth": password_auth(&alice.user_id, "second", &Value::Null) }),
        )
        .await;
    r.assert_ok();
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
    let d = alice.get("/_matrix/client/v3/devices").await;
    assert_eq!(d.assert_ok()["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn password_change_is_refused_without_token_and_with_bad_input() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let r = anon
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x", "auth": password_auth("alice", PASSWORD, &Value::Null) }),
        )
        .await;
    r.assert_error(401, "M_MISSING_TOKEN");
    alice
        .post("/_matrix/client/v3/account/password", json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "", "auth": password_auth("alice", PASSWORD, &Value::Null) }),
        )
        .await;
    r.assert_error(400, "M_WEAK_PASSWORD");
}

#[tokio::test]
async fn uia_password_stage_must_name_the_logged_in_user() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    TestClient::register(&hs, "bob").await;
    // Bob's correct password does not authorise Alice's request.
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2", "auth": password_auth("bob", PASSWORD, &Value::Null) }),
        )
        .await;
    assert_uia(&r, &["m.login.password"]);
    assert_eq!(r.body["errcode"], "M_FORBIDDEN");
}

#[tokio::test]
async fn uia_session_cannot_be_reused_for_another_operation_or_invented() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": ["X"] }),
        )
        .await;
    let session = assert_uia(&r, &["m.login.password"]);
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2", "auth": password_auth("alice", PASSWORD, &session) }),
        )
        .await;
    r.assert_error(403, "M_FORBIDDEN");
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2", "auth": password_auth("alice", PASSWORD, &json!("invented")) }),
        )
        .await;
    r.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn uia_stage_not_offered_is_refused_with_the_flows() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    // Dummy auth must not stand in for the password.
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    assert_uia(&r, &["m.login.password"]);
    assert_eq!(r.body["errcode"], "M_UNRECOGNIZED");
    password_login(&hs, "alice", json!({})).await.assert_ok();
}

#[tokio::test]
async fn uia_sessions_expire() {
    let (hs, world) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2" }),
        )
        .await;
    let session = assert_uia(&r, &["m.login.password"]);
    world.advance(hearth_core::client::uia::SESSION_LIFETIME_MS + 1);
    let r = alice
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "x2", "auth": password_auth("alice", PASSWORD, &session) }),
        )
        .await;
    r.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn account_without_password_confirms_with_dummy_stage() {
    let (hs, _) = test_server(1).await;
    let r = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "nopass", "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    let v = r.assert_ok();
    let user = as_user(&hs, v["access_token"].as_str().unwrap());
    let r = user
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "finally" }),
        )
        .await;
    let session = assert_uia(&r, &["m.login.dummy"]);
    let r = user
        .post(
            "/_matrix/client/v3/account/password",
            json!({ "new_password": "finally", "auth": { "type": "m.login.dummy", "session": session } }),
        )
        .await;
    r.assert_ok();
    let v = login(
        &hs,
        json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "nopass" }, "password": "finally" }),
    )
    .await;
    v.assert_ok();
}

#[tokio::test]
async fn threepid_list_is_present_and_empty() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(v.assert_ok(), &json!({ "threepids": [] }));
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/account/3pid")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// ---------------------------------------------------------------------------------------------
// Devices

#[tokio::test]
async fn devices_are_listed_shown_and_renamed() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/devices").await;
    let devices = v.assert_ok()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["device_id"], alice.device_id);
    assert!(devices[0]["last_seen_ts"].is_u64());

    let path = format!("/_matrix/client/v3/devices/{}", enc(&alice.device_id));
    alice
        .put(&path, json!({ "display_name": "Work laptop" }))
        .await
        .assert_ok();
    let v = alice.get(&path).await;
    assert_eq!(v.assert_ok()["display_name"], "Work laptop");
    // No display name in the body leaves it unchanged.
    alice.put(&path, json!({})).await.assert_ok();
    assert_eq!(
        alice.get(&path).await.assert_ok()["display_name"],
        "Work laptop"
    );
}

#[tokio::test]
async fn unknown_or_foreign_device_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    alice
        .get("/_matrix/client/v3/devices/NOPE")
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .put(
            "/_matrix/client/v3/devices/NOPE",
            json!({ "display_name": "x" }),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    let bobs = format!("/_matrix/client/v3/devices/{}", enc(&bob.device_id));
    alice.get(&bobs).await.assert_error(404, "M_NOT_FOUND");
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/devices")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn deleting_a_device_requires_password_uia_and_revokes_its_token() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let phone = password_login(&hs, "alice", json!({ "device_id": "PHONE" })).await;
    let phone = as_user(&hs, phone.assert_ok()["access_token"].as_str().unwrap());

    let r = alice.delete("/_matrix/client/v3/devices/PHONE").await;
    let session = assert_uia(&r, &["m.login.password"]);
    phone
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();

    let r = alice
        .request(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(json!({ "auth": password_auth("alice", PASSWORD, &session) })),
        )
        .await;
    r.assert_ok();
    phone
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    alice
        .get("/_matrix/client/v3/devices/PHONE")
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Deleting a device that is already gone is fine.
    let r = alice
        .request(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(json!({ "auth": password_auth("alice", PASSWORD, &Value::Null) })),
        )
        .await;
    r.assert_ok();
}

#[tokio::test]
async fn bulk_device_deletion_removes_only_the_named_devices() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    for d in ["A", "B", "C"] {
        password_login(&hs, "alice", json!({ "device_id": d }))
            .await
            .assert_ok();
    }
    let r = alice
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": ["A", "B", "UNKNOWN"] }),
        )
        .await;
    let session = assert_uia(&r, &["m.login.password"]);
    let r = alice
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({ "devices": ["A", "B", "UNKNOWN"], "auth": password_auth("alice", PASSWORD, &session) }),
        )
        .await;
    r.assert_ok();
    let v = alice.get("/_matrix/client/v3/devices").await;
    let mut ids: Vec<String> = v.assert_ok()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec!["C".to_owned(), alice.device_id.clone()];
    expected.sort();
    assert_eq!(ids, expected);
    alice
        .post("/_matrix/client/v3/delete_devices", json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn deleting_a_device_deletes_its_e2ee_keys() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let phone = password_login(&hs, "alice", json!({ "device_id": "PHONE" })).await;
    let phone = as_user(&hs, phone.assert_ok()["access_token"].as_str().unwrap());
    let keys = json!({
        "device_keys": {
            "user_id": alice.user_id, "device_id": "PHONE",
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { "curve25519:PHONE": "curvekey", "ed25519:PHONE": "edkey" },
            "signatures": { alice.user_id.clone(): { "ed25519:PHONE": "sig" } },
        }
    });
    phone
        .post("/_matrix/client/v3/keys/upload", keys)
        .await
        .assert_ok();
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let v = alice
        .post("/_matrix/client/v3/keys/query", query.clone())
        .await;
    assert!(
        v.assert_ok()["device_keys"][&alice.user_id]["PHONE"].is_object(),
        "body: {}",
        v.body
    );

    let r = alice
        .request(
            Method::DELETE,
            "/_matrix/client/v3/devices/PHONE",
            Some(json!({ "auth": password_auth("alice", PASSWORD, &Value::Null) })),
        )
        .await;
    r.assert_ok();
    let v = alice.post("/_matrix/client/v3/keys/query", query).await;
    assert!(
        v.assert_ok()["device_keys"][&alice.user_id]
            .get("PHONE")
            .is_none(),
        "body: {}",
        v.body
    );
}

#[tokio::test]
async fn renaming_a_device_with_keys_is_a_device_list_change() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let user = ruma::UserId::parse(alice.user_id.as_str()).unwrap();
    let keys = json!({
        "device_keys": {
            "user_id": alice.user_id, "device_id": alice.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{}", alice.device_id): "curvekey", format!("ed25519:{}", alice.device_id): "edkey" },
            "signatures": { alice.user_id.clone(): { format!("ed25519:{}", alice.device_id): "sig" } },
        }
    });
    alice
        .post("/_matrix/client/v3/keys/upload", keys)
        .await
        .assert_ok();
    let before = hs.current_pos();
    let path = format!("/_matrix/client/v3/devices/{}", enc(&alice.device_id));
    alice
        .put(&path, json!({ "display_name": "Renamed" }))
        .await
        .assert_ok();
    let (changed, _) = hearth_core::client::keys::device_list_changes(&hs, &user, before)
        .await
        .unwrap();
    assert!(changed.contains(&user), "changed: {changed:?}");
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let v = alice.post("/_matrix/client/v3/keys/query", query).await;
    let unsigned = &v.assert_ok()["device_keys"][&alice.user_id][&alice.device_id]["unsigned"];
    assert_eq!(unsigned["device_display_name"], "Renamed");
}

// ---------------------------------------------------------------------------------------------
// Capabilities and small endpoints

#[tokio::test]
async fn capabilities_list_room_versions_and_account_abilities() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/capabilities").await;
    let caps = &v.assert_ok()["capabilities"];
    assert_eq!(caps["m.room_versions"]["default"], "11");
    let available = caps["m.room_versions"]["available"].as_object().unwrap();
    assert_eq!(available.get("11"), Some(&json!("stable")));
    // Room version 1 needs state resolution v1, which this server cannot run.
    assert!(available.get("1").is_none());
    assert!(available.values().all(|s| s == "stable"));
    assert_eq!(caps["m.change_password"], json!({ "enabled": true }));
    assert_eq!(caps["m.set_displayname"], json!({ "enabled": true }));
    assert_eq!(caps["m.set_avatar_url"], json!({ "enabled": true }));
    assert_eq!(caps["m.3pid_changes"], json!({ "enabled": false }));
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/capabilities")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn every_advertised_room_version_can_be_created() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/capabilities").await;
    let available = v.assert_ok()["capabilities"]["m.room_versions"]["available"]
        .as_object()
        .unwrap()
        .clone();
    for version in available.keys() {
        let r = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "room_version": version }),
            )
            .await;
        r.assert_ok();
    }
}

#[tokio::test]
async fn turn_server_answers_schema_valid_credentials_with_no_uris() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/voip/turnServer").await;
    assert_eq!(
        v.assert_ok(),
        &json!({"username": "", "password": "", "uris": [], "ttl": 86400})
    );
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/voip/turnServer")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn thirdparty_protocols_are_empty() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = alice.get("/_matrix/client/v3/thirdparty/protocols").await;
    assert_eq!(v.assert_ok(), &json!({}));
    TestClient::anonymous(&hs)
        .get("/_matrix/client/v3/thirdparty/protocols")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}
