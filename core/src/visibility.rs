//! History visibility: the one rule that decides whether a user may see an event.
//!
//! Every read path that can hand out an event or its content (`/sync`, `/messages`,
//! `/context`, `/event`, relations and threads, bundled aggregations, `/search`,
//! `/notifications`, peeking, `/timestamp_to_event`, reports) asks this module, and so will
//! federation's `backfill` and `/event`. The spec's algorithm, for an event and a user:
//!
//! 1. `world_readable` at the event: allow;
//! 2. the user's membership at the event was `join`: allow;
//! 3. `shared` at the event, and the user joined at any point after it: allow;
//! 4. `invited` at the event, and the user's membership at it was `invite`: allow;
//! 5. otherwise deny.
//!
//! "At the event" is the state just after it (the same as before it for all but the two kinds
//! of events the spec treats specially): an `m.room.history_visibility` event, and the user's
//! own `m.room.member` events, are visible if the state before *or* after them allows. As
//! Synapse does, a user also sees their own leave or ban that ends a join, invite or knock,
//! so that a client sees the room go away.
//!
//! A [`RoomView`] is built once per (user, room) from two short lists: the room's history
//! visibility changes and the user's membership changes (both by stream position). After
//! that each question is answered in memory, and the view also tells a scan where the next
//! possibly visible position is, so that a new member of a long `joined` room does not walk
//! the history they cannot see.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::rc::Rc;

use ruma::events::room::member::MembershipState;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use crate::Homeserver;
use crate::db::rooms::Pdu;
use crate::db::{key, pos_from, prefix};
use crate::error::{MatrixError, Result};
use crate::storage::{Direction, KeyRange, prefix_successor};

/// The values of `m.room.history_visibility`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVisibility {
    WorldReadable,
    Shared,
    Invited,
    Joined,
}

impl HistoryVisibility {
    /// Reads an event's content. An unknown value hides the most: a room whose creator chose
    /// something this server does not understand must not leak history.
    pub fn from_content(content: &Value) -> Self {
        match content.get("history_visibility").and_then(Value::as_str) {
            Some("world_readable") => Self::WorldReadable,
            Some("shared") => Self::Shared,
            Some("invited") => Self::Invited,
            _ => Self::Joined,
        }
    }
}

/// One stretch of positions `[start, next start)` over which the rule's answer is constant.
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: u64,
    /// Whether an event in the stretch is visible (the plain rule, without the special cases).
    visible: bool,
    /// Whether `start` is a change point, where the special cases may allow an event the plain
    /// rule hides.
    change: bool,
}

/// What one user may see of one room's history.
#[derive(Debug, Clone)]
pub struct RoomView {
    user: OwnedUserId,
    /// History visibility changes `(pos, value)`, ascending.
    visibility: Rc<Vec<(u64, HistoryVisibility)>>,
    /// The user's membership changes `(pos, membership)`, ascending.
    members: Rc<Vec<(u64, MembershipState)>>,
    segments: Vec<Segment>,
}

