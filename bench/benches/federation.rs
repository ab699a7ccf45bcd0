//! Federation in process: two servers on `testing::network` (real X-Matrix signatures, real
//! PDU checks, no sockets).
//! - delivery: a message sent on `a` until `b`'s `/sync` returns it (criterion);
//! - inbound throughput: 2,000 messages queued on `a` during a partition, then delivered to
//!   `b` through `/send` transactions into a busy room; PDUs accepted per second (printed,
//!   median of 5 runs).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hearth_core::Homeserver;
use hearth_core::federation::outbox;
use hearth_core::testing::network::Network;
use hearth_core::testing::{TestClient, enc};
use serde_json::json;

const BACKLOG: usize = 2_000;

struct Pair {
    net: Network,
    a: Homeserver,
    b: Homeserver,
    alice: TestClient,
    bob: TestClient,
    room: String,
}

async fn settle(servers: &[&Homeserver]) {
    loop {
        let mut sent = 0;
        for s in servers {
            sent += outbox::flush(s).await.expect("flush");
        }
        if sent == 0 {
            return;
        }
    }
}

async fn pair(seed: u64) -> Pair {
    let net = Network::new();
    let (a, _) = net.server(seed).await;
    let (b, _) = net.server(seed + 1).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "preset": "public_chat" }),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .expect("room id")
        .to_owned();
    bob.post(
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        json!({}),
    )
    .await
    .assert_ok();
    settle(&[&a, &b]).await;
    Pair {
        net,
        a,
        b,
        alice,
        bob,
        room,
    }
}

async fn send(c: &TestClient, room: &str, txn: &str) {
    c.put(
        &format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            enc(room)
        ),
        json!({ "msgtype": "m.text", "body": txn }),
    )
    .await
    .assert_ok();
}

fn delivery(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let p = rt.block_on(pair(11));
    let mut since = rt
        .block_on(p.bob.get("/_matrix/client/v3/sync?timeout=0"))
        .assert_ok()["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let mut n = 0u64;
    c.bench_function(
        "federation: send on a → b's /sync returns it (in-process)",
        |bench| {
            bench.iter(|| {
                n += 1;
                rt.block_on(async {
                    send(&p.alice, &p.room, &format!("d{n}")).await;
                    settle(&[&p.a, &p.b]).await;
                    let r = p
                        .bob
                        .get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"))
                        .await;
                    let v = r.assert_ok();
                    assert!(v["rooms"]["join"][&p.room].is_object(), "not delivered");
                    since = v["next_batch"].as_str().expect("next_batch").to_owned();
                })
            })
        },
    );

    // Inbound throughput into a busy room.
    let mut rates = Vec::new();
    for run in 0..5u64 {
        let rate = rt.block_on(async {
            let p = pair(100 + run * 2).await;
            p.net.partition(p.a.server_name(), p.b.server_name());
            for i in 0..BACKLOG {
                send(&p.alice, &p.room, &format!("t{i}")).await;
            }
            p.net.heal(p.a.server_name(), p.b.server_name());
            outbox::forget_backoff(&p.a);
            let start = Instant::now();
            settle(&[&p.a, &p.b]).await;
            let took = start.elapsed();
            let last = p
                .bob
                .get(&format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1",
                    enc(&p.room)
                ))
                .await;
            assert_eq!(
                last.assert_ok()["chunk"][0]["content"]["body"],
                format!("t{}", BACKLOG - 1),
                "the backlog did not arrive"
            );
            BACKLOG as f64 / took.as_secs_f64().max(1e-9)
        });
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "federation: inbound PDUs accepted per second (2,000 through /send, median of 5): {:.0} (runs {:?})",
        rates[2],
        rates.iter().map(|r| r.round()).collect::<Vec<_>>()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = delivery
}
criterion_main!(benches);
