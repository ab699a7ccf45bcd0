//! Quick in-process measurement of sequential sends per second (no HTTP).
//! `cargo run --release -p hearth-core --example send_rate`
use hearth_core::testing::{TestClient, enc, test_server};
use serde_json::json;

fn main() {
    futures::executor::block_on(async {
        let (hs, _) = test_server(1).await;
        let alice = TestClient::register(&hs, "alice").await;
        let bob = TestClient::register(&hs, "bob").await;
        let r = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({"preset": "public_chat"}),
            )
            .await;
        let room = r.body["room_id"].as_str().unwrap().to_owned();
        bob.post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            json!({}),
        )
        .await;
        let n = 5000;
        let start = std::time::Instant::now();
        for i in 0..n {
            let r = alice
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}",
                        enc(&room)
                    ),
                    json!({"msgtype": "m.text", "body": "hello"}),
                )
                .await;
            assert_eq!(r.status, 200);
        }
        let el = start.elapsed();
        println!("{n} sends in {el:?}: {:.0}/s", n as f64 / el.as_secs_f64());
    });
}
