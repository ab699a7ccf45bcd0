//! History visibility on every read path, for each of the four settings.
//!
//! One scenario per setting: Carol speaks and Alice starts a thread before Bob is invited, Alice
//! speaks while Bob is invited, after he joins, after he leaves and after he rejoins. The
//! expected set of messages Bob may see at each phase comes from the spec's rule written out
//! by hand here (not from the server's code). Every path must return only messages in that
//! set, and the paths that list history must return all of it.

use std::collections::BTreeSet;

use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::{Value, json};

const SETTINGS: [&str; 4] = ["world_readable", "shared", "invited", "joined"];
/// Every message of the scenario, in order.
const ALL: [&str; 6] = ["m1", "t1", "m2", "m3", "m4", "m5"];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Bob is joined; m1..m3 exist.
    Joined,
    /// Bob has left; m4 was sent after.
    Left,
    /// Bob rejoined; m5 was sent after.
    Rejoined,
}

/// What the spec's rule lets Bob see. m1 and t1: before the invite; m2: invited; m3: joined;
/// m4: after his leave; m5: after his rejoin.
fn expected(setting: &str, phase: Phase) -> BTreeSet<&'static str> {
    let exists: &[&str] = match phase {
        Phase::Joined => &ALL[..4],
        Phase::Left => &ALL[..5],
        Phase::Rejoined => &ALL[..],
    };
    let rejoined = phase == Phase::Rejoined;
    exists
        .iter()
        .copied()
        .filter(|m| match (setting, *m) {
            ("world_readable", _) => true,
            (_, "m3" | "m5") => true,
            ("shared", "m1" | "t1" | "m2") => true,
            ("shared", "m4") => rejoined,
            ("invited", "m2") => true,
            _ => false,
        })
        .collect()
}

/// Messages before Bob's leave, where a former member's history stops (unless the room is
/// world-readable, when it reads on as anyone may).
fn before_leave(set: &BTreeSet<&'static str>) -> BTreeSet<&'static str> {
    set.iter()
        .copied()
        .filter(|m| ["m1", "t1", "m2", "m3"].contains(m))
        .collect()
}

struct Scene {
    alice: TestClient,
    bob: TestClient,
    room: String,
    setting: &'static str,
    /// Event ids by body.
    ids: Vec<(&'static str, String)>,
    /// Bob's sync token from while he was only invited.
    invited_since: String,
    /// Origin timestamps (ms) of each message, for `/timestamp_to_event`.
    ts: Vec<(&'static str, u64)>,
}

impl Scene {
    fn id(&self, body: &str) -> &str {
        &self
            .ids
            .iter()
            .find(|(b, _)| *b == body)
            .expect("known message")
            .1
    }

    fn path(&self, rest: &str) -> String {
        format!("/_matrix/client/v3/rooms/{}/{rest}", enc(&self.room))
    }
}

async fn send(c: &TestClient, room: &str, txn: &str, content: Value) -> String {
    let r = c
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(room)
            ),
            content,
        )
        .await;
    r.assert_ok()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

fn text(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("{body} marker")})
}

/// Scenario messages found anywhere in a JSON answer (each event's `content.body`).
fn found(v: &Value) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    walk(v, &mut out);
    out
}

