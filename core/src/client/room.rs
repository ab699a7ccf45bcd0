//! Room creation and upgrades (`/createRoom`, `/rooms/{roomId}/upgrade`).

use ruma::api::client::room::Visibility;
use ruma::api::client::room::create_room::v3::RoomPreset;
use ruma::api::client::room::{create_room, upgrade_room};
use ruma::{OwnedRoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::db::rooms;
use crate::error::{MatrixError, Result};
use crate::room::txn::{NewEvent, RoomTxn, supported_version};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

use super::directory;
use super::membership::member_content;

/// Rooms are created at this version unless the client asks for another.
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V11;

pub fn routes(r: &mut Router) {
    route!(r, create_room::v3::Request, create);
    route!(r, upgrade_room::v3::Request, upgrade);
}

fn new_room_id(hs: &Homeserver) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(format!("!{}:{}", hs.random_string(18), hs.server_name()))
        .map_err(|e| MatrixError::unknown(format!("room id: {e}")))
}

/// The power levels a new room starts with, before presets and overrides.
fn default_power_levels(creator: &UserId) -> Map<String, Value> {
    let v = json!({
        "users": { creator.as_str(): 100 },
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
        "historical": 100,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn create(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_room::v3::Request,
) -> Result<create_room::v3::Response> {
    let user = ctx.user_id()?.clone();
    let version = req.room_version.clone().unwrap_or(DEFAULT_ROOM_VERSION);
    if supported_version(&version).is_none() {
        return Err(MatrixError::unsupported_room_version(format!(
            "room version {version} is not supported by this server"
        )));
    }
    // Validate everything the client sent before anything is written.
    let alias = match &req.room_alias_name {
        Some(local) => {
            if local.contains(':') || local.is_empty() || local.contains(char::is_whitespace) {
                return Err(MatrixError::invalid_param(
                    "room_alias_name must be a bare localpart",
                ));
            }
            let alias = crate::limits::new_room_alias(local, hs.server_name())?;
            if directory::resolve_local_alias(hs, &alias).await?.is_some() {
                return Err(MatrixError::room_in_use("that room alias is already taken"));
            }
            Some(alias)
        }
        None => None,
    };
    let mut creation: Map<String, Value> = match &req.creation_content {
        Some(raw) => serde_json::from_str(raw.json().get()).map_err(|e| {
            MatrixError::bad_json(format!("creation_content must be an object: {e}"))
        })?,
        None => Map::new(),
    };
    let mut initial_state = Vec::new();
    for raw in &req.initial_state {
        let v: Value = serde_json::from_str(raw.json().get())
            .map_err(|e| MatrixError::bad_json(e.to_string()))?;
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| MatrixError::bad_json("initial_state event without type"))?;
        let sk = v
            .get("state_key")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let content = v.get("content").cloned().unwrap_or_else(|| json!({}));
        if !content.is_object() {
            return Err(MatrixError::bad_json(
                "initial_state content must be an object",
            ));
        }
        initial_state.push((ty.to_owned(), sk, content));
    }
    let pl_override: Option<Map<String, Value>> = match &req.power_level_content_override {
        Some(raw) => Some(
            serde_json::from_str(raw.json().get())
                .map_err(|e| MatrixError::bad_json(format!("power_level_content_override: {e}")))?,
        ),
        None => None,
    };
    for invitee in &req.invite {
        if invitee.server_name() != hs.server_name() {
            // Checked by their server when the invite is sent, after the room exists.
            continue;
        }
        if crate::db::users::get_user(hs, invitee).await?.is_none() {
            return Err(MatrixError::not_found(format!(
                "user {invitee} does not exist"
            )));
        }
    }

    let preset = req.preset.clone().unwrap_or(match req.visibility {
        Visibility::Public => RoomPreset::PublicChat,
        _ => RoomPreset::PrivateChat,
    });

    let room_id = new_room_id(hs)?;
    let _lock = hs.write_lock().await;
    let mut txn = RoomTxn::create(hs, room_id.clone(), version.clone())?;

    // 1. m.room.create
    creation.insert("room_version".into(), json!(version));
    if !txn.rules.authorization.use_room_create_sender {
        creation.insert("creator".into(), json!(user));
    }
    txn.append(NewEvent::state(
        &user,
        "m.room.create",
        "",
        Value::Object(creation),
    ))
    .await?;

    // 2. The creator joins.
    txn.append(NewEvent::state(
        &user,
        "m.room.member",
        user.as_str(),
        member_content(hs, &user, "join", None).await?,
    ))
    .await?;

    // 3. Power levels: defaults, the preset's extras, then the client's override.
    let mut pl = default_power_levels(&user);
    if preset == RoomPreset::TrustedPrivateChat
        && let Some(Value::Object(users)) = pl.get_mut("users")
    {
        for invitee in &req.invite {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    if let Some(over) = pl_override {
        for (k, v) in over {
            pl.insert(k, v);
        }
    }
    txn.append(NewEvent::state(
        &user,
        "m.room.power_levels",
        "",
        Value::Object(pl),
    ))
    .await?;

    // 4. Canonical alias.
    if let Some(alias) = &alias {
        txn.append(NewEvent::state(
            &user,
            "m.room.canonical_alias",
            "",
            json!({ "alias": alias }),
        ))
        .await?;
    }

    // 5. Preset state, unless initial_state sets the same thing.
    let overridden = |t: &str| {
        initial_state
            .iter()
            .any(|(ty, sk, _)| ty == t && sk.is_empty())
    };
    let join_rule = if preset == RoomPreset::PublicChat {
        "public"
    } else {
        "invite"
    };
    let mut preset_events = vec![
        ("m.room.join_rules", json!({ "join_rule": join_rule })),
        (
            "m.room.history_visibility",
            json!({ "history_visibility": "shared" }),
        ),
    ];
    if preset != RoomPreset::PublicChat {
        preset_events.push(("m.room.guest_access", json!({ "guest_access": "can_join" })));
    }
    for (t, content) in preset_events {
        if !overridden(t) {
            txn.append(NewEvent::state(&user, t, "", content)).await?;
        }
    }

    // 6. initial_state, 7. name and topic.
    for (t, sk, content) in initial_state {
        txn.append(NewEvent::state(&user, &t, &sk, content)).await?;
    }
    if let Some(name) = &req.name {
        txn.append(NewEvent::state(
            &user,
            "m.room.name",
            "",
            json!({ "name": name }),
        ))
        .await?;
    }
    if let Some(topic) = &req.topic {
        txn.append(NewEvent::state(
            &user,
            "m.room.topic",
            "",
            json!({
                "topic": topic,
                "m.topic": [{ "body": topic, "mimetype": "text/plain" }],
            }),
        ))
        .await?;
    }

    // 8. Invites (users of other servers are invited once the room exists).
    for invitee in req
        .invite
        .iter()
        .filter(|u| u.server_name() == hs.server_name())
    {
        let mut content = member_content(hs, invitee, "invite", None).await?;
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        txn.append(NewEvent::state(
            &user,
            "m.room.member",
            invitee.as_str(),
            content,
        ))
        .await?;
    }

    if let Some(alias) = &alias {
        directory::put_alias(&mut txn.batch, alias, &room_id, &user)?;
    }
    if req.visibility == Visibility::Public {
        directory::set_published(&mut txn.batch, &room_id, true);
    }
    txn.commit().await?;
    drop(_lock);
    for invitee in req
        .invite
        .iter()
        .filter(|u| u.server_name() != hs.server_name())
    {
        let mut content = serde_json::json!({ "membership": "invite" });
        if req.is_direct {
            content["is_direct"] = json!(true);
        }
        // The room exists either way: a refused remote invite is logged, not an error of
        // the room's creation (Synapse does the same).
        if let Err(e) =
            crate::federation::remote_membership::invite(hs, &user, &room_id, invitee, content)
                .await
        {
            tracing::info!(room = %room_id, %invitee, error = %e, "remote invite failed");
        }
    }
    tracing::debug!(room = %room_id, %user, "room created");
    Ok(create_room::v3::Response::new(room_id))
}

/// State carried over to the replacement room on upgrade.
const UPGRADE_COPIED_STATE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
    "m.room.power_levels",
];

async fn upgrade(
    hs: &Homeserver,
    ctx: Ctx,
    req: upgrade_room::v3::Request,
) -> Result<upgrade_room::v3::Response> {
    let user = ctx.user_id()?.clone();
    let new_version = req.new_version.clone();
    if supported_version(&new_version).is_none() {
        return Err(MatrixError::unsupported_room_version(format!(
            "room version {new_version} is not supported"
        )));
    }
    let old_room = req.room_id.clone();
    let new_room = new_room_id(hs)?;
    let _lock = hs.write_lock().await;
    let mut old = RoomTxn::open(hs, &old_room).await?;
    if old.membership(&user).await? != Some(ruma::events::room::member::MembershipState::Join) {
        return Err(MatrixError::forbidden("you are not joined to this room"));
    }
    let pl = old.power_levels().await?;
    if pl.user(&user) < pl.event("m.room.tombstone", true) {
        return Err(MatrixError::forbidden(
            "you may not upgrade this room (m.room.tombstone power level)",
        ));
    }
    let predecessor_event = rooms::room_state(hs, &old_room)
        .await?
        .and_then(|rs| rs.record.extremities.first().cloned());

    // The replacement room.
    let mut txn = RoomTxn::create(hs, new_room.clone(), new_version.clone())?;
    let old_create = old
        .state_content("m.room.create", "")
        .await?
        .unwrap_or_else(|| json!({}));
    let mut create = Map::new();
    if let Some(f) = old_create.get("m.federate") {
        create.insert("m.federate".into(), f.clone());
    }
    if let Some(t) = old_create.get("type") {
        create.insert("type".into(), t.clone());
    }
    create.insert("room_version".into(), json!(new_version));
    let mut pred = json!({ "room_id": old_room });
    if let Some(e) = predecessor_event {
        pred["event_id"] = json!(e);
    }
    create.insert("predecessor".into(), pred);
    if !txn.rules.authorization.use_room_create_sender {
        create.insert("creator".into(), json!(user));
    }
    txn.append(NewEvent::state(
        &user,
        "m.room.create",
        "",
        Value::Object(create),
    ))
    .await?;
    txn.append(NewEvent::state(
        &user,
        "m.room.member",
        user.as_str(),
        member_content(hs, &user, "join", None).await?,
    ))
    .await?;
    // Power levels first (with the upgrader at 100 so the rest may be sent), then the rest.
    let old_pl = old.state_content("m.room.power_levels", "").await?;
    let mut new_pl = old_pl
        .clone()
        .unwrap_or_else(|| Value::Object(default_power_levels(&user)));
    let needed = new_pl
        .get("users")
        .and_then(|u| u.get(user.as_str()))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if needed < 100 {
        new_pl["users"][user.as_str()] = json!(100);
    }
    txn.append(NewEvent::state(&user, "m.room.power_levels", "", new_pl))
        .await?;
    for t in UPGRADE_COPIED_STATE
        .iter()
        .filter(|t| **t != "m.room.power_levels")
    {
        if let Some(content) = old.state_content(t, "").await? {
            txn.append(NewEvent::state(&user, t, "", content)).await?;
        }
    }
    // Restore the original power levels if we raised the upgrader.
    if needed < 100
        && let Some(orig) = old_pl.clone()
    {
        txn.append(NewEvent::state(&user, "m.room.power_levels", "", orig))
            .await?;
    }
    // Aliases move to the new room.
    let canonical = old.state_content("m.room.canonical_alias", "").await?;
    if let Some(c) = &canonical {
        txn.append(NewEvent::state(
            &user,
            "m.room.canonical_alias",
            "",
            c.clone(),
        ))
        .await?;
    }
    let mut new_batch = std::mem::take(&mut txn.batch);
    for alias in directory::local_aliases_of(hs, &old_room).await? {
        directory::move_alias(&mut new_batch, &alias, &old_room, &new_room, &user)?;
    }
    if directory::is_published(hs, &old_room).await? {
        directory::set_published(&mut new_batch, &old_room, false);
        directory::set_published(&mut new_batch, &new_room, true);
    }
    txn.batch = new_batch;

    // Tombstone the old room and stop ordinary users from talking in it.
    old.append(NewEvent::state(
        &user,
        "m.room.tombstone",
        "",
        json!({
            "body": "This room has been replaced",
            "replacement_room": new_room,
        }),
    ))
    .await?;
    if let Some(mut pl) = old_pl {
        let users_default = pl.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let restricted = std::cmp::max(50, users_default + 1);
        pl["events_default"] = json!(restricted);
        pl["invite"] = json!(restricted);
        old.append(NewEvent::state(&user, "m.room.power_levels", "", pl))
            .await?;
    }
    if canonical.is_some() {
        old.append(NewEvent::state(
            &user,
            "m.room.canonical_alias",
            "",
            json!({}),
        ))
        .await?;
    }
    // One write for both rooms.
    let old_batch = old.finish().await?;
    txn.batch.extend(old_batch);
    txn.commit().await?;
    old.publish();
    Ok(upgrade_room::v3::Response::new(new_room))
}
