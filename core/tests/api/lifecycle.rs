//! Account lifecycle: deactivation (with and without erasure), contact 3PIDs without an
//! identity server, whois, and OpenID tokens.

use hearth_core::Homeserver;
use hearth_core::client::{deactivate, openid, threepid};
use hearth_core::db::prefix;
use hearth_core::storage::Batch;
use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use ruma::thirdparty::Medium;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn uid(c: &TestClient) -> OwnedUserId {
    OwnedUserId::try_from(c.user_id.as_str()).unwrap()
}

fn password_auth(user: &str, password: &str, session: Option<&Value>) -> Value {
    let mut a = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": user },
        "password": password,
    });
    if let Some(s) = session {
        a["session"] = s.clone();
    }
    a
}

async fn deactivate(c: &TestClient, extra: Value) -> TestResponse {
    let mut body = json!({ "auth": password_auth(&c.user_id, PASSWORD, None) });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    c.post("/_matrix/client/v3/account/deactivate", body).await
}

async fn login(hs: &Homeserver, user: &str, password: &str) -> TestResponse {
    TestClient::anonymous(hs)
        .post(
            "/_matrix/client/v3/login",
            json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": user },
                "password": password,
            }),
        )
        .await
}

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"].as_str().unwrap().to_owned()
}

async fn member_state(c: &TestClient, room: &str, user: &str) -> Value {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(room),
        enc(user)
    );
    c.get(&path).await.assert_ok()["membership"].clone()
}

async fn add_threepid(hs: &Homeserver, user: &UserId, medium: Medium, address: &str) {
    let rec = json!({
        "medium": medium.as_str(), "address": address, "validated_at": 1, "added_at": 2,
    });
    let mut b = Batch::new();
    b.put(
        "threepids",
        threepid::threepid_key(user, &medium, address),
        serde_json::to_vec(&rec).unwrap(),
    );
    hs.store.write(b).await.unwrap();
}

async fn tree_has_user_records(hs: &Homeserver, tree: &'static str, user: &UserId) -> bool {
    !hs.scan_prefix(tree, &prefix(&[user.as_bytes()]))
        .await
        .unwrap()
        .is_empty()
}

// --- Deactivation ---------------------------------------------------------------------------

