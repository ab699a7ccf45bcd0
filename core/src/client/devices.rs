//! Device management: list, show, rename and delete the caller's devices.

use ruma::api::client::device::{
    delete_device, delete_devices, get_device, get_devices, update_device,
};
use ruma::{OwnedDeviceId, UserId};

use crate::client::uia::{self, Completed, Operation, UiaError};
use crate::db::e2ee;
use crate::db::users::{self, DeviceRecord};
use crate::error::{MatrixError, OptionExt, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route, route_json, uia_route};
use serde_json::{Value, json};

/// Longest accepted device display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

pub fn routes(r: &mut Router) {
    route_json!(r, get_devices::v3::Request, list);
    route_json!(r, get_device::v3::Request, show);
    route!(r, update_device::v3::Request, update);
    uia_route!(r, delete_device::v3::Request, delete_one);
    uia_route!(r, delete_devices::v3::Request, delete_many);
}

/// Deletes a device with everything that belongs to it: its access and refresh tokens, its
/// end-to-end encryption keys and its pushers. The caller holds the write lock and commits `batch` with
/// [`Homeserver::commit`], since the key removal is a device-list change at a stream position.
pub async fn remove_device(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
    dev: &DeviceRecord,
) -> Result<()> {
    users::delete_device(hs, batch, user, dev);
    crate::client::keys::delete_device_keys(hs, batch, user, &dev.device_id).await?;
    crate::db::push::delete_device_pushers(hs, batch, user, dev.device_id.as_str()).await?;
    Ok(())
}

/// A device as the spec's `Device` object. Built by hand: ruma's type sends `null` for an
/// unset `display_name` or `last_seen_ip`, where the spec's schema wants the field absent.
fn device_json(dev: DeviceRecord) -> Value {
    let mut v = json!({ "device_id": dev.device_id });
    if let Some(n) = dev.display_name {
        v["display_name"] = json!(n);
    }
    if let Some(ip) = dev.last_seen_ip {
        v["last_seen_ip"] = json!(ip);
    }
    if let Some(ts) = dev.last_seen_ts {
        v["last_seen_ts"] = json!(ts);
    }
    v
}

async fn list(hs: &Homeserver, ctx: Ctx, _req: get_devices::v3::Request) -> Result<Value> {
    let devices = users::list_devices(hs, ctx.user_id()?).await?;
    Ok(json!({ "devices": devices.into_iter().map(device_json).collect::<Vec<_>>() }))
}

async fn show(hs: &Homeserver, ctx: Ctx, req: get_device::v3::Request) -> Result<Value> {
    let dev = users::get_device(hs, ctx.user_id()?, req.device_id.as_str())
        .await?
        .or_not_found("you have no device with that id")?;
    Ok(device_json(dev))
}

/// Renames a device. Only application services may create devices here, and this server has
/// none, so an unknown device is `404`.
async fn update(
    hs: &Homeserver,
    ctx: Ctx,
    req: update_device::v3::Request,
) -> Result<update_device::v3::Response> {
    let user = ctx.user_id()?;
    if let Some(name) = &req.display_name
        && name.chars().count() > MAX_DISPLAY_NAME_CHARS
    {
        return Err(MatrixError::invalid_param(format!(
            "device display names are limited to {MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    let _g = hs.write_lock().await;
    let mut dev = users::get_device(hs, user, req.device_id.as_str())
        .await?
        .or_not_found("you have no device with that id")?;
    if let Some(name) = req.display_name {
        dev.display_name = Some(name);
        let mut batch = Batch::new();
        users::put_device(&mut batch, user, &dev)?;
        // `/keys/query` serves the display name with the device's keys, so the user's device
        // list changed for everyone who tracks it.
        if e2ee::device_keys(hs, user, &dev.device_id).await?.is_some() {
            e2ee::record_key_change(&mut batch, hs.alloc_pos(), user);
        }
        hs.commit(batch).await?;
    }
    Ok(update_device::v3::Response::new())
}

async fn delete_one(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_device::v3::Request,
) -> Result<delete_device::v3::Response, UiaError> {
    let user = ctx.user_id()?;
    let op = Operation::sensitive(hs, "delete_device", user).await?;
    let done = uia::authenticate(hs, &op, req.auth.as_ref()).await?;
    delete_all(hs, user, &[req.device_id], done).await?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_many(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_devices::v3::Request,
) -> Result<delete_devices::v3::Response, UiaError> {
    let user = ctx.user_id()?;
    let op = Operation::sensitive(hs, "delete_devices", user).await?;
    let done = uia::authenticate(hs, &op, req.auth.as_ref()).await?;
    delete_all(hs, user, &req.devices, done).await?;
    Ok(delete_devices::v3::Response::new())
}

/// Deletes the devices in one batch. Unknown ids are skipped: the spec answers `200` for a
/// device "removed previously".
async fn delete_all(
    hs: &Homeserver,
    user: &UserId,
    ids: &[OwnedDeviceId],
    done: Completed,
) -> Result<()> {
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    done.consume(&mut batch);
    for id in ids {
        if let Some(dev) = users::get_device(hs, user, id.as_str()).await? {
            remove_device(hs, &mut batch, user, &dev).await?;
        }
    }
    hs.commit(batch).await?;
    tracing::info!(user = %user, count = ids.len(), "devices deleted");
    Ok(())
}
