//! Endpoint coverage against the Matrix spec: every in-scope Client-Server endpoint of the
//! spec's OpenAPI files is called through `Homeserver::handle` with a valid access token, and
//! one that answers `404`/`405 M_UNRECOGNIZED` is not implemented.
//!
//! Endpoints not implemented yet are listed in `spec/not_yet_implemented.txt`; the test fails on
//! a missing endpoint that is not listed, and on a listed one that is implemented, so the list
//! can only shrink.
#![cfg(not(target_arch = "wasm32"))]

use crate::spec;

use std::collections::{BTreeMap, BTreeSet};

use hearth_core::testing::{TestClient, TestResponse, enc, test_server};
use http::Method;
use serde_json::json;

use spec::{Operation, Spec};

const ALLOWLIST: &str = include_str!("spec/not_yet_implemented.txt");

/// Why an operation is outside what Hearth must serve, or `None` if it is in scope.
fn out_of_scope(op: &Operation) -> Option<&'static str> {
    let p = op.path.as_str();
    if op.deprecated {
        return Some("deprecated");
    }
    if op.appservice_only() {
        return Some("application services only");
    }
    if p.contains("/login/sso/") || p.ends_with("/login/get_token") || p.ends_with("/auth_metadata")
    {
        return Some("SSO / login token / OAuth");
    }
    if p.ends_with("/requestToken") || p.ends_with("/submitToken") {
        return Some("3PID validation");
    }
    // Binding to (and unbinding from) an identity server; Hearth talks to none.
    if p.ends_with("/account/3pid/bind") || p.ends_with("/account/3pid/unbind") {
        return Some("identity-server binding");
    }
    if p.contains("/thirdparty/location")
        || p.contains("/thirdparty/user")
        || p.contains("/thirdparty/protocol/")
    {
        return Some("third-party network lookup");
    }
    if op.file == "policy_server.yaml" {
        return Some("policy server");
    }
    None
}

/// Values for path parameters, taken from a real scenario where there is one.
struct Fixture {
    alice: TestClient,
    room_id: String,
    event_id: String,
    alias: String,
    filter_id: String,
    server_name: String,
    media_id: String,
}

impl Fixture {
    async fn new() -> Self {
        let (hs, _) = test_server(70).await;
        let alice = TestClient::register(&hs, "alice").await;
        let created = alice
            .post(
                "/_matrix/client/v3/createRoom",
                json!({"name": "Coverage", "room_alias_name": "coverage"}),
            )
            .await;
        let room_id = created.assert_ok()["room_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sent = alice
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/send/m.room.message/fixture",
                    enc(&room_id)
                ),
                json!({"msgtype": "m.text", "body": "hello"}),
            )
            .await;
        let event_id = sent.assert_ok()["event_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let filter = alice
            .post(
                &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
                json!({}),
            )
            .await;
        let filter_id = filter.body["filter_id"].as_str().unwrap_or("0").to_owned();
        let upload = alice
            .request_raw(
                Method::POST,
                "/_matrix/media/v3/upload?filename=a.txt",
                b"hello".to_vec(),
                "text/plain",
            )
            .await;
        let media_id = upload.body["content_uri"]
            .as_str()
            .and_then(|uri| uri.rsplit('/').next())
            .unwrap_or("nothing")
            .to_owned();
        let server_name = hs.server_name().to_string();
        Self {
            alias: format!("#coverage:{server_name}"),
            alice,
            room_id,
            event_id,
            filter_id,
            server_name,
            media_id,
        }
    }

