//! Push rules, pushers, push evaluation and notifications.
//!
//! Three groups: rule and pusher endpoints (no rooms needed); evaluation of events built by
//! hand, in rooms this server does not know (so no room state is consulted); and, last, the
//! tests that need real rooms (receipts, `/notifications`, power levels), which rely on the
//! event-append path calling `evaluate_event`.

use hearth_core::Homeserver;
use hearth_core::client::account_data::account_data_since;
use hearth_core::client::push::{evaluate_event, notification_counts};
use hearth_core::db::rooms::{EventMeta, Pdu};
use hearth_core::storage::Batch;
use hearth_core::testing::{TestClient, enc, test_server};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

/// A logged-in user, registered through the real endpoint.
async fn user(hs: &Homeserver, localpart: &str) -> TestClient {
    TestClient::register(hs, localpart).await
}

fn uid(c: &TestClient) -> OwnedUserId {
    OwnedUserId::try_from(c.user_id.as_str()).unwrap()
}

fn rule_path(kind: &str, id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", enc(id))
}

async fn rule_ids(c: &TestClient, kind: &str) -> Vec<String> {
    let all = c.get("/_matrix/client/v3/pushrules/").await;
    all.assert_ok()["global"][kind]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["rule_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

// --- Push rules ---------------------------------------------------------------------------

#[tokio::test]
async fn server_default_rules_are_served_until_changed() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let all = alice.get("/_matrix/client/v3/pushrules/").await;
    let global = &all.assert_ok()["global"];
    assert_eq!(global["override"][0]["rule_id"], ".m.rule.master");
    assert_eq!(global["override"][0]["enabled"], false);
    assert_eq!(global["override"][0]["default"], true);
    assert!(
        global["underride"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == ".m.rule.message")
    );
    let scoped = alice.get("/_matrix/client/v3/pushrules/global/").await;
    assert_eq!(scoped.assert_ok(), global);
    // The r0 prefix serves the same.
    alice.get("/_matrix/client/r0/pushrules/").await.assert_ok();
}

#[tokio::test]
async fn push_rules_require_an_access_token() {
    let (hs, _) = test_server(1).await;
    let anon = TestClient::anonymous(&hs);
    anon.get("/_matrix/client/v3/pushrules/")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.put(
        &rule_path("content", "x"),
        json!({"actions": [], "pattern": "x"}),
    )
    .await
    .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn created_rule_is_enabled_and_readable() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("content", "nocake"),
            json!({"pattern": "cake*lie", "actions": ["notify"]}),
        )
        .await
        .assert_ok();
    let got = alice.get(&rule_path("content", "nocake")).await;
    assert_eq!(
        got.assert_ok(),
        &json!({"rule_id": "nocake", "pattern": "cake*lie", "actions": ["notify"], "enabled": true, "default": false})
    );
    let enabled = alice
        .get(&format!("{}/enabled", rule_path("content", "nocake")))
        .await;
    assert_eq!(enabled.assert_ok(), &json!({"enabled": true}));
    let actions = alice
        .get(&format!("{}/actions", rule_path("content", "nocake")))
        .await;
    assert_eq!(actions.assert_ok(), &json!({"actions": ["notify"]}));
}

#[tokio::test]
async fn new_rule_becomes_the_most_important_user_rule() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("override", "first"),
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &rule_path("override", "second"),
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_ok();
    let ids = rule_ids(&alice, "override").await;
    // The master rule stays on top; user rules come before the other server defaults.
    assert_eq!(&ids[..3], &[".m.rule.master", "second", "first"]);
    assert_eq!(
        ids.iter().filter(|i| i.starts_with(".m.rule.")).count(),
        ids.len() - 2
    );
}

#[tokio::test]
async fn before_and_after_place_a_rule_among_user_rules() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    for id in ["a", "b", "c"] {
        alice
            .put(
                &rule_path("content", id),
                json!({"actions": [], "pattern": id}),
            )
            .await
            .assert_ok();
    }
    assert_eq!(rule_ids(&alice, "content").await[..3], ["c", "b", "a"]);
    alice
        .put(
            &format!("{}?after=a", rule_path("content", "d")),
            json!({"actions": [], "pattern": "d"}),
        )
        .await
        .assert_ok();
    assert_eq!(rule_ids(&alice, "content").await[..4], ["c", "b", "a", "d"]);
    alice
        .put(
            &format!("{}?before=b", rule_path("content", "e")),
            json!({"actions": [], "pattern": "e"}),
        )
        .await
        .assert_ok();
    assert_eq!(
        rule_ids(&alice, "content").await[..5],
        ["c", "e", "b", "a", "d"]
    );
}

