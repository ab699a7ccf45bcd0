//! End-to-end encryption plumbing: key upload/query/claim/changes and send-to-device.

use hearth_core::Homeserver;
use hearth_core::client::{keys, to_device};
use hearth_core::db::users::{self, UserRecord};
use hearth_core::storage::Batch;
use hearth_core::testing::{TestClient, enc, test_server};
use http::Method;
use ruma::{DeviceId, OneTimeKeyAlgorithm, OwnedUserId, UserId};
use serde_json::{Value, json};

/// A user with one logged-in device, created directly in storage so these tests do not depend
/// on the registration endpoint.
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
    hs.store.write(batch).await.unwrap();
    device(hs, &user_id, None).await
}

/// Another logged-in device of an existing user.
async fn device(hs: &Homeserver, user_id: &UserId, display_name: Option<&str>) -> TestClient {
    let mut batch = Batch::new();
    let (dev, _) = users::new_device(
        hs,
        &mut batch,
        user_id,
        None,
        display_name.map(str::to_owned),
        false,
    )
    .unwrap();
    hs.store.write(batch).await.unwrap();
    TestClient {
        hs: hs.clone(),
        token: Some(dev.access_token),
        user_id: user_id.to_string(),
        device_id: dev.device_id.to_string(),
    }
}

fn uid(c: &TestClient) -> OwnedUserId {
    OwnedUserId::try_from(c.user_id.as_str()).unwrap()
}

fn did(c: &TestClient) -> &DeviceId {
    c.device_id.as_str().into()
}

fn device_keys(c: &TestClient) -> Value {
    json!({
        "user_id": c.user_id,
        "device_id": c.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", c.device_id): format!("curve-{}", c.device_id),
            format!("ed25519:{}", c.device_id): format!("ed-{}", c.device_id),
        },
        "signatures": { c.user_id.clone(): { format!("ed25519:{}", c.device_id): "sig" } },
        // Signed fields the server does not know must survive untouched.
        "org.example.extra": { "kept": true },
    })
}

fn otk(name: &str) -> (String, Value) {
    (
        format!("signed_curve25519:{name}"),
        json!({ "key": otk_key(name), "signatures": {} }),
    )
}

/// A well-formed (unpadded base64, 32 bytes) key that differs per name.
fn otk_key(name: &str) -> String {
    format!("{name:A<43}")
}

/// Moves the stream past 0, which `device_list_changes` reads as "initial sync".
async fn advance_stream(hs: &Homeserver) {
    let _g = hs.write_lock().await;
    hs.alloc_pos();
    hs.commit(Batch::new()).await.unwrap();
}

fn otks(names: &[&str]) -> Value {
    Value::Object(names.iter().map(|n| otk(n)).collect())
}

async fn upload(c: &TestClient, body: Value) -> Value {
    c.post("/_matrix/client/v3/keys/upload", body)
        .await
        .assert_ok()
        .clone()
}

async fn claim_one(c: &TestClient, target: &TestClient) -> Value {
    let wanted = json!({ target.device_id.clone(): "signed_curve25519" });
    let body = json!({ "one_time_keys": { target.user_id.clone(): wanted } });
    let r = c.post("/_matrix/client/v3/keys/claim", body).await;
    r.assert_ok()["one_time_keys"][&target.user_id][&target.device_id].clone()
}

// ---------------------------------------------------------------------------------------------
// /keys/upload

#[tokio::test]
async fn upload_reports_one_time_key_counts() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let body = upload(
        &alice,
        json!({ "device_keys": device_keys(&alice), "one_time_keys": otks(&["A", "B", "C"]) }),
    )
    .await;
    assert_eq!(
        body["one_time_key_counts"],
        json!({ "signed_curve25519": 3 })
    );
    let body = upload(&alice, json!({ "one_time_keys": otks(&["D"]) })).await;
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 4);
}

#[tokio::test]
async fn upload_of_nothing_still_counts_signed_curve25519_as_zero() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let body = upload(&alice, json!({})).await;
    assert_eq!(
        body["one_time_key_counts"],
        json!({ "signed_curve25519": 0 })
    );
}