fn walk(v: &Value, out: &mut BTreeSet<&'static str>) {
    match v {
        Value::Object(m) => {
            if let Some(body) = m
                .get("content")
                .and_then(|c| c.get("body"))
                .and_then(Value::as_str)
                && body.ends_with(" marker")
                && let Some(word) = body.split(' ').next()
                && let Some(known) = ALL.iter().find(|a| **a == word)
            {
                out.insert(*known);
            }
            m.values().for_each(|x| walk(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
        _ => {}
    }
}

async fn sync(c: &TestClient, since: Option<&str>, filter: &Value) -> Value {
    let mut path = format!(
        "/_matrix/client/v3/sync?timeout=0&filter={}",
        enc(&filter.to_string())
    );
    if let Some(s) = since {
        path.push_str(&format!("&since={}", enc(s)));
    }
    c.get(&path).await.assert_ok().clone()
}

fn big_timeline() -> Value {
    json!({"room": {"timeline": {"limit": 50}}})
}

async fn build(setting: &'static str, seed: u64) -> Scene {
    let (hs, world) = test_server(seed).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let carol = TestClient::register(&hs, "carol").await;
    let r = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "private_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": {"history_visibility": setting}
            }]}),
        )
        .await;
    let room = r.assert_ok()["room_id"].as_str().expect("room").to_owned();
    let invite = |who: &str| json!({"user_id": format!("@{who}:{}", hs.server_name())});
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            invite("carol"),
        )
        .await
        .assert_ok();
    carol
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    let mut ids = Vec::new();
    let mut ts = Vec::new();
    let mut stamp = |body: &'static str| {
        world.advance(1000);
        ts.push((body, world_now(&world)));
    };
    stamp("m1");
    ids.push(("m1", send(&carol, &room, "c1", text("m1")).await));
    stamp("t1");
    let thread = json!({"msgtype": "m.text", "body": "t1 marker",
        "m.relates_to": {"rel_type": "m.thread", "event_id": ids[0].1}});
    ids.push(("t1", send(&alice, &room, "a1", thread).await));
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            invite("bob"),
        )
        .await
        .assert_ok();
    let invited = sync(&bob, None, &big_timeline()).await;
    let invited_since = invited["next_batch"].as_str().expect("token").to_owned();
    stamp("m2");
    ids.push(("m2", send(&alice, &room, "a2", text("m2")).await));
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    stamp("m3");
    // Mentions Bob, so that it highlights for him.
    let mut mention = text("m3");
    mention["m.mentions"] = json!({"user_ids": [bob.user_id.clone()]});
    ids.push(("m3", send(&alice, &room, "a3", mention).await));
    Scene {
        alice,
        bob,
        room,
        setting,
        ids,
        invited_since,
        ts,
    }
}

fn world_now(world: &hearth_core::testing::TestWorld) -> u64 {
    use hearth_core::world::World;
    world.now_ms()
}

async fn leave(s: &mut Scene) {
    s.bob.post(&s.path("leave"), json!({})).await.assert_ok();
    let id = send(&s.alice, &s.room, "a4", text("m4")).await;
    s.ids.push(("m4", id));
}

async fn rejoin(s: &mut Scene) {
    let bob_id = s.bob.user_id.clone();
    s.alice
        .post(&s.path("invite"), json!({"user_id": bob_id}))
        .await
        .assert_ok();
    s.bob
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&s.room)),
            json!({}),
        )
        .await
        .assert_ok();
    let id = send(&s.alice, &s.room, "a5", text("m5")).await;
    s.ids.push(("m5", id));
}

/// Asserts `got` is within `allowed`, and equal to `all` when given.
fn check(s: &Scene, phase: Phase, what: &str, got: BTreeSet<&str>, all: Option<&BTreeSet<&str>>) {
    let allowed = expected(s.setting, phase);
    let leaked: Vec<_> = got.difference(&allowed).collect();
    assert!(
        leaked.is_empty(),
        "{} / {phase:?} / {what}: leaked {leaked:?} (got {got:?}, allowed {allowed:?})",
        s.setting
    );
    if let Some(all) = all {
        assert_eq!(&got, all, "{} / {phase:?} / {what}: incomplete", s.setting);
    }
}

