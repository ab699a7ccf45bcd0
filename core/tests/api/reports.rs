//! Reporting events, rooms and users: who may report what, and what is stored.

use hearth_core::client::report::{self, ReportTarget};
use hearth_core::testing::{TestClient, enc, test_server};
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

async fn send(c: &TestClient, room: &str, body: &str) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        enc(room),
        c.hs.random_string(8)
    );
    let r = c
        .put(&path, json!({ "msgtype": "m.text", "body": body }))
        .await;
    r.assert_ok()["event_id"].as_str().unwrap().to_owned()
}

fn event_report_path(room: &str, event: &str) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/report/{}",
        enc(room),
        enc(event)
    )
}

fn room_report_path(room: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/report", enc(room))
}

fn user_report_path(user: &str) -> String {
    format!("/_matrix/client/v3/users/{}/report", enc(user))
}

// --- Events ---------------------------------------------------------------------------------

#[tokio::test]
async fn member_can_report_a_visible_event_and_it_is_stored() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    join(&bob, &room).await;
    let event = send(&alice, &room, "rude words").await;

    let r = bob
        .post(
            &event_report_path(&room, &event),
            json!({ "reason": "this makes me sad", "score": -100 }),
        )
        .await;
    assert_eq!(r.assert_ok(), &json!({}));
    // `reason` is optional for events.
    bob.post(&event_report_path(&room, &event), json!({}))
        .await
        .assert_ok();

    let stored = report::all(&hs).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].reporter.as_str(), bob.user_id);
    assert_eq!(stored[0].reason.as_deref(), Some("this makes me sad"));
    assert_eq!(stored[1].reason, None);
    match &stored[0].target {
        ReportTarget::Event {
            room_id,
            event_id,
            sender,
        } => {
            assert_eq!(
                (room_id.as_str(), event_id.as_str(), sender.as_str()),
                (room.as_str(), event.as_str(), alice.user_id.as_str())
            );
        }
        other => panic!("wrong target {other:?}"),
    }
}

#[tokio::test]
async fn non_member_cannot_report_events() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    // Even a world-readable room's events are reportable by members only.
    let room = create_room(&alice, json!({ "preset": "public_chat", "initial_state": [{
        "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "world_readable" }
    }] }))
    .await;
    let event = send(&alice, &room, "hello").await;
    eve.post(&event_report_path(&room, &event), json!({ "reason": "x" }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // A former member cannot either.
    join(&eve, &room).await;
    eve.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    eve.post(&event_report_path(&room, &event), json!({ "reason": "x" }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert!(report::all(&hs).await.unwrap().is_empty());
}

#[tokio::test]
async fn events_hidden_by_history_visibility_cannot_be_reported() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({ "preset": "public_chat", "initial_state": [{
        "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" }
    }] }))
    .await;
    let before = send(&alice, &room, "before bob").await;
    join(&bob, &room).await;
    let after = send(&alice, &room, "after bob").await;
    // Hidden looks exactly like missing.
    let hidden = bob
        .post(&event_report_path(&room, &before), json!({ "reason": "x" }))
        .await;
    let missing = bob
        .post(
            &event_report_path(&room, "$doesnotexist"),
            json!({ "reason": "x" }),
        )
        .await;
    hidden.assert_error(404, "M_NOT_FOUND");
    missing.assert_error(404, "M_NOT_FOUND");
    assert_eq!(hidden.body, missing.body);
    bob.post(&event_report_path(&room, &after), json!({ "reason": "x" }))
        .await
        .assert_ok();
}

#[tokio::test]
async fn event_must_belong_to_the_reported_room() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let first = create_room(&alice, json!({})).await;
    let second = create_room(&alice, json!({})).await;
    let event = send(&alice, &first, "hi").await;
    alice
        .post(
            &event_report_path(&second, &event),
            json!({ "reason": "x" }),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .post(&event_report_path(&first, &event), json!({ "reason": 5 }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(&event_report_path(&first, "not-an-event-id"), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    TestClient::anonymous(&hs)
        .post(&event_report_path(&first, &event), json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

// --- Rooms ----------------------------------------------------------------------------------

#[tokio::test]
async fn any_user_can_report_a_known_room() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = create_room(&alice, json!({})).await;
    let r = eve
        .post(&room_report_path(&room), json!({ "reason": "spam room" }))
        .await;
    assert_eq!(r.assert_ok(), &json!({}));
    // "May be blank."
    eve.post(&room_report_path(&room), json!({ "reason": "" }))
        .await
        .assert_ok();
    let stored = report::all(&hs).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0].target,
        ReportTarget::Room {
            room_id: room.as_str().try_into().unwrap()
        }
    );
    assert_eq!(stored[0].reason.as_deref(), Some("spam room"));
}

#[tokio::test]
async fn room_reports_are_validated() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let unknown = format!("!nosuchroom:{}", hs.server_name());
    alice
        .post(&room_report_path(&unknown), json!({ "reason": "x" }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .post(&room_report_path(&room), json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(&room_report_path(&room), json!({ "reason": null }))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::POST,
            &room_report_path(&room),
            b"{not json".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    alice
        .post(&room_report_path("not-a-room"), json!({ "reason": "x" }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    TestClient::anonymous(&hs)
        .post(&room_report_path(&room), json!({ "reason": "x" }))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    // The r0 path is the same endpoint.
    alice
        .post(
            &room_report_path(&room).replace("/v3/", "/r0/"),
            json!({ "reason": "x" }),
        )
        .await
        .assert_ok();
    assert_eq!(report::all(&hs).await.unwrap().len(), 1);
}

// --- Users ----------------------------------------------------------------------------------

#[tokio::test]
async fn users_can_be_reported_without_sharing_a_room() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let r = alice
        .post(
            &user_report_path(&eve.user_id),
            json!({ "reason": "harassment" }),
        )
        .await;
    assert_eq!(r.assert_ok(), &json!({}));
    // A user of another server cannot be checked here; the report is kept for the admin.
    alice
        .post(
            &user_report_path("@spammer:elsewhere.example"),
            json!({ "reason": "spam" }),
        )
        .await
        .assert_ok();
    let stored = report::all(&hs).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(
        stored[0].target,
        ReportTarget::User {
            user_id: eve.user_id.as_str().try_into().unwrap()
        }
    );
}

#[tokio::test]
async fn reporting_an_unknown_local_user_is_not_found() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    let ghost = format!("@ghost:{}", hs.server_name());
    alice
        .post(&user_report_path(&ghost), json!({ "reason": "x" }))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .post(&user_report_path(&alice.user_id), json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    TestClient::anonymous(&hs)
        .post(&user_report_path(&alice.user_id), json!({ "reason": "x" }))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    assert!(report::all(&hs).await.unwrap().is_empty());
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
    let check = |path: &str, r: &TestResponse, status: u16| {
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.body);
        if let Err(v) = spec.validate(&Method::POST, path, status, &r.raw) {
            let v: Vec<String> = v.iter().map(ToString::to_string).collect();
            panic!("POST {path} answered {status} {}: {}", r.body, v.join("; "));
        }
    };
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let event = send(&alice, &room, "hi").await;
    let unknown_room = format!("!nosuchroom:{}", hs.server_name());

    let p = event_report_path(&room, &event);
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 200);
    let p = event_report_path(&unknown_room, &event);
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 404);
    let p = room_report_path(&room);
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 200);
    let p = room_report_path(&unknown_room);
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 404);
    let p = user_report_path(&alice.user_id);
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 200);
    let p = user_report_path(&format!("@ghost:{}", hs.server_name()));
    check(&p, &alice.post(&p, json!({ "reason": "x" })).await, 404);
}