#[tokio::test]
async fn device_keys_of_another_device_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let mut keys = device_keys(&alice);
    keys["device_id"] = json!("SOMEONEELSE");
    alice
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({ "device_keys": keys }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let bob = user(&hs, "bob").await;
    alice
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({ "device_keys": device_keys(&bob) }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn malformed_keys_are_bad_json() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let mut keys = device_keys(&alice);
    keys.as_object_mut().unwrap().remove("keys");
    alice
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({ "device_keys": keys }),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({ "one_time_keys": { "signed_curve25519:X": 42 } }),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    let r = alice
        .request_raw(
            Method::POST,
            "/_matrix/client/v3/keys/upload",
            b"{not json".to_vec(),
            "application/json",
        )
        .await;
    r.assert_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn key_endpoints_require_an_access_token() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.post("/_matrix/client/v3/keys/upload", json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.post(
        "/_matrix/client/v3/keys/query",
        json!({ "device_keys": {} }),
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    anon.post(
        "/_matrix/client/v3/keys/claim",
        json!({ "one_time_keys": {} }),
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    anon.get("/_matrix/client/v3/keys/changes?from=1&to=2")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let mut bogus = TestClient::anonymous(&hs);
    bogus.token = Some("nope".into());
    bogus
        .post("/_matrix/client/v3/keys/upload", json!({}))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn same_one_time_key_again_is_accepted_but_a_changed_one_is_not() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    upload(&alice, json!({ "one_time_keys": otks(&["A"]) })).await;
    let body = upload(&alice, json!({ "one_time_keys": otks(&["A"]) })).await;
    assert_eq!(
        body["one_time_key_counts"]["signed_curve25519"], 1,
        "a retried upload must not duplicate keys"
    );
    let changed = json!({ "signed_curve25519:A": { "key": otk_key("B"), "signatures": {} } });
    alice
        .post(
            "/_matrix/client/v3/keys/upload",
            json!({ "one_time_keys": changed }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn two_fallback_keys_of_one_algorithm_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let body = json!({ "fallback_keys": otks(&["F1", "F2"]) });
    alice
        .post("/_matrix/client/v3/keys/upload", body)
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

// ---------------------------------------------------------------------------------------------
// /keys/query

#[tokio::test]
async fn query_returns_keys_as_uploaded_plus_display_name() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let phone = device(&hs, &uid(&alice), Some("Alice's phone")).await;
    upload(&alice, json!({ "device_keys": device_keys(&alice) })).await;
    upload(&phone, json!({ "device_keys": device_keys(&phone) })).await;
    let bob = user(&hs, "bob").await;

    let r = bob
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await;
    let devices = &r.assert_ok()["device_keys"][&alice.user_id];
    assert_eq!(devices.as_object().unwrap().len(), 2);
    let served = &devices[&phone.device_id];
    assert_eq!(
        served["unsigned"],
        json!({ "device_display_name": "Alice's phone" })
    );
    let mut without_unsigned = served.clone();
    without_unsigned.as_object_mut().unwrap().remove("unsigned");
    assert_eq!(
        without_unsigned,
        device_keys(&phone),
        "signed content must come back unchanged"
    );
    assert!(
        devices[&alice.device_id].get("unsigned").is_none(),
        "no display name, no unsigned"
    );
}

#[tokio::test]
async fn query_honours_device_lists_unknown_users_and_remote_servers() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let phone = device(&hs, &uid(&alice), None).await;
    upload(&alice, json!({ "device_keys": device_keys(&alice) })).await;
    upload(&phone, json!({ "device_keys": device_keys(&phone) })).await;
    let ghost = format!("@ghost:{}", hs.server_name());
    let body = json!({ "device_keys": {
        alice.user_id.clone(): [phone.device_id.clone()],
        ghost.clone(): [],
        "@carol:remote.example": [],
    } });
    let r = alice.post("/_matrix/client/v3/keys/query", body).await;
    let v = r.assert_ok();
    let devices = v["device_keys"][&alice.user_id].as_object().unwrap();
    assert_eq!(devices.keys().collect::<Vec<_>>(), vec![&phone.device_id]);
    assert!(
        v["device_keys"].get(&ghost).is_none(),
        "unknown users are left out, not failures"
    );
    assert!(
        v["failures"]["remote.example"].is_object(),
        "unreachable servers are failures: {v}"
    );
}

#[tokio::test]
async fn query_of_a_user_without_keys_is_an_empty_map() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let r = alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await;
    assert_eq!(r.assert_ok()["device_keys"][&alice.user_id], json!({}));
}

// ---------------------------------------------------------------------------------------------
// /keys/claim

#[tokio::test]
async fn claimed_one_time_keys_are_handed_out_once_in_upload_order() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    upload(&alice, json!({ "one_time_keys": otks(&["Z"]) })).await;
    upload(&alice, json!({ "one_time_keys": otks(&["A"]) })).await;

    let first = claim_one(&bob, &alice).await;
    assert_eq!(
        first,
        json!({ "signed_curve25519:Z": { "key": otk_key("Z"), "signatures": {} } }),
        "oldest upload first"
    );
    let second = claim_one(&bob, &alice).await;
    assert_eq!(
        second,
        json!({ "signed_curve25519:A": { "key": otk_key("A"), "signatures": {} } })
    );
    let third = claim_one(&bob, &alice).await;
    assert!(
        third.is_null(),
        "no key left and no fallback: the device is absent, got {third}"
    );

    let counts = keys::one_time_key_counts(&hs, &uid(&alice), did(&alice))
        .await
        .unwrap();
    assert_eq!(
        counts
            .get(&OneTimeKeyAlgorithm::SignedCurve25519)
            .map(|n| u64::from(*n)),
        Some(0)
    );
}

#[tokio::test]
async fn fallback_key_is_served_when_one_time_keys_run_out_and_marked_used() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let (fid, fkey) = otk("F");
    upload(
        &alice,
        json!({ "one_time_keys": otks(&["A"]), "fallback_keys": { fid.clone(): fkey.clone() } }),
    )
    .await;
    let (user_id, dev) = (uid(&alice), did(&alice));
    assert_eq!(
        keys::unused_fallback_key_types(&hs, &user_id, dev)
            .await
            .unwrap(),
        vec![OneTimeKeyAlgorithm::SignedCurve25519]
    );

    assert!(
        claim_one(&bob, &alice)
            .await
            .get("signed_curve25519:A")
            .is_some()
    );
    for _ in 0..2 {
        // Fallback keys are reused until replaced.
        assert_eq!(
            claim_one(&bob, &alice).await,
            json!({ fid.clone(): fkey.clone() })
        );
    }
    assert!(
        keys::unused_fallback_key_types(&hs, &user_id, dev)
            .await
            .unwrap()
            .is_empty()
    );

    // Uploading the same key again does not make it look unused; a new one does.
    upload(
        &alice,
        json!({ "fallback_keys": { fid.clone(): fkey.clone() } }),
    )
    .await;
    assert!(
        keys::unused_fallback_key_types(&hs, &user_id, dev)
            .await
            .unwrap()
            .is_empty()
    );
    let (gid, gkey) = otk("G");
    upload(
        &alice,
        json!({ "fallback_keys": { gid.clone(): gkey.clone() } }),
    )
    .await;
    assert_eq!(
        keys::unused_fallback_key_types(&hs, &user_id, dev)
            .await
            .unwrap(),
        vec![OneTimeKeyAlgorithm::SignedCurve25519]
    );
    assert_eq!(claim_one(&bob, &alice).await, json!({ gid: gkey }));
}

#[tokio::test]
async fn claim_for_unknown_devices_is_empty_and_remote_users_are_failures() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let body = json!({ "one_time_keys": {
        alice.user_id.clone(): { "NOSUCHDEVICE": "signed_curve25519" },
        "@carol:remote.example": { "DEV": "signed_curve25519" },
    } });
    let r = alice.post("/_matrix/client/v3/keys/claim", body).await;
    let v = r.assert_ok();
    assert_eq!(v["one_time_keys"], json!({}));
    assert!(v["failures"]["remote.example"].is_object(), "{v}");
}

// ---------------------------------------------------------------------------------------------
// Device-list changes

#[tokio::test]
async fn new_device_keys_are_a_device_list_change_but_identical_ones_are_not() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let user_id = uid(&alice);
    advance_stream(&hs).await;
    let start = hs.current_pos();
    upload(&alice, json!({ "device_keys": device_keys(&alice) })).await;
    let after_first = hs.current_pos();
    assert!(
        after_first > start,
        "a device-list change takes a stream position"
    );
    let (changed, left) = keys::device_list_changes(&hs, &user_id, start)
        .await
        .unwrap();
    assert_eq!(
        changed,
        vec![user_id.clone()],
        "one's own other devices must hear of it"
    );
    assert!(left.is_empty());

    upload(
        &alice,
        json!({ "device_keys": device_keys(&alice), "one_time_keys": otks(&["A"]) }),
    )
    .await;
    assert_eq!(
        hs.current_pos(),
        after_first,
        "unchanged keys and one-time keys are not a device-list change"
    );
    let (changed, _) = keys::device_list_changes(&hs, &user_id, after_first)
        .await
        .unwrap();
    assert!(changed.is_empty());
}

