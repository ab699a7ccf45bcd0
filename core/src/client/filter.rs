//! Filtering: `POST /user/{userId}/filter` and `GET /user/{userId}/filter/{filterId}`.
//!
//! Layout: `filters`: user, filter_id → the [`FilterDefinition`] as JSON. Filters never change
//! once created, so they need no stream position.

use ruma::UserId;
use ruma::api::client::filter::{FilterDefinition, create_filter, get_filter};

use crate::db::{key, to_json};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

/// Length of generated filter ids: short enough to sit in URLs, long enough not to collide.
const FILTER_ID_LEN: usize = 12;

pub fn routes(r: &mut Router) {
    route!(r, create_filter::v3::Request, create);
    route!(r, get_filter::v3::Request, get);
}

fn filter_key(user: &UserId, filter_id: &str) -> Vec<u8> {
    key(&[user.as_bytes(), filter_id.as_bytes()])
}

/// A stored filter of `user`, or `None` when the id is unknown.
pub async fn load_filter(
    hs: &Homeserver,
    user: &UserId,
    filter_id: &str,
) -> Result<Option<FilterDefinition>> {
    if filter_id.is_empty() || filter_id.contains('\0') {
        return Ok(None);
    }
    hs.get_json("filters", &filter_key(user, filter_id)).await
}

async fn create(
    hs: &Homeserver,
    ctx: Ctx,
    req: create_filter::v3::Request,
) -> Result<create_filter::v3::Response> {
    if ctx.user_id()? != &req.user_id {
        return Err(MatrixError::forbidden(
            "cannot create filters for other users",
        ));
    }
    let value = to_json(&req.filter)?;
    // Ids are alphanumeric, so they never start with `{` (the mark of an inline filter).
    let mut filter_id = hs.random_string(FILTER_ID_LEN);
    while hs
        .store
        .get("filters", &filter_key(&req.user_id, &filter_id))
        .await?
        .is_some()
    {
        filter_id = hs.random_string(FILTER_ID_LEN);
    }
    let mut batch = Batch::new();
    batch.put("filters", filter_key(&req.user_id, &filter_id), value);
    hs.store.write(batch).await?;
    Ok(create_filter::v3::Response::new(filter_id))
}

async fn get(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_filter::v3::Request,
) -> Result<get_filter::v3::Response> {
    if ctx.user_id()? != &req.user_id {
        return Err(MatrixError::forbidden("cannot read filters of other users"));
    }
    let filter = load_filter(hs, &req.user_id, &req.filter_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("unknown filter"))?;
    Ok(get_filter::v3::Response::new(filter))
}