#[tokio::test]
async fn moving_an_existing_rule_after_the_last_one_keeps_its_state() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let room_a = "!a:example.org";
    let room_b = "!b:example.org";
    alice
        .put(&rule_path("room", room_b), json!({"actions": []}))
        .await
        .assert_ok();
    alice
        .put(&rule_path("room", room_a), json!({"actions": []}))
        .await
        .assert_ok();
    alice
        .put(
            &format!("{}/enabled", rule_path("room", room_a)),
            json!({"enabled": false}),
        )
        .await
        .assert_ok();
    assert_eq!(rule_ids(&alice, "room").await, [room_a, room_b]);
    // Moving the first rule after the last one.
    let path = format!("{}?after={}", rule_path("room", room_a), enc(room_b));
    alice
        .put(&path, json!({"actions": ["notify"]}))
        .await
        .assert_ok();
    assert_eq!(rule_ids(&alice, "room").await, [room_b, room_a]);
    let moved = alice.get(&rule_path("room", room_a)).await;
    assert_eq!(moved.assert_ok()["enabled"], false);
    assert_eq!(moved.assert_ok()["actions"], json!(["notify"]));
}

#[tokio::test]
async fn updating_a_rule_in_place_keeps_position_and_enabled() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("content", "x"),
            json!({"actions": [], "pattern": "x"}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &rule_path("content", "y"),
            json!({"actions": [], "pattern": "y"}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &format!("{}/enabled", rule_path("content", "x")),
            json!({"enabled": false}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &rule_path("content", "x"),
            json!({"actions": ["notify"], "pattern": "xx"}),
        )
        .await
        .assert_ok();
    assert_eq!(rule_ids(&alice, "content").await[..2], ["y", "x"]);
    let x = alice.get(&rule_path("content", "x")).await;
    assert_eq!(x.assert_ok()["pattern"], "xx");
    assert_eq!(x.assert_ok()["enabled"], false);
}

#[tokio::test]
async fn unknown_before_or_after_rule_is_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let r = alice
        .put(
            &format!("{}?before=ghost", rule_path("content", "x")),
            json!({"actions": [], "pattern": "x"}),
        )
        .await;
    r.assert_error(400, "M_UNKNOWN");
    alice
        .get(&rule_path("content", "x"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn reserved_rule_ids_and_server_default_anchors_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("override", ".m.rule.mine"),
            json!({"actions": [], "conditions": []}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .put(
            &rule_path("content", "a\\b"),
            json!({"actions": [], "pattern": "x"}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let anchored = format!("{}?after=.m.rule.master", rule_path("override", "mine"));
    alice
        .put(&anchored, json!({"actions": [], "conditions": []}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // A sender rule's id must be a user id.
    alice
        .put(&rule_path("sender", "not-a-user"), json!({"actions": []}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn rule_body_is_validated() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(&rule_path("content", "x"), json!({"pattern": "x"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .put(&rule_path("content", "x"), json!({"actions": []}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            http::Method::PUT,
            &rule_path("content", "x"),
            b"{".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn override_rule_without_conditions_is_accepted() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("override", "everything"),
            json!({"actions": ["notify"]}),
        )
        .await
        .assert_ok();
    let got = alice.get(&rule_path("override", "everything")).await;
    assert_eq!(got.assert_ok()["conditions"], json!([]));
}

#[tokio::test]
async fn deleted_rule_is_gone() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .put(
            &rule_path("content", "x"),
            json!({"actions": [], "pattern": "x"}),
        )
        .await
        .assert_ok();
    alice.delete(&rule_path("content", "x")).await.assert_ok();
    alice
        .get(&rule_path("content", "x"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .delete(&rule_path("content", "x"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn server_default_rules_cannot_be_deleted() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .delete(&rule_path("override", ".m.rule.master"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&rule_path("override", ".m.rule.master"))
        .await
        .assert_ok();
}

#[tokio::test]
async fn unknown_rules_and_kinds_are_errors() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    alice
        .get(&rule_path("content", "ghost"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("{}/enabled", rule_path("content", "ghost")))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .put(
            &format!("{}/enabled", rule_path("content", "ghost")),
            json!({"enabled": true}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("{}/actions", rule_path("content", "ghost")))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .put(
            &format!("{}/actions", rule_path("content", "ghost")),
            json!({"actions": []}),
        )
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&rule_path("sideways", "x"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .delete(&rule_path("sideways", "x"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn server_default_rules_can_be_toggled_and_given_actions() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let master = rule_path("override", ".m.rule.master");
    alice
        .put(&format!("{master}/enabled"), json!({"enabled": true}))
        .await
        .assert_ok();
    assert_eq!(
        alice.get(&format!("{master}/enabled")).await.assert_ok(),
        &json!({"enabled": true})
    );
    let msg = rule_path("underride", ".m.rule.message");
    let actions = json!(["notify", {"set_tweak": "sound", "value": "bing"}]);
    alice
        .put(&format!("{msg}/actions"), json!({"actions": actions}))
        .await
        .assert_ok();
    assert_eq!(
        alice.get(&format!("{msg}/actions")).await.assert_ok()["actions"],
        actions
    );
    alice
        .put(&format!("{master}/enabled"), json!({"enabled": "yes"}))
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn rule_changes_reach_sync_as_push_rules_account_data() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let since = hs.current_pos();
    alice
        .put(
            &rule_path("content", "kw"),
            json!({"actions": ["notify"], "pattern": "kw"}),
        )
        .await
        .assert_ok();
    let (global, _) = account_data_since(&hs, &uid(&alice), since).await.unwrap();
    assert_eq!(global.len(), 1);
    let event: Value = global[0].deserialize_as_unchecked().unwrap();
    assert_eq!(event["type"], "m.push_rules");
    assert_eq!(event["content"]["global"]["content"][0]["rule_id"], "kw");
}

#[tokio::test]
async fn rules_are_per_user() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    alice
        .put(
            &rule_path("content", "mine"),
            json!({"actions": [], "pattern": "x"}),
        )
        .await
        .assert_ok();
    bob.get(&rule_path("content", "mine"))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

// --- Pushers ------------------------------------------------------------------------------

fn http_pusher(pushkey: &str, append: bool) -> Value {
    json!({
        "pushkey": pushkey,
        "kind": "http",
        "app_id": "org.example.app.ios",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": { "url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only" },
        "append": append,
    })
}

#[tokio::test]
async fn pusher_is_stored_listed_and_deleted() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    assert_eq!(
        alice.get("/_matrix/client/v3/pushers").await.assert_ok(),
        &json!({"pushers": []})
    );
    alice
        .post("/_matrix/client/v3/pushers/set", http_pusher("key1", false))
        .await
        .assert_ok();
    let listed = alice.get("/_matrix/client/v3/pushers").await;
    let pushers = listed.assert_ok()["pushers"].as_array().unwrap().clone();
    assert_eq!(pushers.len(), 1);
    assert_eq!(pushers[0]["pushkey"], "key1");
    assert_eq!(pushers[0]["kind"], "http");
    assert_eq!(
        pushers[0]["data"]["url"],
        "https://push.example.org/_matrix/push/v1/notify"
    );
    assert_eq!(pushers[0]["data"]["format"], "event_id_only");

    // Same app id and pushkey updates in place.
    let mut changed = http_pusher("key1", false);
    changed["lang"] = json!("de");
    alice
        .post("/_matrix/client/v3/pushers/set", changed)
        .await
        .assert_ok();
    let listed = alice.get("/_matrix/client/v3/pushers").await;
    assert_eq!(listed.assert_ok()["pushers"].as_array().unwrap().len(), 1);
    assert_eq!(listed.assert_ok()["pushers"][0]["lang"], "de");

    let delete = json!({"pushkey": "key1", "app_id": "org.example.app.ios", "kind": null});
    alice
        .post("/_matrix/client/v3/pushers/set", delete)
        .await
        .assert_ok();
    assert_eq!(
        alice.get("/_matrix/client/v3/pushers").await.assert_ok(),
        &json!({"pushers": []})
    );
}

#[tokio::test]
async fn pusher_without_append_takes_the_pushkey_from_other_users() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    alice
        .post(
            "/_matrix/client/v3/pushers/set",
            http_pusher("shared", false),
        )
        .await
        .assert_ok();
    bob.post(
        "/_matrix/client/v3/pushers/set",
        http_pusher("shared", true),
    )
    .await
    .assert_ok();
    assert_eq!(
        alice.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        bob.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    carol
        .post(
            "/_matrix/client/v3/pushers/set",
            http_pusher("shared", false),
        )
        .await
        .assert_ok();
    assert_eq!(
        alice.get("/_matrix/client/v3/pushers").await.assert_ok(),
        &json!({"pushers": []})
    );
    assert_eq!(
        bob.get("/_matrix/client/v3/pushers").await.assert_ok(),
        &json!({"pushers": []})
    );
    assert_eq!(
        carol.get("/_matrix/client/v3/pushers").await.assert_ok()["pushers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn invalid_pushers_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let set = "/_matrix/client/v3/pushers/set";
    let mut bad_path = http_pusher("k", false);
    bad_path["data"]["url"] = json!("https://push.example.org/somewhere");
    alice
        .post(set, bad_path)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut not_url = http_pusher("k", false);
    not_url["data"]["url"] = json!("not a url");
    alice
        .post(set, not_url)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut long_app = http_pusher("k", false);
    long_app["app_id"] = json!("a".repeat(65));
    alice
        .post(set, long_app)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut long_key = http_pusher("k", false);
    long_key["pushkey"] = json!("k".repeat(513));
    alice
        .post(set, long_key)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut email = http_pusher("alice@example.org", false);
    email["kind"] = json!("email");
    email["app_id"] = json!("m.email");
    alice
        .post(set, email)
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let mut no_lang = http_pusher("k", false);
    no_lang.as_object_mut().unwrap().remove("lang");
    let r = alice.post(set, no_lang).await;
    r.assert_error(400, "M_MISSING_PARAM");
    assert!(r.body["error"].as_str().unwrap().contains("lang"));
    alice
        .post(set, json!({"pushkey": "k", "app_id": "a"}))
        .await
        .assert_error(400, "M_MISSING_PARAM");
    let mut no_url = http_pusher("k", false);
    no_url["data"] = json!({"format": "event_id_only"});
    alice
        .post(set, no_url)
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(set, json!({"pushkey": 7, "app_id": "a", "kind": null}))
        .await
        .assert_error(400, "M_BAD_JSON");
    assert_eq!(
        alice.get("/_matrix/client/v3/pushers").await.assert_ok(),
        &json!({"pushers": []})
    );
}

// --- Evaluation of hand-built events ----------------------------------------------------------
//
// The room is unknown to the server, so no power levels or member display names apply: only
// the event itself, the member count and the users' rules decide.

const ROOM: &str = "!evaluation:example.org";

fn room() -> OwnedRoomId {
    OwnedRoomId::try_from(ROOM).unwrap()
}

fn pdu(
    hs: &Homeserver,
    n: u64,
    sender: &TestClient,
    event_type: &str,
    state_key: Option<&str>,
    content: Value,
) -> Pdu {
    let event_id = OwnedEventId::try_from(format!("$event{n}")).unwrap();
    let mut json = json!({
        "event_id": event_id,
        "room_id": ROOM,
        "sender": sender.user_id,
        "type": event_type,
        "content": content,
        "origin_server_ts": hs.now_ms(),
    });
    if let Some(sk) = state_key {
        json["state_key"] = json!(sk);
    }
    Pdu::from_parts(
        event_id,
        json,
        EventMeta {
            pos: n,
            ..Default::default()
        },
    )
    .unwrap()
}

async fn evaluate(hs: &Homeserver, pdu: &Pdu, members: &[&TestClient]) {
    let members: Vec<OwnedUserId> = members.iter().map(|c| uid(c)).collect();
    let mut batch = Batch::new();
    evaluate_event(hs, &mut batch, pdu, &members).await.unwrap();
    hs.store.write(batch).await.unwrap();
}

async fn counts(hs: &Homeserver, c: &TestClient) -> (u64, u64) {
    notification_counts(hs, &uid(c), &room()).await.unwrap()
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

#[tokio::test]
async fn message_notifies_every_local_member_but_its_sender() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let ev = pdu(&hs, 1, &alice, "m.room.message", None, text("hello"));
    evaluate(&hs, &ev, &[&alice, &bob, &carol]).await;
    assert_eq!(counts(&hs, &alice).await, (0, 0));
    assert_eq!(counts(&hs, &bob).await, (1, 0));
    assert_eq!(counts(&hs, &carol).await, (1, 0));
}

#[tokio::test]
async fn one_to_one_message_notifies() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, text("hi")),
        &[&alice, &bob],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (1, 0));
}

#[tokio::test]
async fn user_mention_highlights_only_the_mentioned_user() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let content = json!({"msgtype": "m.text", "body": "bob: look", "m.mentions": {"user_ids": [bob.user_id]}});
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, content),
        &[&alice, &bob, &carol],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (1, 1));
    assert_eq!(counts(&hs, &carol).await, (1, 0));
}

#[tokio::test]
async fn notices_do_not_notify() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let content = json!({"msgtype": "m.notice", "body": "bot says hi"});
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, content),
        &[&alice, &bob],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (0, 0));
}

#[tokio::test]
async fn remote_members_are_not_evaluated() {
    let (hs, _) = test_server(1).await;
    let alice = user(&hs, "alice").await;
    let remote = OwnedUserId::try_from("@zed:remote.example.org").unwrap();
    let ev = pdu(&hs, 1, &alice, "m.room.message", None, text("hi"));
    let mut batch = Batch::new();
    evaluate_event(&hs, &mut batch, &ev, &[uid(&alice), remote.clone()])
        .await
        .unwrap();
    assert!(batch.is_empty());
    assert_eq!(
        notification_counts(&hs, &remote, &room()).await.unwrap(),
        (0, 0)
    );
}

#[tokio::test]
async fn ignored_senders_do_not_notify() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
        enc(&bob.user_id)
    );
    bob.put(&path, json!({"ignored_users": {alice.user_id.clone(): {}}}))
        .await
        .assert_ok();
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, text("hi")),
        &[&alice, &bob],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (0, 0));
}

#[tokio::test]
async fn enabled_master_rule_silences_everything() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    bob.put(
        &format!("{}/enabled", rule_path("override", ".m.rule.master")),
        json!({"enabled": true}),
    )
    .await
    .assert_ok();
    let content =
        json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}});
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, content),
        &[&alice, &bob],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (0, 0));
}

#[tokio::test]
async fn room_rule_without_actions_mutes_the_room() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    bob.put(&rule_path("room", ROOM), json!({"actions": []}))
        .await
        .assert_ok();
    evaluate(
        &hs,
        &pdu(&hs, 1, &alice, "m.room.message", None, text("hi")),
        &[&alice, &bob],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (0, 0));
}

#[tokio::test]
async fn keyword_rule_highlights() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    bob.put(
        &rule_path("content", "cake"),
        json!({"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]}),
    )
    .await
    .assert_ok();
    evaluate(
        &hs,
        &pdu(
            &hs,
            1,
            &alice,
            "m.room.message",
            None,
            text("who wants cake?"),
        ),
        &[&alice, &bob, &carol],
    )
    .await;
    evaluate(
        &hs,
        &pdu(&hs, 2, &alice, "m.room.message", None, text("nothing here")),
        &[&alice, &bob, &carol],
    )
    .await;
    assert_eq!(counts(&hs, &bob).await, (2, 1));
    assert_eq!(counts(&hs, &carol).await, (2, 0));
}

#[tokio::test]
async fn several_events_in_one_batch_accumulate() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let members = [uid(&alice), uid(&bob)];
    let mut batch = Batch::new();
    for n in 1..=3 {
        let ev = pdu(&hs, n, &alice, "m.room.message", None, text("spam"));
        evaluate_event(&hs, &mut batch, &ev, &members)
            .await
            .unwrap();
    }
    hs.store.write(batch).await.unwrap();
    assert_eq!(counts(&hs, &bob).await, (3, 0));
}

#[tokio::test]
async fn invite_notifies_the_invited_local_user() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let invite = pdu(
        &hs,
        1,
        &alice,
        "m.room.member",
        Some(&bob.user_id),
        json!({"membership": "invite"}),
    );
    evaluate(&hs, &invite, &[&alice]).await;
    assert_eq!(counts(&hs, &bob).await, (1, 0));
}

// --- With real rooms ------------------------------------------------------------------------
//
// These need rooms (create, join, send) and the event-append path calling `evaluate_event`.

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

async fn send(c: &TestClient, room: &str, content: Value) -> String {
    let txn = c.hs.random_string(8);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        enc(room)
    );
    c.put(&path, content).await.assert_ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn room_counts(c: &TestClient, room: &str) -> (u64, u64) {
    notification_counts(&c.hs, &uid(c), &OwnedRoomId::try_from(room).unwrap())
        .await
        .unwrap()
}

async fn receipt(c: &TestClient, room: &str, receipt_type: &str, event: &str) {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/{receipt_type}/{}",
        enc(room),
        enc(event)
    );
    c.post(&path, json!({})).await.assert_ok();
}