#[tokio::test]
async fn initial_sync_reports_no_device_list_changes() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    upload(&alice, json!({ "device_keys": device_keys(&alice) })).await;
    let (changed, left) = keys::device_list_changes(&hs, &uid(&alice), 0)
        .await
        .unwrap();
    assert!(changed.is_empty() && left.is_empty());
}

#[tokio::test]
async fn keys_changes_takes_sync_tokens() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    advance_stream(&hs).await;
    let from = hs.current_pos();
    upload(&alice, json!({ "device_keys": device_keys(&alice) })).await;
    let to = hs.current_pos();
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/keys/changes?from=s{from}&to=s{to}"
        ))
        .await;
    assert_eq!(r.assert_ok()["changed"], json!([alice.user_id]));
    assert_eq!(r.body["left"], json!([]));
    // A window that ends before the change sees nothing.
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/keys/changes?from=s{from}&to=s{from}"
        ))
        .await;
    assert_eq!(r.assert_ok()["changed"], json!([]));
    alice
        .get("/_matrix/client/v3/keys/changes?from=banana&to=s1")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v3/keys/changes?from=s1")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn deleting_a_device_drops_its_keys_and_is_a_device_list_change() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let phone = device(&hs, &uid(&alice), None).await;
    let (fid, fkey) = otk("F");
    let keys = json!({
        "device_keys": device_keys(&phone),
        "one_time_keys": otks(&["A"]),
        "fallback_keys": { fid: fkey },
    });
    upload(&phone, keys).await;
    let to_phone = json!({ alice.user_id.clone(): { phone.device_id.clone(): { "n": 1 } } });
    send_to_device(&alice, "t1", to_phone).await;

    let user_id = uid(&alice);
    let before = hs.current_pos();
    {
        let _g = hs.write_lock().await;
        let mut batch = Batch::new();
        let rec = users::get_device(&hs, &user_id, &phone.device_id)
            .await
            .unwrap()
            .unwrap();
        users::delete_device(&hs, &mut batch, &user_id, &rec);
        keys::delete_device_keys(&hs, &mut batch, &user_id, did(&phone))
            .await
            .unwrap();
        hs.commit(batch).await.unwrap();
    }
    let (changed, _) = keys::device_list_changes(&hs, &user_id, before)
        .await
        .unwrap();
    assert_eq!(changed, vec![user_id.clone()]);

    let r = alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { alice.user_id.clone(): [] } }),
        )
        .await;
    assert_eq!(r.assert_ok()["device_keys"][&alice.user_id], json!({}));
    assert!(
        keys::unused_fallback_key_types(&hs, &user_id, did(&phone))
            .await
            .unwrap()
            .is_empty()
    );
    let counts = keys::one_time_key_counts(&hs, &user_id, did(&phone))
        .await
        .unwrap();
    assert_eq!(
        counts
            .get(&OneTimeKeyAlgorithm::SignedCurve25519)
            .map(|n| u64::from(*n)),
        Some(0)
    );
    let (msgs, _) =
        to_device::to_device_since(&hs, &user_id, did(&phone), 0, hs.current_pos(), 100)
            .await
            .unwrap();
    assert!(msgs.is_empty(), "a deleted device's inbox goes with it");
}

