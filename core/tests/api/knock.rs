//! Knocking (`POST /knock/{roomIdOrAlias}`, `rooms.knock` in `/sync`) and restricted joins
//! (`restricted` / `knock_restricted` join rules with `allow` by room membership).

use hearth_core::testing::{TestClient, enc, test_server};
use http::Method;
use serde_json::{Value, json};

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

/// A room with the given join rule content, at the given room version.
async fn room_with_rule(c: &TestClient, version: &str, join_rules: Value) -> String {
    create_room(
        c,
        json!({
            "room_version": version,
            "preset": "private_chat",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": join_rules}],
        }),
    )
    .await
}

async fn knock(c: &TestClient, room: &str, body: Value) -> hearth_core::testing::TestResponse {
    c.post(&format!("/_matrix/client/v3/knock/{}", enc(room)), body)
        .await
}

async fn join(c: &TestClient, room: &str) -> hearth_core::testing::TestResponse {
    c.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(room)),
        json!({}),
    )
    .await
}

async fn sync(c: &TestClient, since: Option<&str>) -> Value {
    let mut path = "/_matrix/client/v3/sync?timeout=0".to_owned();
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    c.get(&path).await.assert_ok().clone()
}

async fn member_event(c: &TestClient, room: &str, user: &str) -> Value {
    c.get(&format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(room),
        enc(user)
    ))
    .await
    .assert_ok()
    .clone()
}

async fn send_text(c: &TestClient, room: &str, txn: &str, text: &str) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        ),
        json!({"msgtype": "m.text", "body": text}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn knock_is_seen_by_the_knocker_in_sync_and_by_the_room() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            json!({"name": "Porch"}),
        )
        .await
        .assert_ok();

    let r = knock(&bob, &room, json!({"reason": "let me in"})).await;
    assert_eq!(r.assert_ok()["room_id"], room.as_str());

    let s = sync(&bob, None).await;
    let knocked = &s["rooms"]["knock"][&room]["knock_state"]["events"];
    let events = knocked.as_array().expect("knock_state events");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock")
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Porch")
    );
    let own = events
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .expect("the knock itself is in knock_state");
    assert_eq!(own["content"]["membership"], "knock");
    assert!(
        s["rooms"]["join"].get(&room).is_none(),
        "a knocked room is not joined"
    );

    // The room's members see the knock, with its reason.
    let m = member_event(&alice, &room, &bob.user_id).await;
    assert_eq!(m["membership"], "knock");
    assert_eq!(m["reason"], "let me in");

    // The next incremental sync does not repeat the knock.
    let again = sync(&bob, s["next_batch"].as_str()).await;
    assert!(again["rooms"]["knock"].get(&room).is_none());
}

#[tokio::test]
async fn knock_through_an_alias_resolves_the_room() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &alice,
        json!({
            "room_alias_name": "porch",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        }),
    )
    .await;
    let alias = format!("#porch:{}", hs.server_name());
    assert_eq!(
        knock(&bob, &alias, json!({})).await.assert_ok()["room_id"],
        room.as_str()
    );
}

