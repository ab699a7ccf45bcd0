//! Relationships between events: `GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`,
//! `GET /rooms/{roomId}/threads`, the bundled aggregations (`unsigned["m.relations"]`) that
//! served events carry, and the checks the spec asks of a server when a client sends a relation.
//!
//! Every child event is checked before it counts: it must still relate to its parent (a
//! redaction breaks the relationship), come from a user the viewer does not ignore, and be
//! visible to the viewer under the room's history visibility.

use std::collections::HashSet;
use std::rc::Rc;

use futures::future::LocalBoxFuture;
use http::StatusCode;
use ruma::api::Direction as ApiDirection;
use ruma::api::client::relations::{
    get_relating_events, get_relating_events_with_rel_type,
    get_relating_events_with_rel_type_and_event_type,
};
use ruma::api::client::threads::get_threads;
use ruma::api::client::threads::get_threads::v1::IncludeThreads;
use ruma::canonical_json::{CanonicalJsonValue, redact_in_place};
use ruma::events::relation::{
    BundledMessageLikeRelations, BundledReference, BundledThread, ReferenceChunk,
};
use ruma::events::{AnyMessageLikeEvent, AnySyncMessageLikeEvent};
use ruma::serde::Raw;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde_json::{Value, json};

use super::{raw, tokens};
use crate::db::relations::{self, ANNOTATION, REFERENCE, REPLACE, THREAD};
use crate::db::rooms::{self, Pdu};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::visibility::Views;
use crate::{Ctx, Homeserver, Session, route};

/// Child events per `/relations` page when the client does not say, and the most it may ask.
const DEFAULT_RELATIONS_LIMIT: usize = 20;
const MAX_RELATIONS_LIMIT: usize = 100;
/// How many levels of relations `recurse=true` follows (the spec asks for at least 3).
const MAX_RECURSION: usize = 3;
/// Thread roots per `/threads` page when the client does not say, and the most it may ask.
const DEFAULT_THREADS_LIMIT: usize = 20;
const MAX_THREADS_LIMIT: usize = 100;
/// Thread-activity entries read per storage scan by `/threads`.
const THREAD_SCAN_PAGE: usize = 64;

pub fn routes(r: &mut Router) {
    route!(r, get_relating_events::v1::Request, relating_events);
    route!(
        r,
        get_relating_events_with_rel_type::v1::Request,
        relating_events_with_rel_type
    );
    route!(
        r,
        get_relating_events_with_rel_type_and_event_type::v1::Request,
        relating_events_with_rel_type_and_event_type
    );
    route!(r, get_threads::v1::Request, threads);
}

// ---------------------------------------------------------------------------------------------
// The viewer

/// Who an aggregation or a page of relations is built for.
struct Viewer<'a> {
    user: &'a UserId,
    ignored: HashSet<OwnedUserId>,
    now: u64,
    /// History visibility, per room, for every child and root handed out.
    views: Views,
}

