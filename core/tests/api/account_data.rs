//! Client config (account data) and filters.

use hearth_core::Homeserver;
use hearth_core::client::account_data::account_data_since;
use hearth_core::client::filter::load_filter;
use hearth_core::testing::{TestClient, enc, test_server};
use ruma::OwnedUserId;
use serde_json::{Value, json};

/// A logged-in user, registered through the real endpoint.
async fn user(hs: &Homeserver, localpart: &str) -> TestClient {
    TestClient::register(hs, localpart).await
}

fn global_path(c: &TestClient, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/account_data/{}",
        enc(&c.user_id),
        enc(event_type)
    )
}

fn room_path(c: &TestClient, room: &str, event_type: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
        enc(&c.user_id),
        enc(room),
        enc(event_type)
    )
}

fn uid(c: &TestClient) -> OwnedUserId {
    OwnedUserId::try_from(c.user_id.as_str()).unwrap()
}

fn types_of(events: &[ruma::serde::Raw<impl Sized>]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.get_field::<String>("type").unwrap().unwrap())
        .collect()
}

#[tokio::test]
async fn global_account_data_round_trips() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &global_path(&alice, "org.example.config"),
            json!({"theme": "dark"}),
        )
        .await
        .assert_ok();
    let got = alice.get(&global_path(&alice, "org.example.config")).await;
    assert_eq!(got.assert_ok(), &json!({"theme": "dark"}));
    // The r0 path serves the same data.
    let r0 = format!(
        "/_matrix/client/r0/user/{}/account_data/org.example.config",
        enc(&alice.user_id)
    );
    assert_eq!(alice.get(&r0).await.assert_ok(), &json!({"theme": "dark"}));
}

#[tokio::test]
async fn overwriting_account_data_replaces_the_value() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(&global_path(&alice, "org.example.n"), json!({"n": 1}))
        .await
        .assert_ok();
    alice
        .put(&global_path(&alice, "org.example.n"), json!({"n": 2}))
        .await
        .assert_ok();
    assert_eq!(
        alice
            .get(&global_path(&alice, "org.example.n"))
            .await
            .assert_ok(),
        &json!({"n": 2})
    );
}

