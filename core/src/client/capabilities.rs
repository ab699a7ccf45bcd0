//! `GET /capabilities`: what this server lets clients do.

use std::collections::BTreeMap;

use http::Method;
use ruma::RoomVersionId;
use ruma::api::client::discovery::get_capabilities::v3::{
    Capabilities, RoomVersionStability, RoomVersionsCapability,
};
use serde_json::{Value, json};

use crate::client::misc::add_json_route;
use crate::client::room::DEFAULT_ROOM_VERSION;
use crate::error::Result;
use crate::room::txn::supported_version;
use crate::router::Router;

/// Every room version ruma knows. Which of them this server offers is decided by the rooms
/// code ([`supported_version`]), so capabilities never promise more than it can do. Version 1
/// cannot be among them: it needs the first state resolution algorithm, and ruma's state
/// resolution implements only the second (versions 2 and up).
const KNOWN_ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// The room versions this server creates and joins.
pub fn supported_room_versions() -> Vec<RoomVersionId> {
    KNOWN_ROOM_VERSIONS
        .iter()
        .filter(|v| supported_version(v).is_some())
        .cloned()
        .collect()
}

pub fn routes(r: &mut Router) {
    add_json_route(
        r,
        Method::GET,
        "/_matrix/client/v3/capabilities",
        |_hs, _session| async { capabilities() },
    );
}

fn capabilities() -> Result<Value> {
    let mut caps = Capabilities::new();
    let available: BTreeMap<RoomVersionId, RoomVersionStability> = supported_room_versions()
        .into_iter()
        .map(|v| (v, RoomVersionStability::Stable))
        .collect();
    caps.room_versions = RoomVersionsCapability::new(DEFAULT_ROOM_VERSION, available);
    let mut value = serde_json::to_value(&caps)?;
    // ruma leaves out capabilities that sit at their spec default (enabled); spelled out, no
    // client has to know the defaults. Third-party identifiers cannot be added here.
    if let Some(map) = value.as_object_mut() {
        map.insert("m.change_password".into(), json!({ "enabled": true }));
        map.insert("m.set_displayname".into(), json!({ "enabled": true }));
        map.insert("m.set_avatar_url".into(), json!({ "enabled": true }));
        map.insert("m.3pid_changes".into(), json!({ "enabled": false }));
    }
    Ok(json!({ "capabilities": value }))
}
