//! In-process hot paths of hearth-core, through `Homeserver::handle` with no network:
//! sending a message, and the incremental `/sync` that delivers it.

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::{Value, json};

fn setup(rt: &tokio::runtime::Runtime) -> (TestClient, TestClient, String) {
    rt.block_on(async {
        let (hs, _world) = test_server(7).await;
        let alice = TestClient::register(&hs, "alice").await;
        let bob = TestClient::register(&hs, "bob").await;
        let created = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "invite": [bob.user_id] }),
            )
            .await;
        let room = created.assert_ok()["room_id"]
            .as_str()
            .expect("createRoom returns room_id")
            .to_owned();
        bob.post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            json!({}),
        )
        .await
        .assert_ok();
        (alice, bob, room)
    })
}

fn send_path(room: &str, txn: u64) -> String {
    format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/bench{txn}",
        enc(room)
    )
}

fn hot_paths(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (alice, bob, room) = setup(&rt);
    let message = json!({ "msgtype": "m.text", "body": "benchmark message" });
    let mut txn = 0u64;

    c.bench_function("send m.room.message (in-process)", |b| {
        b.iter(|| {
            txn += 1;
            rt.block_on(alice.put(&send_path(&room, txn), message.clone()))
                .assert_ok();
        })
    });

    let first = rt.block_on(bob.get("/_matrix/client/v3/sync?timeout=0"));
    let mut since = first.assert_ok()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    c.bench_function(
        "send + incremental /sync of the other member (in-process)",
        |b| {
            b.iter(|| {
                txn += 1;
                rt.block_on(async {
                    alice
                        .put(&send_path(&room, txn), message.clone())
                        .await
                        .assert_ok();
                    let path = format!("/_matrix/client/v3/sync?since={}&timeout=0", enc(&since));
                    let resp = bob.get(&path).await;
                    let body: &Value = resp.assert_ok();
                    since = body["next_batch"].as_str().expect("next_batch").to_owned();
                })
            })
        },
    );
}

criterion_group!(benches, hot_paths);
criterion_main!(benches);