#[tokio::test]
async fn deactivation_asks_for_the_password_and_refuses_a_wrong_one() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let first = alice
        .post("/_matrix/client/v3/account/deactivate", json!({}))
        .await;
    assert_eq!(first.status.as_u16(), 401, "{}", first.body);
    assert_eq!(
        first.body["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    let session = first.body["session"].clone();
    assert!(session.is_string());

    let wrong = alice
        .post(
            "/_matrix/client/v3/account/deactivate",
            json!({ "auth": password_auth(&alice.user_id, "wrong", Some(&session)) }),
        )
        .await;
    assert_eq!(wrong.status.as_u16(), 401);
    assert_eq!(wrong.body["errcode"], "M_FORBIDDEN");
    // Nothing happened: the account still works.
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();

    let ok = alice
        .post(
            "/_matrix/client/v3/account/deactivate",
            json!({ "auth": password_auth(&alice.user_id, PASSWORD, Some(&session)) }),
        )
        .await;
    assert_eq!(
        ok.assert_ok(),
        &json!({ "id_server_unbind_result": "success" })
    );
}

#[tokio::test]
async fn deactivated_account_cannot_log_in_and_loses_every_device() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let second = login(&hs, "alice", PASSWORD).await;
    let second_token = second.assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    deactivate(&alice, json!({})).await.assert_ok();

    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let other = TestClient {
        token: Some(second_token),
        ..alice.clone()
    };
    other
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    assert!(!tree_has_user_records(&hs, "devices", &uid(&alice)).await);
    login(&hs, "alice", PASSWORD)
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
    // A wrong password still reads as a wrong password, so logins cannot probe accounts.
    login(&hs, "alice", "wrong")
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn deactivated_user_id_is_never_registered_again() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    deactivate(&alice, json!({})).await.assert_ok();
    let again = TestClient::anonymous(&hs)
        .post(
            "/_matrix/client/v3/register",
            json!({ "username": "alice", "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
        )
        .await;
    again.assert_error(400, "M_USER_IN_USE");
}

#[tokio::test]
async fn deactivation_leaves_joined_invited_and_knocked_rooms() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let joined = create_room(&alice, json!({ "preset": "public_chat" })).await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&joined)),
        json!({}),
    )
    .await
    .assert_ok();
    let invited = create_room(&alice, json!({})).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&invited)),
            json!({ "user_id": bob.user_id }),
        )
        .await
        .assert_ok();
    let knocked = create_room(
        &alice,
        json!({ "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }] }),
    )
    .await;
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&knocked)),
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(member_state(&alice, &knocked, &bob.user_id).await, "knock");
    let own = create_room(&bob, json!({})).await;

    deactivate(&bob, json!({})).await.assert_ok();

    assert_eq!(member_state(&alice, &joined, &bob.user_id).await, "leave");
    assert_eq!(member_state(&alice, &invited, &bob.user_id).await, "leave");
    assert_eq!(member_state(&alice, &knocked, &bob.user_id).await, "leave");
    let members = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&joined)
        ))
        .await;
    let members = members.assert_ok()["joined"].as_object().unwrap().clone();
    assert!(members.contains_key(&alice.user_id) && !members.contains_key(&bob.user_id));
    // Bob's own room is left too, even though nobody else is there.
    let rooms = hearth_core::db::rooms::joined_rooms(&hs, &uid(&bob))
        .await
        .unwrap();
    assert!(
        rooms.is_empty(),
        "still joined to {rooms:?} (own room {own})"
    );
}

#[tokio::test]
async fn deactivation_without_erase_keeps_the_profile() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    deactivate(&alice, json!({})).await.assert_ok();
    let p = bob
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(p.assert_ok()["displayname"], "alice");
    assert!(!deactivate::is_erased(&hs, &uid(&alice)).await.unwrap());
}

#[tokio::test]
async fn erase_clears_profile_fields_account_data_and_filters() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let me = enc(&alice.user_id);
    alice
        .put(
            &format!("/_matrix/client/v3/profile/{me}/avatar_url"),
            json!({ "avatar_url": "mxc://example.org/abc" }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &format!("/_matrix/client/v3/profile/{me}/m.tz"),
            json!({ "m.tz": "Europe/Paris" }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &format!("/_matrix/client/v3/user/{me}/account_data/org.example.secret"),
            json!({ "k": "v" }),
        )
        .await
        .assert_ok();
    alice
        .post(&format!("/_matrix/client/v3/user/{me}/filter"), json!({}))
        .await
        .assert_ok();
    let user = uid(&alice);
    for tree in [
        "profile_fields",
        "account_data",
        "account_data_stream",
        "filters",
    ] {
        assert!(
            tree_has_user_records(&hs, tree, &user).await,
            "{tree} empty before"
        );
    }

    deactivate(&alice, json!({ "erase": true }))
        .await
        .assert_ok();

    let p = bob.get(&format!("/_matrix/client/v3/profile/{me}")).await;
    assert_eq!(p.assert_ok(), &json!({}));
    bob.get(&format!("/_matrix/client/v3/profile/{me}/displayname"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    for tree in [
        "profile_fields",
        "account_data",
        "account_data_stream",
        "filters",
    ] {
        assert!(
            !tree_has_user_records(&hs, tree, &user).await,
            "{tree} not erased"
        );
    }
    assert!(deactivate::is_erased(&hs, &user).await.unwrap());
    // Other users' data is untouched.
    assert!(
        hearth_core::db::users::get_user(&hs, &uid(&bob))
            .await
            .unwrap()
            .unwrap()
            .displayname
            .is_some()
    );
}

#[tokio::test]
async fn deactivation_without_a_token_needs_the_password() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let path = "/_matrix/client/v3/account/deactivate";

    let flows = anon.post(path, json!({})).await;
    assert_eq!(flows.status.as_u16(), 401);
    assert_eq!(
        flows.body["flows"],
        json!([{ "stages": ["m.login.password"] }])
    );
    assert!(flows.body.get("errcode").is_none());

    let dummy = anon
        .post(path, json!({ "auth": { "type": "m.login.dummy" } }))
        .await;
    assert_eq!(dummy.status.as_u16(), 401);
    assert!(dummy.body["errcode"].is_string());

    let wrong = anon
        .post(
            path,
            json!({ "auth": password_auth("alice", "nope", None) }),
        )
        .await;
    assert_eq!(
        (wrong.status.as_u16(), wrong.body["errcode"].clone()),
        (401, json!("M_FORBIDDEN"))
    );
    let unknown = anon
        .post(
            path,
            json!({ "auth": password_auth("nobody", PASSWORD, None) }),
        )
        .await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.body["errcode"].clone()),
        (401, json!("M_FORBIDDEN"))
    );
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();

    anon.post(
        path,
        json!({ "auth": password_auth("alice", PASSWORD, None) }),
    )
    .await
    .assert_ok();
    alice
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // The account is gone; doing it again says so.
    anon.post(
        path,
        json!({ "auth": password_auth("alice", PASSWORD, None) }),
    )
    .await
    .assert_error(403, "M_USER_DEACTIVATED");
}

