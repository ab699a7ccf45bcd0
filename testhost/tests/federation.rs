//! Two testhosts federating over real loopback HTTPS: named servers (`127.0.0.1:<port>`) with
//! self-signed certificates, each fetching the other's key and checking its X-Matrix
//! signatures. And two key-named testhosts federating through a Hearth relay, as browser
//! servers do.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName as TlsName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};
use serde_json::{Value, json};

/// A running testhost with a federation listener, killed on drop.
struct Host {
    child: Child,
    http: SocketAddr,
    federation: SocketAddr,
    server_name: String,
}

impl Host {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth-testhost"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--server-name",
                "127.0.0.1:0",
                "--federation-listen",
                "127.0.0.1:0",
                "--federation-insecure-tls",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("testhost starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("testhost prints its startup line");
        let rest = line
            .trim_end()
            .strip_prefix("hearth-testhost listening on http://")
            .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
        let mut parts = rest.split(' ');
        let http = parts.next().expect("address").parse().expect("ip:port");
        let server_name = parts
            .next()
            .and_then(|p| p.strip_prefix("server_name="))
            .expect("server name")
            .to_owned();
        let federation: SocketAddr = parts
            .next()
            .and_then(|p| p.strip_prefix("federation=https://"))
            .expect("federation address")
            .parse()
            .expect("ip:port");
        assert_eq!(
            server_name,
            federation.to_string(),
            "port 0 took the listener's port"
        );
        Self {
            child,
            http,
            federation,
            server_name,
        }
    }
}

/// A relay on a free loopback port, killed on drop.
struct Relay {
    child: Child,
    url: String,
    _www: std::path::PathBuf,
}

