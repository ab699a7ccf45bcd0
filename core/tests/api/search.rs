//! Server-side search (`POST /search`) and the user directory (`POST /user_directory/search`).

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use http::Method;
use serde_json::{Value, json};

const SEARCH: &str = "/_matrix/client/v3/search";

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

async fn send_text(c: &TestClient, room: &str, text: &str) -> String {
    static TXN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let txn = format!(
        "t{}",
        TXN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
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

async fn join(c: &TestClient, room: &str) {
    c.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(room)),
        json!({}),
    )
    .await
    .assert_ok();
}

async fn invite(c: &TestClient, room: &str, user: &str) {
    c.post(
        &format!("/_matrix/client/v3/rooms/{}/invite", enc(room)),
        json!({"user_id": user}),
    )
    .await
    .assert_ok();
}

async fn search(c: &TestClient, criteria: Value) -> Value {
    c.post(
        SEARCH,
        json!({"search_categories": {"room_events": criteria}}),
    )
    .await
    .assert_ok()["search_categories"]["room_events"]
        .clone()
}

async fn search_page(c: &TestClient, criteria: Value, next: &str) -> Value {
    c.post(
        &format!("{SEARCH}?next_batch={}", enc(next)),
        json!({"search_categories": {"room_events": criteria}}),
    )
    .await
    .assert_ok()["search_categories"]["room_events"]
        .clone()
}

fn bodies(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["result"]["content"]["body"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn search_matches_every_word_as_a_prefix_ignoring_case() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let landed = send_text(&alice, &room, "The Martians have landed!").await;
    send_text(&alice, &room, "Men are here").await;
    send_text(&alice, &room, "tea time").await;

    let v = search(&alice, json!({"search_term": "martian"})).await;
    assert_eq!(v["count"], 1);
    let result = &v["results"][0];
    assert_eq!(result["result"]["event_id"], landed.as_str());
    assert_eq!(result["result"]["room_id"], room.as_str());
    assert_eq!(result["result"]["type"], "m.room.message");
    assert!(result["rank"].as_f64().is_some_and(|r| r > 0.0));
    let highlights: Vec<&str> = v["highlights"]
        .as_array()
        .expect("highlights")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(highlights.contains(&"martians"), "{highlights:?}");

    assert_eq!(
        bodies(&search(&alice, json!({"search_term": "LANDED martians"})).await),
        vec!["The Martians have landed!"]
    );
    let none = search(&alice, json!({"search_term": "martians tea"})).await;
    assert_eq!(none["count"], 0);
    assert!(bodies(&none).is_empty());
    // A term with no words finds nothing rather than everything.
    assert_eq!(
        search(&alice, json!({"search_term": "?!"})).await["count"],
        0
    );
}

#[tokio::test]
async fn search_covers_room_names_and_topics_and_keys_narrow_it() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    create_room(
        &alice,
        json!({"name": "Garden party", "topic": "Roses and tulips"}),
    )
    .await;
    let v = search(&alice, json!({"search_term": "garden"})).await;
    assert_eq!(v["results"][0]["result"]["type"], "m.room.name");
    let v = search(
        &alice,
        json!({"search_term": "tulips", "keys": ["content.topic"]}),
    )
    .await;
    assert_eq!(v["results"][0]["result"]["type"], "m.room.topic");
    assert_eq!(
        search(
            &alice,
            json!({"search_term": "garden", "keys": ["content.body"]})
        )
        .await["count"],
        0
    );
}

#[tokio::test]
async fn search_only_covers_rooms_the_caller_is_joined_to() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let secret = create_room(&alice, json!({"preset": "public_chat"})).await;
    send_text(&alice, &secret, "the password is swordfish").await;
    let shared = create_room(&bob, json!({})).await;
    send_text(&bob, &shared, "swordfish for dinner").await;
    assert_eq!(
        bodies(&search(&bob, json!({"search_term": "swordfish"})).await),
        vec!["swordfish for dinner"]
    );
    // Not even a room filter naming the other room lets it in.
    let v = search(
        &bob,
        json!({"search_term": "swordfish", "filter": {"rooms": [secret]}}),
    )
    .await;
    assert_eq!(v["count"], 0);
    // Once joined (shared history), the room is searched; once left, it is not.
    join(&bob, &secret).await;
    assert_eq!(
        search(&bob, json!({"search_term": "password"})).await["count"],
        1
    );
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&secret)),
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(
        search(&bob, json!({"search_term": "password"})).await["count"],
        0
    );
}

