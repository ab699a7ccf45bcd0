//! The testhost binary over real loopback HTTP: its startup line, pass-through of the core's
//! answers (errors and the body limit included), and concurrency between connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A running testhost, killed on drop.
struct Host {
    child: Child,
    addr: SocketAddr,
    server_name: String,
}

impl Host {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth-testhost"))
            .args(["--listen", "127.0.0.1:0"])
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
        let (addr, server_name) = rest
            .split_once(" server_name=")
            .expect("startup line names the server");
        Self {
            child,
            addr: addr.parse().expect("startup line has ip:port"),
            server_name: server_name.to_owned(),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    headers: String,
    body: Value,
}

/// One request on its own connection (`Connection: close`), read to the end.
fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    // The server may answer (413) and close before taking the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn register(addr: SocketAddr, name: &str) -> String {
    let body = json!({"username": name, "password": "a long enough password", "auth": {"type": "m.login.dummy"}});
    let a = request(
        addr,
        "POST",
        "/_matrix/client/v3/register",
        None,
        body.to_string().as_bytes(),
    );
    assert_eq!(a.status, 200, "register: {}", a.body);
    a.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[test]
fn startup_line_names_a_reachable_url_and_the_key_derived_server_name() {
    let host = Host::start();
    assert_eq!(host.server_name.len(), 64);
    assert!(
        host.server_name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let a = request(host.addr, "GET", "/_matrix/client/versions", None, b"");
    assert_eq!(a.status, 200);
    assert!(
        a.body["versions"].as_array().is_some_and(|v| !v.is_empty()),
        "{}",
        a.body
    );
    assert!(
        a.headers.contains("content-type: application/json"),
        "{}",
        a.headers
    );
}

#[test]
fn core_errors_pass_through_with_status_and_errcode() {
    let host = Host::start();
    let a = request(
        host.addr,
        "GET",
        "/_matrix/client/v3/no/such/endpoint",
        None,
        b"",
    );
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (404, Some("M_UNRECOGNIZED"))
    );
    let a = request(
        host.addr,
        "GET",
        "/_matrix/client/v3/account/whoami",
        None,
        b"",
    );
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let a = request(
        host.addr,
        "POST",
        "/_matrix/client/v3/register",
        None,
        b"{not json",
    );
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (400, Some("M_NOT_JSON"))
    );
}

#[test]
fn body_over_the_limit_is_refused_by_the_core_with_413() {
    let host = Host::start();
    // The testhost keeps the core's default configuration.
    let body = vec![b' '; hearth_core::DEFAULT_MAX_BODY + 1];
    let a = request(
        host.addr,
        "POST",
        "/_matrix/client/v3/register",
        None,
        &body,
    );
    assert_eq!(
        (a.status, a.body["errcode"].as_str()),
        (413, Some("M_TOO_LARGE"))
    );
}

#[test]
fn stalled_connection_does_not_block_others() {
    let host = Host::start();
    let mut stalled = TcpStream::connect(host.addr).expect("connect");
    stalled
        .write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n")
        .expect("partial head");
    let start = Instant::now();
    let a = request(host.addr, "GET", "/_matrix/client/versions", None, b"");
    assert_eq!(a.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn waiting_sync_long_poll_does_not_block_other_requests() {
    let host = Host::start();
    let token = register(host.addr, "poller");
    let first = request(
        host.addr,
        "GET",
        "/_matrix/client/v3/sync?timeout=0",
        Some(&token),
        b"",
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let since = first.body["next_batch"]
        .as_str()
        .expect("next_batch")
        .to_owned();
    let addr = host.addr;
    let poll_token = token.clone();
    let started = Instant::now();
    let poll = std::thread::spawn(move || {
        let a = request(
            addr,
            "GET",
            &format!("/_matrix/client/v3/sync?since={since}&timeout=3000"),
            Some(&poll_token),
            b"",
        );
        (a.status, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let who = request(
        host.addr,
        "GET",
        "/_matrix/client/v3/account/whoami",
        Some(&token),
        b"",
    );
    assert_eq!(who.status, 200, "{}", who.body);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "whoami waited {:?} behind the long-poll",
        t.elapsed()
    );
    let (status, waited) = poll.join().expect("poll thread");
    assert_eq!(status, 200);
    // Nothing happened for this user, so the poll was held until its timeout.
    assert!(
        waited >= Duration::from_millis(2900),
        "idle poll returned after {waited:?}"
    );
}
