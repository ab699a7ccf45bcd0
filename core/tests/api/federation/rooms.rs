//! Rooms across servers on the in-process network: invite, join, messages both ways, leave,
//! ban, forged PDUs, and a server that was unreachable catching up from the queue.

use hearth_core::Homeserver;
use hearth_core::federation::outbox;
use hearth_core::testing::network::Network;
use hearth_core::testing::{TestClient, enc};
use serde_json::{Value, json};

/// Sends everything queued on every server until the network is quiet.
async fn settle(servers: &[&Homeserver]) {
    for _ in 0..10 {
        let mut sent = 0;
        for s in servers {
            sent += outbox::flush(s).await.unwrap();
        }
        if sent == 0 {
            return;
        }
    }
}

async fn create_room(c: &TestClient, body: Value) -> String {
    c.post("/_matrix/client/v3/createRoom", body)
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn say(c: &TestClient, room: &str, text: &str) -> String {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room),
            enc(text)
        ),
        json!({ "msgtype": "m.text", "body": text }),
    )
    .await
    .assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Alice's public room with Bob (of another server) joined, and everything delivered.
async fn shared_room(alice: &TestClient, bob: &TestClient, servers: &[&Homeserver]) -> String {
    let room = create_room(alice, json!({ "preset": "public_chat" })).await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(servers).await;
    room
}

/// The bodies of the room's messages as `c` sees them, oldest first.
async fn bodies(c: &TestClient, room: &str) -> Vec<String> {
    let v = c
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
            enc(room)
        ))
        .await;
    let v = v.assert_ok();
    let mut out: Vec<String> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    out.reverse();
    out
}

async fn members(c: &TestClient, room: &str) -> Vec<(String, String)> {
    let v = c
        .get(&format!("/_matrix/client/v3/rooms/{}/members", enc(room)))
        .await;
    let mut out: Vec<(String, String)> = v.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["state_key"].as_str().unwrap().to_owned(),
                e["content"]["membership"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn invite_join_talk_leave_and_ban_across_servers() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;

    let room = create_room(
        &alice,
        json!({ "preset": "private_chat", "name": "across" }),
    )
    .await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await
        .assert_ok();

    // Bob sees the invite with the room's name before his server is in the room.
    let sync = bob.get("/_matrix/client/v3/sync").await;
    let invite = &sync.assert_ok()["rooms"]["invite"][&room]["invite_state"]["events"];
    let names: Vec<&Value> = invite
        .as_array()
        .expect("an invite in bob's sync")
        .iter()
        .filter(|e| e["type"] == "m.room.name")
        .collect();
    assert_eq!(names[0]["content"]["name"], "across");

    say(&alice, &room, "before bob").await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    let both = vec![
        (alice.user_id.clone(), "join".to_owned()),
        (bob.user_id.clone(), "join".to_owned()),
    ];
    assert_eq!(members(&alice, &room).await, both);
    assert_eq!(members(&bob, &room).await, both);

    say(&alice, &room, "hello from a").await;
    settle(&[&a, &b]).await;
    say(&bob, &room, "hello from b").await;
    settle(&[&a, &b]).await;
    // Bob's server fetches what was said before it joined (backfill) as he pages back.
    let expected = vec![
        "before bob".to_owned(),
        "hello from a".to_owned(),
        "hello from b".to_owned(),
    ];
    assert_eq!(bodies(&alice, &room).await, expected);
    assert_eq!(bodies(&bob, &room).await, expected);
    assert_eq!(
        bodies(&bob, &room).await,
        expected,
        "a second read needs no fetch"
    );

    // Bob leaves; alice bans him afterwards; both servers agree.
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    assert_eq!(
        members(&alice, &room).await[1],
        (bob.user_id.clone(), "leave".to_owned())
    );
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({ "user_id": bob.user_id, "reason": "bye" }),
        )
        .await
        .assert_ok();
    settle(&[&a, &b]).await;
    let ban = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&bob.user_id)
        ))
        .await;
    assert_eq!(ban.assert_ok()["membership"], "ban");
    let rejoin = bob
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await;
    rejoin.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_server_that_was_unreachable_catches_up_from_the_queue() {
    let net = Network::new();
    let (a, world_a) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;

    net.partition(a.server_name(), b.server_name());
    for i in 0..5 {
        say(&alice, &room, &format!("while apart {i}")).await;
    }
    assert_eq!(outbox::flush(&a).await.unwrap(), 0);
    assert_eq!(bodies(&bob, &room).await.len(), 0);
    let backing_off = outbox::backoffs(&a);
    assert_eq!(backing_off.len(), 1, "b is backing off: {backing_off:?}");

    net.heal(a.server_name(), b.server_name());
    // Not before the backoff is over.
    assert_eq!(outbox::flush(&a).await.unwrap(), 0);
    world_a.advance(outbox::MAX_BACKOFF_MS);
    settle(&[&a, &b]).await;
    let got = bodies(&bob, &room).await;
    assert_eq!(got.len(), 5, "bob got {got:?}");
    // The partition swallowed the attempts; the five came in one transaction after it.
    assert_eq!(
        net.count(b.server_name(), "/_matrix/federation/v1/send/"),
        1
    );
}