/// Every read path, as Bob, at one phase.
async fn read_paths(s: &Scene, phase: Phase) {
    let allowed = expected(s.setting, phase);
    let listed = if phase == Phase::Left && s.setting != "world_readable" {
        before_leave(&allowed)
    } else {
        allowed.clone()
    };
    let bob = &s.bob;

    // /sync, initial, with room for the whole history.
    let initial = sync(bob, None, &big_timeline()).await;
    let section = if phase == Phase::Left {
        "leave"
    } else {
        "join"
    };
    let room_sync = &initial["rooms"][section][&s.room];
    check(
        s,
        phase,
        "initial /sync",
        found(room_sync),
        (phase != Phase::Left).then_some(&listed),
    );
    // A gappy initial sync: the newest events only, never older hidden ones.
    let gappy = sync(bob, None, &json!({"room": {"timeline": {"limit": 2}}})).await;
    check(s, phase, "limited /sync", found(&gappy["rooms"]), None);
    // Lazy-loaded members: Carol spoke only in m1, so her member event comes only with it.
    let lazy = sync(
        bob,
        None,
        &json!({"room": {"timeline": {"limit": 50}, "state": {"lazy_load_members": true}}}),
    )
    .await;
    let lazy_room = &lazy["rooms"][section][&s.room];
    let carol_member = lazy_room["state"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            lazy_room["timeline"]["events"]
                .as_array()
                .into_iter()
                .flatten(),
        )
        .any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("@carol"))
        });
    if phase != Phase::Left {
        assert_eq!(
            carol_member,
            allowed.contains("m1"),
            "{} / {phase:?}: lazy-loaded Carol's membership",
            s.setting
        );
    }

    // /messages backwards from the end, everything in one page.
    let msgs = bob.get(&s.path("messages?dir=b&limit=100")).await;
    check(
        s,
        phase,
        "/messages",
        found(msgs.assert_ok()),
        Some(&listed),
    );
    // ... and forwards from the start, in small pages.
    let mut got = BTreeSet::new();
    let mut from = "s0".to_owned();
    for _ in 0..50 {
        let page = bob
            .get(&s.path(&format!("messages?dir=f&limit=2&from={from}")))
            .await;
        let page = page.assert_ok();
        got.extend(found(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    check(s, phase, "/messages forwards", got, Some(&listed));

    // /event and /context for each message.
    for (body, id) in &s.ids {
        let visible = listed.contains(body);
        let ev = bob.get(&s.path(&format!("event/{}", enc(id)))).await;
        if visible {
            ev.assert_ok();
        } else {
            ev.assert_error(404, "M_NOT_FOUND");
        }
        let ctx = bob
            .get(&s.path(&format!("context/{}?limit=20", enc(id))))
            .await;
        if visible {
            check(s, phase, "/context", found(ctx.assert_ok()), None);
        } else {
            assert_eq!(
                ctx.status.as_u16(),
                404,
                "{} / {phase:?}: /context of hidden {body}",
                s.setting
            );
        }
    }

    // /relations and /threads: the thread root m1 and its reply t1.
    let rel = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&s.room),
            enc(s.id("m1"))
        ))
        .await;
    if listed.contains("m1") {
        check(s, phase, "/relations", found(rel.assert_ok()), None);
    } else {
        rel.assert_error(404, "M_NOT_FOUND");
    }
    let threads = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/threads",
            enc(&s.room)
        ))
        .await;
    if threads.status.is_success() {
        let got = found(&threads.body);
        check(s, phase, "/threads", got.clone(), None);
        // A visible root comes with its latest reply bundled only when that is visible too.
        assert_eq!(
            got.contains("m1"),
            listed.contains("m1"),
            "{} / {phase:?}: /threads root",
            s.setting
        );
    }

    // /search over everything.
    let search = bob
        .post(
            "/_matrix/client/v3/search",
            json!({"search_categories": {"room_events": {"search_term": "marker",
                "event_context": {"before_limit": 5, "after_limit": 5}}}}),
        )
        .await;
    let results = &search.assert_ok()["search_categories"]["room_events"]["results"];
    check(s, phase, "/search", found(results), None);
    let hits: BTreeSet<&str> = results
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| found(&r["result"]))
        .collect();
    // Search covers the rooms the user is joined to.
    check(
        s,
        phase,
        "/search hits",
        hits,
        (phase != Phase::Left).then_some(&listed),
    );

    // /notifications: m3 mentions Bob and he was joined then.
    let notes = bob.get("/_matrix/client/v3/notifications").await;
    check(s, phase, "/notifications", found(notes.assert_ok()), None);

    // Room initialSync.
    let init = bob.get(&s.path("initialSync")).await;
    if init.status.is_success() {
        check(s, phase, "room initialSync", found(&init.body), None);
    }

    // /timestamp_to_event from the start: the first event at or after m1's time that Bob
    // may see, never a hidden one.
    let (_, m1_ts) = s.ts[0];
    let tte = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={}&dir=f",
            enc(&s.room),
            m1_ts
        ))
        .await;
    if tte.status.is_success() {
        let id = tte.body["event_id"].as_str().expect("event_id");
        if let Some((body, _)) = s.ids.iter().find(|(_, i)| i == id) {
            assert!(
                allowed.contains(body),
                "{} / {phase:?}: timestamp_to_event found hidden {body}",
                s.setting
            );
        }
        let ev = bob.get(&s.path(&format!("event/{}", enc(id)))).await;
        ev.assert_ok();
    }
}

