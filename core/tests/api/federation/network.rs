//! The in-process network's hooks, one test each: delay, loss of a request or of its answer,
//! duplication, reordering (hold and release), partition.

use std::time::{Duration, Instant};

use futures::join;
use hearth_core::Homeserver;
use hearth_core::federation::client::{self, FederationError};
use hearth_core::federation::transport::TransportError;
use hearth_core::testing::TestClient;
use hearth_core::testing::network::{Link, Loss, Network};
use ruma::{OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId};
use serde_json::json;

const CLAIM: &str = "/_matrix/federation/v1/user/keys/claim";

/// Bob on `b` with two one-time keys, `AAAA` then `AAAB`.
async fn bob_with_two_keys(b: &Homeserver) -> (OwnedUserId, OwnedDeviceId) {
    let bob = TestClient::register(b, "bob").await;
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "one_time_keys": {
            "signed_curve25519:AAAA": { "key": "k1", "signatures": {} },
        } }),
    )
    .await
    .assert_ok();
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "one_time_keys": {
            "signed_curve25519:AAAB": { "key": "k2", "signatures": {} },
        } }),
    )
    .await
    .assert_ok();
    (
        OwnedUserId::try_from(bob.user_id.as_str()).unwrap(),
        OwnedDeviceId::from(bob.device_id.as_str()),
    )
}

/// `a` claims one of Bob's keys; the key id it got.
async fn claim(
    a: &Homeserver,
    bob: &(OwnedUserId, OwnedDeviceId),
) -> Result<Option<String>, FederationError> {
    let claims = [(
        bob.0.clone(),
        [(bob.1.clone(), OneTimeKeyAlgorithm::SignedCurve25519)]
            .into_iter()
            .collect(),
    )]
    .into_iter()
    .collect();
    let answer = client::claim_keys(a, bob.0.server_name(), claims, Duration::from_secs(5)).await?;
    Ok(answer
        .one_time_keys
        .get(&bob.0)
        .and_then(|d| d.get(&bob.1))
        .and_then(|k| k.keys().next())
        .map(|id| id.to_string()))
}

#[tokio::test]
async fn delay_holds_requests_back() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    net.set_delay(Link::to(b.server_name()), Duration::from_millis(150));
    let started = Instant::now();
    client::server_version(&a, b.server_name()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn a_lost_request_never_arrives() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_two_keys(&b).await;
    net.drop_next(
        Link::between(a.server_name(), b.server_name()),
        1,
        Loss::Request,
    );
    assert!(matches!(
        claim(&a, &bob).await,
        Err(FederationError::Transport(TransportError::Timeout { .. }))
    ));
    assert_eq!(net.count(b.server_name(), CLAIM), 0);
    // The key was not handed out.
    assert_eq!(
        claim(&a, &bob).await.unwrap().as_deref(),
        Some("signed_curve25519:AAAA")
    );
}

#[tokio::test]
async fn a_lost_answer_leaves_the_request_done() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_two_keys(&b).await;
    net.drop_next(Link::to(b.server_name()), 1, Loss::Response);
    assert!(claim(&a, &bob).await.is_err());
    assert_eq!(net.count(b.server_name(), CLAIM), 1);
    // The first key went with the lost answer.
    assert_eq!(
        claim(&a, &bob).await.unwrap().as_deref(),
        Some("signed_curve25519:AAAB")
    );
}

#[tokio::test]
async fn a_duplicated_request_arrives_twice() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_two_keys(&b).await;
    net.duplicate_next(Link::any(), 1);
    // Claims are not idempotent: the copy takes the first key, the sender sees the second.
    assert_eq!(
        claim(&a, &bob).await.unwrap().as_deref(),
        Some("signed_curve25519:AAAB")
    );
    assert_eq!(net.count(b.server_name(), CLAIM), 2);
    assert_eq!(claim(&a, &bob).await.unwrap(), None, "both keys are gone");
}

#[tokio::test]
async fn held_requests_are_delivered_in_the_order_released() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_two_keys(&b).await;
    net.hold(Link::between(a.server_name(), b.server_name()));
    let release = async {
        while net.held().len() < 2 {
            tokio::task::yield_now().await;
        }
        let held = net.held();
        assert!(held[0].2.starts_with("/_matrix/federation/v1/version"));
        assert!(held[1].2.starts_with(CLAIM));
        net.release(&[1, 0]).await;
    };
    let (version, claimed, ()) = join!(
        client::server_version(&a, b.server_name()),
        claim(&a, &bob),
        release
    );
    version.unwrap();
    claimed.unwrap();
    let order: Vec<String> = net.deliveries().into_iter().map(|d| d.path).collect();
    assert!(order[0].starts_with(CLAIM), "{order:?}");
    assert!(
        order[1].starts_with("/_matrix/federation/v1/version"),
        "{order:?}"
    );
    assert!(net.held().is_empty());
}

#[tokio::test]
async fn a_partition_cuts_both_ways_until_healed() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (c, _) = net.server(3).await;
    net.partition(a.server_name(), b.server_name());
    for (from, to) in [(&a, &b), (&b, &a)] {
        assert!(matches!(
            client::server_version(from, to.server_name()).await,
            Err(FederationError::Transport(
                TransportError::Unreachable { .. }
            ))
        ));
    }
    client::server_version(&a, c.server_name()).await.unwrap();
    net.heal(a.server_name(), b.server_name());
    client::server_version(&a, b.server_name()).await.unwrap();
    client::server_version(&b, a.server_name()).await.unwrap();
}