#[tokio::test]
async fn read_receipt_resets_notification_counts_up_to_its_event() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let mention =
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}});
    let first = send(&alice, &room, mention).await;
    let second = send(&alice, &room, text("two")).await;
    let third = send(&alice, &room, text("three")).await;
    assert_eq!(room_counts(&bob, &room).await, (3, 1));
    receipt(&bob, &room, "m.read", &first).await;
    assert_eq!(room_counts(&bob, &room).await, (2, 0));
    receipt(&bob, &room, "m.read.private", &second).await;
    assert_eq!(room_counts(&bob, &room).await, (1, 0));
    receipt(&bob, &room, "m.read", &third).await;
    assert_eq!(room_counts(&bob, &room).await, (0, 0));
    // Alice sent them all and has nothing unread.
    assert_eq!(room_counts(&alice, &room).await, (0, 0));
}

#[tokio::test]
async fn room_mention_by_a_privileged_sender_highlights() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(room_counts(&bob, &room).await, (1, 1));
    // Bob has power level 0, below the room's notification level of 50.
    send(
        &bob,
        &room,
        json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(room_counts(&alice, &room).await, (1, 0));
}

#[tokio::test]
async fn display_name_in_body_highlights() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let member = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(&room),
        enc(&bob.user_id)
    );
    bob.put(
        &member,
        json!({"membership": "join", "displayname": "Bobby"}),
    )
    .await
    .assert_ok();
    let rule = json!({"conditions": [{"kind": "contains_display_name"}], "actions": ["notify", {"set_tweak": "highlight"}]});
    bob.put(&rule_path("override", "my-name"), rule)
        .await
        .assert_ok();
    send(&alice, &room, text("hey Bobby, lunch?")).await;
    send(&alice, &room, text("hey Bob, lunch?")).await;
    assert_eq!(room_counts(&bob, &room).await, (2, 1));
}