/// These need rooms (`/createRoom`, `/join`) to decide who shares a room with whom.
mod with_rooms {
    use super::*;

    async fn create_room(c: &TestClient) -> String {
        let r = c
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "preset": "public_chat" }),
            )
            .await;
        r.assert_ok()["room_id"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn device_list_changes_reach_only_users_sharing_a_room() {
        let (hs, _) = test_server(1).await;
        let alice = user(&hs, "alice").await;
        let bob = user(&hs, "bob").await;
        let carol = user(&hs, "carol").await;
        let room = create_room(&alice).await;
        bob.post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();

        let since = hs.current_pos();
        upload(&bob, json!({ "device_keys": device_keys(&bob) })).await;
        let (changed, _) = keys::device_list_changes(&hs, &uid(&alice), since)
            .await
            .unwrap();
        assert_eq!(changed, vec![uid(&bob)]);
        let (changed, _) = keys::device_list_changes(&hs, &uid(&carol), since)
            .await
            .unwrap();
        assert!(changed.is_empty(), "carol shares no room with bob");

        let r = alice
            .get(&format!(
                "/_matrix/client/v3/keys/changes?from=s{since}&to=s{}",
                hs.current_pos()
            ))
            .await;
        assert_eq!(r.assert_ok()["changed"], json!([bob.user_id]));
    }
}