#[tokio::test]
async fn search_respects_history_visibility() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    send_text(&alice, &room, "secret plan before bob").await;
    join(&bob, &room).await;
    send_text(&alice, &room, "secret party after bob").await;
    let v = search(&bob, json!({"search_term": "secret"})).await;
    assert_eq!(bodies(&v), vec!["secret party after bob"]);
    assert_eq!(v["count"], 1, "hidden events are not counted either");
    // Context does not reveal the hidden event.
    let ctx = &search(
        &bob,
        json!({"search_term": "party", "event_context": {"before_limit": 5}}),
    )
    .await["results"][0]["context"];
    let before = ctx["events_before"].as_array().cloned().unwrap_or_default();
    assert!(
        before
            .iter()
            .all(|e| e["content"]["body"] != "secret plan before bob"),
        "{before:?}"
    );
    assert_eq!(
        search(&alice, json!({"search_term": "secret"})).await["count"],
        2
    );
}

async fn redact(c: &TestClient, room: &str, id: &str) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/r1",
            enc(room),
            enc(id)
        ),
        json!({}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn redacted_events_are_no_longer_found() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let id = send_text(&alice, &room, "oops my credit card number").await;
    assert_eq!(
        search(&alice, json!({"search_term": "credit"})).await["count"],
        1
    );
    redact(&alice, &room, &id).await;
    assert_eq!(
        search(&alice, json!({"search_term": "credit"})).await["count"],
        0
    );
}

#[tokio::test]
async fn an_event_redacted_before_it_is_indexed_is_never_found() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    let id = send_text(&alice, &room, "oops my credit card number").await;
    redact(&alice, &room, &id).await;
    assert_eq!(
        search(&alice, json!({"search_term": "credit"})).await["count"],
        0
    );
    assert_eq!(postings(&hs).await, 0, "nothing of it was indexed");
}

/// Rows in the search index.
async fn postings(hs: &hearth_core::Homeserver) -> usize {
    hs.store
        .scan(
            "search",
            hearth_core::storage::KeyRange::all(),
            hearth_core::storage::Direction::Forward,
            usize::MAX,
        )
        .await
        .expect("scan")
        .len()
}

#[tokio::test]
async fn the_index_follows_the_timeline_and_a_search_brings_it_up_to_date() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    // More than one indexing chunk, so that catching up takes several writes.
    let n = hearth_core::room::indexer::CHUNK + 10;
    for i in 0..n {
        send_text(&alice, &room, &format!("backlog item{i}")).await;
    }
    assert_eq!(postings(&hs).await, 0, "sending writes no postings");
    let found = search(&alice, json!({"search_term": "backlog"})).await;
    assert_eq!(found["count"], n);
    // Two words per message.
    assert_eq!(postings(&hs).await, 2 * n);
    // The last one, indexed by the last chunk (no other word has it as a prefix).
    let last = format!("item{}", n - 1);
    let one = search(&alice, json!({"search_term": last})).await;
    assert_eq!(bodies(&one), vec![format!("backlog {last}")]);
}

#[tokio::test]
async fn the_background_indexer_catches_up_once_writes_are_quiet() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "quiet afternoon").await;
    let indexer = hearth_core::room::indexer::run(hs.clone());
    let check = async {
        for _ in 0..100 {
            if postings(&hs).await == 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the indexer did not index the message");
    };
    futures::pin_mut!(indexer);
    futures::future::select(indexer, Box::pin(check)).await;
}