#[tokio::test]
async fn a_tampered_pdu_fails_its_signature_check() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;

    // Alice's next message, tampered with on the way: the signature no longer matches.
    let id = say(&alice, &room, "genuine").await;
    let pdu = hearth_core::db::rooms::get_pdu(&a, &id)
        .await
        .unwrap()
        .unwrap();
    let mut forged = pdu.json.clone();
    forged["content"]["body"] = json!("forged");
    forged["origin_server_ts"] = json!(1);
    let outcome = hearth_core::federation::receive::receive_pdu(&b, a.server_name(), &forged).await;
    assert!(outcome.is_err(), "the forged PDU was accepted: {outcome:?}");
    settle(&[&a, &b]).await;
    assert_eq!(bodies(&bob, &room).await, vec!["genuine".to_owned()]);
}

async fn state_ids(c: &TestClient, room: &str) -> Vec<(String, String, String)> {
    let v = c
        .get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)))
        .await;
    let mut out: Vec<(String, String, String)> = v
        .assert_ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["state_key"].as_str().unwrap().to_owned(),
                e["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn put_state(c: &TestClient, room: &str, event_type: &str, content: Value) {
    c.put(
        &format!("/_matrix/client/v3/rooms/{}/state/{event_type}/", enc(room)),
        content,
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn conflicting_changes_during_a_partition_converge_after_it() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    put_state(
        &alice,
        &room,
        "m.room.power_levels",
        json!({ "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 } }),
    )
    .await;
    settle(&[&a, &b]).await;
    assert_eq!(state_ids(&alice, &room).await, state_ids(&bob, &room).await);

    net.partition(a.server_name(), b.server_name());
    // Each side changes the name; alice also takes bob's power away; bob, unaware, changes
    // the topic and the name again.
    put_state(&alice, &room, "m.room.name", json!({ "name": "alice's" })).await;
    put_state(
        &alice,
        &room,
        "m.room.power_levels",
        json!({ "users": { alice.user_id.clone(): 100 } }),
    )
    .await;
    put_state(&bob, &room, "m.room.name", json!({ "name": "bob's" })).await;
    put_state(
        &bob,
        &room,
        "m.room.topic",
        json!({ "topic": "bob's topic" }),
    )
    .await;
    settle(&[&a, &b]).await;
    assert_ne!(state_ids(&alice, &room).await, state_ids(&bob, &room).await);

    net.heal(a.server_name(), b.server_name());
    // Retry at once instead of waiting out the backoff: the test's clocks do not run.
    hearth_core::federation::outbox::forget_backoff(&a);
    hearth_core::federation::outbox::forget_backoff(&b);
    settle(&[&a, &b]).await;
    // One more event on each side merges the branches there too.
    say(&alice, &room, "after a").await;
    say(&bob, &room, "after b").await;
    settle(&[&a, &b]).await;

    let on_a = state_ids(&alice, &room).await;
    let on_b = state_ids(&bob, &room).await;
    assert_eq!(
        on_a, on_b,
        "the servers disagree after the partition healed"
    );
    // Bob lost his power before his changes could count: alice's name stands.
    let name = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.name/",
            enc(&room)
        ))
        .await;
    assert_eq!(name.assert_ok()["name"], "alice's");
}

#[tokio::test]
async fn typing_receipts_presence_and_to_device_cross_servers() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    let event = say(&alice, &room, "read me").await;
    settle(&[&a, &b]).await;

    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                enc(&room),
                enc(&alice.user_id)
            ),
            json!({ "typing": true, "timeout": 20000 }),
        )
        .await
        .assert_ok();
    bob.post(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&event)
        ),
        json!({}),
    )
    .await
    .assert_ok();
    alice
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/txn1",
            json!({ "messages": { bob.user_id.clone(): { bob.device_id.clone(): { "hello": "bob" } } } }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
            json!({ "presence": "unavailable", "status_msg": "lunch" }),
        )
        .await
        .assert_ok();
    settle(&[&a, &b]).await;

    let on_b = bob.get("/_matrix/client/v3/sync").await;
    let on_b = on_b.assert_ok();
    let typing: Vec<&Value> = on_b["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.typing")
        .collect();
    assert_eq!(typing[0]["content"]["user_ids"], json!([alice.user_id]));
    let to_device = &on_b["to_device"]["events"];
    assert_eq!(to_device[0]["content"]["hello"], "bob", "{to_device}");
    assert_eq!(to_device[0]["sender"], alice.user_id.as_str());
    let presence: Vec<&Value> = on_b["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["sender"] == alice.user_id.as_str())
        .collect();
    assert_eq!(
        presence[0]["content"]["presence"], "unavailable",
        "{presence:?}"
    );
    assert_eq!(presence[0]["content"]["status_msg"], "lunch");

    let on_a = alice.get("/_matrix/client/v3/sync").await;
    let receipts: Vec<&Value> = on_a.assert_ok()["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.receipt")
        .collect();
    assert!(
        receipts[0]["content"][&event]["m.read"][&bob.user_id].is_object(),
        "{receipts:?}"
    );
}

