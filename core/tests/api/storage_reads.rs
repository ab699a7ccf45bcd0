//! What a message send costs in storage reads once a room is warm. In the browser every read
//! the read cache cannot answer is an IndexedDB transaction of its own (~0.5 ms), and the
//! cache answers only keys it has seen; so a send must neither scan nor read a key that was
//! never read or written before. Likewise an incremental `/sync` scans only what changed.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;

use async_trait::async_trait;
use hearth_core::storage::{
    Batch, Direction, Durable, KeyRange, MemoryStorage, Op, Storage, StorageResult,
};
use hearth_core::testing::{TestClient, TestWorld, enc};
use hearth_core::{Config, Homeserver};
use serde_json::json;

/// Memory storage that counts what a browser read cache could not have answered.
#[derive(Default)]
struct ColdReads {
    inner: MemoryStorage,
    seen: RefCell<HashSet<(&'static str, Vec<u8>)>>,
    cold_gets: RefCell<Vec<String>>,
    scans: RefCell<Vec<&'static str>>,
    writes: Cell<usize>,
}

impl ColdReads {
    fn reset(&self) {
        self.cold_gets.borrow_mut().clear();
        self.scans.borrow_mut().clear();
        self.writes.set(0);
    }
}

#[async_trait(?Send)]
impl Storage for ColdReads {
    async fn get(&self, tree: &'static str, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        if self.seen.borrow_mut().insert((tree, key.to_vec())) {
            self.cold_gets
                .borrow_mut()
                .push(format!("{tree} {}", String::from_utf8_lossy(key)));
        }
        self.inner.get(tree, key).await
    }

    async fn scan(
        &self,
        tree: &'static str,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scans.borrow_mut().push(tree);
        self.inner.scan(tree, range, direction, limit).await
    }

    async fn begin_write(&self, batch: Batch) -> StorageResult<Durable> {
        self.writes.set(self.writes.get() + 1);
        for op in &batch.ops {
            let (Op::Put { tree, key, .. } | Op::Delete { tree, key }) = op;
            self.seen.borrow_mut().insert((tree, key.clone()));
        }
        self.inner.begin_write(batch).await
    }
}

async fn send(c: &TestClient, room: &str, txn: &str) -> String {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        ),
        json!({"msgtype": "m.text", "body": txn}),
    )
    .await
    .assert_ok()["event_id"]
        .as_str()
        .expect("event_id")
        .to_owned()
}

