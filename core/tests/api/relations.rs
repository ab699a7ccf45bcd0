//! Relationships between events: `/relations`, bundled aggregations (`m.replace`, `m.thread`,
//! `m.reference`) on every endpoint that serves events, `/threads`, the send-time relation
//! rules, and `m.mentions`-aware push rules.

use std::sync::atomic::{AtomicU64, Ordering};

use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::{Value, json};

static TXN: AtomicU64 = AtomicU64::new(0);

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

/// A public room of `owner` that `others` have joined.
async fn shared_room(owner: &TestClient, others: &[&TestClient]) -> String {
    let room = create_room(owner, json!({"preset": "public_chat"})).await;
    for c in others {
        join(c, &room).await;
    }
    room
}

async fn join(c: &TestClient, room: &str) {
    c.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(room)),
        json!({}),
    )
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

async fn try_send(
    c: &TestClient,
    room: &str,
    event_type: &str,
    content: Value,
) -> hearth_core::testing::TestResponse {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/{event_type}/t{txn}",
            enc(room)
        ),
        content,
    )
    .await
}

async fn send(c: &TestClient, room: &str, event_type: &str, content: Value) -> String {
    let r = try_send(c, room, event_type, content).await;
    r.assert_ok()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

async fn text(c: &TestClient, room: &str, body: &str) -> String {
    send(
        c,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body}),
    )
    .await
}

fn rel(rel_type: &str, parent: &str) -> Value {
    json!({"rel_type": rel_type, "event_id": parent})
}

async fn thread_reply(c: &TestClient, room: &str, root: &str, body: &str) -> String {
    send(
        c,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": body, "m.relates_to": rel("m.thread", root)}),
    )
    .await
}

async fn reference(c: &TestClient, room: &str, parent: &str) -> String {
    send(
        c,
        room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "ref", "m.relates_to": rel("m.reference", parent)}),
    )
    .await
}

async fn edit(c: &TestClient, room: &str, original: &str, body: &str) -> String {
    send(
        c,
        room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": format!("* {body}"),
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": rel("m.replace", original),
        }),
    )
    .await
}

async fn react(
    c: &TestClient,
    room: &str,
    parent: &str,
    key: &str,
) -> hearth_core::testing::TestResponse {
    try_send(
        c,
        room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": parent, "key": key}}),
    )
    .await
}

async fn redact(c: &TestClient, room: &str, event: &str) {
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r{txn}",
            enc(room),
            enc(event)
        ),
        json!({}),
    )
    .await
    .assert_ok();
}

async fn ignore(c: &TestClient, users: &[&TestClient]) {
    let ignored: serde_json::Map<String, Value> = users
        .iter()
        .map(|u| (u.user_id.clone(), json!({})))
        .collect();
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
        enc(&c.user_id)
    );
    c.put(&path, json!({ "ignored_users": ignored }))
        .await
        .assert_ok();
}

fn relations_path(room: &str, parent: &str, tail: &str, query: &str) -> String {
    format!(
        "/_matrix/client/v1/rooms/{}/relations/{}{tail}?{query}",
        enc(room),
        enc(parent)
    )
}