#[tokio::test]
async fn recent_order_pages_newest_first() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    for text in ["cat one", "cat two", "dog", "cat three"] {
        send_text(&alice, &room, text).await;
    }
    let criteria = json!({"search_term": "cat", "order_by": "recent", "filter": {"limit": 2}});
    let p1 = search(&alice, criteria.clone()).await;
    assert_eq!(bodies(&p1), vec!["cat three", "cat two"]);
    assert_eq!(p1["count"], 3);
    let next = p1["next_batch"].as_str().expect("next_batch").to_owned();
    let p2 = search_page(&alice, criteria.clone(), &next).await;
    assert_eq!(bodies(&p2), vec!["cat one"]);
    assert!(p2.get("next_batch").is_none());
    // A recent token does not fit a rank search.
    alice
        .post(
            &format!("{SEARCH}?next_batch={}", enc(&next)),
            json!({"search_categories": {"room_events": {"search_term": "cat"}}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn search_examines_a_bounded_number_of_candidates_and_pages_past_them() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "public_chat"})).await;
    join(&bob, &room).await;
    for i in 0..3 {
        send_text(&bob, &room, &format!("zebra from bob {i}")).await;
    }
    // More newer candidates than one request examines (500), none of which pass the filter.
    for i in 0..510 {
        send_text(&alice, &room, &format!("zebra {i}")).await;
    }
    let criteria =
        json!({"search_term": "zebra", "order_by": "recent", "filter": {"senders": [bob.user_id]}});
    let started = std::time::Instant::now();
    let p1 = search(&alice, criteria.clone()).await;
    let took = started.elapsed();
    assert!(
        bodies(&p1).is_empty(),
        "the first 500 candidates are all alice's"
    );
    let next = p1["next_batch"]
        .as_str()
        .expect("the unexamined rest is one page away")
        .to_owned();
    let p2 = search_page(&alice, criteria, &next).await;
    assert_eq!(
        bodies(&p2),
        vec!["zebra from bob 2", "zebra from bob 1", "zebra from bob 0"]
    );
    assert!(p2.get("next_batch").is_none());
    eprintln!("one search request over 500 examined candidates: {took:?}");

    // Without the filter, every match is reachable page by page, newest first.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let criteria =
            json!({"search_term": "zebra", "order_by": "recent", "filter": {"limit": 50}});
        let page = match &next {
            None => search(&alice, criteria).await,
            Some(t) => search_page(&alice, criteria, t).await,
        };
        seen.extend(bodies(&page));
        match page["next_batch"].as_str() {
            Some(t) => next = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 513);
    assert_eq!(seen.first().map(String::as_str), Some("zebra 509"));
    assert_eq!(seen.last().map(String::as_str), Some("zebra from bob 0"));
}

#[tokio::test]
async fn rank_order_puts_the_closest_match_first_and_pages_stay_stable() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "apple").await;
    send_text(&alice, &room, "apple banana cherry date").await;
    send_text(&alice, &room, "apple banana").await;
    let criteria = json!({"search_term": "apple", "order_by": "rank", "filter": {"limit": 2}});
    let p1 = search(&alice, criteria.clone()).await;
    assert_eq!(bodies(&p1), vec!["apple", "apple banana"]);
    let ranks: Vec<f64> = p1["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["rank"].as_f64())
        .collect();
    assert!(ranks[0] > ranks[1], "{ranks:?}");
    let next = p1["next_batch"].as_str().expect("next_batch").to_owned();
    // A newer, better match does not shift the pages already handed out.
    send_text(&alice, &room, "apple apple").await;
    let p2 = search_page(&alice, criteria, &next).await;
    assert_eq!(bodies(&p2), vec!["apple banana cherry date"]);
    assert!(p2.get("next_batch").is_none());
}

#[tokio::test]
async fn the_filter_narrows_senders_types_and_rooms() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let r1 = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "lunch room"}),
    )
    .await;
    let r2 = create_room(&alice, json!({})).await;
    join(&bob, &r1).await;
    send_text(&alice, &r1, "lunch at noon").await;
    send_text(&bob, &r1, "lunch at one").await;
    send_text(&alice, &r2, "lunch tomorrow").await;
    let only_bob = search(
        &alice,
        json!({"search_term": "lunch", "filter": {"senders": [bob.user_id]}}),
    )
    .await;
    assert_eq!(bodies(&only_bob), vec!["lunch at one"]);
    let only_r2 = search(
        &alice,
        json!({"search_term": "lunch", "filter": {"rooms": [r2]}}),
    )
    .await;
    assert_eq!(bodies(&only_r2), vec!["lunch tomorrow"]);
    let not_r1 = search(
        &alice,
        json!({"search_term": "lunch", "filter": {"not_rooms": [r1]}}),
    )
    .await;
    assert_eq!(bodies(&not_r1), vec!["lunch tomorrow"]);
    let names = search(
        &alice,
        json!({"search_term": "lunch", "filter": {"types": ["m.room.name"]}}),
    )
    .await;
    assert_eq!(names["count"], 1);
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
}

