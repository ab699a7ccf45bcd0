//! Requests this server makes of other servers: built from ruma's request types, X-Matrix
//! signed, sent through the injected [`Transport`](super::transport::Transport) and raced
//! against a timeout on the world's clock.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::{Either, select};
use http::{Request, Response};
use ruma::api::auth_scheme::{AuthScheme, NoAuthentication};
use ruma::api::federation::authentication::{ServerSignatures, XMatrixSigningInput};
use ruma::api::federation::device::get_devices;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};
use ruma::api::federation::discovery::{get_server_keys, get_server_version};
use ruma::api::federation::keys::{claim_keys, get_keys};
use ruma::api::federation::openid::get_openid_userinfo;
use ruma::api::federation::query::{get_profile_information, get_room_information};
use ruma::api::path_builder::SinglePath;
use ruma::api::{IncomingResponse, IncomingResponseExt, OutgoingRequest, OutgoingRequestExt};
use ruma::profile::ProfileFieldName;
use ruma::{OwnedDeviceId, OwnedUserId, RoomAliasId, ServerName, UserId};
use serde_json::{Value, json};

use super::transport::TransportError;
use crate::Homeserver;
use crate::error::MatrixError;

/// How long a request may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request to another server gave no usable answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server answered with an error.
    #[error("{server} answered {status} {errcode}: {error}")]
    Remote {
        server: String,
        status: u16,
        errcode: String,
        error: String,
    },
    /// The answer was not what the endpoint defines.
    #[error("{server} sent an invalid answer: {reason}")]
    BadResponse { server: String, reason: String },
    /// The request could not be built (a bug, or an unusable destination name).
    #[error("cannot build the request to {server}: {reason}")]
    Request { server: String, reason: String },
    /// The destination is this server: local data is read directly, never over federation.
    #[error("{0} is this server")]
    Local(String),
}

impl FederationError {
    /// The answer a client of this server gets when a request it caused failed: the remote
    /// server's own 4xx error as it was; `504` when it did not answer in time; `403` when this
    /// server does not federate at all (a policy, as Synapse answers for a destination outside
    /// its federation whitelist); anything else `502` (the remote side failed, not the
    /// client).
    pub fn to_client_error(&self) -> MatrixError {
        match self {
            Self::Remote {
                status,
                errcode,
                error,
                ..
            } if (400..500).contains(status) => {
                let code =
                    http::StatusCode::from_u16(*status).unwrap_or(http::StatusCode::BAD_GATEWAY);
                MatrixError::new(code, known_errcode(errcode), error.clone())
            }
            Self::Transport(TransportError::Timeout { .. }) => MatrixError::new(
                http::StatusCode::GATEWAY_TIMEOUT,
                "M_UNKNOWN",
                self.to_string(),
            ),
            Self::Transport(TransportError::Disabled { .. }) => {
                MatrixError::forbidden(self.to_string())
            }
            other => MatrixError::new(
                http::StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                other.to_string(),
            ),
        }
    }

    /// An entry of the `failures` map of `/keys/query` and `/keys/claim`.
    pub fn failure(&self) -> Value {
        let status = match self {
            Self::Remote { status, .. } => *status,
            Self::Transport(TransportError::Timeout { .. }) => 504,
            _ => 503,
        };
        json!({ "status": status, "message": self.to_string() })
    }
}

/// `MatrixError::errcode` is a `&'static str`; a remote code is passed on when it is one the
/// spec defines, else `M_UNKNOWN`.
fn known_errcode(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "M_FORBIDDEN",
        "M_NOT_FOUND",
        "M_UNAUTHORIZED",
        "M_BAD_JSON",
        "M_NOT_JSON",
        "M_INVALID_PARAM",
        "M_MISSING_PARAM",
        "M_LIMIT_EXCEEDED",
        "M_UNRECOGNIZED",
        "M_TOO_LARGE",
        "M_UNKNOWN_TOKEN",
        "M_USER_DEACTIVATED",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("M_UNKNOWN")
}

