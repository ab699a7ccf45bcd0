//! Profiles: display names and avatars, and their propagation into room memberships.

use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::json;

fn profile_path(user: &str, field: &str) -> String {
    format!("/_matrix/client/v3/profile/{}/{field}", enc(user))
}

#[tokio::test]
async fn new_user_profile_starts_with_the_localpart_as_display_name() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let v = anon
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(v.assert_ok(), &json!({ "displayname": "alice" }));
    anon.get(&profile_path(&alice.user_id, "avatar_url"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn display_name_and_avatar_can_be_set_read_and_cleared() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": "Alice A." }),
        )
        .await
        .assert_ok();
    let avatar = "mxc://example.org/SEsfnsuifSDFSSEF";
    alice
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": avatar }),
        )
        .await
        .assert_ok();

    let v = alice
        .get(&profile_path(&alice.user_id, "displayname"))
        .await;
    assert_eq!(v.assert_ok(), &json!({ "displayname": "Alice A." }));
    let v = alice.get(&profile_path(&alice.user_id, "avatar_url")).await;
    assert_eq!(v.assert_ok(), &json!({ "avatar_url": avatar }));
    let v = alice
        .get(&format!(
            "/_matrix/client/r0/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(
        v.assert_ok(),
        &json!({ "displayname": "Alice A.", "avatar_url": avatar })
    );

    alice
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": "" }),
        )
        .await
        .assert_ok();
    alice
        .get(&profile_path(&alice.user_id, "avatar_url"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // A body without the field is malformed (issue #9, item 3); `null` clears the name.
    alice
        .put(&profile_path(&alice.user_id, "displayname"), json!({}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": null }),
        )
        .await
        .assert_ok();
    alice
        .get(&profile_path(&alice.user_id, "displayname"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let v = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    assert_eq!(v.assert_ok(), &json!({}));
}

#[tokio::test]
async fn unknown_users_have_no_profile_and_remote_ones_need_their_server() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    let nobody = format!("@nobody:{}", hs.server_name());
    anon.get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)))
        .await
        .assert_error(404, "M_NOT_FOUND");
    anon.get(&profile_path(&nobody, "displayname"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // A remote user's profile, whole or one field, is their server's answer; this server has
    // no federation transport, so it does not federate at all: 403 (as Synapse answers for a
    // server outside its federation whitelist), not "no such user". An unreachable peer is
    // 502 (federation/outbound.rs).
    let remote = "@alice:elsewhere.example";
    anon.get(&format!("/_matrix/client/v3/profile/{}", enc(remote)))
        .await
        .assert_error(403, "M_FORBIDDEN");
    for field in ["displayname", "avatar_url", "m.tz"] {
        anon.get(&profile_path(remote, field))
            .await
            .assert_error(403, "M_FORBIDDEN");
    }
    anon.get(&format!(
        "/_matrix/client/v3/profile/{}",
        enc("not-a-user-id")
    ))
    .await
    .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn setting_another_users_profile_is_forbidden() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    alice
        .put(
            &profile_path(&bob.user_id, "displayname"),
            json!({ "displayname": "Mallory" }),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .put(
            &profile_path(&bob.user_id, "avatar_url"),
            json!({ "avatar_url": "mxc://example.org/abc" }),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    let v = alice.get(&profile_path(&bob.user_id, "displayname")).await;
    assert_eq!(v.assert_ok()["displayname"], "bob");
}

#[tokio::test]
async fn profile_changes_need_a_token_and_valid_input() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    anon.put(
        &profile_path(&alice.user_id, "displayname"),
        json!({ "displayname": "x" }),
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": 7 }),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": "https://example.org/a.png" }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let huge = "x".repeat(70 * 1024);
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": huge }),
        )
        .await
        .assert_error(400, "M_PROFILE_TOO_LARGE");
    let v = alice
        .get(&profile_path(&alice.user_id, "displayname"))
        .await;
    assert_eq!(v.assert_ok()["displayname"], "alice");
}

#[tokio::test]
async fn profile_change_propagates_to_member_events_of_joined_rooms() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    let other = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await;
    let other = other.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();

    let avatar = "mxc://example.org/avatar1";
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": "Queen Alice" }),
        )
        .await
        .assert_ok();
    alice
        .put(
            &profile_path(&alice.user_id, "avatar_url"),
            json!({ "avatar_url": avatar }),
        )
        .await
        .assert_ok();

    for r in [&room, &other] {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(r),
            enc(&alice.user_id)
        );
        // Bob reads Alice's membership in the room they share; Alice reads her own elsewhere.
        let reader = if r == &room { &bob } else { &alice };
        let v = reader.get(&path).await;
        let content = v.assert_ok();
        assert_eq!(content["membership"], "join");
        assert_eq!(content["displayname"], "Queen Alice");
        assert_eq!(content["avatar_url"], avatar);
    }
    // Bob's membership is untouched.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&room),
        enc(&bob.user_id)
    );
    assert_eq!(bob.get(&path).await.assert_ok()["displayname"], "bob");
}

#[tokio::test]
async fn profile_change_does_not_touch_rooms_the_user_left() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &profile_path(&alice.user_id, "displayname"),
            json!({ "displayname": "Gone Alice" }),
        )
        .await
        .assert_ok();
    let bob = TestClient::register(&hs, "bob").await;
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&room),
        enc(&alice.user_id)
    );
    let v = bob.get(&path).await;
    let content = v.assert_ok();
    assert_eq!(content["membership"], "leave");
    assert_ne!(content["displayname"], "Gone Alice");
}