#[tokio::test]
async fn context_brings_surrounding_events_tokens_and_profiles() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({"displayname": "Alice A."}),
        )
        .await
        .assert_ok();
    let room = create_room(&alice, json!({})).await;
    send_text(&alice, &room, "before it").await;
    send_text(&alice, &room, "the needle").await;
    send_text(&alice, &room, "after it").await;
    send_text(&alice, &room, "long after").await;
    let v = search(
        &alice,
        json!({"search_term": "needle", "event_context": {"before_limit": 1, "after_limit": 2, "include_profile": true}}),
    )
    .await;
    let ctx = &v["results"][0]["context"];
    let before: Vec<&str> = ctx["events_before"]
        .as_array()
        .expect("before")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    let after: Vec<&str> = ctx["events_after"]
        .as_array()
        .expect("after")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert_eq!(before, vec!["before it"]);
    assert_eq!(after, vec!["after it", "long after"]);
    assert!(ctx["start"].is_string() && ctx["end"].is_string());
    assert_eq!(
        ctx["profile_info"][&alice.user_id]["displayname"],
        "Alice A."
    );
    // The tokens page /messages from the context's edges.
    let start = ctx["start"].as_str().expect("start");
    let older = alice
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1&from={}",
            enc(&room),
            enc(start)
        ))
        .await;
    assert_ne!(
        older.assert_ok()["chunk"][0]["content"]["body"],
        "before it"
    );
}

