//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}` and the inbox `/sync`
//! delivers from.

use ruma::api::client::to_device::send_event_to_device;
use ruma::events::AnyToDeviceEvent;
use ruma::serde::Raw;
use ruma::to_device::DeviceIdOrAllDevices;
use ruma::{DeviceId, OwnedDeviceId, UserId};

use crate::db::e2ee::{self, ToDeviceRecord};
use crate::db::users;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, send_event_to_device::v3::Request, send);
}

async fn send(
    hs: &Homeserver,
    ctx: Ctx,
    req: send_event_to_device::v3::Request,
) -> Result<send_event_to_device::v3::Response> {
    let session = ctx.session()?;
    let (sender, sender_device) = (&session.user_id, &session.device_id);

    for (target, per_device) in &req.messages {
        for content in per_device.values() {
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(
                content.json().get(),
            )
            .is_err()
            {
                return Err(MatrixError::bad_json(format!(
                    "the message for {target} is not a JSON object"
                )));
            }
        }
    }

    // The transaction check and the write happen under one lock, so a retry racing the
    // original cannot deliver twice.
    let _guard = hs.write_lock().await;
    if e2ee::to_device_txn_seen(hs, sender, sender_device, req.txn_id.as_str()).await? {
        return Ok(send_event_to_device::v3::Response::new());
    }
    let mut batch = Batch::new();
    e2ee::put_to_device_txn(&mut batch, sender, sender_device, req.txn_id.as_str());

    let mut queued = 0usize;
    for (target, per_device) in &req.messages {
        if target.server_name() != hs.server_name() {
            tracing::warn!(%target, "to-device message to a remote user dropped: no federation yet");
            continue;
        }
        for (which, content) in per_device {
            let devices: Vec<OwnedDeviceId> = match which {
                DeviceIdOrAllDevices::AllDevices => users::list_devices(hs, target)
                    .await?
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect(),
                // Unknown devices are skipped silently, as for unknown users: the sender's
                // device list may simply be stale.
                DeviceIdOrAllDevices::DeviceId(d) => {
                    match users::get_device(hs, target, d.as_str()).await? {
                        Some(_) => vec![d.clone()],
                        None => Vec::new(),
                    }
                }
            };
            for device in devices {
                let record = ToDeviceRecord {
                    sender: sender.clone(),
                    event_type: req.event_type.to_string(),
                    content: content.json().to_owned(),
                };
                e2ee::put_to_device(&mut batch, target, &device, hs.alloc_pos(), &record)?;
                queued += 1;
            }
        }
    }

    if queued > 0 {
        hs.commit(batch).await?;
    } else {
        hs.store.write(batch).await?;
    }
    tracing::debug!(%sender, event_type = %req.event_type, queued, "to-device messages queued");
    Ok(send_event_to_device::v3::Response::new())
}

/// For `/sync`'s `to_device`: up to `limit` messages for the device, oldest first, and the
/// position of the last one returned (`since` when none).
///
/// Messages queued after `since` are returned, and so are older ones that were never handed out
/// (a previous sync hit `limit` before reaching them): the inbox keeps every message until
/// [`ack_to_device`] confirms its delivery, so none is lost to a limit.
pub async fn to_device_since(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    since: u64,
    limit: usize,
) -> Result<(Vec<Raw<AnyToDeviceEvent>>, u64)> {
    let delivered = e2ee::delivered_upto(hs, user, device).await?;
    let rows = e2ee::to_device_between(
        hs,
        user,
        device,
        since.min(delivered),
        hs.current_pos(),
        limit,
    )
    .await?;
    let Some(last) = rows.last().map(|(pos, _)| *pos) else {
        return Ok((Vec::new(), since));
    };
    if last > delivered {
        let mut batch = Batch::new();
        e2ee::put_delivered_upto(&mut batch, user, device, last);
        hs.store.write(batch).await?;
    }
    let events = rows
        .iter()
        .map(|(_, rec)| Ok(Raw::from_json(serde_json::value::to_raw_value(rec)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((events, last))
}

/// Deletes the device's messages up to position `upto` once the client's next sync (with `upto`
/// as its `since`) shows it received them, as the spec allows. Messages never handed out are
/// kept whatever `upto` says.
pub async fn ack_to_device(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    upto: u64,
) -> Result<()> {
    let delivered = e2ee::delivered_upto(hs, user, device).await?;
    let mut batch = Batch::new();
    e2ee::delete_to_device_upto(hs, &mut batch, user, device, upto.min(delivered)).await?;
    if !batch.is_empty() {
        hs.store.write(batch).await?;
    }
    Ok(())
}