// ---------------------------------------------------------------------------------------------
// Send-to-device

async fn send_to_device(c: &TestClient, txn: &str, messages: Value) {
    c.put(
        &format!("/_matrix/client/v3/sendToDevice/m.room_key_request/{txn}"),
        json!({ "messages": messages }),
    )
    .await
    .assert_ok();
}

async fn inbox(hs: &Homeserver, c: &TestClient, since: u64) -> (Vec<Value>, u64) {
    let (events, truncated) =
        to_device::to_device_since(hs, &uid(c), did(c), since, hs.current_pos(), 100)
            .await
            .unwrap();
    let last = truncated.unwrap_or(hs.current_pos());
    (
        events
            .iter()
            .map(|e| serde_json::from_str(e.json().get()).unwrap())
            .collect(),
        last,
    )
}

#[tokio::test]
async fn to_device_message_reaches_the_named_device_only() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let bob_phone = device(&hs, &uid(&bob), None).await;
    let generation = hs.notifier.generation();
    send_to_device(
        &alice,
        "1",
        json!({ bob.user_id.clone(): { bob.device_id.clone(): { "secret": 1 } } }),
    )
    .await;
    assert!(
        hs.notifier.generation() > generation,
        "a queued message wakes long-polling syncs"
    );

    let (events, last) = inbox(&hs, &bob, 0).await;
    assert_eq!(
        events,
        vec![
            json!({ "sender": alice.user_id, "type": "m.room_key_request", "content": { "secret": 1 } })
        ]
    );
    assert!(last > 0 && last <= hs.current_pos());
    assert!(inbox(&hs, &bob_phone, 0).await.0.is_empty());
    let (again, same_last) = inbox(&hs, &bob, last).await;
    assert!(again.is_empty());
    assert_eq!(same_last, last, "nothing new: the position stays");
}

#[tokio::test]
async fn to_device_star_reaches_every_device_of_the_user() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let bob_phone = device(&hs, &uid(&bob), None).await;
    send_to_device(
        &alice,
        "1",
        json!({ bob.user_id.clone(): { "*": { "hello": true } } }),
    )
    .await;
    for d in [&bob, &bob_phone] {
        let (events, _) = inbox(&hs, d, 0).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["content"], json!({ "hello": true }));
    }
    assert!(inbox(&hs, &alice, 0).await.0.is_empty());
}

