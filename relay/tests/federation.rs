//! The relay's forwarding role over real WebSockets: servers prove their names, requests and
//! answers pass unchanged, transactions for absent servers wait durably, and a misbehaving
//! connection is closed without touching the others.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::Signer;
use futures::SinkExt;
use hearth_relay_proto::answer::{close, errcode};
use hearth_relay_proto::auth;
use hearth_relay_proto::frame::{self, Frame};
use tokio_tungstenite::tungstenite::Message;

// ---- proving a name ----

#[tokio::test]
async fn a_server_with_the_right_key_is_welcomed() {
    let relay = Relay::start(&[]).await;
    let a = Server::connect(&relay, &key(1)).await;
    assert_eq!(a.queued_at_welcome, 0);
    assert!(a.client.is_welcomed());
    let m = relay.metrics().await;
    assert_eq!(metric(&m, "hearth_relay_connections"), 1.0);
    assert_eq!(
        metric(&m, "hearth_relay_handshakes_total{result=\"accepted\"}"),
        1.0
    );
}

/// Sends `hello` after reading the challenge and expects the relay to refuse with 4001.
async fn refused(relay: &Relay, make_hello: impl FnOnce([u8; 32]) -> Vec<u8>) -> String {
    let mut ws = open(relay).await;
    let nonce = challenge(&mut ws).await;
    ws.send(Message::Binary(make_hello(nonce).into()))
        .await
        .unwrap();
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, close::AUTH_FAILED, "{reason}");
    reason
}

#[tokio::test]
async fn a_name_claimed_with_the_wrong_key_is_refused() {
    let relay = Relay::start(&[]).await;
    let origin = relay.url();
    let (alice, mallory) = (key(1), key(2));
    let reason = refused(&relay, |nonce| {
        let sig = mallory
            .sign(&auth::signed_message(&origin, &nonce))
            .to_bytes();
        hello(&name(&alice), &origin, sig)
    })
    .await;
    assert!(reason.contains("signature does not verify"), "{reason}");
    // The name is still free for its real owner.
    let a = Server::connect(&relay, &alice).await;
    assert_eq!(a.name, name(&alice));
    let m = relay.metrics().await;
    assert_eq!(
        metric(&m, "hearth_relay_handshakes_total{result=\"refused\"}"),
        1.0
    );
}

#[tokio::test]
async fn names_that_are_not_keys_are_refused() {
    let relay = Relay::start(&[]).await;
    let origin = relay.url();
    let k = key(1);
    for bad_name in [
        name(&k).to_uppercase(),
        "example.org".to_owned(),
        name(&k)[..62].to_owned(),
    ] {
        let reason = refused(&relay, |nonce| {
            hello(
                &bad_name,
                &origin,
                k.sign(&auth::signed_message(&origin, &nonce)).to_bytes(),
            )
        })
        .await;
        assert!(reason.contains("not 64 lowercase hex"), "{reason}");
    }
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let relay = Relay::start(&[]).await;
    let origin = relay.url();
    let k = key(1);
    refused(&relay, |_| hello(&name(&k), &origin, [0x5a; 64])).await;
    // Signed over something else than the protocol's message (the bare nonce).
    refused(&relay, |nonce| {
        hello(&name(&k), &origin, k.sign(&nonce).to_bytes())
    })
    .await;
}

#[tokio::test]
async fn a_replayed_hello_is_refused() {
    let relay = Relay::start(&[]).await;
    let origin = relay.url();
    let k = key(1);
    // A valid hello from one connection...
    let mut first = open(&relay).await;
    let nonce = challenge(&mut first).await;
    let captured = hello(
        &name(&k),
        &origin,
        k.sign(&auth::signed_message(&origin, &nonce)).to_bytes(),
    );
    first
        .send(Message::Binary(captured.clone().into()))
        .await
        .unwrap();
    assert!(matches!(
        Frame::decode(&next_binary(&mut first).await),
        Ok(Frame::Welcome(_))
    ));
    // ...is worthless on the next one, which has a fresh challenge.
    let reason = refused(&relay, |_| captured).await;
    assert!(reason.contains("signature does not verify"), "{reason}");
}

