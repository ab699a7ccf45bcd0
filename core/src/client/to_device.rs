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
    // Messages for users of other servers: one `m.direct_to_device` EDU per server, queued in
    // this same batch (the message id makes a retried EDU deliver once there).
    let mut remote: std::collections::BTreeMap<
        ruma::OwnedServerName,
        serde_json::Map<String, serde_json::Value>,
    > = std::collections::BTreeMap::new();
    for (target, per_device) in &req.messages {
        if target.server_name() != hs.server_name() {
            let mut devices = serde_json::Map::new();
            for (which, content) in per_device {
                let key = match which {
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    DeviceIdOrAllDevices::DeviceId(d) => d.to_string(),
                };
                let value: serde_json::Value = serde_json::from_str(content.json().get())
                    .map_err(|e| MatrixError::bad_json(e.to_string()))?;
                devices.insert(key, value);
            }
            remote
                .entry(target.server_name().to_owned())
                .or_default()
                .insert(target.to_string(), serde_json::Value::Object(devices));
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

    let mut destinations = Vec::new();
    for (server, messages) in remote {
        let edu = serde_json::json!({
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": sender,
                "type": req.event_type.to_string(),
                "message_id": format!("{sender_device}:{}", req.txn_id),
                "messages": messages,
            },
        });
        destinations.extend(crate::federation::outbox::enqueue(
            hs,
            &mut batch,
            [&*server],
            &crate::federation::outbox::Item::Edu(edu),
        )?);
    }
    if queued > 0 || !destinations.is_empty() {
        hs.commit(batch).await?;
        crate::federation::outbox::queued(hs, destinations);
    } else {
        hs.store.write(batch).await?;
    }
    tracing::debug!(%sender, event_type = %req.event_type, queued, "to-device messages queued");
    Ok(send_event_to_device::v3::Response::new())
}

/// For `/sync`'s `to_device`: the device's messages queued in `(after, upto]`, oldest first,
/// at most `limit`. When the limit cut the list short, also the position of the last message
/// returned: `/sync` then puts it into `next_batch` so the next sync continues (and
/// acknowledges) exactly there.
pub async fn to_device_since(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<(Vec<Raw<AnyToDeviceEvent>>, Option<u64>)> {
    let rows = e2ee::to_device_between(hs, user, device, after, upto, limit).await?;
    let truncated = if rows.len() >= limit {
        rows.last().map(|(pos, _)| *pos)
    } else {
        None
    };
    let events = rows
        .iter()
        .map(|(_, rec)| Ok(Raw::from_json(serde_json::value::to_raw_value(rec)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((events, truncated))
}

/// Deletes the device's messages up to and including `upto`, once a sync token shows the client
/// received them (the spec lets the server forget them then). A retried sync carries the same
/// token, so it acknowledges nothing new and gets the same messages again.
pub async fn ack_to_device(
    hs: &Homeserver,
    user: &UserId,
    device: &DeviceId,
    upto: u64,
) -> Result<()> {
    // Every `/sync` acknowledges; an inbox known to be empty needs no scan to say so.
    let inbox = crate::db::key(&[user.as_bytes(), device.as_bytes()]);
    let empty = hs
        .memo("to_device", user.as_bytes(), &inbox, || {
            e2ee::inbox_is_empty(hs, user, device)
        })
        .await?;
    if *empty {
        return Ok(());
    }
    let mut batch = Batch::new();
    e2ee::delete_to_device_upto(hs, &mut batch, user, device, upto).await?;
    if !batch.is_empty() {
        hs.store.write(batch).await?;
    }
    Ok(())
}
