//! Room tagging: the tag endpoints, their `m.tag` room account data and its delivery by `/sync`.

use hearth_core::testing::{TestClient, enc, test_server};
use http::Method;
use serde_json::{Value, json};

async fn create_room(c: &TestClient) -> String {
    let r = c.post("/_matrix/client/v3/createRoom", json!({})).await;
    r.assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned()
}

fn tags_path(user: &str, room: &str) -> String {
    format!(
        "/_matrix/client/v3/user/{}/rooms/{}/tags",
        enc(user),
        enc(room)
    )
}

fn tag_path(user: &str, room: &str, tag: &str) -> String {
    format!("{}/{}", tags_path(user, room), enc(tag))
}

async fn sync(c: &TestClient, since: Option<&str>) -> Value {
    let mut path = "/_matrix/client/v3/sync?timeout=0".to_owned();
    if let Some(s) = since {
        path.push_str(&format!("&since={s}"));
    }
    c.get(&path).await.assert_ok().clone()
}

/// The `m.tag` events in the room's account data section of a sync response.
fn synced_tags(sync: &Value, room: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["account_data"]["events"]
        .as_array()
        .map(|evs| {
            evs.iter()
                .filter(|e| e["type"] == "m.tag")
                .map(|e| e["content"]["tags"].clone())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn tags_put_are_listed_with_their_order() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(listed.assert_ok(), &json!({"tags": {}}));

    alice
        .put(
            &tag_path(&alice.user_id, &room, "m.favourite"),
            json!({"order": 0.25}),
        )
        .await
        .assert_ok();
    alice
        .put(&tag_path(&alice.user_id, &room, "u.work"), json!({}))
        .await
        .assert_ok();
    alice
        .put(
            &tag_path(&alice.user_id, &room, "m.lowpriority"),
            json!({"order": 1}),
        )
        .await
        .assert_ok();
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(
        listed.assert_ok(),
        &json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}, "m.lowpriority": {"order": 1.0}}})
    );
}

#[tokio::test]
async fn putting_a_tag_again_replaces_its_order() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    alice
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            json!({"order": 0.1}),
        )
        .await
        .assert_ok();
    alice
        .put(
            &tag_path(&alice.user_id, &room, "u.work"),
            json!({"order": 0.9}),
        )
        .await
        .assert_ok();
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(
        listed.assert_ok()["tags"],
        json!({"u.work": {"order": 0.9}})
    );
}

#[tokio::test]
async fn delete_removes_only_that_tag() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    alice
        .put(&tag_path(&alice.user_id, &room, "m.favourite"), json!({}))
        .await
        .assert_ok();
    alice
        .put(
            &tag_path(&alice.user_id, &room, "u.later"),
            json!({"order": 0.5}),
        )
        .await
        .assert_ok();
    alice
        .delete(&tag_path(&alice.user_id, &room, "m.favourite"))
        .await
        .assert_ok();
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(
        listed.assert_ok()["tags"],
        json!({"u.later": {"order": 0.5}})
    );
}

#[tokio::test]
async fn tags_are_stored_as_m_tag_room_account_data() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    alice
        .put(
            &tag_path(&alice.user_id, &room, "m.favourite"),
            json!({"order": 0.5}),
        )
        .await
        .assert_ok();
    let path = format!(
        "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.tag",
        enc(&alice.user_id),
        enc(&room)
    );
    assert_eq!(
        alice.get(&path).await.assert_ok(),
        &json!({"tags": {"m.favourite": {"order": 0.5}}})
    );
    // The global account data of the same type is untouched.
    let global = format!(
        "/_matrix/client/v3/user/{}/account_data/m.tag",
        enc(&alice.user_id)
    );
    alice.get(&global).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn sync_delivers_each_tag_change_once() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let first = sync(&alice, None).await;
    assert!(synced_tags(&first, &room).is_empty());
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    alice
        .put(
            &tag_path(&alice.user_id, &room, "m.favourite"),
            json!({"order": 0.2}),
        )
        .await
        .assert_ok();
    let second = sync(&alice, Some(&since)).await;
    assert_eq!(
        synced_tags(&second, &room),
        vec![json!({"m.favourite": {"order": 0.2}})]
    );
    let since = second["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();

    // Nothing changed: the tags are not sent again.
    let quiet = sync(&alice, Some(&since)).await;
    assert!(synced_tags(&quiet, &room).is_empty());

    alice
        .delete(&tag_path(&alice.user_id, &room, "m.favourite"))
        .await
        .assert_ok();
    let third = sync(&alice, Some(&since)).await;
    assert_eq!(synced_tags(&third, &room), vec![json!({})]);

    // An initial sync carries the current tags.
    alice
        .put(&tag_path(&alice.user_id, &room, "u.x"), json!({}))
        .await
        .assert_ok();
    let initial = sync(&alice, None).await;
    assert_eq!(synced_tags(&initial, &room), vec![json!({"u.x": {}})]);
}

#[tokio::test]
async fn deleting_an_absent_tag_succeeds_without_a_sync_change() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let since = sync(&alice, None).await["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    alice
        .delete(&tag_path(&alice.user_id, &room, "u.never"))
        .await
        .assert_ok();
    let after = sync(&alice, Some(&since)).await;
    assert!(synced_tags(&after, &room).is_empty());
    assert_eq!(
        after["next_batch"],
        since.as_str(),
        "no stream position was used"
    );
}