#[tokio::test]
async fn to_device_retry_with_the_same_txn_id_delivers_once() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let msg = json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } });
    send_to_device(&alice, "same", msg.clone()).await;
    send_to_device(&alice, "same", msg.clone()).await;
    assert_eq!(inbox(&hs, &bob, 0).await.0.len(), 1);
    send_to_device(&alice, "other", msg.clone()).await;
    assert_eq!(inbox(&hs, &bob, 0).await.0.len(), 2);
    // The transaction id is scoped to the sending device.
    let alice_laptop = device(&hs, &uid(&alice), None).await;
    send_to_device(&alice_laptop, "same", msg).await;
    assert_eq!(inbox(&hs, &bob, 0).await.0.len(), 3);
}

#[tokio::test]
async fn to_device_inbox_pages_by_limit_and_is_deleted_on_ack() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    for i in 0..5 {
        send_to_device(
            &alice,
            &format!("t{i}"),
            json!({ bob.user_id.clone(): { bob.device_id.clone(): { "i": i } } }),
        )
        .await;
    }
    let (bob_id, bob_dev) = (uid(&bob), did(&bob));
    let (page, last) = to_device::to_device_since(&hs, &bob_id, bob_dev, 0, hs.current_pos(), 2)
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    let last = last.expect("a page cut short by the limit says where it stopped");
    let (rest, end) =
        to_device::to_device_since(&hs, &bob_id, bob_dev, last, hs.current_pos(), 100)
            .await
            .unwrap();
    assert_eq!(end, None);
    let end = hs.current_pos();
    let order: Vec<Value> = rest
        .iter()
        .map(|e| serde_json::from_str::<Value>(e.json().get()).unwrap()["content"]["i"].clone())
        .collect();
    assert_eq!(
        order,
        vec![json!(2), json!(3), json!(4)],
        "oldest first, continuing where the page ended"
    );

    to_device::ack_to_device(&hs, &bob_id, bob_dev, last)
        .await
        .unwrap();
    assert_eq!(
        inbox(&hs, &bob, 0).await.0.len(),
        3,
        "only acknowledged messages are deleted"
    );
    to_device::ack_to_device(&hs, &bob_id, bob_dev, end)
        .await
        .unwrap();
    assert!(inbox(&hs, &bob, 0).await.0.is_empty());
}