#[tokio::test]
async fn a_signature_for_another_relay_is_refused() {
    let relay = Relay::start(&[]).await;
    let k = key(1);
    let elsewhere = "https://other-relay.example";
    let reason = refused(&relay, |nonce| {
        hello(
            &name(&k),
            elsewhere,
            k.sign(&auth::signed_message(elsewhere, &nonce)).to_bytes(),
        )
    })
    .await;
    assert!(reason.contains("not this relay's"), "{reason}");
    // The relay's origin, signed over while claiming it is another one, fails too.
    let origin = relay.url();
    refused(&relay, |nonce| {
        hello(
            &name(&k),
            &origin,
            k.sign(&auth::signed_message(elsewhere, &nonce)).to_bytes(),
        )
    })
    .await;
}

#[tokio::test]
async fn configured_origins_replace_the_defaults() {
    let relay = Relay::start(&["--origin", "https://Relay.Example:443"]).await;
    let k = key(1);
    let origin = relay.url();
    refused(&relay, |nonce| {
        hello(
            &name(&k),
            &origin,
            k.sign(&auth::signed_message(&origin, &nonce)).to_bytes(),
        )
    })
    .await;
    let mut ws = open(&relay).await;
    let nonce = challenge(&mut ws).await;
    let o = "https://relay.example";
    ws.send(Message::Binary(
        hello(
            &name(&k),
            o,
            k.sign(&auth::signed_message(o, &nonce)).to_bytes(),
        )
        .into(),
    ))
    .await
    .unwrap();
    assert!(matches!(
        Frame::decode(&next_binary(&mut ws).await),
        Ok(Frame::Welcome(_))
    ));
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed() {
    let relay = Relay::start(&["--auth-timeout", "200ms"]).await;
    let mut ws = open(&relay).await;
    challenge(&mut ws).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, close::AUTH_FAILED);
    assert!(reason.contains("no hello"), "{reason}");
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut old_b = Server::connect(&relay, &key(2)).await;
    let mut new_b = Server::connect(&relay, &key(2)).await;
    let (code, _) = expect_close(&mut old_b.ws).await;
    assert_eq!(code, close::REPLACED);
    a.ping_through(&mut new_b).await;
    let m = relay.metrics().await;
    assert_eq!(metric(&m, "hearth_relay_connections"), 2.0);
    assert_eq!(
        metric(
            &m,
            "hearth_relay_connections_closed_total{reason=\"replaced\"}"
        ),
        1.0
    );
}

// ---- forwarding ----

#[tokio::test]
async fn requests_and_answers_pass_unchanged() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let headers: [(&str, &[u8]); 3] = [
        (
            "authorization",
            b"X-Matrix origin=\"a\",destination=\"b\",key=\"ed25519:1\",sig=\"xyz\"",
        ),
        ("content-type", b"application/octet-stream"),
        ("x-odd", b"\x80\xff bytes"),
    ];
    let path = "/_matrix/federation/v1/query/profile?user_id=%40u%3Ab&field=displayname";
    let sent = frame::encode_request(77, &b.name, "POST", path, headers, &body).unwrap();
    a.send_raw(sent.clone()).await;

    let got = b.next_frame().await;
    let Ok(Frame::Request(r)) = Frame::decode(&got) else {
        panic!("not a request")
    };
    assert_eq!(
        r.peer, a.name,
        "the receiver learns the authenticated source"
    );
    let Ok(Frame::Request(orig)) = Frame::decode(&sent) else {
        unreachable!()
    };
    assert_eq!((r.method, r.path), (orig.method, orig.path));
    assert_eq!(r.headers.raw(), orig.headers.raw(), "headers byte for byte");
    assert_eq!(r.body, orig.body, "body byte for byte");

    let answer_body = b"\x00{\"displayname\":\"\xc3\xa9\"}\xff";
    let answer = frame::encode_response(
        r.id,
        200,
        [
            ("content-type", b"application/json".as_slice()),
            ("x-b", b"1".as_slice()),
        ],
        answer_body,
    )
    .unwrap();
    b.send_raw(answer.clone()).await;
    let back = a.next_frame().await;
    let mut expected = answer;
    frame::set_id(&mut expected, 77).unwrap();
    assert_eq!(
        back, expected,
        "the answer comes back with the sender's id, otherwise unchanged"
    );

    let m = relay.metrics().await;
    assert_eq!(
        metric(&m, "hearth_relay_requests_total{outcome=\"answered\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "hearth_relay_forward_duration_seconds_count"),
        1.0
    );
}

