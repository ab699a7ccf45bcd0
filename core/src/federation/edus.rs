//! EDUs received in a transaction: `m.typing`, `m.direct_to_device`, `m.presence`,
//! `m.receipt`, `m.device_list_update` and `m.signing_key_update`. An EDU speaks only for
//! users of the server that sent it; anything else is ignored.

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, ServerName, UserId};
use serde_json::Value;

use crate::Homeserver;
use crate::db::{e2ee, users};
use crate::error::{MatrixError, Result};
use crate::storage::Batch;

/// How long a remote typing notice lasts when it does not say (the spec's suggestion).
const TYPING_MS: u64 = 30_000;

fn user_of(origin: &ServerName, v: Option<&Value>) -> Option<OwnedUserId> {
    let user = OwnedUserId::try_from(v?.as_str()?).ok()?;
    (user.server_name() == origin).then_some(user)
}

pub async fn receive(hs: &Homeserver, origin: &ServerName, edu: &Value) -> Result<()> {
    let content = edu.get("content").unwrap_or(&Value::Null);
    match edu.get("edu_type").and_then(Value::as_str) {
        Some("m.typing") => typing(hs, origin, content).await,
        Some("m.direct_to_device") => to_device(hs, origin, content).await,
        Some("m.device_list_update") | Some("m.signing_key_update") => {
            device_list(hs, origin, content).await
        }
        Some("m.receipt") => crate::client::receipts::receive_remote(hs, origin, content).await,
        Some("m.presence") => crate::client::presence::receive_remote(hs, origin, content).await,
        other => {
            tracing::debug!(?other, "ignored EDU type");
            Ok(())
        }
    }
}

async fn typing(hs: &Homeserver, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(user) = user_of(origin, c.get("user_id")) else {
        return Ok(());
    };
    let Some(room) = c
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|r| OwnedRoomId::try_from(r).ok())
    else {
        return Ok(());
    };
    if crate::db::rooms::membership(hs, &room, &user).await?
        != Some(ruma::events::room::member::MembershipState::Join)
    {
        return Ok(());
    }
    let typing = c.get("typing").and_then(Value::as_bool).unwrap_or(false);
    let until = typing.then(|| hs.now_ms() + TYPING_MS);
    crate::client::typing::set(hs, &room, &user, until).await
}

async fn to_device(hs: &Homeserver, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(sender) = user_of(origin, c.get("sender")) else {
        return Ok(());
    };
    let event_type = c
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let message_id = c
        .get("message_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some(messages) = c.get("messages").and_then(Value::as_object) else {
        return Ok(());
    };
    let _guard = hs.write_lock().await;
    // The message id makes a retried EDU deliver once.
    let origin_device: OwnedDeviceId = format!("federation:{origin}").into();
    if !message_id.is_empty()
        && e2ee::to_device_txn_seen(hs, &sender, &origin_device, message_id).await?
    {
        return Ok(());
    }
    let mut batch = Batch::new();
    if !message_id.is_empty() {
        e2ee::put_to_device_txn(&mut batch, &sender, &origin_device, message_id);
    }
    let mut queued = 0;
    for (target, per_device) in messages {
        let Ok(target) = <&UserId>::try_from(target.as_str()) else {
            continue;
        };
        if target.server_name() != hs.server_name() {
            continue;
        }
        let Some(per_device) = per_device.as_object() else {
            continue;
        };
        for (which, content) in per_device {
            if !content.is_object() {
                continue;
            }
            let devices: Vec<OwnedDeviceId> = if which == "*" {
                users::list_devices(hs, target)
                    .await?
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect()
            } else {
                match users::get_device(hs, target, which).await? {
                    Some(_) => vec![which.as_str().into()],
                    None => Vec::new(),
                }
            };
            for device in devices {
                let record = e2ee::ToDeviceRecord {
                    sender: sender.clone(),
                    event_type: event_type.clone(),
                    content: serde_json::value::to_raw_value(content)
                        .map_err(|e| MatrixError::bad_json(e.to_string()))?,
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
    Ok(())
}

/// A remote user's devices or cross-signing keys changed: local users who share a room with
/// them see the change in `/sync`'s `device_lists.changed`, and query the keys again.
async fn device_list(hs: &Homeserver, origin: &ServerName, c: &Value) -> Result<()> {
    let Some(user) = user_of(origin, c.get("user_id")) else {
        return Ok(());
    };
    let _guard = hs.write_lock().await;
    let mut batch = Batch::new();
    e2ee::record_key_change(&mut batch, hs.alloc_pos(), &user);
    hs.commit(batch).await
}
