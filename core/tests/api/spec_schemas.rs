//! Responses checked against the Matrix spec's own schemas: real scenarios are driven through
//! `Homeserver::handle` and every response body is validated against the schema the spec's
//! OpenAPI files give for its (method, path, status). A violation names the endpoint, the
//! instance path and the reason.
#![cfg(not(target_arch = "wasm32"))]

use crate::spec;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Cursor;

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use http::Method;
use serde_json::{Value, json};

use spec::{Spec, Violation};

const PASSWORD: &str = "correct horse battery staple";

/// A violation that is understood: the spec's schema is wrong, or the server departs from it on
/// purpose. Such a response is still validated (the validator is never loosened); the scenario
/// asks for it with [`Harness::call_known`], which fails once the violation stops occurring.
struct Known {
    endpoint: &'static str,
    status: u16,
    /// A part of the validator's reason.
    reason: &'static str,
    why: &'static str,
}

/// rooms.yaml: `oneOf: [{type: object}, StateEvent]`. Every event is also an object, so a correct
/// `?format=event` answer matches both branches and fails `oneOf`; the schema needs `anyOf`.
const STATE_FORMAT_EVENT_ONEOF: Known = Known {
    endpoint: "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
    status: 200,
    reason: "is valid under more than one of the schemas listed in the 'oneOf' keyword",
    why: "spec erratum: rooms.yaml's oneOf [object, StateEvent] overlaps; a state event matches both",
};

impl Known {
    fn matches(&self, v: &Violation) -> bool {
        v.endpoint == self.endpoint && v.status == self.status && v.reason.contains(self.reason)
    }
}

/// Sends requests and validates every response against the spec, collecting violations so that
/// one run reports all of them.
struct Harness {
    spec: Spec,
    problems: RefCell<Vec<String>>,
    /// `status METHOD /template` of every validated response.
    covered: RefCell<BTreeSet<String>>,
    /// Known violations seen, for the summary.
    known_seen: RefCell<Vec<String>>,
}

impl Harness {
    fn new() -> Self {
        Self {
            spec: Spec::load(),
            problems: RefCell::default(),
            covered: RefCell::default(),
            known_seen: RefCell::default(),
        }
    }

    async fn call(
        &self,
        c: &TestClient,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let r = c.request(method.clone(), path, body).await;
        self.check(&method, path, &r);
        r
    }

