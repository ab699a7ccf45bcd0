//! This server asking others: the federation client, and the Client-Server endpoints that use
//! it (`GET /profile/{userId}` and its single fields, `/keys/query`, `/keys/claim` for users of
//! other servers).

use std::rc::Rc;
use std::time::{Duration, Instant};

use hearth_core::federation::client::{self, FederationError};
use hearth_core::federation::transport::TransportError;
use hearth_core::testing::TestClient;
use hearth_core::testing::network::{Link, Network};
use http::Response;
use ruma::{OwnedRoomAliasId, OwnedUserId, ServerName};
use serde_json::json;

use super::enc;

#[tokio::test]
async fn remote_profile_is_asked_of_the_users_server() {
    let net = Network::new();
    let (a, _) = net.named_server("a.test", 1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    bob.put(
        &format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&bob.user_id)
        ),
        json!({ "displayname": "Bob" }),
    )
    .await
    .assert_ok();
    let path = format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id));
    assert_eq!(
        alice.get(&path).await.assert_ok(),
        &json!({ "displayname": "Bob" })
    );
    // And the other way: `b` fetches the named server's key, once.
    let path = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    for _ in 0..2 {
        // Registration made the localpart the display name.
        assert_eq!(
            bob.get(&path).await.assert_ok(),
            &json!({ "displayname": "alice" })
        );
    }
    assert_eq!(net.count(a.server_name(), "/_matrix/key/v2/server"), 1);
    assert_eq!(
        net.count(a.server_name(), "/_matrix/federation/v1/query/profile"),
        2
    );
}

/// `GET /profile/{userId}/{keyName}` of a remote user asks their server for that one field
/// (found by the Synapse interop test: the single-field endpoints answered `404` for every
/// user of another server).
#[tokio::test]
async fn remote_profile_fields_are_asked_of_the_users_server() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.named_server("b.test", 2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    let base = format!("/_matrix/client/v3/profile/{}", enc(&bob.user_id));
    for (field, value) in [
        ("displayname", json!("Bob")),
        ("avatar_url", json!("mxc://b.test/bob")),
        ("m.tz", json!("Europe/Paris")),
    ] {
        bob.put(&format!("{base}/{field}"), json!({ field: value.clone() }))
            .await
            .assert_ok();
        assert_eq!(
            alice.get(&format!("{base}/{field}")).await.assert_ok(),
            &json!({ field: value }),
            "{field}"
        );
        let asked = net
            .deliveries()
            .iter()
            .filter(|d| {
                d.to == b.server_name()
                    && d.path.starts_with("/_matrix/federation/v1/query/profile?")
                    && d.path.ends_with(&format!("&field={field}"))
            })
            .count();
        assert_eq!(asked, 1, "{field}: {:?}", net.deliveries());
    }
    alice
        .get(&format!("{base}/org.example.unset"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    let nobody = format!("@nobody:{}", b.server_name());
    alice
        .get(&format!(
            "/_matrix/client/v3/profile/{}/displayname",
            enc(&nobody)
        ))
        .await
        .assert_error(404, "M_NOT_FOUND");
}

/// Synapse answers a query for a field that is not set with `{"displayname": null}`: not set,
/// so `404`. A value of the wrong type is the remote server's failure, `502`.
#[tokio::test]
async fn remote_profile_field_null_is_not_found_and_garbage_is_a_gateway_error() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let alice = TestClient::register(&a, "alice").await;
    let peer = <&ServerName>::try_from("synapse.test").unwrap();
    net.add_handler(
        peer,
        Rc::new(|req| {
            let body = if req.uri().query().unwrap_or("").contains("field=avatar_url") {
                json!({ "avatar_url": 7 })
            } else {
                json!({ "displayname": null })
            };
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap())
                .unwrap()
        }),
    );
    let base = format!("/_matrix/client/v3/profile/{}", enc("@sam:synapse.test"));
    alice
        .get(&format!("{base}/displayname"))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("{base}/avatar_url"))
        .await
        .assert_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn remote_profile_errors_reach_the_client() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let nobody = format!("@nobody:{}", b.server_name());
    alice
        .get(&format!("/_matrix/client/v3/profile/{}", enc(&nobody)))
        .await
        .assert_error(404, "M_NOT_FOUND");
    net.partition(a.server_name(), b.server_name());
    let bob = format!("@bob:{}", b.server_name());
    alice
        .get(&format!("/_matrix/client/v3/profile/{}", enc(&bob)))
        .await
        .assert_error(502, "M_UNKNOWN");
}