impl RoomView {
    /// Loads the two change lists (each remembered until the room's state or members are
    /// written again) and builds the view.
    pub async fn load(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<Self> {
        let visibility = visibility_changes(hs, room).await?;
        let members = membership_changes(hs, room, user).await?;
        Ok(Self::new(user, visibility, members))
    }

    fn new(
        user: &UserId,
        visibility: Rc<Vec<(u64, HistoryVisibility)>>,
        members: Rc<Vec<(u64, MembershipState)>>,
    ) -> Self {
        let mut points: Vec<u64> = visibility
            .iter()
            .map(|(p, _)| *p)
            .chain(members.iter().map(|(p, _)| *p))
            .collect();
        points.sort_unstable();
        points.dedup();
        let mut view = Self {
            user: user.to_owned(),
            visibility,
            members,
            segments: Vec::with_capacity(points.len() + 1),
        };
        let first = Segment {
            start: 0,
            visible: view.plain(0),
            change: false,
        };
        let mut segments = vec![first];
        for p in points {
            let seg = Segment {
                start: p,
                visible: view.plain(p),
                change: true,
            };
            if p == 0 {
                segments[0] = seg;
            } else {
                segments.push(seg);
            }
        }
        view.segments = segments;
        view
    }

    fn visibility_at(&self, pos: u64) -> HistoryVisibility {
        let i = self.visibility.partition_point(|(p, _)| *p <= pos);
        match i {
            0 => HistoryVisibility::Shared,
            i => self.visibility[i - 1].1,
        }
    }

    fn membership_at(&self, pos: u64) -> Option<&MembershipState> {
        let i = self.members.partition_point(|(p, _)| *p <= pos);
        match i {
            0 => None,
            i => Some(&self.members[i - 1].1),
        }
    }

    fn joined_after(&self, pos: u64) -> bool {
        let i = self.members.partition_point(|(p, _)| *p <= pos);
        self.members[i..]
            .iter()
            .any(|(_, m)| *m == MembershipState::Join)
    }

    /// The spec's rule for an event at `pos`, with the state just after `pos`.
    fn plain(&self, pos: u64) -> bool {
        let membership = self.membership_at(pos);
        match self.visibility_at(pos) {
            HistoryVisibility::WorldReadable => true,
            _ if membership == Some(&MembershipState::Join) => true,
            HistoryVisibility::Shared => self.joined_after(pos),
            HistoryVisibility::Invited => membership == Some(&MembershipState::Invite),
            HistoryVisibility::Joined => false,
        }
    }

    fn segment(&self, pos: u64) -> usize {
        self.segments
            .partition_point(|s| s.start <= pos)
            .saturating_sub(1)
    }

    /// Whether the user may see `pdu`.
    pub fn allows(&self, pdu: &Pdu) -> bool {
        let pos = pdu.pos;
        if self.segments[self.segment(pos)].visible {
            return true;
        }
        let own_member = pdu.event_type == "m.room.member"
            && pdu.state_key.as_deref() == Some(self.user.as_str());
        let visibility_event =
            pdu.event_type == "m.room.history_visibility" && pdu.state_key.as_deref() == Some("");
        if !(own_member || visibility_event) || pos == 0 {
            return false;
        }
        // The state before the event may allow it.
        if self.segments[self.segment(pos - 1)].visible {
            return true;
        }
        own_member
            && matches!(
                pdu.membership(),
                Some(MembershipState::Leave | MembershipState::Ban)
            )
            && matches!(
                self.membership_at(pos - 1),
                Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
            )
    }

    /// The greatest position `<= pos` that may hold a visible event, for backward scans.
    pub fn candidate_at_or_below(&self, pos: u64) -> Option<u64> {
        let seg = self.segments[self.segment(pos)];
        if seg.visible {
            Some(pos)
        } else if seg.change {
            Some(seg.start)
        } else {
            None
        }
    }

    /// The least position `>= pos` that may hold a visible event, for forward scans.
    pub fn candidate_at_or_above(&self, pos: u64) -> Option<u64> {
        let i = self.segment(pos);
        if self.segments[i].visible || (self.segments[i].change && self.segments[i].start == pos) {
            return Some(pos);
        }
        self.segments.get(i + 1).map(|s| s.start)
    }
}

/// Views for several rooms, built on first use, for paths that hand out events of many rooms
/// (`/search`, `/notifications`, relations and threads).
#[derive(Default)]
pub struct Views {
    views: RefCell<HashMap<(OwnedUserId, OwnedRoomId), Rc<RoomView>>>,
}

impl Views {
    pub fn new() -> Self {
        Self::default()
    }

    /// The view of `room` for `user`.
    pub async fn view(
        &self,
        hs: &Homeserver,
        user: &UserId,
        room: &RoomId,
    ) -> Result<Rc<RoomView>> {
        let slot = (user.to_owned(), room.to_owned());
        if let Some(v) = self.views.borrow().get(&slot) {
            return Ok(v.clone());
        }
        let view = Rc::new(RoomView::load(hs, user, room).await?);
        self.views.borrow_mut().insert(slot, view.clone());
        Ok(view)
    }