#[tokio::test]
async fn deactivating_an_account_with_3pids_reports_no_unbind_support() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    add_threepid(&hs, &uid(&alice), Medium::Email, "alice@example.org").await;
    let r = deactivate(&alice, json!({ "id_server": "id.example.org" })).await;
    assert_eq!(r.assert_ok()["id_server_unbind_result"], "no-support");
    assert!(!tree_has_user_records(&hs, "threepids", &uid(&alice)).await);
}

#[tokio::test]
async fn deactivation_revokes_openid_tokens() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                enc(&alice.user_id)
            ),
            json!({}),
        )
        .await;
    let token = r.assert_ok()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        openid::user_for_token(&hs, &token).await.unwrap(),
        uid(&alice)
    );
    deactivate(&alice, json!({})).await.assert_ok();
    let err = openid::user_for_token(&hs, &token).await.unwrap_err();
    assert_eq!(err.errcode, "M_UNKNOWN_TOKEN");
}

/// An ed25519 cross-signing key named after its public key, as the spec wants.
fn cross_signing_key(user: &str, usage: &str) -> (Value, Ed25519KeyPair) {
    let doc = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&doc, "probe".to_owned()).unwrap();
    let public = Base64::<ruma::serde::base64::Standard>::new(probe.public_key().to_vec()).encode();
    let pair = Ed25519KeyPair::from_der(&doc, public.clone()).unwrap();
    let json = json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } });
    (json, pair)
}

fn signed_by(object: &Value, user: &str, key: &Ed25519KeyPair) -> Value {
    let mut canonical: CanonicalJsonObject = serde_json::from_value(object.clone()).unwrap();
    sign_json(user, key, &mut canonical).unwrap();
    serde_json::to_value(canonical).unwrap()
}

