//! The size limits the Matrix specification sets, in one place, each with its check.
//!
//! The numbers are the spec's; so are the error codes where the spec names one. Where it names
//! none, an event-shaped limit answers `413 M_TOO_LARGE` (the spec's code for "the request or
//! entity was too large") and an identifier answers `400 M_INVALID_PARAM`, as a malformed
//! identifier in a path does.

use ruma::canonical_json::{CanonicalJsonObject, CanonicalJsonValue};
use ruma::{OwnedRoomAliasId, OwnedUserId, ServerName};

use crate::error::{MatrixError, Result};

/// User ids, room ids, room aliases and event ids, sigil and domain included (appendix
/// "Identifier Grammar": each "MUST NOT exceed 255 bytes").
pub const MAX_ID_BYTES: usize = 255;

/// An event's `type` (Client-Server API, "Size limits").
pub const MAX_EVENT_TYPE_BYTES: usize = 255;

/// An event's `state_key` (Client-Server API, "Size limits").
pub const MAX_STATE_KEY_BYTES: usize = 255;

/// A whole event "formatted with the federation event format, including any signatures, and
/// encoded as Canonical JSON" (Client-Server API, "Size limits").
pub const MAX_PDU_BYTES: usize = 65_536;

/// A room tag's name (Room Tagging module).
pub const MAX_TAG_BYTES: usize = 255;

/// A profile field's key (`PUT /profile/{userId}/{keyName}`: `M_KEY_TOO_LARGE`).
pub const MAX_PROFILE_KEY_BYTES: usize = 255;

/// A whole profile ("the total profile MUST be under 64 KiB": `M_PROFILE_TOO_LARGE`).
pub const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// Client-chosen device ids. The spec sets no length; this server holds them to the identifier
/// limit, because they become parts of storage keys and of key ids that other users download.
pub const MAX_DEVICE_ID_BYTES: usize = 255;

/// An event type a client wants to send or set.
pub fn event_type(event_type: &str) -> Result<()> {
    if event_type.len() > MAX_EVENT_TYPE_BYTES {
        return Err(MatrixError::too_large(format!(
            "the event type is {} bytes; the limit is {MAX_EVENT_TYPE_BYTES}",
            event_type.len()
        )));
    }
    Ok(())
}

/// A state key a client wants to set.
pub fn state_key(state_key: &str) -> Result<()> {
    if state_key.len() > MAX_STATE_KEY_BYTES {
        return Err(MatrixError::too_large(format!(
            "the state key is {} bytes; the limit is {MAX_STATE_KEY_BYTES}",
            state_key.len()
        )));
    }
    Ok(())
}

/// A whole event in its federation format, signatures included, whether built here or received:
/// its canonical JSON and each key the spec limits on its own.
pub fn pdu(pdu: &CanonicalJsonObject) -> Result<()> {
    let size = pdu_bytes(pdu)?;
    if size > MAX_PDU_BYTES {
        return Err(MatrixError::too_large(format!(
            "the event is {size} bytes; the limit is {MAX_PDU_BYTES}"
        )));
    }
    let text = |key: &str| match pdu.get(key) {
        Some(CanonicalJsonValue::String(s)) => Some(s.as_str()),
        _ => None,
    };
    if let Some(t) = text("type") {
        event_type(t)?;
    }
    if let Some(k) = text("state_key") {
        state_key(k)?;
    }
    for key in ["sender", "room_id", "event_id"] {
        if let Some(id) = text(key)
            && id.len() > MAX_ID_BYTES
        {
            return Err(MatrixError::too_large(format!(
                "the event's {key} is {} bytes; the limit is {MAX_ID_BYTES}",
                id.len()
            )));
        }
    }
    Ok(())
}

/// The length of an event's canonical JSON encoding.
pub fn pdu_bytes(pdu: &CanonicalJsonObject) -> Result<usize> {
    // Canonical JSON is serde_json's compact form of the sorted map ruma keeps: no whitespace,
    // keys in code-point order, integers only, the same minimal string escapes.
    Ok(serde_json::to_vec(pdu)?.len())
}

/// The user id that registering `localpart` here would make. Only the length is checked here;
/// the localpart's grammar is registration's business.
pub fn new_user_id(localpart: &str, server: &ServerName) -> Result<OwnedUserId> {
    let id = format!("@{localpart}:{server}");
    if id.len() > MAX_ID_BYTES {
        return Err(MatrixError::invalid_username(format!(
            "the user id would be {} bytes; the limit is {MAX_ID_BYTES}",
            id.len()
        )));
    }
    OwnedUserId::try_from(id)
        .map_err(|e| MatrixError::invalid_username(format!("invalid username: {e}")))
}

/// The alias `#localpart:server`, refused when the whole alias is longer than the spec allows.
pub fn new_room_alias(localpart: &str, server: &ServerName) -> Result<OwnedRoomAliasId> {
    let alias = format!("#{localpart}:{server}");
    if alias.len() > MAX_ID_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "the room alias would be {} bytes; the limit is {MAX_ID_BYTES}",
            alias.len()
        )));
    }
    OwnedRoomAliasId::try_from(alias)
        .map_err(|e| MatrixError::invalid_param(format!("invalid room alias: {e}")))
}

/// A device id a client chose.
pub fn device_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_DEVICE_ID_BYTES || id.chars().any(char::is_control) {
        return Err(MatrixError::invalid_param(format!(
            "device_id must be 1 to {MAX_DEVICE_ID_BYTES} bytes without control characters"
        )));
    }
    Ok(())
}

/// A room tag's name.
pub fn tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "a tag name must be 1 to {MAX_TAG_BYTES} bytes long"
        )));
    }
    Ok(())
}

/// A profile field's key.
pub fn profile_key(key: &str) -> Result<()> {
    if key.len() > MAX_PROFILE_KEY_BYTES {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            "M_KEY_TOO_LARGE",
            format!("profile keys are limited to {MAX_PROFILE_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// A whole profile of `size` bytes as a JSON object.
pub fn profile(size: usize) -> Result<()> {
    if size > MAX_PROFILE_BYTES {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            "M_PROFILE_TOO_LARGE",
            format!("a profile is limited to {MAX_PROFILE_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_of(len: usize) -> CanonicalJsonObject {
        let mut obj = CanonicalJsonObject::new();
        obj.insert("type".into(), CanonicalJsonValue::String("m.x".into()));
        let overhead = pdu_bytes(&obj).unwrap_or_default() + r#","content":"""#.len();
        obj.insert(
            "content".into(),
            CanonicalJsonValue::String("a".repeat(len - overhead)),
        );
        obj
    }

    #[test]
    fn a_pdu_may_be_exactly_the_limit() {
        let at = event_of(MAX_PDU_BYTES);
        assert_eq!(pdu_bytes(&at).ok(), Some(MAX_PDU_BYTES));
        assert!(pdu(&at).is_ok());
        let past = event_of(MAX_PDU_BYTES + 1);
        assert_eq!(pdu(&past).map_err(|e| e.errcode), Err("M_TOO_LARGE"));
    }

    #[test]
    fn canonical_length_counts_escapes_and_multibyte_text() {
        let mut obj = CanonicalJsonObject::new();
        obj.insert("k".into(), CanonicalJsonValue::String("é\n\u{1}\"".into()));
        // {"k":"é\n\u0001\""}: é is two bytes; the escapes are as canonical JSON writes them.
        assert_eq!(pdu_bytes(&obj).ok(), Some(r#"{"k":"é\n\u0001\""}"#.len()));
    }
}
