//! Garbage sent to every route must get a Matrix error, never a panic or a 500.

use hearth_core::testing::{TestClient, test_server};
use http::Method;

const BODIES: &[&[u8]] = &[
    b"",
    b"{",
    b"[]",
    b"{}",
    b"null",
    b"\"text\"",
    b"{\"type\": 5}",
    b"{\"type\": \"m.login.password\"}",
    b"{\"auth\": {\"type\": 7}}",
    b"{\"user_id\": \"not a user id\", \"room_id\": [], \"event_id\": {}}",
    b"\xff\xfe\x00garbage",
];

fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| if s == "{}" { "%21x%3Ay" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_answers_garbage_with_a_matrix_error() {
    let (hs, _) = test_server(99).await;
    let alice = TestClient::register(&hs, "alice").await;
    let anon = TestClient::anonymous(&hs);
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, template) in hs.routes() {
        let path = concrete(&template);
        for client in [&alice, &anon] {
            for body in BODIES {
                let r = client
                    .request_raw(method.clone(), &path, body.to_vec(), "application/json")
                    .await;
                checked += 1;
                let ok =
                    r.status.as_u16() < 500 || r.status.as_u16() == 503 || r.status.as_u16() == 504;
                // Success with a garbage body is fine for endpoints that take no body.
                if !ok {
                    failures.push(format!(
                        "{method} {path} body={:?} -> {} {}",
                        String::from_utf8_lossy(body),
                        r.status,
                        r.body
                    ));
                } else if !r.status.is_success() && method != Method::HEAD {
                    let errcode = r.body["errcode"].as_str().unwrap_or("");
                    let has_flows = r.body["flows"].is_array();
                    if !errcode.starts_with("M_")
                        && !has_flows
                        && r.headers
                            .get("content-type")
                            .is_some_and(|c| c == "application/json")
                    {
                        failures.push(format!(
                            "{method} {path}: error without errcode: {}",
                            r.body
                        ));
                    }
                }
            }
        }
    }
    println!("checked {checked} garbage requests");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
