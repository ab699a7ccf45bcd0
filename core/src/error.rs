//! Matrix error responses (`errcode` + `error`) and the crate's error type.

use http::StatusCode;
use serde_json::{Map, Value, json};

use crate::storage::StorageError;

/// A spec-shaped error: HTTP status, `errcode`, human-readable `error`, and any extra fields
/// the spec defines for that code (`retry_after_ms`, `soft_logout`, UIA flows, ...).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {errcode}: {error}")]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
    pub extra: Map<String, Value>,
}

macro_rules! codes {
    ($($fn:ident => $code:literal, $status:ident;)*) => {
        impl MatrixError {
            $(
                pub fn $fn(error: impl Into<String>) -> Self {
                    Self::new(StatusCode::$status, $code, error)
                }
            )*
        }
    };
}

codes! {
    forbidden => "M_FORBIDDEN", FORBIDDEN;
    unknown_token => "M_UNKNOWN_TOKEN", UNAUTHORIZED;
    missing_token => "M_MISSING_TOKEN", UNAUTHORIZED;
    bad_json => "M_BAD_JSON", BAD_REQUEST;
    not_json => "M_NOT_JSON", BAD_REQUEST;
    not_found => "M_NOT_FOUND", NOT_FOUND;
    unrecognized => "M_UNRECOGNIZED", NOT_FOUND;
    unknown => "M_UNKNOWN", INTERNAL_SERVER_ERROR;
    user_in_use => "M_USER_IN_USE", BAD_REQUEST;
    invalid_username => "M_INVALID_USERNAME", BAD_REQUEST;
    room_in_use => "M_ROOM_IN_USE", BAD_REQUEST;
    invalid_param => "M_INVALID_PARAM", BAD_REQUEST;
    missing_param => "M_MISSING_PARAM", BAD_REQUEST;
    too_large => "M_TOO_LARGE", PAYLOAD_TOO_LARGE;
    unsupported_room_version => "M_UNSUPPORTED_ROOM_VERSION", BAD_REQUEST;
    invalid_room_state => "M_INVALID_ROOM_STATE", BAD_REQUEST;
    threepid_not_found => "M_THREEPID_NOT_FOUND", BAD_REQUEST;
    weak_password => "M_WEAK_PASSWORD", BAD_REQUEST;
    exclusive => "M_EXCLUSIVE", BAD_REQUEST;
    guest_access_forbidden => "M_GUEST_ACCESS_FORBIDDEN", FORBIDDEN;
    user_deactivated => "M_USER_DEACTIVATED", FORBIDDEN;
    not_yet_uploaded => "M_NOT_YET_UPLOADED", GATEWAY_TIMEOUT;
    cannot_overwrite_media => "M_CANNOT_OVERWRITE_MEDIA", CONFLICT;
    incompatible_room_version => "M_INCOMPATIBLE_ROOM_VERSION", BAD_REQUEST;
    server_not_trusted => "M_SERVER_NOT_TRUSTED", BAD_REQUEST;
    resource_limit_exceeded => "M_RESOURCE_LIMIT_EXCEEDED", FORBIDDEN;
    unauthorized => "M_UNAUTHORIZED", UNAUTHORIZED;
    wrong_room_keys_version => "M_WRONG_ROOM_KEYS_VERSION", FORBIDDEN;
    unable_to_authorise_join => "M_UNABLE_TO_AUTHORISE_JOIN", BAD_REQUEST;
    threepid_in_use => "M_THREEPID_IN_USE", BAD_REQUEST;
    invalid_signature => "M_INVALID_SIGNATURE", FORBIDDEN;
    limit_exceeded => "M_LIMIT_EXCEEDED", TOO_MANY_REQUESTS;
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            error: error.into(),
            extra: Map::new(),
        }
    }

    /// `405 M_UNRECOGNIZED`: the path exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "method not allowed on this endpoint",
        )
    }

    /// Retryable: the server is not running or busy. Clients back off and try again.
    pub fn unavailable(error: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "M_UNKNOWN", error);
        e.extra.insert("retry_after_ms".into(), json!(1000));
        e
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn body(&self) -> Value {
        let mut map = self.extra.clone();
        map.insert("errcode".into(), Value::String(self.errcode.to_owned()));
        map.insert("error".into(), Value::String(self.error.clone()));
        Value::Object(map)
    }

    pub fn into_response(self) -> http::Response<Vec<u8>> {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        http::Response::builder()
            .status(self.status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .unwrap_or_default()
    }
}

impl From<StorageError> for MatrixError {
    fn from(e: StorageError) -> Self {
        tracing::error!(error = %e, "storage error");
        match e {
            StorageError::QuotaExceeded(msg) => {
                let mut err = MatrixError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "M_RESOURCE_LIMIT_EXCEEDED",
                    format!("the server's storage is full: {msg}"),
                );
                err.extra
                    .insert("admin_contact".into(), json!("mailto:nobody@localhost"));
                err
            }
            StorageError::Unavailable(msg) => {
                MatrixError::unavailable(format!("storage is unavailable: {msg}"))
            }
            other => MatrixError::unknown(format!("storage failure: {other}")),
        }
    }
}

impl From<serde_json::Error> for MatrixError {
    fn from(e: serde_json::Error) -> Self {
        MatrixError::unknown(format!("internal serialization error: {e}"))
    }
}

pub type Result<T, E = MatrixError> = std::result::Result<T, E>;

/// Shorthand for turning `Option`s of missing things into `M_NOT_FOUND`.
pub trait OptionExt<T> {
    fn or_not_found(self, what: &str) -> Result<T>;
}

impl<T> OptionExt<T> for Option<T> {
    fn or_not_found(self, what: &str) -> Result<T> {
        self.ok_or_else(|| MatrixError::not_found(what.to_owned()))
    }
}
