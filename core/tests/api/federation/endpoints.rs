//! The read-only federation endpoints, asked by a second in-process server with signed
//! requests: version, the key server (own keys and notary), profile and directory queries,
//! user devices, E2EE key query and claim, OpenID userinfo, the public room directory.

use hearth_core::Homeserver;
use hearth_core::federation::server_keys::check_response;
use hearth_core::testing::TestClient;
use hearth_core::testing::network::Network;
use http::Method;
use ruma::CanonicalJsonObject;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, sign_json};
use serde_json::{Value, json};

use super::{call, enc, request, signed};

/// `a` asks `b` with a signed request.
async fn ask(
    a: &Homeserver,
    b: &Homeserver,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> hearth_core::testing::TestResponse {
    call(b, signed(a, b.server_name(), method, path, body.as_ref())).await
}

#[tokio::test]
async fn version_names_the_implementation_without_a_signature() {
    let net = Network::new();
    let (b, _) = net.server(2).await;
    let r = call(
        &b,
        request(Method::GET, "/_matrix/federation/v1/version", None),
    )
    .await;
    let v = r.assert_ok();
    assert_eq!(v["server"]["name"], "Hearth");
    assert_eq!(v["server"]["version"], hearth_core::VERSION);
}

#[tokio::test]
async fn key_server_publishes_a_self_signed_key_for_both_kinds_of_server() {
    let net = Network::new();
    let (keyed, _) = net.server(1).await;
    let (named, _) = net.named_server("named.test:8448", 2).await;
    for hs in [&keyed, &named] {
        let r = call(hs, request(Method::GET, "/_matrix/key/v2/server", None)).await;
        let v = r.assert_ok();
        assert_eq!(v["server_name"], hs.server_name().as_str());
        assert!(v["verify_keys"][&hs.key.key_id]["key"].is_string(), "{v}");
        assert!(v["old_verify_keys"].is_object());
        let until = v["valid_until_ts"].as_u64().unwrap();
        assert!(
            until > hs.now_ms() + 60 * 60 * 1000,
            "valid for more than an hour"
        );
        let checked = check_response(
            hs.server_name(),
            &String::from_utf8(r.raw.clone()).unwrap(),
            hs.now_ms(),
        )
        .expect("self-signature verifies");
        assert!(checked.verify_keys.contains_key(&hs.key.key_id));
    }
    // A key-named server's key id comes from its name.
    assert_eq!(
        keyed.key.key_id,
        format!("ed25519:{}", &keyed.server_name().as_str()[..8])
    );
}

#[tokio::test]
async fn notary_query_countersigns_keys_it_fetched() {
    let net = Network::new();
    let (n, _) = net.named_server("n.test", 1).await;
    let (notary, _) = net.server(2).await;
    let path = format!("/_matrix/key/v2/query/{}", n.server_name());
    let r = call(&notary, request(Method::GET, &path, None)).await;
    let keys = r.assert_ok()["server_keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1, "{}", r.body);
    let sigs = keys[0]["signatures"].as_object().unwrap();
    assert!(
        sigs.contains_key(n.server_name().as_str()),
        "origin's own signature kept"
    );
    assert!(
        sigs.contains_key(notary.server_name().as_str()),
        "notary's signature added"
    );
    // Served from the cache the second time, in the batch form too.
    let r = call(
        &notary,
        request(
            Method::POST,
            "/_matrix/key/v2/query",
            Some(&json!({ "server_keys": {
                n.server_name().as_str(): { "ed25519:any": {} },
                notary.server_name().as_str(): {},
                "gone.test": {},
            } })),
        ),
    )
    .await;
    let keys = r.assert_ok()["server_keys"].as_array().unwrap().clone();
    let names: Vec<&str> = keys
        .iter()
        .map(|k| k["server_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "an unreachable server is left out: {names:?}"
    );
    assert!(names.contains(&n.server_name().as_str()));
    assert!(names.contains(&notary.server_name().as_str()));
    assert_eq!(net.count(n.server_name(), "/_matrix/key/v2/server"), 1);
}

async fn alice_with_profile(hs: &Homeserver) -> TestClient {
    let alice = TestClient::register(hs, "alice").await;
    let base = format!("/_matrix/client/v3/profile/{}", enc(&alice.user_id));
    alice
        .put(
            &format!("{base}/displayname"),
            json!({ "displayname": "Alice" }),
        )
        .await
        .assert_ok();
    alice
        .put(&format!("{base}/m.tz"), json!({ "m.tz": "Europe/Paris" }))
        .await
        .assert_ok();
    alice
}

#[tokio::test]
async fn profile_query_answers_the_whole_profile_or_one_field() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice_with_profile(&b).await;
    let path = |extra: &str| {
        format!(
            "/_matrix/federation/v1/query/profile?user_id={}{extra}",
            enc(&alice.user_id)
        )
    };
    let r = ask(&a, &b, Method::GET, &path(""), None).await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "displayname": "Alice", "m.tz": "Europe/Paris" })
    );
    let r = ask(&a, &b, Method::GET, &path("&field=displayname"), None).await;
    assert_eq!(r.assert_ok(), &json!({ "displayname": "Alice" }));
    ask(&a, &b, Method::GET, &path("&field=avatar_url"), None)
        .await
        .assert_error(404, "M_NOT_FOUND");
    let nobody = format!("@nobody:{}", b.server_name());
    ask(
        &a,
        &b,
        Method::GET,
        &format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            enc(&nobody)
        ),
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    let elsewhere = format!("@alice:{}", a.server_name());
    ask(
        &a,
        &b,
        Method::GET,
        &format!(
            "/_matrix/federation/v1/query/profile?user_id={}",
            enc(&elsewhere)
        ),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn directory_query_resolves_a_local_alias() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&b, "alice").await;
    let room = alice
        .post(
            "/_matrix/client/v3/createRoom",
            json!({ "room_alias_name": "lobby" }),
        )
        .await
        .assert_ok()["room_id"]
        .clone();
    let alias = format!("#lobby:{}", b.server_name());
    let path = |alias: &str| {
        format!(
            "/_matrix/federation/v1/query/directory?room_alias={}",
            enc(alias)
        )
    };
    let r = ask(&a, &b, Method::GET, &path(&alias), None).await;
    assert_eq!(
        r.assert_ok(),
        &json!({ "room_id": room, "servers": [b.server_name().as_str()] })
    );
    ask(
        &a,
        &b,
        Method::GET,
        &path(&format!("#nope:{}", b.server_name())),
        None,
    )
    .await
    .assert_error(404, "M_NOT_FOUND");
    ask(&a, &b, Method::GET, &path("#lobby:elsewhere.test"), None)
        .await
        .assert_error(404, "M_NOT_FOUND");
}

