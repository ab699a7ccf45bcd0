//! Typing notifications, receipts, read markers and presence.

use std::time::{Duration, Instant};

use hearth_core::Homeserver;
use hearth_core::client::{presence, receipts, typing};
use hearth_core::testing::{TestClient, enc, test_server};
use ruma::presence::PresenceState;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

/// A logged-in user, registered through the real endpoint.
async fn user(hs: &Homeserver, localpart: &str) -> TestClient {
    TestClient::register(hs, localpart).await
}

fn uid(c: &TestClient) -> OwnedUserId {
    OwnedUserId::try_from(c.user_id.as_str()).unwrap()
}

fn rid(room: &str) -> OwnedRoomId {
    OwnedRoomId::try_from(room).unwrap()
}

async fn shared_room(owner: &TestClient, others: &[&TestClient]) -> String {
    let created = owner
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await;
    let room = created.assert_ok()["room_id"].as_str().unwrap().to_owned();
    for c in others {
        c.post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    }
    room
}

async fn send(c: &TestClient, room: &str, body: &str) -> String {
    let txn = c.hs.random_string(8);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        enc(room)
    );
    let r = c
        .put(&path, json!({"msgtype": "m.text", "body": body}))
        .await;
    r.assert_ok()["event_id"].as_str().unwrap().to_owned()
}

fn json_of<T>(raw: &ruma::serde::Raw<T>) -> Value {
    serde_json::from_str(raw.json().get()).unwrap()
}

// --- Typing ---------------------------------------------------------------------------------

fn typing_path(room: &str, c: &TestClient) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(room),
        enc(&c.user_id)
    )
}

async fn typing_users(hs: &Homeserver, room: &str, since: u64) -> Option<Vec<String>> {
    let ev = typing::typing_since(hs, &rid(room), since).await.unwrap()?;
    let v = json_of(&ev);
    assert_eq!(v["type"], "m.typing");
    Some(
        v["content"]["user_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u.as_str().unwrap().to_owned())
            .collect(),
    )
}

#[tokio::test]
async fn typing_notice_is_reported_and_cleared() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    assert_eq!(typing_users(&hs, &room, 0).await, None);

    let before = hs.current_pos();
    alice
        .put(
            &typing_path(&room, &alice),
            json!({"typing": true, "timeout": 10_000}),
        )
        .await
        .assert_ok();
    assert!(
        hs.current_pos() > before,
        "a typing change takes a stream position"
    );
    assert_eq!(
        typing_users(&hs, &room, 0).await,
        Some(vec![alice.user_id.clone()])
    );
    assert_eq!(
        typing_users(&hs, &room, before).await,
        Some(vec![alice.user_id.clone()])
    );
    let after_start = hs.current_pos();
    assert_eq!(typing_users(&hs, &room, after_start).await, None);

    // Typing again while already typing only extends the notice.
    alice
        .put(
            &typing_path(&room, &alice),
            json!({"typing": true, "timeout": 10_000}),
        )
        .await
        .assert_ok();
    assert_eq!(hs.current_pos(), after_start);

    alice
        .put(&typing_path(&room, &alice), json!({"typing": false}))
        .await
        .assert_ok();
    assert_eq!(typing_users(&hs, &room, after_start).await, Some(vec![]));
    assert_eq!(typing_users(&hs, &room, 0).await, None);
}

