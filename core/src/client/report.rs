//! Reporting content: `POST /rooms/{roomId}/report/{eventId}`, `POST /rooms/{roomId}/report`
//! and `POST /users/{userId}/report`.
//!
//! Reports are stored in the `reports` tree, keyed by arrival time, for whoever administers
//! the server ([`all`]). Who may report what follows the spec:
//! - an event: only a member joined to its room, and only an event that member may see; any
//!   other case is the same `404`, so a report cannot probe for events;
//! - a room: anyone, as long as this server knows the room (`404` otherwise);
//! - a user: anyone. A local user must exist (`404` otherwise); a user of another server is
//!   accepted unchecked, since only their server could say whether they exist.
//!
//! The spec no longer has the event report's `score`; a `score` sent by an older client is
//! ignored.

use std::rc::Rc;

use http::{Method, StatusCode};
use ruma::api::client::reporting::report_user;
use ruma::api::client::room::report_content;
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db::{from_json, pos_bytes, pos_from, rooms, to_json, users};
use crate::error::{MatrixError, Result};
use crate::router::{Auth, Router, json_response};
use crate::storage::{Batch, Direction, KeyRange};
use crate::{Ctx, Homeserver, route};

const TREE: &str = "reports";

/// What was reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportTarget {
    Event {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
        sender: OwnedUserId,
    },
    Room {
        room_id: OwnedRoomId,
    },
    User {
        user_id: OwnedUserId,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub reporter: OwnedUserId,
    #[serde(flatten)]
    pub target: ReportTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub received_ts: u64,
}

pub fn routes(r: &mut Router) {
    route!(r, report_content::v3::Request, report_event);
    route!(r, report_user::v3::Request, report_user);
    // ruma defaults a missing `reason` to an empty string; the spec requires the field.
    r.add_raw(
        Method::POST,
        "/_matrix/client/v3/rooms/{roomId}/report",
        Rc::new(
            |hs: Homeserver, req: http::Request<Vec<u8>>, args: Vec<String>| {
                Box::pin(async move {
                    let answer = async {
                        let ctx = hs.authenticate(&req, Auth::Required).await?;
                        let room = args.first().map(String::as_str).unwrap_or_default();
                        report_room(&hs, &ctx, room, req.body()).await
                    };
                    match answer.await {
                        Ok(()) => json_response(StatusCode::OK, &json!({})),
                        Err(e) => e.into_response(),
                    }
                })
            },
        ),
    );
}

/// Every stored report, oldest first.
pub async fn all(hs: &Homeserver) -> Result<Vec<Report>> {
    hs.scan_prefix(TREE, &[])
        .await?
        .iter()
        .map(|(_, v)| from_json(v))
        .collect()
}

async fn store(hs: &Homeserver, report: &Report) -> Result<()> {
    // Keys are `time · sequence`, both big-endian, so reports list in arrival order even
    // within one millisecond or when the clock steps back.
    let _g = hs.write_lock().await;
    let last = hs
        .store
        .scan(TREE, KeyRange::all(), Direction::Backward, 1)
        .await?;
    let (mut ts, mut seq) = (report.received_ts, 0u64);
    if let Some((k, _)) = last.first() {
        let last_ts = k.get(..8).and_then(pos_from).unwrap_or(0);
        let last_seq = pos_from(k).unwrap_or(0);
        if last_ts >= ts {
            (ts, seq) = (last_ts, last_seq.saturating_add(1));
        }
    }
    let mut k = pos_bytes(ts).to_vec();
    k.extend_from_slice(&pos_bytes(seq));
    let mut batch = Batch::new();
    batch.put(TREE, k, to_json(report)?);
    hs.store.write(batch).await?;
    tracing::info!(reporter = %report.reporter, target = ?report.target, "content reported");
    Ok(())
}

async fn report_event(
    hs: &Homeserver,
    ctx: Ctx,
    req: report_content::v3::Request,
) -> Result<report_content::v3::Response> {
    let user = ctx.user_id()?;
    let not_found =
        || MatrixError::not_found("the event was not found or you are not joined to the room");
    if rooms::membership(hs, &req.room_id, user).await? != Some(MembershipState::Join) {
        return Err(not_found());
    }
    let pdu = rooms::get_pdu(hs, req.event_id.as_str())
        .await?
        .filter(|p| p.room_id == req.room_id)
        .ok_or_else(not_found)?;
    if !crate::visibility::can_see(hs, user, &pdu).await? {
        return Err(not_found());
    }
    let report = Report {
        reporter: user.clone(),
        target: ReportTarget::Event {
            room_id: req.room_id,
            event_id: req.event_id,
            sender: pdu.sender.clone(),
        },
        reason: req.reason,
        received_ts: hs.now_ms(),
    };
    store(hs, &report).await?;
    Ok(report_content::v3::Response::new())
}

#[derive(Deserialize)]
struct RoomReportBody {
    reason: String,
}

async fn report_room(hs: &Homeserver, ctx: &Ctx, room: &str, body: &[u8]) -> Result<()> {
    let user = ctx.user_id()?;
    let room = RoomId::parse(room)
        .map_err(|e| MatrixError::invalid_param(format!("invalid room id: {e}")))?;
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| MatrixError::not_json(format!("request body is not JSON: {e}")))?;
    let body: RoomReportBody = serde_json::from_value(value).map_err(|e| {
        MatrixError::bad_json(format!("a room report needs a `reason` string: {e}"))
    })?;
    if rooms::room_record(hs, &room).await?.is_none() {
        return Err(MatrixError::not_found("the room was not found"));
    }
    let report = Report {
        reporter: user.clone(),
        target: ReportTarget::Room { room_id: room },
        reason: Some(body.reason),
        received_ts: hs.now_ms(),
    };
    store(hs, &report).await
}

async fn report_user(
    hs: &Homeserver,
    ctx: Ctx,
    req: report_user::v3::Request,
) -> Result<report_user::v3::Response> {
    let user = ctx.user_id()?;
    if is_local(hs, &req.user_id) && users::get_user(hs, &req.user_id).await?.is_none() {
        return Err(MatrixError::not_found("the user was not found"));
    }
    let report = Report {
        reporter: user.clone(),
        target: ReportTarget::User {
            user_id: req.user_id,
        },
        reason: Some(req.reason),
        received_ts: hs.now_ms(),
    };
    store(hs, &report).await?;
    Ok(report_user::v3::Response::new())
}

fn is_local(hs: &Homeserver, user: &UserId) -> bool {
    user.server_name() == hs.server_name()
}