#[tokio::test]
async fn room_account_data_is_separate_from_global() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let room = "!somewhere:example.org";
    alice
        .put(
            &room_path(&alice, room, "m.tag"),
            json!({"tags": {"u.work": {}}}),
        )
        .await
        .assert_ok();
    assert_eq!(
        alice
            .get(&room_path(&alice, room, "m.tag"))
            .await
            .assert_ok(),
        &json!({"tags": {"u.work": {}}})
    );
    alice
        .get(&global_path(&alice, "m.tag"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&room_path(&alice, "!elsewhere:example.org", "m.tag"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn absent_account_data_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .get(&global_path(&alice, "org.example.never"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn account_data_of_other_users_is_forbidden() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    alice
        .put(&global_path(&alice, "org.example.secret"), json!({"a": 1}))
        .await
        .assert_ok();
    bob.get(&global_path(&alice, "org.example.secret"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.put(&global_path(&alice, "org.example.secret"), json!({"b": 2}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.get(&room_path(&alice, "!r:example.org", "m.tag"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.put(&room_path(&alice, "!r:example.org", "m.tag"), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    assert_eq!(
        alice
            .get(&global_path(&alice, "org.example.secret"))
            .await
            .assert_ok(),
        &json!({"a": 1})
    );
}

#[tokio::test]
async fn account_data_requires_an_access_token() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    anon.get(&global_path(&alice, "org.example.x"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.put(&global_path(&alice, "org.example.x"), json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn server_managed_types_cannot_be_set_directly() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    for t in ["m.fully_read", "m.push_rules"] {
        alice
            .put(&global_path(&alice, t), json!({"event_id": "$x"}))
            .await
            .assert_error(405, "M_BAD_JSON");
        alice
            .put(
                &room_path(&alice, "!r:example.org", t),
                json!({"event_id": "$x"}),
            )
            .await
            .assert_error(405, "M_BAD_JSON");
    }
    alice
        .get(&room_path(&alice, "!r:example.org", "m.fully_read"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn push_rules_account_data_reads_as_the_effective_rules() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let got = alice.get(&global_path(&alice, "m.push_rules")).await;
    let overrides = got.assert_ok()["global"]["override"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(overrides[0]["rule_id"], ".m.rule.master");
}

#[tokio::test]
async fn non_object_content_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(&global_path(&alice, "org.example.x"), json!([1, 2]))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(
            &room_path(&alice, "!r:example.org", "org.example.x"),
            json!("text"),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    let garbage = alice
        .request_raw(
            http::Method::PUT,
            &global_path(&alice, "org.example.x"),
            b"{nope".to_vec(),
            "application/json",
        )
        .await;
    garbage.assert_error(400, "M_NOT_JSON");
    alice
        .get(&global_path(&alice, "org.example.x"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn invalid_room_id_is_an_invalid_param() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .get(&room_path(&alice, "@notaroom:example.org", "m.tag"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .put(
            &room_path(&alice, "@notaroom:example.org", "m.tag"),
            json!({}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn initial_account_data_includes_default_push_rules() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let (global, rooms) = account_data_since(&hs, &uid(&alice), 0).await.unwrap();
    assert_eq!(types_of(&global), vec!["m.push_rules"]);
    assert!(rooms.is_empty());
    let content: Value = global[0].get_field("content").unwrap().unwrap();
    assert!(
        content["global"]["underride"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message")
    );
}

#[tokio::test]
async fn account_data_since_returns_only_later_changes_latest_value_once() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    alice
        .put(&global_path(&alice, "org.example.old"), json!({"v": 0}))
        .await
        .assert_ok();
    let since = hs.current_pos();
    alice
        .put(&global_path(&alice, "org.example.new"), json!({"v": 1}))
        .await
        .assert_ok();
    alice
        .put(&global_path(&alice, "org.example.new"), json!({"v": 2}))
        .await
        .assert_ok();
    alice
        .put(
            &room_path(&alice, "!r:example.org", "m.tag"),
            json!({"tags": {}}),
        )
        .await
        .assert_ok();
    bob.put(&global_path(&bob, "org.example.bobs"), json!({}))
        .await
        .assert_ok();

    let (global, rooms) = account_data_since(&hs, &uid(&alice), since).await.unwrap();
    assert_eq!(types_of(&global), vec!["org.example.new"]);
    let content: Value = global[0].get_field("content").unwrap().unwrap();
    assert_eq!(content, json!({"v": 2}));
    let room_events = rooms
        .get(<&ruma::RoomId>::try_from("!r:example.org").unwrap())
        .unwrap();
    assert_eq!(types_of(room_events), vec!["m.tag"]);

    // Nothing new after the latest position.
    let (global, rooms) = account_data_since(&hs, &uid(&alice), hs.current_pos())
        .await
        .unwrap();
    assert!(global.is_empty() && rooms.is_empty());

    // A full read has everything, each type once, with stored push rules absent → defaults.
    let (global, _) = account_data_since(&hs, &uid(&alice), 0).await.unwrap();
    let mut types = types_of(&global);
    types.sort();
    assert_eq!(
        types,
        vec!["m.push_rules", "org.example.new", "org.example.old"]
    );
}

#[tokio::test]
async fn account_data_write_takes_a_stream_position() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let before = hs.current_pos();
    alice
        .put(&global_path(&alice, "org.example.x"), json!({}))
        .await
        .assert_ok();
    assert!(hs.current_pos() > before);
}

// --- Filters ----------------------------------------------------------------------------------

fn filter_path(c: &TestClient) -> String {
    format!("/_matrix/client/v3/user/{}/filter", enc(&c.user_id))
}

#[tokio::test]
async fn filter_round_trips() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let filter = json!({
        "room": { "timeline": { "limit": 10, "types": ["m.room.message"] } },
        "presence": { "not_types": ["*"] },
        "event_fields": ["type", "content.body"]
    });
    let created = alice.post(&filter_path(&alice), filter.clone()).await;
    let id = created.assert_ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!id.starts_with('{'));
    let got = alice
        .get(&format!("{}/{}", filter_path(&alice), enc(&id)))
        .await;
    assert_eq!(got.assert_ok(), &filter);

    let loaded = load_filter(&hs, &uid(&alice), &id).await.unwrap().unwrap();
    assert_eq!(loaded.room.timeline.limit.map(u64::from), Some(10));
}

#[tokio::test]
async fn each_filter_gets_its_own_id() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let a = alice
        .post(
            &filter_path(&alice),
            json!({"room": {"timeline": {"limit": 1}}}),
        )
        .await;
    let b = alice
        .post(
            &filter_path(&alice),
            json!({"room": {"timeline": {"limit": 2}}}),
        )
        .await;
    assert_ne!(a.assert_ok()["filter_id"], b.assert_ok()["filter_id"]);
}

#[tokio::test]
async fn unknown_filter_is_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .get(&format!("{}/nosuchfilter", filter_path(&alice)))
        .await
        .assert_error(404, "M_NOT_FOUND");
    assert!(
        load_filter(&hs, &uid(&alice), "nosuchfilter")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn filters_of_other_users_are_forbidden_and_not_shared() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let id = alice
        .post(&filter_path(&alice), json!({}))
        .await
        .assert_ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.get(&format!("{}/{}", filter_path(&alice), id))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.post(&filter_path(&alice), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.get(&format!("{}/{}", filter_path(&bob), id))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn malformed_filter_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .post(
            &filter_path(&alice),
            json!({"room": {"timeline": {"limit": "ten"}}}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::POST,
            &filter_path(&alice),
            b"not json".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
}
