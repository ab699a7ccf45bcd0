//! Server-side key backups: versions (`/room_keys/version`) and the session keys in them
//! (`/room_keys/keys`), through `Homeserver::handle`.

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use serde_json::{Value, json};

const ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";
const ROOM: &str = "!room:example.org";
const OTHER_ROOM: &str = "!other:example.org";

fn version_body(public_key: &str) -> Value {
    json!({
        "algorithm": ALGORITHM,
        "auth_data": {
            "public_key": public_key,
            "signatures": { "@alice:example.org": { "ed25519:DEV": "sig" } },
        },
    })
}

async fn create_version(c: &TestClient, public_key: &str) -> String {
    let r = c
        .post(
            "/_matrix/client/v3/room_keys/version",
            version_body(public_key),
        )
        .await;
    r.assert_ok()["version"].as_str().unwrap().to_owned()
}

fn key_data(first_message_index: u64, forwarded_count: u64, is_verified: bool, tag: &str) -> Value {
    json!({
        "first_message_index": first_message_index,
        "forwarded_count": forwarded_count,
        "is_verified": is_verified,
        "session_data": { "ephemeral": "eph", "ciphertext": tag, "mac": "mac" },
    })
}

fn session_path(version: &str, room: &str, session: &str) -> String {
    format!(
        "/_matrix/client/v3/room_keys/keys/{}/{}?version={version}",
        enc(room),
        enc(session)
    )
}

fn room_path(version: &str, room: &str) -> String {
    format!(
        "/_matrix/client/v3/room_keys/keys/{}?version={version}",
        enc(room)
    )
}

fn all_path(version: &str) -> String {
    format!("/_matrix/client/v3/room_keys/keys?version={version}")
}

async fn put_session(c: &TestClient, version: &str, session: &str, data: Value) -> TestResponse {
    c.put(&session_path(version, ROOM, session), data).await
}

/// The `(etag, count)` of a write answer.
fn etag_count(r: &TestResponse) -> (String, u64) {
    let body = r.assert_ok();
    (
        body["etag"].as_str().expect("etag is a string").to_owned(),
        body["count"].as_u64().expect("count is an integer"),
    )
}

async fn stored_ciphertext(c: &TestClient, version: &str, session: &str) -> Value {
    let r = c.get(&session_path(version, ROOM, session)).await;
    r.assert_ok()["session_data"]["ciphertext"].clone()
}

// ---------------------------------------------------------------------------------------------
// Versions

#[tokio::test]
async fn no_backup_means_latest_version_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .get("/_matrix/client/v3/room_keys/version")
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn created_version_is_served_with_algorithm_auth_data_count_and_etag() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "pubkey1").await;

    for path in [
        "/_matrix/client/v3/room_keys/version".to_owned(),
        format!("/_matrix/client/v3/room_keys/version/{version}"),
    ] {
        let r = alice.get(&path).await;
        let body = r.assert_ok();
        assert_eq!(body["version"], json!(version));
        assert_eq!(body["algorithm"], ALGORITHM);
        assert_eq!(body["auth_data"], version_body("pubkey1")["auth_data"]);
        assert_eq!(body["count"], 0);
        assert!(body["etag"].is_string(), "etag is an opaque string: {body}");
    }
}

#[tokio::test]
async fn newest_version_is_the_current_one() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let first = create_version(&alice, "pubkey1").await;
    let second = create_version(&alice, "pubkey2").await;
    assert_ne!(first, second);
    let r = alice.get("/_matrix/client/v3/room_keys/version").await;
    assert_eq!(r.assert_ok()["version"], json!(second));
    assert_eq!(r.body["auth_data"]["public_key"], "pubkey2");
    // The older version is still readable.
    let r = alice
        .get(&format!("/_matrix/client/v3/room_keys/version/{first}"))
        .await;
    assert_eq!(r.assert_ok()["auth_data"]["public_key"], "pubkey1");
}