#[tokio::test]
async fn deactivation_removes_cross_signing_keys_and_key_backups() {
    let (hs, _) = test_server(21).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let (master, master_pair) = cross_signing_key(&alice.user_id, "master");
    let (self_signing, _) = cross_signing_key(&alice.user_id, "self_signing");
    let (user_signing, _) = cross_signing_key(&alice.user_id, "user_signing");
    let upload = json!({
        "master_key": master,
        "self_signing_key": signed_by(&self_signing, &alice.user_id, &master_pair),
        "user_signing_key": signed_by(&user_signing, &alice.user_id, &master_pair),
    });
    alice
        .post("/_matrix/client/v3/keys/device_signing/upload", upload)
        .await
        .assert_ok();
    let backup = json!({
        "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2",
        "auth_data": { "public_key": "abcdefg", "signatures": {} },
    });
    alice
        .post("/_matrix/client/v3/room_keys/version", backup)
        .await
        .assert_ok();
    let query = json!({ "device_keys": { alice.user_id.clone(): [] } });
    let before = bob
        .post("/_matrix/client/v3/keys/query", query.clone())
        .await;
    assert!(
        before.assert_ok()["master_keys"]
            .get(&alice.user_id)
            .is_some(),
        "{}",
        before.body
    );
    assert!(!hs.scan_prefix("key_backup", &[]).await.unwrap().is_empty());

    deactivate(&alice, json!({})).await.assert_ok();

    let after = bob.post("/_matrix/client/v3/keys/query", query).await;
    let after = after.assert_ok();
    for field in ["master_keys", "self_signing_keys", "user_signing_keys"] {
        assert!(
            after
                .get(field)
                .and_then(|m| m.get(&alice.user_id))
                .is_none(),
            "{after}"
        );
    }
    assert!(hs.scan_prefix("key_backup", &[]).await.unwrap().is_empty());
    assert!(
        hs.scan_prefix("cross_signing", &[])
            .await
            .unwrap()
            .is_empty()
    );
}

// --- 3PIDs ----------------------------------------------------------------------------------

#[tokio::test]
async fn adding_a_3pid_fails_since_no_session_can_be_validated() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let path = "/_matrix/client/v3/account/3pid/add";
    alice
        .post(
            path,
            json!({ "client_secret": "d0nt-T3ll", "sid": "abc123987" }),
        )
        .await
        .assert_error(403, "M_THREEPID_AUTH_FAILED");
    alice
        .post(path, json!({ "client_secret": "d0nt-T3ll" }))
        .await
        .assert_error(400, "M_BAD_JSON");
    TestClient::anonymous(&hs)
        .post(
            path,
            json!({ "client_secret": "d0nt-T3ll", "sid": "abc123987" }),
        )
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let list = alice.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(list.assert_ok(), &json!({ "threepids": [] }));
}

#[tokio::test]
async fn deleting_a_3pid_removes_it_from_the_account_only() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    add_threepid(&hs, &uid(&alice), Medium::Email, "alice@example.org").await;
    add_threepid(&hs, &uid(&alice), Medium::Msisdn, "447700900000").await;
    let list = alice.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(list.assert_ok()["threepids"].as_array().unwrap().len(), 2);

    let body = json!({ "medium": "email", "address": "alice@example.org" });
    // Bob cannot remove Alice's address: the request only ever touches the caller's account.
    bob.post("/_matrix/client/v3/account/3pid/delete", body.clone())
        .await
        .assert_ok();
    assert_eq!(
        alice
            .get("/_matrix/client/v3/account/3pid")
            .await
            .assert_ok()["threepids"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let r = alice
        .post("/_matrix/client/v3/account/3pid/delete", body.clone())
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "id_server_unbind_result": "no-support" })
    );
    let list = alice.get("/_matrix/client/v3/account/3pid").await;
    let remaining = list.assert_ok()["threepids"].as_array().unwrap().clone();
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["medium"], "msisdn");
    // Deleting it again is fine: the address is not on the account, as asked.
    alice
        .post("/_matrix/client/v3/account/3pid/delete", body)
        .await
        .assert_ok();
}

#[tokio::test]
async fn threepid_requests_are_validated() {
    let (hs, _) = test_server(12).await;
    let alice = TestClient::register(&hs, "alice").await;
    for path in [
        "/_matrix/client/v3/account/3pid/delete",
        "/_matrix/client/v3/account/3pid/unbind",
    ] {
        alice
            .post(path, json!({ "medium": "carrier-pigeon", "address": "x" }))
            .await
            .assert_error(400, "M_INVALID_PARAM");
        alice
            .post(path, json!({ "medium": "email" }))
            .await
            .assert_error(400, "M_BAD_JSON");
        TestClient::anonymous(&hs)
            .post(path, json!({ "medium": "email", "address": "a@b.c" }))
            .await
            .assert_error(401, "M_MISSING_TOKEN");
    }
}

