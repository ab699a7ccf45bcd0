//! Rooms: creation, membership, sending, state, redaction, reading history, and `/sync`.

use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::{Value, json};

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

async fn send_text(c: &TestClient, room: &str, txn: &str, text: &str) -> String {
    let r = c
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(room)
            ),
            json!({"msgtype": "m.text", "body": text}),
        )
        .await;
    r.assert_ok()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

async fn sync(c: &TestClient, since: Option<&str>, timeout: u64) -> Value {
    let mut path = format!("/_matrix/client/v3/sync?timeout={timeout}");
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    c.get(&path).await.assert_ok().clone()
}

fn timeline_bodies(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter(|e| e["type"] == "m.room.message")
                .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn create_room_builds_the_initial_state_in_order() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({"name": "Tea", "topic": "Leaves", "preset": "public_chat", "room_alias_name": "tea"})).await;
    let state = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
        .await;
    let events = state.assert_ok().as_array().expect("array").clone();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.name",
        "m.room.topic",
        "m.room.canonical_alias",
    ] {
        assert!(types.contains(&t), "missing {t} in {types:?}");
    }
    let create = events
        .iter()
        .find(|e| e["type"] == "m.room.create")
        .expect("create");
    assert_eq!(create["content"]["room_version"], "11");
    let jr = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.join_rules/",
            enc(&room)
        ))
        .await;
    assert_eq!(jr.assert_ok()["join_rule"], "public");
    let alias = alice
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#tea:{}", hs.server_name()))
        ))
        .await;
    assert_eq!(alias.assert_ok()["room_id"], room.as_str());
}

#[tokio::test]
async fn unsupported_room_version_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"room_version": "999"}),
        )
        .await
        .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
}

#[tokio::test]
async fn taken_alias_is_room_in_use() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    create_room(&alice, json!({"room_alias_name": "dup"})).await;
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"room_alias_name": "dup"}),
        )
        .await
        .assert_error(400, "M_ROOM_IN_USE");
}

#[tokio::test]
async fn private_room_needs_an_invite_and_invite_lets_bob_join() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    let s = sync(&bob, None, 0).await;
    assert!(
        s["rooms"]["invite"][&room]["invite_state"]["events"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let joined = bob.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([room]));
    let members = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/joined_members",
            enc(&room)
        ))
        .await;
    assert!(members.assert_ok()["joined"][&bob.user_id].is_object());
}

#[tokio::test]
async fn ban_prevents_rejoin_and_unban_allows_it() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    // Bob (power 0) may not ban Alice.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
        json!({"user_id": alice.user_id}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({"user_id": bob.user_id, "reason": "spam"}),
        )
        .await
        .assert_ok();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/unban", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn kick_removes_member_and_needs_power() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
        json!({"user_id": alice.user_id}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    let m = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&bob.user_id)
        ))
        .await;
    assert_eq!(m.assert_ok()["membership"], "leave");
    // Bob can rejoin a public room after a kick.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn send_is_idempotent_per_transaction_id() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let a = send_text(&alice, &room, "t1", "hello").await;
    let b = send_text(&alice, &room, "t1", "hello").await;
    assert_eq!(a, b);
    let c = send_text(&alice, &room, "t2", "hello").await;
    assert_ne!(a, c);
}