#[tokio::test]
async fn version_needs_algorithm_and_object_auth_data() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let path = "/_matrix/client/v3/room_keys/version";
    alice
        .post(path, json!({ "auth_data": { "public_key": "k" } }))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    alice
        .post(path, json!({ "algorithm": ALGORITHM }))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    alice
        .post(path, json!({ "algorithm": ALGORITHM, "auth_data": "nope" }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(path, json!({ "algorithm": 7, "auth_data": {} }))
        .await
        .assert_error(400, "M_BAD_JSON");
    // The spec's algorithm requires the backup's public key.
    alice
        .post(path, json!({ "algorithm": ALGORITHM, "auth_data": {} }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice.get(path).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn other_algorithms_are_stored_as_sent() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let body = json!({ "algorithm": "org.example.backup", "auth_data": { "anything": [1, 2] } });
    let r = alice
        .post("/_matrix/client/v3/room_keys/version", body.clone())
        .await;
    let version = r.assert_ok()["version"].as_str().unwrap().to_owned();
    let r = alice
        .get(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await;
    assert_eq!(r.assert_ok()["algorithm"], body["algorithm"]);
    assert_eq!(r.body["auth_data"], body["auth_data"]);
}

#[tokio::test]
async fn unknown_version_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    create_version(&alice, "k").await;
    for v in ["99", "abc", "01"] {
        alice
            .get(&format!("/_matrix/client/v3/room_keys/version/{v}"))
            .await
            .assert_error(404, "M_NOT_FOUND");
        alice
            .put(
                &format!("/_matrix/client/v3/room_keys/version/{v}"),
                version_body("k"),
            )
            .await
            .assert_error(404, "M_NOT_FOUND");
        alice
            .delete(&format!("/_matrix/client/v3/room_keys/version/{v}"))
            .await
            .assert_error(404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn update_replaces_auth_data_only() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "old").await;
    let path = format!("/_matrix/client/v3/room_keys/version/{version}");
    let mut body = version_body("new");
    body["version"] = json!(version);
    alice.put(&path, body).await.assert_ok();
    let r = alice.get(&path).await;
    assert_eq!(r.assert_ok()["auth_data"]["public_key"], "new");
    assert_eq!(r.body["algorithm"], ALGORITHM);
}

#[tokio::test]
async fn update_cannot_change_the_algorithm() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "old").await;
    let path = format!("/_matrix/client/v3/room_keys/version/{version}");
    alice
        .put(
            &path,
            json!({ "algorithm": "org.example.other", "auth_data": { "public_key": "x" } }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let r = alice.get(&path).await;
    assert_eq!(r.assert_ok()["auth_data"]["public_key"], "old");
}

#[tokio::test]
async fn update_with_a_different_version_in_the_body_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "old").await;
    let mut body = version_body("new");
    body["version"] = json!("12345");
    alice
        .put(
            &format!("/_matrix/client/v3/room_keys/version/{version}"),
            body,
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn deleting_a_version_deletes_its_keys_and_succeeds_again() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let first = create_version(&alice, "k1").await;
    let second = create_version(&alice, "k2").await;
    put_session(&alice, &second, "s1", key_data(0, 0, false, "a"))
        .await
        .assert_ok();

    let path = format!("/_matrix/client/v3/room_keys/version/{second}");
    alice.delete(&path).await.assert_ok();
    alice.get(&path).await.assert_error(404, "M_NOT_FOUND");
    alice
        .get(&session_path(&second, ROOM, "s1"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // "If the backup was previously deleted, the call should succeed."
    alice.delete(&path).await.assert_ok();

    // The previous version becomes current again; the deleted number is never reused.
    let r = alice.get("/_matrix/client/v3/room_keys/version").await;
    assert_eq!(r.assert_ok()["version"], json!(first));
    let third = create_version(&alice, "k3").await;
    assert_ne!(third, second);
    assert_ne!(third, first);
}

#[tokio::test]
async fn backups_are_private_to_their_owner() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let version = create_version(&alice, "k").await;
    put_session(&alice, &version, "s1", key_data(0, 0, true, "secret"))
        .await
        .assert_ok();

    bob.get("/_matrix/client/v3/room_keys/version")
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&all_path(&version))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&session_path(&version, ROOM, "s1"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.delete(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Alice's backup is untouched.
    assert_eq!(stored_ciphertext(&alice, &version, "s1").await, "secret");
}

#[tokio::test]
async fn backup_endpoints_need_an_access_token() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.get("/_matrix/client/v3/room_keys/version")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.post("/_matrix/client/v3/room_keys/version", version_body("k"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.get(&all_path("1"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.put(&session_path("1", ROOM, "s"), key_data(0, 0, false, "a"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// ---------------------------------------------------------------------------------------------
// Keys

#[tokio::test]
async fn keys_are_readable_per_session_room_and_backup() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "k").await;
    put_session(&alice, &version, "s1", key_data(0, 0, false, "one"))
        .await
        .assert_ok();
    alice
        .put(
            &room_path(&version, OTHER_ROOM),
            json!({ "sessions": { "s2": key_data(3, 1, true, "two") } }),
        )
        .await
        .assert_ok();

    let r = alice.get(&session_path(&version, ROOM, "s1")).await;
    assert_eq!(r.assert_ok(), &key_data(0, 0, false, "one"));

    let r = alice.get(&room_path(&version, OTHER_ROOM)).await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "sessions": { "s2": key_data(3, 1, true, "two") } })
    );

    let r = alice.get(&all_path(&version)).await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "rooms": {
            ROOM: { "sessions": { "s1": key_data(0, 0, false, "one") } },
            OTHER_ROOM: { "sessions": { "s2": key_data(3, 1, true, "two") } },
        } })
    );
}

#[tokio::test]
async fn empty_backup_answers_empty_maps() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "k").await;
    let r = alice.get(&all_path(&version)).await;
    assert_eq!(r.assert_ok(), &json!({ "rooms": {} }));
    let r = alice.get(&room_path(&version, ROOM)).await;
    assert_eq!(r.assert_ok(), &json!({ "sessions": {} }));
    alice
        .get(&session_path(&version, ROOM, "nope"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn bulk_upload_stores_every_room_and_counts_them() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "k").await;
    let r = alice
        .put(
            &all_path(&version),
            json!({ "rooms": {
                ROOM: { "sessions": { "a": key_data(0, 0, false, "a"), "b": key_data(0, 0, false, "b") } },
                OTHER_ROOM: { "sessions": { "c": key_data(0, 0, false, "c") } },
            } }),
        )
        .await;
    let (_, count) = etag_count(&r);
    assert_eq!(count, 3);
    let r = alice
        .get(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await;
    assert_eq!(r.assert_ok()["count"], 3);
}

#[tokio::test]
async fn keys_can_only_be_written_to_the_current_version() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    // No backup at all: nothing to write to.
    put_session(&alice, "1", "s1", key_data(0, 0, false, "a"))
        .await
        .assert_error(404, "M_NOT_FOUND");

    let old = create_version(&alice, "k1").await;
    let current = create_version(&alice, "k2").await;
    for r in [
        put_session(&alice, &old, "s1", key_data(0, 0, false, "a")).await,
        alice
            .put(
                &room_path(&old, ROOM),
                json!({ "sessions": { "s1": key_data(0, 0, false, "a") } }),
            )
            .await,
        alice.put(&all_path(&old), json!({ "rooms": {} })).await,
        put_session(&alice, "777", "s1", key_data(0, 0, false, "a")).await,
    ] {
        r.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
        assert_eq!(r.body["current_version"], json!(current));
    }
    let r = alice.get(&all_path(&old)).await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "rooms": {} }),
        "nothing was written"
    );
}