#[tokio::test]
async fn notifications_are_listed_newest_first_and_paginated() {
    let (hs, _) = test_server(1).await;
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = shared_room(&alice, &[&bob]).await;
    let mention =
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}});
    let e1 = send(&alice, &room, mention).await;
    let e2 = send(&alice, &room, text("two")).await;
    let e3 = send(&alice, &room, text("three")).await;
    receipt(&bob, &room, "m.read", &e2).await;

    let page = bob.get("/_matrix/client/v3/notifications?limit=2").await;
    let body = page.assert_ok();
    let notes = body["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["event"]["event_id"], e3.as_str());
    assert_eq!(notes[0]["read"], false);
    assert_eq!(notes[0]["room_id"], room.as_str());
    assert!(notes[0]["event"].get("room_id").is_none());
    assert!(notes[0]["ts"].is_u64());
    assert!(
        notes[0]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "notify")
    );
    assert_eq!(notes[1]["event"]["event_id"], e2.as_str());
    assert_eq!(notes[1]["read"], true);
    let next = body["next_token"].as_str().unwrap().to_owned();

    let rest = bob
        .get(&format!(
            "/_matrix/client/v3/notifications?limit=2&from={next}"
        ))
        .await;
    let rest = rest.assert_ok();
    let notes = rest["notifications"].as_array().unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["event"]["event_id"], e1.as_str());
    assert!(rest.get("next_token").is_none());

    let highlights = bob
        .get("/_matrix/client/v3/notifications?only=highlight")
        .await;
    let highlights = highlights.assert_ok()["notifications"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(highlights.len(), 1);
    assert_eq!(highlights[0]["event"]["event_id"], e1.as_str());

    assert_eq!(
        alice
            .get("/_matrix/client/v3/notifications")
            .await
            .assert_ok()["notifications"],
        json!([])
    );
    bob.get("/_matrix/client/v3/notifications?from=bogus")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

// --- Rooms where most members get the default ------------------------------------------------
//
// With three or more members a plain message notifies everyone but its sender alike, which is
// stored once for the room; the sender, mentions, muted rooms and members who left are the
// exceptions. These check that counts and `/notifications` come out as if every member had
// their own record.

async fn notified_ids(c: &TestClient, query: &str) -> Vec<(String, bool, bool)> {
    let body = c
        .get(&format!("/_matrix/client/v3/notifications{query}"))
        .await;
    body.assert_ok()["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let highlight = n["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["set_tweak"] == "highlight" && a["value"] != false);
            (
                n["event"]["event_id"].as_str().unwrap().to_owned(),
                n["read"].as_bool().unwrap(),
                highlight,
            )
        })
        .collect()
}