#[tokio::test]
async fn non_member_cannot_send_or_read() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = create_room(&alice, json!({})).await;
    let ev = send_text(&alice, &room, "t1", "secret").await;
    eve.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/x",
            enc(&room)
        ),
        json!({"body": "hi", "msgtype": "m.text"}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    eve.get(&format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b",
        enc(&room)
    ))
    .await
    .assert_error(403, "M_FORBIDDEN");
    eve.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&ev)
    ))
    .await
    .assert_error(404, "M_NOT_FOUND");
    eve.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn oversized_event_is_too_large() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let big = "x".repeat(70_000);
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/big",
                enc(&room)
            ),
            json!({"msgtype": "m.text", "body": big}),
        )
        .await
        .assert_error(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn bad_json_bodies_get_matrix_errors() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/nj",
        enc(&room)
    );
    alice
        .request_raw(
            http::Method::PUT,
            &path,
            b"{not json".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    alice
        .request_raw(
            http::Method::PUT,
            &path,
            b"[1,2]".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::POST,
            "/_matrix/client/v3/createRoom",
            b"{\"invite\": 5}".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn messages_paginate_both_ways_in_order() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    for i in 0..25 {
        send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10&filter={filter}",
            enc(&room)
        ))
        .await;
    let v = r.assert_ok().clone();
    let bodies: Vec<&str> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(
        bodies,
        (15..25).rev().map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    let end = v["end"].as_str().expect("end token");
    let r2 = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10&from={end}&filter={filter}",
            enc(&room)
        ))
        .await;
    let bodies2: Vec<String> = r2.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        bodies2,
        (5..15).rev().map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    // Forwards from the back end of the second page returns the same events in order.
    let end2 = r2.body["end"].as_str().expect("end token");
    let r3 = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=10&from={end2}&filter={filter}",
            enc(&room)
        ))
        .await;
    let bodies3: Vec<String> = r3.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        bodies3,
        (5..15).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn redaction_strips_content_and_needs_power_for_others_events() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let alice_ev = send_text(&alice, &room, "a1", "mine").await;
    let bob_ev = send_text(&bob, &room, "b1", "bob's").await;
    bob.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r1",
            enc(&room),
            enc(&alice_ev)
        ),
        json!({}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    let r = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r2",
                enc(&room),
                enc(&bob_ev)
            ),
            json!({"reason": "oops"}),
        )
        .await;
    let redaction_id = r.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let e = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&bob_ev)
        ))
        .await;
    let ev = e.assert_ok();
    assert_eq!(ev["content"], json!({}));
    assert_eq!(
        ev["unsigned"]["redacted_because"]["event_id"],
        redaction_id.as_str()
    );
    // Alice has the redact power level.
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r3",
                enc(&room),
                enc(&alice_ev)
            ),
            json!({}),
        )
        .await
        .assert_ok();
}

#[tokio::test]
async fn power_levels_gate_state_changes() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    bob.put(
        &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
        json!({"name": "Bob's"}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            json!({"name": "Alice's"}),
        )
        .await
        .assert_ok();
    let n = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&room)
        ))
        .await;
    assert_eq!(n.assert_ok()["name"], "Alice's");
    bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
        enc(&room)
    ))
    .await
    .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn sync_initial_then_incremental_sees_new_messages_in_order() {
    let (hs, _) = test_server(12).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s0 = sync(&bob, None, 0).await;
    let joined = &s0["rooms"]["join"][&room];
    let seen: Vec<&Value> = joined["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            joined["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .collect();
    assert!(
        seen.iter().any(|e| e["type"] == "m.room.create"),
        "{joined}"
    );
    let next = s0["next_batch"].as_str().unwrap().to_owned();
    send_text(&alice, &room, "1", "one").await;
    send_text(&alice, &room, "2", "two").await;
    let s1 = sync(&bob, Some(&next), 0).await;
    assert_eq!(timeline_bodies(&s1, &room), vec!["one", "two"]);
    // `limited` is optional and false when absent.
    assert_ne!(s1["rooms"]["join"][&room]["timeline"]["limited"], true);
    // Nothing new: an incremental sync with no timeout comes back empty.
    let s2 = sync(&bob, s1["next_batch"].as_str(), 0).await;
    assert!(s2["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn sync_long_poll_wakes_on_new_event() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s0 = sync(&bob, None, 0).await;
    let next = s0["next_batch"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    let poll = sync(&bob, Some(&next), 10_000);
    let send = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        send_text(&alice, &room, "w", "wake").await
    };
    let (s1, _) = tokio::join!(poll, send);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "long poll was not woken"
    );
    assert_eq!(timeline_bodies(&s1, &room), vec!["wake"]);
}

#[tokio::test]
async fn sync_timeline_limit_sets_limited_and_prev_batch() {
    let (hs, _) = test_server(14).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    for i in 0..8 {
        send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await;
    }
    let filter = enc(r#"{"room":{"timeline":{"limit":3}}}"#);
    let s = alice
        .get(&format!("/_matrix/client/v3/sync?filter={filter}"))
        .await;
    let v = s.assert_ok();
    assert_eq!(timeline_bodies(v, &room), vec!["m5", "m6", "m7"]);
    assert_eq!(v["rooms"]["join"][&room]["timeline"]["limited"], true);
    let prev = v["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .unwrap();
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=2&from={prev}",
            enc(&room)
        ))
        .await;
    let bodies: Vec<&str> = r.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(bodies, vec!["m4", "m3"]);
}

/// Hydrogen syncs with `lazy_load_members` and names senders only from the member events the
/// sync brings: a member the join's short timeline left out must come with their first message.
#[tokio::test]
async fn lazy_members_come_with_a_gapless_incremental_timeline() {
    let (hs, _) = test_server(25).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&bob, json!({"preset": "public_chat"})).await;
    let filter = enc(r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#);
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    let first = alice
        .get(&format!("/_matrix/client/v3/sync?filter={filter}"))
        .await
        .assert_ok()
        .clone();
    let members_in = |v: &Value, part: &str| -> Vec<String> {
        v["rooms"]["join"][&room][part]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.member")
            .filter_map(|e| e["state_key"].as_str().map(str::to_owned))
            .collect()
    };
    // The join's timeline is Alice's own join: Bob is not lazy-loaded yet.
    assert!(!members_in(&first, "state").contains(&bob.user_id));
    assert!(!members_in(&first, "timeline").contains(&bob.user_id));
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    send_text(&bob, &room, "t1", "hello").await;
    let next = alice
        .get(&format!(
            "/_matrix/client/v3/sync?filter={filter}&since={since}&timeout=0"
        ))
        .await
        .assert_ok()
        .clone();
    assert_eq!(timeline_bodies(&next, &room), vec!["hello"]);
    assert_ne!(next["rooms"]["join"][&room]["timeline"]["limited"], true);
    assert_eq!(members_in(&next, "state"), vec![bob.user_id.clone()]);

    // Without lazy-loading the client has every member from the join: nothing is repeated.
    let since = next["next_batch"].as_str().expect("next_batch").to_owned();
    send_text(&bob, &room, "t2", "again").await;
    let plain = sync(&alice, Some(&since), 0).await;
    assert_eq!(timeline_bodies(&plain, &room), vec!["again"]);
    assert!(members_in(&plain, "state").is_empty());
}

#[tokio::test]
async fn leave_shows_in_leave_section_and_forget_hides_it() {
    let (hs, _) = test_server(15).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s0 = sync(&bob, None, 0).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)),
        json!({}),
    )
    .await
    .assert_error(400, "M_BAD_JSON");
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s1 = sync(&bob, s0["next_batch"].as_str(), 0).await;
    assert!(s1["rooms"]["leave"][&room].is_object(), "{s1}");
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let joined = bob.get("/_matrix/client/v3/joined_rooms").await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([]));
}

