//! The server's side of the protocol, without I/O: what a host (the browser's SharedWorker, a
//! native `hearth-testhost`) needs around its WebSocket.
//!
//! ```text
//! let mut client = Client::new("http://127.0.0.1:8008", &server_name)?;
//! ws = WebSocket::open(client.socket_url())           // ws://127.0.0.1:8008/_hearth/relay
//! for each binary message m:
//!     match client.on_frame(&m)? {
//!         Incoming::Challenge(c) => ws.send(client.hello(&c, |msg| key.sign(msg))),
//!         Incoming::Welcome { .. } => ready: send requests with client.request(dest, &req)
//!         Incoming::Request(r) => {
//!             let answer = homeserver.handle(request_to_http(&r)?).await;
//!             ws.send(response_frame(r.id, &answer)?)
//!         }
//!         Incoming::Response(r) => complete the request `r.id` with response_to_http(&r)
//!     }
//! ```
//!
//! An answer for which [`is_handed_over`] holds means the relay stored the transaction: the
//! sender's queue counts it as sent.

use crate::answer::{self, SOCKET_PATH};
use crate::auth::{self, OriginError};
use crate::frame::{self, Challenge, Frame, FrameError, Hello, Request, Response, VERSION};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the relay sent a {0} frame, which only servers send")]
    Unexpected(&'static str),
    #[error("the relay speaks protocol version {0}, this server {VERSION}")]
    Version(u8),
    #[error("the relay welcomed {got:?}, not this server ({want:?})")]
    WrongName { got: String, want: String },
    #[error("request has no path")]
    NoPath,
    #[error("cannot build an HTTP message: {0}")]
    Http(#[from] http::Error),
}

/// One connection's protocol state: the origin signed for, and the next request id.
#[derive(Debug, Clone)]
pub struct Client {
    origin: String,
    name: String,
    next_id: u32,
    welcomed: bool,
}

/// A decoded frame from the relay.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// Answer it with [`Client::hello`].
    Challenge(Challenge),
    /// The relay accepted the name; `queued` stored transactions follow as requests.
    Welcome { queued: u32 },
    /// A request from `peer` (the authenticated source): answer it with [`response_frame`]
    /// and the same id.
    Request(Request<'a>),
    /// The answer to one of this server's requests.
    Response(Response<'a>),
}

impl Client {
    /// `relay` is the relay's URL (`http://…`, `https://…`, `ws://…` or `wss://…`; a path is
    /// ignored) or, in the page the relay serves, `location.origin`.
    pub fn new(relay: &str, server_name: &str) -> Result<Self, ClientError> {
        Ok(Self {
            origin: auth::normalize_origin(relay)?,
            name: server_name.to_owned(),
            next_id: 1,
            welcomed: false,
        })
    }

    /// The origin this client signs for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The WebSocket URL to open: `ws(s)://host[:port]/_hearth/relay`.
    pub fn socket_url(&self) -> String {
        let ws = match self.origin.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", self.origin.trim_start_matches("http://")),
        };
        format!("{ws}{SOCKET_PATH}")
    }

    /// Whether the relay has accepted this server on the current connection.
    pub fn is_welcomed(&self) -> bool {
        self.welcomed
    }

    /// Decodes a binary message from the relay.
    pub fn on_frame<'a>(&mut self, bytes: &'a [u8]) -> Result<Incoming<'a>, ClientError> {
        Ok(match Frame::decode(bytes)? {
            Frame::Challenge(c) => {
                if c.version != VERSION {
                    return Err(ClientError::Version(c.version));
                }
                self.welcomed = false;
                Incoming::Challenge(c)
            }
            Frame::Welcome(w) => {
                if w.name != self.name {
                    return Err(ClientError::WrongName {
                        got: w.name.to_owned(),
                        want: self.name.clone(),
                    });
                }
                self.welcomed = true;
                Incoming::Welcome { queued: w.queued }
            }
            Frame::Request(r) => Incoming::Request(r),
            Frame::Response(r) => Incoming::Response(r),
            Frame::Hello(_) => return Err(ClientError::Unexpected("hello")),
        })
    }

    /// The hello answering `challenge`. `sign` signs with the server's ed25519 key (the one its
    /// name spells) and returns the 64-byte signature; the message is
    /// [`auth::signed_message`] over this client's origin and the challenge's nonce.
    pub fn hello(
        &self,
        challenge: &Challenge,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Vec<u8>, ClientError> {
        let signature = sign(&auth::signed_message(&self.origin, &challenge.nonce));
        Ok(Hello {
            version: VERSION,
            name: &self.name,
            origin: &self.origin,
            signature,
        }
        .encode()?)
    }

    /// Encodes a request to `destination` with a fresh id; the answer carries the same id.
    pub fn request(
        &mut self,
        destination: &str,
        req: &http::Request<Vec<u8>>,
    ) -> Result<(u32, Vec<u8>), ClientError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .ok_or(ClientError::NoPath)?;
        let frame = frame::encode_request(
            id,
            destination,
            req.method().as_str(),
            path,
            req.headers()
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
            req.body(),
        )?;
        Ok((id, frame))
    }
}