impl<'a> Viewer<'a> {
    async fn new(hs: &Homeserver, user: &'a UserId) -> Result<Self> {
        let list = super::account_data::get(hs, user, None, "m.ignored_user_list").await?;
        let ignored = list
            .as_ref()
            .and_then(|l| l.get("ignored_users"))
            .and_then(Value::as_object)
            .map(|m| {
                m.keys()
                    .filter_map(|k| OwnedUserId::try_from(k.as_str()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            user,
            ignored,
            now: hs.now_ms(),
            views: Views::new(),
        })
    }

    async fn sees(&self, hs: &Homeserver, pdu: &Pdu) -> Result<bool> {
        self.views.allows(hs, self.user, pdu).await
    }

    fn ignores(&self, user: &UserId) -> bool {
        self.ignored.contains(user)
    }
}

/// The event as the response around it carries events: with `room_id` (client format) or
/// without (the `/sync` format).
fn render(pdu: &Pdu, now: u64, client_format: bool) -> Value {
    if client_format {
        pdu.to_client(now, None)
    } else {
        pdu.to_sync(now, None)
    }
}

fn insert_relations(event: &mut Value, relations: Value) {
    let Some(obj) = event.as_object_mut() else {
        return;
    };
    let unsigned = obj.entry("unsigned").or_insert_with(|| json!({}));
    if let Some(u) = unsigned.as_object_mut() {
        u.insert("m.relations".to_owned(), relations);
    }
}

// ---------------------------------------------------------------------------------------------
// Bundled aggregations

/// Adds the bundled aggregations of child events (`m.replace`, `m.thread`, `m.reference`) to
/// each served event in `events`, as `unsigned["m.relations"]`, counting only children that
/// `viewer` may see. Events with `room_id` are taken to be in the client format and their
/// bundled events are formatted the same way; state events get no aggregations (the spec
/// gives them none).
pub async fn bundle(hs: &Homeserver, viewer: &UserId, events: &mut [Value]) -> Result<()> {
    let viewer = Viewer::new(hs, viewer).await?;
    bundle_for(hs, &viewer, events).await
}

async fn bundle_for(hs: &Homeserver, viewer: &Viewer<'_>, events: &mut [Value]) -> Result<()> {
    for event in events.iter_mut() {
        let Some(obj) = event.as_object() else {
            continue;
        };
        if obj.contains_key("state_key") {
            continue;
        }
        let Some(id) = obj
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            continue;
        };
        let client_format = obj.contains_key("room_id");
        let Some(pdu) = rooms::get_pdu(hs, &id).await? else {
            continue;
        };
        if let Some(rel) = aggregate(hs, viewer, &pdu, client_format, true).await? {
            insert_relations(event, rel);
        }
    }
    Ok(())
}

/// Whether `edit` is a valid replacement of `original`, by the spec's rules (same sender and
/// type, no state events, no edit of an edit, `m.new_content` present unless encrypted, where
/// the server cannot look).
fn is_valid_replacement(original: &Pdu, edit: &Pdu) -> bool {
    original.sender == edit.sender
        && original.event_type == edit.event_type
        && !original.is_state()
        && !edit.is_state()
        && relations::rel_type_of(original) != Some(REPLACE)
        && (edit.event_type == "m.room.encrypted"
            || edit
                .content
                .get("m.new_content")
                .is_some_and(Value::is_object))
}

/// The `m.relations` object of `parent` for the viewer, or `None` when nothing aggregates.
/// `with_thread` is off for a thread's `latest_event`, which cannot itself be a thread root,
/// so the recursion is one level deep at most.
fn aggregate<'a>(
    hs: &'a Homeserver,
    viewer: &'a Viewer<'a>,
    parent: &'a Pdu,
    client_format: bool,
    with_thread: bool,
) -> LocalBoxFuture<'a, Result<Option<Value>>> {
    Box::pin(async move {
        if parent.is_state() {
            return Ok(None);
        }
        let children = relations::children(hs, &parent.event_id, None).await?;
        if children.is_empty() {
            return Ok(None);
        }
        // A redacted original keeps no trace of its edits.
        let edits_count = parent.meta.redacted_because.is_none();
        let mut edit: Option<Rc<Pdu>> = None;
        let mut thread_latest: Option<Rc<Pdu>> = None;
        let mut thread_count: u64 = 0;
        let mut participated = parent.sender == viewer.user;
        let mut references = Vec::new();
        for child in children {
            let wanted = match child.rel_type.as_str() {
                REPLACE => edits_count,
                THREAD => with_thread,
                REFERENCE => true,
                _ => false,
            };
            if !wanted {
                continue;
            }
            let Some(c) = rooms::get_pdu(hs, child.event_id.as_str()).await? else {
                continue;
            };
            if !relations::still_relates(&c, parent, &child.rel_type) || viewer.ignores(&c.sender) {
                continue;
            }
            if child.rel_type == REPLACE && !is_valid_replacement(parent, &c) {
                continue;
            }
            if !viewer.sees(hs, &c).await? {
                continue;
            }
            match child.rel_type.as_str() {
                REPLACE => {
                    // The most recent edit by timestamp, ties broken by the larger event id.
                    let newer = edit.as_ref().is_none_or(|e| {
                        (e.origin_server_ts, e.event_id.as_str())
                            < (c.origin_server_ts, c.event_id.as_str())
                    });
                    if newer {
                        edit = Some(c);
                    }
                }
                THREAD => {
                    thread_count += 1;
                    participated |= c.sender == viewer.user;
                    // Children come oldest first, so the last one seen is the latest.
                    thread_latest = Some(c);
                }
                _ => references.push(BundledReference::new(c.event_id.clone())),
            }
        }
        let mut bundle = BundledMessageLikeRelations::<Raw<AnySyncMessageLikeEvent>>::new();
        if let Some(e) = edit {
            bundle.replace = Some(Box::new(raw(&render(&e, viewer.now, client_format))?));
        }
        if let Some(latest) = thread_latest {
            let mut v = render(&latest, viewer.now, client_format);
            if let Some(inner) = aggregate(hs, viewer, &latest, client_format, false).await? {
                insert_relations(&mut v, inner);
            }
            let count = UInt::new_saturating(thread_count);
            bundle.thread = Some(Box::new(BundledThread::new(raw(&v)?, count, participated)));
        }
        if !references.is_empty() {
            bundle.reference = Some(Box::new(ReferenceChunk::new(references)));
        }
        if bundle.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::to_value(&bundle)?))
    })
}

