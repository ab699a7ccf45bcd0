//! The visibility invariant: a user never receives an event that the history visibility rule
//! hides from them.
//!
//! Every event a response hands a user is fetched as stored and put to the core's own rule
//! ([`may_see`], the one place that names it). Timeline events must pass it. State events in a
//! room's `state` section are the room's state at some point, which a member is given whatever
//! the history visibility (a late joiner still gets the room's creation and its members), so
//! for those the user must either pass the rule, or be (or, for a room they left, have been
//! until the leave) a member, or be shown in the same response an event of that room they may
//! see (the state that comes with a visible event is the state at a point they can see: a
//! `world_readable` room's `/context` for a non-member).

use hearth_core::Homeserver;
use hearth_core::db::rooms::{self, Pdu};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

/// The core's history visibility rule. When the rule moves, this is the line to change.
pub async fn may_see(
    hs: &Homeserver,
    user: &UserId,
    pdu: &Pdu,
) -> hearth_core::error::Result<bool> {
    hearth_core::visibility::can_see(hs, user, pdu).await
}

/// Where in a response an event was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Timeline-like: the event itself is shown.
    Timeline,
    /// A room's state, as a member gets it.
    State,
}

/// One event a response handed out, and where.
#[derive(Debug, Clone)]
pub struct Served {
    pub event_id: String,
    pub section: Section,
    /// JSON pointer of the event in the response, for the report.
    pub at: String,
}

/// The events a response to `path` (a percent-encoded request path) hands out, for the
/// endpoints the invariant covers: `/sync`, `/messages`, `/context`, `/event`, `/relations`,
/// `/threads`, and also `/search`, `/notifications`, `/events` (peeking) and a room's
/// `/initialSync`.
pub fn served_events(path: &str, body: &Value) -> Vec<Served> {
    let mut out = Vec::new();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let is_client = segs.first() == Some(&"_matrix") && segs.get(1) == Some(&"client");
    if !is_client {
        return out;
    }
    let rest = &segs[3.min(segs.len())..];
    // Skip an unstable namespace segment.
    let rest = match rest.first() {
        Some(first) if first.contains('.') => &rest[1..],
        _ => rest,
    };
    match rest {
        ["sync"] => {
            for (kind, rooms) in ["join", "leave"].iter().filter_map(|k| {
                body.pointer(&format!("/rooms/{k}"))
                    .and_then(Value::as_object)
                    .map(|r| (*k, r))
            }) {
                for (room, r) in rooms {
                    let base = format!("/rooms/{kind}/{}", pointer_escape(room));
                    list(
                        &mut out,
                        r.pointer("/timeline/events"),
                        Section::Timeline,
                        &format!("{base}/timeline/events"),
                    );
                    list(
                        &mut out,
                        r.pointer("/state/events"),
                        Section::State,
                        &format!("{base}/state/events"),
                    );
                    list(
                        &mut out,
                        r.pointer("/state_after/events"),
                        Section::State,
                        &format!("{base}/state_after/events"),
                    );
                }
            }
        }
        ["rooms", _, "messages"] => {
            list(&mut out, body.get("chunk"), Section::Timeline, "/chunk");
            list(&mut out, body.get("state"), Section::State, "/state");
        }
        ["rooms", _, "context", _] => {
            one(&mut out, body.get("event"), Section::Timeline, "/event");
            list(
                &mut out,
                body.get("events_before"),
                Section::Timeline,
                "/events_before",
            );
            list(
                &mut out,
                body.get("events_after"),
                Section::Timeline,
                "/events_after",
            );
            list(&mut out, body.get("state"), Section::State, "/state");
        }
        ["rooms", _, "event", _] => one(&mut out, Some(body), Section::Timeline, ""),
        ["rooms", _, "relations", ..] | ["rooms", _, "threads"] | ["events"] => {
            list(&mut out, body.get("chunk"), Section::Timeline, "/chunk");
        }
        ["rooms", _, "initialSync"] => {
            list(
                &mut out,
                body.pointer("/messages/chunk"),
                Section::Timeline,
                "/messages/chunk",
            );
            list(&mut out, body.get("state"), Section::State, "/state");
        }
        ["search"] => {
            let results = body
                .pointer("/search_categories/room_events/results")
                .and_then(Value::as_array);
            for (i, r) in results.into_iter().flatten().enumerate() {
                let at = format!("/search_categories/room_events/results/{i}");
                one(
                    &mut out,
                    r.get("result"),
                    Section::Timeline,
                    &format!("{at}/result"),
                );
                for part in ["events_before", "events_after"] {
                    list(
                        &mut out,
                        r.pointer(&format!("/context/{part}")),
                        Section::Timeline,
                        &format!("{at}/context/{part}"),
                    );
                }
            }
        }
        ["notifications"] => {
            let notes = body.get("notifications").and_then(Value::as_array);
            for (i, n) in notes.into_iter().flatten().enumerate() {
                one(
                    &mut out,
                    n.get("event"),
                    Section::Timeline,
                    &format!("/notifications/{i}/event"),
                );
            }
        }
        _ => {}
    }
    out
}

fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn one(out: &mut Vec<Served>, ev: Option<&Value>, section: Section, at: &str) {
    if let Some(id) = ev.and_then(|e| e.get("event_id")).and_then(Value::as_str) {
        out.push(Served {
            event_id: id.to_owned(),
            section,
            at: at.to_owned(),
        });
    }
}

fn list(out: &mut Vec<Served>, evs: Option<&Value>, section: Section, at: &str) {
    for (i, ev) in evs
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        one(out, Some(ev), section, &format!("{at}/{i}"));
    }
}

/// Why `user` may not have been given some event of a response to `path`, or `None` if every
/// event passes. Events not in storage are not this invariant's business.
pub async fn check_response(
    hs: &Homeserver,
    user: &UserId,
    path: &str,
    body: &Value,
) -> Option<String> {
    let served = served_events(path, body);
    // Rooms in which the response shows the user an event they may see: the state that comes
    // with such an event is the room's state at a point they can see.
    let mut anchored: Vec<OwnedRoomId> = Vec::new();
    let mut state = Vec::new();
    for s in served {
        let pdu = match rooms::get_pdu(hs, &s.event_id).await {
            Ok(Some(p)) => p,
            _ => continue,
        };
        let seen = match may_see(hs, user, &pdu).await {
            Ok(seen) => seen,
            Err(e) => return Some(format!("the visibility rule failed: {e}")),
        };
        match (s.section, seen) {
            (Section::Timeline, true) => anchored.push(pdu.room_id.clone()),
            (Section::Timeline, false) => return Some(describe(hs, user, &s, &pdu).await),
            (Section::State, true) => {}
            (Section::State, false) => state.push((s, pdu)),
        }
    }
    for (s, pdu) in state {
        if anchored.contains(&pdu.room_id) || was_member_for_state(hs, user, &pdu).await {
            continue;
        }
        return Some(describe(hs, user, &s, &pdu).await);
    }
    None
}

async fn describe(hs: &Homeserver, user: &UserId, served: &Served, pdu: &Pdu) -> String {
    let visibility = history_visibility(hs, &pdu.room_id).await;
    let membership = rooms::membership_at(hs, &pdu.room_id, user, pdu.pos)
        .await
        .ok()
        .flatten();
    format!(
        "{} ({}, sender {}, pos {}) at {}: hidden from {user} by the visibility rule (history_visibility now {visibility}; {user}'s membership at the event: {})",
        served.event_id,
        pdu.event_type,
        pdu.sender,
        pdu.pos,
        if served.at.is_empty() {
            "/"
        } else {
            &served.at
        },
        membership.map_or("none".to_owned(), |m| m.to_string()),
    )
}

/// Whether the user is a member, or left after being one: state up to then is theirs to see.
async fn was_member_for_state(hs: &Homeserver, user: &UserId, pdu: &Pdu) -> bool {
    let Ok(Some(rec)) = rooms::membership_record(hs, &pdu.room_id, user).await else {
        return false;
    };
    match rec.membership {
        MembershipState::Join => true,
        MembershipState::Leave | MembershipState::Ban => {
            rec.pos > pdu.pos
                && matches!(
                    rooms::membership_at(hs, &pdu.room_id, user, rec.pos.saturating_sub(1)).await,
                    Ok(Some(MembershipState::Join))
                )
        }
        _ => false,
    }
}

async fn history_visibility(hs: &Homeserver, room: &RoomId) -> String {
    match rooms::state_event(hs, room, "m.room.history_visibility", "").await {
        Ok(Some(p)) => p
            .content
            .get("history_visibility")
            .and_then(Value::as_str)
            .unwrap_or("shared")
            .to_owned(),
        _ => "shared".to_owned(),
    }
}
