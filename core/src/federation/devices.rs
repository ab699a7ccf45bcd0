//! `GET /_matrix/federation/v1/user/devices/{userId}`: a local user's devices with their
//! identity keys, and the user's public cross-signing keys, for servers sharing a room with
//! them (Synapse asks this rather than `/user/keys/query`).
//!
//! `stream_id` is the server's stream position when answering: every device-list change is
//! recorded at a position, so a later change (and a later `m.device_list_update` EDU) always
//! carries a higher one. Devices without identity keys are left out (`keys` is required), and
//! so are device names, as in `/user/keys/query`.

use ruma::UInt;
use ruma::api::federation::device::get_devices;

use super::query::check_local_user;
use crate::client::cross_signing;
use crate::client::keys::{KeyRequester, local_device_keys};
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_devices::v1::Request, devices);
}

async fn devices(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_devices::v1::Request,
) -> Result<get_devices::v1::Response> {
    check_local_user(hs, &req.user_id)?;
    let stream_id = UInt::new_saturating(hs.current_pos());
    let keys = local_device_keys(hs, KeyRequester::Server, &req.user_id, &[])
        .await?
        .unwrap_or_default();
    let devices = keys
        .into_iter()
        .map(|(device, keys)| get_devices::v1::UserDevice::new(device, keys))
        .collect();
    let mut resp = get_devices::v1::Response::new(req.user_id.clone(), stream_id);
    resp.devices = devices;
    let (master, self_signing) = cross_signing::public_keys(hs, &req.user_id).await?;
    resp.master_key = master;
    resp.self_signing_key = self_signing;
    Ok(resp)
}

/// Tells every server sharing a room with `user` that their device list changed
/// (`m.device_list_update`, with the device's current keys, or `deleted`). The receiving
/// server refetches `/user/devices` when it cannot apply the update on its own.
pub async fn announce(hs: &Homeserver, user: &ruma::UserId, device: &ruma::DeviceId) -> Result<()> {
    let mut servers = std::collections::BTreeSet::new();
    for room in crate::db::rooms::joined_rooms(hs, user).await? {
        servers.extend(super::events::servers_in_room(hs, &room).await?);
    }
    if servers.is_empty() {
        return Ok(());
    }
    let keys = local_device_keys(hs, KeyRequester::Server, user, &[device.to_owned()])
        .await?
        .unwrap_or_default();
    let mut content = serde_json::json!({
        "user_id": user,
        "device_id": device,
        "stream_id": hs.current_pos(),
        "prev_id": [],
    });
    match keys.get(device) {
        Some(k) => content["keys"] = serde_json::to_value(k)?,
        None => content["deleted"] = serde_json::json!(true),
    }
    let edu = serde_json::json!({ "edu_type": "m.device_list_update", "content": content });
    super::outbox::send_edu(hs, servers.iter().map(|s| &**s), edu).await
}