#[tokio::test]
async fn another_servers_directory_lists_its_rooms_and_its_aliases_lead_in() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = create_room(
        &alice,
        json!({ "preset": "public_chat", "visibility": "public", "name": "lobby", "room_alias_name": "lobby" }),
    )
    .await;
    let listed = bob
        .get(&format!(
            "/_matrix/client/v3/publicRooms?server={}",
            a.server_name()
        ))
        .await;
    let listed = listed.assert_ok();
    assert_eq!(listed["chunk"][0]["room_id"], room.as_str(), "{listed}");
    assert_eq!(listed["chunk"][0]["name"], "lobby");
    let filtered = bob
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={}", a.server_name()),
            json!({ "filter": { "generic_search_term": "lob" } }),
        )
        .await;
    assert_eq!(filtered.assert_ok()["chunk"][0]["room_id"], room.as_str());

    let alias = format!("#lobby:{}", a.server_name());
    let joined = bob
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&alias)),
            json!({}),
        )
        .await;
    assert_eq!(joined.assert_ok()["room_id"], room.as_str());
    settle(&[&a, &b]).await;
    assert_eq!(members(&alice, &room).await.len(), 2);
}

/// Re-signs `pdu` as `hs` after `edit`, as a server that means it would.
fn resign(hs: &Homeserver, pdu: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut v = pdu.clone();
    edit(&mut v);
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("hashes");
        o.remove("unsigned");
    }
    let ruma::CanonicalJsonValue::Object(mut object) =
        ruma::canonical_json::to_canonical_value(&v).unwrap()
    else {
        panic!("not an object")
    };
    let rules = ruma::RoomVersionId::V10.rules().unwrap();
    ruma::signatures::hash_and_sign_event(
        hs.server_name().as_str(),
        &hs.key.pair,
        &mut object,
        &rules.redaction,
    )
    .unwrap();
    serde_json::to_value(&object).unwrap()
}

#[tokio::test]
async fn a_pdu_from_a_sender_the_room_does_not_allow_is_refused() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = create_room(
        &alice,
        json!({ "preset": "public_chat", "room_version": "10" }),
    )
    .await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    let id = say(&alice, &room, "genuine").await;
    settle(&[&a, &b]).await;
    let pdu = hearth_core::db::rooms::get_pdu(&a, &id)
        .await
        .unwrap()
        .unwrap();
    // Correctly signed by a's key, but sent as a user of a who never joined.
    let mallory = format!("@mallory:{}", a.server_name());
    let forged = resign(&a, &pdu.json, |v| {
        v["sender"] = json!(mallory);
        v["content"]["body"] = json!("from someone not in the room");
        v["prev_events"] = json!([id]);
    });
    let outcome = hearth_core::federation::receive::receive_pdu(&b, a.server_name(), &forged).await;
    let err = outcome.expect_err("an event from a non-member was accepted");
    assert!(
        err.1.contains("auth"),
        "refused for another reason: {err:?}"
    );
    assert_eq!(bodies(&bob, &room).await, vec!["genuine".to_owned()]);
}

#[tokio::test]
async fn a_gap_is_filled_with_get_missing_events() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    say(&alice, &room, "one").await;
    say(&alice, &room, "two").await;
    let three = say(&alice, &room, "three").await;
    // Only the last reaches b (its transaction carried just that one); b asks a for the rest.
    let pdu = hearth_core::db::rooms::get_pdu(&a, &three)
        .await
        .unwrap()
        .unwrap();
    hearth_core::federation::receive::receive_pdu(&b, a.server_name(), &pdu.json)
        .await
        .expect("the event and its gap are accepted");
    assert!(
        net.count(
            a.server_name(),
            "/_matrix/federation/v1/get_missing_events/"
        ) >= 1
    );
    assert_eq!(
        bodies(&bob, &room).await,
        vec!["one".to_owned(), "two".to_owned(), "three".to_owned()]
    );
    // The queued copies arriving later change nothing.
    settle(&[&a, &b]).await;
    assert_eq!(bodies(&bob, &room).await.len(), 3);
}