/// An ed25519 key pair named after its public key, as cross-signing keys are.
fn cross_signing_pair() -> (Ed25519KeyPair, String) {
    let doc = Ed25519KeyPair::generate();
    let probe = Ed25519KeyPair::from_der(&doc, "probe".to_owned()).unwrap();
    let public: Base64 = Base64::new(probe.public_key().to_vec());
    let public = public.encode();
    (
        Ed25519KeyPair::from_der(&doc, public.clone()).unwrap(),
        public,
    )
}

fn signed_by(object: Value, signer: &str, pair: &Ed25519KeyPair) -> Value {
    let mut canonical: CanonicalJsonObject = serde_json::from_value(object).unwrap();
    sign_json(signer, pair, &mut canonical).unwrap();
    serde_json::to_value(canonical).unwrap()
}

/// Bob (on `hs`) with device keys, two one-time keys, a fallback key and all three
/// cross-signing keys; his device has a display name.
async fn bob_with_keys(hs: &Homeserver) -> TestClient {
    let bob = TestClient::register(hs, "bob").await;
    bob.put(
        &format!("/_matrix/client/v3/devices/{}", bob.device_id),
        json!({ "display_name": "Bob's phone at home" }),
    )
    .await
    .assert_ok();
    let device_keys = json!({
        "user_id": bob.user_id,
        "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{}", bob.device_id): "curve",
            format!("ed25519:{}", bob.device_id): "ed",
        },
        "signatures": { bob.user_id.clone(): { format!("ed25519:{}", bob.device_id): "sig" } },
    });
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({
            "device_keys": device_keys,
            "one_time_keys": {
                "signed_curve25519:AAAA": { "key": "otk1", "signatures": {} },
                "signed_curve25519:AAAB": { "key": "otk2", "signatures": {} },
            },
            "fallback_keys": {
                "signed_curve25519:FFFF": { "key": "fallback", "fallback": true, "signatures": {} },
            },
        }),
    )
    .await
    .assert_ok();
    let (master, master_pub) = cross_signing_pair();
    let (_, ssk_pub) = cross_signing_pair();
    let (_, usk_pub) = cross_signing_pair();
    let key = |usage: &str, public: &str| {
        json!({
            "user_id": bob.user_id,
            "usage": [usage],
            "keys": { format!("ed25519:{public}"): public },
        })
    };
    bob.post(
        "/_matrix/client/v3/keys/device_signing/upload",
        json!({
            "master_key": key("master", &master_pub),
            "self_signing_key": signed_by(key("self_signing", &ssk_pub), &bob.user_id, &master),
            "user_signing_key": signed_by(key("user_signing", &usk_pub), &bob.user_id, &master),
        }),
    )
    .await
    .assert_ok();
    bob
}