async fn relations(c: &TestClient, room: &str, parent: &str, tail: &str, query: &str) -> Value {
    c.get(&relations_path(room, parent, tail, query))
        .await
        .assert_ok()
        .clone()
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn event(c: &TestClient, room: &str, id: &str) -> Value {
    c.get(&format!(
        "/_matrix/client/v3/rooms/{}/event/{}",
        enc(room),
        enc(id)
    ))
    .await
    .assert_ok()
    .clone()
}

async fn sync(c: &TestClient, since: Option<&str>) -> Value {
    let mut path = "/_matrix/client/v3/sync?timeout=0".to_owned();
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    c.get(&path).await.assert_ok().clone()
}

async fn threads(c: &TestClient, room: &str, query: &str) -> Value {
    c.get(&format!(
        "/_matrix/client/v1/rooms/{}/threads?{query}",
        enc(room)
    ))
    .await
    .assert_ok()
    .clone()
}

// --- /relations --------------------------------------------------------------------------------

#[tokio::test]
async fn relations_page_backwards_newest_first() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let mut children = Vec::new();
    for _ in 0..5 {
        children.push(reference(&alice, &room, &root).await);
    }
    text(&alice, &room, "unrelated").await;

    let first = relations(&alice, &room, &root, "", "limit=2").await;
    assert_eq!(
        ids(&first["chunk"]),
        vec![children[4].clone(), children[3].clone()]
    );
    assert!(
        first.get("prev_batch").is_none(),
        "the first page has no prev_batch"
    );
    assert!(
        first.get("recursion_depth").is_none(),
        "no recursion_depth unless recurse was asked"
    );
    assert_eq!(first["chunk"][0]["room_id"], room.as_str());
    let next = first["next_batch"].as_str().expect("next_batch");

    let second = relations(&alice, &room, &root, "", &format!("limit=2&from={next}")).await;
    assert_eq!(
        ids(&second["chunk"]),
        vec![children[2].clone(), children[1].clone()]
    );
    assert_eq!(second["prev_batch"], next);
    let next = second["next_batch"].as_str().expect("next_batch");

    let last = relations(&alice, &room, &root, "", &format!("limit=2&from={next}")).await;
    assert_eq!(ids(&last["chunk"]), vec![children[0].clone()]);
    assert!(
        last.get("next_batch").is_none(),
        "the last page has no next_batch"
    );
}

#[tokio::test]
async fn relations_page_forwards_in_chronological_order() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let mut children = Vec::new();
    for _ in 0..3 {
        children.push(reference(&alice, &room, &root).await);
    }
    let first = relations(&alice, &room, &root, "", "dir=f&limit=2").await;
    assert_eq!(ids(&first["chunk"]), children[..2].to_vec());
    let next = first["next_batch"].as_str().expect("next_batch");
    let rest = relations(
        &alice,
        &room,
        &root,
        "",
        &format!("dir=f&limit=2&from={next}"),
    )
    .await;
    assert_eq!(ids(&rest["chunk"]), children[2..].to_vec());
    assert!(rest.get("next_batch").is_none());
}

#[tokio::test]
async fn relations_to_token_from_sync_bounds_the_range() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let old = reference(&alice, &room, &root).await;
    let mark = sync(&alice, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let new1 = reference(&alice, &room, &root).await;
    let new2 = reference(&alice, &room, &root).await;
    let since_mark = relations(&alice, &room, &root, "", &format!("to={mark}")).await;
    assert_eq!(ids(&since_mark["chunk"]), vec![new2.clone(), new1.clone()]);
    let until_mark = relations(&alice, &room, &root, "", &format!("dir=f&to={mark}")).await;
    assert_eq!(ids(&until_mark["chunk"]), vec![old.clone()]);
    let from_mark = relations(&alice, &room, &root, "", &format!("from={mark}")).await;
    assert_eq!(ids(&from_mark["chunk"]), vec![old]);
}

#[tokio::test]
async fn relations_filter_by_rel_type_and_event_type() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let in_thread = thread_reply(&alice, &room, &root, "in thread").await;
    let referencing = reference(&alice, &room, &root).await;
    let reaction = react(&alice, &room, &root, "👍").await.assert_ok()["event_id"]
        .as_str()
        .expect("id")
        .to_owned();

    let all = relations(&alice, &room, &root, "", "").await;
    assert_eq!(
        ids(&all["chunk"]),
        vec![reaction.clone(), referencing.clone(), in_thread.clone()]
    );
    let annotations = relations(&alice, &room, &root, "/m.annotation", "").await;
    assert_eq!(ids(&annotations["chunk"]), vec![reaction.clone()]);
    let thread_messages = relations(&alice, &room, &root, "/m.thread/m.room.message", "").await;
    assert_eq!(ids(&thread_messages["chunk"]), vec![in_thread]);
    let reactions = relations(&alice, &room, &root, "/m.annotation/m.reaction", "").await;
    assert_eq!(ids(&reactions["chunk"]), vec![reaction]);
    let none = relations(&alice, &room, &root, "/m.annotation/m.room.message", "").await;
    assert_eq!(none["chunk"], json!([]));
    let custom = relations(&alice, &room, &root, "/org.example.none", "").await;
    assert_eq!(custom["chunk"], json!([]));
}