#[tokio::test]
async fn media_of_another_server_is_fetched_once_and_kept() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let bytes = b"hello from a's media store".to_vec();
    let up = alice
        .request_raw(
            http::Method::POST,
            "/_matrix/media/v3/upload?filename=note.txt",
            bytes.clone(),
            "text/plain",
        )
        .await;
    let mxc = up.assert_ok()["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();
    assert_eq!(server, a.server_name().as_str());
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");
    for _ in 0..2 {
        let got = bob.get(&path).await;
        assert_eq!(got.status, 200, "{:?}", got.body);
        assert_eq!(got.raw, bytes);
        assert_eq!(
            got.headers.get("content-type").unwrap().to_str().unwrap(),
            "text/plain"
        );
    }
    assert_eq!(
        net.count(a.server_name(), "/_matrix/federation/v1/media/download/"),
        1,
        "the second download came from b's copy"
    );
    let missing = bob
        .get(&format!(
            "/_matrix/client/v1/media/download/{server}/nosuchmedia"
        ))
        .await;
    missing.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn a_knock_from_another_server_is_let_in() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = create_room(
        &alice,
        json!({ "preset": "private_chat", "name": "knock knock",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                    "content": { "join_rule": "knock" } }] }),
    )
    .await;
    bob.post(
        &format!(
            "/_matrix/client/v3/knock/{}?via={}",
            enc(&room),
            a.server_name()
        ),
        json!({ "reason": "let me in" }),
    )
    .await
    .assert_ok();
    let sync = bob.get("/_matrix/client/v3/sync").await;
    let knock = &sync.assert_ok()["rooms"]["knock"][&room]["knock_state"]["events"];
    assert!(
        knock
            .as_array()
            .expect("a knock in bob's sync")
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "knock knock"),
        "{knock}"
    );
    assert!(
        members(&alice, &room)
            .await
            .contains(&(bob.user_id.clone(), "knock".to_owned()))
    );

    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({ "user_id": bob.user_id }),
        )
        .await
        .assert_ok();
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    assert!(
        members(&alice, &room)
            .await
            .contains(&(bob.user_id.clone(), "join".to_owned()))
    );
}

#[tokio::test]
async fn a_redaction_that_overtakes_its_target_applies_when_the_target_arrives() {
    redaction_before_its_target(false).await;
}

#[tokio::test]
async fn a_redaction_before_its_target_in_one_transaction_applies() {
    redaction_before_its_target(true).await;
}

/// The redaction arrives before its target: in a transaction of its own (`together` false),
/// or ahead of it in the same one, which is accepted in one room transaction.
async fn redaction_before_its_target(together: bool) {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = create_room(
        &alice,
        json!({ "preset": "public_chat", "room_version": "10" }),
    )
    .await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    let base = say(&alice, &room, "base").await;
    settle(&[&a, &b]).await;
    net.partition(a.server_name(), b.server_name());
    let secret = say(&alice, &room, "secret").await;
    let secret_pdu = hearth_core::db::rooms::get_pdu(&a, &secret)
        .await
        .unwrap()
        .unwrap();
    // A redaction on a branch beside its target (built on `base`, not on the target), so that
    // nothing makes b fetch the target first.
    let base_pdu = hearth_core::db::rooms::get_pdu(&a, &base)
        .await
        .unwrap()
        .unwrap();
    let redaction = resign(&a, &base_pdu.json, |v| {
        v["type"] = json!("m.room.redaction");
        v["content"] = json!({ "reason": "oops" });
        v["redacts"] = json!(secret);
        v["prev_events"] = json!([base]);
        v["depth"] = json!(base_pdu.depth + 1);
    });
    if together {
        let got = hearth_core::federation::receive::receive_pdus(
            &b,
            a.server_name(),
            &[redaction, secret_pdu.json.clone()],
            None,
        )
        .await
        .unwrap()
        .0;
        assert!(got.iter().all(Result::is_ok), "{got:?}");
    } else {
        hearth_core::federation::receive::receive_pdu(&b, a.server_name(), &redaction)
            .await
            .expect("the redaction is accepted");
        hearth_core::federation::receive::receive_pdu(&b, a.server_name(), &secret_pdu.json)
            .await
            .expect("the target is accepted");
    }
    let seen = bob
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&secret)
        ))
        .await;
    let seen = seen.assert_ok();
    assert!(
        seen["content"].get("body").is_none(),
        "the target kept its content: {seen}"
    );
    assert!(seen["unsigned"]["redacted_because"].is_object(), "{seen}");
}

#[tokio::test]
async fn a_peer_that_hangs_does_not_hold_up_the_others() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (c, _) = net.server(3).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let carol = TestClient::register(&c, "carol").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    for u in [&bob, &carol] {
        u.post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    }
    settle(&[&a, &b, &c]).await;

    // b takes every request and never answers.
    net.hold(hearth_core::testing::network::Link::to(b.server_name()));
    let sender = outbox::run(a.clone());
    let check = async {
        say(&alice, &room, "first").await;
        let started = std::time::Instant::now();
        while bodies(&carol, &room).await != vec!["first".to_owned()] {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "carol never got it"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // b's transaction is still out; a second message reaches carol all the same.
        say(&alice, &room, "second").await;
        while bodies(&carol, &room).await.len() < 2 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "the second never came"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // Meanwhile alice's own requests are answered.
        alice
            .get("/_matrix/client/v3/sync?timeout=0")
            .await
            .assert_ok();
    };
    futures::pin_mut!(sender);
    futures::pin_mut!(check);
    match futures::future::select(sender, check).await {
        futures::future::Either::Right(((), _)) => {}
        futures::future::Either::Left(_) => panic!("the sender stopped"),
    }
    assert!(
        !net.held().is_empty(),
        "b's transaction is held, not answered"
    );
}