#[tokio::test]
async fn a_send_in_a_warm_room_scans_nothing_and_reads_no_new_key() {
    let store = Rc::new(ColdReads::default());
    let config = Config {
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    let hs = Homeserver::new(store.clone(), Rc::new(TestWorld::new(7)), config)
        .await
        .expect("boot");
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    send(&alice, &room, "warm-up").await;

    for i in 0..5 {
        store.reset();
        send(&alice, &room, &format!("m{i}")).await;
        assert_eq!(
            *store.scans.borrow(),
            Vec::<&str>::new(),
            "send {i} scanned"
        );
        assert_eq!(
            *store.cold_gets.borrow(),
            Vec::<String>::new(),
            "send {i} read keys never seen before"
        );
        assert_eq!(store.writes.get(), 1, "send {i}: one batch");
    }

    // The cached transaction ids still make a retry idempotent, and a new member is seen at
    // once by the cached member list (bob's unread count, carol's notification).
    let first = send(&alice, &room, "m0").await;
    let again = send(&alice, &room, "m0").await;
    assert_eq!(first, again);
    let carol = TestClient::register(&hs, "carol").await;
    carol
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    send(&alice, &room, "after-carol").await;
    let sync = carol.get("/_matrix/client/v3/sync?timeout=0").await;
    let counts = &sync.assert_ok()["rooms"]["join"][&room]["unread_notifications"];
    assert_eq!(counts["notification_count"], 1, "{counts}");
}

#[tokio::test]
async fn an_incremental_sync_after_a_message_scans_only_that_room() {
    let store = Rc::new(ColdReads::default());
    let config = Config {
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    let hs = Homeserver::new(store.clone(), Rc::new(TestWorld::new(7)), config)
        .await
        .expect("boot");
    let alice = TestClient::register(&hs, "alice").await;
    let bob = TestClient::register(&hs, "bob").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({"preset": "public_chat"}),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    let sync = |since: &str| format!("/_matrix/client/v3/sync?timeout=0&since={since}");
    let mut since = bob
        .get("/_matrix/client/v3/sync?timeout=0")
        .await
        .assert_ok()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    // One more round so that bob's to-device inbox is known to be empty.
    since = bob.get(&sync(&since)).await.assert_ok()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    // The first delivery reads bob's receipts in the room once (absent keys, cached as such).
    for i in 0..4 {
        send(&alice, &room, &format!("m{i}")).await;
        store.reset();
        let r = bob.get(&sync(&since)).await;
        let body = r.assert_ok();
        let events = body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("timeline");
        assert_eq!(events.len(), 1, "{body}");
        assert_eq!(events[0]["content"]["body"], format!("m{i}"));
        // The room's new events: nothing else was written, and nothing relates to them.
        assert_eq!(*store.scans.borrow(), vec!["timeline"], "sync {i}");
        if i > 0 {
            assert_eq!(*store.cold_gets.borrow(), Vec::<String>::new(), "sync {i}");
        }
        since = body["next_batch"].as_str().expect("next_batch").to_owned();
    }

    // What the skipped scans would have found still arrives: to-device, account data,
    // receipts, a membership change.
    let device = bob
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok()["device_id"]
        .as_str()
        .expect("device_id")
        .to_owned();
    let bob_id = bob
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_ok()["user_id"]
        .as_str()
        .expect("user_id")
        .to_owned();
    alice
        .put(
            "/_matrix/client/v3/sendToDevice/m.test/td1",
            json!({"messages": {bob_id.clone(): {device: {"x": 1}}}}),
        )
        .await
        .assert_ok();
    bob.put(
        &format!(
            "/_matrix/client/v3/user/{}/account_data/m.test.data",
            enc(&bob_id)
        ),
        json!({"y": 2}),
    )
    .await
    .assert_ok();
    let last = send(&alice, &room, "read-me").await;
    bob.post(
        &format!(
            "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
            enc(&room),
            enc(&last)
        ),
        json!({}),
    )
    .await
    .assert_ok();
    alice
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
    let body = bob.get(&sync(&since)).await.assert_ok().clone();
    assert_eq!(body["to_device"]["events"][0]["content"]["x"], 1, "{body}");
    assert!(
        body["account_data"]["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["type"] == "m.test.data")),
        "{body}"
    );
    let joined = &body["rooms"]["join"][&room];
    assert!(
        joined["ephemeral"]["events"]
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["type"] == "m.receipt")),
        "{body}"
    );
    assert!(
        joined["timeline"]["events"].as_array().is_some_and(|a| a
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave")),
        "{body}"
    );
}

#[tokio::test]
async fn after_a_restart_changes_from_before_it_are_still_found() {
    let store = Rc::new(MemoryStorage::new());
    let world = Rc::new(TestWorld::new(9));
    let config = Config {
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    let hs = Homeserver::new(store.clone(), world.clone(), config.clone())
        .await
        .expect("boot");
    let alice = TestClient::register(&hs, "alice").await;
    let token = alice.token.clone().expect("token");
    let room = alice
        .post("/_matrix/client/v3/createRoom", json!({}))
        .await
        .assert_ok()["room_id"]
        .as_str()
        .expect("room_id")
        .to_owned();
    let since = alice
        .get("/_matrix/client/v3/sync?timeout=0")
        .await
        .assert_ok()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let first = send(&alice, &room, "before-restart").await;
    alice
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.reaction/r1", enc(&room)),
            json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": first, "key": "👍"}}),
        )
        .await
        .assert_ok();
    drop(hs);

    let hs = Homeserver::new(store, world, config).await.expect("reboot");
    let mut alice = TestClient::anonymous(&hs);
    alice.token = Some(token);
    let body = alice
        .get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"))
        .await
        .assert_ok()
        .clone();
    let events = &body["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(events[0]["content"]["body"], "before-restart", "{body}");
    let related = alice
        .get(&format!(
            "/_matrix/client/v1/rooms/{}/relations/{}",
            enc(&room),
            enc(&first)
        ))
        .await;
    assert_eq!(
        related.assert_ok()["chunk"][0]["type"],
        "m.reaction",
        "{}",
        related.body
    );
}