#[tokio::test]
async fn recurse_follows_three_levels_of_matching_relations() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let level1 = reference(&alice, &room, &root).await;
    let level2 = reference(&alice, &room, &level1).await;
    let level3 = reference(&alice, &room, &level2).await;
    let _level4 = reference(&alice, &room, &level3).await;

    let direct = relations(&alice, &room, &root, "", "").await;
    assert_eq!(ids(&direct["chunk"]), vec![level1.clone()]);
    let deep = relations(&alice, &room, &root, "", "recurse=true").await;
    assert_eq!(
        ids(&deep["chunk"]),
        vec![level3.clone(), level2.clone(), level1.clone()]
    );
    assert_eq!(deep["recursion_depth"], 3);
    let not_deep = relations(&alice, &room, &root, "", "recurse=false").await;
    assert_eq!(ids(&not_deep["chunk"]), vec![level1.clone()]);

    // A child reached only through an event of another relation type is not included.
    let reaction = react(&alice, &room, &root, "x").await.assert_ok()["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let behind_reaction = reference(&alice, &room, &reaction).await;
    let refs = relations(&alice, &room, &root, "/m.reference", "recurse=true").await;
    assert!(!ids(&refs["chunk"]).contains(&behind_reaction));
    assert_eq!(ids(&refs["chunk"]), vec![level3, level2, level1]);
    let everything = relations(&alice, &room, &root, "", "recurse=true").await;
    assert!(ids(&everything["chunk"]).contains(&behind_reaction));
}