#[tokio::test]
async fn messages_beyond_the_sync_limit_arrive_next_and_a_retried_sync_loses_none() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let initial = bob.get("/_matrix/client/v3/sync").await.assert_ok().clone();
    let since = initial["next_batch"].as_str().unwrap().to_owned();
    for i in 0..130 {
        let msg = json!({ bob.user_id.clone(): { bob.device_id.clone(): { "i": i } } });
        send_to_device(&alice, &format!("t{i}"), msg).await;
    }
    let index = |v: &Value| -> Vec<i64> {
        v["to_device"]["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["content"]["i"].as_i64())
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = bob
        .get(&format!("/_matrix/client/v3/sync?since={since}"))
        .await
        .assert_ok()
        .clone();
    let got = index(&first);
    assert_eq!(
        got,
        (0..100).collect::<Vec<_>>(),
        "the first sync carries the first 100, oldest first"
    );
    // The response is lost: the client retries with the same token and gets the same messages.
    let retry = bob
        .get(&format!("/_matrix/client/v3/sync?since={since}"))
        .await
        .assert_ok()
        .clone();
    assert_eq!(index(&retry), got);
    let next = retry["next_batch"].as_str().unwrap().to_owned();
    let second = bob
        .get(&format!("/_matrix/client/v3/sync?since={next}"))
        .await
        .assert_ok()
        .clone();
    assert_eq!(
        index(&second),
        (100..130).collect::<Vec<_>>(),
        "the rest follow, none lost"
    );
    let last = second["next_batch"].as_str().unwrap().to_owned();
    let third = bob
        .get(&format!("/_matrix/client/v3/sync?since={last}"))
        .await
        .assert_ok()
        .clone();
    assert!(index(&third).is_empty());
    assert!(
        inbox(&hs, &bob, 0).await.0.is_empty(),
        "acknowledged messages are deleted"
    );
}

#[tokio::test]
async fn to_device_skips_unknown_devices_and_refuses_bad_bodies() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let messages = json!({
        bob.user_id.clone(): { "NOSUCHDEVICE": { "x": 1 } },
        "@carol:remote.example": { "D": {} },
    });
    send_to_device(&alice, "1", messages).await;
    assert!(inbox(&hs, &bob, 0).await.0.is_empty());

    let path = "/_matrix/client/v3/sendToDevice/m.test/2";
    let not_an_object = json!({ bob.user_id.clone(): { bob.device_id.clone(): "not an object" } });
    let r = alice.put(path, json!({ "messages": not_an_object })).await;
    r.assert_error(400, "M_BAD_JSON");
    alice
        .put(path, json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    TestClient::anonymous(&hs)
        .put(path, json!({ "messages": {} }))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    assert!(inbox(&hs, &bob, 0).await.0.is_empty());
}

/// The E2EE parts of `/sync`, end to end.
mod through_sync {
    use super::*;

    async fn sync(c: &TestClient, since: Option<&str>) -> Value {
        let path = match since {
            Some(s) => format!("/_matrix/client/v3/sync?timeout=0&since={s}"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        c.get(&path).await.assert_ok().clone()
    }

    #[tokio::test]
    async fn sync_delivers_to_device_messages_once_and_reports_key_counts() {
        let (hs, _) = test_server(1).await;
        let alice = user(&hs, "alice").await;
        let bob = user(&hs, "bob").await;
        let (fid, fkey) = otk("F");
        upload(
            &bob,
            json!({ "one_time_keys": otks(&["A", "B"]), "fallback_keys": { fid: fkey } }),
        )
        .await;
        send_to_device(
            &alice,
            "1",
            json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 1 } } }),
        )
        .await;

        let first = sync(&bob, None).await;
        assert_eq!(
            first["to_device"]["events"],
            json!([{ "sender": alice.user_id, "type": "m.room_key_request", "content": { "n": 1 } }])
        );
        assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2);
        assert_eq!(
            first["device_unused_fallback_key_types"],
            json!(["signed_curve25519"])
        );

        let next = first["next_batch"].as_str().unwrap().to_owned();
        send_to_device(
            &alice,
            "2",
            json!({ bob.user_id.clone(): { bob.device_id.clone(): { "n": 2 } } }),
        )
        .await;
        let second = sync(&bob, Some(&next)).await;
        let events = second["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            events.len(),
            1,
            "the first message is not redelivered: {second}"
        );
        assert_eq!(events[0]["content"], json!({ "n": 2 }));
        assert!(
            inbox(&hs, &bob, 0).await.0.len() == 1,
            "the acknowledged message was deleted"
        );
    }
}

/// `/keys/changes` reports what `/sync`'s `device_lists` does: users who now share a room
/// (`changed`) and users who no longer share any (`left`).
#[tokio::test]
async fn key_changes_reports_users_who_start_and_stop_sharing_a_room() {
    let (hs, _) = test_server(41).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    let token = |c: &TestClient| {
        let c = c.clone();
        async move {
            c.get("/_matrix/client/v3/sync?timeout=0").await.assert_ok()["next_batch"]
                .as_str()
                .expect("next_batch")
                .to_owned()
        }
    };
    let changes = |from: String, to: String| {
        let alice = alice.clone();
        async move {
            alice
                .get(&format!(
                    "/_matrix/client/v3/keys/changes?from={from}&to={to}"
                ))
                .await
                .assert_ok()
                .clone()
        }
    };

    let before_join = token(&alice).await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let after_join = token(&alice).await;
    let joined = changes(before_join.clone(), after_join.clone()).await;
    assert_eq!(joined["changed"], json!([bob.user_id]), "{joined}");
    assert_eq!(joined["left"], json!([]), "{joined}");

    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let after_leave = token(&alice).await;
    let left = changes(after_join.clone(), after_leave.clone()).await;
    assert_eq!(left["changed"], json!([]), "{left}");
    assert_eq!(left["left"], json!([bob.user_id]), "{left}");

    // The same window seen by /sync.
    let sync = alice
        .get(&format!(
            "/_matrix/client/v3/sync?timeout=0&since={after_join}"
        ))
        .await
        .assert_ok()
        .clone();
    assert_eq!(sync["device_lists"]["left"], json!([bob.user_id]), "{sync}");
}