    fn param(&self, name: &str, op: &Operation, n: usize) -> String {
        let v = match name {
            "roomId" | "roomIdOrAlias" => self.room_id.clone(),
            "eventId" => self.event_id.clone(),
            "userId" => self.alice.user_id.clone(),
            "deviceId" => self.alice.device_id.clone(),
            "roomAlias" => self.alias.clone(),
            "filterId" => self.filter_id.clone(),
            "serverName" => self.server_name.clone(),
            "mediaId" => self.media_id.clone(),
            "fileName" => "a.txt".into(),
            "txnId" => format!("coverage{n}"),
            "eventType" if op.path.contains("/state/") => "m.room.topic".into(),
            "eventType" if op.path.contains("/relations/") => "m.reaction".into(),
            "eventType" => "m.room.message".into(),
            "stateKey" => String::new(),
            "relType" => "m.annotation".into(),
            "type" => "org.example.coverage".into(),
            "kind" => "override".into(),
            "ruleId" => ".m.rule.master".into(),
            "receiptType" => "m.read".into(),
            "keyName" => "displayname".into(),
            "tag" => "u.work".into(),
            "version" => "1".into(),
            "sessionId" => "session".into(),
            "protocol" => "irc".into(),
            _ => "dummy".into(),
        };
        enc(&v)
    }

    /// A concrete request path for `op`, with the query parameters the endpoint requires (and a
    /// zero timeout where it would otherwise long-poll).
    fn path(&self, op: &Operation, n: usize) -> String {
        let mut path = op.path.clone();
        for name in op.path_params() {
            path = path.replacen(&format!("{{{name}}}"), &self.param(name, op, n), 1);
        }
        let query = match op.path.rsplit('/').next().unwrap_or_default() {
            "sync" | "events" => "timeout=0",
            "messages" => "dir=b",
            "timestamp_to_event" => "ts=0&dir=f",
            "changes" => "from=0&to=0",
            "preview_url" => "url=https%3A%2F%2Fexample.org",
            "available" => "username=nobody",
            "validity" => "token=abc",
            "mutual_rooms" => "user_id=%40bob%3Aexample.org",
            "{mediaId}" if op.path.contains("/thumbnail/") => "width=32&height=32",
            _ => "",
        };
        if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        }
    }
}

/// Operations that end the session, the account or a device: run by a throwaway user so that the
/// rest still has a valid token.
fn destructive(op: &Operation) -> bool {
    let p = op.path.as_str();
    p.ends_with("/logout")
        || p.ends_with("/logout/all")
        || p.ends_with("/account/deactivate")
        || p.ends_with("/account/password")
        || p.ends_with("/delete_devices")
        || (op.method == Method::DELETE && p.contains("/devices/"))
        || p.ends_with("/leave")
        || p.ends_with("/forget")
}

fn method_rank(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::PUT => 1,
        Method::POST => 2,
        Method::DELETE => 3,
        _ => 4,
    }
}

fn unrecognized(r: &TestResponse) -> bool {
    matches!(r.status.as_u16(), 404 | 405) && r.body["errcode"] == "M_UNRECOGNIZED"
}

