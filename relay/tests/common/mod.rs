//! A relay in this process and simulated servers that talk to it over real WebSocket.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures::{SinkExt, StreamExt};
use hearth_relay::{AppState, Config};
use hearth_relay_proto::auth;
use hearth_relay_proto::frame::{self, Frame, Hello, VERSION};
use hearth_relay_proto::{Client, Incoming};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Relay {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), hearth_relay::RelayError>>>,
    _www: tempfile::TempDir,
}

impl Relay {
    /// Starts a relay on a free loopback port with extra arguments.
    pub async fn start(args: &[&str]) -> Relay {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let www = tempfile::tempdir().unwrap();
        let mut argv = vec![
            "--listen",
            "127.0.0.1:0",
            "--www",
            www.path().to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        let config = Config::from_args(argv).unwrap();
        let state = AppState::new(&config).unwrap();
        let listener = hearth_relay::bind(&config).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(hearth_relay::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Relay {
            addr,
            stop: Some(stop),
            task: Some(task),
            _www: www,
        }
    }

    /// A relay running elsewhere (another process), for the helpers that need an address.
    pub fn external(addr: SocketAddr) -> Relay {
        Relay {
            addr,
            stop: None,
            task: None,
            _www: tempfile::tempdir().unwrap(),
        }
    }

    pub async fn with_data(dir: &Path, args: &[&str]) -> Relay {
        let mut argv = vec!["--data", dir.to_str().unwrap()];
        argv.extend_from_slice(args);
        Self::start(&argv).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown, waited for: afterwards the queue store is closed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("relay did not stop")
                .unwrap()
                .unwrap();
        }
    }

    pub async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until a metric sample reaches `value`.
pub async fn wait_metric(relay: &Relay, sample: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = relay.metrics().await;
        if metric(&m, sample) == value {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sample} never reached {value}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// The value of one metric sample in a `/metrics` text, by its full name with labels.
pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in metrics"))
        .parse()
        .unwrap()
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn name(key: &SigningKey) -> String {
    auth::name_of_key(&key.verifying_key().to_bytes())
}

/// A simulated server: a WebSocket to the relay and the protocol helper.
pub struct Server {
    pub name: String,
    pub ws: Ws,
    pub client: Client,
    pub queued_at_welcome: u32,
}

pub async fn open(relay: &Relay) -> Ws {
    let url = format!("ws://{}/_hearth/relay", relay.addr);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .unwrap();
    ws
}

/// Reads binary frames until the next one (pings are answered by tungstenite itself).
pub async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no frame in time")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Binary(b) => return b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }
}

/// Reads until the relay closes the socket; returns the close code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("not closed in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => return (0, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return (0, e.to_string()),
        }
    }
}

/// Reads the challenge and returns its nonce.
pub async fn challenge(ws: &mut Ws) -> [u8; 32] {
    match Frame::decode(&next_binary(ws).await).unwrap() {
        Frame::Challenge(c) => {
            assert_eq!(c.version, VERSION);
            c.nonce
        }
        other => panic!("expected a challenge, got {other:?}"),
    }
}

pub fn hello(name: &str, origin: &str, signature: [u8; 64]) -> Vec<u8> {
    Hello {
        version: VERSION,
        name,
        origin,
        signature,
    }
    .encode()
    .unwrap()
}

impl Server {
    /// Connects and proves the name of `key`.
    pub async fn connect(relay: &Relay, key: &SigningKey) -> Server {
        let name = name(key);
        let mut client = Client::new(&relay.url(), &name).unwrap();
        let mut ws = open(relay).await;
        let bytes = next_binary(&mut ws).await;
        let Incoming::Challenge(c) = client.on_frame(&bytes).unwrap() else {
            panic!("expected a challenge")
        };
        let hello = client.hello(&c, |m| key.sign(m).to_bytes()).unwrap();
        ws.send(Message::Binary(hello.into())).await.unwrap();
        let bytes = next_binary(&mut ws).await;
        let Incoming::Welcome { queued } = client.on_frame(&bytes).unwrap() else {
            panic!("expected a welcome")
        };
        Server {
            name,
            ws,
            client,
            queued_at_welcome: queued,
        }
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// Sends a request and returns its id.
    pub async fn request(
        &mut self,
        dest: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
    ) -> u32 {
        let mut b = http::Request::builder().method(method).uri(path);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        let (id, bytes) = self
            .client
            .request(dest, &b.body(body.to_vec()).unwrap())
            .unwrap();
        self.send_raw(bytes).await;
        id
    }

    pub async fn send_txn(&mut self, dest: &str, txn: &str) -> u32 {
        let path = format!("/_matrix/federation/v1/send/{txn}");
        self.request(
            dest,
            "PUT",
            &path,
            &[("content-type", b"application/json")],
            b"{\"pdus\":[]}",
        )
        .await
    }

    pub async fn next_frame(&mut self) -> Vec<u8> {
        next_binary(&mut self.ws).await
    }

    /// The next frame, which must be a request: (id, peer, method, path, body).
    pub async fn expect_request(&mut self) -> (u32, String, String, String, Vec<u8>) {
        let bytes = self.next_frame().await;
        match Frame::decode(&bytes).unwrap() {
            Frame::Request(r) => (
                r.id,
                r.peer.to_owned(),
                r.method.to_owned(),
                r.path.to_owned(),
                r.body.to_vec(),
            ),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// The next frame, which must be a response: (id, status, headers, body).
    pub async fn expect_response(&mut self) -> (u32, u16, Vec<(String, Vec<u8>)>, Vec<u8>) {
        let bytes = self.next_frame().await;
        match Frame::decode(&bytes).unwrap() {
            Frame::Response(r) => (
                r.id,
                r.status,
                r.headers
                    .iter()
                    .map(|(n, v)| (n.to_owned(), v.to_vec()))
                    .collect(),
                r.body.to_vec(),
            ),
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub async fn respond(&mut self, id: u32, status: u16, body: &[u8]) {
        let f = frame::encode_response(
            id,
            status,
            [("content-type", b"application/json".as_slice())],
            body,
        )
        .unwrap();
        self.send_raw(f).await;
    }

    /// Round trip A → B → A of a small request, answered by B.
    pub async fn ping_through(&mut self, other: &mut Server) {
        let id = self
            .request(
                &other.name.clone(),
                "GET",
                "/_matrix/federation/v1/version",
                &[],
                b"",
            )
            .await;
        let (rid, peer, ..) = other.expect_request().await;
        assert_eq!(peer, self.name);
        other.respond(rid, 200, b"{}").await;
        let (got, status, ..) = self.expect_response().await;
        assert_eq!((got, status), (id, 200));
    }
}

pub fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}