#[tokio::test]
async fn another_users_tags_are_forbidden() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(&alice).await;
    alice
        .put(&tag_path(&alice.user_id, &room, "u.secret"), json!({}))
        .await
        .assert_ok();
    bob.get(&tags_path(&alice.user_id, &room))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.put(&tag_path(&alice.user_id, &room, "u.bob"), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.delete(&tag_path(&alice.user_id, &room, "u.secret"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(listed.assert_ok()["tags"], json!({"u.secret": {}}));
    // Bob's own tags on the same room are separate from Alice's.
    let own = bob.get(&tags_path(&bob.user_id, &room)).await;
    assert_eq!(own.assert_ok()["tags"], json!({}));
}

#[tokio::test]
async fn tag_endpoints_need_an_access_token() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let anon = TestClient::anonymous(&hs);
    anon.get(&tags_path(&alice.user_id, &room))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.put(&tag_path(&alice.user_id, &room, "u.x"), json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    anon.delete(&tag_path(&alice.user_id, &room, "u.x"))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn order_outside_zero_to_one_is_invalid() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    for order in [json!(1.5), json!(-0.1), json!(2)] {
        alice
            .put(
                &tag_path(&alice.user_id, &room, "u.x"),
                json!({ "order": order }),
            )
            .await
            .assert_error(400, "M_INVALID_PARAM");
    }
    for order in [json!(0), json!(1)] {
        alice
            .put(
                &tag_path(&alice.user_id, &room, "u.x"),
                json!({ "order": order }),
            )
            .await
            .assert_ok();
    }
}

#[tokio::test]
async fn tag_name_longer_than_255_bytes_is_invalid() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let long = format!("u.{}", "é".repeat(127)); // 2 + 254 bytes
    alice
        .put(&tag_path(&alice.user_id, &room, &long), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let fits = format!("u.{}", "a".repeat(253));
    alice
        .put(&tag_path(&alice.user_id, &room, &fits), json!({}))
        .await
        .assert_ok();
}

#[tokio::test]
async fn malformed_tag_bodies_are_refused() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let path = tag_path(&alice.user_id, &room, "u.x");
    alice
        .request_raw(
            Method::PUT,
            &path,
            b"{not json".to_vec(),
            "application/json",
        )
        .await
        .assert_error(400, "M_NOT_JSON");
    alice
        .put(&path, json!({"order": "first"}))
        .await
        .assert_error(400, "M_BAD_JSON");
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(listed.assert_ok()["tags"], json!({}));
}

#[tokio::test]
async fn concurrent_tag_puts_are_all_kept() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let paths: Vec<String> = ["u.a", "u.b", "u.c"]
        .iter()
        .map(|t| tag_path(&alice.user_id, &room, t))
        .collect();
    let (a, b, c) = futures::join!(
        alice.put(&paths[0], json!({})),
        alice.put(&paths[1], json!({})),
        alice.put(&paths[2], json!({})),
    );
    for r in [a, b, c] {
        r.assert_ok();
    }
    let listed = alice.get(&tags_path(&alice.user_id, &room)).await;
    assert_eq!(
        listed.assert_ok()["tags"],
        json!({"u.a": {}, "u.b": {}, "u.c": {}})
    );
}

#[tokio::test]
async fn r0_paths_serve_tags_too() {
    let (hs, _) = test_server(1).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = create_room(&alice).await;
    let path = format!(
        "/_matrix/client/r0/user/{}/rooms/{}/tags/m.favourite",
        enc(&alice.user_id),
        enc(&room)
    );
    alice.put(&path, json!({"order": 0.3})).await.assert_ok();
    let listed = alice
        .get(&format!(
            "/_matrix/client/r0/user/{}/rooms/{}/tags",
            enc(&alice.user_id),
            enc(&room)
        ))
        .await;
    assert_eq!(
        listed.assert_ok()["tags"],
        json!({"m.favourite": {"order": 0.3}})
    );
}

#[cfg(not(target_arch = "wasm32"))]
use crate::spec;

/// The tag endpoints' answers checked against the spec's schemas.
#[cfg(not(target_arch = "wasm32"))]
mod schemas {
    use super::*;

    #[tokio::test]
    async fn tag_responses_match_the_spec_schemas() {
        let (hs, _) = test_server(1).await;
        let alice = TestClient::register(&hs, "alice").await;
        let room = create_room(&alice).await;
        let spec = spec::Spec::load();
        let mut problems = Vec::new();
        let calls = [
            (
                Method::PUT,
                tag_path(&alice.user_id, &room, "m.favourite"),
                Some(json!({"order": 0.5})),
            ),
            (
                Method::PUT,
                tag_path(&alice.user_id, &room, "u.work"),
                Some(json!({})),
            ),
            (Method::GET, tags_path(&alice.user_id, &room), None),
            (
                Method::DELETE,
                tag_path(&alice.user_id, &room, "u.work"),
                None,
            ),
            (Method::GET, tags_path(&alice.user_id, &room), None),
        ];
        for (method, path, body) in calls {
            let r = alice.request(method.clone(), &path, body).await;
            r.assert_ok();
            if let Err(v) = spec.validate(&method, &path, 200, &r.raw) {
                problems.extend(v.iter().map(ToString::to_string));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