/// The authentication an outgoing federation request carries.
pub trait OutboundAuth: AuthScheme {
    fn input<'a>(hs: &'a Homeserver, destination: &ServerName) -> Self::Input<'a>;
}

impl OutboundAuth for ServerSignatures {
    fn input<'a>(hs: &'a Homeserver, destination: &ServerName) -> XMatrixSigningInput<'a> {
        XMatrixSigningInput::new(hs.owned_server_name(), destination.to_owned(), &hs.key.pair)
    }
}

impl OutboundAuth for NoAuthentication {
    fn input(_hs: &Homeserver, _destination: &ServerName) {}
}

/// Sends `request` to `destination` and parses the answer, within [`DEFAULT_TIMEOUT`].
pub async fn send<R>(
    hs: &Homeserver,
    destination: &ServerName,
    request: R,
) -> Result<R::IncomingResponse, FederationError>
where
    R: OutgoingRequest<PathBuilder = SinglePath>,
    R::Authentication: OutboundAuth,
{
    send_with_timeout(hs, destination, request, DEFAULT_TIMEOUT).await
}

/// [`send`] with a timeout of the caller's choosing.
pub async fn send_with_timeout<R>(
    hs: &Homeserver,
    destination: &ServerName,
    request: R,
    timeout: Duration,
) -> Result<R::IncomingResponse, FederationError>
where
    R: OutgoingRequest<PathBuilder = SinglePath>,
    R::Authentication: OutboundAuth,
{
    Ok(send_noting_held(hs, destination, request, timeout).await?.0)
}

/// [`send_with_timeout`], also telling whether the answer came from an intermediary that holds
/// the request for an absent destination ([`super::transport::HELD_HEADER`]).
pub async fn send_noting_held<R>(
    hs: &Homeserver,
    destination: &ServerName,
    request: R,
    timeout: Duration,
) -> Result<(R::IncomingResponse, bool), FederationError>
where
    R: OutgoingRequest<PathBuilder = SinglePath>,
    R::Authentication: OutboundAuth,
{
    if destination == hs.server_name() {
        return Err(FederationError::Local(destination.to_string()));
    }
    let http_request = request
        .try_into_http_request::<Vec<u8>>(
            &format!("https://{destination}"),
            R::Authentication::input(hs, destination),
            (),
        )
        .map_err(|e| FederationError::Request {
            server: destination.to_string(),
            reason: e.to_string(),
        })?;
    let response = send_raw(hs, destination, http_request, timeout).await?;
    let held = response
        .headers()
        .contains_key(super::transport::HELD_HEADER);
    Ok((parse_response(destination, response)?, held))
}

/// Sends a finished request through the transport, within `timeout`.
pub async fn send_raw(
    hs: &Homeserver,
    destination: &ServerName,
    request: Request<Vec<u8>>,
    timeout: Duration,
) -> Result<Response<Vec<u8>>, TransportError> {
    tracing::debug!(%destination, method = %request.method(), path = request.uri().path(), "federation request");
    let sent = hs.transport.send(destination, request);
    match select(sent, hs.world.sleep(timeout)).await {
        Either::Left((answer, _)) => answer,
        Either::Right(((), _)) => Err(TransportError::timeout(destination)),
    }
}