#[tokio::test]
async fn knocking_on_a_public_or_invite_only_room_is_forbidden() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let public = create_room(&alice, json!({"preset": "public_chat"})).await;
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    knock(&bob, &public, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    knock(&bob, &private, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Nothing was written: bob has no membership in either room.
    let s = sync(&bob, None).await;
    assert!(s["rooms"]["knock"].as_object().is_none_or(|m| m.is_empty()));
}

#[tokio::test]
async fn knocking_needs_a_room_version_that_has_it() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    // Version 6 predates knocking; version 9 predates knock_restricted.
    let v6 = room_with_rule(&alice, "6", json!({"join_rule": "knock"})).await;
    knock(&bob, &v6, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let v7 = room_with_rule(&alice, "7", json!({"join_rule": "knock"})).await;
    knock(&bob, &v7, json!({})).await.assert_ok();
    let allow = json!({"join_rule": "knock_restricted", "allow": []});
    let v9 = room_with_rule(&alice, "9", allow.clone()).await;
    knock(&bob, &v9, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let v10 = room_with_rule(&alice, "10", allow).await;
    knock(&bob, &v10, json!({})).await.assert_ok();
}

#[tokio::test]
async fn knocking_on_an_unknown_room_or_alias_is_not_found() {
    let (hs, _) = test_server(5).await;
    let bob = TestClient::register(&hs, "bob").await;
    knock(&bob, &format!("!nowhere:{}", hs.server_name()), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    knock(&bob, &format!("#nowhere:{}", hs.server_name()), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn knock_needs_auth_and_a_json_body() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    TestClient::anonymous(&hs)
        .post(
            &format!("/_matrix/client/v3/knock/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    let bob = TestClient::register(&hs, "bob").await;
    bob.request_raw(
        Method::POST,
        &format!("/_matrix/client/v3/knock/{}", enc(&room)),
        b"{not json".to_vec(),
        "application/json",
    )
    .await
    .assert_error(400, "M_NOT_JSON");
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&room)),
        json!({"reason": 12}),
    )
    .await
    .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn members_banned_and_invited_users_cannot_knock_and_a_second_knock_changes_nothing() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let dave = TestClient::register(&hs, "dave").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    knock(&alice, &room, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    knock(&bob, &room, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": carol.user_id}),
        )
        .await
        .assert_ok();
    knock(&carol, &room, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");

    knock(&dave, &room, json!({"reason": "first"}))
        .await
        .assert_ok();
    knock(&dave, &room, json!({"reason": "second"}))
        .await
        .assert_ok();
    assert_eq!(
        member_event(&alice, &room, &dave.user_id).await["reason"],
        "first"
    );
}

#[tokio::test]
async fn inviting_a_knocking_user_lets_them_join() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    // Knocking alone does not admit.
    knock(&bob, &room, json!({})).await.assert_ok();
    join(&bob, &room).await.assert_error(403, "M_FORBIDDEN");
    let before = sync(&bob, None).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    let s = sync(&bob, before["next_batch"].as_str()).await;
    assert!(
        s["rooms"]["invite"].get(&room).is_some(),
        "the accepted knock arrives as an invite: {s}"
    );
    assert!(s["rooms"]["knock"].get(&room).is_none());
    join(&bob, &room).await.assert_ok();
    assert_eq!(
        member_event(&alice, &room, &bob.user_id).await["membership"],
        "join"
    );
}

#[tokio::test]
async fn leaving_rescinds_a_knock_without_showing_the_room_history() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    knock(&bob, &room, json!({})).await.assert_ok();
    let s = sync(&bob, None).await;
    send_text(&alice, &room, "t1", "members only").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(
        member_event(&alice, &room, &bob.user_id).await["membership"],
        "leave"
    );

    let after = sync(&bob, s["next_batch"].as_str()).await;
    let left = &after["rooms"]["leave"][&room];
    assert!(
        !left.is_null(),
        "the rescinded knock shows as a left room: {after}"
    );
    let events = left["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        events.iter().all(|e| e["type"] != "m.room.message"),
        "a knocker never sees the room's messages: {events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")
    );
    // And may knock again.
    knock(&bob, &room, json!({})).await.assert_ok();
}

#[tokio::test]
async fn a_moderator_denies_a_knock_by_kicking() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    knock(&bob, &room, json!({})).await.assert_ok();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            json!({"user_id": bob.user_id, "reason": "no"}),
        )
        .await
        .assert_ok();
    assert_eq!(
        member_event(&alice, &room, &bob.user_id).await["membership"],
        "leave"
    );
}