// ---------------------------------------------------------------------------------------------
// `/relations`

struct RelationsQuery {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<UInt>,
    dir: ApiDirection,
    recurse: bool,
}

struct RelationsPage {
    chunk: Vec<Raw<AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

async fn relating_events(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_relating_events::v1::Request,
) -> Result<get_relating_events::v1::Response> {
    let q = RelationsQuery {
        room_id: req.room_id,
        event_id: req.event_id,
        rel_type: None,
        event_type: None,
        from: req.from,
        to: req.to,
        limit: req.limit,
        dir: req.dir,
        recurse: req.recurse,
    };
    let page = relations_page(hs, ctx.session()?, q).await?;
    let mut resp = get_relating_events::v1::Response::new(page.chunk);
    resp.next_batch = page.next_batch;
    resp.prev_batch = page.prev_batch;
    resp.recursion_depth = page.recursion_depth;
    Ok(resp)
}

async fn relating_events_with_rel_type(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_relating_events_with_rel_type::v1::Request,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let q = RelationsQuery {
        room_id: req.room_id,
        event_id: req.event_id,
        rel_type: Some(req.rel_type.to_string()),
        event_type: None,
        from: req.from,
        to: req.to,
        limit: req.limit,
        dir: req.dir,
        recurse: req.recurse,
    };
    let page = relations_page(hs, ctx.session()?, q).await?;
    let mut resp = get_relating_events_with_rel_type::v1::Response::new(page.chunk);
    resp.next_batch = page.next_batch;
    resp.prev_batch = page.prev_batch;
    resp.recursion_depth = page.recursion_depth;
    Ok(resp)
}

async fn relating_events_with_rel_type_and_event_type(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_relating_events_with_rel_type_and_event_type::v1::Request,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let q = RelationsQuery {
        room_id: req.room_id,
        event_id: req.event_id,
        rel_type: Some(req.rel_type.to_string()),
        event_type: Some(req.event_type.to_string()),
        from: req.from,
        to: req.to,
        limit: req.limit,
        dir: req.dir,
        recurse: req.recurse,
    };
    let page = relations_page(hs, ctx.session()?, q).await?;
    let mut resp = get_relating_events_with_rel_type_and_event_type::v1::Response::new(page.chunk);
    resp.next_batch = page.next_batch;
    resp.prev_batch = page.prev_batch;
    resp.recursion_depth = page.recursion_depth;
    Ok(resp)
}

/// The children of `parent` (and, `depth` > 1, their children in turn) that match the filters
/// and still relate, in no particular order. Filters apply at every level: a child reached only
/// through a non-matching event is not included, as the spec says.
async fn descendants(
    hs: &Homeserver,
    viewer: &Viewer<'_>,
    parent: &Rc<Pdu>,
    rel_type: Option<&str>,
    event_type: Option<&str>,
    depth: usize,
) -> Result<Vec<Rc<Pdu>>> {
    let mut out = Vec::new();
    let mut seen: HashSet<OwnedEventId> = HashSet::from([parent.event_id.clone()]);
    let mut frontier = vec![parent.clone()];
    for _ in 0..depth {
        let mut next = Vec::new();
        for p in &frontier {
            for child in relations::children(hs, &p.event_id, rel_type).await? {
                if !seen.insert(child.event_id.clone()) {
                    continue;
                }
                let Some(c) = rooms::get_pdu(hs, child.event_id.as_str()).await? else {
                    continue;
                };
                if !relations::still_relates(&c, p, &child.rel_type) || viewer.ignores(&c.sender) {
                    continue;
                }
                if event_type.is_some_and(|t| t != c.event_type) {
                    continue;
                }
                next.push(c.clone());
                out.push(c);
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(out)
}

async fn relations_page(
    hs: &Homeserver,
    session: &Session,
    q: RelationsQuery,
) -> Result<RelationsPage> {
    let user = &*session.user_id;
    let not_found = || MatrixError::not_found("event not found");
    let parent = rooms::get_pdu(hs, q.event_id.as_str())
        .await?
        .filter(|p| p.room_id == q.room_id)
        .ok_or_else(not_found)?;
    let viewer = Viewer::new(hs, user).await?;
    if !viewer.sees(hs, &parent).await? {
        return Err(not_found());
    }
    let from = q.from.as_deref().map(tokens::parse).transpose()?;
    let to = q.to.as_deref().map(tokens::parse).transpose()?;
    let limit = q
        .limit
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_RELATIONS_LIMIT)
        .clamp(1, MAX_RELATIONS_LIMIT);
    let backward = q.dir != ApiDirection::Forward;
    let depth = if q.recurse { MAX_RECURSION } else { 1 };
    let mut found = descendants(
        hs,
        &viewer,
        &parent,
        q.rel_type.as_deref(),
        q.event_type.as_deref(),
        depth,
    )
    .await?;

    // A token is a boundary between positions: going backwards from `t` reads positions at or
    // below `t`; going forwards reads positions above it.
    found.retain(|p| {
        if backward {
            from.is_none_or(|f| p.pos <= f) && to.is_none_or(|t| p.pos > t)
        } else {
            from.is_none_or(|f| p.pos > f) && to.is_none_or(|t| p.pos <= t)
        }
    });
    if backward {
        found.sort_by_key(|p| std::cmp::Reverse(p.pos));
    } else {
        found.sort_by_key(|p| p.pos);
    }
    // Visibility is the costly check, so it runs in page order and stops one past the page.
    let mut page = Vec::new();
    let mut next_batch = None;
    for p in found {
        if !viewer.sees(hs, &p).await? {
            continue;
        }
        if page.len() == limit {
            let last: &Rc<Pdu> = page.last().unwrap_or(&p);
            next_batch = Some(tokens::format(if backward {
                last.pos.saturating_sub(1)
            } else {
                last.pos
            }));
            break;
        }
        page.push(p);
    }
    let viewer_device = Some((user, session.device_id.as_str()));
    let mut events: Vec<Value> = page
        .iter()
        .map(|p| p.to_client(viewer.now, viewer_device))
        .collect();
    bundle_for(hs, &viewer, &mut events).await?;
    Ok(RelationsPage {
        chunk: events.iter().map(raw).collect::<Result<_>>()?,
        next_batch,
        prev_batch: from.map(tokens::format),
        recursion_depth: q
            .recurse
            .then(|| UInt::new_saturating(MAX_RECURSION as u64)),
    })
}

// ---------------------------------------------------------------------------------------------
// `/threads`

/// The root as an ignoring viewer gets it: redacted, by the room version's algorithm.
async fn redacted_copy(hs: &Homeserver, pdu: &Pdu) -> Result<Pdu> {
    let record = rooms::room_record(hs, &pdu.room_id)
        .await?
        .ok_or_else(|| MatrixError::unknown("event of an unknown room"))?;
    let rules = record.version.rules().ok_or_else(|| {
        MatrixError::unknown(format!("room version {} is not supported", record.version))
    })?;
    let CanonicalJsonValue::Object(mut object) =
        ruma::canonical_json::to_canonical_value(&pdu.json)
            .map_err(|e| MatrixError::unknown(format!("stored event: {e}")))?
    else {
        return Err(MatrixError::unknown("stored event is not an object"));
    };
    redact_in_place(&mut object, &rules.redaction, None)
        .map_err(|e| MatrixError::unknown(format!("redaction failed: {e}")))?;
    Pdu::from_parts(
        pdu.event_id.clone(),
        serde_json::to_value(&object)?,
        pdu.meta.clone(),
    )
}

async fn threads(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_threads::v1::Request,
) -> Result<get_threads::v1::Response> {
    let s = ctx.session()?;
    let user = &*s.user_id;
    let participated_only = match &req.include {
        IncludeThreads::All => false,
        IncludeThreads::Participated => true,
        other => {
            return Err(MatrixError::invalid_param(format!(
                "include must be `all` or `participated`, not {:?}",
                other.as_str()
            )));
        }
    };
    let limit = match req.limit {
        Some(l) if l == UInt::MIN => {
            return Err(MatrixError::invalid_param(
                "limit must be greater than zero",
            ));
        }
        Some(l) => usize::try_from(u64::from(l))
            .unwrap_or(usize::MAX)
            .min(MAX_THREADS_LIMIT),
        None => DEFAULT_THREADS_LIMIT,
    };
    // Strangers get 403; a former member sees the threads as they were when they left.
    let upto = super::events::visible_upto(hs, user, &req.room_id)
        .await?
        .unwrap_or(u64::MAX);
    let mut cursor = match &req.from {
        Some(t) => tokens::parse(t)?.min(upto),
        None => upto,
    };
    let viewer = Viewer::new(hs, user).await?;
    let viewer_device = Some((user, s.device_id.as_str()));
    let mut chunk = Vec::new();
    let mut next_batch = None;
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    'scan: loop {
        let activity =
            relations::thread_activity(hs, &req.room_id, cursor, THREAD_SCAN_PAGE).await?;
        let Some(&(oldest, _)) = activity.last() else {
            break;
        };
        for (pos, root_id) in activity {
            if !seen.insert(root_id.clone()) {
                continue;
            }
            // A thread is listed once, where its newest activity puts it; older entries of a
            // thread listed on an earlier page are skipped here the same way.
            if relations::latest_child_pos(hs, &root_id, THREAD, upto).await? != Some(pos) {
                continue;
            }
            let Some(root) = rooms::get_pdu(hs, root_id.as_str())
                .await?
                .filter(|p| p.room_id == req.room_id)
            else {
                continue;
            };
            if !viewer.sees(hs, &root).await? {
                continue;
            }
            let Some(rel) = aggregate(hs, &viewer, &root, true, true).await? else {
                continue;
            };
            let Some(thread) = rel.get("m.thread") else {
                continue;
            };
            if participated_only
                && thread.get("current_user_participated") != Some(&Value::Bool(true))
            {
                continue;
            }
            if chunk.len() == limit {
                next_batch = Some(tokens::format(pos));
                break 'scan;
            }
            let mut v = if viewer.ignores(&root.sender) {
                redacted_copy(hs, &root).await?.to_client(viewer.now, None)
            } else {
                root.to_client(viewer.now, viewer_device)
            };
            insert_relations(&mut v, rel);
            chunk.push(raw(&v)?);
        }
        match oldest.checked_sub(1) {
            Some(c) if c > 0 => cursor = c,
            _ => break,
        }
    }
    let mut resp = get_threads::v1::Response::new(chunk);
    resp.next_batch = next_batch;
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// Sending relations

/// The rules the spec puts on a client's new relation, checked before the event is created:
/// no thread may start from an event that is itself a relation (400 `M_UNKNOWN`, as the spec
/// says for want of a better code), and a user may not repeat an annotation with the same
/// event type and key (400 `M_DUPLICATE_ANNOTATION`). Call with the write lock held.
pub async fn check_new_relation(
    hs: &Homeserver,
    sender: &UserId,
    room: &RoomId,
    event_type: &str,
    content: &Value,
) -> Result<()> {
    let Some(rel) = content.get("m.relates_to") else {
        return Ok(());
    };
    let (Some(rel_type), Some(parent_id)) = (
        rel.get("rel_type").and_then(Value::as_str),
        rel.get("event_id").and_then(Value::as_str),
    ) else {
        return Ok(());
    };
    let Some(parent) = rooms::get_pdu(hs, parent_id)
        .await?
        .filter(|p| p.room_id == room)
    else {
        return Ok(());
    };
    match rel_type {
        THREAD if relations::rel_type_of(&parent).is_some() => Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "cannot start a thread from an event that itself relates to another event",
        )),
        ANNOTATION => {
            let Some(key) = rel.get("key").and_then(Value::as_str) else {
                return Ok(());
            };
            for child in relations::children(hs, &parent.event_id, Some(ANNOTATION)).await? {
                let Some(c) = rooms::get_pdu(hs, child.event_id.as_str()).await? else {
                    continue;
                };
                let same = c.sender == sender
                    && c.event_type == event_type
                    && relations::still_relates(&c, &parent, ANNOTATION)
                    && c.content
                        .get("m.relates_to")
                        .and_then(|r| r.get("key"))
                        .and_then(Value::as_str)
                        == Some(key);
                if same {
                    return Err(MatrixError::new(
                        StatusCode::BAD_REQUEST,
                        "M_DUPLICATE_ANNOTATION",
                        "you already sent this annotation for that event",
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