#[tokio::test]
async fn relations_of_an_event_the_caller_cannot_see_are_not_found() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let root = text(&alice, &room, "secret").await;
    reference(&alice, &room, &root).await;
    eve.get(&relations_path(&room, &root, "", ""))
        .await
        .assert_error(404, "M_NOT_FOUND");
    eve.get(&relations_path(&room, &root, "/m.reference", ""))
        .await
        .assert_error(404, "M_NOT_FOUND");
    eve.get(&relations_path(
        &room,
        &root,
        "/m.reference/m.room.message",
        "",
    ))
    .await
    .assert_error(404, "M_NOT_FOUND");
    // An unknown event, and an event named under the wrong room, are not found either.
    let missing = "$doesnotexist";
    alice
        .get(&relations_path(&room, missing, "", ""))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let other = create_room(&alice, json!({})).await;
    alice
        .get(&relations_path(&other, &root, "", ""))
        .await
        .assert_error(404, "M_NOT_FOUND");
    TestClient::anonymous(&hs)
        .get(&relations_path(&room, &root, "", ""))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .get(&relations_path(&room, &root, "", "from=garbage"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&relations_path(&room, &root, "", "dir=sideways"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn relations_leave_out_children_sent_after_the_caller_left() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let root = text(&alice, &room, "root").await;
    let seen = thread_reply(&alice, &room, &root, "before bob left").await;
    leave(&bob, &room).await;
    let unseen = thread_reply(&alice, &room, &root, "after bob left").await;

    assert_eq!(
        ids(&relations(&bob, &room, &root, "", "").await["chunk"]),
        vec![seen.clone()]
    );
    assert_eq!(
        ids(&relations(&alice, &room, &root, "", "").await["chunk"]),
        vec![unseen.clone(), seen.clone()]
    );
    let for_bob = event(&bob, &room, &root).await;
    assert_eq!(for_bob["unsigned"]["m.relations"]["m.thread"]["count"], 1);
    assert_eq!(
        for_bob["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        seen.as_str()
    );
    let for_alice = event(&alice, &room, &root).await;
    assert_eq!(for_alice["unsigned"]["m.relations"]["m.thread"]["count"], 2);
}

#[tokio::test]
async fn redacted_child_no_longer_relates() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let kept = reference(&alice, &room, &root).await;
    let dropped = reference(&alice, &room, &root).await;
    redact(&alice, &room, &dropped).await;
    assert_eq!(
        ids(&relations(&alice, &room, &root, "", "").await["chunk"]),
        vec![kept.clone()]
    );
    let served = event(&alice, &room, &root).await;
    assert_eq!(
        served["unsigned"]["m.relations"]["m.reference"],
        json!({"chunk": [{"event_id": kept}]})
    );
}

#[tokio::test]
async fn children_from_ignored_users_are_left_out() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let room = shared_room(&alice, &[&bob, &carol]).await;
    let root = text(&alice, &room, "root").await;
    let from_bob = thread_reply(&bob, &room, &root, "bob").await;
    let from_carol = thread_reply(&carol, &room, &root, "carol").await;
    ignore(&alice, &[&carol]).await;
    assert_eq!(
        ids(&relations(&alice, &room, &root, "", "").await["chunk"]),
        vec![from_bob.clone()]
    );
    let thread = &event(&alice, &room, &root).await["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 1);
    assert_eq!(thread["latest_event"]["event_id"], from_bob.as_str());
    // Bob ignores nobody and sees both.
    let thread = &event(&bob, &room, &root).await["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 2);
    assert_eq!(thread["latest_event"]["event_id"], from_carol.as_str());
}

// --- Aggregations ------------------------------------------------------------------------------

#[tokio::test]
async fn edits_bundle_the_most_recent_valid_replacement() {
    let (hs, world) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let original = text(&alice, &room, "first draft").await;
    edit(&alice, &room, &original, "second draft").await;
    // The most recent edit is the one with the later timestamp.
    world.advance(5);
    let latest = edit(&alice, &room, &original, "final").await;
    // Not valid replacements: another sender, no m.new_content, another event type.
    edit(&bob, &room, &original, "bob's version").await;
    send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "* x", "m.relates_to": rel("m.replace", &original)}),
    )
    .await;
    send(
        &alice,
        &room,
        "org.example.other",
        json!({"m.new_content": {}, "m.relates_to": rel("m.replace", &original)}),
    )
    .await;

    let served = event(&bob, &room, &original).await;
    assert_eq!(
        served["content"]["body"], "first draft",
        "the original content is served unchanged"
    );
    let replace = &served["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], latest.as_str());
    assert_eq!(replace["room_id"], room.as_str());
    assert_eq!(replace["sender"], alice.user_id.as_str());
    assert_eq!(replace["content"]["m.new_content"]["body"], "final");
    assert!(replace["origin_server_ts"].is_u64());

    // Editing an edit is not valid either.
    let edit_of_edit = edit(&alice, &room, &latest, "nested").await;
    let served_edit = event(&alice, &room, &latest).await;
    assert!(
        served_edit["unsigned"].get("m.relations").is_none(),
        "{served_edit}"
    );
    let _ = edit_of_edit;
}

#[tokio::test]
async fn redacted_original_bundles_no_edit() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let original = text(&alice, &room, "oops").await;
    edit(&alice, &room, &original, "still oops").await;
    let thread = thread_reply(&alice, &room, &original, "reply").await;
    redact(&alice, &room, &original).await;
    let served = event(&alice, &room, &original).await;
    assert_eq!(served["content"], json!({}));
    let relations = &served["unsigned"]["m.relations"];
    assert!(relations.get("m.replace").is_none(), "{served}");
    // Other relationships of a redacted parent remain.
    assert_eq!(
        relations["m.thread"]["latest_event"]["event_id"],
        thread.as_str()
    );
}

#[tokio::test]
async fn thread_aggregation_has_latest_event_count_and_participation() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let dave = TestClient::register(&hs, "dave").await;
    let room = shared_room(&alice, &[&bob, &carol, &dave]).await;
    let root = text(&alice, &room, "root").await;
    thread_reply(&bob, &room, &root, "one").await;
    thread_reply(&alice, &room, &root, "two").await;
    let last = thread_reply(&carol, &room, &root, "three").await;
    let last_edit = edit(&carol, &room, &last, "three, edited").await;

    for (who, participated) in [(&alice, true), (&bob, true), (&carol, true), (&dave, false)] {
        let served = event(who, &room, &root).await;
        let thread = &served["unsigned"]["m.relations"]["m.thread"];
        assert_eq!(thread["count"], 3, "{} sees {served}", who.user_id);
        assert_eq!(
            thread["current_user_participated"], participated,
            "{}",
            who.user_id
        );
        let latest = &thread["latest_event"];
        assert_eq!(latest["event_id"], last.as_str());
        assert_eq!(latest["room_id"], room.as_str());
        assert_eq!(latest["content"]["body"], "three");
        // The latest event carries its own aggregations.
        assert_eq!(
            latest["unsigned"]["m.relations"]["m.replace"]["event_id"],
            last_edit.as_str()
        );
    }
}