    /// Whether `user` may see `pdu`.
    pub async fn allows(&self, hs: &Homeserver, user: &UserId, pdu: &Pdu) -> Result<bool> {
        Ok(self.view(hs, user, &pdu.room_id).await?.allows(pdu))
    }
}

/// Whether `user` may see `pdu`, for a path that asks about one event.
pub async fn can_see(hs: &Homeserver, user: &UserId, pdu: &Pdu) -> Result<bool> {
    Ok(RoomView::load(hs, user, &pdu.room_id).await?.allows(pdu))
}

/// The position up to which `user` may read the room's state and timeline: `None` while
/// joined or while the room is world-readable (everything), the leave position for former
/// members, `M_FORBIDDEN` for strangers. Events below it still pass [`RoomView::allows`].
pub async fn visible_upto(hs: &Homeserver, user: &UserId, room: &RoomId) -> Result<Option<u64>> {
    if crate::db::rooms::room_record(hs, room).await?.is_none() {
        return Err(MatrixError::forbidden("you are not a member of this room"));
    }
    let record = crate::db::rooms::membership_record(hs, room, user).await?;
    if record
        .as_ref()
        .is_some_and(|r| r.membership == MembershipState::Join)
    {
        return Ok(None);
    }
    match record {
        _ if world_readable(hs, room).await? => Ok(None),
        Some(r) if matches!(r.membership, MembershipState::Leave | MembershipState::Ban) => {
            Ok(Some(r.pos))
        }
        _ => Err(MatrixError::forbidden("you are not a member of this room")),
    }
}

/// Whether the room's current history visibility lets anyone read it (and peek into it).
pub async fn world_readable(hs: &Homeserver, room: &RoomId) -> Result<bool> {
    Ok(
        crate::db::rooms::state_event(hs, room, "m.room.history_visibility", "")
            .await?
            .is_some_and(|p| {
                HistoryVisibility::from_content(&p.content) == HistoryVisibility::WorldReadable
            }),
    )
}

/// The room's history visibility changes, remembered until its state is written again.
async fn visibility_changes(
    hs: &Homeserver,
    room: &RoomId,
) -> Result<Rc<Vec<(u64, HistoryVisibility)>>> {
    let slot = key(&[b"history_visibility", room.as_bytes()]);
    hs.memo("state_history", room.as_bytes(), &slot, || async {
        let mut out = Vec::new();
        for (pos, t, sk, id) in crate::db::rooms::state_changes(hs, room, 0, u64::MAX).await? {
            if t == "m.room.history_visibility"
                && sk.is_empty()
                && let Some(p) = crate::db::rooms::get_pdu(hs, id.as_str()).await?
            {
                out.push((pos, HistoryVisibility::from_content(&p.content)));
            }
        }
        Ok(out)
    })
    .await
}

/// The user's membership changes in the room, remembered until the room's members change.
async fn membership_changes(
    hs: &Homeserver,
    room: &RoomId,
    user: &UserId,
) -> Result<Rc<Vec<(u64, MembershipState)>>> {
    let slot = key(&[b"member_history", room.as_bytes(), user.as_bytes()]);
    hs.memo("room_members", room.as_bytes(), &slot, || async {
        let start = prefix(&[room.as_bytes(), user.as_bytes()]);
        let end = match prefix_successor(&start) {
            Some(e) => Bound::Excluded(e),
            None => Bound::Unbounded,
        };
        let rows = hs
            .store
            .scan(
                "member_history",
                KeyRange::new(Bound::Included(start), end),
                Direction::Forward,
                usize::MAX,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let Some(pos) = pos_from(&k) else { continue };
            out.push((
                pos,
                MembershipState::from(String::from_utf8_lossy(&v).as_ref()),
            ));
        }
        Ok(out)
    })
    .await
}