#[tokio::test]
async fn etag_changes_with_every_change_and_only_then() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let version = create_version(&alice, "k").await;
    let info = alice
        .get(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await;
    let initial = info.assert_ok()["etag"].as_str().unwrap().to_owned();

    let (e1, c1) =
        etag_count(&put_session(&alice, &version, "s1", key_data(5, 0, false, "a")).await);
    assert_ne!(e1, initial);
    assert_eq!(c1, 1);

    // The same key again changes nothing.
    let (e2, c2) =
        etag_count(&put_session(&alice, &version, "s1", key_data(5, 0, false, "a")).await);
    assert_eq!((e2.as_str(), c2), (e1.as_str(), 1));

    // A better key replaces it: new etag, same count.
    let (e3, c3) =
        etag_count(&put_session(&alice, &version, "s1", key_data(2, 0, false, "b")).await);
    assert_ne!(e3, e2);
    assert_eq!(c3, 1);

    let info = alice
        .get(&format!("/_matrix/client/v3/room_keys/version/{version}"))
        .await;
    assert_eq!(info.assert_ok()["etag"], json!(e3));
    assert_eq!(info.body["count"], 1);
}

#[tokio::test]
async fn verified_key_beats_unverified_whatever_its_index() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    put_session(&alice, &v, "s", key_data(0, 0, false, "unverified"))
        .await
        .assert_ok();
    put_session(&alice, &v, "s", key_data(10, 5, true, "verified"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "verified");
    // An unverified key never replaces a verified one, even a key that decrypts more.
    put_session(&alice, &v, "s", key_data(0, 0, false, "unverified again"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "verified");
}

#[tokio::test]
async fn lower_first_message_index_wins_between_equally_verified_keys() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    put_session(&alice, &v, "s", key_data(4, 0, true, "four"))
        .await
        .assert_ok();
    put_session(&alice, &v, "s", key_data(7, 0, true, "seven"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "four");
    // The index outranks the forwarding count.
    put_session(&alice, &v, "s", key_data(1, 9, true, "one"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "one");
}

#[tokio::test]
async fn lower_forwarded_count_wins_when_all_else_is_equal() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    put_session(&alice, &v, "s", key_data(0, 3, false, "three"))
        .await
        .assert_ok();
    put_session(&alice, &v, "s", key_data(0, 4, false, "four"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "three");
    put_session(&alice, &v, "s", key_data(0, 1, false, "one"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "one");
    // A tie keeps the stored key.
    put_session(&alice, &v, "s", key_data(0, 1, false, "tie"))
        .await
        .assert_ok();
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "one");
}

#[tokio::test]
async fn malformed_key_data_is_refused_whole() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    let mut missing = key_data(0, 0, false, "a");
    missing.as_object_mut().unwrap().remove("is_verified");
    put_session(&alice, &v, "s", missing)
        .await
        .assert_error(400, "M_BAD_JSON");
    let mut negative = key_data(0, 0, false, "a");
    negative["first_message_index"] = json!(-1);
    put_session(&alice, &v, "s", negative)
        .await
        .assert_error(400, "M_BAD_JSON");
    let mut not_object = key_data(0, 0, false, "a");
    not_object["session_data"] = json!("opaque");
    put_session(&alice, &v, "s", not_object)
        .await
        .assert_error(400, "M_BAD_JSON");

    // One bad session in a bulk upload stores none of the good ones.
    let r = alice
        .put(
            &all_path(&v),
            json!({ "rooms": { ROOM: { "sessions": {
                "good": key_data(0, 0, false, "a"),
                "bad": { "first_message_index": 0 },
            } } } }),
        )
        .await;
    r.assert_error(400, "M_BAD_JSON");
    let r = alice.get(&all_path(&v)).await;
    assert_eq!(r.assert_ok(), &json!({ "rooms": {} }));
}

#[tokio::test]
async fn deleting_keys_updates_count_and_etag() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    let r = alice
        .put(
            &all_path(&v),
            json!({ "rooms": {
                ROOM: { "sessions": { "a": key_data(0, 0, false, "a"), "b": key_data(0, 0, false, "b") } },
                OTHER_ROOM: { "sessions": { "c": key_data(0, 0, false, "c"), "d": key_data(0, 0, false, "d") } },
            } }),
        )
        .await;
    let (etag, count) = etag_count(&r);
    assert_eq!(count, 4);

    let (etag1, count) = etag_count(&alice.delete(&session_path(&v, ROOM, "a")).await);
    assert_eq!(count, 3);
    assert_ne!(etag1, etag);
    alice
        .get(&session_path(&v, ROOM, "a"))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Deleting what is not there changes nothing.
    let (etag2, count) = etag_count(&alice.delete(&session_path(&v, ROOM, "a")).await);
    assert_eq!((etag2.as_str(), count), (etag1.as_str(), 3));

    let (etag3, count) = etag_count(&alice.delete(&room_path(&v, OTHER_ROOM)).await);
    assert_eq!(count, 1);
    assert_ne!(etag3, etag2);
    let r = alice.get(&room_path(&v, OTHER_ROOM)).await;
    assert_eq!(r.assert_ok(), &json!({ "sessions": {} }));

    let (etag4, count) = etag_count(&alice.delete(&all_path(&v)).await);
    assert_eq!(count, 0);
    assert_ne!(etag4, etag3);
    let r = alice.get(&all_path(&v)).await;
    assert_eq!(r.assert_ok(), &json!({ "rooms": {} }));
    let r = alice.get("/_matrix/client/v3/room_keys/version").await;
    assert_eq!(r.assert_ok()["count"], 0);
    assert_eq!(r.body["etag"], json!(etag4));
}