#[tokio::test]
async fn references_bundle_a_chunk_of_event_ids() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let one = reference(&alice, &room, &root).await;
    let two = reference(&alice, &room, &root).await;
    let served = event(&alice, &room, &root).await;
    assert_eq!(
        served["unsigned"]["m.relations"],
        json!({"m.reference": {"chunk": [{"event_id": one}, {"event_id": two}]}})
    );
    // Annotations are not aggregated by the server.
    react(&alice, &room, &root, "🎉").await.assert_ok();
    let served = event(&alice, &room, &root).await;
    assert!(
        served["unsigned"]["m.relations"]
            .get("m.annotation")
            .is_none()
    );
    // An event nothing relates to has no m.relations at all.
    let plain = event(&alice, &room, &one).await;
    assert!(plain["unsigned"].get("m.relations").is_none());
}

#[tokio::test]
async fn state_events_get_no_bundled_aggregations() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let name_id = alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            json!({"name": "Lounge"}),
        )
        .await
        .assert_ok()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned();
    let child = reference(&alice, &room, &name_id).await;
    let served = event(&alice, &room, &name_id).await;
    assert!(served["unsigned"].get("m.relations").is_none(), "{served}");
    // The relation itself is still listed.
    assert_eq!(
        ids(&relations(&alice, &room, &name_id, "", "").await["chunk"]),
        vec![child]
    );
}

#[tokio::test]
async fn aggregations_are_bundled_in_messages_context_relations_and_sync() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let reply = thread_reply(&alice, &room, &root, "reply").await;
    let reply_edit = edit(&alice, &room, &reply, "reply, edited").await;

    let find = |events: &Value, id: &str| -> Value {
        events
            .as_array()
            .and_then(|a| a.iter().find(|e| e["event_id"] == id).cloned())
            .unwrap_or(Value::Null)
    };

    let messages = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10",
            enc(&room)
        ))
        .await;
    let in_messages = find(&messages.assert_ok()["chunk"], &root);
    assert_eq!(
        in_messages["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        reply.as_str()
    );

    let context = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/context/{}?limit=4",
            enc(&room),
            enc(&reply)
        ))
        .await;
    let context = context.assert_ok();
    assert_eq!(
        context["event"]["unsigned"]["m.relations"]["m.replace"]["event_id"],
        reply_edit.as_str()
    );
    let before = find(&context["events_before"], &root);
    assert_eq!(before["unsigned"]["m.relations"]["m.thread"]["count"], 1);

    let listed = relations(&alice, &room, &root, "", "").await;
    let in_relations = find(&listed["chunk"], &reply);
    assert_eq!(
        in_relations["unsigned"]["m.relations"]["m.replace"]["event_id"],
        reply_edit.as_str()
    );

    let synced = sync(&alice, None).await;
    let timeline = &synced["rooms"]["join"][room.as_str()]["timeline"]["events"];
    let in_sync = find(timeline, &root);
    let latest = &in_sync["unsigned"]["m.relations"]["m.thread"]["latest_event"];
    assert_eq!(latest["event_id"], reply.as_str());
    assert!(
        latest.get("room_id").is_none(),
        "bundled events in /sync use the sync format: {latest}"
    );
    let reply_in_sync = find(timeline, &reply);
    let replace = &reply_in_sync["unsigned"]["m.relations"]["m.replace"];
    assert_eq!(replace["event_id"], reply_edit.as_str());
    assert!(replace.get("room_id").is_none());
}

// --- /threads ----------------------------------------------------------------------------------