/// The HTTP request a relayed request stands for, ready for `Homeserver::handle`.
pub fn request_to_http(r: &Request<'_>) -> Result<http::Request<Vec<u8>>, ClientError> {
    let mut b = http::Request::builder().method(r.method).uri(r.path);
    for (name, value) in r.headers {
        b = b.header(name, value);
    }
    Ok(b.body(r.body.to_vec())?)
}

/// The answer frame for request `id`.
pub fn response_frame(id: u32, resp: &http::Response<Vec<u8>>) -> Result<Vec<u8>, ClientError> {
    Ok(frame::encode_response(
        id,
        resp.status().as_u16(),
        resp.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        resp.body(),
    )?)
}

/// The HTTP answer a relayed answer stands for.
pub fn response_to_http(r: &Response<'_>) -> Result<http::Response<Vec<u8>>, ClientError> {
    let mut b = http::Response::builder().status(r.status);
    for (name, value) in r.headers {
        b = b.header(name, value);
    }
    Ok(b.body(r.body.to_vec())?)
}

/// Whether this answer to a transaction means the relay stored it for later delivery: the
/// sender's queue may count it as sent.
pub fn is_handed_over(resp: &http::Response<Vec<u8>>) -> bool {
    answer::is_queued(
        resp.status().as_u16(),
        resp.headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    )
}

/// Marks an answer the relay gave for an absent destination (`hearth_core::federation::
/// transport::HELD_HEADER`, spelled out here since this crate does not depend on the core): the
/// sender's queue then lets the next items gather instead of sending one transaction per event.
pub const HELD_HEADER: &str = "hearth-held-for-absent-server";

/// The answer as the sender's outbound queue should take it: a transaction the relay stored for
/// later delivery becomes the receiver's empty `200 {"pdus":{}}`, since the relay now owns it.
pub fn as_delivered(resp: http::Response<Vec<u8>>) -> http::Response<Vec<u8>> {
    if !is_handed_over(&resp) {
        return resp;
    }
    http::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header(HELD_HEADER, "1")
        .body(br#"{"pdus":{}}"#.to_vec())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn a_client_signs_what_the_relay_verifies() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let name = auth::name_of_key(&key.verifying_key().to_bytes());
        let mut client = Client::new("ws://127.0.0.1:8008/anything", &name).unwrap();
        assert_eq!(client.socket_url(), "ws://127.0.0.1:8008/_hearth/relay");
        let challenge = Challenge {
            version: VERSION,
            nonce: [3; 32],
            max_frame_bytes: 1000,
        };
        let Incoming::Challenge(c) = client.on_frame(&challenge.encode()).unwrap() else {
            panic!("not a challenge")
        };
        let hello = client.hello(&c, |m| key.sign(m).to_bytes()).unwrap();
        let Frame::Hello(h) = Frame::decode(&hello).unwrap() else {
            panic!("not a hello")
        };
        let origins = vec!["http://127.0.0.1:8008".to_owned()];
        assert_eq!(
            auth::verify_hello(&h, &[3; 32], &origins),
            Ok(key.verifying_key().to_bytes())
        );
        assert_eq!(
            auth::verify_hello(&h, &[4; 32], &origins),
            Err(auth::AuthError::BadSignature)
        );
        let elsewhere = vec!["http://other:8008".to_owned()];
        assert!(matches!(
            auth::verify_hello(&h, &[3; 32], &elsewhere),
            Err(auth::AuthError::Origin(_))
        ));
    }

    #[test]
    fn http_messages_survive_the_trip() {
        let mut client = Client::new("https://relay.example", "me").unwrap();
        assert_eq!(client.socket_url(), "wss://relay.example/_hearth/relay");
        let req = http::Request::builder()
            .method("PUT")
            .uri("/_matrix/federation/v1/send/t1?x=1")
            .header("authorization", "X-Matrix origin=\"me\"")
            .body(b"{\"pdus\":[]}".to_vec())
            .unwrap();
        let (id, bytes) = client.request("dest", &req).unwrap();
        let (id2, _) = client.request("dest", &req).unwrap();
        assert_ne!(id, id2);
        let Frame::Request(r) = Frame::decode(&bytes).unwrap() else {
            panic!("not a request")
        };
        let back = request_to_http(&r).unwrap();
        assert_eq!(back.method(), req.method());
        assert_eq!(back.uri(), req.uri());
        assert_eq!(back.headers(), req.headers());
        assert_eq!(back.body(), req.body());

        let resp = http::Response::builder()
            .status(202)
            .header(answer::RELAY_HEADER, answer::RELAY_HEADER_QUEUED)
            .body(b"{}".to_vec())
            .unwrap();
        let f = response_frame(id, &resp).unwrap();
        let Incoming::Response(r) = client.on_frame(&f).unwrap() else {
            panic!("not a response")
        };
        assert_eq!(r.id, id);
        assert!(is_handed_over(&response_to_http(&r).unwrap()));
    }
}