#[tokio::test]
async fn typing_for_another_user_is_forbidden() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    bob.put(
        &typing_path(&room, &alice),
        json!({"typing": true, "timeout": 1000}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    assert!(typing::typing_users(&hs, &rid(&room)).is_empty());
}

#[tokio::test]
async fn typing_outside_a_joined_room_is_forbidden() {
    let (hs, _) = test_server(1).await;
    let (alice, carol) = (user(&hs, "alice").await, user(&hs, "carol").await);
    let room = shared_room(&alice, &[]).await;
    carol
        .put(
            &typing_path(&room, &carol),
            json!({"typing": true, "timeout": 1000}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    carol
        .put(
            &typing_path("!nowhere:example.org", &carol),
            json!({"typing": true, "timeout": 1000}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn typing_request_is_validated() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    alice
        .put(&typing_path(&room, &alice), json!({"timeout": 1000}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::PUT,
            &typing_path(&room, &alice),
            b"typing".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    TestClient::anonymous(&hs)
        .put(&typing_path(&room, &alice), json!({"typing": false}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn typing_without_timeout_lasts_the_default() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let now = hs.now_ms();
    alice
        .put(&typing_path(&room, &alice), json!({"typing": true}))
        .await
        .assert_ok();
    let expiry = typing::next_expiry_ms(&hs).unwrap();
    assert!(
        expiry >= now + typing::DEFAULT_TIMEOUT_MS
            && expiry <= hs.now_ms() + typing::DEFAULT_TIMEOUT_MS
    );
}

#[tokio::test]
async fn typing_timeout_is_capped() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    alice
        .put(
            &typing_path(&room, &alice),
            json!({"typing": true, "timeout": 86_400_000}),
        )
        .await
        .assert_ok();
    assert!(typing::next_expiry_ms(&hs).unwrap() <= hs.now_ms() + typing::MAX_TIMEOUT_MS);
}

#[tokio::test]
async fn typing_notice_expires_under_a_new_position() {
    let (hs, world) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    alice
        .put(
            &typing_path(&room, &alice),
            json!({"typing": true, "timeout": 5_000}),
        )
        .await
        .assert_ok();
    bob.put(
        &typing_path(&room, &bob),
        json!({"typing": true, "timeout": 60_000}),
    )
    .await
    .assert_ok();
    let since = hs.current_pos();
    assert_eq!(
        typing::next_expiry_ms(&hs).map(|t| t <= hs.now_ms() + 5_000),
        Some(true)
    );

    world.advance(5_001);
    assert_eq!(
        typing_users(&hs, &room, since).await,
        Some(vec![bob.user_id.clone()])
    );
    assert!(
        hs.current_pos() > since,
        "the expiry was published under a fresh position"
    );
    assert!(typing::next_expiry_ms(&hs).unwrap() > hs.now_ms() + 50_000);

    world.advance(60_000);
    assert!(typing::typing_users(&hs, &rid(&room)).is_empty());
    assert_eq!(typing::next_expiry_ms(&hs), None);
}

#[tokio::test]
async fn typing_wakes_a_long_polling_sync() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let first = bob.get("/_matrix/client/v3/sync").await;
    let since = first.assert_ok()["next_batch"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let poll_path = format!("/_matrix/client/v3/sync?since={since}&timeout=20000");
    let poll = bob.get(&poll_path);
    let typer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        alice
            .put(
                &typing_path(&room, &alice),
                json!({"typing": true, "timeout": 30_000}),
            )
            .await
            .assert_ok();
    };
    let (synced, ()) = tokio::join!(poll, typer);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the typing notice ended the long-poll"
    );
    let body = synced.assert_ok();
    let ephemeral = body["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([alice.user_id]));
}

#[tokio::test]
async fn typing_expiry_ends_a_long_polling_sync() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    alice
        .put(
            &typing_path(&room, &alice),
            json!({"typing": true, "timeout": 500}),
        )
        .await
        .assert_ok();
    let first = bob.get("/_matrix/client/v3/sync").await;
    let since = first.assert_ok()["next_batch"].as_str().unwrap().to_owned();

    let started = Instant::now();
    let synced = bob
        .get(&format!(
            "/_matrix/client/v3/sync?since={since}&timeout=20000"
        ))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the expiry ended the long-poll"
    );
    let body = synced.assert_ok();
    let ephemeral = body["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
        .as_array()
        .unwrap();
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!([]));
}

// --- Receipts and read markers ----------------------------------------------------------------

fn receipt_path(room: &str, receipt_type: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/receipt/{receipt_type}/{}",
        enc(room),
        enc(event)
    )
}

async fn receipt_content(
    hs: &Homeserver,
    viewer: &TestClient,
    room: &str,
    since: u64,
) -> Option<Value> {
    let ev = receipts::receipts_since(hs, &uid(viewer), &rid(room), since)
        .await
        .unwrap()?;
    let v = json_of(&ev);
    assert_eq!(v["type"], "m.receipt");
    Some(v["content"].clone())
}

#[tokio::test]
async fn read_receipt_is_shared_with_the_room() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let ev = send(&alice, &room, "hello").await;
    let before = hs.current_pos();
    bob.post(&receipt_path(&room, "m.read", &ev), json!({}))
        .await
        .assert_ok();
    assert!(hs.current_pos() > before);

    let content = receipt_content(&hs, &alice, &room, before).await.unwrap();
    let r = &content[ev.as_str()]["m.read"][bob.user_id.as_str()];
    assert!(r["ts"].as_u64().unwrap() > 0);
    assert!(r.get("thread_id").is_none());
    assert_eq!(
        receipt_content(&hs, &alice, &room, hs.current_pos()).await,
        None
    );
    assert!(receipt_content(&hs, &alice, &room, 0).await.is_some());
}

#[tokio::test]
async fn private_receipt_is_only_visible_to_its_owner() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let ev = send(&alice, &room, "hello").await;
    bob.post(&receipt_path(&room, "m.read.private", &ev), json!({}))
        .await
        .assert_ok();
    assert_eq!(receipt_content(&hs, &alice, &room, 0).await, None);
    let own = receipt_content(&hs, &bob, &room, 0).await.unwrap();
    assert!(own[ev.as_str()]["m.read.private"][bob.user_id.as_str()].is_object());
}

#[tokio::test]
async fn newer_receipt_replaces_the_older_and_older_is_ignored() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let first = send(&alice, &room, "one").await;
    let second = send(&alice, &room, "two").await;
    bob.post(&receipt_path(&room, "m.read", &second), json!({}))
        .await
        .assert_ok();
    let pos = hs.current_pos();
    bob.post(&receipt_path(&room, "m.read", &first), json!({}))
        .await
        .assert_ok();
    assert_eq!(
        hs.current_pos(),
        pos,
        "a receipt moving backwards is ignored"
    );
    let content = receipt_content(&hs, &alice, &room, 0).await.unwrap();
    assert!(content.get(first.as_str()).is_none());
    assert!(content[second.as_str()]["m.read"][bob.user_id.as_str()].is_object());
}

#[tokio::test]
async fn threaded_receipt_carries_its_thread() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let root = send(&alice, &room, "root").await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/t1",
        enc(&room)
    );
    let reply = alice
        .put(&path, json!({"msgtype": "m.text", "body": "in thread", "m.relates_to": {"rel_type": "m.thread", "event_id": root}}))
        .await;
    let reply = reply.assert_ok()["event_id"].as_str().unwrap().to_owned();
    bob.post(
        &receipt_path(&room, "m.read", &reply),
        json!({"thread_id": root}),
    )
    .await
    .assert_ok();
    bob.post(
        &receipt_path(&room, "m.read", &root),
        json!({"thread_id": "main"}),
    )
    .await
    .assert_ok();
    let content = receipt_content(&hs, &alice, &room, 0).await.unwrap();
    assert_eq!(
        content[reply.as_str()]["m.read"][bob.user_id.as_str()]["thread_id"],
        root.as_str()
    );
    assert_eq!(
        content[root.as_str()]["m.read"][bob.user_id.as_str()]["thread_id"],
        "main"
    );
}

