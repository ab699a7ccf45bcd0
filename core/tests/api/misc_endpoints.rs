//! Smaller endpoints: jumping to a date (`timestamp_to_event`), mutual rooms, the support
//! contact, URL previews (declined), extended profile fields, and typing/presence edge cases.

use std::rc::Rc;

use hearth_core::client::misc_rooms::MUTUAL_ROOMS_PAGE;
use hearth_core::client::support::SupportInfo;
use hearth_core::storage::MemoryStorage;
use hearth_core::testing::{TestClient, TestWorld, enc, test_server};
use hearth_core::{Config, Homeserver};
use ruma::OwnedUserId;
use ruma::api::client::discovery::discover_support::{Contact, ContactRole};
use serde_json::{Value, json};

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"].as_str().unwrap().to_owned()
}

async fn join(c: &TestClient, room: &str) {
    c.post(&format!("/_matrix/client/v3/join/{}", enc(room)), json!({}))
        .await
        .assert_ok();
}

async fn leave(c: &TestClient, room: &str) {
    c.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(room)),
        json!({}),
    )
    .await
    .assert_ok();
}

/// Sends a message; returns its id and `origin_server_ts`.
async fn send(c: &TestClient, room: &str, body: &str) -> (String, u64) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        enc(room),
        c.hs.random_string(8)
    );
    let r = c
        .put(&path, json!({ "msgtype": "m.text", "body": body }))
        .await;
    let id = r.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let ev = c
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/event/{}",
            enc(room),
            enc(&id)
        ))
        .await;
    let ts = ev.assert_ok()["origin_server_ts"].as_u64().unwrap();
    (id, ts)
}

fn ts_path(room: &str, ts: u64, dir: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}",
        enc(room)
    )
}

// --- timestamp_to_event ---------------------------------------------------------------------

