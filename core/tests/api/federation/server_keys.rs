//! Named servers' keys: fetched from `/_matrix/key/v2/server` once, checked, cached in memory
//! and storage, refetched when expired or unknown but not once per bad request; bad key
//! responses make every request of that server unauthorized.

use std::rc::Rc;

use futures::future::join_all;
use hearth_core::Homeserver;
use hearth_core::federation::key_server::own_key_object;
use hearth_core::federation::server_keys::FETCH_COOLDOWN_MS;
use hearth_core::storage::{MemoryStorage, Storage};
use hearth_core::testing::network::Network;
use hearth_core::testing::{TestClient, TestWorld, test_config};
use http::{HeaderValue, Method, Response};
use ruma::api::federation::authentication::XMatrix;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerSigningKeyId};

use super::{call, enc, signed};

const KEY_PATH: &str = "/_matrix/key/v2/server";
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

fn profile_path(user: &str) -> String {
    format!("/_matrix/federation/v1/query/profile?user_id={}", enc(user))
}

/// A signed profile query from `from` to `to` about a user of `to`; its status.
async fn ask(from: &Homeserver, to: &Homeserver, user: &str) -> u16 {
    let r = call(
        to,
        signed(
            from,
            to.server_name(),
            Method::GET,
            &profile_path(user),
            None,
        ),
    )
    .await;
    if r.status.as_u16() != 200 {
        assert_eq!(r.body["errcode"], "M_UNAUTHORIZED", "{}", r.body);
    }
    r.status.as_u16()
}

#[tokio::test]
async fn named_servers_key_is_fetched_once_and_cached() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let store: Rc<dyn Storage> = Rc::new(MemoryStorage::new());
    let world = Rc::new(TestWorld::new(2));
    let b = net
        .server_on(store.clone(), world.clone(), test_config())
        .await;
    let bob = TestClient::register(&b, "bob").await;
    for _ in 0..3 {
        assert_eq!(ask(&n, &b, &bob.user_id).await, 200);
    }
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
    // A restart finds the key in storage.
    drop(b);
    let b = net.server_on(store, world, test_config()).await;
    assert_eq!(ask(&n, &b, &bob.user_id).await, 200);
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
}

#[tokio::test]
async fn requests_arriving_together_share_one_fetch() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (b, _) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    let statuses = join_all((0..5).map(|_| ask(&n, &b, &bob.user_id))).await;
    assert_eq!(statuses, vec![200; 5]);
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
}

#[tokio::test]
async fn unknown_key_id_is_refetched_once_per_cooldown() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (b, b_world) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    let with_unknown_key = || {
        let mut req = signed(
            &n,
            b.server_name(),
            Method::GET,
            &profile_path(&bob.user_id),
            None,
        );
        let mut x = XMatrix::try_from(req.headers().get("authorization").unwrap()).unwrap();
        x.key = OwnedServerSigningKeyId::try_from("ed25519:nothere").unwrap();
        req.headers_mut()
            .insert("authorization", HeaderValue::from(&x));
        req
    };
    call(&b, with_unknown_key())
        .await
        .assert_error(401, "M_UNAUTHORIZED");
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
    // A peer cannot make us fetch per request...
    call(&b, with_unknown_key())
        .await
        .assert_error(401, "M_UNAUTHORIZED");
    assert_eq!(
        ask(&n, &b, &bob.user_id).await,
        200,
        "the real key was cached by that fetch"
    );
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
    // ...but asks again once the cooldown is over.
    b_world.advance(FETCH_COOLDOWN_MS + 1);
    call(&b, with_unknown_key())
        .await
        .assert_error(401, "M_UNAUTHORIZED");
    assert_eq!(net.count(n.server_name(), KEY_PATH), 2);
}