#[tokio::test]
async fn threads_are_listed_by_latest_activity_and_paginate() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let a = text(&alice, &room, "a").await;
    let b = text(&alice, &room, "b").await;
    let c = text(&alice, &room, "c").await;
    text(&alice, &room, "no thread").await;
    thread_reply(&alice, &room, &a, "a1").await;
    thread_reply(&alice, &room, &b, "b1").await;
    thread_reply(&alice, &room, &c, "c1").await;
    let a2 = thread_reply(&alice, &room, &a, "a2").await;

    let all = threads(&alice, &room, "").await;
    assert_eq!(ids(&all["chunk"]), vec![a.clone(), c.clone(), b.clone()]);
    assert!(all.get("next_batch").is_none());
    let first = &all["chunk"][0];
    assert_eq!(first["room_id"], room.as_str());
    assert_eq!(first["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    assert_eq!(
        first["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"],
        a2.as_str()
    );

    let page1 = threads(&alice, &room, "limit=2").await;
    assert_eq!(ids(&page1["chunk"]), vec![a.clone(), c.clone()]);
    let next = page1["next_batch"].as_str().expect("next_batch");
    let page2 = threads(&alice, &room, &format!("limit=2&from={next}")).await;
    assert_eq!(ids(&page2["chunk"]), vec![b.clone()]);
    assert!(page2.get("next_batch").is_none());
}

#[tokio::test]
async fn threads_participated_lists_only_the_callers_threads() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let started_by_bob = text(&bob, &room, "bob's").await;
    let answered_by_bob = text(&alice, &room, "alice's, bob answers").await;
    let without_bob = text(&alice, &room, "alice's alone").await;
    thread_reply(&alice, &room, &started_by_bob, "x").await;
    thread_reply(&bob, &room, &answered_by_bob, "y").await;
    thread_reply(&alice, &room, &without_bob, "z").await;

    let mine = threads(&bob, &room, "include=participated").await;
    assert_eq!(
        ids(&mine["chunk"]),
        vec![answered_by_bob.clone(), started_by_bob.clone()]
    );
    let all = threads(&bob, &room, "include=all").await;
    assert_eq!(
        ids(&all["chunk"]),
        vec![without_bob, answered_by_bob, started_by_bob]
    );
}

#[tokio::test]
async fn threads_need_a_room_the_caller_may_see_and_valid_parameters() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let eve = TestClient::register(&hs, "eve").await;
    let room = create_room(&alice, json!({"preset": "private_chat"})).await;
    let root = text(&alice, &room, "root").await;
    thread_reply(&alice, &room, &root, "reply").await;
    let path = |q: &str| format!("/_matrix/client/v1/rooms/{}/threads{q}", enc(&room));
    eve.get(&path("")).await.assert_error(403, "M_FORBIDDEN");
    eve.get("/_matrix/client/v1/rooms/!nowhere:example.org/threads")
        .await
        .assert_error(403, "M_FORBIDDEN");
    TestClient::anonymous(&hs)
        .get(&path(""))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .get(&path("?include=mine"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&path("?limit=0"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .get(&path("?from=nonsense"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    assert_eq!(ids(&threads(&alice, &room, "").await["chunk"]), vec![root]);
}

#[tokio::test]
async fn former_member_sees_threads_as_they_were_when_they_left() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let old = text(&alice, &room, "old").await;
    let seen_reply = thread_reply(&alice, &room, &old, "seen").await;
    leave(&bob, &room).await;
    let new = text(&alice, &room, "new").await;
    thread_reply(&alice, &room, &new, "unseen").await;
    thread_reply(&alice, &room, &old, "unseen too").await;

    let listed = threads(&bob, &room, "").await;
    assert_eq!(ids(&listed["chunk"]), vec![old.clone()]);
    let thread = &listed["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(thread["count"], 1);
    assert_eq!(thread["latest_event"]["event_id"], seen_reply.as_str());
}

#[tokio::test]
async fn thread_root_of_an_ignored_user_is_listed_redacted() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let root = text(&bob, &room, "bob's secret").await;
    thread_reply(&alice, &room, &root, "alice replies").await;
    ignore(&alice, &[&bob]).await;
    let listed = threads(&alice, &room, "").await;
    let first = &listed["chunk"][0];
    assert_eq!(first["event_id"], root.as_str());
    assert_eq!(first["content"], json!({}), "{first}");
    assert_eq!(first["unsigned"]["m.relations"]["m.thread"]["count"], 1);
}

// --- Sending relations -------------------------------------------------------------------------

#[tokio::test]
async fn a_thread_cannot_start_from_an_event_that_is_a_relation() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = shared_room(&alice, &[]).await;
    let root = text(&alice, &room, "root").await;
    let reply = thread_reply(&alice, &room, &root, "reply").await;
    let nested =
        json!({"msgtype": "m.text", "body": "nested", "m.relates_to": rel("m.thread", &reply)});
    try_send(&alice, &room, "m.room.message", nested)
        .await
        .assert_error(400, "M_UNKNOWN");
    // A rich reply (no rel_type) may become a thread root.
    let rich = send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": root}}}),
    )
    .await;
    thread_reply(&alice, &room, &rich, "fine").await;
}

#[tokio::test]
async fn a_repeated_annotation_is_refused_until_the_first_is_redacted() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let target = text(&alice, &room, "react to me").await;
    let first = react(&bob, &room, &target, "👍").await.assert_ok()["event_id"]
        .as_str()
        .expect("id")
        .to_owned();
    react(&bob, &room, &target, "👍")
        .await
        .assert_error(400, "M_DUPLICATE_ANNOTATION");
    react(&bob, &room, &target, "👎").await.assert_ok();
    react(&alice, &room, &target, "👍").await.assert_ok();
    redact(&bob, &room, &first).await;
    react(&bob, &room, &target, "👍").await.assert_ok();
}