#[tokio::test]
async fn garbage_in_a_transaction_fails_only_itself() {
    use ruma::api::federation::transactions::send_transaction_message::v1 as send_txn;
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    net.partition(a.server_name(), b.server_name());
    let good = say(&alice, &room, "good").await;
    net.heal(a.server_name(), b.server_name());
    let good_pdu = hearth_core::db::rooms::get_pdu(&a, &good)
        .await
        .unwrap()
        .unwrap();
    let mut oversize = good_pdu.json.clone();
    oversize["content"]["body"] = json!("x".repeat(70_000));
    let mut other_room = good_pdu.json.clone();
    other_room["room_id"] = json!("!nowhere:example.org");
    let raws: Vec<Value> = vec![
        json!("not an object"),
        json!({ "type": "m.room.message" }),
        oversize,
        other_room,
        good_pdu.json.clone(),
    ];
    let mut req = send_txn::Request::new(
        "garbage-1".into(),
        a.owned_server_name(),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    req.pdus = raws
        .iter()
        .map(|v| serde_json::value::to_raw_value(v).unwrap())
        .collect();
    let answer = hearth_core::federation::client::send(&a, b.server_name(), req)
        .await
        .expect("the transaction is answered");
    assert_eq!(
        answer.pdus.get(&good_pdu.event_id),
        Some(&Ok(())),
        "{:?}",
        answer.pdus
    );
    // Nothing else was accepted. The garbage has no id to be answered by (no room this server
    // is in to take a version from, or too large to hash), so it is dropped, as Synapse does.
    assert_eq!(
        answer.pdus.values().filter(|r| r.is_ok()).count(),
        1,
        "{:?}",
        answer.pdus
    );
    assert_eq!(bodies(&bob, &room).await, vec!["good".to_owned()]);

    // Over the spec's 50 PDUs: the whole transaction is refused, nothing is applied.
    let mut req = send_txn::Request::new(
        "garbage-2".into(),
        a.owned_server_name(),
        ruma::MilliSecondsSinceUnixEpoch::now(),
    );
    req.pdus = (0..51)
        .map(|_| serde_json::value::to_raw_value(&good_pdu.json).unwrap())
        .collect();
    let refused = hearth_core::federation::client::send(&a, b.server_name(), req).await;
    match refused {
        Err(hearth_core::federation::client::FederationError::Remote {
            status, errcode, ..
        }) => {
            assert_eq!((status, errcode.as_str()), (400, "M_BAD_JSON"));
        }
        other => panic!("expected 400 M_BAD_JSON, got {other:?}"),
    }
}

#[tokio::test]
async fn three_servers_converge_on_conflicting_membership_changes() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (c, _) = net.server(3).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let carol = TestClient::register(&c, "carol").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    for u in [&bob, &carol] {
        u.post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
        settle(&[&a, &b, &c]).await;
    }
    let all = [&a, &b, &c];
    put_state(
        &alice,
        &room,
        "m.room.power_levels",
        json!({ "users": { alice.user_id.clone(): 100, bob.user_id.clone(): 50 } }),
    )
    .await;
    settle(&all).await;
    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        net.partition(x.server_name(), y.server_name());
    }
    // Alice bans carol; carol, unaware, changes her display name (a new join event); bob
    // changes the topic.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({ "user_id": carol.user_id }),
        )
        .await
        .assert_ok();
    carol
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&carol.user_id)
            ),
            json!({ "displayname": "Carol the unbanned" }),
        )
        .await
        .assert_ok();
    put_state(&bob, &room, "m.room.topic", json!({ "topic": "bob's" })).await;
    settle(&all).await;

    for (x, y) in [(&a, &b), (&a, &c), (&b, &c)] {
        net.heal(x.server_name(), y.server_name());
    }
    for s in all {
        outbox::forget_backoff(s);
    }
    settle(&all).await;
    say(&alice, &room, "after a").await;
    say(&bob, &room, "after b").await;
    settle(&all).await;

    let on_a = state_ids(&alice, &room).await;
    assert_eq!(on_a, state_ids(&bob, &room).await, "a and b disagree");
    let carol_member = on_a
        .iter()
        .find(|(t, k, _)| t == "m.room.member" && *k == carol.user_id)
        .expect("carol's membership");
    let ev = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(&room),
            enc(&carol_member.2)
        ))
        .await;
    assert_eq!(
        ev.assert_ok()["content"]["membership"],
        "ban",
        "the ban stands"
    );
    assert!(
        on_a.iter().any(|(t, _, _)| t == "m.room.topic"),
        "bob's topic counts"
    );
    // Carol's server, banned, hears of the ban too and holds the same state for the room.
    let on_c =
        hearth_core::db::rooms::room_state(&c, <&ruma::RoomId>::try_from(room.as_str()).unwrap())
            .await
            .unwrap()
            .unwrap();
    let mut c_state: Vec<(String, String, String)> = on_c
        .state
        .iter()
        .map(|((t, k), id)| (t.clone(), k.clone(), id.to_string()))
        .collect();
    c_state.sort();
    // c did not get "after a"/"after b" states beyond these (messages are not state).
    assert_eq!(c_state, on_a, "c disagrees");
}