async fn peek_paths(s: &Scene) {
    // A stranger may peek only into a world-readable room, and sees what anyone may.
    let dave = TestClient::register(&s.alice.hs, "dave").await;
    let r = dave
        .get(&format!(
            "/_matrix/client/v3/events?room_id={}&from=s0&timeout=0",
            enc(&s.room)
        ))
        .await;
    let init = dave.get(&s.path("initialSync")).await;
    let msgs = dave.get(&s.path("messages?dir=b&limit=100")).await;
    if s.setting == "world_readable" {
        let all: BTreeSet<&str> = s.ids.iter().map(|(b, _)| *b).collect();
        assert_eq!(found(r.assert_ok()), all, "/events peek");
        assert!(found(init.assert_ok()).is_subset(&all));
        assert_eq!(found(msgs.assert_ok()), all, "/messages as a stranger");
    } else {
        r.assert_error(403, "M_FORBIDDEN");
        init.assert_error(403, "M_FORBIDDEN");
        msgs.assert_error(403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn every_read_path_follows_history_visibility() {
    for (i, setting) in SETTINGS.into_iter().enumerate() {
        let mut s = build(setting, 700 + i as u64).await;
        read_paths(&s, Phase::Joined).await;

        // The incremental sync spanning the join sends the room whole, and only what Bob may see.
        let inc = sync(&s.bob, Some(&s.invited_since.clone()), &big_timeline()).await;
        check(
            &s,
            Phase::Joined,
            "incremental /sync across the join",
            found(&inc["rooms"]["join"][&s.room]),
            Some(&expected(setting, Phase::Joined)),
        );
        // Unread counts count only what Bob may see: m3 highlights for him.
        let counts = &inc["rooms"]["join"][&s.room]["unread_notifications"];
        assert_eq!(counts["highlight_count"], 1, "{setting}: highlight count");

        let before_leave_token = sync(&s.bob, None, &big_timeline()).await["next_batch"]
            .as_str()
            .expect("token")
            .to_owned();
        leave(&mut s).await;
        read_paths(&s, Phase::Left).await;
        // The incremental sync that reports the leave shows nothing after it.
        let inc = sync(&s.bob, Some(&before_leave_token), &big_timeline()).await;
        check(
            &s,
            Phase::Left,
            "incremental /sync with the leave",
            found(&inc["rooms"]["leave"][&s.room]),
            None,
        );
        assert!(
            !found(&inc["rooms"]).contains("m4"),
            "{setting}: m4 after leave"
        );

        rejoin(&mut s).await;
        read_paths(&s, Phase::Rejoined).await;
        peek_paths(&s).await;
    }
}

/// A new member of a long `joined` room gets nothing of the old history, and a timeline or
/// `/messages` page is not marked as cut short by what they may not see.
#[tokio::test]
async fn a_new_member_of_a_long_joined_room_gets_only_their_part() {
    let (hs, _) = test_server(710).await;
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let r = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat", "initial_state": [{
                "type": "m.room.history_visibility", "state_key": "",
                "content": {"history_visibility": "joined"}
            }]}),
        )
        .await;
    let room = r.assert_ok()["room_id"].as_str().expect("room").to_owned();
    for i in 0..300 {
        send(&alice, &room, &format!("old{i}"), text("m1")).await;
    }
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    send(&alice, &room, "new", text("m3")).await;
    let s = sync(&bob, None, &json!({"room": {"timeline": {"limit": 5}}})).await;
    let tl = &s["rooms"]["join"][&room]["timeline"];
    assert_eq!(found(tl), BTreeSet::from(["m3"]));
    // Going back, Bob meets his join, then the room's creation (sent before any
    // `history_visibility`, so under the default `shared`), and none of the 300 old messages.
    let mut from = s["rooms"]["join"][&room]["timeline"]["prev_batch"]
        .as_str()
        .expect("prev_batch")
        .to_owned();
    let mut pages = 0;
    let mut types: Vec<String> = tl["events"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect();
    loop {
        pages += 1;
        assert!(pages < 20, "paging back did not end");
        let m = bob
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=5&from={}",
                enc(&room),
                enc(&from)
            ))
            .await;
        let m = m.assert_ok().clone();
        assert!(found(&m["chunk"]).is_empty(), "old messages leaked");
        types.extend(
            m["chunk"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["type"].as_str().map(str::to_owned)),
        );
        match m["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(
        types.last().map(String::as_str),
        Some("m.room.create"),
        "{types:?}"
    );
    assert!(
        types.contains(&"m.room.history_visibility".to_owned()),
        "{types:?}"
    );
}
