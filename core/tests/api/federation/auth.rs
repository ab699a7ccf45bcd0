//! X-Matrix request authentication: what is accepted, what is refused (always
//! `401 M_UNAUTHORIZED`, with nothing done), and that a key-named origin costs no key fetch.

use hearth_core::Homeserver;
use hearth_core::testing::TestClient;
use hearth_core::testing::network::Network;
use http::{HeaderValue, Method};
use ruma::OwnedServerSigningKeyId;
use ruma::api::federation::authentication::XMatrix;
use serde_json::json;

use super::{call, enc, request, signed};

fn profile_path(user: &str) -> String {
    format!("/_matrix/federation/v1/query/profile?user_id={}", enc(user))
}

/// `alice` on `hs` with a display name.
async fn alice(hs: &Homeserver) -> TestClient {
    let alice = TestClient::register(hs, "alice").await;
    alice
        .put(
            &format!(
                "/_matrix/client/v3/profile/{}/displayname",
                enc(&alice.user_id)
            ),
            json!({ "displayname": "Alice" }),
        )
        .await
        .assert_ok();
    alice
}

/// Replaces the parts of `req`'s X-Matrix header that `edit` changes.
fn edit_header(req: &mut http::Request<Vec<u8>>, edit: impl FnOnce(&mut XMatrix)) {
    let mut x = XMatrix::try_from(req.headers().get("authorization").unwrap()).unwrap();
    edit(&mut x);
    req.headers_mut()
        .insert("authorization", HeaderValue::from(&x));
}

#[tokio::test]
async fn signed_request_from_a_key_named_server_is_accepted_without_a_key_fetch() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    let r = call(
        &b,
        signed(
            &a,
            b.server_name(),
            Method::GET,
            &profile_path(&alice.user_id),
            None,
        ),
    )
    .await;
    assert_eq!(r.assert_ok()["displayname"], "Alice");
    assert_eq!(
        net.attempts(),
        0,
        "nothing crossed the network: {:?}",
        net.deliveries()
    );
}

#[tokio::test]
async fn unsigned_request_is_unauthorized() {
    let net = Network::new();
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    call(
        &b,
        request(Method::GET, &profile_path(&alice.user_id), None),
    )
    .await
    .assert_error(401, "M_UNAUTHORIZED");
    // A client's access token is no server signature.
    let mut req = request(Method::GET, &profile_path(&alice.user_id), None);
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", alice.token.clone().unwrap())).unwrap(),
    );
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
    let mut req = request(Method::GET, &profile_path(&alice.user_id), None);
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_static(
            "X-Matrix origin=\"not a server name\",key=\"ed25519:a\",sig=\"AAAA\"",
        ),
    );
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn signature_by_another_key_is_unauthorized() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (mallory, _) = net.server(3).await;
    let alice = alice(&b).await;
    // Mallory signs, then claims to be `a`.
    let mut req = signed(
        &mallory,
        b.server_name(),
        Method::GET,
        &profile_path(&alice.user_id),
        None,
    );
    edit_header(&mut req, |x| {
        x.origin = a.owned_server_name();
        x.key = OwnedServerSigningKeyId::try_from(a.key.key_id.as_str()).unwrap();
    });
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn request_for_another_destination_is_unauthorized() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let (c, _) = net.server(3).await;
    let alice = alice(&b).await;
    // Signed for `c`, replayed to `b`.
    let req = signed(
        &a,
        c.server_name(),
        Method::GET,
        &profile_path(&alice.user_id),
        None,
    );
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn request_without_destination_from_an_older_server_is_accepted() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    // Before v1.3 the destination was not in the header, but it was always signed.
    let mut req = signed(
        &a,
        b.server_name(),
        Method::GET,
        &profile_path(&alice.user_id),
        None,
    );
    edit_header(&mut req, |x| x.destination = None);
    call(&b, req).await.assert_ok();
}

#[tokio::test]
async fn tampered_body_is_unauthorized_and_claims_nothing() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bob = TestClient::register(&b, "bob").await;
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({ "one_time_keys": {
            "signed_curve25519:AAAA": { "key": "k1", "signatures": {} },
        } }),
    )
    .await
    .assert_ok();
    let claim = |device: &str| json!({ "one_time_keys": { bob.user_id.clone(): { device: "signed_curve25519" } } });
    let path = "/_matrix/federation/v1/user/keys/claim";
    let mut req = signed(
        &a,
        b.server_name(),
        Method::POST,
        path,
        Some(&claim("OTHER")),
    );
    *req.body_mut() = serde_json::to_vec(&claim(&bob.device_id)).unwrap();
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
    // The key is still there for an honest claim.
    let r = call(
        &b,
        signed(
            &a,
            b.server_name(),
            Method::POST,
            path,
            Some(&claim(&bob.device_id)),
        ),
    )
    .await;
    let keys = &r.assert_ok()["one_time_keys"][&bob.user_id][&bob.device_id];
    assert!(keys["signed_curve25519:AAAA"].is_object(), "{}", r.body);
}