#[tokio::test]
async fn invalid_thread_ids_are_refused() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let a = send(&alice, &room, "a").await;
    let b = send(&alice, &room, "b").await;
    bob.post(&receipt_path(&room, "m.read", &a), json!({"thread_id": ""}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    bob.post(
        &receipt_path(&room, "m.read", &a),
        json!({"thread_id": "sideways"}),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    bob.post(&receipt_path(&room, "m.read", &b), json!({"thread_id": a}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    bob.post(
        &receipt_path(&room, "m.fully_read", &b),
        json!({"thread_id": "main"}),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    assert_eq!(receipt_content(&hs, &alice, &room, 0).await, None);
}

#[tokio::test]
async fn receipts_need_a_known_event_a_joined_user_and_a_known_type() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let room = shared_room(&alice, &[&bob]).await;
    let other_room = shared_room(&alice, &[]).await;
    let ev = send(&alice, &room, "hello").await;
    let elsewhere = send(&alice, &other_room, "elsewhere").await;
    bob.post(&receipt_path(&room, "m.read", "$unknown"), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.post(&receipt_path(&room, "m.read", &elsewhere), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    carol
        .post(&receipt_path(&room, "m.read", &ev), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.post(&receipt_path(&room, "m.unread", &ev), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    TestClient::anonymous(&hs)
        .post(&receipt_path(&room, "m.read", &ev), json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    assert_eq!(receipt_content(&hs, &alice, &room, 0).await, None);
}

fn fully_read_path(c: &TestClient, room: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.fully_read",
        enc(&c.user_id),
        enc(room)
    )
}

#[tokio::test]
async fn fully_read_receipt_sets_the_read_marker() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let ev = send(&alice, &room, "hello").await;
    bob.post(&receipt_path(&room, "m.fully_read", &ev), json!({}))
        .await
        .assert_ok();
    assert_eq!(
        bob.get(&fully_read_path(&bob, &room)).await.assert_ok(),
        &json!({"event_id": ev})
    );
    // The marker is not a receipt.
    assert_eq!(receipt_content(&hs, &alice, &room, 0).await, None);
}

#[tokio::test]
async fn read_markers_set_marker_and_receipts_together() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let first = send(&alice, &room, "one").await;
    let second = send(&alice, &room, "two").await;
    let path = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    bob.post(
        &path,
        json!({"m.fully_read": first, "m.read": second, "m.read.private": second}),
    )
    .await
    .assert_ok();
    assert_eq!(
        bob.get(&fully_read_path(&bob, &room)).await.assert_ok(),
        &json!({"event_id": first})
    );
    let seen_by_alice = receipt_content(&hs, &alice, &room, 0).await.unwrap();
    assert!(seen_by_alice[second.as_str()]["m.read"][bob.user_id.as_str()].is_object());
    assert!(
        seen_by_alice[second.as_str()]
            .get("m.read.private")
            .is_none()
    );
    let seen_by_bob = receipt_content(&hs, &bob, &room, 0).await.unwrap();
    assert!(seen_by_bob[second.as_str()]["m.read.private"][bob.user_id.as_str()].is_object());

    // The marker does not move backwards either.
    bob.post(&path, json!({"m.fully_read": first}))
        .await
        .assert_ok();
    bob.post(&receipt_path(&room, "m.fully_read", &second), json!({}))
        .await
        .assert_ok();
    bob.post(&path, json!({"m.fully_read": first}))
        .await
        .assert_ok();
    assert_eq!(
        bob.get(&fully_read_path(&bob, &room)).await.assert_ok(),
        &json!({"event_id": second})
    );
}

#[tokio::test]
async fn read_markers_are_all_or_nothing() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let ev = send(&alice, &room, "one").await;
    let path = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    bob.post(&path, json!({"m.fully_read": ev, "m.read": "$missing"}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get(&fully_read_path(&bob, &room))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let carol = user(&hs, "carol").await;
    carol
        .post(&path, json!({"m.read": ev}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.post(&path, json!({"m.read": 5}))
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn receipts_reach_sync_as_ephemeral_events() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let ev = send(&alice, &room, "hello").await;
    let since = alice.get("/_matrix/client/v3/sync").await.assert_ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(&receipt_path(&room, "m.read", &ev), json!({}))
        .await
        .assert_ok();
    let synced = alice
        .get(&format!("/_matrix/client/v3/sync?since={since}"))
        .await;
    let events = synced.assert_ok()["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let receipt = events.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(receipt["content"][ev.as_str()]["m.read"][bob.user_id.as_str()].is_object());
}

// --- Presence -------------------------------------------------------------------------------

fn presence_path(c: &TestClient) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(&c.user_id))
}

#[tokio::test]
async fn presence_round_trips() {
    let (hs, world) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let unset = alice.get(&presence_path(&alice)).await;
    assert_eq!(unset.assert_ok(), &json!({"presence": "offline"}));

    alice
        .put(
            &presence_path(&alice),
            json!({"presence": "online", "status_msg": "here"}),
        )
        .await
        .assert_ok();
    let got = alice.get(&presence_path(&alice)).await;
    let got = got.assert_ok();
    assert_eq!(got["presence"], "online");
    assert_eq!(got["status_msg"], "here");
    assert_eq!(got["currently_active"], true);
    assert!(got["last_active_ago"].as_u64().unwrap() < 5_000);

    world.advance(presence::ACTIVE_WINDOW_MS + 1_000);
    let later = alice.get(&presence_path(&alice)).await;
    assert_eq!(later.assert_ok()["currently_active"], false);
    assert!(later.assert_ok()["last_active_ago"].as_u64().unwrap() >= presence::ACTIVE_WINDOW_MS);

    alice
        .put(&presence_path(&alice), json!({"presence": "unavailable"}))
        .await
        .assert_ok();
    let away = alice.get(&presence_path(&alice)).await;
    assert_eq!(away.assert_ok()["presence"], "unavailable");
    assert!(away.assert_ok().get("status_msg").is_none());
    assert_eq!(away.assert_ok()["currently_active"], false);
}

#[tokio::test]
async fn presence_of_another_user_cannot_be_set() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    bob.put(&presence_path(&alice), json!({"presence": "offline"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .put(&presence_path(&alice), json!({"presence": "asleep"}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .put(&presence_path(&alice), json!({"status_msg": "no state"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    TestClient::anonymous(&hs)
        .get(&presence_path(&alice))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn presence_is_visible_to_room_mates_only() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    shared_room(&alice, &[&bob]).await;
    alice
        .put(&presence_path(&alice), json!({"presence": "online"}))
        .await
        .assert_ok();
    assert_eq!(
        bob.get(&presence_path(&alice)).await.assert_ok()["presence"],
        "online"
    );
    carol
        .get(&presence_path(&alice))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn presence_since_reports_changes_of_visible_users() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    shared_room(&alice, &[&bob]).await;
    alice
        .put(
            &presence_path(&alice),
            json!({"presence": "online", "status_msg": "hi"}),
        )
        .await
        .assert_ok();
    let since = hs.current_pos();
    bob.put(&presence_path(&bob), json!({"presence": "unavailable"}))
        .await
        .assert_ok();
    carol
        .put(&presence_path(&carol), json!({"presence": "online"}))
        .await
        .assert_ok();

    let senders =
        |events: Vec<ruma::serde::Raw<_>>| -> Vec<Value> { events.iter().map(json_of).collect() };
    let all = senders(
        presence::presence_since(&hs, &uid(&alice), 0)
            .await
            .unwrap(),
    );
    let mut who: Vec<&str> = all.iter().map(|e| e["sender"].as_str().unwrap()).collect();
    who.sort();
    let mut expected = vec![alice.user_id.as_str(), bob.user_id.as_str()];
    expected.sort();
    assert_eq!(who, expected);
    let alices = all
        .iter()
        .find(|e| e["sender"] == alice.user_id.as_str())
        .unwrap();
    assert_eq!(alices["type"], "m.presence");
    assert_eq!(alices["content"]["presence"], "online");
    assert_eq!(alices["content"]["status_msg"], "hi");

    let changed = senders(
        presence::presence_since(&hs, &uid(&alice), since)
            .await
            .unwrap(),
    );
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["sender"], bob.user_id.as_str());
    assert_eq!(changed[0]["content"]["presence"], "unavailable");
    assert!(
        presence::presence_since(&hs, &uid(&alice), hs.current_pos())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn presence_from_sync_is_written_only_on_change() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let me = uid(&alice);
    let start = hs.current_pos();
    presence::set_from_sync(&hs, &me, PresenceState::Offline)
        .await
        .unwrap();
    assert_eq!(
        hs.current_pos(),
        start,
        "offline is the state of a user without presence"
    );
    presence::set_from_sync(&hs, &me, PresenceState::Online)
        .await
        .unwrap();
    let online = hs.current_pos();
    assert!(online > start);
    presence::set_from_sync(&hs, &me, PresenceState::Online)
        .await
        .unwrap();
    assert_eq!(hs.current_pos(), online);
    presence::set_from_sync(&hs, &me, PresenceState::Unavailable)
        .await
        .unwrap();
    assert!(hs.current_pos() > online);
    assert_eq!(
        alice.get(&presence_path(&alice)).await.assert_ok()["presence"],
        "unavailable"
    );
}

#[tokio::test]
async fn status_message_survives_a_state_change_from_sync() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &presence_path(&alice),
            json!({"presence": "online", "status_msg": "lunch"}),
        )
        .await
        .assert_ok();
    presence::set_from_sync(&hs, &uid(&alice), PresenceState::Unavailable)
        .await
        .unwrap();
    let got = alice.get(&presence_path(&alice)).await;
    assert_eq!(got.assert_ok()["status_msg"], "lunch");
    assert_eq!(got.assert_ok()["presence"], "unavailable");
}
