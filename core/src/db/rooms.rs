//! Rooms: events (PDUs), timelines, current state and memberships.
//! (Being written; the signatures below are the contract other modules code against.)

use std::collections::BTreeSet;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::Homeserver;
use crate::error::Result;

/// A stored event with what the server knows about it.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_type: String,
    pub state_key: Option<String>,
    pub content: Value,
    pub origin_server_ts: u64,
    /// The full signed PDU as JSON.
    pub json: Value,
    /// Stream position at which it was appended to the timeline.
    pub pos: u64,
}

pub async fn get_pdu(_hs: &Homeserver, _event_id: &str) -> Result<Option<Pdu>> {
    todo!()
}

/// The current state event of `(event_type, state_key)`.
pub async fn state_event(_hs: &Homeserver, _room: &RoomId, _event_type: &str, _state_key: &str) -> Result<Option<Pdu>> {
    todo!()
}

pub async fn membership(_hs: &Homeserver, _room: &RoomId, _user: &UserId) -> Result<Option<MembershipState>> {
    todo!()
}

pub async fn joined_members(_hs: &Homeserver, _room: &RoomId) -> Result<Vec<OwnedUserId>> {
    todo!()
}

/// Every room the user has a membership in, with that membership.
pub async fn rooms_for_user(_hs: &Homeserver, _user: &UserId) -> Result<Vec<(OwnedRoomId, MembershipState)>> {
    todo!()
}

pub async fn joined_rooms(_hs: &Homeserver, _user: &UserId) -> Result<Vec<OwnedRoomId>> {
    todo!()
}

/// Everyone joined to at least one room the user is joined to (the user included).
pub async fn users_sharing_room_with(_hs: &Homeserver, _user: &UserId) -> Result<BTreeSet<OwnedUserId>> {
    todo!()
}

/// Builds, signs, auth-checks and appends a state event as `sender`.
pub async fn send_state_event(
    _hs: &Homeserver,
    _sender: &UserId,
    _room: &RoomId,
    _event_type: &str,
    _state_key: &str,
    _content: Value,
) -> Result<OwnedEventId> {
    todo!()
}