#[tokio::test]
async fn history_a_server_may_not_see_reaches_it_redacted() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = create_room(
        &alice,
        json!({ "preset": "public_chat",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                                    "content": { "history_visibility": "joined" } }] }),
    )
    .await;
    let secret = say(&alice, &room, "before anyone from b").await;
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    say(&alice, &room, "after bob").await;
    settle(&[&a, &b]).await;
    // Paging back makes b backfill; the earlier message comes redacted.
    assert_eq!(bodies(&bob, &room).await, vec!["after bob".to_owned()]);
    let kept = hearth_core::db::rooms::get_pdu(&b, &secret).await.unwrap();
    if let Some(p) = kept {
        assert!(
            p.content.get("body").is_none(),
            "b holds the hidden text: {}",
            p.content
        );
    }
    // Asked directly, a's server answers with the redacted event as well.
    let got = hearth_core::federation::client::send(
        &b,
        a.server_name(),
        ruma::api::federation::event::get_event::v1::Request::new(
            secret.as_str().try_into().unwrap(),
        ),
    )
    .await
    .expect("the event is served");
    let v: Value = serde_json::from_str(got.pdu.get()).unwrap();
    assert!(v["content"].get("body").is_none(), "served whole: {v}");
}

#[tokio::test]
async fn a_restricted_room_is_joined_from_another_server_on_a_members_word() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let space = create_room(&alice, json!({ "preset": "public_chat" })).await;
    let restricted = create_room(
        &alice,
        json!({ "preset": "private_chat", "room_version": "10",
                "initial_state": [{ "type": "m.room.join_rules", "state_key": "",
                                    "content": { "join_rule": "restricted",
                                                 "allow": [{ "type": "m.room_membership", "room_id": space }] } }] }),
    )
    .await;
    // Not yet a member of the allowed room: refused.
    bob.post(
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            enc(&restricted),
            a.server_name()
        ),
        json!({}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&space)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    bob.post(
        &format!(
            "/_matrix/client/v3/join/{}?via={}",
            enc(&restricted),
            a.server_name()
        ),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    let joined = members(&alice, &restricted).await;
    assert!(
        joined.contains(&(bob.user_id.clone(), "join".to_owned())),
        "{joined:?}"
    );
    say(&bob, &restricted, "in on alice's word").await;
    settle(&[&a, &b]).await;
    assert_eq!(
        bodies(&alice, &restricted).await,
        vec!["in on alice's word".to_owned()]
    );
}

/// Memory storage whose writes become durable only while its gate is open, one in flight at a
/// time (as the IndexedDB backend keeps them), and that counts its writes (each one is an
/// IndexedDB transaction in a browser) and the keys read together.
#[derive(Default)]
struct Gated {
    inner: hearth_core::storage::MemoryStorage,
    gate: std::rc::Rc<Gate>,
    /// Writes that have asked to be issued (some may be waiting for the one ahead).
    begun: std::cell::Cell<usize>,
    /// Keys asked for through `get_many` (what a browser reads in one transaction).
    many_keys: std::cell::Cell<usize>,
    ahead: std::cell::RefCell<
        Option<futures::future::Shared<futures::future::LocalBoxFuture<'static, ()>>>,
    >,
}