impl Relay {
    fn start() -> Self {
        let bin = relay_binary();
        let www = std::env::temp_dir().join(format!("hearth-relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&www).expect("www dir");
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--www"])
            .arg(&www)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("relay starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("relay prints its address");
        let url = line
            .trim()
            .strip_prefix("hearth-relay listening on ")
            .unwrap_or_else(|| panic!("unexpected relay line {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            _www: www,
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay binary of this workspace, built if `cargo test` has not built it yet.
fn relay_binary() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/hearth-relay");
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "hearth-relay"])
            .status()
            .expect("cargo runs");
        assert!(ok.success(), "building hearth-relay failed");
    }
    bin
}

/// A key-named testhost that federates through `relay` (it has no federation listener: its
/// `federation` address is the client one, unused).
fn start_relayed(relay: &Relay) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth-testhost"))
        .args(["--listen", "127.0.0.1:0", "--relay", &relay.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("testhost starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("startup line");
    let rest = line
        .trim_end()
        .strip_prefix("hearth-testhost listening on http://")
        .unwrap_or_else(|| panic!("unexpected startup line {line:?}"));
    let mut parts = rest.split(' ');
    let http = parts.next().expect("address").parse().expect("ip:port");
    let server_name = parts
        .next()
        .and_then(|p| p.strip_prefix("server_name="))
        .expect("server name")
        .to_owned();
    Host {
        child,
        http,
        federation: http,
        server_name,
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Accepts the testhosts' self-signed certificates (the handshake signature is still checked).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &TlsName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

struct Answer {
    status: u16,
    body: Value,
}

/// One HTTP/1.1 exchange on `stream` (`Connection: close`), read to the end.
fn exchange(
    mut stream: impl Read + Write,
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    Answer {
        status,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s
}

/// A plain-HTTP client API request.
fn client(h: &Host, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    exchange(
        tcp(h.http),
        &h.http.to_string(),
        method,
        path,
        token,
        body.as_ref(),
    )
}

/// The testhost's own TLS provider (see its `tls.rs` for why *ring*).
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    ring::default_provider()
}

/// An unsigned HTTPS request to the federation port.
fn federation(h: &Host, method: &str, path: &str) -> Answer {
    let config = ClientConfig::builder_with_provider(Arc::new(ring_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(
            ring_provider().signature_verification_algorithms,
        )))
        .with_no_client_auth();
    let name = TlsName::IpAddress(h.federation.ip().into());
    let conn = ClientConnection::new(Arc::new(config), name).expect("TLS client");
    exchange(
        StreamOwned::new(conn, tcp(h.federation)),
        &h.server_name,
        method,
        path,
        None,
        None,
    )
}

/// Registers `localpart`; its access token and user id.
fn register(h: &Host, localpart: &str) -> (String, String) {
    let r = client(
        h,
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(json!({
            "username": localpart,
            "password": "correct horse battery staple",
            "auth": { "type": "m.login.dummy" },
        })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    (
        r.body["access_token"].as_str().expect("token").to_owned(),
        r.body["user_id"].as_str().expect("user id").to_owned(),
    )
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn two_named_testhosts_federate_over_https() {
    let a = Host::start();
    let b = Host::start();

    for h in [&a, &b] {
        let v = federation(h, "GET", "/_matrix/federation/v1/version");
        assert_eq!(v.status, 200, "{}", v.body);
        assert_eq!(v.body["server"]["name"], "Hearth");
        let k = federation(h, "GET", "/_matrix/key/v2/server");
        assert_eq!(k.status, 200, "{}", k.body);
        assert_eq!(k.body["server_name"], h.server_name.as_str());
        // The federation port serves nothing else.
        let c = federation(h, "GET", "/_matrix/client/versions");
        assert_eq!(c.status, 404, "{}", c.body);
    }

    let (alice_token, alice) = register(&a, "alice");
    let (bob_token, bob) = register(&b, "bob");
    assert_eq!(bob, format!("@bob:{}", b.server_name));
    let r = client(
        &b,
        "PUT",
        &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob)),
        Some(&bob_token),
        Some(json!({ "displayname": "Bob of B" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // a → b: `a` signs, `b` fetches `a`'s key over HTTPS and checks the signature.
    let r = client(
        &a,
        "GET",
        &format!("/_matrix/client/v3/profile/{}", enc(&bob)),
        Some(&alice_token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({ "displayname": "Bob of B" }));
    // b → a.
    let r = client(
        &b,
        "GET",
        &format!("/_matrix/client/v3/profile/{}", enc(&alice)),
        Some(&bob_token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({ "displayname": "alice" }));

    // Without a signature, the same query is refused.
    let r = federation(
        &b,
        "GET",
        &format!("/_matrix/federation/v1/query/profile?user_id={}", enc(&bob)),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.body["errcode"], "M_UNAUTHORIZED");

    // What a remote profile lookup costs once keys are cached and a connection is open.
    let mut times = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let r = client(
            &a,
            "GET",
            &format!("/_matrix/client/v3/profile/{}", enc(&bob)),
            Some(&alice_token),
            None,
        );
        times.push(start.elapsed());
        assert_eq!(r.status, 200);
    }
    times.sort();
    println!(
        "remote profile lookup over loopback HTTPS: median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

/// Long-polls `/sync` from `since` until an event with `body` appears in `room`; the new
/// `since`.
fn wait_for_body(h: &Host, token: &str, room: &str, since: &str, body: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since = since.to_owned();
    loop {
        assert!(
            Instant::now() < deadline,
            "{body:?} never arrived in {room}"
        );
        let path = if since.is_empty() {
            "/_matrix/client/v3/sync?timeout=0".to_owned()
        } else {
            format!("/_matrix/client/v3/sync?timeout=10000&since={since}")
        };
        let r = client(h, "GET", &path, Some(token), None);
        assert_eq!(r.status, 200, "{}", r.body);
        since = r.body["next_batch"]
            .as_str()
            .expect("next_batch")
            .to_owned();
        let found = r.body["rooms"]["join"][room]["timeline"]["events"]
            .as_array()
            .is_some_and(|evs| evs.iter().any(|e| e["content"]["body"] == body));
        if found {
            return since;
        }
    }
}

#[test]
fn a_room_spans_two_testhosts_over_https() {
    let a = Host::start();
    let b = Host::start();
    let (alice_token, _alice) = register(&a, "alice");
    let (bob_token, bob) = register(&b, "bob");

    let r = client(
        &a,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice_token),
        Some(json!({ "preset": "private_chat", "invite": [bob] })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let room = r.body["room_id"].as_str().expect("room id").to_owned();
    let r = client(
        &b,
        "POST",
        &format!("/_matrix/client/v3/join/{}", enc(&room)),
        Some(&bob_token),
        Some(json!({})),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let send = |h: &Host, token: &str, txn: &str, body: &str| {
        let r = client(
            h,
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(&room)
            ),
            Some(token),
            Some(json!({ "msgtype": "m.text", "body": body })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    send(&b, &bob_token, "b0", "from b");
    wait_for_body(&a, &alice_token, &room, "", "from b");

    // Delivery latency: a send on `a` until `b`'s long-polling `/sync` returns it.
    let mut since = wait_for_body(&b, &bob_token, &room, "", "from b");
    let mut times = Vec::new();
    for i in 0..40 {
        let body = format!("m{i}");
        let start = Instant::now();
        send(&a, &alice_token, &format!("a{i}"), &body);
        since = wait_for_body(&b, &bob_token, &room, &since, &body);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "hearth→hearth delivery over loopback HTTPS (send → peer /sync): p50 {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

#[test]
fn two_key_named_testhosts_share_a_room_through_the_relay() {
    let relay = Relay::start();
    let a = start_relayed(&relay);
    let b = start_relayed(&relay);
    let (alice_token, _alice) = register(&a, "alice");
    let (bob_token, bob) = register(&b, "bob");
    assert_eq!(b.server_name.len(), 64, "a key-named server");
    assert!(bob.ends_with(&b.server_name));

    // Both must have said hello to the relay before the first request can cross it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let room = loop {
        let r = client(
            &a,
            "POST",
            "/_matrix/client/v3/createRoom",
            Some(&alice_token),
            Some(json!({ "preset": "private_chat", "invite": [bob] })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let room = r.body["room_id"].as_str().expect("room id").to_owned();
        let j = client(
            &b,
            "POST",
            &format!("/_matrix/client/v3/join/{}", enc(&room)),
            Some(&bob_token),
            Some(json!({})),
        );
        if j.status == 200 {
            break room;
        }
        assert!(Instant::now() < deadline, "bob could not join: {}", j.body);
        std::thread::sleep(Duration::from_millis(200));
    };
    let send = |h: &Host, token: &str, txn: &str, body: &str| {
        let r = client(
            h,
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(&room)
            ),
            Some(token),
            Some(json!({ "msgtype": "m.text", "body": body })),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    send(&b, &bob_token, "b0", "hello through the relay");
    wait_for_body(&a, &alice_token, &room, "", "hello through the relay");

    let mut since = wait_for_body(&b, &bob_token, &room, "", "hello through the relay");
    let mut times = Vec::new();
    for i in 0..40 {
        let body = format!("r{i}");
        let start = Instant::now();
        send(&a, &alice_token, &format!("a{i}"), &body);
        since = wait_for_body(&b, &bob_token, &room, &since, &body);
        times.push(start.elapsed());
    }
    times.sort();
    println!(
        "hearth→hearth delivery through the relay (send → peer /sync): p50 {:?}, p99 {:?}",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}