#[tokio::test]
async fn many_requests_in_flight_are_matched_by_id() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut c = Server::connect(&relay, &key(3)).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    let bname = b.name.clone();
    // Two senders use the same ids; the relay's ids towards B must not collide.
    for i in 0..20u32 {
        let p = format!("/_matrix/federation/v1/event/{i}");
        a.request(&bname, "GET", &p, &[], format!("a{i}").as_bytes())
            .await;
        c.request(&bname, "GET", &p, &[], format!("c{i}").as_bytes())
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(b.expect_request().await);
    }
    // Answer in reverse order, echoing the body.
    for (id, _, _, _, body) in got.iter().rev() {
        b.respond(*id, 200, body).await;
    }
    for (server, tag) in [(&mut a, 'a'), (&mut c, 'c')] {
        for _ in 0..20 {
            let (id, status, _, body) = server.expect_response().await;
            assert_eq!(status, 200);
            assert_eq!(body, format!("{tag}{}", id - 1).into_bytes());
        }
    }
}

#[tokio::test]
async fn a_request_to_an_absent_server_fails_at_once() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let absent = name(&key(9));
    let id = a
        .request(&absent, "GET", "/_matrix/federation/v1/version", &[], b"")
        .await;
    let (got, status, headers, body) = a.expect_response().await;
    assert_eq!((got, status), (id, 502));
    assert_eq!(
        header(&headers, "x-hearth-relay"),
        Some(b"error".as_slice())
    );
    assert_eq!(
        header(&headers, "content-type"),
        Some(b"application/json".as_slice())
    );
    let j = json(&body);
    assert_eq!(j["errcode"], errcode::NOT_CONNECTED);
    assert!(j["error"].as_str().unwrap().contains(&absent));

    // A name that is not a key can never connect to a relay, transaction or not.
    for (method, path) in [
        ("GET", "/_matrix/federation/v1/version"),
        ("PUT", "/_matrix/federation/v1/send/t1"),
    ] {
        a.request("synapse.example.org", method, path, &[], b"{}")
            .await;
        let (_, status, _, body) = a.expect_response().await;
        assert_eq!(status, 502);
        assert_eq!(json(&body)["errcode"], errcode::UNREACHABLE);
    }
}