#[derive(Default)]
struct Gate {
    closed: std::cell::Cell<bool>,
    wakers: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl Gate {
    fn open(&self) {
        self.closed.set(false);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    fn passed(self: std::rc::Rc<Self>) -> impl std::future::Future<Output = ()> {
        futures::future::poll_fn(move |cx| {
            if self.closed.get() {
                self.wakers.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
    }
}

#[async_trait::async_trait(?Send)]
impl hearth_core::storage::Storage for Gated {
    async fn get(
        &self,
        tree: &'static str,
        key: &[u8],
    ) -> hearth_core::storage::StorageResult<Option<Vec<u8>>> {
        self.inner.get(tree, key).await
    }

    async fn scan(
        &self,
        tree: &'static str,
        range: hearth_core::storage::KeyRange,
        direction: hearth_core::storage::Direction,
        limit: usize,
    ) -> hearth_core::storage::StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(tree, range, direction, limit).await
    }

    async fn get_many(
        &self,
        tree: &'static str,
        keys: &[Vec<u8>],
    ) -> hearth_core::storage::StorageResult<Vec<Option<Vec<u8>>>> {
        self.many_keys.set(self.many_keys.get() + keys.len());
        self.inner.get_many(tree, keys).await
    }

    async fn begin_write(
        &self,
        batch: hearth_core::storage::Batch,
    ) -> hearth_core::storage::StorageResult<hearth_core::storage::Durable> {
        use futures::FutureExt;
        self.begun.set(self.begun.get() + 1);
        let ahead = self.ahead.borrow().clone();
        if let Some(ahead) = ahead {
            ahead.await;
        }
        self.inner.begin_write(batch).await?.await?;
        let durable = self.gate.clone().passed().boxed_local().shared();
        *self.ahead.borrow_mut() = Some(durable.clone());
        Ok(Box::pin(durable.map(Ok)))
    }
}

/// Server 1, and server 2 on a [`Gated`] store.
async fn with_gated_receiver(
    net: &Network,
) -> (
    Homeserver,
    std::rc::Rc<hearth_core::testing::TestWorld>,
    Homeserver,
    std::rc::Rc<Gated>,
) {
    let (a, world_a) = net.server(1).await;
    let store = std::rc::Rc::new(Gated::default());
    let world_b = std::rc::Rc::new(hearth_core::testing::TestWorld::new(2));
    let b = net
        .server_on(store.clone(), world_b, hearth_core::testing::test_config())
        .await;
    (a, world_a, b, store)
}

#[tokio::test]
async fn a_backlog_transaction_is_written_in_one_go() {
    let net = Network::new();
    let (a, world_a, b, store) = with_gated_receiver(&net).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;

    net.partition(a.server_name(), b.server_name());
    for i in 0..40 {
        say(&alice, &room, &format!("backlog {i}")).await;
    }
    assert_eq!(outbox::flush(&a).await.unwrap(), 0);
    net.heal(a.server_name(), b.server_name());
    world_a.advance(outbox::MAX_BACKOFF_MS);
    let before = store.begun.get();
    settle(&[&a, &b]).await;
    let got = bodies(&bob, &room).await;
    assert_eq!(got.len(), 40, "bob got {got:?}");
    assert_eq!(got.first().map(String::as_str), Some("backlog 0"));
    assert_eq!(got.last().map(String::as_str), Some("backlog 39"));
    // The 40 PDUs and the transaction's record in one room transaction: not 41 writes.
    let writes = store.begun.get() - before;
    assert!(writes <= 2, "receiving 40 PDUs took {writes} writes");
    // Their ids were looked up together, through every layer above the backend.
    assert!(
        store.many_keys.get() >= 40,
        "{} keys read together",
        store.many_keys.get()
    );
}

#[tokio::test]
async fn a_relay_holding_for_an_absent_server_lets_its_items_gather() {
    let net = Network::new();
    let (a, world_a) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;

    // b goes away; what stands in its place is a relay that holds everything for it.
    net.add_handler(
        b.server_name(),
        std::rc::Rc::new(|_req| {
            http::Response::builder()
                .status(200)
                .header(hearth_core::federation::transport::HELD_HEADER, "1")
                .body(br#"{"pdus":{}}"#.to_vec())
                .unwrap()
        }),
    );
    let sends = || net.count(b.server_name(), "/_matrix/federation/v1/send/");
    let start = sends();
    say(&alice, &room, "first").await;
    assert_eq!(outbox::flush(&a).await.unwrap(), 1);
    assert_eq!(sends(), start + 1);
    for i in 0..10 {
        say(&alice, &room, &format!("more {i}")).await;
        assert_eq!(outbox::flush(&a).await.unwrap(), 0, "sent at once: {i}");
    }
    assert_eq!(sends(), start + 1);
    world_a.advance(outbox::HELD_GATHER_MS);
    assert_eq!(outbox::flush(&a).await.unwrap(), 1);
    assert_eq!(sends(), start + 2, "the ten went in one transaction");
    // A server that comes back is sent to at once.
    outbox::forget_backoff(&a);
    say(&alice, &room, "welcome back").await;
    assert_eq!(outbox::flush(&a).await.unwrap(), 1);
}

#[tokio::test]
async fn the_status_lists_the_servers_this_one_federates_with() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (c, _) = net.server(3).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    assert_eq!(
        hearth_core::federation::peers::list(&a).await.unwrap(),
        vec![]
    );
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    let _carol = TestClient::register(&c, "carol").await;
    let peers = hearth_core::federation::peers::list(&a).await.unwrap();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(peers[0].server, b.server_name().as_str());
    assert_eq!(
        (peers[0].rooms, peers[0].queued, peers[0].failures),
        (1, 0, 0)
    );

    // While b is unreachable, what waits for it and its backoff show.
    net.partition(a.server_name(), b.server_name());
    say(&alice, &room, "one").await;
    say(&alice, &room, "two").await;
    assert_eq!(outbox::flush(&a).await.unwrap(), 0);
    let peers = hearth_core::federation::peers::list(&a).await.unwrap();
    assert_eq!((peers[0].queued, peers[0].failures), (2, 1));
    assert!(peers[0].retry_at.is_some());
    // Bob leaves: a is no longer federating with anyone.
    net.heal(a.server_name(), b.server_name());
    outbox::forget_backoff(&a);
    settle(&[&a, &b]).await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    assert_eq!(
        hearth_core::federation::peers::list(&a).await.unwrap(),
        vec![]
    );
}

/// `pdu`'s federation form, as `a` serves it to `b`.
async fn pdu_as_served(a: &Homeserver, b: &Homeserver, id: &str) -> Value {
    let mut req = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("/_matrix/federation/v1/event/{}", enc(id)))
        .body(Vec::new())
        .unwrap();
    hearth_core::federation::auth::sign_request(b, a.server_name(), &mut req).unwrap();
    let resp = a.handle(req).await;
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_slice(resp.body()).unwrap();
    v["pdus"][0].clone()
}

/// `PUT /send/{txn}` from `from` to `to`, signed, with this body.
fn signed_send(
    from: &Homeserver,
    to: &Homeserver,
    txn: &str,
    body: Value,
) -> http::Request<Vec<u8>> {
    let mut req = http::Request::builder()
        .method(http::Method::PUT)
        .uri(format!("/_matrix/federation/v1/send/{txn}"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    hearth_core::federation::auth::sign_request(from, to.server_name(), &mut req).unwrap();
    req
}

fn txn_body(from: &Homeserver, pdus: &[Value]) -> Value {
    json!({ "origin": from.server_name().as_str(), "origin_server_ts": 1, "pdus": pdus })
}

/// Errors a `/send` answer reports for its PDUs.
fn pdu_errors(resp: &http::Response<Vec<u8>>) -> Vec<String> {
    let v: Value = serde_json::from_slice(resp.body()).unwrap();
    v["pdus"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|r| r.get("error").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The relay hands a returning server several stored transactions at once. They are applied
/// in the order they arrived, whatever order their handlers run in: here the second is polled
/// first, and its PDUs build on the first's. The two servers are cut apart, so a gap could not
/// be filled by asking the sender: only the order makes this work.
#[tokio::test]
async fn transactions_in_flight_together_apply_in_the_order_they_arrived() {
    use hearth_core::federation::arrival::handle_in_order;
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    net.partition(a.server_name(), b.server_name());
    let mut pdus = Vec::new();
    for text in ["one", "two", "three"] {
        let id = say(&alice, &room, text).await;
        pdus.push(pdu_as_served(&a, &b, &id).await);
    }
    let first = handle_in_order(&b, signed_send(&a, &b, "x1", txn_body(&a, &pdus[..1])));
    let second = handle_in_order(&b, signed_send(&a, &b, "x2", txn_body(&a, &pdus[1..])));
    let (second, first) = futures::join!(second, first);
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(pdu_errors(&first), Vec::<String>::new());
    assert_eq!(pdu_errors(&second), Vec::<String>::new());
    assert_eq!(bodies(&bob, &room).await, ["one", "two", "three"]);
}

/// The next transaction on a channel is checked and prepared while the previous one's write
/// is still being committed: its write is waiting to be issued before the first is durable.
#[tokio::test]
async fn the_next_transaction_is_prepared_while_the_previous_one_commits() {
    use hearth_core::federation::arrival::handle_in_order;
    let net = Network::new();
    let (a, _, b, store) = with_gated_receiver(&net).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    net.partition(a.server_name(), b.server_name());
    let mut pdus = Vec::new();
    for text in ["one", "two", "three"] {
        let id = say(&alice, &room, text).await;
        pdus.push(pdu_as_served(&a, &b, &id).await);
    }
    store.gate.closed.set(true);
    let begun = store.begun.get();
    let first = handle_in_order(&b, signed_send(&a, &b, "x1", txn_body(&a, &pdus[..1])));
    let second = handle_in_order(&b, signed_send(&a, &b, "x2", txn_body(&a, &pdus[1..])));
    let both = Box::pin(futures::future::join(first, second));
    let prepared = Box::pin(async {
        for _ in 0..1000 {
            if store.begun.get() >= begun + 2 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the second transaction's write was not prepared while the first committed");
    });
    let futures::future::Either::Right(((), both)) = futures::future::select(both, prepared).await
    else {
        panic!("answered while the first write could not become durable");
    };
    store.gate.open();
    let (first, second) = both.await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_eq!(pdu_errors(&first), Vec::<String>::new());
    assert_eq!(pdu_errors(&second), Vec::<String>::new());
    assert_eq!(bodies(&bob, &room).await, ["one", "two", "three"]);
}

/// When a transaction fails, the ones in flight behind it are not applied (they would build
/// on what is missing) but answered with a retryable error; the sender's retry goes through.
#[tokio::test]
async fn a_failed_transaction_holds_back_those_in_flight_behind_it() {
    use hearth_core::federation::arrival::handle_in_order;
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = shared_room(&alice, &bob, &[&a, &b]).await;
    net.partition(a.server_name(), b.server_name());
    let id = say(&alice, &room, "one").await;
    let pdu = pdu_as_served(&a, &b, &id).await;
    let bad = handle_in_order(&b, signed_send(&a, &b, "x0", json!({ "pdus": 5 })));
    let good = handle_in_order(
        &b,
        signed_send(&a, &b, "x1", txn_body(&a, std::slice::from_ref(&pdu))),
    );
    let (good, bad) = futures::join!(good, bad);
    assert_eq!(bad.status(), 400);
    assert_eq!(good.status(), 503);
    let v: Value = serde_json::from_slice(good.body()).unwrap();
    assert_eq!(v["errcode"], "M_UNKNOWN");
    assert!(bodies(&bob, &room).await.is_empty());
    let again = handle_in_order(&b, signed_send(&a, &b, "x1", txn_body(&a, &[pdu]))).await;
    assert_eq!(again.status(), 200);
    assert_eq!(pdu_errors(&again), Vec::<String>::new());
    assert_eq!(bodies(&bob, &room).await, ["one"]);
}