async fn sync_counts(c: &TestClient, room: &str) -> (Value, Value) {
    let body = c.get("/_matrix/client/v3/sync?timeout=0").await;
    let counts = &body.assert_ok()["rooms"]["join"][room]["unread_notifications"];
    (
        counts["notification_count"].clone(),
        counts["highlight_count"].clone(),
    )
}

#[tokio::test]
async fn group_room_counts_and_lists_per_member() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let room = shared_room(&alice, &[&bob, &carol]).await;
    let m1 = send(&alice, &room, text("one")).await;
    let mention =
        json!({"msgtype": "m.text", "body": "bob!", "m.mentions": {"user_ids": [bob.user_id]}});
    let m2 = send(&alice, &room, mention).await;
    let m3 = send(&alice, &room, text("three")).await;
    let m4 = send(&carol, &room, text("four")).await;

    assert_eq!(room_counts(&bob, &room).await, (4, 1));
    assert_eq!(room_counts(&carol, &room).await, (3, 0));
    assert_eq!(room_counts(&alice, &room).await, (1, 0));
    assert_eq!(sync_counts(&bob, &room).await, (json!(4), json!(1)));

    receipt(&bob, &room, "m.read", &m2).await;
    assert_eq!(room_counts(&bob, &room).await, (2, 0));
    assert_eq!(sync_counts(&bob, &room).await, (json!(2), json!(0)));
    receipt(&carol, &room, "m.read", &m1).await;
    assert_eq!(room_counts(&carol, &room).await, (2, 0));
    receipt(&alice, &room, "m.read", &m3).await;
    assert_eq!(room_counts(&alice, &room).await, (1, 0));

    assert_eq!(
        notified_ids(&bob, "").await,
        vec![
            (m4.clone(), false, false),
            (m3.clone(), false, false),
            (m2.clone(), true, true),
            (m1.clone(), true, false),
        ]
    );
    assert_eq!(
        notified_ids(&bob, "?only=highlight").await,
        vec![(m2.clone(), true, true)]
    );
    assert_eq!(
        notified_ids(&carol, "").await,
        vec![
            (m3.clone(), false, false),
            (m2.clone(), false, false),
            (m1.clone(), true, false),
        ]
    );
    assert_eq!(notified_ids(&alice, "").await, vec![(m4, false, false)]);
    // Pagination walks the same list.
    let first = bob.get("/_matrix/client/v3/notifications?limit=3").await;
    let next = first.assert_ok()["next_token"].as_str().unwrap().to_owned();
    assert_eq!(
        notified_ids(&bob, &format!("?limit=3&from={next}")).await,
        vec![(m1, true, false)]
    );
}

