//! The one way requests leave the server: a [`Transport`] the host injects.
//!
//! The core never opens a socket. It hands a finished, signed HTTP request and its destination
//! server name to the transport and awaits the answer. Hosts provide one: the in-process
//! network of tests ([`crate::testing::network`]), HTTPS in `hearth-testhost` (which resolves
//! named servers per the spec's server discovery), the relay's WebSocket in the browser.
//! Timeouts are the caller's ([`crate::federation::client`] races every send against
//! `World::sleep`), so a transport may simply never answer.

use http::{Request, Response};
use ruma::ServerName;

use crate::world::LocalBoxFuture;

/// A header on an answer that a store-and-forward intermediary (the Hearth relay) gave in the
/// destination's place: the request is safe with it, and the destination is absent for now.
/// Its value does not matter.
pub const HELD_HEADER: &str = "hearth-held-for-absent-server";

/// Why a request got no HTTP answer. A non-2xx answer is not a transport error: it is an
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The destination could not be resolved or connected to (or no route to it exists).
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The connection broke or the answer was not HTTP.
    #[error("connection to {server} failed: {reason}")]
    Connection { server: String, reason: String },
    /// No answer in time (raised by the caller's timeout, or by a transport with its own).
    #[error("{server} did not answer in time")]
    Timeout { server: String },
    /// This server does not talk to other servers at all (no transport was given to it).
    #[error("this server does not federate, so it cannot reach {server}")]
    Disabled { server: String },
}

impl TransportError {
    pub fn unreachable(server: &ServerName, reason: impl Into<String>) -> Self {
        Self::Unreachable {
            server: server.to_string(),
            reason: reason.into(),
        }
    }

    pub fn connection(server: &ServerName, reason: impl Into<String>) -> Self {
        Self::Connection {
            server: server.to_string(),
            reason: reason.into(),
        }
    }

    pub fn timeout(server: &ServerName) -> Self {
        Self::Timeout {
            server: server.to_string(),
        }
    }
}

/// Sends one request to another server and resolves to its answer. Requests carry an absolute
/// URI (`https://<destination>/_matrix/...`); the transport decides how `destination` is
/// reached. No `Send` bound: the core is single-threaded, natively and in wasm.
pub trait Transport {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>>;
}

/// The transport of a server that cannot reach any other: every send fails at once. Requests
/// from key-named servers are still verified, since that needs no fetch.
#[derive(Debug, Default, Clone, Copy)]
pub struct Offline;

impl Transport for Offline {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        _request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>> {
        Box::pin(std::future::ready(Err(TransportError::Disabled {
            server: destination.to_string(),
        })))
    }
}
