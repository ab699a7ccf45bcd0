//! Account locking and suspension by the server's administrator, registration-token validity,
//! and peeking (`/rooms/{roomId}/initialSync`, `/events`).

use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::json;

#[tokio::test]
async fn only_the_first_account_administers_others() {
    let (hs, _) = test_server(1).await;
    let owner = TestClient::register(&hs, "owner").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let path = format!("/_matrix/client/v1/admin/lock/{}", enc(&carol.user_id));
    bob.get(&path).await.assert_error(403, "M_FORBIDDEN");
    assert_eq!(owner.get(&path).await.assert_ok()["locked"], false);
    // Administrators are not targets; unknown and remote users are refused as the spec says.
    owner
        .get(&format!(
            "/_matrix/client/v1/admin/lock/{}",
            enc(&owner.user_id)
        ))
        .await
        .assert_error(403, "M_FORBIDDEN");
    owner
        .get(&format!(
            "/_matrix/client/v1/admin/lock/{}",
            enc(&format!("@nobody:{}", hs.server_name()))
        ))
        .await
        .assert_error(404, "M_NOT_FOUND");
    owner
        .get(&format!(
            "/_matrix/client/v1/admin/lock/{}",
            enc("@x:elsewhere.example")
        ))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn locked_account_is_soft_logged_out_until_unlocked() {
    let (hs, _) = test_server(2).await;
    let owner = TestClient::register(&hs, "owner").await;
    let bob = TestClient::register(&hs, "bob").await;
    let path = format!("/_matrix/client/v1/admin/lock/{}", enc(&bob.user_id));
    assert_eq!(
        owner.put(&path, json!({"locked": true})).await.assert_ok()["locked"],
        true
    );
    let r = bob.get("/_matrix/client/v3/account/whoami").await;
    r.assert_error(401, "M_USER_LOCKED");
    assert_eq!(r.body["soft_logout"], true);
    assert_eq!(owner.get(&path).await.assert_ok()["locked"], true);
    owner.put(&path, json!({"locked": false})).await.assert_ok();
    bob.get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok();
}

#[tokio::test]
async fn suspended_account_may_read_and_leave_but_not_send() {
    let (hs, _) = test_server(3).await;
    let owner = TestClient::register(&hs, "owner").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = owner
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let sent = bob
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/1",
                enc(&room)
            ),
            json!({"msgtype": "m.text", "body": "before"}),
        )
        .await;
    let own_event = sent.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let path = format!("/_matrix/client/v1/admin/suspend/{}", enc(&bob.user_id));
    assert_eq!(
        owner
            .put(&path, json!({"suspended": true}))
            .await
            .assert_ok()["suspended"],
        true
    );
    assert_eq!(owner.get(&path).await.assert_ok()["suspended"], true);
    bob.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/2",
            enc(&room)
        ),
        json!({"msgtype": "m.text", "body": "after"}),
    )
    .await
    .assert_error(403, "M_USER_SUSPENDED");
    bob.post("/_matrix/client/v3/createRoom", json!({}))
        .await
        .assert_error(403, "M_USER_SUSPENDED");
    bob.get(&format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b",
        enc(&room)
    ))
    .await
    .assert_ok();
    bob.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r",
            enc(&room),
            enc(&own_event)
        ),
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
}

#[tokio::test]
async fn registration_tokens_are_never_valid_here() {
    let (hs, _) = test_server(4).await;
    let anon = TestClient::anonymous(&hs);
    let r = anon
        .get("/_matrix/client/v1/register/m.login.registration_token/validity?token=abc")
        .await;
    assert_eq!(r.assert_ok()["valid"], false);
    anon.get("/_matrix/client/v1/register/m.login.registration_token/validity")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn initial_sync_of_a_room_for_members_and_world_readable_peekers() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = alice
        .post("/_matrix/client/v3/createRoom", json!({"name": "Peek"}))
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/1",
                enc(&room)
            ),
            json!({"msgtype": "m.text", "body": "hi"}),
        )
        .await
        .assert_ok();
    let v = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/initialSync",
            enc(&room)
        ))
        .await
        .assert_ok()
        .clone();
    assert_eq!(v["membership"], "join");
    assert!(
        v["messages"]["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "hi")
    );
    assert!(
        v["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name")
    );
    eve.get(&format!(
        "/_matrix/client/v3/rooms/{}/initialSync",
        enc(&room)
    ))
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/",
                enc(&room)
            ),
            json!({"history_visibility": "world_readable"}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/2",
                enc(&room)
            ),
            json!({"msgtype": "m.text", "body": "public"}),
        )
        .await
        .assert_ok();
    let peek = eve
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/initialSync",
            enc(&room)
        ))
        .await;
    let chunk = peek.assert_ok()["messages"]["chunk"]
        .as_array()
        .unwrap()
        .clone();
    // History visibility applies at each event: what was said while the room was `shared`
    // stays hidden from a peeker; what was said once it became world-readable is visible.
    assert!(chunk.iter().any(|e| e["content"]["body"] == "public"));
    assert!(!chunk.iter().any(|e| e["content"]["body"] == "hi"));
}

#[tokio::test]
async fn events_stream_peeks_into_world_readable_rooms_and_waits_for_new_ones() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = alice
        .post("/_matrix/client/v3/createRoom", json!({}))
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eve.get(&format!(
        "/_matrix/client/v3/events?room_id={}&timeout=0",
        enc(&room)
    ))
    .await
    .assert_error(403, "M_FORBIDDEN");
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/",
                enc(&room)
            ),
            json!({"history_visibility": "world_readable"}),
        )
        .await
        .assert_ok();
    let first = eve
        .get(&format!(
            "/_matrix/client/v3/events?room_id={}&timeout=0",
            enc(&room)
        ))
        .await
        .assert_ok()
        .clone();
    let end = first["end"].as_str().unwrap().to_owned();
    let poll_path = format!(
        "/_matrix/client/v3/events?room_id={}&from={end}&timeout=10000",
        enc(&room)
    );
    let poll = eve.get(&poll_path);
    let send = async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        alice
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/1",
                    enc(&room)
                ),
                json!({"msgtype": "m.text", "body": "news"}),
            )
            .await
    };
    let started = std::time::Instant::now();
    let (r, _) = tokio::join!(poll, send);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        r.assert_ok()["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["body"] == "news")
    );
}