#[tokio::test]
async fn members_who_left_are_not_counted_until_they_return() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol, dave) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
        user(&hs, "dave").await,
    );
    let room = shared_room(&alice, &[&bob, &carol, &dave]).await;
    let m1 = send(&alice, &room, text("one")).await;
    carol
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    let m2 = send(&alice, &room, text("while carol is away")).await;
    carol
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    let m3 = send(&alice, &room, text("welcome back")).await;

    assert_eq!(room_counts(&carol, &room).await, (2, 0));
    assert_eq!(room_counts(&bob, &room).await, (3, 0));
    assert_eq!(room_counts(&dave, &room).await, (3, 0));
    let carol_ids: Vec<String> = notified_ids(&carol, "")
        .await
        .into_iter()
        .map(|n| n.0)
        .collect();
    assert_eq!(carol_ids, vec![m3.clone(), m1.clone()]);
    // A receipt on the event she missed counts from there.
    receipt(&carol, &room, "m.read", &m2).await;
    assert_eq!(room_counts(&carol, &room).await, (1, 0));
    receipt(&carol, &room, "m.read", &m1).await;
    assert_eq!(room_counts(&carol, &room).await, (1, 0));
    receipt(&carol, &room, "m.read", &m3).await;
    assert_eq!(room_counts(&carol, &room).await, (0, 0));
}

