//! What the relay itself answers, and how a server recognises it.
//!
//! Most answers a server gets through the relay come from the destination, unchanged. The
//! relay answers by itself in two cases, and marks both with the header
//! [`RELAY_HEADER`]:
//!
//! - a transaction it stored for later delivery: status [`QUEUED_STATUS`] (202) with
//!   `x-hearth-relay: queued` and a small JSON body. The sender's queue treats this as
//!   "handed over" and moves on; the relay delivers it when the destination connects.
//! - an error: a Matrix error body (`errcode` + `error`) with `x-hearth-relay: error` and one
//!   of the [`errcode`]s below.

/// Where servers open their WebSocket on the relay's origin.
pub const SOCKET_PATH: &str = "/_hearth/relay";

/// Marks an answer made by the relay rather than by the destination.
pub const RELAY_HEADER: &str = "x-hearth-relay";
pub const RELAY_HEADER_QUEUED: &str = "queued";
pub const RELAY_HEADER_ERROR: &str = "error";

/// The status of "the relay holds this transaction now".
pub const QUEUED_STATUS: u16 = 202;

/// Error codes of the relay's own errors, namespaced as the Matrix spec asks of codes it does
/// not define (`NAMESPACE_CODE`).
pub mod errcode {
    /// 502: the destination is not connected (a request other than a transaction).
    pub const NOT_CONNECTED: &str = "HEARTH.RELAY_NOT_CONNECTED";
    /// 502: the destination is not a key-named server, so it can never connect to a relay.
    pub const UNREACHABLE: &str = "HEARTH.RELAY_UNREACHABLE";
    /// 502: the destination disconnected before it answered.
    pub const DISCONNECTED: &str = "HEARTH.RELAY_DISCONNECTED";
    /// 504: the destination did not answer in time.
    pub const TIMEOUT: &str = "HEARTH.RELAY_TIMEOUT";
    /// 503: the destination's queue is full (count or bytes); retry later.
    pub const QUEUE_FULL: &str = "HEARTH.RELAY_QUEUE_FULL";
    /// 503: the relay is shutting down; retry later.
    pub const SHUTTING_DOWN: &str = "HEARTH.RELAY_SHUTTING_DOWN";
    /// 500: the relay could not store the transaction.
    pub const STORE_FAILED: &str = "HEARTH.RELAY_STORE_FAILED";
}

/// WebSocket close codes the relay uses (the close reason says more, in English).
pub mod close {
    /// The relay is shutting down (standard "going away").
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that does not decode, or a text frame (standard "protocol error").
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame larger than the relay's limit (standard "message too big").
    pub const TOO_BIG: u16 = 1009;
    /// The hello did not prove the name, or did not come in time.
    pub const AUTH_FAILED: u16 = 4001;
    /// A newer connection proved the same name.
    pub const REPLACED: u16 = 4002;
    /// More frames or bytes per second than the relay allows one connection.
    pub const RATE_LIMITED: u16 = 4003;
    /// Nothing arrived (not even a pong) for the idle timeout.
    pub const IDLE: u16 = 4004;
    /// The connection did not read what the relay sent it fast enough.
    pub const SLOW_READER: u16 = 4005;
}

/// Whether a request is a federation transaction (`PUT /_matrix/federation/v1/send/{txnId}`),
/// the only kind the relay stores for an absent destination.
pub fn is_transaction(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    method == "PUT"
        && path
            .strip_prefix("/_matrix/federation/v1/send/")
            .is_some_and(|txn| !txn.is_empty() && !txn.contains('/'))
}

/// Whether an answer says the relay stored the transaction for later delivery.
pub fn is_queued<'h>(status: u16, headers: impl IntoIterator<Item = (&'h str, &'h [u8])>) -> bool {
    status == QUEUED_STATUS
        && headers.into_iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(RELAY_HEADER) && v == RELAY_HEADER_QUEUED.as_bytes()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_recognised_by_method_and_path() {
        assert!(is_transaction("PUT", "/_matrix/federation/v1/send/abc"));
        assert!(is_transaction("PUT", "/_matrix/federation/v1/send/abc?x=1"));
        assert!(!is_transaction("GET", "/_matrix/federation/v1/send/abc"));
        assert!(!is_transaction("PUT", "/_matrix/federation/v1/send/"));
        assert!(!is_transaction(
            "PUT",
            "/_matrix/federation/v2/send_join/r/e"
        ));
        assert!(!is_transaction("PUT", "/_matrix/federation/v1/send/a/b"));
    }

    #[test]
    fn queued_answers_need_status_and_header() {
        let h = [("X-Hearth-Relay", b"queued".as_slice())];
        assert!(is_queued(202, h));
        assert!(!is_queued(200, h));
        assert!(!is_queued(202, [("x-hearth-relay", b"error".as_slice())]));
    }
}