#[tokio::test]
async fn context_returns_surrounding_events_and_state() {
    let (hs, _) = test_server(16).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await);
    }
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=2",
            enc(&room),
            enc(&ids[3])
        ))
        .await;
    let v = r.assert_ok();
    assert_eq!(v["event"]["content"]["body"], "m3");
    assert_eq!(v["events_before"][0]["content"]["body"], "m2");
    assert_eq!(v["events_after"][0]["content"]["body"], "m4");
    assert!(
        v["state"]
            .as_array()
            .is_some_and(|s| s.iter().any(|e| e["type"] == "m.room.create"))
    );
    assert!(v["start"].is_string() && v["end"].is_string());
}

#[tokio::test]
async fn members_filters_by_membership_and_at() {
    let (hs, _) = test_server(17).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let s0 = sync(&alice, None, 0).await;
    let before_bob = s0["next_batch"].as_str().unwrap().to_owned();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let all = alice
        .get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)))
        .await;
    assert_eq!(all.assert_ok()["chunk"].as_array().unwrap().len(), 2);
    let at = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/members?at={before_bob}",
            enc(&room)
        ))
        .await;
    assert_eq!(at.assert_ok()["chunk"].as_array().unwrap().len(), 1);
    let not_join = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/members?not_membership=join",
            enc(&room)
        ))
        .await;
    assert_eq!(not_join.assert_ok()["chunk"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn upgrade_tombstones_old_room_and_links_new_one() {
    let (hs, _) = test_server(18).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(
        &alice,
        json!({"name": "Old", "room_version": "10", "room_alias_name": "up"}),
    )
    .await;
    let r = alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&room)),
            json!({"new_version": "11"}),
        )
        .await;
    let new_room = r.assert_ok()["replacement_room"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.tombstone/",
            enc(&room)
        ))
        .await;
    assert_eq!(t.assert_ok()["replacement_room"], new_room.as_str());
    let c = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.create/",
            enc(&new_room)
        ))
        .await;
    assert_eq!(c.assert_ok()["predecessor"]["room_id"], room.as_str());
    let n = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&new_room)
        ))
        .await;
    assert_eq!(n.assert_ok()["name"], "Old");
    let a = alice
        .get(&format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#up:{}", hs.server_name()))
        ))
        .await;
    assert_eq!(a.assert_ok()["room_id"], new_room.as_str());
}