#[tokio::test]
async fn a_muted_member_of_a_group_room_gets_nothing() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let room = shared_room(&alice, &[&bob, &carol]).await;
    bob.put(&rule_path("room", &room), json!({"actions": []}))
        .await
        .assert_ok();
    send(&alice, &room, text("one")).await;
    send(&alice, &room, text("two")).await;
    assert_eq!(room_counts(&bob, &room).await, (0, 0));
    assert_eq!(room_counts(&carol, &room).await, (2, 0));
    assert!(notified_ids(&bob, "").await.is_empty());
}

#[tokio::test]
async fn notifications_of_several_rooms_interleave_newest_first() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let group = shared_room(&alice, &[&bob, &carol]).await;
    let direct = shared_room(&carol, &[&bob]).await;
    let mut expected = Vec::new();
    for i in 0..5 {
        expected.push(send(&alice, &group, text(&format!("group {i}"))).await);
        expected.push(send(&carol, &direct, text(&format!("direct {i}"))).await);
    }
    expected.reverse();
    let mut listed = Vec::new();
    let mut from = String::new();
    loop {
        let page = bob
            .get(&format!("/_matrix/client/v3/notifications?limit=3{from}"))
            .await;
        let body = page.assert_ok();
        for n in body["notifications"].as_array().unwrap() {
            listed.push(n["event"]["event_id"].as_str().unwrap().to_owned());
            let room = n["room_id"].as_str().unwrap();
            assert!(room == group || room == direct);
        }
        match body["next_token"].as_str() {
            Some(t) => from = format!("&from={t}"),
            None => break,
        }
    }
    assert_eq!(listed, expected);
    assert_eq!(room_counts(&bob, &group).await, (5, 0));
    assert_eq!(room_counts(&bob, &direct).await, (5, 0));
}

