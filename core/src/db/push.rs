//! Push: the user's rule set (kept as their `m.push_rules` account data, so `/sync` delivers
//! every change), pushers, and the evaluation of new events against the rules, whose outcome
//! [`notifications`] stores (its module doc has that layout and why).
//!
//! Layout of `pushers`:
//! - `u`, user, app_id, pushkey → [`PusherRecord`]
//! - `k`, app_id, pushkey, user → empty (who else holds the same pusher, for `append: false`)

pub mod notifications;

use std::rc::Rc;

use ruma::api::client::push::{Pusher, PusherIds};
use ruma::events::push_rules::PushRulesEventContent;
use ruma::events::room::power_levels::{
    RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource,
};
use ruma::push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset};
use ruma::serde::Raw;
use ruma::{OwnedDeviceId, OwnedUserId, RoomId, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rooms::{Pdu, room_record, state_event};
use super::{from_json, key, prefix, to_json};
use crate::Homeserver;
use crate::client::account_data::{self, PUSH_RULES};
use crate::error::{MatrixError, Result};
use crate::storage::Batch;

pub use notifications::NotificationRecord;
use notifications::{Evaluated, Outcome};

// ---------------------------------------------------------------------------------------------
// Rules

/// The user's push rules: what they stored, or the server defaults.
pub async fn rules(hs: &Homeserver, user: &UserId) -> Result<Ruleset> {
    Ok((*shared_rules(hs, user).await?).clone())
}

/// [`rules`] without a copy: every new event evaluates every member's rules, and building the
/// server defaults and merging them each time (or just copying them) cost more than the
/// evaluation itself.
async fn shared_rules(hs: &Homeserver, user: &UserId) -> Result<Rc<Ruleset>> {
    if let Some(r) = hs.caches.push_rules.borrow().get(user) {
        return Ok(r.clone());
    }
    let rules = Rc::new(load_rules(hs, user).await?);
    hs.caches
        .push_rules
        .borrow_mut()
        .insert(user.to_owned(), rules.clone());
    Ok(rules)
}

async fn load_rules(hs: &Homeserver, user: &UserId) -> Result<Ruleset> {
    match account_data::get(hs, user, None, PUSH_RULES).await? {
        Some(v) => {
            let mut stored = serde_json::from_value::<PushRulesEventContent>(v)
                .map_err(|e| MatrixError::unknown(format!("stored push rules are corrupt: {e}")))?
                .global;
            // Server defaults added since the rules were stored apply too; the user's
            // `enabled` and `actions` choices for the existing ones are kept.
            stored.update_with_server_default(Ruleset::server_default(user));
            Ok(stored)
        }
        None => Ok(Ruleset::server_default(user)),
    }
}

/// Read-modify-write of the user's rules under the write lock; the new rules get a stream
/// position so `/sync` delivers them. Nothing is written when `change` fails.
pub async fn update_rules<T>(
    hs: &Homeserver,
    user: &UserId,
    change: impl FnOnce(&mut Ruleset) -> Result<T>,
) -> Result<T> {
    let _g = hs.write_lock().await;
    let mut ruleset = rules(hs, user).await?;
    let out = change(&mut ruleset)?;
    let pos = hs.alloc_pos();
    let mut batch = Batch::new();
    let content = serde_json::to_value(PushRulesEventContent::new(ruleset))?;
    account_data::put(hs, &mut batch, pos, user, None, PUSH_RULES, content).await?;
    hs.caches.push_rules.borrow_mut().remove(user);
    let committed = hs.commit(batch).await;
    hs.caches.push_rules.borrow_mut().remove(user);
    committed?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// Evaluates a newly appended event against the push rules of every local member other than
/// its sender (and of a local user it invites), and records what notifies whom (see
/// [`notifications`] for how that is stored). Runs inside the caller's write lock, writing
/// into its batch.
pub async fn evaluate_event(
    hs: &Homeserver,
    batch: &mut Batch,
    pdu: &Pdu,
    members: &[OwnedUserId],
) -> Result<()> {
    let local: Vec<&OwnedUserId> = members
        .iter()
        .filter(|u| u.server_name() == hs.server_name())
        .collect();
    let mut targets: Vec<OwnedUserId> = local
        .iter()
        .filter(|u| ***u != pdu.sender)
        .map(|u| (*u).clone())
        .collect();
    if let Some(invitee) = invited_local_user(hs, pdu)
        && !targets.contains(&invitee)
    {
        targets.push(invitee);
    }
    if targets.is_empty() {
        return Ok(());
    }
    let event: Raw<Value> = Raw::from_json(serde_json::value::to_raw_value(&pdu.json)?);
    let power_levels = power_levels_ctx(hs, &pdu.room_id).await?;
    let member_count = UInt::new_saturating(u64::try_from(members.len()).unwrap_or(u64::MAX));
    let mut outcomes = Vec::with_capacity(targets.len());
    for user in targets {
        if ignores(hs, &user, &pdu.sender).await? {
            outcomes.push(Outcome {
                user,
                actions: None,
            });
            continue;
        }
        let ruleset = shared_rules(hs, &user).await?;
        let display_name = state_event(hs, &pdu.room_id, "m.room.member", user.as_str())
            .await?
            .and_then(|m| {
                m.content
                    .get("displayname")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let mut ctx = PushConditionRoomCtx::new(
            pdu.room_id.clone(),
            member_count,
            user.clone(),
            display_name,
        );
        if let Some(pl) = &power_levels {
            ctx = ctx.with_power_levels(pl.clone());
        }
        let actions = ruleset.get_actions(&event, &ctx).await;
        let notifies = actions.iter().any(Action::should_notify);
        outcomes.push(Outcome {
            user,
            actions: notifies.then(|| actions.to_vec()),
        });
    }
    notifications::record(
        hs,
        batch,
        Evaluated {
            room: &pdu.room_id,
            event_id: &pdu.event_id,
            sender: &pdu.sender,
            pos: pdu.pos,
            ts: hs.now_ms(),
            local_members: &local,
            outcomes,
        },
    )
    .await
}

/// A local user whom this event invites: they are not joined yet, but should hear of it.
fn invited_local_user(hs: &Homeserver, pdu: &Pdu) -> Option<OwnedUserId> {
    if pdu.event_type != "m.room.member" || pdu.content.get("membership")?.as_str()? != "invite" {
        return None;
    }
    let user = OwnedUserId::try_from(pdu.state_key.as_deref()?).ok()?;
    (user.server_name() == hs.server_name() && user != pdu.sender).then_some(user)
}

/// Whether `user` has `sender` on their `m.ignored_user_list`.
async fn ignores(hs: &Homeserver, user: &UserId, sender: &UserId) -> Result<bool> {
    let list = account_data::get(hs, user, None, "m.ignored_user_list").await?;
    Ok(list
        .as_ref()
        .and_then(|l| l.get("ignored_users"))
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(sender.as_str())))
}

/// The room's power levels as the `sender_notification_permission` condition needs them.
async fn power_levels_ctx(
    hs: &Homeserver,
    room: &RoomId,
) -> Result<Option<PushConditionPowerLevelsCtx>> {
    let Some(record) = room_record(hs, room).await? else {
        return Ok(None);
    };
    let Some(rules) = record.version.rules() else {
        return Ok(None);
    };
    let mut creators = Vec::new();
    if let Some(create) = state_event(hs, room, "m.room.create", "").await? {
        creators.push(create.sender.clone());
        if let Some(extra) = create
            .content
            .get("additional_creators")
            .and_then(Value::as_array)
        {
            creators.extend(
                extra
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| OwnedUserId::try_from(s).ok()),
            );
        }
    }
    let content = state_event(hs, room, "m.room.power_levels", "")
        .await?
        .and_then(|p| {
            serde_json::from_value::<RoomPowerLevelsEventContent>(p.content.clone()).ok()
        });
    let source = content
        .map(RoomPowerLevelsSource::Original)
        .unwrap_or_default();
    Ok(Some(
        RoomPowerLevels::new(source, &rules.authorization, creators).into(),
    ))
}

/// `(notification_count, highlight_count)` of the room for the user: notifications for events
/// after the one their latest `m.read` / `m.read.private` receipt points to.
pub async fn notification_counts(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
) -> Result<(u64, u64)> {
    notifications::counts(hs, user, room).await
}

/// One page of the user's notifications, newest first, older than position `before` when
/// given. Returns the page and, when more remain, the token of the next page.
pub async fn notifications_page(
    hs: &Homeserver,
    user: &UserId,
    before: Option<u64>,
    limit: usize,
    only_highlight: bool,
) -> Result<(Vec<(u64, NotificationRecord)>, Option<u64>)> {
    notifications::page(hs, user, before, limit, only_highlight).await
}

// ---------------------------------------------------------------------------------------------
// Pushers

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    pub pusher: Pusher,
    /// The device that registered it, so that removing the device removes its pushers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<OwnedDeviceId>,
}

fn pusher_key(user: &UserId, ids: &PusherIds) -> Vec<u8> {
    key(&[
        b"u",
        user.as_bytes(),
        ids.app_id.as_bytes(),
        ids.pushkey.as_bytes(),
    ])
}

fn holder_key(ids: &PusherIds, user: &UserId) -> Vec<u8> {
    key(&[
        b"k",
        ids.app_id.as_bytes(),
        ids.pushkey.as_bytes(),
        user.as_bytes(),
    ])
}

pub async fn pushers(hs: &Homeserver, user: &UserId) -> Result<Vec<PusherRecord>> {
    hs.scan_prefix("pushers", &prefix(&[b"u", user.as_bytes()]))
        .await?
        .iter()
        .map(|(_, v)| from_json(v))
        .collect()
}

/// Creates or replaces a pusher. Unless `append`, the same app id and pushkey registered by
/// other users is removed, as the spec asks.
pub async fn set_pusher(
    hs: &Homeserver,
    user: &UserId,
    device: Option<OwnedDeviceId>,
    pusher: Pusher,
    append: bool,
) -> Result<()> {
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    let ids = pusher.ids.clone();
    if !append {
        let holders = prefix(&[b"k", ids.app_id.as_bytes(), ids.pushkey.as_bytes()]);
        for (k, _) in hs.scan_prefix("pushers", &holders).await? {
            let other =
                String::from_utf8_lossy(k.get(holders.len()..).unwrap_or_default()).into_owned();
            let Ok(other) = OwnedUserId::try_from(other) else {
                continue;
            };
            if other != user {
                batch.delete("pushers", pusher_key(&other, &ids));
                batch.delete("pushers", k);
            }
        }
    }
    batch.put("pushers", holder_key(&ids, user), Vec::new());
    batch.put(
        "pushers",
        pusher_key(user, &ids),
        to_json(&PusherRecord {
            pusher,
            device_id: device,
        })?,
    );
    hs.store.write(batch).await?;
    Ok(())
}

/// Removes one pusher of the user; removing one that does not exist is not an error.
pub async fn delete_pusher(hs: &Homeserver, user: &UserId, ids: &PusherIds) -> Result<()> {
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    batch.delete("pushers", pusher_key(user, ids));
    batch.delete("pushers", holder_key(ids, user));
    hs.store.write(batch).await?;
    Ok(())
}

/// Adds to `batch` the removal of every pusher the device registered (for device deletion and
/// logout).
pub async fn delete_device_pushers(
    hs: &Homeserver,
    batch: &mut Batch,
    user: &UserId,
    device: &str,
) -> Result<()> {
    for rec in pushers(hs, user).await? {
        if rec.device_id.as_deref().map(|d| d.as_str()) == Some(device) {
            batch.delete("pushers", pusher_key(user, &rec.pusher.ids));
            batch.delete("pushers", holder_key(&rec.pusher.ids, user));
        }
    }
    Ok(())
}