/// A public space and a room that admits the space's members.
async fn space_and_restricted_room(
    alice: &TestClient,
    rule: &str,
    version: &str,
    pl: Option<Value>,
) -> (String, String) {
    let space = create_room(
        alice,
        json!({"preset": "public_chat", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let mut body = json!({
        "room_version": version,
        "preset": "private_chat",
        "initial_state": [{
            "type": "m.room.join_rules",
            "state_key": "",
            "content": {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": space}]},
        }],
    });
    if let Some(pl) = pl {
        body["power_level_content_override"] = pl;
    }
    let room = create_room(alice, body).await;
    (space, room)
}

#[tokio::test]
async fn restricted_room_admits_members_of_an_allowed_room_with_an_authoriser() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let (space, room) = space_and_restricted_room(&alice, "restricted", "11", None).await;
    join(&bob, &space).await.assert_ok();
    join(&bob, &room).await.assert_ok();
    let m = member_event(&alice, &room, &bob.user_id).await;
    assert_eq!(m["membership"], "join");
    assert_eq!(
        m["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );
}

#[tokio::test]
async fn restricted_room_refuses_users_outside_the_allowed_rooms() {
    let (hs, _) = test_server(12).await;
    let alice = TestClient::register(&hs, "alice").await;
    let carol = TestClient::register(&hs, "carol").await;
    let (space, room) = space_and_restricted_room(&alice, "restricted", "11", None).await;
    join(&carol, &room).await.assert_error(403, "M_FORBIDDEN");
    // Having left the allowed room does not count either.
    join(&carol, &space).await.assert_ok();
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&space)),
            json!({}),
        )
        .await
        .assert_ok();
    join(&carol, &room).await.assert_error(403, "M_FORBIDDEN");
    // Restricted is not knockable.
    knock(&carol, &room, json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn restricted_join_without_a_local_member_who_may_invite_cannot_be_authorised() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let (space, room) =
        space_and_restricted_room(&alice, "restricted", "11", Some(json!({"invite": 101}))).await;
    join(&bob, &space).await.assert_ok();
    join(&bob, &room)
        .await
        .assert_error(400, "M_UNABLE_TO_AUTHORISE_JOIN");
}

#[tokio::test]
async fn invited_users_join_restricted_rooms_without_an_authoriser() {
    let (hs, _) = test_server(14).await;
    let alice = TestClient::register(&hs, "alice").await;
    let carol = TestClient::register(&hs, "carol").await;
    let (_space, room) = space_and_restricted_room(&alice, "restricted", "11", None).await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": carol.user_id}),
        )
        .await
        .assert_ok();
    join(&carol, &room).await.assert_ok();
    let m = member_event(&alice, &room, &carol.user_id).await;
    assert_eq!(m["membership"], "join");
    assert!(m.get("join_authorised_via_users_server").is_none());
}

#[tokio::test]
async fn restricted_rule_is_not_honoured_before_room_version_8() {
    let (hs, _) = test_server(15).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let (space, room) = space_and_restricted_room(&alice, "restricted", "7", None).await;
    join(&bob, &space).await.assert_ok();
    join(&bob, &room).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn knock_restricted_admits_allowed_members_and_lets_others_knock() {
    let (hs, _) = test_server(16).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let (space, room) = space_and_restricted_room(&alice, "knock_restricted", "10", None).await;
    join(&bob, &space).await.assert_ok();
    join(&bob, &room).await.assert_ok();
    assert_eq!(
        member_event(&alice, &room, &bob.user_id).await["join_authorised_via_users_server"],
        alice.user_id.as_str()
    );
    join(&carol, &room).await.assert_error(403, "M_FORBIDDEN");
    knock(&carol, &room, json!({"reason": "not in the space"}))
        .await
        .assert_ok();
    assert_eq!(
        member_event(&alice, &room, &carol.user_id).await["membership"],
        "knock"
    );
}

// ---------------------------------------------------------------------------------------------
// Responses against the spec's own schemas

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

#[cfg(not(target_arch = "wasm32"))]
#[tokio::test]
async fn knock_and_knock_sync_responses_match_the_spec_schemas() {
    let spec = spec::Spec::load();
    let (hs, _) = test_server(30).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = room_with_rule(&alice, "11", json!({"join_rule": "knock"})).await;
    let public = create_room(&alice, json!({"preset": "public_chat"})).await;
    let k = |r: &str| format!("/_matrix/client/v3/knock/{}", enc(r));
    let unknown = format!("!nowhere:{}", hs.server_name());
    let calls = vec![
        (
            Method::POST,
            k(&room),
            knock(&bob, &room, json!({"reason": "hello"})).await,
        ),
        (
            Method::POST,
            k(&public),
            knock(&bob, &public, json!({})).await,
        ),
        (
            Method::POST,
            k(&unknown),
            knock(&bob, &unknown, json!({})).await,
        ),
        (
            Method::GET,
            "/_matrix/client/v3/sync".to_owned(),
            bob.get("/_matrix/client/v3/sync?timeout=0").await,
        ),
    ];
    assert_eq!(calls[0].2.status, 200);
    assert!(calls[3].2.body["rooms"]["knock"][&room].is_object());
    let mut problems = Vec::new();
    for (method, path, r) in &calls {
        if let Err(vs) = spec.validate(method, path, r.status.as_u16(), &r.raw) {
            problems.extend(vs.iter().map(|v| format!("{v}")));
        }
    }
    assert!(
        problems.is_empty(),
        "spec violations:\n{}",
        problems.join("\n")
    );
}