#[tokio::test]
async fn timestamp_to_event_finds_the_closest_event_in_each_direction() {
    let (hs, world) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    world.advance(10_000);
    let (first, t1) = send(&alice, &room, "one").await;
    world.advance(10_000);
    let (second, t2) = send(&alice, &room, "two").await;
    world.advance(10_000);
    let (third, t3) = send(&alice, &room, "three").await;

    let at = |ts: u64, dir: &'static str| {
        let alice = alice.clone();
        let room = room.clone();
        async move { alice.get(&ts_path(&room, ts, dir)).await }
    };
    let r = at(t2 - 1, "f").await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "event_id": second, "origin_server_ts": t2 })
    );
    assert_eq!(at(t2, "f").await.assert_ok()["event_id"], second.as_str());
    assert_eq!(at(t2, "b").await.assert_ok()["event_id"], second.as_str());
    assert_eq!(
        at(t2 + 1, "b").await.assert_ok()["event_id"],
        second.as_str()
    );
    assert_eq!(
        at(t1 + 1, "f").await.assert_ok()["event_id"],
        second.as_str()
    );
    assert_eq!(
        at(t3 - 1, "b").await.assert_ok()["event_id"],
        second.as_str()
    );
    assert_eq!(
        at(t1 - 1, "f").await.assert_ok()["event_id"],
        first.as_str()
    );
    assert_eq!(
        at(u64::from(u32::MAX) * 1000, "b").await.assert_ok()["event_id"],
        third.as_str()
    );
    at(t3 + 1, "f").await.assert_error(404, "M_NOT_FOUND");
    // Before the room existed there is nothing to go back to.
    at(1, "b").await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn timestamp_to_event_is_refused_to_strangers() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = create_room(&alice, json!({})).await;
    let (_, t) = send(&alice, &room, "secret").await;
    eve.get(&ts_path(&room, t, "b"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let unknown = format!("!nowhere:{}", hs.server_name());
    eve.get(&ts_path(&unknown, t, "b"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    TestClient::anonymous(&hs)
        .get(&ts_path(&room, t, "b"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn timestamp_to_event_skips_events_the_caller_may_not_see() {
    let (hs, world) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({ "preset": "public_chat", "initial_state": [{
        "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" }
    }] }))
    .await;
    world.advance(10_000);
    let (_, before) = send(&alice, &room, "before bob").await;
    world.advance(10_000);
    join(&bob, &room).await;
    world.advance(10_000);
    let (during, t_during) = send(&alice, &room, "while bob is here").await;
    world.advance(10_000);
    leave(&bob, &room).await;
    world.advance(10_000);
    let (_, after) = send(&alice, &room, "after bob").await;

    // Going back from before Bob joined skips Alice's message (sent under `joined`
    // visibility) and finds only the room's first events: they were sent before any
    // `m.room.history_visibility` existed, so the default `shared` applies to them, and Bob
    // joined after them.
    let r = bob.get(&ts_path(&room, before, "b")).await;
    assert!(r.assert_ok()["origin_server_ts"].as_u64().unwrap() < before - 5_000);
    // Going forward from there skips to what Bob saw: his own join.
    let r = bob.get(&ts_path(&room, before, "f")).await;
    let join_event = r.assert_ok()["event_id"].as_str().unwrap().to_owned();
    assert_ne!(join_event, during);
    assert!(r.body["origin_server_ts"].as_u64().unwrap() < t_during);
    assert_eq!(
        bob.get(&ts_path(&room, t_during, "f")).await.assert_ok()["event_id"],
        during.as_str()
    );
    // Nothing after Bob left is his to find.
    let r = bob.get(&ts_path(&room, after, "b")).await;
    assert!(r.assert_ok()["origin_server_ts"].as_u64().unwrap() < after);
    bob.get(&ts_path(&room, after, "f"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Alice, who saw everything, finds the newest message.
    assert_eq!(
        alice.get(&ts_path(&room, after, "b")).await.assert_ok()["origin_server_ts"],
        after
    );
}

#[tokio::test]
async fn timestamp_to_event_validates_its_query() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let base = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event", enc(&room));
    alice
        .get(&format!("{base}?dir=f"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&format!("{base}?ts=5"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&format!("{base}?ts=5&dir=sideways"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&format!("{base}?ts=soon&dir=f"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

// --- Mutual rooms ---------------------------------------------------------------------------

fn mutual_path(user: &str, from: Option<&str>) -> String {
    let mut p = format!("/_matrix/client/v1/mutual_rooms?user_id={}", enc(user));
    if let Some(f) = from {
        p.push_str(&format!("&from={}", enc(f)));
    }
    p
}

#[tokio::test]
async fn mutual_rooms_lists_rooms_both_users_joined() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let mut shared = Vec::new();
    for _ in 0..2 {
        let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
        join(&bob, &room).await;
        shared.push(room);
    }
    shared.sort();
    create_room(&alice, json!({})).await; // Alice alone.
    let left = create_room(&alice, json!({ "preset": "public_chat" })).await;
    join(&bob, &left).await;
    leave(&bob, &left).await;
    let invited = create_room(&alice, json!({})).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&invited)),
            json!({ "user_id": bob.user_id }),
        )
        .await
        .assert_ok();

    let r = alice.get(&mutual_path(&bob.user_id, None)).await;
    assert_eq!(r.assert_ok(), &json!({ "joined": shared, "count": 2 }));
    let r = bob.get(&mutual_path(&alice.user_id, None)).await;
    assert_eq!(r.assert_ok()["joined"], json!(shared));
    // MSC2666's unstable path, which clients still use.
    let r = alice
        .get(&format!(
            "/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id={}",
            enc(&bob.user_id)
        ))
        .await;
    assert_eq!(r.assert_ok(), &json!({ "joined": shared }));
}

#[tokio::test]
async fn mutual_rooms_validates_its_query() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .get(&mutual_path(&alice.user_id, None))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v1/mutual_rooms?user_id=alice")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get("/_matrix/client/v1/mutual_rooms")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&mutual_path("@bob:elsewhere.example", Some("garbage")))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // A user nobody knows shares nothing.
    let r = alice
        .get(&mutual_path("@nobody:elsewhere.example", None))
        .await;
    assert_eq!(r.assert_ok(), &json!({ "joined": [], "count": 0 }));
    TestClient::anonymous(&hs)
        .get(&mutual_path(&alice.user_id, None))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn mutual_rooms_paginates() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let total = MUTUAL_ROOMS_PAGE + 3;
    let mut shared = Vec::new();
    for _ in 0..total {
        let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
        join(&bob, &room).await;
        shared.push(room);
    }
    shared.sort();
    let first = alice.get(&mutual_path(&bob.user_id, None)).await;
    let first = first.assert_ok().clone();
    assert_eq!(first["count"], total);
    assert_eq!(first["joined"].as_array().unwrap().len(), MUTUAL_ROOMS_PAGE);
    let next = first["next_batch"].as_str().unwrap();
    let second = alice.get(&mutual_path(&bob.user_id, Some(next))).await;
    let second = second.assert_ok();
    assert_eq!(second["count"], total);
    assert!(second.get("next_batch").is_none());
    let mut all: Vec<Value> = first["joined"].as_array().unwrap().clone();
    all.extend(second["joined"].as_array().unwrap().iter().cloned());
    assert_eq!(all, shared.iter().map(|r| json!(r)).collect::<Vec<_>>());
}

// --- Support --------------------------------------------------------------------------------

async fn server_with_support(support: SupportInfo) -> Homeserver {
    let config = Config {
        password_hash_memory_kib: 64,
        support,
        ..Config::default()
    };
    Homeserver::new(
        Rc::new(MemoryStorage::new()),
        Rc::new(TestWorld::new(8)),
        config,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn support_is_not_found_until_configured() {
    let (hs, _) = test_server(8).await;
    let r = TestClient::anonymous(&hs)
        .get("/.well-known/matrix/support")
        .await;
    r.assert_error(404, "M_NOT_FOUND");
    // Contacts that give no way to reach anyone do not count as support information.
    let hs = server_with_support(SupportInfo {
        contacts: vec![Contact::with_email_address(
            ContactRole::Admin,
            String::new(),
        )],
        support_page: Some(String::new()),
    })
    .await;
    TestClient::anonymous(&hs)
        .get("/.well-known/matrix/support")
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn support_serves_configured_contacts_and_page() {
    let admin = OwnedUserId::try_from("@admin:example.org").unwrap();
    let hs = server_with_support(SupportInfo {
        contacts: vec![
            Contact::with_matrix_id(ContactRole::Admin, admin),
            Contact::with_email_address(ContactRole::Security, "security@example.org".into()),
            Contact::with_email_address(ContactRole::Admin, String::new()),
        ],
        support_page: Some("https://example.org/support.html".into()),
    })
    .await;
    let r = TestClient::anonymous(&hs)
        .get("/.well-known/matrix/support")
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({
            "contacts": [
                { "role": "m.role.admin", "matrix_id": "@admin:example.org" },
                { "role": "m.role.security", "email_address": "security@example.org" },
            ],
            "support_page": "https://example.org/support.html",
        })
    );
}

// --- URL previews (declined) ----------------------------------------------------------------

#[tokio::test]
async fn url_preview_is_declined_with_empty_opengraph_data() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let url = enc("https://matrix.org/blog");
    for base in [
        "/_matrix/client/v1/media/preview_url",
        "/_matrix/media/v3/preview_url",
        "/_matrix/media/r0/preview_url",
    ] {
        let r = alice
            .get(&format!("{base}?url={url}&ts=1510610716656"))
            .await;
        assert_eq!(r.assert_ok(), &json!({}), "{base}");
        alice
            .get(&format!("{base}?url={}", enc("file:///etc/passwd")))
            .await
            .assert_error(400, "M_INVALID_PARAM");
        alice
            .get(&format!("{base}?url=not%20a%20url"))
            .await
            .assert_error(400, "M_INVALID_PARAM");
        alice.get(base).await.assert_error(400, "M_INVALID_PARAM");
        TestClient::anonymous(&hs)
            .get(&format!("{base}?url={url}"))
            .await
            .assert_error(401, "M_MISSING_TOKEN");
    }
}

// --- Extended profile fields ----------------------------------------------------------------

fn field_path(user: &str, key: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{}", enc(user), enc(key))
}

#[tokio::test]
async fn profile_fields_round_trip_and_show_in_the_profile() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    alice
        .put(
            &field_path(&alice.user_id, "m.tz"),
            json!({ "m.tz": "Europe/London" }),
        )
        .await
        .assert_ok();
    let pronouns = json!([{ "lang": "en", "summary": "she/her" }]);
    alice
        .put(
            &field_path(&alice.user_id, "io.fsky.nyx.pronouns"),
            json!({ "io.fsky.nyx.pronouns": pronouns }),
        )
        .await
        .assert_ok();
    // Null is stored, not taken as a deletion.
    alice
        .put(
            &field_path(&alice.user_id, "org.example.nothing"),
            json!({ "org.example.nothing": null }),
        )
        .await
        .assert_ok();

    // Anyone may read them, without a token.
    let anon = TestClient::anonymous(&hs);
    assert_eq!(
        anon.get(&field_path(&alice.user_id, "m.tz"))
            .await
            .assert_ok(),
        &json!({ "m.tz": "Europe/London" })
    );
    let r = bob
        .get(&field_path(&alice.user_id, "io.fsky.nyx.pronouns"))
        .await;
    assert_eq!(r.assert_ok(), &json!({ "io.fsky.nyx.pronouns": pronouns }));
    let r = bob
        .get(&field_path(&alice.user_id, "org.example.nothing"))
        .await;
    assert_eq!(r.assert_ok(), &json!({ "org.example.nothing": null }));
    let profile = anon
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(
        profile.assert_ok(),
        &json!({ "displayname": "alice", "m.tz": "Europe/London", "io.fsky.nyx.pronouns": pronouns, "org.example.nothing": null })
    );

    alice
        .delete(&field_path(&alice.user_id, "m.tz"))
        .await
        .assert_ok();
    anon.get(&field_path(&alice.user_id, "m.tz"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Deleting what is not there is fine.
    alice
        .delete(&field_path(&alice.user_id, "m.tz"))
        .await
        .assert_ok();
    anon.get(&field_path(&bob.user_id, "m.tz"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    anon.get(&field_path(&format!("@ghost:{}", hs.server_name()), "m.tz"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn generic_path_changes_displayname_and_avatar_like_the_dedicated_ones() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    alice
        .put(
            &field_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": "mxc://example.org/abc" }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &field_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": "https://x" }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let r = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}/avatar_url",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "avatar_url": "mxc://example.org/abc" })
    );
    // Deleting the display name through the generic path clears it and updates the room.
    alice
        .delete(&field_path(&alice.user_id, "displayname"))
        .await
        .assert_ok();
    alice
        .get(&field_path(&alice.user_id, "displayname"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let member = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&alice.user_id)
        ))
        .await;
    let member = member.assert_ok();
    assert!(member.get("displayname").is_none(), "{member}");
    assert_eq!(member["avatar_url"], "mxc://example.org/abc");
}

#[tokio::test]
async fn profile_field_requests_are_validated() {
    let (hs, _) = test_server(12).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let me = &alice.user_id;
    for bad in [
        "Tz",
        "nodots",
        "com..example",
        "com.Example",
        "1com.example",
        "com.example.",
    ] {
        alice
            .put(&field_path(me, bad), json!({ bad: 1 }))
            .await
            .assert_error(400, "M_INVALID_PARAM");
        alice
            .get(&field_path(me, bad))
            .await
            .assert_error(400, "M_INVALID_PARAM");
        alice
            .delete(&field_path(me, bad))
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
    let long = format!("com.{}", "a".repeat(252));
    alice
        .put(&field_path(me, &long), json!({ long.clone(): 1 }))
        .await
        .assert_error(400, "M_KEY_TOO_LARGE");
    alice
        .put(&field_path(me, "m.tz"), json!({}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    alice
        .put(
            &field_path(me, "m.tz"),
            json!({ "m.tz": "UTC", "extra": 1 }),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(&field_path(me, "m.tz"), json!({ "m.tz": 1 }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(&field_path(me, "m.tz"), json!(["UTC"]))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::PUT,
            &field_path(me, "m.tz"),
            b"{".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    bob.put(&field_path(me, "m.tz"), json!({ "m.tz": "UTC" }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.delete(&field_path(me, "m.tz"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    TestClient::anonymous(&hs)
        .put(&field_path(me, "m.tz"), json!({ "m.tz": "UTC" }))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .get(&field_path("not-a-user", "m.tz"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn the_whole_profile_stays_under_64_kib() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    let me = &alice.user_id;
    let big = "x".repeat(40 * 1024);
    alice
        .put(
            &field_path(me, "org.example.one"),
            json!({ "org.example.one": big }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &field_path(me, "org.example.two"),
            json!({ "org.example.two": big }),
        )
        .await
        .assert_error(400, "M_PROFILE_TOO_LARGE");
    // The display name counts against the same limit, through either path.
    let name = "n".repeat(30 * 1024);
    alice
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(me)),
            json!({ "displayname": name }),
        )
        .await
        .assert_error(400, "M_PROFILE_TOO_LARGE");
    // Replacing a field with a smaller value is fine even near the limit.
    alice
        .put(
            &field_path(me, "org.example.one"),
            json!({ "org.example.one": "small" }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &field_path(me, "org.example.two"),
            json!({ "org.example.two": big }),
        )
        .await
        .assert_ok();
}

// --- Typing and presence edge cases ---------------------------------------------------------

#[tokio::test]
async fn typing_in_an_unknown_room_is_forbidden() {
    let (hs, _) = test_server(14).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = format!("!nowhere:{}", hs.server_name());
    let path = format!(
        "/_matrix/client/v3/rooms/{}/typing/{}",
        enc(&room),
        enc(&alice.user_id)
    );
    alice
        .put(&path, json!({ "typing": true, "timeout": 1000 }))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .put(&path, json!({ "typing": false }))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn presence_of_a_stranger_is_forbidden_and_own_presence_defaults_to_offline() {
    let (hs, _) = test_server(15).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let path = |c: &TestClient| format!("/_matrix/client/v3/presence/{}/status", enc(&c.user_id));
    let own = alice.get(&path(&alice)).await;
    assert_eq!(own.assert_ok()["presence"], "offline");
    alice
        .get(&path(&eve))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .put(&path(&alice), json!({ "presence": "busy" }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .put(&path(&alice), json!({ "status_msg": "hi" }))
        .await
        .assert_error(400, "M_BAD_JSON");
}

// --- Spec schemas ---------------------------------------------------------------------------

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

#[cfg(not(target_arch = "wasm32"))]
#[tokio::test]
async fn responses_match_the_spec_schemas() {
    use hearth_core::testing::TestResponse;
    use http::Method;
    let spec = spec::Spec::load();
    let check = |method: Method, path: &str, r: &TestResponse, status: u16| {
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.body);
        if let Err(v) = spec.validate(&method, path, status, &r.raw) {
            let v: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!(
                "{method} {path} answered {status} {}: {}",
                r.body,
                v.join("; ")
            );
        }
    };
    let (hs, _) = test_server(16).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let mut last_room = String::new();
    for _ in 0..=MUTUAL_ROOMS_PAGE {
        last_room = create_room(&alice, json!({ "preset": "public_chat" })).await;
        join(&bob, &last_room).await;
    }
    let (_, t) = send(&alice, &last_room, "hello").await;

    let p = ts_path(&last_room, t, "b");
    check(Method::GET, &p, &alice.get(&p).await, 200);
    let p = ts_path(&last_room, t + 1, "f");
    check(Method::GET, &p, &alice.get(&p).await, 404);
    let p = mutual_path(&bob.user_id, None);
    let first = alice.get(&p).await;
    check(Method::GET, &p, &first, 200);
    let p = mutual_path(&bob.user_id, first.body["next_batch"].as_str());
    check(Method::GET, &p, &alice.get(&p).await, 200);
    let p = mutual_path(&alice.user_id, None);
    check(Method::GET, &p, &alice.get(&p).await, 400);

    let p = "/.well-known/matrix/support";
    check(Method::GET, p, &alice.get(p).await, 404);
    let support = server_with_support(SupportInfo {
        contacts: vec![Contact::with_email_address(
            ContactRole::Admin,
            "admin@example.org".into(),
        )],
        support_page: Some("https://example.org/support".into()),
    })
    .await;
    check(
        Method::GET,
        p,
        &TestClient::anonymous(&support).get(p).await,
        200,
    );

    let p = format!(
        "/_matrix/client/v1/media/preview_url?url={}",
        enc("https://matrix.org")
    );
    check(Method::GET, &p, &alice.get(&p).await, 200);

    let p = field_path(&alice.user_id, "m.tz");
    check(
        Method::PUT,
        &p,
        &alice.put(&p, json!({ "m.tz": "UTC" })).await,
        200,
    );
    check(Method::GET, &p, &alice.get(&p).await, 200);
    check(Method::PUT, &p, &alice.put(&p, json!({})).await, 400);
    check(
        Method::PUT,
        &p,
        &bob.put(&p, json!({ "m.tz": "UTC" })).await,
        403,
    );
    check(Method::DELETE, &p, &alice.delete(&p).await, 200);
    check(Method::GET, &p, &alice.get(&p).await, 404);
    let p = field_path(&alice.user_id, "Bad");
    check(Method::DELETE, &p, &alice.delete(&p).await, 400);
    let p = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    check(Method::GET, &p, &alice.get(&p).await, 200);
}
