//! Spaces (`GET /rooms/{roomId}/hierarchy`) and room previews (`GET /room_summary/{roomIdOrAlias}`).

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use serde_json::{Value, json};

async fn create_room(c: &TestClient, body: Value) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", body).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

async fn space(c: &TestClient, name: &str) -> String {
    create_room(
        c,
        json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}}),
    )
    .await
}

async fn public_room(c: &TestClient, name: &str) -> String {
    create_room(c, json!({"preset": "public_chat", "name": name})).await
}

async fn add_child(c: &TestClient, parent: &str, child: &str, content: Value) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/state/m.space.child/{}",
            enc(parent),
            enc(child)
        ),
        content,
    )
    .await
    .assert_ok();
}

fn via(c: &TestClient) -> Value {
    json!([c.hs.server_name().as_str()])
}

async fn hierarchy(c: &TestClient, room: &str, query: &str) -> TestResponse {
    c.get(&format!(
        "/_matrix/client/v1/rooms/{}/hierarchy{query}",
        enc(room)
    ))
    .await
}

fn room_ids(v: &Value) -> Vec<String> {
    v["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// S ─┬─ B (order "a")
///    ├─ A (order "b")
///    └─ T (space, no order) ── C
struct Tree {
    s: String,
    a: String,
    b: String,
    t: String,
    c: String,
}

async fn tree(alice: &TestClient) -> Tree {
    let s = space(alice, "Space S").await;
    let a = public_room(alice, "Room A").await;
    let b = public_room(alice, "Room B").await;
    let t = space(alice, "Subspace T").await;
    let c = public_room(alice, "Room C").await;
    add_child(alice, &s, &a, json!({"via": via(alice), "order": "b"})).await;
    add_child(
        alice,
        &s,
        &b,
        json!({"via": via(alice), "order": "a", "suggested": true}),
    )
    .await;
    add_child(alice, &s, &t, json!({"via": via(alice)})).await;
    add_child(alice, &t, &c, json!({"via": via(alice)})).await;
    Tree { s, a, b, t, c }
}

#[tokio::test]
async fn hierarchy_walks_the_space_depth_first_in_the_spec_order() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let t = tree(&alice).await;
    let r = hierarchy(&alice, &t.s, "").await;
    let v = r.assert_ok();
    assert_eq!(
        room_ids(v),
        vec![
            t.s.clone(),
            t.b.clone(),
            t.a.clone(),
            t.t.clone(),
            t.c.clone()
        ]
    );
    assert!(v.get("next_batch").is_none());

    let root = &v["rooms"][0];
    assert_eq!(root["name"], "Space S");
    assert_eq!(root["room_type"], "m.space");
    assert_eq!(root["num_joined_members"], 1);
    assert_eq!(root["world_readable"], false);
    assert_eq!(root["guest_can_join"], false);
    assert_eq!(root["room_version"], "11");
    let children = root["children_state"].as_array().expect("children_state");
    assert_eq!(children.len(), 3);
    for ev in children {
        assert_eq!(ev["type"], "m.space.child");
        assert_eq!(ev["sender"], alice.user_id.as_str());
        assert!(ev["origin_server_ts"].is_u64(), "{ev}");
        assert!(ev["content"]["via"].is_array());
    }
    // A plain room has no children_state entries, but the key is there.
    let room_b = &v["rooms"][1];
    assert_eq!(room_b["children_state"], json!([]));
    assert!(room_b.get("room_type").is_none());
}

#[tokio::test]
async fn children_without_via_and_children_of_plain_rooms_are_ignored() {
    let (hs, _) = test_server(2).await;
    let alice = TestClient::register(&hs, "alice").await;
    let s = space(&alice, "S").await;
    let a = public_room(&alice, "A").await;
    let b = public_room(&alice, "B").await;
    let plain = public_room(&alice, "Plain").await;
    let under_plain = public_room(&alice, "Under plain").await;
    add_child(&alice, &s, &a, json!({"via": []})).await;
    add_child(&alice, &s, &b, json!({"suggested": true})).await;
    add_child(&alice, &s, &plain, json!({"via": via(&alice)})).await;
    add_child(&alice, &plain, &under_plain, json!({"via": via(&alice)})).await;
    let v = hierarchy(&alice, &s, "").await.assert_ok().clone();
    assert_eq!(room_ids(&v), vec![s.clone(), plain.clone()]);
    assert_eq!(
        v["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn max_depth_stops_the_walk() {
    let (hs, _) = test_server(3).await;
    let alice = TestClient::register(&hs, "alice").await;
    let t = tree(&alice).await;
    let v = hierarchy(&alice, &t.s, "?max_depth=0")
        .await
        .assert_ok()
        .clone();
    assert_eq!(room_ids(&v), vec![t.s.clone()]);
    let v = hierarchy(&alice, &t.s, "?max_depth=1")
        .await
        .assert_ok()
        .clone();
    assert_eq!(
        room_ids(&v),
        vec![t.s.clone(), t.b.clone(), t.a.clone(), t.t.clone()]
    );
}

#[tokio::test]
async fn suggested_only_keeps_suggested_children() {
    let (hs, _) = test_server(4).await;
    let alice = TestClient::register(&hs, "alice").await;
    let t = tree(&alice).await;
    let v = hierarchy(&alice, &t.s, "?suggested_only=true")
        .await
        .assert_ok()
        .clone();
    assert_eq!(room_ids(&v), vec![t.s.clone(), t.b.clone()]);
    let children = v["rooms"][0]["children_state"]
        .as_array()
        .expect("children_state");
    assert_eq!(children.len(), 1);
    assert_eq!(children[0]["state_key"], t.b.as_str());
}

#[tokio::test]
async fn hierarchy_paginates_with_next_batch() {
    let (hs, _) = test_server(5).await;
    let alice = TestClient::register(&hs, "alice").await;
    let t = tree(&alice).await;
    let p1 = hierarchy(&alice, &t.s, "?limit=2")
        .await
        .assert_ok()
        .clone();
    assert_eq!(room_ids(&p1), vec![t.s.clone(), t.b.clone()]);
    let next = p1["next_batch"].as_str().expect("next_batch").to_owned();
    let p2 = hierarchy(&alice, &t.s, &format!("?limit=2&from={}", enc(&next)))
        .await
        .assert_ok()
        .clone();
    assert_eq!(room_ids(&p2), vec![t.a.clone(), t.t.clone()]);
    let next = p2["next_batch"].as_str().expect("next_batch").to_owned();
    let p3 = hierarchy(&alice, &t.s, &format!("?limit=2&from={}", enc(&next)))
        .await
        .assert_ok()
        .clone();
    assert_eq!(room_ids(&p3), vec![t.c.clone()]);
    assert!(p3.get("next_batch").is_none());

    // The walk's parameters cannot change mid-way, and the token belongs to its root.
    hierarchy(
        &alice,
        &t.s,
        &format!("?limit=2&max_depth=1&from={}", enc(&next)),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    hierarchy(
        &alice,
        &t.s,
        &format!("?suggested_only=true&from={}", enc(&next)),
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
    hierarchy(&alice, &t.t, &format!("?from={}", enc(&next)))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    hierarchy(&alice, &t.s, "?from=garbage")
        .await
        .assert_error(400, "M_INVALID_PARAM");
    hierarchy(&alice, &t.s, "?limit=0")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn hierarchy_shows_only_rooms_the_caller_may_see() {
    let (hs, _) = test_server(6).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let s = space(&alice, "S").await;
    let secret = create_room(&alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    let readable = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let knockable = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let secret_space = create_room(
        &alice,
        json!({"preset": "private_chat", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let behind_secret = public_room(&alice, "Behind").await;
    for child in [&secret, &readable, &knockable, &secret_space] {
        add_child(&alice, &s, child, json!({"via": via(&alice)})).await;
    }
    add_child(
        &alice,
        &secret_space,
        &behind_secret,
        json!({"via": via(&alice)}),
    )
    .await;

    // Alice is in everything.
    assert_eq!(
        hierarchy(&alice, &s, "").await.assert_ok()["rooms"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    // Bob sees the public space, the world-readable and the knockable rooms, nothing behind
    // a room he may not see, and the space's children_state still lists every child.
    let v = hierarchy(&bob, &s, "").await.assert_ok().clone();
    let ids = room_ids(&v);
    assert!(
        ids.contains(&s) && ids.contains(&readable) && ids.contains(&knockable),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&secret) && !ids.contains(&secret_space) && !ids.contains(&behind_secret),
        "{ids:?}"
    );
    assert_eq!(
        v["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(4)
    );
    // A room he is invited to becomes visible.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&secret)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    assert!(room_ids(hierarchy(&bob, &s, "").await.assert_ok()).contains(&secret));
    // A private space he is not in is forbidden outright, and so is an unknown room.
    hierarchy(&bob, &secret_space, "")
        .await
        .assert_error(403, "M_FORBIDDEN");
    hierarchy(&bob, &format!("!unknown:{}", hs.server_name()), "")
        .await
        .assert_error(403, "M_FORBIDDEN");
    TestClient::anonymous(&hs)
        .get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&s)))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn banned_users_cannot_view_the_hierarchy() {
    let (hs, _) = test_server(7).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let s = space(&alice, "S").await;
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&s)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    hierarchy(&bob, &s, "")
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn restricted_children_are_visible_to_members_of_the_allowed_room() {
    let (hs, _) = test_server(8).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let s = space(&alice, "S").await;
    let r = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": s}]}}]}),
    )
    .await;
    add_child(&alice, &s, &r, json!({"via": via(&alice)})).await;
    assert!(!room_ids(hierarchy(&bob, &s, "").await.assert_ok()).contains(&r));
    bob.post(
        &format!("/_matrix/client/v3/rooms/{}/join", enc(&s)),
        json!({}),
    )
    .await
    .assert_ok();
    let v = hierarchy(&bob, &s, "").await.assert_ok().clone();
    let entry = v["rooms"]
        .as_array()
        .and_then(|rs| rs.iter().find(|e| e["room_id"] == r.as_str()))
        .expect("restricted room listed");
    assert_eq!(entry["join_rule"], "restricted");
    assert_eq!(entry["allowed_room_ids"], json!([s]));
}

#[tokio::test]
async fn space_parent_events_do_not_make_children_and_cycles_end() {
    let (hs, _) = test_server(9).await;
    let alice = TestClient::register(&hs, "alice").await;
    let s = space(&alice, "S").await;
    let t = space(&alice, "T").await;
    let orphan = public_room(&alice, "Orphan").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.space.parent/{}",
                enc(&orphan),
                enc(&s)
            ),
            json!({"via": via(&alice)}),
        )
        .await
        .assert_ok();
    add_child(&alice, &s, &t, json!({"via": via(&alice)})).await;
    add_child(&alice, &t, &s, json!({"via": via(&alice)})).await;
    let v = hierarchy(&alice, &s, "").await.assert_ok().clone();
    assert_eq!(room_ids(&v), vec![s.clone(), t.clone()]);
}

async fn summary(c: &TestClient, room: &str) -> TestResponse {
    c.get(&format!("/_matrix/client/v1/room_summary/{}", enc(room)))
        .await
}

#[tokio::test]
async fn summary_describes_a_room_by_id_or_alias_with_the_callers_membership() {
    let (hs, _) = test_server(10).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &alice,
        json!({
            "preset": "public_chat",
            "name": "Cheese",
            "topic": "Tasty",
            "room_alias_name": "cheese",
            "initial_state": [
                {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://example.org/abc"}},
                {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            ],
        }),
    )
    .await;
    let v = summary(&alice, &room).await.assert_ok().clone();
    assert_eq!(v["room_id"], room.as_str());
    assert_eq!(v["name"], "Cheese");
    assert_eq!(v["topic"], "Tasty");
    assert_eq!(
        v["canonical_alias"],
        format!("#cheese:{}", hs.server_name())
    );
    assert_eq!(v["avatar_url"], "mxc://example.org/abc");
    assert_eq!(v["num_joined_members"], 1);
    assert_eq!(v["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(v["room_version"], "11");
    assert_eq!(v["world_readable"], false);
    assert_eq!(v["guest_can_join"], false);
    assert_eq!(v["membership"], "join");
    // Public: join_rule "public" (or absent, which the spec reads as public).
    assert!(v.get("join_rule").is_none_or(|j| j == "public"));

    let by_alias = summary(&bob, &format!("#cheese:{}", hs.server_name()))
        .await
        .assert_ok()
        .clone();
    assert_eq!(by_alias["room_id"], room.as_str());
    assert_eq!(by_alias["membership"], "leave");

    // Unauthenticated callers may preview a public room, without a membership.
    let anon = summary(&TestClient::anonymous(&hs), &room)
        .await
        .assert_ok()
        .clone();
    assert_eq!(anon["name"], "Cheese");
    assert!(anon.get("membership").is_none());
}

#[tokio::test]
async fn summary_of_a_private_room_is_only_for_those_who_may_see_it() {
    let (hs, _) = test_server(11).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    summary(&bob, &room).await.assert_error(404, "M_NOT_FOUND");
    summary(&TestClient::anonymous(&hs), &room)
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    let v = summary(&bob, &room).await.assert_ok().clone();
    assert_eq!(v["membership"], "invite");
    assert_eq!(v["join_rule"], "invite");
    assert_eq!(v["name"], "Secret");
    // Banned: gone again.
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)),
            json!({"user_id": bob.user_id}),
        )
        .await
        .assert_ok();
    summary(&bob, &room).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn summary_of_unknown_rooms_and_aliases_is_not_found() {
    let (hs, _) = test_server(12).await;
    let bob = TestClient::register(&hs, "bob").await;
    summary(&bob, &format!("!nowhere:{}", hs.server_name()))
        .await
        .assert_error(404, "M_NOT_FOUND");
    summary(&bob, &format!("#nowhere:{}", hs.server_name()))
        .await
        .assert_error(404, "M_NOT_FOUND");
    bob.get("/_matrix/client/v1/room_summary/not-a-room")
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn summary_of_a_knockable_room_tracks_the_knock() {
    let (hs, _) = test_server(13).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let anon = summary(&TestClient::anonymous(&hs), &room)
        .await
        .assert_ok()
        .clone();
    assert_eq!(anon["join_rule"], "knock");
    assert_eq!(
        summary(&bob, &room).await.assert_ok()["membership"],
        "leave"
    );
    bob.post(
        &format!("/_matrix/client/v3/knock/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    assert_eq!(
        summary(&bob, &room).await.assert_ok()["membership"],
        "knock"
    );
}

// ---------------------------------------------------------------------------------------------
// Responses against the spec's own schemas

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

#[cfg(not(target_arch = "wasm32"))]
#[tokio::test]
async fn hierarchy_and_summary_responses_match_the_spec_schemas() {
    let spec = spec::Spec::load();
    let (hs, _) = test_server(30).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let t = tree(&alice).await;
    let restricted = create_room(
        &alice,
        json!({"preset": "private_chat", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": t.s}]}}]}),
    )
    .await;
    add_child(&alice, &t.s, &restricted, json!({"via": via(&alice)})).await;
    let private = create_room(&alice, json!({"preset": "private_chat"})).await;
    let h = |room: &str, q: &str| format!("/_matrix/client/v1/rooms/{}/hierarchy{q}", enc(room));
    let s = |room: &str| format!("/_matrix/client/v1/room_summary/{}", enc(room));
    let anon = TestClient::anonymous(&hs);
    let calls = vec![
        (h(&t.s, ""), alice.get(&h(&t.s, "")).await),
        (h(&t.s, "?limit=1"), alice.get(&h(&t.s, "?limit=1")).await),
        (h(&t.s, "?limit=0"), alice.get(&h(&t.s, "?limit=0")).await),
        (h(&private, ""), bob.get(&h(&private, "")).await),
        (s(&t.s), alice.get(&s(&t.s)).await),
        (s(&restricted), alice.get(&s(&restricted)).await),
        (s(&t.a), anon.get(&s(&t.a)).await),
        (s(&private), bob.get(&s(&private)).await),
    ];
    assert_eq!(calls[0].1.status, 200);
    assert_eq!(calls[3].1.status, 403);
    let mut problems = Vec::new();
    for (path, r) in &calls {
        if let Err(vs) = spec.validate(&http::Method::GET, path, r.status.as_u16(), &r.raw) {
            problems.extend(vs.iter().map(|v| format!("{v}")));
        }
    }
    assert!(
        problems.is_empty(),
        "spec violations:\n{}",
        problems.join("\n")
    );
}