fn read_allowlist() -> BTreeSet<String> {
    ALLOWLIST
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[tokio::test]
async fn every_in_scope_endpoint_is_implemented_or_listed_as_not_yet() {
    let spec = Spec::load();
    let fx = Fixture::new().await;

    // One endpoint can be described by two files (plain and third-party invite; `/events` both
    // peeking and deprecated): it is in scope if any description is.
    // Keyed by path, then reads before writes before deletes, so a DELETE does not remove what
    // the GET of the same path would have found.
    let mut endpoints: BTreeMap<(String, u8), &Operation> = BTreeMap::new();
    let mut excluded: BTreeMap<&'static str, usize> = BTreeMap::new();
    for op in &spec.operations {
        match out_of_scope(op) {
            Some(reason) => *excluded.entry(reason).or_default() += 1,
            None => {
                endpoints
                    .entry((op.path.clone(), method_rank(&op.method)))
                    .or_insert(op);
            }
        }
    }
    assert!(
        endpoints.len() > 100,
        "only {} in-scope endpoints found: the spec did not load fully",
        endpoints.len()
    );

    let mut missing = BTreeSet::new();
    let mut report = Vec::new();
    for (n, ((_, _), op)) in endpoints.iter().enumerate() {
        let client = if destructive(op) {
            TestClient::register(&fx.alice.hs, &format!("throwaway{n}")).await
        } else {
            fx.alice.clone()
        };
        let path = fx.path(op, n);
        let body = match op.method {
            Method::POST | Method::PUT => Some(json!({})),
            _ => None,
        };
        let r = client.request(op.method.clone(), &path, body).await;
        let errcode = r.body["errcode"].as_str().unwrap_or("").to_owned();
        report.push(format!(
            "  {:3} {:24} {}",
            r.status.as_u16(),
            errcode,
            op.key()
        ));
        if unrecognized(&r) {
            missing.insert(op.key());
        }
    }

    let allow = read_allowlist();
    let in_scope: BTreeSet<String> = endpoints.values().map(|op| op.key()).collect();
    println!("every in-scope endpoint, with the status and errcode it answered:");
    for line in &report {
        println!("{line}");
    }
    println!("out of scope: {excluded:?}");
    println!(
        "in scope: {}, implemented: {}, missing: {}",
        in_scope.len(),
        in_scope.len() - missing.len(),
        missing.len()
    );
    for key in &missing {
        println!("  missing: {key}");
    }

    let unlisted: Vec<&String> = missing.iter().filter(|k| !allow.contains(*k)).collect();
    let now_implemented: Vec<&String> = allow
        .iter()
        .filter(|k| in_scope.contains(*k) && !missing.contains(*k))
        .collect();
    let unknown: Vec<&String> = allow.iter().filter(|k| !in_scope.contains(*k)).collect();
    let mut failures = Vec::new();
    if !unlisted.is_empty() {
        failures.push(format!(
            "not implemented and not in spec/not_yet_implemented.txt: {unlisted:#?}"
        ));
    }
    if !now_implemented.is_empty() {
        failures.push(format!(
            "implemented now: remove from spec/not_yet_implemented.txt: {now_implemented:#?}"
        ));
    }
    if !unknown.is_empty() {
        failures.push(format!(
            "spec/not_yet_implemented.txt lists endpoints that are not in scope: {unknown:#?}"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn scope_rules_keep_protocols_and_drop_lookups() {
    let spec = Spec::load();
    let scoped = |method: Method, path: &str| {
        spec.operations
            .iter()
            .filter(|op| op.method == method && op.path == path)
            .any(|op| out_of_scope(op).is_none())
    };
    assert!(scoped(
        Method::GET,
        "/_matrix/client/v3/thirdparty/protocols"
    ));
    assert!(!scoped(
        Method::GET,
        "/_matrix/client/v3/thirdparty/protocol/{protocol}"
    ));
    assert!(!scoped(
        Method::GET,
        "/_matrix/client/v3/thirdparty/location/{protocol}"
    ));
    assert!(!scoped(Method::GET, "/_matrix/client/v3/thirdparty/user"));
    assert!(!scoped(
        Method::GET,
        "/_matrix/client/v3/login/sso/redirect"
    ));
    assert!(!scoped(Method::POST, "/_matrix/client/v1/login/get_token"));
    assert!(!scoped(Method::GET, "/_matrix/client/v1/auth_metadata"));
    assert!(!scoped(
        Method::POST,
        "/_matrix/client/v3/register/email/requestToken"
    ));
    assert!(!scoped(
        Method::POST,
        "/_matrix/client/v1/appservice/{appserviceId}/ping"
    ));
    assert!(
        !scoped(Method::GET, "/_matrix/media/v3/config"),
        "deprecated media endpoints are out of scope"
    );
    assert!(!scoped(Method::GET, "/.well-known/matrix/policy_server"));
    assert!(scoped(Method::GET, "/_matrix/client/v1/media/config"));
    assert!(scoped(
        Method::POST,
        "/_matrix/client/v3/rooms/{roomId}/invite"
    ));
    assert!(scoped(Method::GET, "/_matrix/client/versions"));
    assert!(scoped(Method::GET, "/.well-known/matrix/client"));
}

#[test]
fn allowlist_is_well_formed() {
    for line in read_allowlist() {
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        assert!(
            ["GET", "PUT", "POST", "DELETE"].contains(&method),
            "bad method in allowlist line {line:?}"
        );
        assert!(path.starts_with('/'), "bad path in allowlist line {line:?}");
        assert!(
            parts.next().is_none(),
            "trailing text in allowlist line {line:?}"
        );
    }
}
