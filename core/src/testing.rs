//! Helpers for tests and benchmarks: a world with a movable clock, a small client that
//! speaks to a [`Homeserver`] through [`Homeserver::handle`], and an in-process network of
//! federating servers ([`network`]).

pub mod network;

pub mod footprint;

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use crate::storage::MemoryStorage;
use crate::world::{LocalBoxFuture, World};
use crate::{Config, Homeserver};

/// Real time plus an adjustable offset, a seeded PRNG, and thread-backed timers that work
/// under any executor. Not for production: the PRNG is not cryptographic.
pub struct TestWorld {
    offset_ms: Cell<u64>,
    rng: Cell<u64>,
}

impl TestWorld {
    pub fn new(seed: u64) -> Self {
        Self {
            offset_ms: Cell::new(0),
            rng: Cell::new(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Moves the clock forward (timers are unaffected).
    pub fn advance(&self, ms: u64) {
        self.offset_ms.set(self.offset_ms.get() + ms);
    }
}

impl World for TestWorld {
    fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        real + self.offset_ms.get()
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for b in buf {
            // splitmix64
            let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.rng.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        Box::pin(ThreadSleep::new(duration))
    }
}

struct ThreadSleep {
    state: Arc<Mutex<(bool, Option<Waker>)>>,
}

impl ThreadSleep {
    fn new(d: Duration) -> Self {
        let state = Arc::new(Mutex::new((false, None::<Waker>)));
        let s2 = state.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            if let Ok(mut g) = s2.lock() {
                g.0 = true;
                if let Some(w) = g.1.take() {
                    w.wake();
                }
            }
        });
        Self { state }
    }
}

impl std::future::Future for ThreadSleep {
    type Output = ();
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let Ok(mut g) = self.state.lock() else {
            return std::task::Poll::Ready(());
        };
        if g.0 {
            std::task::Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }
}

/// The configuration of test servers: the defaults with cheap password hashing.
pub fn test_config() -> Config {
    Config {
        password_hash_memory_kib: 64,
        ..Config::default()
    }
}

/// A server on fresh in-memory storage with cheap password hashing.
pub async fn test_server(seed: u64) -> (Homeserver, Rc<TestWorld>) {
    let world = Rc::new(TestWorld::new(seed));
    let hs = Homeserver::new(Rc::new(MemoryStorage::new()), world.clone(), test_config())
        .await
        .expect("server boots on fresh memory storage");
    (hs, world)
}

/// A response decoded for assertions.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub body: Value,
    pub raw: Vec<u8>,
    pub headers: http::HeaderMap,
}

impl TestResponse {
    /// Panics unless the response is a Matrix error with this status and errcode.
    pub fn assert_error(&self, status: u16, errcode: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.body);
        assert_eq!(
            self.body["errcode"], errcode,
            "errcode; body: {}",
            self.body
        );
        assert!(
            self.body["error"].is_string(),
            "error message missing; body: {}",
            self.body
        );
        self
    }

    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }
}

/// Sends requests to a homeserver, optionally as a logged-in user.
#[derive(Clone)]
pub struct TestClient {
    pub hs: Homeserver,
    pub token: Option<String>,
    pub user_id: String,
    pub device_id: String,
}

impl TestClient {
    pub fn anonymous(hs: &Homeserver) -> Self {
        Self {
            hs: hs.clone(),
            token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    /// Registers `localpart` with a password through the real endpoint (dummy auth).
    pub async fn register(hs: &Homeserver, localpart: &str) -> Self {
        let anon = Self::anonymous(hs);
        let body = json!({
            "username": localpart,
            "password": "correct horse battery staple",
            "auth": { "type": "m.login.dummy" },
        });
        let r = anon
            .request(Method::POST, "/_matrix/client/v3/register", Some(body))
            .await;
        let v = r.assert_ok();
        Self {
            hs: hs.clone(),
            token: v["access_token"].as_str().map(str::to_owned),
            user_id: v["user_id"].as_str().unwrap_or_default().to_owned(),
            device_id: v["device_id"].as_str().unwrap_or_default().to_owned(),
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> TestResponse {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap_or_default())
            .unwrap_or_default();
        self.request_raw(method, path, bytes, "application/json")
            .await
    }

    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> TestResponse {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type);
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(body).expect("test request builds");
        let resp = self.hs.handle(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let raw = resp.into_body();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        TestResponse {
            status,
            body,
            raw,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> TestResponse {
        self.request(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> TestResponse {
        self.request(Method::DELETE, path, None).await
    }
}

/// Percent-encodes one path segment (room ids, event ids, user ids).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