#[tokio::test]
async fn user_devices_lists_keyed_devices_and_public_cross_signing_keys() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_keys(&b).await;
    // A second device without identity keys is not listed.
    TestClient::register(&b, "carol").await;
    let path = format!("/_matrix/federation/v1/user/devices/{}", enc(&bob.user_id));
    let r = ask(&a, &b, Method::GET, &path, None).await;
    let v = r.assert_ok();
    assert_eq!(v["user_id"], bob.user_id.as_str());
    assert!(v["stream_id"].is_u64());
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{v}");
    assert_eq!(devices[0]["device_id"], bob.device_id.as_str());
    assert_eq!(devices[0]["keys"]["device_id"], bob.device_id.as_str());
    assert!(
        devices[0].get("device_display_name").is_none(),
        "no device names over federation"
    );
    assert_eq!(v["master_key"]["usage"], json!(["master"]));
    assert_eq!(v["self_signing_key"]["usage"], json!(["self_signing"]));
    assert!(v.get("user_signing_key").is_none());

    // A later change carries a higher stream id.
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "device_keys": {
            "user_id": bob.user_id, "device_id": bob.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": { format!("ed25519:{}", bob.device_id): "ed2" },
            "signatures": {},
        } }),
    )
    .await
    .assert_ok();
    let later = ask(&a, &b, Method::GET, &path, None).await;
    assert!(later.assert_ok()["stream_id"].as_u64() > v["stream_id"].as_u64());

    let nobody = format!("@nobody:{}", b.server_name());
    let r = ask(
        &a,
        &b,
        Method::GET,
        &format!("/_matrix/federation/v1/user/devices/{}", enc(&nobody)),
        None,
    )
    .await;
    assert_eq!(r.assert_ok()["devices"], json!([]));
    ask(
        &a,
        &b,
        Method::GET,
        &format!(
            "/_matrix/federation/v1/user/devices/{}",
            enc("@x:elsewhere.test")
        ),
        None,
    )
    .await
    .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn user_keys_query_serves_device_and_public_cross_signing_keys() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_keys(&b).await;
    let r = ask(
        &a,
        &b,
        Method::POST,
        "/_matrix/federation/v1/user/keys/query",
        Some(json!({ "device_keys": {
            bob.user_id.clone(): [],
            "@someone:elsewhere.test": [],
        } })),
    )
    .await;
    let v = r.assert_ok();
    let device = &v["device_keys"][&bob.user_id][&bob.device_id];
    assert_eq!(device["keys"][format!("ed25519:{}", bob.device_id)], "ed");
    assert!(
        device["unsigned"].get("device_display_name").is_none(),
        "{device}"
    );
    assert!(v["master_keys"][&bob.user_id].is_object());
    assert!(v["self_signing_keys"][&bob.user_id].is_object());
    assert!(v.get("user_signing_keys").is_none(), "{v}");
    assert!(v["device_keys"].get("@someone:elsewhere.test").is_none());
    // Only the devices asked for.
    let r = ask(
        &a,
        &b,
        Method::POST,
        "/_matrix/federation/v1/user/keys/query",
        Some(json!({ "device_keys": { bob.user_id.clone(): ["NOSUCH"] } })),
    )
    .await;
    assert_eq!(r.assert_ok()["device_keys"][&bob.user_id], json!({}));
}