#[tokio::test]
async fn include_state_and_groups_describe_the_result_rooms() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r1 = create_room(&alice, json!({"name": "first"})).await;
    let r2 = create_room(&alice, json!({"name": "second"})).await;
    send_text(&alice, &r1, "kettle on").await;
    send_text(&alice, &r2, "kettle off").await;
    send_text(&alice, &r1, "kettle boiled").await;
    let v = search(
        &alice,
        json!({
            "search_term": "kettle",
            "order_by": "recent",
            "include_state": true,
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }),
    )
    .await;
    assert_eq!(bodies(&v), vec!["kettle boiled", "kettle off", "kettle on"]);
    let state = v["state"][&r1].as_array().expect("state of r1");
    assert!(
        state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "first")
    );
    assert!(v["state"][&r2].is_array());
    let g1 = &v["groups"]["room_id"][&r1];
    assert_eq!(g1["order"], 1);
    assert_eq!(g1["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["groups"]["room_id"][&r2]["order"], 2);
    assert_eq!(
        v["groups"]["sender"][&alice.user_id]["results"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn a_groups_next_batch_continues_within_the_group() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let r1 = create_room(&alice, json!({})).await;
    let r2 = create_room(&alice, json!({})).await;
    send_text(&alice, &r1, "walrus one").await;
    send_text(&alice, &r2, "walrus two").await;
    send_text(&alice, &r1, "walrus three").await;
    let criteria = json!({"search_term": "walrus", "order_by": "recent", "filter": {"limit": 1}, "groupings": {"group_by": [{"key": "room_id"}]}});
    let p1 = search(&alice, criteria.clone()).await;
    assert_eq!(bodies(&p1), vec!["walrus three"]);
    let group_next = p1["groups"]["room_id"][&r1]["next_batch"]
        .as_str()
        .expect("group next_batch")
        .to_owned();
    let p2 = search_page(&alice, criteria, &group_next).await;
    assert_eq!(
        bodies(&p2),
        vec!["walrus one"],
        "the group's page skips other rooms"
    );
}

#[tokio::test]
async fn search_refuses_bad_requests() {
    let (hs, _) = test_server(12).await;
    let alice = TestClient::register(&hs, "alice").await;
    TestClient::anonymous(&hs)
        .post(
            SEARCH,
            json!({"search_categories": {"room_events": {"search_term": "x"}}}),
        )
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .request_raw(Method::POST, SEARCH, b"{nope".to_vec(), "application/json")
        .await
        .assert_error(400, "M_NOT_JSON");
    alice
        .post(SEARCH, json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(SEARCH, json!({"search_categories": {"room_events": {}}}))
        .await
        .assert_error(400, "M_BAD_JSON");
    let bad_order = alice.post(SEARCH, json!({"search_categories": {"room_events": {"search_term": "x", "order_by": "loudest"}}})).await;
    bad_order.assert_error(400, "M_INVALID_PARAM");
    let bad_key = alice.post(SEARCH, json!({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.secret"]}}})).await;
    bad_key.assert_error(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("{SEARCH}?next_batch=garbage"),
            json!({"search_categories": {"room_events": {"search_term": "x"}}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    // No category asked for: nothing to answer.
    let empty = alice.post(SEARCH, json!({"search_categories": {}})).await;
    assert_eq!(empty.assert_ok()["search_categories"], json!({}));
}

// ---------------------------------------------------------------------------------------------
// User directory

const USER_DIRECTORY: &str = "/_matrix/client/v3/user_directory/search";

async fn find(c: &TestClient, term: &str, limit: Option<u64>) -> TestResponse {
    let mut body = json!({"search_term": term});
    if let Some(l) = limit {
        body["limit"] = json!(l);
    }
    c.post(USER_DIRECTORY, body).await
}

fn found_ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["user_id"].as_str().map(str::to_owned))
        .collect()
}

async fn set_name(c: &TestClient, name: &str) {
    c.put(
        &format!("/_matrix/client/v3/profile/{}/displayname", enc(&c.user_id)),
        json!({"displayname": name}),
    )
    .await
    .assert_ok();
}

#[tokio::test]
async fn directory_finds_room_mates_by_id_or_display_name_ignoring_case() {
    let (hs, _) = test_server(20).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    set_name(&bob, "Bobby Tables").await;
    bob.put(
        &format!(
            "/_matrix/client/v3/profile/{}/avatar_url",
            enc(&bob.user_id)
        ),
        json!({"avatar_url": "mxc://x.org/bob"}),
    )
    .await
    .assert_ok();
    let room = create_room(&alice, json!({})).await;
    invite(&alice, &room, &bob.user_id).await;
    join(&bob, &room).await;

    let v = find(&alice, "TABLES", None).await.assert_ok().clone();
    assert_eq!(found_ids(&v), vec![bob.user_id.clone()]);
    assert_eq!(v["results"][0]["display_name"], "Bobby Tables");
    assert_eq!(v["results"][0]["avatar_url"], "mxc://x.org/bob");
    assert_eq!(v["limited"], false);
    assert_eq!(
        found_ids(find(&alice, "@BOB:", None).await.assert_ok()),
        vec![bob.user_id.clone()]
    );
    assert!(found_ids(find(&alice, "nobody-like-this", None).await.assert_ok()).is_empty());
}

#[tokio::test]
async fn directory_includes_public_room_members_but_not_strangers() {
    let (hs, _) = test_server(21).await;
    let alice = TestClient::register(&hs, "alice").await;
    let carol = TestClient::register(&hs, "carol").await;
    let dave = TestClient::register(&hs, "dave").await;
    let erin = TestClient::register(&hs, "erin").await;
    for (c, name) in [
        (&carol, "Carol Public"),
        (&dave, "Dave Private"),
        (&erin, "Erin Gone"),
    ] {
        set_name(c, name).await;
    }
    create_room(&carol, json!({"preset": "public_chat"})).await;
    create_room(&dave, json!({"preset": "private_chat"})).await;
    // Erin was in a public room but left it.
    let left = create_room(&erin, json!({"preset": "public_chat"})).await;
    erin.post(
        &format!("/_matrix/client/v3/rooms/{}/leave", enc(&left)),
        json!({}),
    )
    .await
    .assert_ok();

    assert_eq!(
        found_ids(find(&alice, "carol", None).await.assert_ok()),
        vec![carol.user_id.clone()]
    );
    assert!(
        found_ids(find(&alice, "dave", None).await.assert_ok()).is_empty(),
        "private room members stay hidden"
    );
    assert!(
        found_ids(find(&alice, "erin", None).await.assert_ok()).is_empty(),
        "former members stay hidden"
    );
    // Sharing a private room makes Dave findable.
    let room = create_room(&dave, json!({})).await;
    invite(&dave, &room, &alice.user_id).await;
    join(&alice, &room).await;
    assert_eq!(
        found_ids(find(&alice, "dave", None).await.assert_ok()),
        vec![dave.user_id.clone()]
    );
}

#[tokio::test]
async fn directory_ranks_room_mates_first_and_reports_limited() {
    let (hs, _) = test_server(22).await;
    let alice = TestClient::register(&hs, "alice").await;
    let sam1 = TestClient::register(&hs, "sam1").await;
    let sam2 = TestClient::register(&hs, "sam2").await;
    let sam3 = TestClient::register(&hs, "sam3").await;
    // sam1 and sam2 are only in a public room; sam3 shares a private room with alice.
    let public = create_room(&sam1, json!({"preset": "public_chat"})).await;
    join(&sam2, &public).await;
    let private = create_room(&sam3, json!({})).await;
    invite(&sam3, &private, &alice.user_id).await;
    join(&alice, &private).await;

    let all = find(&alice, "sam", None).await.assert_ok().clone();
    assert_eq!(
        found_ids(&all),
        vec![
            sam3.user_id.clone(),
            sam1.user_id.clone(),
            sam2.user_id.clone()
        ]
    );
    assert_eq!(all["limited"], false);
    let two = find(&alice, "sam", Some(2)).await.assert_ok().clone();
    assert_eq!(
        found_ids(&two),
        vec![sam3.user_id.clone(), sam1.user_id.clone()]
    );
    assert_eq!(two["limited"], true);
}

#[tokio::test]
async fn directory_refuses_bad_requests() {
    let (hs, _) = test_server(23).await;
    let alice = TestClient::register(&hs, "alice").await;
    TestClient::anonymous(&hs)
        .post(USER_DIRECTORY, json!({"search_term": "a"}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .post(USER_DIRECTORY, json!({}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .post(USER_DIRECTORY, json!({"search_term": "a", "limit": -1}))
        .await
        .assert_error(400, "M_BAD_JSON");
    alice
        .request_raw(
            Method::POST,
            USER_DIRECTORY,
            b"nope".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
}

// ---------------------------------------------------------------------------------------------
// Responses against the spec's own schemas

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

#[cfg(not(target_arch = "wasm32"))]
#[tokio::test]
async fn search_and_directory_responses_match_the_spec_schemas() {
    let spec = spec::Spec::load();
    let (hs, _) = test_server(30).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    set_name(&bob, "Bob B.").await;
    let room = create_room(
        &alice,
        json!({"preset": "public_chat", "name": "spec room", "topic": "spec topic"}),
    )
    .await;
    join(&bob, &room).await;
    for text in ["spec one", "spec two", "spec three"] {
        send_text(&alice, &room, text).await;
    }
    let mut calls = Vec::new();
    for order in ["rank", "recent"] {
        let body = json!({"search_categories": {"room_events": {
            "search_term": "spec",
            "order_by": order,
            "filter": {"limit": 2},
            "include_state": true,
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
        }}});
        let r = alice.post(SEARCH, body).await;
        assert!(
            r.body["search_categories"]["room_events"]["next_batch"].is_string(),
            "{}",
            r.body
        );
        calls.push((Method::POST, SEARCH.to_owned(), r));
    }
    calls.push((
        Method::POST,
        SEARCH.to_owned(),
        alice.post(SEARCH, json!({"search_categories": {}})).await,
    ));
    let bad = format!("{SEARCH}?next_batch=garbage");
    calls.push((
        Method::POST,
        bad.clone(),
        alice
            .post(
                &bad,
                json!({"search_categories": {"room_events": {"search_term": "x"}}}),
            )
            .await,
    ));
    calls.push((
        Method::POST,
        USER_DIRECTORY.to_owned(),
        find(&alice, "bob", None).await,
    ));
    calls.push((
        Method::POST,
        USER_DIRECTORY.to_owned(),
        alice.post(USER_DIRECTORY, json!({})).await,
    ));
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