#[tokio::test]
async fn keys_query_and_claim_ask_other_servers() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    let bob = TestClient::register(&b, "bob").await;
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({
            "device_keys": {
                "user_id": bob.user_id, "device_id": bob.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": { format!("ed25519:{}", bob.device_id): "ed" },
                "signatures": {},
            },
            "one_time_keys": { "signed_curve25519:AAAA": { "key": "otk", "signatures": {} } },
        }),
    )
    .await
    .assert_ok();
    let r = alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { bob.user_id.clone(): [], alice.user_id.clone(): [] } }),
        )
        .await;
    let v = r.assert_ok();
    assert_eq!(
        v["device_keys"][&bob.user_id][&bob.device_id]["keys"]
            [format!("ed25519:{}", bob.device_id)],
        "ed"
    );
    assert!(v["device_keys"][&alice.user_id].is_object());
    assert!(
        v["failures"].as_object().is_none_or(|f| f.is_empty()),
        "{v}"
    );

    let r = alice
        .post(
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } }),
        )
        .await;
    let v = r.assert_ok();
    assert_eq!(
        v["one_time_keys"][&bob.user_id][&bob.device_id]["signed_curve25519:AAAA"]["key"],
        "otk"
    );

    net.partition(a.server_name(), b.server_name());
    let r = alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { bob.user_id.clone(): [] } }),
        )
        .await;
    let v = r.assert_ok();
    assert!(
        v["failures"][b.server_name().as_str()]["status"].is_u64(),
        "{v}"
    );
    assert!(v["device_keys"].get(&bob.user_id).is_none());
    let r = alice
        .post(
            "/_matrix/client/v3/keys/claim",
            json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } }),
        )
        .await;
    assert!(r.assert_ok()["failures"][b.server_name().as_str()].is_object());
}

#[tokio::test]
async fn keys_query_waits_no_longer_than_the_clients_timeout() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&a, "alice").await;
    net.set_delay(
        Link::between(a.server_name(), b.server_name()),
        Duration::from_secs(5),
    );
    let started = Instant::now();
    let r = alice
        .post(
            "/_matrix/client/v3/keys/query",
            json!({ "device_keys": { format!("@bob:{}", b.server_name()): [] }, "timeout": 200 }),
        )
        .await;
    let took = started.elapsed();
    let v = r.assert_ok();
    assert_eq!(
        v["failures"][b.server_name().as_str()]["status"],
        504,
        "{v}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn federation_client_covers_the_read_only_endpoints() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.named_server("b.test", 2).await;
    let bob = TestClient::register(&b, "bob").await;
    let room = bob
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "hall", "visibility": "public", "name": "Hall" }),
        )
        .await
        .assert_ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let version = client::server_version(&a, b.server_name()).await.unwrap();
    assert_eq!(version.server.unwrap().name.as_deref(), Some("Hearth"));

    let alias = OwnedRoomAliasId::try_from(format!("#hall:{}", b.server_name())).unwrap();
    let found = client::query_directory(&a, &alias).await.unwrap();
    assert_eq!(found.room_id.as_str(), room);

    let bob_id = OwnedUserId::try_from(bob.user_id.as_str()).unwrap();
    let devices = client::user_devices(&a, &bob_id).await.unwrap();
    assert_eq!(devices.user_id, bob_id);

    let rooms = client::public_rooms(&a, b.server_name(), Default::default())
        .await
        .unwrap();
    assert_eq!(rooms.chunk.len(), 1);
    let rooms = client::public_rooms_filtered(&a, b.server_name(), Default::default())
        .await
        .unwrap();
    assert_eq!(rooms.chunk[0].name.as_deref(), Some("Hall"));

    let token = bob
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                enc(&bob.user_id)
            ),
            json!({}),
        )
        .await
        .assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        client::openid_userinfo(&a, b.server_name(), &token)
            .await
            .unwrap(),
        bob_id
    );
    let refused = client::openid_userinfo(&a, b.server_name(), "forged").await;
    assert!(
        matches!(&refused, Err(FederationError::Remote { status: 401, errcode, .. }) if errcode == "M_UNKNOWN_TOKEN"),
        "{refused:?}"
    );

    // Sending to oneself is refused before anything is sent.
    let before = net.attempts();
    assert!(matches!(
        client::server_version(&a, a.server_name()).await,
        Err(FederationError::Local(_))
    ));
    assert_eq!(net.attempts(), before);
    // Nobody there.
    let nobody = ruma::ServerName::parse("nobody.test").unwrap();
    assert!(matches!(
        client::server_version(&a, &nobody).await,
        Err(FederationError::Transport(
            TransportError::Unreachable { .. }
        ))
    ));
}