#[tokio::test]
async fn an_unanswered_request_times_out() {
    let relay = Relay::start(&["--request-timeout", "300ms"]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    let id = a
        .request(
            &b.name.clone(),
            "GET",
            "/_matrix/federation/v1/version",
            &[],
            b"",
        )
        .await;
    let (rid, ..) = b.expect_request().await;
    let (got, status, _, body) = a.expect_response().await;
    assert_eq!((got, status), (id, 504));
    assert_eq!(json(&body)["errcode"], errcode::TIMEOUT);
    // A late answer goes nowhere and hurts nothing.
    b.respond(rid, 200, b"{}").await;
    a.ping_through(&mut b).await;
    let m = relay.metrics().await;
    assert_eq!(metric(&m, "hearth_relay_unmatched_answers_total"), 1.0);
}

// On several threads, as the binary runs: order must not depend on task scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_leaves_mid_request_fails_it_or_keeps_the_transaction() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    let bname = b.name.clone();
    let get = a
        .request(&bname, "GET", "/_matrix/federation/v1/version", &[], b"")
        .await;
    let txn = a.send_txn(&bname, "t-inflight").await;
    b.expect_request().await;
    b.expect_request().await;
    drop(b);
    let mut answers = [a.expect_response().await, a.expect_response().await];
    answers.sort_by_key(|r| r.0);
    let [(id1, s1, _, body1), (id2, s2, h2, _)] = answers;
    assert_eq!((id1, s1), (get, 502));
    assert_eq!(json(&body1)["errcode"], errcode::DISCONNECTED);
    assert_eq!((id2, s2), (txn, 202));
    assert_eq!(header(&h2, "x-hearth-relay"), Some(b"queued".as_slice()));
    // The next connection of B gets the transaction.
    let mut b = Server::connect(&relay, &key(2)).await;
    assert_eq!(b.queued_at_welcome, 1);
    let (_, peer, method, path, _) = b.expect_request().await;
    assert_eq!(
        (peer.as_str(), method.as_str(), path.as_str()),
        (
            a.name.as_str(),
            "PUT",
            "/_matrix/federation/v1/send/t-inflight"
        )
    );
}

// ---- store and forward ----