#[tokio::test]
async fn unbinding_a_3pid_keeps_it_on_the_account() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    add_threepid(&hs, &uid(&alice), Medium::Email, "alice@example.org").await;
    let r = alice
        .post("/_matrix/client/v3/account/3pid/unbind", json!({ "medium": "email", "address": "alice@example.org", "id_server": "id.example.org" }))
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "id_server_unbind_result": "no-support" })
    );
    let list = alice.get("/_matrix/client/v3/account/3pid").await;
    assert_eq!(
        list.assert_ok()["threepids"][0]["address"],
        "alice@example.org"
    );
}

// --- whois ----------------------------------------------------------------------------------

#[tokio::test]
async fn whois_lists_own_devices_with_last_seen() {
    let (hs, _) = test_server(14).await;
    let alice = TestClient::register(&hs, "alice").await;
    let second = login(&hs, "alice", PASSWORD).await;
    let second_device = second.assert_ok()["device_id"].as_str().unwrap().to_owned();
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/admin/whois/{}",
            enc(&alice.user_id)
        ))
        .await;
    let v = r.assert_ok();
    assert_eq!(v["user_id"], alice.user_id.as_str());
    let devices = v["devices"].as_object().unwrap();
    assert_eq!(devices.len(), 2);
    for d in [&alice.device_id, &second_device] {
        let conn = &devices[d.as_str()]["sessions"][0]["connections"][0];
        assert!(conn["last_seen"].as_u64().is_some_and(|t| t > 0), "{v}");
        // Nothing unknown is written as null: the spec's fields are strings when present.
        assert!(
            conn.as_object().unwrap().values().all(|x| !x.is_null()),
            "{v}"
        );
    }
    // The r0 path answers too.
    alice
        .get(&format!(
            "/_matrix/client/r0/admin/whois/{}",
            enc(&alice.user_id)
        ))
        .await
        .assert_ok();
}

#[tokio::test]
async fn whois_of_another_user_is_forbidden() {
    let (hs, _) = test_server(15).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    alice
        .get(&format!(
            "/_matrix/client/v3/admin/whois/{}",
            enc(&bob.user_id)
        ))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .get("/_matrix/client/v3/admin/whois/not-a-user-id")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    TestClient::anonymous(&hs)
        .get(&format!(
            "/_matrix/client/v3/admin/whois/{}",
            enc(&bob.user_id)
        ))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// --- OpenID ---------------------------------------------------------------------------------

fn openid_path(user: &str) -> String {
    format!("/_matrix/client/v3/user/{}/openid/request_token", enc(user))
}

#[tokio::test]
async fn openid_token_identifies_its_user_to_third_parties() {
    let (hs, _) = test_server(16).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice.post(&openid_path(&alice.user_id), json!({})).await;
    let v = r.assert_ok();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["matrix_server_name"], hs.server_name().as_str());
    assert_eq!(v["expires_in"], openid::TOKEN_LIFETIME_MS / 1000);
    let token = v["access_token"].as_str().unwrap();
    assert_eq!(
        openid::user_for_token(&hs, token).await.unwrap(),
        uid(&alice)
    );
    let err = openid::user_for_token(&hs, "made-up").await.unwrap_err();
    assert_eq!((err.status.as_u16(), err.errcode), (401, "M_UNKNOWN_TOKEN"));
}

