//! `GET` and `POST /_matrix/federation/v1/publicRooms`: this server's published room
//! directory, for other servers' users. The same list, order and pagination tokens as the
//! Client-Server directory; third-party networks (application services) do not exist here, so
//! asking for one finds nothing.

use ruma::UInt;
use ruma::api::federation::directory::{get_public_rooms, get_public_rooms_filtered};
use ruma::directory::{PublicRoomsChunk, RoomNetwork, RoomTypeFilter};
use serde_json::{Map, Value, json};

use crate::client::directory::list_public;
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route_json};

pub fn routes(r: &mut Router) {
    route_json!(r, get_public_rooms::v1::Request, public_rooms);
    route_json!(
        r,
        get_public_rooms_filtered::v1::Request,
        public_rooms_filtered
    );
}

/// The spec's response, without the `null`s ruma's filtered response type would write for
/// absent tokens.
async fn answer(
    hs: &Homeserver,
    limit: Option<UInt>,
    since: Option<&str>,
    network: &RoomNetwork,
    term: Option<&str>,
    room_types: Option<&[RoomTypeFilter]>,
) -> Result<Value> {
    let (chunk, next, prev, total): (Vec<PublicRoomsChunk>, _, _, _) =
        if matches!(network, RoomNetwork::ThirdParty(_)) {
            (Vec::new(), None, None, 0)
        } else {
            list_public(hs, limit, since, term, room_types).await?
        };
    let mut out = Map::new();
    out.insert("chunk".to_owned(), serde_json::to_value(chunk)?);
    if let Some(next) = next {
        out.insert("next_batch".to_owned(), json!(next));
    }
    if let Some(prev) = prev {
        out.insert("prev_batch".to_owned(), json!(prev));
    }
    out.insert("total_room_count_estimate".to_owned(), json!(total));
    Ok(Value::Object(out))
}

async fn public_rooms(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_public_rooms::v1::Request,
) -> Result<Value> {
    answer(
        hs,
        req.limit,
        req.since.as_deref(),
        &req.room_network,
        None,
        None,
    )
    .await
}

async fn public_rooms_filtered(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_public_rooms_filtered::v1::Request,
) -> Result<Value> {
    answer(
        hs,
        req.limit,
        req.since.as_deref(),
        &req.room_network,
        req.filter.generic_search_term.as_deref(),
        Some(&req.filter.room_types),
    )
    .await
}
