//! Room tagging: `GET /user/{userId}/rooms/{roomId}/tags` and `PUT`/`DELETE .../tags/{tag}`.
//!
//! Tags live in the user's `m.tag` room account data (`{"tags": {name: {order}}}`), so every
//! change reaches the user's other devices through `/sync` like any other account data.

use ruma::api::client::tag::{create_tag, delete_tag, get_tags};
use ruma::events::tag::{TagInfo, TagName, Tags};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::account_data;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

pub const TAG_EVENT: &str = "m.tag";

pub fn routes(r: &mut Router) {
    route!(r, get_tags::v3::Request, get);
    route!(r, create_tag::v3::Request, put);
    route!(r, delete_tag::v3::Request, delete);
}

/// Tags are private to their owner: the token must belong to the user in the path.
fn check_owner(ctx: &Ctx, user: &UserId) -> Result<()> {
    if ctx.user_id()? != user {
        return Err(MatrixError::forbidden(
            "cannot access the room tags of another user",
        ));
    }
    Ok(())
}

fn check_tag_name(tag: &str) -> Result<()> {
    crate::limits::tag(tag)
}

fn check_order(info: &TagInfo) -> Result<()> {
    match info.order {
        Some(o) if !(0.0..=1.0).contains(&o) => Err(MatrixError::invalid_param(format!(
            "tag order must be a number between 0 and 1, not {o}"
        ))),
        _ => Ok(()),
    }
}

/// The stored tag map, entry by entry: whatever a client wrote through the generic account
/// data API is kept as it is, so one odd entry cannot make the others unreadable.
async fn stored_tags(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<Map<String, Value>> {
    let content = account_data::get(hs, user, Some(room), TAG_EVENT).await?;
    Ok(content
        .and_then(|c| c.get("tags").and_then(Value::as_object).cloned())
        .unwrap_or_default())
}

/// Reads, changes and writes the tag map under the write lock, so concurrent tag changes are
/// not lost. Writes nothing when `change` reports no change.
async fn update_tags(
    hs: &Homeserver,
    user: &UserId,
    room: &RoomId,
    change: impl FnOnce(&mut Map<String, Value>) -> bool,
) -> Result<()> {
    let _g = hs.write_lock().await;
    let mut tags = stored_tags(hs, user, room).await?;
    if !change(&mut tags) {
        return Ok(());
    }
    let pos = hs.alloc_pos();
    let mut batch = Batch::new();
    account_data::put(
        hs,
        &mut batch,
        pos,
        user,
        Some(room),
        TAG_EVENT,
        json!({ "tags": tags }),
    )
    .await?;
    hs.commit(batch).await
}

async fn get(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_tags::v3::Request,
) -> Result<get_tags::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    let mut tags = Tags::new();
    for (name, info) in stored_tags(hs, &req.user_id, &req.room_id).await? {
        let mut tag = TagInfo::new();
        tag.order = info.get("order").and_then(Value::as_f64);
        tags.insert(TagName::from(name.as_str()), tag);
    }
    Ok(get_tags::v3::Response::new(tags))
}

async fn put(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_tag::v3::Request,
) -> Result<create_tag::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    check_tag_name(&req.tag)?;
    check_order(&req.tag_info)?;
    let info = serde_json::to_value(&req.tag_info)?;
    update_tags(hs, &req.user_id, &req.room_id, |tags| {
        tags.insert(req.tag.clone(), info.clone()).as_ref() != Some(&info)
    })
    .await?;
    Ok(create_tag::v3::Response::new())
}

async fn delete(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_tag::v3::Request,
) -> Result<delete_tag::v3::Response> {
    check_owner(&ctx, &req.user_id)?;
    check_tag_name(&req.tag)?;
    // Removing a tag the room does not carry succeeds and changes nothing.
    update_tags(hs, &req.user_id, &req.room_id, |tags| {
        tags.remove(&req.tag).is_some()
    })
    .await?;
    Ok(delete_tag::v3::Response::new())
}