// --- Mentions ----------------------------------------------------------------------------------

async fn highlight_count(c: &TestClient, room: &str) -> u64 {
    let s = sync(c, None).await;
    s["rooms"]["join"][room]["unread_notifications"]["highlight_count"]
        .as_u64()
        .unwrap_or(0)
}

async fn notification_count(c: &TestClient, room: &str) -> u64 {
    let s = sync(c, None).await;
    s["rooms"]["join"][room]["unread_notifications"]["notification_count"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn default_push_rules_include_the_mention_rules() {
    let (hs, _) = test_server(1).await;
    let bob = TestClient::register(&hs, "bob").await;
    let rules = bob.get("/_matrix/client/v3/pushrules/").await;
    let overrides = rules.assert_ok()["global"]["override"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let user_rule = overrides
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.is_user_mention")
        .expect("is_user_mention");
    assert_eq!(
        user_rule["conditions"][0]["kind"],
        "event_property_contains"
    );
    assert_eq!(
        user_rule["conditions"][0]["key"],
        "content.m\\.mentions.user_ids"
    );
    assert_eq!(user_rule["conditions"][0]["value"], bob.user_id.as_str());
    let room_rule = overrides
        .iter()
        .find(|r| r["rule_id"] == ".m.rule.is_room_mention")
        .expect("is_room_mention");
    assert!(
        room_rule["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["kind"] == "sender_notification_permission")
    );
}

#[tokio::test]
async fn user_mention_highlights_only_the_mentioned_user() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let room = shared_room(&alice, &[&bob, &carol]).await;
    send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "hi bob", "m.mentions": {"user_ids": [bob.user_id]}}),
    )
    .await;
    assert_eq!(highlight_count(&bob, &room).await, 1);
    assert_eq!(highlight_count(&carol, &room).await, 0);
    assert_eq!(
        notification_count(&carol, &room).await,
        1,
        "carol is notified of the message, not highlighted"
    );
}

#[tokio::test]
async fn message_without_mentions_does_not_highlight_even_if_it_names_the_user() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    text(&alice, &room, "plain message").await;
    // With an empty m.mentions the body's words are not mentions.
    send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": format!("{} bob", bob.user_id), "m.mentions": {}}),
    )
    .await;
    assert_eq!(notification_count(&bob, &room).await, 2);
    assert_eq!(highlight_count(&bob, &room).await, 0);
}

#[tokio::test]
async fn room_mention_highlights_only_from_a_sender_with_enough_power() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    // Bob (power 0, below the default notifications.room of 50) cannot @room.
    send(
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "@room", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(highlight_count(&alice, &room).await, 0);
    // Alice, the creator, can.
    send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "@room", "m.mentions": {"room": true}}),
    )
    .await;
    assert_eq!(highlight_count(&bob, &room).await, 1);
}