    async fn call_raw(
        &self,
        c: &TestClient,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> TestResponse {
        let r = c
            .request_raw(method.clone(), path, body, content_type)
            .await;
        self.check(&method, path, &r);
        r
    }

    fn check(&self, method: &Method, path: &str, r: &TestResponse) {
        self.check_with(method, path, r, None);
    }

    fn check_with(&self, method: &Method, path: &str, r: &TestResponse, known: Option<&Known>) {
        let status = r.status.as_u16();
        let violations = self
            .spec
            .validate(method, path, status, &r.raw)
            .err()
            .unwrap_or_default();
        let mut problems = self.problems.borrow_mut();
        if let Some(known) = known {
            let (expected, other): (Vec<Violation>, Vec<Violation>) =
                violations.into_iter().partition(|v| known.matches(v));
            if expected.is_empty() {
                problems.push(format!(
                    "{method} {path} → {status}: the known violation ({}) no longer occurs; drop it from the test",
                    known.why
                ));
            }
            for v in expected {
                self.known_seen
                    .borrow_mut()
                    .push(format!("{v} [{}]", known.why));
            }
            problems.extend(other.iter().map(Violation::to_string));
        } else {
            problems.extend(violations.iter().map(Violation::to_string));
        }
        for op in self.spec.find(method, path) {
            self.covered
                .borrow_mut()
                .insert(format!("{status} {}", op.key()));
        }
    }

    /// Calls an endpoint whose answer violates the spec in the known way `known`, and in no other.
    async fn call_known(
        &self,
        known: &Known,
        c: &TestClient,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> TestResponse {
        let r = c.request(method.clone(), path, body).await;
        self.check_with(&method, path, &r, Some(known));
        r
    }

    /// Calls and requires `200`, returning the body.
    async fn ok(&self, c: &TestClient, method: Method, path: &str, body: Option<Value>) -> Value {
        let r = self.call(c, method.clone(), path, body).await;
        assert_eq!(r.status.as_u16(), 200, "{method} {path}: {}", r.body);
        r.body
    }

    async fn get(&self, c: &TestClient, path: &str) -> Value {
        self.ok(c, Method::GET, path, None).await
    }

    async fn post(&self, c: &TestClient, path: &str, body: Value) -> Value {
        self.ok(c, Method::POST, path, Some(body)).await
    }

    async fn put(&self, c: &TestClient, path: &str, body: Value) -> Value {
        self.ok(c, Method::PUT, path, Some(body)).await
    }

    /// Calls and requires the given error.
    async fn err(
        &self,
        c: &TestClient,
        method: Method,
        path: &str,
        body: Option<Value>,
        status: u16,
        errcode: &str,
    ) -> Value {
        let r = self.call(c, method, path, body).await;
        r.assert_error(status, errcode);
        r.body
    }

    /// Prints what was checked and fails on any violation.
    fn finish(&self, scenario: &str) {
        let covered = self.covered.borrow();
        println!(
            "{scenario}: {} (status, endpoint) pairs validated:",
            covered.len()
        );
        for c in covered.iter() {
            println!("  {c}");
        }
        for (op, from, target) in &self.spec.unresolved {
            if covered.iter().any(|c| c.ends_with(op.as_str())) {
                println!(
                    "  note: {op}: {target} (referenced by {from}) is not in the spec copy; checked as any value"
                );
            }
        }
        for k in self.known_seen.borrow().iter() {
            println!("  known: {k}");
        }
        // Taken out, so that `Drop` does not print them a second time.
        let problems = std::mem::take(&mut *self.problems.borrow_mut());
        assert!(
            problems.is_empty(),
            "{scenario}: {} spec violations:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed step panics mid-scenario; still show the violations found before it.
        let problems = self.problems.borrow();
        if std::thread::panicking() && !problems.is_empty() {
            eprintln!(
                "spec violations before the failure:\n{}",
                problems.join("\n")
            );
        }
    }
}

fn room_path(room: &str, rest: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/{rest}", enc(room))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

async fn create_room(h: &Harness, c: &TestClient, body: Value) -> String {
    str_of(
        &h.post(c, "/_matrix/client/v3/createRoom", body).await,
        "room_id",
    )
    .to_owned()
}

async fn send_text(h: &Harness, c: &TestClient, room: &str, txn: &str, text: &str) -> String {
    let path = room_path(room, &format!("send/m.room.message/{txn}"));
    str_of(
        &h.put(c, &path, json!({"msgtype": "m.text", "body": text}))
            .await,
        "event_id",
    )
    .to_owned()
}

async fn sync(h: &Harness, c: &TestClient, query: &str) -> Value {
    h.get(c, &format!("/_matrix/client/v3/sync?timeout=0{query}"))
        .await
}

#[tokio::test]
async fn room_responses_match_the_spec() {
    let h = Harness::new();
    let (hs, _) = test_server(71).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let server = hs.server_name().to_string();

    let profile = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    h.put(
        &alice,
        &format!("{profile}/avatar_url"),
        json!({"avatar_url": format!("mxc://{server}/alice")}),
    )
    .await;
    let room = create_room(
        &h,
        &alice,
        json!({
            "name": "Tea", "topic": "Leaves", "preset": "public_chat", "room_alias_name": "tea", "visibility": "public",
            "initial_state": [{"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}],
            "power_level_content_override": {"events_default": 0},
        }),
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, "invite"),
        json!({"user_id": bob.user_id}),
    )
    .await;
    h.post(&bob, &room_path(&room, "join"), json!({})).await;
    h.post(
        &bob,
        &format!("/_matrix/client/v3/join/{}", enc(&format!("#tea:{server}"))),
        json!({}),
    )
    .await;

    let first = send_text(&h, &alice, &room, "t1", "first").await;
    let second = send_text(&h, &bob, &room, "t2", "second").await;
    let doomed = send_text(&h, &alice, &room, "t3", "oops").await;
    h.put(
        &alice,
        &room_path(&room, &format!("redact/{}/r1", enc(&doomed))),
        json!({"reason": "typo"}),
    )
    .await;
    h.put(
        &alice,
        &room_path(&room, "state/m.room.topic/"),
        json!({"topic": "Green leaves"}),
    )
    .await;
    h.put(
        &alice,
        &room_path(&room, "state/org.example.custom/somekey"),
        json!({"n": 1}),
    )
    .await;

    h.get(&alice, &room_path(&room, &format!("event/{}", enc(&first))))
        .await;
    h.get(
        &alice,
        &room_path(&room, &format!("event/{}", enc(&doomed))),
    )
    .await;
    h.get(
        &alice,
        &room_path(&room, &format!("context/{}?limit=4", enc(&second))),
    )
    .await;
    h.get(&alice, &room_path(&room, "messages?dir=b&limit=3"))
        .await;
    let page = h
        .get(&alice, &room_path(&room, "messages?dir=b&limit=2"))
        .await;
    if let Some(end) = page["end"].as_str() {
        h.get(
            &alice,
            &room_path(&room, &format!("messages?dir=b&limit=50&from={}", enc(end))),
        )
        .await;
    }
    h.get(&alice, &room_path(&room, "messages?dir=f")).await;
    let lazy = enc(r#"{"lazy_load_members":true,"types":["m.room.message"]}"#);
    h.get(
        &bob,
        &room_path(&room, &format!("messages?dir=b&limit=5&filter={lazy}")),
    )
    .await;
    h.get(&alice, &room_path(&room, "state")).await;
    h.get(&alice, &room_path(&room, "state/m.room.topic/"))
        .await;
    h.get(
        &alice,
        &room_path(&room, "state/org.example.custom/somekey"),
    )
    .await;
    let r = h
        .call_known(
            &STATE_FORMAT_EVENT_ONEOF,
            &alice,
            Method::GET,
            &room_path(&room, "state/m.room.topic/?format=event"),
            None,
        )
        .await;
    assert_eq!(
        r.assert_ok()["type"],
        "m.room.topic",
        "format=event returns the whole event"
    );
    h.get(&alice, &room_path(&room, "members")).await;
    h.get(&alice, &room_path(&room, "members?membership=join"))
        .await;
    h.get(&alice, &room_path(&room, "joined_members")).await;
    h.get(&alice, "/_matrix/client/v3/joined_rooms").await;

    // Aliases and the room directory.
    let alias = format!("#green:{server}");
    h.put(
        &alice,
        &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
        json!({"room_id": room}),
    )
    .await;
    h.get(
        &bob,
        &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
    )
    .await;
    h.get(&alice, &room_path(&room, "aliases")).await;
    h.err(
        &alice,
        Method::PUT,
        &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
        Some(json!({"room_id": room})),
        409,
        "M_UNKNOWN",
    )
    .await;
    h.ok(
        &alice,
        Method::DELETE,
        &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
        None,
    )
    .await;
    h.err(
        &alice,
        Method::GET,
        &format!("/_matrix/client/v3/directory/room/{}", enc(&alias)),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.get(
        &alice,
        &format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)),
    )
    .await;
    h.put(
        &alice,
        &format!("/_matrix/client/v3/directory/list/room/{}", enc(&room)),
        json!({"visibility": "public"}),
    )
    .await;
    let anonymous = TestClient::anonymous(&hs);
    h.get(&anonymous, "/_matrix/client/v3/publicRooms?limit=5")
        .await;
    h.post(
        &alice,
        "/_matrix/client/v3/publicRooms",
        json!({"limit": 5, "filter": {"generic_search_term": "tea"}}),
    )
    .await;

    // Moderation and leaving.
    let carol = TestClient::register(&hs, "carol").await;
    h.post(&carol, &room_path(&room, "join"), json!({})).await;
    h.post(
        &alice,
        &room_path(&room, "kick"),
        json!({"user_id": carol.user_id, "reason": "noise"}),
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, "ban"),
        json!({"user_id": carol.user_id, "reason": "spam"}),
    )
    .await;
    h.err(
        &carol,
        Method::POST,
        &room_path(&room, "join"),
        Some(json!({})),
        403,
        "M_FORBIDDEN",
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, "unban"),
        json!({"user_id": carol.user_id}),
    )
    .await;
    h.post(&bob, &room_path(&room, "leave"), json!({"reason": "bye"}))
        .await;
    h.post(&bob, &room_path(&room, "forget"), json!({})).await;
    let upgraded = h
        .post(
            &alice,
            &room_path(&room, "upgrade"),
            json!({"new_version": "11"}),
        )
        .await;
    assert!(upgraded["replacement_room"].is_string());

    // Errors the spec documents for these endpoints.
    let nowhere = format!("!nowhere:{server}");
    h.err(
        &alice,
        Method::GET,
        &room_path(
            &room,
            &format!("event/{}", enc(&format!("$missing:{server}"))),
        ),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.err(
        &alice,
        Method::GET,
        &room_path(&room, "state/m.room.avatar/"),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.err(
        &bob,
        Method::PUT,
        &room_path(&room, "send/m.room.message/t9"),
        Some(json!({"msgtype": "m.text", "body": "x"})),
        403,
        "M_FORBIDDEN",
    )
    .await;
    let outsider = TestClient::register(&hs, "outsider").await;
    h.err(
        &outsider,
        Method::GET,
        &room_path(&room, "members"),
        None,
        403,
        "M_FORBIDDEN",
    )
    .await;
    h.err(
        &outsider,
        Method::GET,
        &room_path(&room, &format!("event/{}", enc(&first))),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.err(
        &alice,
        Method::POST,
        &room_path(&nowhere, "join"),
        Some(json!({})),
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.err(
        &alice,
        Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(json!({"room_version": "999"})),
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    )
    .await;
    h.err(
        &anonymous,
        Method::GET,
        "/_matrix/client/v3/joined_rooms",
        None,
        401,
        "M_MISSING_TOKEN",
    )
    .await;
    h.finish("rooms");
}

#[tokio::test]
async fn sync_responses_match_the_spec() {
    let h = Harness::new();
    let (hs, _) = test_server(72).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;

    let filter = h
        .post(
            &alice,
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            json!({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": true}}, "presence": {"types": ["m.presence"]}}),
        )
        .await;
    let filter_id = str_of(&filter, "filter_id").to_owned();
    h.get(
        &alice,
        &format!(
            "/_matrix/client/v3/user/{}/filter/{}",
            enc(&alice.user_id),
            enc(&filter_id)
        ),
    )
    .await;
    h.err(
        &alice,
        Method::GET,
        &format!(
            "/_matrix/client/v3/user/{}/filter/999999",
            enc(&alice.user_id)
        ),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;

    let empty = sync(&h, &alice, "").await;
    let room = create_room(
        &h,
        &alice,
        json!({"name": "Sync", "preset": "private_chat"}),
    )
    .await;
    let left = create_room(&h, &bob, json!({"preset": "public_chat"})).await;
    h.post(&alice, &room_path(&left, "join"), json!({})).await;
    send_text(&h, &alice, &room, "s1", "hello").await;
    let initial = sync(&h, &alice, "").await;
    let since = str_of(&initial, "next_batch").to_owned();

    // Something of every kind /sync reports, then an incremental sync over it.
    h.post(
        &alice,
        &room_path(&room, "invite"),
        json!({"user_id": bob.user_id}),
    )
    .await;
    h.post(&alice, &room_path(&left, "leave"), json!({})).await;
    let msg = send_text(&h, &alice, &room, "s2", "again").await;
    h.put(
        &alice,
        &room_path(&room, &format!("typing/{}", enc(&alice.user_id))),
        json!({"typing": true, "timeout": 30000}),
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, &format!("receipt/m.read/{}", enc(&msg))),
        json!({}),
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, &format!("receipt/m.read.private/{}", enc(&msg))),
        json!({"thread_id": "main"}),
    )
    .await;
    h.post(
        &alice,
        &room_path(&room, "read_markers"),
        json!({"m.fully_read": msg, "m.read": msg}),
    )
    .await;
    h.put(
        &alice,
        &format!(
            "/_matrix/client/v3/user/{}/account_data/org.example.pref",
            enc(&alice.user_id)
        ),
        json!({"v": 1}),
    )
    .await;
    h.put(
        &alice,
        &format!(
            "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.room",
            enc(&alice.user_id),
            enc(&room)
        ),
        json!({"v": 2}),
    )
    .await;
    h.put(
        &alice,
        &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
        json!({"presence": "online", "status_msg": "here"}),
    )
    .await;
    h.put(
        &bob,
        "/_matrix/client/v3/sendToDevice/org.example.ping/d1",
        json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"n": 1}}}}),
    )
    .await;
    h.post(
        &alice,
        "/_matrix/client/v3/keys/upload",
        json!({"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "A".repeat(43), "signatures": {}}}}),
    )
    .await;
    let incremental = sync(&h, &alice, &format!("&since={}", enc(&since))).await;
    assert!(
        incremental["rooms"]["join"][&room].is_object(),
        "the room's news is in the incremental sync: {incremental}"
    );
    // The schemas of every part of the body get exercised only if the parts are there.
    let joined = &incremental["rooms"]["join"][&room];
    for (what, part) in [
        ("timeline", &joined["timeline"]["events"]),
        ("ephemeral", &joined["ephemeral"]["events"]),
        ("room account data", &joined["account_data"]["events"]),
        ("account data", &incremental["account_data"]["events"]),
        ("presence", &incremental["presence"]["events"]),
        ("to-device", &incremental["to_device"]["events"]),
        (
            "left room",
            &incremental["rooms"]["leave"][&left]["timeline"]["events"],
        ),
    ] {
        assert!(
            part.as_array().is_some_and(|a| !a.is_empty()),
            "no {what} in the incremental sync: {incremental}"
        );
    }
    sync(
        &h,
        &alice,
        &format!("&since={}&filter={}", enc(&since), enc(&filter_id)),
    )
    .await;
    sync(&h, &alice, "&full_state=true&set_presence=unavailable").await;
    sync(
        &h,
        &alice,
        &format!("&since={}&use_state_after=true", enc(&since)),
    )
    .await;
    sync(
        &h,
        &alice,
        &format!("&filter={}", enc(r#"{"room":{"timeline":{"limit":1}}}"#)),
    )
    .await;
    let invited = sync(&h, &bob, "").await;
    let invite_state = &invited["rooms"]["invite"][&room]["invite_state"]["events"];
    assert!(
        invite_state.as_array().is_some_and(|a| !a.is_empty()),
        "bob's sync shows the invite: {invited}"
    );
    sync(
        &h,
        &alice,
        &format!("&since={}", enc(str_of(&empty, "next_batch"))),
    )
    .await;

    h.get(
        &alice,
        &format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id)),
    )
    .await;
    h.get(
        &alice,
        &format!(
            "/_matrix/client/v3/user/{}/account_data/org.example.pref",
            enc(&alice.user_id)
        ),
    )
    .await;
    h.get(
        &alice,
        &format!(
            "/_matrix/client/v3/user/{}/rooms/{}/account_data/org.example.room",
            enc(&alice.user_id),
            enc(&room)
        ),
    )
    .await;
    h.err(
        &alice,
        Method::GET,
        &format!(
            "/_matrix/client/v3/user/{}/account_data/org.example.none",
            enc(&alice.user_id)
        ),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.err(
        &alice,
        Method::PUT,
        &format!(
            "/_matrix/client/v3/user/{}/account_data/org.example.pref",
            enc(&bob.user_id)
        ),
        Some(json!({})),
        403,
        "M_FORBIDDEN",
    )
    .await;
    h.err(
        &alice,
        Method::PUT,
        &room_path(&room, &format!("typing/{}", enc(&bob.user_id))),
        Some(json!({"typing": true, "timeout": 1000})),
        403,
        "M_FORBIDDEN",
    )
    .await;
    h.finish("sync");
}

#[tokio::test]
async fn account_and_session_responses_match_the_spec() {
    let h = Harness::new();
    let (hs, _) = test_server(73).await;
    let anonymous = TestClient::anonymous(&hs);

    h.get(&anonymous, "/_matrix/client/versions").await;
    h.get(&anonymous, "/.well-known/matrix/client").await;
    h.get(&anonymous, "/_matrix/client/v3/login").await;
    h.get(
        &anonymous,
        "/_matrix/client/v3/register/available?username=dave",
    )
    .await;

    // Registration through user-interactive auth.
    let r = h
        .call(
            &anonymous,
            Method::POST,
            "/_matrix/client/v3/register",
            Some(json!({"username": "dave", "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "registration asks for auth: {}",
        r.body
    );
    let session = str_of(&r.body, "session").to_owned();
    let registered = h
        .post(
            &anonymous,
            "/_matrix/client/v3/register",
            json!({"username": "dave", "password": PASSWORD, "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    let dave = TestClient {
        hs: hs.clone(),
        token: registered["access_token"].as_str().map(str::to_owned),
        user_id: str_of(&registered, "user_id").to_owned(),
        device_id: str_of(&registered, "device_id").to_owned(),
    };
    h.err(
        &anonymous,
        Method::GET,
        "/_matrix/client/v3/register/available?username=dave",
        None,
        400,
        "M_USER_IN_USE",
    )
    .await;
    h.err(
        &anonymous,
        Method::POST,
        "/_matrix/client/v3/register",
        Some(json!({"username": "dave", "password": PASSWORD, "auth": {"type": "m.login.dummy"}})),
        400,
        "M_USER_IN_USE",
    )
    .await;

    // Login, refresh, whoami, logout.
    let login = |password: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dave"}, "password": password, "refresh_token": true});
    h.err(
        &anonymous,
        Method::POST,
        "/_matrix/client/v3/login",
        Some(login("wrong")),
        403,
        "M_FORBIDDEN",
    )
    .await;
    let logged_in = h
        .post(&anonymous, "/_matrix/client/v3/login", login(PASSWORD))
        .await;
    let second = TestClient {
        hs: hs.clone(),
        token: logged_in["access_token"].as_str().map(str::to_owned),
        user_id: dave.user_id.clone(),
        device_id: str_of(&logged_in, "device_id").to_owned(),
    };
    if let Some(refresh) = logged_in["refresh_token"].as_str() {
        h.post(
            &anonymous,
            "/_matrix/client/v3/refresh",
            json!({"refresh_token": refresh}),
        )
        .await;
    }
    h.err(
        &anonymous,
        Method::POST,
        "/_matrix/client/v3/refresh",
        Some(json!({"refresh_token": "nope"})),
        401,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    h.get(&dave, "/_matrix/client/v3/account/whoami").await;
    h.get(&dave, "/_matrix/client/v3/account/3pid").await;
    h.get(&dave, "/_matrix/client/v3/capabilities").await;
    h.get(&dave, "/_matrix/client/v3/voip/turnServer").await;
    h.get(&dave, "/_matrix/client/v3/thirdparty/protocols")
        .await;

    // Devices, with the UIA challenge on deletion.
    h.get(&dave, "/_matrix/client/v3/devices").await;
    h.get(
        &dave,
        &format!("/_matrix/client/v3/devices/{}", enc(&second.device_id)),
    )
    .await;
    h.put(
        &dave,
        &format!("/_matrix/client/v3/devices/{}", enc(&second.device_id)),
        json!({"display_name": "Phone"}),
    )
    .await;
    h.err(
        &dave,
        Method::GET,
        "/_matrix/client/v3/devices/NOSUCHDEVICE",
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    let path = format!("/_matrix/client/v3/devices/{}", enc(&second.device_id));
    let r = h.call(&dave, Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "device deletion asks for auth: {}",
        r.body
    );
    let session = str_of(&r.body, "session").to_owned();
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "dave"}, "password": PASSWORD, "session": session});
    h.ok(&dave, Method::DELETE, &path, Some(json!({"auth": auth})))
        .await;
    h.err(
        &second,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        401,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    let r = h
        .call(
            &dave,
            Method::POST,
            "/_matrix/client/v3/delete_devices",
            Some(json!({"devices": ["GONE"]})),
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "bulk deletion asks for auth: {}",
        r.body
    );

    // Profiles.
    let profile = format!("/_matrix/client/v3/profile/{}", enc(&dave.user_id));
    h.put(
        &dave,
        &format!("{profile}/displayname"),
        json!({"displayname": "Dave"}),
    )
    .await;
    h.put(
        &dave,
        &format!("{profile}/avatar_url"),
        json!({"avatar_url": format!("mxc://{}/avatar", hs.server_name())}),
    )
    .await;
    h.get(&anonymous, &profile).await;
    h.get(&anonymous, &format!("{profile}/displayname")).await;
    h.get(&anonymous, &format!("{profile}/avatar_url")).await;
    let stranger = format!(
        "/_matrix/client/v3/profile/{}",
        enc(&format!("@nobody:{}", hs.server_name()))
    );
    h.err(&anonymous, Method::GET, &stranger, None, 404, "M_NOT_FOUND")
        .await;
    let eve = TestClient::register(&hs, "eve").await;
    h.err(
        &eve,
        Method::PUT,
        &format!("{profile}/displayname"),
        Some(json!({"displayname": "Not Dave"})),
        403,
        "M_FORBIDDEN",
    )
    .await;

    // Password change needs UIA too.
    let r = h
        .call(
            &dave,
            Method::POST,
            "/_matrix/client/v3/account/password",
            Some(json!({"new_password": "another fine password"})),
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        401,
        "password change asks for auth: {}",
        r.body
    );

    h.post(&dave, "/_matrix/client/v3/logout", json!({})).await;
    h.err(
        &dave,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        401,
        "M_UNKNOWN_TOKEN",
    )
    .await;
    h.post(&eve, "/_matrix/client/v3/logout/all", json!({}))
        .await;
    h.err(
        &anonymous,
        Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        401,
        "M_MISSING_TOKEN",
    )
    .await;
    h.finish("accounts");
}

#[tokio::test]
async fn e2ee_and_media_responses_match_the_spec() {
    let h = Harness::new();
    let (hs, _) = test_server(74).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &h,
        &alice,
        json!({"preset": "trusted_private_chat", "invite": [bob.user_id]}),
    )
    .await;
    h.post(&bob, &room_path(&room, "join"), json!({})).await;
    let before = str_of(&sync(&h, &alice, "").await, "next_batch").to_owned();

    let device_keys = json!({
        "user_id": bob.user_id,
        "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", bob.device_id): "C".repeat(43),
            format!("ed25519:{}", bob.device_id): "E".repeat(43),
        },
        "signatures": {bob.user_id.clone(): {format!("ed25519:{}", bob.device_id): "S".repeat(86)}},
    });
    h.post(
        &bob,
        "/_matrix/client/v3/keys/upload",
        json!({
            "device_keys": device_keys,
            "one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "K".repeat(43), "signatures": {bob.user_id.clone(): {format!("ed25519:{}", bob.device_id): "S".repeat(86)}}}},
            "fallback_keys": {"signed_curve25519:AAAAAg": {"key": "F".repeat(43), "fallback": true, "signatures": {}}},
        }),
    )
    .await;
    h.post(
        &alice,
        "/_matrix/client/v3/keys/query",
        json!({"device_keys": {bob.user_id.clone(): [], "@someone:elsewhere.example": []}}),
    )
    .await;
    for _ in 0..2 {
        h.post(
            &alice,
            "/_matrix/client/v3/keys/claim",
            json!({"one_time_keys": {bob.user_id.clone(): {bob.device_id.clone(): "signed_curve25519"}}}),
        )
        .await;
    }
    let changes = sync(&h, &alice, &format!("&since={}", enc(&before))).await;
    let changed = &changes["device_lists"]["changed"];
    assert!(
        changed
            .as_array()
            .is_some_and(|a| a.contains(&json!(bob.user_id))),
        "bob's new keys show in sync: {changes}"
    );
    let after = str_of(&changes, "next_batch").to_owned();
    h.get(
        &alice,
        &format!(
            "/_matrix/client/v3/keys/changes?from={}&to={}",
            enc(&before),
            enc(&after)
        ),
    )
    .await;
    h.put(
        &alice,
        "/_matrix/client/v3/sendToDevice/m.room_key_request/k1",
        json!({"messages": {bob.user_id.clone(): {"*": {"action": "request_cancellation", "request_id": "r", "requesting_device_id": alice.device_id}}}}),
    )
    .await;
    sync(&h, &bob, "").await;

    // Media.
    h.get(&alice, "/_matrix/client/v1/media/config").await;
    let png = {
        let mut img = image::RgbImage::new(96, 64);
        for (x, y, px) in img.enumerate_pixels_mut() {
            *px = image::Rgb([(x * 2) as u8, (y * 3) as u8, 128]);
        }
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("PNG encodes");
        out.into_inner()
    };
    let uploaded = h
        .call_raw(
            &alice,
            Method::POST,
            "/_matrix/media/v3/upload?filename=pic.png",
            png.clone(),
            "image/png",
        )
        .await;
    let uri = str_of(uploaded.assert_ok(), "content_uri").to_owned();
    let (server, media) = uri
        .trim_start_matches("mxc://")
        .split_once('/')
        .expect("mxc://server/id");
    let base = "/_matrix/client/v1/media";
    for path in [
        format!("{base}/download/{server}/{media}"),
        format!("{base}/download/{server}/{media}/pic.png"),
        format!("{base}/thumbnail/{server}/{media}?width=32&height=32&method=scale"),
    ] {
        let r = h.call(&alice, Method::GET, &path, None).await;
        assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.body);
    }
    let created = h.post(&alice, "/_matrix/media/v1/create", json!({})).await;
    let reserved = str_of(&created, "content_uri")
        .trim_start_matches("mxc://")
        .to_owned();
    let r = h
        .call_raw(
            &alice,
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{reserved}?filename=a.txt"),
            b"hi".to_vec(),
            "text/plain",
        )
        .await;
    assert_eq!(
        r.status.as_u16(),
        200,
        "upload to a reserved id: {}",
        r.body
    );
    let r = h
        .call_raw(
            &alice,
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{reserved}"),
            b"again".to_vec(),
            "text/plain",
        )
        .await;
    r.assert_error(409, "M_CANNOT_OVERWRITE_MEDIA");
    let r = h
        .call_raw(
            &bob,
            Method::PUT,
            &format!("/_matrix/media/v3/upload/{server}/notyours"),
            b"x".to_vec(),
            "text/plain",
        )
        .await;
    assert!(
        matches!(r.status.as_u16(), 403 | 404),
        "upload to an id nobody reserved: {}",
        r.body
    );
    h.err(
        &alice,
        Method::GET,
        &format!("{base}/download/{server}/doesnotexist?timeout_ms=0"),
        None,
        404,
        "M_NOT_FOUND",
    )
    .await;
    h.finish("e2ee and media");
}

#[tokio::test]
async fn push_responses_match_the_spec() {
    let h = Harness::new();
    let (hs, _) = test_server(75).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = create_room(
        &h,
        &alice,
        json!({"preset": "private_chat", "invite": [bob.user_id]}),
    )
    .await;
    h.post(&bob, &room_path(&room, "join"), json!({})).await;

    h.get(&alice, "/_matrix/client/v3/pushrules/").await;
    h.get(&alice, "/_matrix/client/v3/pushrules/global/").await;
    let rule = "/_matrix/client/v3/pushrules/global/content/cake";
    h.put(
        &alice,
        rule,
        json!({"actions": ["notify", {"set_tweak": "highlight"}], "pattern": "cake"}),
    )
    .await;
    h.put(
        &alice,
        "/_matrix/client/v3/pushrules/global/override/org.example.cond",
        json!({"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}]}),
    )
    .await;
    h.get(&alice, rule).await;
    h.get(
        &alice,
        "/_matrix/client/v3/pushrules/global/override/.m.rule.master",
    )
    .await;
    h.get(&alice, &format!("{rule}/enabled")).await;
    h.put(
        &alice,
        &format!("{rule}/enabled"),
        json!({"enabled": false}),
    )
    .await;
    h.get(&alice, &format!("{rule}/actions")).await;
    h.put(
        &alice,
        &format!("{rule}/actions"),
        json!({"actions": ["notify"]}),
    )
    .await;
    h.get(&alice, "/_matrix/client/v3/pushrules/").await;
    h.ok(&alice, Method::DELETE, rule, None).await;
    h.err(&alice, Method::GET, rule, None, 404, "M_NOT_FOUND")
        .await;
    h.err(&alice, Method::DELETE, rule, None, 404, "M_NOT_FOUND")
        .await;

    h.post(
        &alice,
        "/_matrix/client/v3/pushers/set",
        json!({
            "pushkey": "key1", "kind": "http", "app_id": "org.example.app", "app_display_name": "Example",
            "device_display_name": "Laptop", "lang": "en", "data": {"url": "https://push.example.org/_matrix/push/v1/notify", "format": "event_id_only"},
        }),
    )
    .await;
    h.get(&alice, "/_matrix/client/v3/pushers").await;
    send_text(&h, &bob, &room, "p1", "alice, cake?").await;
    h.get(&alice, "/_matrix/client/v3/notifications").await;
    h.get(
        &alice,
        "/_matrix/client/v3/notifications?limit=1&only=highlight",
    )
    .await;
    h.finish("push");
}

// ---------------------------------------------------------------------------------------------
// The harness itself: the loader finds what the spec says, and the validator rejects what the
// spec forbids (so that a clean run above means something).

fn violations(
    spec: &Spec,
    method: Method,
    path: &str,
    status: u16,
    body: &Value,
) -> Vec<Violation> {
    spec.validate(
        &method,
        path,
        status,
        &serde_json::to_vec(body).expect("JSON"),
    )
    .err()
    .unwrap_or_default()
}

#[test]
fn missing_spec_directory_is_an_error_naming_the_override() {
    let dir = std::env::temp_dir().join("hearth-no-spec-here");
    let err = Spec::load_from(&dir)
        .err()
        .expect("a missing spec must not load");
    assert!(
        err.contains("HEARTH_SPEC_DIR") && err.contains("hearth-no-spec-here"),
        "{err}"
    );
}

#[test]
fn loader_gives_full_paths_security_and_deprecation() {
    let spec = Spec::load();
    let sync = spec.find(&Method::GET, "/_matrix/client/v3/sync?since=s1");
    assert_eq!(sync.len(), 1, "one operation for /sync");
    assert!(sync[0].accepts_access_token() && !sync[0].deprecated && !sync[0].appservice_only());
    assert!(sync[0].responses["200"].json_schema.is_some());
    // Other bases than /_matrix/client/v3.
    assert_eq!(spec.find(&Method::GET, "/_matrix/client/versions").len(), 1);
    assert_eq!(
        spec.find(&Method::GET, "/.well-known/matrix/client").len(),
        1
    );
    assert_eq!(
        spec.find(&Method::GET, "/_matrix/client/v1/media/config")
            .len(),
        1
    );
    assert!(
        spec.find(&Method::GET, "/_matrix/media/v3/config")
            .iter()
            .all(|op| op.deprecated)
    );
    // Two files describe the invite endpoint.
    let invite = spec.find(
        &Method::POST,
        "/_matrix/client/v3/rooms/!r:example.org/invite",
    );
    let files: BTreeSet<&str> = invite.iter().map(|op| op.file.as_str()).collect();
    assert_eq!(
        files,
        BTreeSet::from(["inviting.yaml", "third_party_membership.yaml"])
    );
    let appservice = spec.find(
        &Method::PUT,
        "/_matrix/client/v3/directory/list/appservice/irc/!r:example.org",
    );
    assert!(appservice.iter().all(|op| op.appservice_only()) && !appservice.is_empty());
    // A literal segment wins over a parameter; an empty final parameter is an empty state key.
    let state = spec.find(
        &Method::GET,
        "/_matrix/client/v3/rooms/!r:example.org/state/m.room.name/",
    );
    assert_eq!(state.len(), 1);
    assert_eq!(state[0].path_params(), ["roomId", "eventType", "stateKey"]);
    // The only references left unresolved point into API areas the copy does not ship.
    for (op, _, target) in &spec.unresolved {
        assert!(
            target.contains("/api/application-service/") || target.contains("/api/identity/"),
            "{op}: {target}"
        );
    }
}

#[test]
fn validator_rejects_wrong_shapes_formats_and_statuses() {
    let spec = Spec::load();
    let send = "/_matrix/client/v3/rooms/!r:example.org/send/m.room.message/1";
    assert!(
        violations(
            &spec,
            Method::PUT,
            send,
            200,
            &json!({"event_id": "$abc:example.org"})
        )
        .is_empty()
    );
    let missing = violations(&spec, Method::PUT, send, 200, &json!({}));
    assert!(
        missing
            .iter()
            .any(|v| v.pointer.is_empty() && v.reason.contains("event_id")),
        "{missing:?}"
    );
    let bad_id = violations(&spec, Method::PUT, send, 200, &json!({"event_id": "abc"}));
    assert!(
        bad_id.iter().any(|v| v.pointer == "/event_id"),
        "{bad_id:?}"
    );
    let undocumented = violations(&spec, Method::PUT, send, 201, &json!({"event_id": "$abc"}));
    assert!(
        undocumented
            .iter()
            .any(|v| v.reason.contains("not documented")),
        "{undocumented:?}"
    );
    let raw = spec
        .validate(&Method::PUT, send, 200, b"not json")
        .err()
        .unwrap_or_default();
    assert!(raw.iter().any(|v| v.reason.contains("not JSON")), "{raw:?}");
    assert!(
        spec.validate(&Method::GET, "/_matrix/client/v3/nothing/here", 200, b"{}")
            .is_err(),
        "unknown endpoint"
    );

    // Error bodies need an errcode, documented status or not.
    let event = "/_matrix/client/v3/rooms/!r:example.org/event/$e";
    assert!(!violations(&spec, Method::GET, event, 404, &json!({"error": "gone"})).is_empty());
    assert!(!violations(&spec, Method::GET, event, 418, &json!({"error": "teapot"})).is_empty());
    assert!(
        violations(
            &spec,
            Method::GET,
            event,
            404,
            &json!({"errcode": "M_NOT_FOUND", "error": "gone"})
        )
        .is_empty()
    );

    // mx-* formats are checked with ruma's parsers.
    let whoami = "/_matrix/client/v3/account/whoami";
    assert!(
        violations(
            &spec,
            Method::GET,
            whoami,
            200,
            &json!({"user_id": "@a:example.org"})
        )
        .is_empty()
    );
    assert!(
        !violations(
            &spec,
            Method::GET,
            whoami,
            200,
            &json!({"user_id": "@a:exa mple.org"})
        )
        .is_empty()
    );

    // Deep in /sync, through several files of `$ref`s: a timeline event needs its sender.
    let event =
        json!({"type": "m.room.message", "event_id": "$e", "origin_server_ts": 1, "content": {}});
    let body = json!({"next_batch": "s1", "rooms": {"join": {"!r:example.org": {"timeline": {"events": [event]}}}}});
    let deep = violations(&spec, Method::GET, "/_matrix/client/v3/sync", 200, &body);
    assert!(
        deep.iter().any(
            |v| v.pointer == "/rooms/join/!r:example.org/timeline/events/0"
                && v.reason.contains("sender")
        ),
        "{deep:?}"
    );
    assert!(
        !violations(
            &spec,
            Method::GET,
            "/_matrix/client/v3/sync",
            200,
            &json!({})
        )
        .is_empty(),
        "next_batch is required"
    );
}