#[tokio::test]
async fn openid_token_is_not_an_access_token() {
    let (hs, _) = test_server(17).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice.post(&openid_path(&alice.user_id), json!({})).await;
    let token = r.assert_ok()["access_token"].as_str().unwrap().to_owned();
    let as_token = TestClient {
        token: Some(token),
        ..alice.clone()
    };
    as_token
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    as_token
        .post(&openid_path(&alice.user_id), json!({}))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn openid_token_only_for_yourself() {
    let (hs, _) = test_server(18).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    alice
        .post(&openid_path(&bob.user_id), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    TestClient::anonymous(&hs)
        .post(&openid_path(&bob.user_id), json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn openid_tokens_expire_and_are_swept() {
    let (hs, world) = test_server(19).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r = alice.post(&openid_path(&alice.user_id), json!({})).await;
    let old = r.assert_ok()["access_token"].as_str().unwrap().to_owned();
    world.advance(openid::TOKEN_LIFETIME_MS);
    assert_eq!(
        openid::user_for_token(&hs, &old).await.unwrap_err().errcode,
        "M_UNKNOWN_TOKEN"
    );
    let r = alice.post(&openid_path(&alice.user_id), json!({})).await;
    let new = r.assert_ok()["access_token"].as_str().unwrap().to_owned();
    openid::user_for_token(&hs, &new).await.unwrap();
    // The expired token's records are gone; only the new token's two remain.
    let rows = hs.scan_prefix("openid", &[]).await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
}

// --- Spec schemas ---------------------------------------------------------------------------

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

#[cfg(not(target_arch = "wasm32"))]
#[tokio::test]
async fn responses_match_the_spec_schemas() {
    use http::Method;
    let spec = spec::Spec::load();
    let check = |method: Method, path: &str, r: &TestResponse| {
        if let Err(v) = spec.validate(&method, path, r.status.as_u16(), &r.raw) {
            let v: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!(
                "{method} {path} answered {} {}: {}",
                r.status,
                r.body,
                v.join("; ")
            );
        }
    };
    let (hs, _) = test_server(20).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    add_threepid(&hs, &uid(&alice), Medium::Email, "alice@example.org").await;

    let whois = format!("/_matrix/client/v3/admin/whois/{}", enc(&alice.user_id));
    check(
        Method::GET,
        &whois,
        alice.get(&whois).await.assert_ok_response(),
    );
    let other = format!("/_matrix/client/v3/admin/whois/{}", enc(&bob.user_id));
    check(Method::GET, &other, &alice.get(&other).await);
    let path = openid_path(&alice.user_id);
    check(
        Method::POST,
        &path,
        alice.post(&path, json!({})).await.assert_ok_response(),
    );
    for path in [
        "/_matrix/client/v3/account/3pid/unbind",
        "/_matrix/client/v3/account/3pid/delete",
    ] {
        let r = alice
            .post(
                path,
                json!({ "medium": "email", "address": "alice@example.org" }),
            )
            .await;
        check(Method::POST, path, r.assert_ok_response());
    }
    let path = "/_matrix/client/v3/account/3pid/add";
    check(
        Method::POST,
        path,
        &alice
            .post(path, json!({ "client_secret": "s3cret", "sid": "x" }))
            .await,
    );
    let path = "/_matrix/client/v3/account/3pid";
    check(
        Method::GET,
        path,
        alice.get(path).await.assert_ok_response(),
    );

    let path = "/_matrix/client/v3/account/deactivate";
    let uia = alice.post(path, json!({})).await;
    assert_eq!(uia.status.as_u16(), 401);
    check(Method::POST, path, &uia);
    let failed = alice
        .post(
            path,
            json!({ "auth": password_auth(&alice.user_id, "wrong", Some(&uia.body["session"])) }),
        )
        .await;
    assert_eq!(failed.status.as_u16(), 401);
    check(Method::POST, path, &failed);
    check(
        Method::POST,
        path,
        deactivate(&alice, json!({ "erase": true }))
            .await
            .assert_ok_response(),
    );
}

/// `assert_ok` for a response that is checked further.
trait OkResponse {
    fn assert_ok_response(&self) -> &Self;
}

impl OkResponse for TestResponse {
    fn assert_ok_response(&self) -> &Self {
        self.assert_ok();
        self
    }
}
