//! The native federation transport: HTTPS/1.1 to named servers (found by [`resolve`]), with
//! one pool of idle connections per destination. The core applies its own timeouts by
//! dropping the future; connecting has one of its own so a dead address does not hold the
//! next one back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearth_core::federation::transport::{Transport, TransportError};
use hearth_core::world::LocalBoxFuture;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use ruma::{OwnedServerName, ServerName};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::resolve::{Target, resolve};

/// Longest answer body read from a peer.
const MAX_RESPONSE_BYTES: usize = 50 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections kept per destination.
const MAX_IDLE: usize = 4;

type Sender = SendRequest<Full<Bytes>>;

pub struct HttpsTransport {
    tls: TlsConnector,
    idle: RefCell<HashMap<OwnedServerName, Vec<Sender>>>,
}

impl HttpsTransport {
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        Self {
            tls: TlsConnector::from(tls),
            idle: RefCell::default(),
        }
    }

    fn take_idle(&self, server: &ServerName) -> Option<Sender> {
        let mut idle = self.idle.borrow_mut();
        let pool = idle.get_mut(server)?;
        while let Some(sender) = pool.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, server: &ServerName, sender: Sender) {
        let mut idle = self.idle.borrow_mut();
        let pool = idle.entry(server.to_owned()).or_default();
        if pool.len() < MAX_IDLE {
            pool.push(sender);
        }
    }

    async fn connect(
        &self,
        server: &ServerName,
        target: &Target,
    ) -> Result<Sender, TransportError> {
        let mut last = String::from("no address");
        for addr in &target.addrs {
            let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    last = format!("{addr}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{addr}: connection timed out");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tls = self
                .tls
                .connect(target.tls_name.clone(), tcp)
                .await
                .map_err(|e| TransportError::connection(server, format!("TLS with {addr}: {e}")))?;
            let (sender, connection) = http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| TransportError::connection(server, e.to_string()))?;
            let peer = server.to_owned();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(server = %peer, error = %e, "federation connection ended");
                }
            });
            return Ok(sender);
        }
        Err(TransportError::unreachable(server, last))
    }

    async fn exchange(
        &self,
        server: &ServerName,
        request: Request<Vec<u8>>,
    ) -> Result<Response<Vec<u8>>, TransportError> {
        let target = resolve(server)
            .await
            .map_err(|reason| TransportError::unreachable(server, reason))?;
        let (mut parts, body) = request.into_parts();
        // Origin form on the wire: the signed URI is the path and query.
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        parts.uri = path
            .parse::<Uri>()
            .map_err(|e| TransportError::connection(server, e.to_string()))?;
        parts.headers.insert(
            http::header::HOST,
            HeaderValue::from_str(&target.host_header)
                .map_err(|e| TransportError::connection(server, e.to_string()))?,
        );
        let request = Request::from_parts(parts, Full::new(Bytes::from(body)));
        let mut sender = match self.take_idle(server) {
            Some(s) => s,
            None => self.connect(server, &target).await?,
        };
        sender
            .ready()
            .await
            .map_err(|e| TransportError::connection(server, e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| TransportError::connection(server, e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| TransportError::connection(server, format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        self.put_idle(server, sender);
        Ok(Response::from_parts(parts, body))
    }
}

impl Transport for HttpsTransport {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>> {
        Box::pin(self.exchange(destination, request))
    }
}