#[tokio::test]
async fn tampered_uri_or_method_is_unauthorized() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    let mut req = signed(
        &a,
        b.server_name(),
        Method::GET,
        &profile_path("@nobody:x"),
        None,
    );
    *req.uri_mut() = profile_path(&alice.user_id).parse().unwrap();
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");

    let path = "/_matrix/federation/v1/publicRooms";
    let mut req = signed(&a, b.server_name(), Method::GET, path, None);
    *req.method_mut() = Method::POST;
    *req.body_mut() = b"{}".to_vec();
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn unknown_key_id_of_a_key_named_server_is_unauthorized() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    let mut req = signed(
        &a,
        b.server_name(),
        Method::GET,
        &profile_path(&alice.user_id),
        None,
    );
    edit_header(&mut req, |x| {
        x.key = OwnedServerSigningKeyId::try_from("ed25519:other").unwrap();
    });
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
    assert_eq!(
        net.attempts(),
        0,
        "a key-named origin is never asked for keys"
    );
}

#[tokio::test]
async fn body_that_is_not_json_is_refused_before_any_key_lookup() {
    let net = Network::new();
    let (a, _) = net.named_server("a.test", 1).await;
    let (b, _) = net.server(2).await;
    let mut req = signed(
        &a,
        b.server_name(),
        Method::POST,
        "/_matrix/federation/v1/user/keys/query",
        Some(&json!({ "device_keys": {} })),
    );
    *req.body_mut() = b"{not json".to_vec();
    call(&b, req).await.assert_error(400, "M_NOT_JSON");
    assert_eq!(net.attempts(), 0);
}

#[tokio::test]
async fn every_federation_endpoint_requires_a_signature() {
    let net = Network::new();
    let (b, _) = net.server(2).await;
    let needs_signature: Vec<(Method, String)> = b
        .routes()
        .into_iter()
        .filter(|(_, p)| p.starts_with("/_matrix/federation/"))
        .filter(|(_, p)| !p.ends_with("/version") && !p.ends_with("/openid/userinfo"))
        .collect();
    assert!(needs_signature.len() >= 7, "{needs_signature:?}");
    for (method, template) in needs_signature {
        let path = template.replace("{}", &enc("@alice:x"));
        let r = call(&b, request(method.clone(), &path, Some(&json!({})))).await;
        assert_eq!(r.status.as_u16(), 401, "{method} {path}: {}", r.body);
        assert_eq!(r.body["errcode"], "M_UNAUTHORIZED", "{method} {path}");
    }
}

#[tokio::test]
async fn signed_garbage_to_every_federation_endpoint_gets_a_matrix_error() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let bodies = [
        json!({}),
        json!([]),
        json!(null),
        json!({ "device_keys": 5, "one_time_keys": [] }),
        json!({ "limit": "many", "filter": 3 }),
    ];
    for (method, template) in b.routes() {
        if !template.starts_with("/_matrix/federation/") && !template.starts_with("/_matrix/key/") {
            continue;
        }
        let path = template.replace("{}", &enc("!x:y"));
        for body in &bodies {
            let r = call(
                &b,
                signed(&a, b.server_name(), method.clone(), &path, Some(body)),
            )
            .await;
            let status = r.status.as_u16();
            assert!(
                status < 500,
                "{method} {path} {body} -> {status} {}",
                r.body
            );
            if status >= 400 {
                assert!(
                    r.body["errcode"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("M_")),
                    "{method} {path} {body} -> {}",
                    r.body
                );
            }
        }
    }
}

#[tokio::test]
async fn own_name_as_origin_must_carry_this_servers_signature() {
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.server(2).await;
    let alice = alice(&b).await;
    let mut req = signed(
        &a,
        b.server_name(),
        Method::GET,
        &profile_path(&alice.user_id),
        None,
    );
    edit_header(&mut req, |x| {
        x.origin = b.owned_server_name();
        x.key = OwnedServerSigningKeyId::try_from(b.key.key_id.as_str()).unwrap();
    });
    call(&b, req).await.assert_error(401, "M_UNAUTHORIZED");
}
