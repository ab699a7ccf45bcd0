//! The spec's limits, checked to the byte.
//!
//! Every limit the spec states (identifiers, event types, state keys, whole events, tags,
//! profile keys and profiles), plus this server's device-id cap, is accepted at exactly its size
//! and refused one byte past it with the spec's status and errcode.
#![cfg(not(target_arch = "wasm32"))]

use hearth_core::Homeserver;
use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::{Map, Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

async fn new_room(alice: &TestClient) -> String {
    let r = alice.post("/_matrix/client/v3/createRoom", json!({})).await;
    r.assert_ok()["room_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `m.` followed by `a`s, `len` bytes in all.
fn event_type_of(len: usize) -> String {
    format!("m.{}", "a".repeat(len - 2))
}

// ---------------------------------------------------------------------------------------------
// Limits

#[tokio::test]
async fn event_types_and_state_keys_stop_at_255_bytes() {
    let (hs, _) = test_server(301).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;

    let send = |t: &str, txn: &str| room_path(&room, &format!("send/{}/{txn}", enc(t)));
    alice
        .put(&send(&event_type_of(255), "t1"), json!({"body": "at"}))
        .await
        .assert_ok();
    alice
        .put(&send(&event_type_of(256), "t2"), json!({"body": "past"}))
        .await
        .assert_error(413, "M_TOO_LARGE");
    // The case: a 10 KB state key.
    let state = |t: &str, k: &str| room_path(&room, &format!("state/{}/{}", enc(t), enc(k)));
    alice
        .put(&state(&event_type_of(255), "k"), json!({}))
        .await
        .assert_ok();
    alice
        .put(&state(&event_type_of(256), "k"), json!({}))
        .await
        .assert_error(413, "M_TOO_LARGE");
    alice
        .put(&state("m.x", &"k".repeat(255)), json!({}))
        .await
        .assert_ok();
    for len in [256, 10 * 1024] {
        alice
            .put(&state("m.x", &"k".repeat(len)), json!({}))
            .await
            .assert_error(413, "M_TOO_LARGE");
    }
    // The state really is there under the 255-byte key and not under a longer one.
    alice.get(&state("m.x", &"k".repeat(255))).await.assert_ok();
    alice
        .get(&state("m.x", &"k".repeat(256)))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // Room creation's initial state goes through the same check.
    let create = |t: String, k: String| json!({ "initial_state": [{ "type": t, "state_key": k, "content": {} }] });
    for (body, ok) in [
        (create(event_type_of(255), "k".repeat(255)), true),
        (create(event_type_of(256), String::new()), false),
        (create("m.x".into(), "k".repeat(256)), false),
    ] {
        let r = alice.post("/_matrix/client/v3/createRoom", body).await;
        if ok {
            r.assert_ok();
        } else {
            r.assert_error(413, "M_TOO_LARGE");
        }
    }
}

/// The canonical JSON of the stored PDU (federation format, signatures included).
async fn pdu_size(hs: &Homeserver, event_id: &str) -> usize {
    let pdu = hearth_core::db::rooms::get_pdu(hs, event_id)
        .await
        .expect("reads the event")
        .expect("the event is stored");
    ruma::canonical_json::to_canonical_value(&pdu.json)
        .expect("a stored PDU is canonical JSON")
        .to_string()
        .len()
}

fn digits(n: u64) -> usize {
    n.to_string().len()
}

#[tokio::test]
async fn a_whole_event_may_be_65536_bytes_and_no_more() {
    let (hs, _) = test_server(302).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;
    let send = |txn: &str, len: usize| {
        let path = room_path(&room, &format!("send/m.room.message/{txn}"));
        let body = json!({ "msgtype": "m.text", "body": "a".repeat(len) });
        (path, body)
    };
    let depth = |id: String| {
        let hs = hs.clone();
        async move {
            let pdu = hearth_core::db::rooms::get_pdu(&hs, &id)
                .await
                .ok()
                .flatten();
            pdu.and_then(|p| p.json["depth"].as_u64()).unwrap_or(0)
        }
    };

    // A probe, then one event padded so that its PDU is exactly the limit: the next event has
    // the same keys and lengths but for the body and the depth.
    let (path, body) = send("probe", 1000);
    let probe = alice.put(&path, body).await.assert_ok()["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let probe_size = pdu_size(&hs, &probe).await;
    let d = depth(probe.clone()).await;
    let len = 1000 + 65_536 - probe_size - (digits(d + 1) - digits(d));
    let (path, body) = send("at", len);
    let at = alice.put(&path, body).await.assert_ok()["event_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(pdu_size(&hs, &at).await, 65_536);

    let d = depth(at).await;
    let past = len + 1 - (digits(d + 1) - digits(d));
    let (path, body) = send("past", past);
    alice
        .put(&path, body)
        .await
        .assert_error(413, "M_TOO_LARGE");
    let (path, body) = send("farpast", 70_000);
    alice
        .put(&path, body)
        .await
        .assert_error(413, "M_TOO_LARGE");
}

#[tokio::test]
async fn a_user_id_stops_at_255_bytes() {
    let (hs, _) = test_server(303).await;
    let anon = TestClient::anonymous(&hs);
    // `@` + localpart + `:` + server name.
    let at = 255 - 2 - hs.server_name().as_str().len();
    for (local, ok) in [("a".repeat(at), true), ("b".repeat(at + 1), false)] {
        let available = anon
            .get(&format!(
                "/_matrix/client/v3/register/available?username={local}"
            ))
            .await;
        let registered = anon
            .post(
                "/_matrix/client/v3/register",
                json!({ "username": local, "password": PASSWORD, "auth": { "type": "m.login.dummy" } }),
            )
            .await;
        if ok {
            available.assert_ok();
            let id = registered.assert_ok()["user_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(id.len(), 255);
        } else {
            available.assert_error(400, "M_INVALID_USERNAME");
            registered.assert_error(400, "M_INVALID_USERNAME");
        }
    }
}

#[tokio::test]
async fn a_room_alias_stops_at_255_bytes() {
    let (hs, _) = test_server(304).await;
    let alice = TestClient::register(&hs, "alice").await;
    let server = hs.server_name().to_string();
    // `#` + localpart + `:` + server name.
    let at = 255 - 2 - server.len();

    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "c".repeat(at) }),
        )
        .await
        .assert_ok();
    alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "d".repeat(at + 1) }),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");

    let room = new_room(&alice).await;
    let directory = |local: String| {
        format!(
            "/_matrix/client/v3/directory/room/{}",
            enc(&format!("#{local}:{server}"))
        )
    };
    alice
        .put(&directory("e".repeat(at)), json!({ "room_id": room }))
        .await
        .assert_ok();
    alice.get(&directory("e".repeat(at))).await.assert_ok();
    alice
        .put(&directory("f".repeat(at + 1)), json!({ "room_id": room }))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn a_device_id_stops_at_255_bytes() {
    let (hs, _) = test_server(305).await;
    let anon = TestClient::anonymous(&hs);
    TestClient::register(&hs, "alice").await;
    for (device, ok) in [("D".repeat(255), true), ("E".repeat(256), false)] {
        let login = anon
            .post(
                "/_matrix/client/v3/login",
                json!({
                    "type": "m.login.password",
                    "identifier": { "type": "m.id.user", "user": "alice" },
                    "password": PASSWORD,
                    "device_id": device,
                }),
            )
            .await;
        let register = anon
            .post(
                "/_matrix/client/v3/register",
                json!({
                    "username": format!("bob{}", device.len()),
                    "password": PASSWORD,
                    "device_id": device,
                    "auth": { "type": "m.login.dummy" },
                }),
            )
            .await;
        if ok {
            assert_eq!(login.assert_ok()["device_id"], device);
            assert_eq!(register.assert_ok()["device_id"], device);
        } else {
            login.assert_error(400, "M_INVALID_PARAM");
            register.assert_error(400, "M_INVALID_PARAM");
        }
    }
}

#[tokio::test]
async fn a_tag_stops_at_255_bytes() {
    let (hs, _) = test_server(306).await;
    let alice = TestClient::register(&hs, "alice").await;
    let room = new_room(&alice).await;
    let tag = |t: String| {
        format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags/{}",
            enc(&alice.user_id),
            enc(&room),
            enc(&t)
        )
    };
    let at = format!("u.{}", "t".repeat(253));
    alice.put(&tag(at.clone()), json!({})).await.assert_ok();
    alice
        .put(&tag(format!("{at}t")), json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    let tags = alice
        .get(&format!(
            "/_matrix/client/v3/user/{}/rooms/{}/tags",
            enc(&alice.user_id),
            enc(&room)
        ))
        .await;
    let names: Vec<&String> = tags.assert_ok()["tags"]
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names, vec![&at]);
}

#[tokio::test]
async fn profile_keys_stop_at_255_bytes_and_profiles_at_64_kib() {
    let (hs, _) = test_server(307).await;
    let alice = TestClient::register(&hs, "alice").await;
    let field = |key: &str| {
        format!(
            "/_matrix/client/v3/profile/{}/{}",
            enc(&alice.user_id),
            enc(key)
        )
    };
    let at = format!("a.{}", "k".repeat(253));
    alice
        .put(&field(&at), json!({ at.clone(): 1 }))
        .await
        .assert_ok();
    let past = format!("{at}k");
    alice
        .put(&field(&past), json!({ past.clone(): 1 }))
        .await
        .assert_error(400, "M_KEY_TOO_LARGE");
    alice.delete(&field(&at)).await.assert_ok();

    // The whole profile as a compact JSON object, padded to exactly 64 KiB with one field.
    let profile = alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}",
            enc(&alice.user_id)
        ))
        .await;
    let mut all: Map<String, Value> = profile.assert_ok().as_object().cloned().unwrap_or_default();
    all.insert("a.pad".into(), json!(""));
    let base = serde_json::to_vec(&all)
        .map(|v| v.len())
        .unwrap_or_default();
    let pad = |extra: usize| json!({ "a.pad": "p".repeat(65_536 - base + extra) });
    alice
        .put(&field("a.pad"), pad(1))
        .await
        .assert_error(400, "M_PROFILE_TOO_LARGE");
    alice.put(&field("a.pad"), pad(0)).await.assert_ok();
}