#[tokio::test]
async fn user_keys_claim_hands_out_each_one_time_key_once_then_the_fallback() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = bob_with_keys(&b).await;
    let claim = json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } });
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = ask(
            &a,
            &b,
            Method::POST,
            "/_matrix/federation/v1/user/keys/claim",
            Some(claim.clone()),
        )
        .await;
        let keys = r.assert_ok()["one_time_keys"][&bob.user_id][&bob.device_id]
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(keys.len(), 1);
        seen.push(keys.keys().next().unwrap().clone());
    }
    assert_eq!(
        seen,
        [
            "signed_curve25519:AAAA",
            "signed_curve25519:AAAB",
            "signed_curve25519:FFFF"
        ]
    );
}

#[tokio::test]
async fn openid_userinfo_names_the_tokens_user() {
    let net = Network::new();
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&b, "alice").await;
    let token = alice
        .post(
            &format!(
                "/_matrix/client/v3/user/{}/openid/request_token",
                enc(&alice.user_id)
            ),
            json!({}),
        )
        .await
        .assert_ok()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = call(
        &b,
        request(
            Method::GET,
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
            None,
        ),
    )
    .await;
    assert_eq!(r.assert_ok(), &json!({ "sub": alice.user_id }));
    call(
        &b,
        request(
            Method::GET,
            "/_matrix/federation/v1/openid/userinfo?access_token=nope",
            None,
        ),
    )
    .await
    .assert_error(401, "M_UNKNOWN_TOKEN");
}

#[tokio::test]
async fn public_rooms_lists_the_published_directory_get_and_post() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = TestClient::register(&b, "alice").await;
    for (name, topic) in [
        ("Gardening", "roses"),
        ("Cooking", "pasta"),
        ("Hidden", "x"),
    ] {
        let visibility = if name == "Hidden" {
            "private"
        } else {
            "public"
        };
        alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({ "name": name, "topic": topic, "visibility": visibility }),
            )
            .await
            .assert_ok();
    }
    let r = ask(
        &a,
        &b,
        Method::GET,
        "/_matrix/federation/v1/publicRooms?limit=1",
        None,
    )
    .await;
    let v = r.assert_ok();
    assert_eq!(v["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(v["total_room_count_estimate"], 2);
    let next = v["next_batch"].as_str().unwrap().to_owned();
    let r = ask(
        &a,
        &b,
        Method::GET,
        &format!("/_matrix/federation/v1/publicRooms?limit=1&since={next}"),
        None,
    )
    .await;
    let v = r.assert_ok();
    assert_eq!(v["chunk"].as_array().unwrap().len(), 1);
    assert!(v.get("next_batch").is_none(), "no null tokens: {v}");

    let r = ask(
        &a,
        &b,
        Method::POST,
        "/_matrix/federation/v1/publicRooms",
        Some(json!({ "filter": { "generic_search_term": "rose" } })),
    )
    .await;
    let v = r.assert_ok();
    let names: Vec<&str> = v["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Gardening"]);
    assert!(
        v.get("next_batch").is_none() && v.get("prev_batch").is_none(),
        "{v}"
    );

    let r = ask(
        &a,
        &b,
        Method::POST,
        "/_matrix/federation/v1/publicRooms",
        Some(json!({ "third_party_instance_id": "irc" })),
    )
    .await;
    assert_eq!(r.assert_ok()["chunk"], json!([]));

    call(
        &b,
        request(Method::GET, "/_matrix/federation/v1/publicRooms", None),
    )
    .await
    .assert_error(401, "M_UNAUTHORIZED");
}