// On several threads, as the binary runs: order must not depend on task scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_for_an_absent_server_are_stored_and_delivered_in_order_until_200() {
    // A window of two, so that the third waits for the first answer.
    let relay = Relay::start(&["--delivery-window", "2"]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let bname = name(&key(2));
    for t in ["t1", "t2", "t3"] {
        let id = a.send_txn(&bname, t).await;
        let (got, status, headers, body) = a.expect_response().await;
        assert_eq!((got, status), (id, 202));
        assert_eq!(
            header(&headers, "x-hearth-relay"),
            Some(b"queued".as_slice())
        );
        let j = json(&body);
        assert_eq!(j["queued"], true);
        assert_eq!(j["destination"], bname.as_str());
    }
    assert_eq!(
        metric(&relay.metrics().await, "hearth_relay_queued_transactions"),
        3.0
    );

    let mut b = Server::connect(&relay, &key(2)).await;
    assert_eq!(b.queued_at_welcome, 3);
    // Two go out before the first is answered (the delivery window), in order.
    let (id1, peer, _, path, body) = b.expect_request().await;
    assert_eq!(
        (peer.as_str(), path.as_str()),
        (a.name.as_str(), "/_matrix/federation/v1/send/t1")
    );
    assert_eq!(body, b"{\"pdus\":[]}");
    let (id2, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/t2");
    // t2 is answered first, then t1 is refused with a server error: after the first back-off
    // t1 comes again, and t2 behind it, whatever t2 was answered.
    b.respond(id2, 200, b"{\"pdus\":{}}").await;
    b.respond(id1, 500, b"{}").await;
    let (id, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/t1");
    let (id2, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/t2");
    b.respond(id, 200, b"{\"pdus\":{}}").await;
    b.respond(id2, 200, b"{\"pdus\":{}}").await;
    let (id, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/t3");
    b.respond(id, 200, b"{\"pdus\":{}}").await;
    // Once the queue is empty, transactions go straight through again.
    wait_metric(&relay, "hearth_relay_queue_delivered_total", 3.0).await;
    let id = a.send_txn(&b.name.clone(), "t4").await;
    let (rid, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/t4");
    b.respond(rid, 200, b"{\"pdus\":{}}").await;
    let (got, status, ..) = a.expect_response().await;
    assert_eq!((got, status), (id, 200));
    // Removal is applied in the background; the gauge follows.
    wait_metric(&relay, "hearth_relay_queued_transactions", 0.0).await;
    let m = relay.metrics().await;
    assert_eq!(metric(&m, "hearth_relay_queue_delivered_total"), 3.0);
    assert_eq!(metric(&m, "hearth_relay_queue_retries_total"), 1.0);
}

// On several threads, as the binary runs: order must not depend on task scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_sent_while_the_queue_drains_waits_its_turn() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let bname = name(&key(2));
    a.send_txn(&bname, "old").await;
    assert_eq!(a.expect_response().await.1, 202);
    let mut b = Server::connect(&relay, &key(2)).await;
    let (id_old, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/old");
    // While "old" is unanswered, "new" must not overtake it.
    a.send_txn(&bname, "new").await;
    assert_eq!(a.expect_response().await.1, 202);
    b.respond(id_old, 200, b"{}").await;
    let (id_new, _, _, path, _) = b.expect_request().await;
    assert_eq!(path, "/_matrix/federation/v1/send/new");
    b.respond(id_new, 200, b"{}").await;
}

#[tokio::test]
async fn a_full_queue_is_a_clear_error() {
    let relay = Relay::start(&["--queue-max-count", "2"]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let bname = name(&key(2));
    for t in ["t1", "t2"] {
        a.send_txn(&bname, t).await;
        assert_eq!(a.expect_response().await.1, 202);
    }
    let id = a.send_txn(&bname, "t3").await;
    let (got, status, headers, body) = a.expect_response().await;
    assert_eq!((got, status), (id, 503));
    assert_eq!(
        header(&headers, "x-hearth-relay"),
        Some(b"error".as_slice())
    );
    assert_eq!(json(&body)["errcode"], errcode::QUEUE_FULL);
    // Other destinations have queues of their own.
    a.send_txn(&name(&key(3)), "t1").await;
    assert_eq!(a.expect_response().await.1, 202);
    let m = relay.metrics().await;
    assert_eq!(
        metric(&m, "hearth_relay_requests_total{outcome=\"queue_full\"}"),
        1.0
    );
}

#[tokio::test]
async fn a_refused_stored_transaction_is_dropped_not_retried_forever() {
    let relay = Relay::start(&[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let bname = name(&key(2));
    for t in ["bad", "good"] {
        a.send_txn(&bname, t).await;
        assert_eq!(a.expect_response().await.1, 202);
    }
    let mut b = Server::connect(&relay, &key(2)).await;
    let (id, _, _, path, _) = b.expect_request().await;
    assert!(path.ends_with("/bad"));
    b.respond(id, 400, b"{\"errcode\":\"M_BAD_JSON\",\"error\":\"no\"}")
        .await;
    let (id, _, _, path, _) = b.expect_request().await;
    assert!(path.ends_with("/good"));
    b.respond(id, 200, b"{}").await;
}

// On several threads, as the binary runs: order must not depend on task scheduling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_transactions_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let bname = name(&key(2));
    let relay = Relay::with_data(data.path(), &[]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    for t in ["t1", "t2", "t3"] {
        a.send_txn(&bname, t).await;
        assert_eq!(a.expect_response().await.1, 202);
    }
    relay.stop().await;
    // The connection is closed by the shutdown, with "going away".
    assert_eq!(expect_close(&mut a.ws).await.0, close::GOING_AWAY);

    let relay = Relay::with_data(data.path(), &[]).await;
    assert_eq!(
        metric(&relay.metrics().await, "hearth_relay_queued_transactions"),
        3.0
    );
    let mut b = Server::connect(&relay, &key(2)).await;
    assert_eq!(b.queued_at_welcome, 3);
    // Delivered once before the second restart; the others survive it too.
    let (id, _, _, path, _) = b.expect_request().await;
    assert!(path.ends_with("/t1"));
    // t2 (and t3) are already out with it (the delivery window), unanswered when the relay
    // stops.
    let (_, _, _, path, _) = b.expect_request().await;
    assert!(path.ends_with("/t2"));
    b.respond(id, 200, b"{}").await;
    wait_metric(&relay, "hearth_relay_queue_delivered_total", 1.0).await;
    relay.stop().await;

    let relay = Relay::with_data(data.path(), &[]).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    assert_eq!(b.queued_at_welcome, 2);
    for t in ["t2", "t3"] {
        let (id, peer, _, path, _) = b.expect_request().await;
        assert_eq!(peer, name(&key(1)));
        assert!(path.ends_with(&format!("/{t}")), "{path}");
        b.respond(id, 200, b"{}").await;
    }
}

// ---- protection ----

/// A and B exchange a request; `C` misbehaves in `misbehave` and must be closed with `code`
/// while A and B carry on.
async fn only_the_offender_is_closed(
    args: &[&str],
    code: u16,
    misbehave: impl AsyncFnOnce(&mut Server),
) {
    let relay = Relay::start(args).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let mut b = Server::connect(&relay, &key(2)).await;
    let mut c = Server::connect(&relay, &key(3)).await;
    misbehave(&mut c).await;
    let (got, reason) = expect_close(&mut c.ws).await;
    assert_eq!(got, code, "{reason}");
    a.ping_through(&mut b).await;
    b.ping_through(&mut a).await;
    assert_eq!(
        metric(&relay.metrics().await, "hearth_relay_connections"),
        2.0
    );
}

#[tokio::test]
async fn an_oversize_frame_closes_only_its_connection() {
    only_the_offender_is_closed(&["--max-frame-bytes", "65536"], close::TOO_BIG, async |c| {
        let dest = name(&key(9));
        c.request(
            &dest,
            "PUT",
            "/_matrix/federation/v1/send/big",
            &[],
            &vec![b'x'; 100_000],
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_flood_closes_only_its_connection() {
    only_the_offender_is_closed(&["--rate-frames", "50"], close::RATE_LIMITED, async |c| {
        // To an absent server, so that the flood reaches nobody before it is stopped.
        let dest = name(&key(9));
        // 50 a second with bursts of 100: a thousand trip it however slowly they go out.
        for _ in 0..1000 {
            let f =
                frame::encode_request(1, &dest, "GET", "/_matrix/federation/v1/version", [], b"")
                    .unwrap();
            if c.ws.send(Message::Binary(f.into())).await.is_err() {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn garbage_closes_only_its_connection() {
    only_the_offender_is_closed(&[], close::PROTOCOL_ERROR, async |c| {
        c.send_raw(vec![0x10, 0, 0, 0, 1, 200, b'x']).await;
    })
    .await;
    only_the_offender_is_closed(&[], close::PROTOCOL_ERROR, async |c| {
        c.ws.send(Message::Text("hello?".into())).await.unwrap();
    })
    .await;
    // A handshake frame after the handshake is out of place too.
    only_the_offender_is_closed(&[], close::PROTOCOL_ERROR, async |c| {
        c.send_raw(hello("x", "y", [0; 64])).await;
    })
    .await;
}

#[tokio::test]
async fn a_reader_that_stalls_is_closed_rather_than_buffered_for() {
    let relay = Relay::start(&["--outbound-max-bytes", "1048576", "--idle-timeout", "2s"]).await;
    let mut a = Server::connect(&relay, &key(1)).await;
    let stalled = Server::connect(&relay, &key(3)).await;
    // C never reads: its socket buffers fill, then the relay's bounded buffer for it.
    let body = vec![b'x'; 512 * 1024];
    for i in 0..64 {
        let p = format!("/_matrix/federation/v1/event/{i}");
        a.request(&stalled.name, "GET", &p, &[], &body).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..64 {
        statuses.push(a.expect_response().await.1);
    }
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    let mut b = Server::connect(&relay, &key(2)).await;
    a.ping_through(&mut b).await;
    let m = relay.metrics().await;
    assert_eq!(
        metric(
            &m,
            "hearth_relay_connections_closed_total{reason=\"slow_reader\"}"
        ),
        1.0
    );
    drop(stalled);
}

#[tokio::test]
async fn a_silent_connection_is_closed_and_a_live_one_is_kept() {
    // Margins for a busy machine: pings every 100 ms, a second of silence allowed.
    let relay = Relay::start(&["--ping-interval", "100ms", "--idle-timeout", "1s"]).await;
    let mut live = Server::connect(&relay, &key(1)).await;
    let mut silent = Server::connect(&relay, &key(2)).await;
    // The live one reads (so tungstenite answers the pings); the silent one does not.
    let keep_reading = async {
        let _ = tokio::time::timeout(Duration::from_millis(2500), live.next_frame()).await;
    };
    keep_reading.await;
    // The silent client may fail to read the close frame: it first tries to write the pongs
    // it owes, into a socket the relay has closed. The relay's count says why it closed.
    let (code, reason) = expect_close(&mut silent.ws).await;
    assert!(
        code == close::IDLE || reason.contains("Broken pipe") || reason.contains("reset"),
        "{code} {reason}"
    );
    wait_metric(
        &relay,
        "hearth_relay_connections_closed_total{reason=\"idle\"}",
        1.0,
    )
    .await;
    assert_eq!(
        metric(&relay.metrics().await, "hearth_relay_connections"),
        1.0
    );
}

// ---- operation ----

#[tokio::test]
async fn health_and_metrics_are_served() {
    let relay = Relay::start(&[]).await;
    let h = http_get(relay.addr, "/healthz").await;
    assert!(
        h.starts_with("HTTP/1.1 200") && h.ends_with("{\"status\":\"ok\"}"),
        "{h}"
    );
    let m = relay.metrics().await;
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    assert!(
        m.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    for family in [
        "hearth_relay_connections",
        "hearth_relay_queued_transactions",
        "hearth_relay_received_bytes_total",
        "hearth_relay_sent_bytes_total",
        "hearth_relay_requests_total",
        "hearth_relay_forward_duration_seconds",
    ] {
        assert!(m.contains(&format!("# TYPE {family} ")), "{family} missing");
    }
}

/// The real binary, as an operator runs it: SIGTERM is a graceful shutdown that keeps every
/// stored transaction for the next start on the same `--data`.
#[cfg(unix)]
#[tokio::test]
async fn the_binary_keeps_its_queue_across_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let www = tempfile::tempdir().unwrap();
    let start = || {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hearth-relay"))
            .args(["--listen", "127.0.0.1:0", "--www"])
            .arg(www.path())
            .arg("--data")
            .arg(data.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        async move {
            let mut line = String::new();
            tokio::io::BufReader::new(stdout)
                .read_line(&mut line)
                .await
                .unwrap();
            let addr = line
                .trim()
                .strip_prefix("hearth-relay listening on http://")
                .expect(&line)
                .to_owned();
            (child, addr)
        }
    };
    let terminate = async |mut child: tokio::process::Child| {
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "{status}");
    };

    let (child, addr) = start().await;
    let relay = Relay::external(addr.parse().unwrap());
    let mut a = Server::connect(&relay, &key(1)).await;
    let bname = name(&key(2));
    for i in 0..20 {
        a.send_txn(&bname, &format!("t{i}")).await;
    }
    for _ in 0..20 {
        assert_eq!(a.expect_response().await.1, 202);
    }
    terminate(child).await;

    let (child, addr) = start().await;
    let relay = Relay::external(addr.parse().unwrap());
    let mut b = Server::connect(&relay, &key(2)).await;
    assert_eq!(b.queued_at_welcome, 20);
    for i in 0..20 {
        let (id, _, _, path, _) = b.expect_request().await;
        assert_eq!(path, format!("/_matrix/federation/v1/send/t{i}"));
        b.respond(id, 200, b"{}").await;
    }
    terminate(child).await;
}