#[tokio::test]
async fn room_mention_in_a_group_room_highlights_everyone_but_the_sender() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let room = shared_room(&alice, &[&bob, &carol]).await;
    send(&alice, &room, text("plain")).await;
    send(
        &alice,
        &room,
        json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(room_counts(&bob, &room).await, (2, 1));
    assert_eq!(room_counts(&carol, &room).await, (2, 1));
    assert_eq!(room_counts(&alice, &room).await, (0, 0));
    assert_eq!(notified_ids(&carol, "?only=highlight").await.len(), 1);
}

#[tokio::test]
async fn group_events_in_one_batch_accumulate() {
    let (hs, _) = test_server(1).await;
    let (alice, bob, carol) = (
        user(&hs, "alice").await,
        user(&hs, "bob").await,
        user(&hs, "carol").await,
    );
    let members = [uid(&alice), uid(&bob), uid(&carol)];
    let mut batch = Batch::new();
    for n in 1..=3 {
        let ev = pdu(&hs, n, &alice, "m.room.message", None, text("spam"));
        evaluate_event(&hs, &mut batch, &ev, &members)
            .await
            .unwrap();
    }
    // Carol leaves within the same batch: the fourth event is not hers to count.
    let ev = pdu(&hs, 4, &bob, "m.room.message", None, text("bye carol"));
    evaluate_event(&hs, &mut batch, &ev, &members[..2])
        .await
        .unwrap();
    let ev = pdu(&hs, 5, &alice, "m.room.message", None, text("just us"));
    evaluate_event(&hs, &mut batch, &ev, &members[..2])
        .await
        .unwrap();
    hs.store.write(batch).await.unwrap();
    assert_eq!(counts(&hs, &alice).await, (1, 0));
    assert_eq!(counts(&hs, &bob).await, (4, 0));
    assert_eq!(counts(&hs, &carol).await, (3, 0));
}
