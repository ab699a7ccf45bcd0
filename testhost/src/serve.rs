//! One HTTP/1.1 connection (plain, or TLS on the federation port): read each request (body
//! capped one byte past the core's limit, so the core itself answers `413 M_TOO_LARGE`), hand
//! it to [`Homeserver::handle`], write the answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use hearth_core::Homeserver;
use hearth_core::error::MatrixError;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// Which part of the API a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (the plain-HTTP client listener).
    All,
    /// The federation and key APIs only (the HTTPS federation listener).
    Federation,
}

impl Scope {
    fn serves(self, path: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Federation => {
                path.starts_with("/_matrix/federation/") || path.starts_with("/_matrix/key/")
            }
        }
    }
}

/// Serves every request of one connection until the peer closes it.
pub async fn connection<S>(hs: Homeserver, stream: S, peer: Option<SocketAddr>, scope: Scope)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let service = service_fn(move |req| {
        let hs = hs.clone();
        async move { Ok::<_, Infallible>(request(&hs, req, scope).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(?peer, error = %e, "connection ended with an error");
    }
}

async fn request(hs: &Homeserver, req: Request<Incoming>, scope: Scope) -> Response<Full<Bytes>> {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let (method, path) = (parts.method.clone(), parts.uri.path().to_owned());
    let resp = if !scope.serves(&path) {
        MatrixError::unrecognized(format!("{path} is not served on the federation port"))
            .into_response()
    } else {
        match read_capped(body, hs.config.max_body_bytes.saturating_add(1)).await {
            Ok(bytes) => hs.handle(Request::from_parts(parts, bytes)).await,
            Err(e) => MatrixError::bad_json(format!("could not read the request body: {e}"))
                .into_response(),
        }
    };
    tracing::debug!(%method, path, status = resp.status().as_u16(), elapsed_us = start.elapsed().as_micros() as u64);
    resp.map(|b| Full::new(Bytes::from(b)))
}

/// Reads at most `cap` bytes of the body. A longer body is cut at `cap`; the rest is left
/// unread and hyper closes the connection after the answer.
async fn read_capped(mut body: Incoming, cap: usize) -> Result<Vec<u8>, hyper::Error> {
    let mut buf = Vec::new();
    while buf.len() < cap {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            let take = data.len().min(cap - buf.len());
            buf.extend_from_slice(data.get(..take).unwrap_or_default());
        }
    }
    Ok(buf)
}