fn parse_response<T: IncomingResponse>(
    server: &ServerName,
    response: Response<Vec<u8>>,
) -> Result<T, FederationError> {
    let status = response.status().as_u16();
    if status >= 400 {
        let body: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        return Err(FederationError::Remote {
            server: server.to_string(),
            status,
            errcode: text("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
            error: text("error").unwrap_or_else(|| format!("HTTP {status}")),
        });
    }
    let (parts, body) = response.into_parts();
    T::try_from_http_response(Response::from_parts(parts, body.as_slice())).map_err(|e| {
        FederationError::BadResponse {
            server: server.to_string(),
            reason: e.to_string(),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The endpoints

/// `GET /_matrix/federation/v1/version`.
pub async fn server_version(
    hs: &Homeserver,
    server: &ServerName,
) -> Result<get_server_version::v1::Response, FederationError> {
    send(hs, server, get_server_version::v1::Request::new()).await
}

/// `GET /_matrix/key/v2/server`: the server's keys as it signed them (not yet checked; see
/// [`super::server_keys`]).
pub async fn server_keys(
    hs: &Homeserver,
    server: &ServerName,
    timeout: Duration,
) -> Result<get_server_keys::v2::Response, FederationError> {
    send_with_timeout(hs, server, get_server_keys::v2::Request::new(), timeout).await
}

/// `GET /_matrix/federation/v1/query/profile` for a user of another server, one field or all.
pub async fn query_profile(
    hs: &Homeserver,
    user: &UserId,
    field: Option<ProfileFieldName>,
) -> Result<get_profile_information::v1::Response, FederationError> {
    let mut request = get_profile_information::v1::Request::new(user.to_owned());
    request.field = field;
    send(hs, user.server_name(), request).await
}

/// `GET /_matrix/federation/v1/query/directory`: the room an alias of another server names.
pub async fn query_directory(
    hs: &Homeserver,
    alias: &RoomAliasId,
) -> Result<get_room_information::v1::Response, FederationError> {
    send(
        hs,
        alias.server_name(),
        get_room_information::v1::Request::new(alias.to_owned()),
    )
    .await
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
pub async fn user_devices(
    hs: &Homeserver,
    user: &UserId,
) -> Result<get_devices::v1::Response, FederationError> {
    send(
        hs,
        user.server_name(),
        get_devices::v1::Request::new(user.to_owned()),
    )
    .await
}

/// `POST /_matrix/federation/v1/user/keys/query` for users of `server`.
pub async fn query_keys(
    hs: &Homeserver,
    server: &ServerName,
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    timeout: Duration,
) -> Result<get_keys::v1::Response, FederationError> {
    send_with_timeout(hs, server, get_keys::v1::Request::new(device_keys), timeout).await
}

/// `POST /_matrix/federation/v1/user/keys/claim` for users of `server`.
pub async fn claim_keys(
    hs: &Homeserver,
    server: &ServerName,
    one_time_keys: claim_keys::v1::OneTimeKeyClaims,
    timeout: Duration,
) -> Result<claim_keys::v1::Response, FederationError> {
    send_with_timeout(
        hs,
        server,
        claim_keys::v1::Request::new(one_time_keys),
        timeout,
    )
    .await
}

/// `GET /_matrix/federation/v1/publicRooms`.
pub async fn public_rooms(
    hs: &Homeserver,
    server: &ServerName,
    request: get_public_rooms::v1::Request,
) -> Result<get_public_rooms::v1::Response, FederationError> {
    send(hs, server, request).await
}

/// `POST /_matrix/federation/v1/publicRooms`.
pub async fn public_rooms_filtered(
    hs: &Homeserver,
    server: &ServerName,
    request: get_public_rooms_filtered::v1::Request,
) -> Result<get_public_rooms_filtered::v1::Response, FederationError> {
    send(hs, server, request).await
}

/// `GET /_matrix/federation/v1/openid/userinfo`: whom `server` issued an OpenID token to. A
/// user of another server is refused, as the spec requires of the caller.
pub async fn openid_userinfo(
    hs: &Homeserver,
    server: &ServerName,
    token: &str,
) -> Result<OwnedUserId, FederationError> {
    let answer = send(
        hs,
        server,
        get_openid_userinfo::v1::Request::new(token.to_owned()),
    )
    .await?;
    if answer.sub.server_name() != server {
        return Err(FederationError::BadResponse {
            server: server.to_string(),
            reason: format!("it vouched for {}, a user of another server", answer.sub),
        });
    }
    Ok(answer.sub)
}