#[tokio::test]
async fn expired_key_is_refetched_and_refused_if_still_expired() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (b, b_world) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    assert_eq!(ask(&n, &b, &bob.user_id).await, 200);
    // Eight days on `b`'s clock: past the seven-day cap, and past the day `n`'s fresh answer
    // vouches for (by `n`'s clock).
    b_world.advance(8 * DAY_MS);
    assert_eq!(ask(&n, &b, &bob.user_id).await, 401);
    assert_eq!(net.count(n.server_name(), KEY_PATH), 2);
}

#[tokio::test]
async fn key_valid_a_day_is_used_for_a_day() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (b, b_world) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    assert_eq!(ask(&n, &b, &bob.user_id).await, 200);
    b_world.advance(DAY_MS / 2);
    assert_eq!(ask(&n, &b, &bob.user_id).await, 200);
    assert_eq!(net.count(n.server_name(), KEY_PATH), 1);
}

#[tokio::test]
async fn unreachable_named_origin_is_unauthorized_and_not_asked_again_at_once() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (b, _) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    net.remove(n.server_name());
    assert_eq!(ask(&n, &b, &bob.user_id).await, 401);
    let tried = net.attempts();
    assert_eq!(ask(&n, &b, &bob.user_id).await, 401);
    assert_eq!(net.attempts(), tried, "negative cache");
}

/// `fake`'s key response, edited by `edit` and (unless `resign` is false) signed again.
fn forged(fake: &Homeserver, resign: bool, edit: impl FnOnce(&mut CanonicalJsonObject)) -> Vec<u8> {
    let mut object = own_key_object(fake).unwrap();
    if resign {
        object.remove("signatures");
    }
    edit(&mut object);
    if resign {
        ruma::signatures::sign_json(fake.server_name().as_str(), &fake.key.pair, &mut object)
            .unwrap();
    }
    serde_json::to_vec(&object).unwrap()
}

/// Makes `fake.test` answer key requests with `body`, and checks whether `b` accepts a
/// request signed by `fake`'s real key.
async fn accepted_with_key_response(body: Vec<u8>, net: &Network, fake: &Homeserver) -> bool {
    let (b, _) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    net.add_handler(
        fake.server_name(),
        Rc::new(move |_req| Response::builder().status(200).body(body.clone()).unwrap()),
    );
    ask(fake, &b, &bob.user_id).await == 200
}

#[tokio::test]
async fn a_correct_key_response_from_a_stand_in_is_accepted() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    let body = forged(&fake, true, |_| {});
    assert!(accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn key_response_naming_another_server_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    let body = forged(&fake, true, |o| {
        o.insert(
            "server_name".into(),
            CanonicalJsonValue::String("other.test".into()),
        );
    });
    assert!(!accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn key_response_with_a_broken_self_signature_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    // Signed, then changed.
    let body = forged(&fake, false, |o| {
        o.insert(
            "old_verify_keys".into(),
            CanonicalJsonValue::Object(Default::default()),
        );
        o.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(ruma::Int::MAX),
        );
    });
    assert!(!accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn unsigned_key_response_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    let body = forged(&fake, false, |o| {
        o.remove("signatures");
    });
    assert!(!accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn key_response_signed_by_an_unlisted_key_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    let (other, _) = net.server(10).await;
    // Lists `fake`'s key, but only `other`'s key signed it (under `fake`'s name).
    let mut object = own_key_object(&fake).unwrap();
    object.remove("signatures");
    ruma::signatures::sign_json(fake.server_name().as_str(), &other.key.pair, &mut object).unwrap();
    let body = serde_json::to_vec(&object).unwrap();
    assert!(!accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn key_response_already_expired_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    let past = fake.now_ms() - 1000;
    let body = forged(&fake, true, |o| {
        o.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(ruma::Int::try_from(past).unwrap()),
        );
    });
    assert!(!accepted_with_key_response(body, &net, &fake).await);
}

#[tokio::test]
async fn key_response_that_is_not_json_is_refused() {
    let net = Network::new();
    let (fake, _) = net.named_server("fake.test", 9).await;
    assert!(!accepted_with_key_response(b"<html>".to_vec(), &net, &fake).await);
}
