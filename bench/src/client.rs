//! A minimal Matrix client over one kept-alive HTTP/1.1 connection: just the calls the
//! benchmark makes, with every non-200 answer turned into an error that names the request.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("building request: {0}")]
    Request(#[from] http::Error),
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {path}: response is not the expected JSON: {body}")]
    Shape {
        method: Method,
        path: String,
        body: String,
    },
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Percent-encodes one path segment (room ids contain `!` and `:`).
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One connection; requests on it are sequential, as HTTP/1.1 requires.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    token: Option<String>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Connect { addr, source })?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::task::spawn_local(async move {
            // The connection ends when the sender is dropped or the server goes away; a request
            // in flight then fails with its own error.
            let _ = conn.await;
        });
        Ok(Self {
            addr,
            sender,
            token: None,
        })
    }

    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(bytes))?)
            .await?;
        let status = resp.status();
        let raw = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            let body = String::from_utf8_lossy(&raw).chars().take(500).collect();
            return Err(ClientError::Status {
                method,
                path: path.to_owned(),
                status,
                body,
            });
        }
        serde_json::from_slice(&raw).map_err(|_| ClientError::Shape {
            method,
            path: path.to_owned(),
            body: String::from_utf8_lossy(&raw).chars().take(500).collect(),
        })
    }

    fn field(&self, v: &Value, key: &str, method: Method, path: &str) -> Result<String> {
        v.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Shape {
                method,
                path: path.to_owned(),
                body: v.to_string(),
            })
    }

    /// Registers `localpart` (dummy auth) and keeps its access token. Returns the user id.
    pub async fn register(&mut self, localpart: &str) -> Result<String> {
        let path = "/_matrix/client/v3/register";
        let body = json!({
            "username": localpart,
            "password": "benchmark password, long enough",
            "auth": { "type": "m.login.dummy" },
            "initial_device_display_name": "hearth-bench",
        });
        let v = self.call(Method::POST, path, Some(&body)).await?;
        self.token = Some(self.field(&v, "access_token", Method::POST, path)?);
        self.field(&v, "user_id", Method::POST, path)
    }

    pub async fn create_room(&mut self, invite: &[&str]) -> Result<String> {
        let path = "/_matrix/client/v3/createRoom";
        let v = self
            .call(
                Method::POST,
                path,
                Some(&json!({ "preset": "private_chat", "invite": invite })),
            )
            .await?;
        self.field(&v, "room_id", Method::POST, path)
    }

    pub async fn join(&mut self, room_id: &str) -> Result<()> {
        let path = format!("/_matrix/client/v3/rooms/{}/join", enc(room_id));
        self.call(Method::POST, &path, Some(&json!({})))
            .await
            .map(drop)
    }

    /// Sends an `m.room.message` with transaction id `txn`. Returns the event id.
    pub async fn send(&mut self, room_id: &str, txn: &str, body: &str) -> Result<String> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            enc(room_id),
            enc(txn)
        );
        let v = self
            .call(
                Method::PUT,
                &path,
                Some(&json!({ "msgtype": "m.text", "body": body })),
            )
            .await?;
        self.field(&v, "event_id", Method::PUT, &path)
    }

    /// One `/sync`; `since = None` is the initial sync.
    pub async fn sync(&mut self, since: Option<&str>, timeout_ms: u64) -> Result<Value> {
        let path = match since {
            Some(s) => format!(
                "/_matrix/client/v3/sync?since={}&timeout={timeout_ms}",
                enc(s)
            ),
            None => format!("/_matrix/client/v3/sync?timeout={timeout_ms}"),
        };
        self.call(Method::GET, &path, None).await
    }

    pub fn next_batch(v: &Value) -> Result<String> {
        v.get("next_batch")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Shape {
                method: Method::GET,
                path: "/_matrix/client/v3/sync".into(),
                body: v.to_string().chars().take(500).collect(),
            })
    }
}

/// Whether a sync response carries a timeline event in `room_id` whose body is `body`.
pub fn sync_has_message(sync: &Value, room_id: &str, body: &str) -> bool {
    sync.pointer("/rooms/join")
        .and_then(|j| j.get(room_id))
        .and_then(|r| r.pointer("/timeline/events"))
        .and_then(Value::as_array)
        .is_some_and(|evs| {
            evs.iter()
                .any(|e| e.pointer("/content/body").and_then(Value::as_str) == Some(body))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_message_in_joined_timeline() {
        let sync = json!({"rooms": {"join": {"!r:x": {"timeline": {"events": [
            {"type": "m.room.message", "content": {"body": "hi 1"}}
        ]}}}}});
        assert!(sync_has_message(&sync, "!r:x", "hi 1"));
        assert!(!sync_has_message(&sync, "!r:x", "hi 2"));
        assert!(!sync_has_message(&sync, "!other:x", "hi 1"));
        assert!(!sync_has_message(
            &json!({"next_batch": "s1"}),
            "!r:x",
            "hi 1"
        ));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(enc("!room:abc"), "%21room%3Aabc");
    }
}