#[tokio::test]
async fn public_rooms_lists_published_rooms_with_search() {
    let (hs, _) = test_server(19).await;
    let alice = TestClient::register(&hs, "alice").await;
    create_room(
        &alice,
        json!({"name": "Cats", "visibility": "public", "preset": "public_chat"}),
    )
    .await;
    create_room(
        &alice,
        json!({"name": "Dogs", "visibility": "public", "preset": "public_chat"}),
    )
    .await;
    create_room(&alice, json!({"name": "Secret"})).await;
    let r = alice.get("/_matrix/client/v3/publicRooms").await;
    assert_eq!(r.assert_ok()["chunk"].as_array().unwrap().len(), 2);
    let f = alice
        .post(
            "/_matrix/client/v3/publicRooms",
            json!({"filter": {"generic_search_term": "cat"}}),
        )
        .await;
    let chunk = f.assert_ok()["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["name"], "Cats");
    let p = alice.get("/_matrix/client/v3/publicRooms?limit=1").await;
    assert!(p.assert_ok()["next_batch"].is_string());
}

#[tokio::test]
async fn state_survives_restart_on_same_storage() {
    use std::rc::Rc;
    let store = Rc::new(hearth_core::storage::MemoryStorage::new());
    let world = Rc::new(hearth_core::testing::TestWorld::new(20));
    let config = hearth_core::Config {
        password_hash_memory_kib: 64,
        ..Default::default()
    };
    let hs = hearth_core::Homeserver::new(store.clone(), world.clone(), config.clone())
        .await
        .unwrap();
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({"name": "Durable"})).await;
    send_text(&alice, &room, "1", "kept").await;
    drop(hs);
    let hs2 = hearth_core::Homeserver::new(store, world, config)
        .await
        .unwrap();
    let alice2 = TestClient {
        hs: hs2.clone(),
        ..alice.clone()
    };
    let s = sync(&alice2, None, 0).await;
    assert_eq!(timeline_bodies(&s, &room), vec!["kept"]);
    // New events continue after the old positions.
    send_text(&alice2, &room, "2", "after").await;
    let s2 = sync(&alice2, None, 0).await;
    assert_eq!(timeline_bodies(&s2, &room), vec!["kept", "after"]);
}

#[tokio::test]
async fn device_lists_report_users_who_start_and_stop_sharing_a_room() {
    let (hs, _) = test_server(21).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let s0 = sync(&alice, None, 0).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s1 = sync(&alice, s0["next_batch"].as_str(), 0).await;
    assert!(
        s1["device_lists"]["changed"]
            .as_array()
            .is_some_and(|a| a.contains(&json!(bob.user_id))),
        "{s1}"
    );
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let s2 = sync(&alice, s1["next_batch"].as_str(), 0).await;
    assert!(
        s2["device_lists"]["left"]
            .as_array()
            .is_some_and(|a| a.contains(&json!(bob.user_id))),
        "{s2}"
    );
}

#[tokio::test]
async fn shared_history_stays_visible_to_a_member_who_left() {
    let (hs, _) = test_server(22).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let before = send_text(&alice, &room, "1", "before bob").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let after = send_text(&alice, &room, "2", "after bob").await;
    // Bob joined after `before` was sent: shared history lets him see it even now.
    bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&before)
    ))
    .await
    .assert_ok();
    // He never was in the room after `after`.
    bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(&room),
        enc(&after)
    ))
    .await
    .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn profile_change_does_not_resend_the_room_in_incremental_sync() {
    let (hs, _) = test_server(23).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "1", "once").await;
    let s0 = sync(&alice, None, 0).await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({"displayname": "Alice"}),
        )
        .await
        .assert_ok();
    let s1 = sync(&alice, s0["next_batch"].as_str(), 0).await;
    let events = s1["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), 1, "only the new member event: {events:?}");
    assert_eq!(events[0]["content"]["displayname"], "Alice");
}

#[tokio::test]
async fn join_by_alias_or_id_accepts_an_absent_body() {
    let (hs, _) = test_server(24).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    let r = bob
        .request_raw(
            http::Method::POST,
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            Vec::new(),
            "application/json",
        )
        .await;
    assert_eq!(r.assert_ok()["room_id"], room.as_str());
}