#[tokio::test]
async fn an_edit_does_not_notify_again() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = shared_room(&alice, &[&bob]).await;
    let original = send(
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "hi bob", "m.mentions": {"user_ids": [bob.user_id]}}),
    )
    .await;
    send(
        &alice,
        &room,
        "m.room.message",
        json!({
            "msgtype": "m.text",
            "body": "* hi bob!",
            // Bob is mentioned by the message, not anew by this revision.
            "m.mentions": {},
            "m.new_content": {"msgtype": "m.text", "body": "hi bob!", "m.mentions": {"user_ids": [bob.user_id]}},
            "m.relates_to": rel("m.replace", &original),
        }),
    )
    .await;
    assert_eq!(notification_count(&bob, &room).await, 1);
    assert_eq!(highlight_count(&bob, &room).await, 1);
}

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

/// The relations and threads answers, success and error alike, checked against the spec's
/// schemas (bundled aggregations included).
#[cfg(not(target_arch = "wasm32"))]
mod schemas {
    use http::Method;

    use super::*;

    struct Checked {
        spec: spec::Spec,
        problems: Vec<String>,
    }

    impl Checked {
        async fn get(&mut self, c: &TestClient, path: &str, status: u16) -> Value {
            let r = c.get(path).await;
            assert_eq!(r.status.as_u16(), status, "GET {path}: {}", r.body);
            if let Err(violations) = self.spec.validate(&Method::GET, path, status, &r.raw) {
                self.problems
                    .extend(violations.iter().map(ToString::to_string));
            }
            r.body
        }
    }

    #[tokio::test]
    async fn relations_and_threads_responses_match_the_spec_schemas() {
        let (hs, _) = test_server(1).await;
        let alice = TestClient::register(&hs, "alice").await;
        let eve = TestClient::register(&hs, "eve").await;
        let room = shared_room(&alice, &[]).await;
        let root = text(&alice, &room, "root").await;
        let reply = thread_reply(&alice, &room, &root, "reply").await;
        edit(&alice, &room, &reply, "reply, edited").await;
        reference(&alice, &room, &root).await;
        react(&alice, &room, &root, "👍").await.assert_ok();

        let mut h = Checked {
            spec: spec::Spec::load(),
            problems: Vec::new(),
        };
        let page = h
            .get(
                &alice,
                &relations_path(&room, &root, "", "limit=1&recurse=true"),
                200,
            )
            .await;
        let next = page["next_batch"].as_str().expect("next_batch").to_owned();
        h.get(
            &alice,
            &relations_path(&room, &root, "", &format!("from={next}")),
            200,
        )
        .await;
        h.get(
            &alice,
            &relations_path(&room, &root, "/m.thread", "dir=f"),
            200,
        )
        .await;
        h.get(
            &alice,
            &relations_path(&room, &root, "/m.thread/m.room.message", ""),
            200,
        )
        .await;
        h.get(&eve, &relations_path(&room, &root, "", ""), 404)
            .await;
        h.get(&eve, &relations_path(&room, &root, "/m.thread", ""), 404)
            .await;
        h.get(
            &eve,
            &relations_path(&room, &root, "/m.thread/m.room.message", ""),
            404,
        )
        .await;

        let threads_path = format!("/_matrix/client/v1/rooms/{}/threads", enc(&room));
        h.get(&alice, &threads_path, 200).await;
        h.get(
            &alice,
            &format!("{threads_path}?include=participated&limit=1"),
            200,
        )
        .await;
        h.get(&alice, &format!("{threads_path}?from=bogus"), 400)
            .await;
        h.get(&eve, &threads_path, 403).await;

        h.get(
            &alice,
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                enc(&room),
                enc(&root)
            ),
            200,
        )
        .await;
        h.get(
            &alice,
            &format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&room)),
            200,
        )
        .await;
        h.get(
            &alice,
            &format!(
                "/_matrix/client/v3/rooms/{}/context/{}",
                enc(&room),
                enc(&reply)
            ),
            200,
        )
        .await;
        assert!(h.problems.is_empty(), "{}", h.problems.join("\n"));
    }
}
