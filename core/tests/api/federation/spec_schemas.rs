//! Every answer of the read-only federation endpoints, successes and errors, checked against
//! the schemas of the spec's Server-Server API.

use hearth_core::testing::TestClient;
use hearth_core::testing::network::Network;
use http::Method;
use serde_json::{Value, json};

use super::{call, enc, request, signed};
use crate::spec::Spec;

#[tokio::test]
async fn federation_answers_match_the_server_server_spec() {
    let spec = Spec::load_api("server-server");
    // The checker is not vacuous.
    assert!(
        spec.validate(
            &Method::GET,
            "/_matrix/federation/v1/version",
            200,
            br#"{"server": 5}"#
        )
        .is_err()
    );
    assert!(
        spec.validate(
            &Method::GET,
            "/_matrix/key/v2/server",
            200,
            br#"{"server_name": "x"}"#
        )
        .is_err()
    );
    let net = Network::new();
    let (a, _) = net.server(1).await;
    let (b, _) = net.named_server("b.test", 2).await;
    let (n, _) = net.named_server("n.test", 3).await;
    let bob = TestClient::register(&b, "bob").await;
    bob.post(
        "/_matrix/client/v3/keys/upload",
        json!({
            "device_keys": {
                "user_id": bob.user_id, "device_id": bob.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                "keys": { format!("ed25519:{}", bob.device_id): "ed" },
                "signatures": { bob.user_id.clone(): { format!("ed25519:{}", bob.device_id): "sig" } },
            },
            "one_time_keys": { "signed_curve25519:AAAA": { "key": "otkA", "signatures": {} } },
        }),
    )
    .await
    .assert_ok();
    bob.post(
        "/_matrix/client/v3/createRoom",
        json!({ "room_alias_name": "hall", "visibility": "public", "name": "Hall", "topic": "t" }),
    )
    .await
    .assert_ok();
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
    let user = enc(&bob.user_id);
    let nobody = enc(&format!("@nobody:{}", b.server_name()));
    let alias = enc(&format!("#hall:{}", b.server_name()));
    let missing_alias = enc(&format!("#none:{}", b.server_name()));
    let claim = json!({ "one_time_keys": { bob.user_id.clone(): { bob.device_id.clone(): "signed_curve25519" } } });

    // (method, path, body, signed, expected status)
    let cases: Vec<(Method, String, Option<Value>, bool, u16)> = vec![
        (
            Method::GET,
            "/_matrix/federation/v1/version".into(),
            None,
            false,
            200,
        ),
        (
            Method::GET,
            "/_matrix/key/v2/server".into(),
            None,
            false,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/key/v2/query/{}", n.server_name()),
            None,
            false,
            200,
        ),
        (
            Method::GET,
            "/_matrix/key/v2/query/gone.test".into(),
            None,
            false,
            200,
        ),
        (
            Method::POST,
            "/_matrix/key/v2/query".into(),
            Some(json!({ "server_keys": { n.server_name().as_str(): {} } })),
            false,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/query/profile?user_id={user}"),
            None,
            true,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/query/profile?user_id={user}&field=displayname"),
            None,
            true,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/query/profile?user_id={nobody}"),
            None,
            true,
            404,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/query/directory?room_alias={alias}"),
            None,
            true,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/query/directory?room_alias={missing_alias}"),
            None,
            true,
            404,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/user/devices/{user}"),
            None,
            true,
            200,
        ),
        (
            Method::POST,
            "/_matrix/federation/v1/user/keys/query".into(),
            Some(json!({ "device_keys": { bob.user_id.clone(): [] } })),
            true,
            200,
        ),
        (
            Method::POST,
            "/_matrix/federation/v1/user/keys/claim".into(),
            Some(claim),
            true,
            200,
        ),
        (
            Method::GET,
            format!("/_matrix/federation/v1/openid/userinfo?access_token={token}"),
            None,
            false,
            200,
        ),
        (
            Method::GET,
            "/_matrix/federation/v1/openid/userinfo?access_token=x".into(),
            None,
            false,
            401,
        ),
        (
            Method::GET,
            "/_matrix/federation/v1/publicRooms".into(),
            None,
            true,
            200,
        ),
        (
            Method::GET,
            "/_matrix/federation/v1/publicRooms?limit=1".into(),
            None,
            true,
            200,
        ),
        (
            Method::POST,
            "/_matrix/federation/v1/publicRooms".into(),
            Some(json!({ "filter": { "generic_search_term": "hall" } })),
            true,
            200,
        ),
        // Refused for want of a signature: the standard error.
        (
            Method::GET,
            "/_matrix/federation/v1/publicRooms".into(),
            None,
            false,
            401,
        ),
    ];
    let mut problems = Vec::new();
    for (method, path, body, sign, status) in cases {
        let req = if sign {
            signed(&a, b.server_name(), method.clone(), &path, body.as_ref())
        } else {
            request(method.clone(), &path, body.as_ref())
        };
        let r = call(&b, req).await;
        if r.status.as_u16() != status {
            problems.push(format!(
                "{method} {path}: {} (wanted {status}) {}",
                r.status, r.body
            ));
            continue;
        }
        if let Err(violations) = spec.validate(&method, &path, status, &r.raw) {
            for v in violations {
                problems.push(format!("{method} {path} → {status}: {v:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