#[tokio::test]
async fn deleting_keys_of_an_unknown_version_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .delete(&all_path("1"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let v = create_version(&alice, "k").await;
    alice
        .delete(&format!("/_matrix/client/v3/room_keys/version/{v}"))
        .await
        .assert_ok();
    alice
        .delete(&room_path(&v, ROOM))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .delete(&session_path(&v, ROOM, "s"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn keys_of_an_older_version_stay_readable() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let old = create_version(&alice, "k1").await;
    put_session(&alice, &old, "s", key_data(0, 0, false, "old"))
        .await
        .assert_ok();
    let new = create_version(&alice, "k2").await;
    assert_eq!(stored_ciphertext(&alice, &old, "s").await, "old");
    alice
        .get(&session_path(&new, ROOM, "s"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn r0_paths_serve_the_same_backup() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let v = create_version(&alice, "k").await;
    let r = alice
        .put(
            &format!(
                "/_matrix/client/r0/room_keys/keys/{}/s?version={v}",
                enc(ROOM)
            ),
            key_data(0, 0, false, "r0"),
        )
        .await;
    assert_eq!(etag_count(&r).1, 1);
    assert_eq!(stored_ciphertext(&alice, &v, "s").await, "r0");
}

/// For account deactivation, which calls `db::backup::delete_all_backups`.
#[tokio::test]
async fn deleting_all_backups_of_a_user_leaves_others_alone() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let a = create_version(&alice, "a").await;
    put_session(&alice, &a, "s", key_data(0, 0, false, "alice"))
        .await
        .assert_ok();
    let b = create_version(&bob, "b").await;
    put_session(&bob, &b, "s", key_data(0, 0, false, "bob"))
        .await
        .assert_ok();

    let alice_uid = ruma::OwnedUserId::try_from(alice.user_id.as_str()).unwrap();
    let mut batch = hearth_core::storage::Batch::new();
    hearth_core::db::backup::delete_all_backups(&hs, &mut batch, &alice_uid)
        .await
        .unwrap();
    hs.store.write(batch).await.unwrap();

    alice
        .get("/_matrix/client/v3/room_keys/version")
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&session_path(&a, ROOM, "s"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert_eq!(stored_ciphertext(&bob, &b, "s").await, "bob");
}

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

/// Every backup endpoint's answers, success and error alike, checked against the spec's schemas.
#[cfg(not(target_arch = "wasm32"))]
mod schemas {
    use http::Method;

    use super::*;

    struct Checked {
        spec: spec::Spec,
        problems: Vec<String>,
    }

    impl Checked {
        async fn call(
            &mut self,
            c: &TestClient,
            method: Method,
            path: &str,
            body: Option<Value>,
            status: u16,
        ) -> Value {
            let r = c.request(method.clone(), path, body).await;
            assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
            if let Err(violations) = self.spec.validate(&method, path, status, &r.raw) {
                self.problems
                    .extend(violations.iter().map(ToString::to_string));
            }
            r.body
        }
    }

    #[tokio::test]
    async fn backup_responses_match_the_spec_schemas() {
        let (hs, _) = test_server(1).await;
        let alice = TestClient::register(&hs, "alice").await;
        let mut h = Checked {
            spec: spec::Spec::load(),
            problems: Vec::new(),
        };
        let version_path = "/_matrix/client/v3/room_keys/version";
        h.call(&alice, Method::GET, version_path, None, 404).await;
        let created = h
            .call(
                &alice,
                Method::POST,
                version_path,
                Some(version_body("k")),
                200,
            )
            .await;
        let v = created["version"].as_str().unwrap().to_owned();
        let one = format!("{version_path}/{v}");
        h.call(&alice, Method::GET, version_path, None, 200).await;
        h.call(&alice, Method::GET, &one, None, 200).await;
        h.call(&alice, Method::PUT, &one, Some(version_body("k2")), 200)
            .await;
        h.call(
            &alice,
            Method::PUT,
            &one,
            Some(json!({ "algorithm": "other", "auth_data": {} })),
            400,
        )
        .await;
        h.call(
            &alice,
            Method::GET,
            &format!("{version_path}/99"),
            None,
            404,
        )
        .await;

        let data = key_data(0, 0, true, "c");
        h.call(
            &alice,
            Method::PUT,
            &session_path(&v, ROOM, "s"),
            Some(data.clone()),
            200,
        )
        .await;
        h.call(
            &alice,
            Method::PUT,
            &room_path(&v, ROOM),
            Some(json!({ "sessions": { "t": data.clone() } })),
            200,
        )
        .await;
        h.call(
            &alice,
            Method::PUT,
            &all_path(&v),
            Some(json!({ "rooms": { OTHER_ROOM: { "sessions": { "u": data.clone() } } } })),
            200,
        )
        .await;
        h.call(
            &alice,
            Method::PUT,
            &all_path("99"),
            Some(json!({ "rooms": {} })),
            403,
        )
        .await;
        h.call(
            &alice,
            Method::PUT,
            &room_path("99", ROOM),
            Some(json!({ "sessions": {} })),
            403,
        )
        .await;
        h.call(
            &alice,
            Method::PUT,
            &session_path("99", ROOM, "s"),
            Some(data),
            403,
        )
        .await;
        h.call(&alice, Method::GET, &session_path(&v, ROOM, "s"), None, 200)
            .await;
        h.call(&alice, Method::GET, &session_path(&v, ROOM, "x"), None, 404)
            .await;
        h.call(&alice, Method::GET, &room_path(&v, ROOM), None, 200)
            .await;
        h.call(&alice, Method::GET, &room_path("99", ROOM), None, 404)
            .await;
        h.call(&alice, Method::GET, &all_path(&v), None, 200).await;
        h.call(&alice, Method::GET, &all_path("99"), None, 404)
            .await;
        h.call(
            &alice,
            Method::DELETE,
            &session_path(&v, ROOM, "s"),
            None,
            200,
        )
        .await;
        h.call(
            &alice,
            Method::DELETE,
            &session_path("99", ROOM, "s"),
            None,
            404,
        )
        .await;
        h.call(&alice, Method::DELETE, &room_path(&v, ROOM), None, 200)
            .await;
        h.call(&alice, Method::DELETE, &room_path("99", ROOM), None, 404)
            .await;
        h.call(&alice, Method::DELETE, &all_path(&v), None, 200)
            .await;
        h.call(&alice, Method::DELETE, &all_path("99"), None, 404)
            .await;
        h.call(&alice, Method::DELETE, &one, None, 200).await;
        h.call(
            &alice,
            Method::DELETE,
            &format!("{version_path}/99"),
            None,
            404,
        )
        .await;

        assert!(
            h.problems.is_empty(),
            "responses that do not match the spec:\n{}",
            h.problems.join("\n")
        );
    }
}
