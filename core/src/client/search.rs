//! Server-side search: `POST /search` (the `room_events` category).
//!
//! **Index.** Tree `search`: `room · word · pos → event id`, for the searchable keys:
//! `content.body` of `m.room.message`, `content.name` of `m.room.name`, `content.topic` of
//! `m.room.topic`. Words are the text's alphanumeric runs, lowercased, cut at
//! [`MAX_WORD_CHARS`]. Cost: one small record per distinct word of such an event (a 15-word
//! message adds 15 puts; IndexedDB writes ≈ 8–10k records/s), and a redaction deletes them
//! again. Encrypted events have nothing searchable and add nothing. The index is written
//! behind the timeline (see `room/indexer.rs`): a search first indexes what its rooms
//! received since the last quiet spell.
//!
//! **Query.** Every word of the search term must match (AND), each as a prefix of a word of
//! the text (`hear` finds "hearth"). Per room the caller is joined to, one prefix scan per
//! query word ([`MAX_POSTINGS`] at most) gives the candidates; the newest [`MAX_EXAMINED`] of
//! them are then checked against the stored event — still matching (redactions), the filter,
//! and `visibility` — so nothing the caller may not see is returned or counted.
//! `count` is the number of checked matches, a lower bound when more candidates exist.
//!
//! **Order and pagination.** `recent`: newest first; `next_batch` continues below the last
//! position returned. `rank` (the default): the fraction of the text's words that match,
//! then newest first, over the newest [`MAX_EXAMINED`] candidates at the time of the first
//! page; `next_batch` pins that position and an offset, so pages do not shift when new events
//! arrive. A group's `next_batch` continues the same search restricted to that group.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::rc::Rc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ruma::api::client::search::search_events::v3::{
    Criteria, EventContextResult, GroupingKey, OrderBy, Request, Response, ResultCategories,
    ResultGroup, ResultGroupMap, ResultGroupMapsByGroupingKey, ResultRoomEvents, SearchKeys,
    SearchResult, UserProfile,
};
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::filter_matches;
use super::{raw, tokens};
use crate::db::rooms::{self, Pdu};
pub use crate::db::search_index::{
    MAX_WORD_CHARS, SEARCH_TREE, index_event, searchable, unindex_event, words,
};
use crate::db::{key, pos_from};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::{Direction, KeyRange};
use crate::visibility::{RoomView, Views};
use crate::{Ctx, Homeserver, Session, route};

/// Index entries read per (room, query word).
const MAX_POSTINGS: usize = 5_000;
/// Candidates checked against their event per request.
const MAX_EXAMINED: usize = 500;
/// Results per page when the filter gives no limit, and the most a page holds.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;
/// Context events per side at most.
const MAX_CONTEXT: usize = 50;

pub fn routes(r: &mut Router) {
    route!(r, Request, search);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    Recent,
    Rank,
}

/// A `next_batch` token: where the next page starts, and the group it is restricted to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    #[serde(rename = "o")]
    order: Option<Order>,
    /// Recent: positions below this one.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    before: Option<u64>,
    /// Rank: positions up to this one, skipping `offset` ranked results.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    snapshot: Option<u64>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    offset: Option<usize>,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    room: Option<OwnedRoomId>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    sender: Option<OwnedUserId>,
}

impl Token {
    fn encode(&self) -> Result<String> {
        Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(self)?))
    }

    fn decode(s: &str) -> Result<Self> {
        let bad = || MatrixError::invalid_param("invalid next_batch token");
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if t.order.is_none() {
            return Err(bad());
        }
        Ok(t)
    }
}

/// What the request asks for, validated.
struct Query {
    words: Vec<String>,
    keys: BTreeSet<&'static str>,
    order: Order,
    limit: usize,
    groupings: Vec<GroupingKey>,
    /// History visibility of every room a hit comes from.
    views: Views,
}

impl Query {
    fn parse(c: &Criteria) -> Result<Self> {
        let mut terms: Vec<String> = words(&c.search_term);
        terms.sort();
        terms.dedup();
        let mut keys = BTreeSet::new();
        for k in c.keys.iter().flatten() {
            keys.insert(match k {
                SearchKeys::ContentBody => "content.body",
                SearchKeys::ContentName => "content.name",
                SearchKeys::ContentTopic => "content.topic",
                other => {
                    return Err(MatrixError::invalid_param(format!(
                        "unknown search key {:?}",
                        other.as_str()
                    )));
                }
            });
        }
        if keys.is_empty() {
            keys = BTreeSet::from(["content.body", "content.name", "content.topic"]);
        }
        let order = match &c.order_by {
            None | Some(OrderBy::Rank) => Order::Rank,
            Some(OrderBy::Recent) => Order::Recent,
            Some(other) => {
                return Err(MatrixError::invalid_param(format!(
                    "unknown order_by {:?}",
                    other.as_str()
                )));
            }
        };
        let limit = c
            .filter
            .limit
            .map(|l| u64::from(l) as usize)
            .unwrap_or(DEFAULT_LIMIT)
            .clamp(1, MAX_LIMIT);
        let mut groupings = Vec::new();
        for g in &c.groupings.group_by {
            match &g.key {
                Some(k @ (GroupingKey::RoomId | GroupingKey::Sender)) => groupings.push(k.clone()),
                Some(other) => {
                    return Err(MatrixError::invalid_param(format!(
                        "unknown group key {:?}",
                        other.as_str()
                    )));
                }
                None => {}
            }
        }
        Ok(Self {
            words: terms,
            keys,
            order,
            limit,
            groupings,
            views: Views::new(),
        })
    }
}

/// A checked match.
struct Hit {
    pdu: Rc<Pdu>,
    rank: f64,
    /// The text's words that matched a query word.
    matched: BTreeSet<String>,
}

/// Index candidates `(pos, event id)` in `rooms` matching every query word, newest first.
async fn candidates(
    hs: &Homeserver,
    rooms: &[OwnedRoomId],
    terms: &[String],
    upper: Bound<u64>,
) -> Result<Vec<(u64, OwnedEventId)>> {
    let below = |pos: u64| match upper {
        Bound::Excluded(b) => pos < b,
        Bound::Included(b) => pos <= b,
        Bound::Unbounded => true,
    };
    let mut out = Vec::new();
    for room in rooms {
        let mut acc: Option<BTreeMap<u64, OwnedEventId>> = None;
        for w in terms {
            // No separator after the word: the scan finds every word it is a prefix of.
            let pfx = key(&[room.as_bytes(), w.as_bytes()]);
            let rows = hs
                .store
                .scan(
                    SEARCH_TREE,
                    KeyRange::prefix(&pfx),
                    Direction::Backward,
                    MAX_POSTINGS,
                )
                .await?;
            let mut found = BTreeMap::new();
            for (k, v) in rows {
                let Some(pos) = pos_from(&k) else { continue };
                if !below(pos) {
                    continue;
                }
                let Ok(id) = OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref()) else {
                    continue;
                };
                found.insert(pos, id);
            }
            let next = match acc {
                None => found,
                Some(prev) => prev
                    .into_iter()
                    .filter(|(p, _)| found.contains_key(p))
                    .collect(),
            };
            let empty = next.is_empty();
            acc = Some(next);
            if empty {
                break;
            }
        }
        out.extend(acc.unwrap_or_default());
    }
    out.sort_by_key(|(pos, _)| std::cmp::Reverse(*pos));
    Ok(out)
}

/// Checks a candidate against its stored event: searchable under a requested key, still
/// matching every word, passing the filter and the token's group, visible to the caller.
async fn check(
    hs: &Homeserver,
    user: &UserId,
    c: &Criteria,
    q: &Query,
    token: &Token,
    id: &OwnedEventId,
) -> Result<Option<Hit>> {
    let Some(pdu) = rooms::get_pdu(hs, id.as_str()).await? else {
        return Ok(None);
    };
    let Some((k, text)) = searchable(&pdu.event_type, &pdu.content) else {
        return Ok(None);
    };
    if !q.keys.contains(k) || token.sender.as_ref().is_some_and(|s| *s != pdu.sender) {
        return Ok(None);
    }
    let text_words = words(text);
    if text_words.is_empty()
        || !q
            .words
            .iter()
            .all(|w| text_words.iter().any(|t| t.starts_with(w.as_str())))
    {
        return Ok(None);
    }
    if !filter_matches(&c.filter, &pdu) || !q.views.allows(hs, user, &pdu).await? {
        return Ok(None);
    }
    let matched: Vec<&String> = text_words
        .iter()
        .filter(|t| q.words.iter().any(|w| t.starts_with(w.as_str())))
        .collect();
    let rank = matched.len() as f64 / text_words.len() as f64;
    Ok(Some(Hit {
        rank,
        matched: matched.into_iter().cloned().collect(),
        pdu,
    }))
}

/// Rooms searched: those the caller is joined to, narrowed by the filter and the token's group.
async fn searched_rooms(
    hs: &Homeserver,
    user: &UserId,
    c: &Criteria,
    token: &Token,
) -> Result<Vec<OwnedRoomId>> {
    let f = &c.filter;
    Ok(rooms::joined_rooms(hs, user)
        .await?
        .into_iter()
        .filter(|r| f.rooms.as_ref().is_none_or(|rs| rs.contains(r)))
        .filter(|r| !f.not_rooms.contains(r))
        .filter(|r| token.room.as_ref().is_none_or(|t| t == r))
        .collect())
}

async fn search(hs: &Homeserver, ctx: Ctx, req: Request) -> Result<Response> {
    let s = ctx.session()?;
    let Some(c) = &req.search_categories.room_events else {
        return Ok(Response::new(ResultCategories::new()));
    };
    let q = Query::parse(c)?;
    let token = match &req.next_batch {
        Some(t) => Token::decode(t)?,
        None => Token {
            order: Some(q.order),
            ..Token::default()
        },
    };
    if token.order != Some(q.order) {
        return Err(MatrixError::invalid_param(
            "next_batch belongs to a search with another order_by",
        ));
    }
    let mut out = ResultRoomEvents::new();
    if q.words.is_empty() {
        out.count = Some(UInt::MIN);
        let mut cats = ResultCategories::new();
        cats.room_events = out;
        return Ok(Response::new(cats));
    }

    let snapshot = token.snapshot.unwrap_or_else(|| hs.current_pos());
    let upper = match q.order {
        Order::Recent => token
            .before
            .map(Bound::Excluded)
            .unwrap_or(Bound::Unbounded),
        Order::Rank => Bound::Included(snapshot),
    };
    let rooms = searched_rooms(hs, &s.user_id, c, &token).await?;
    // The index follows the timeline with a delay; a search sees every event up to now. If
    // that cannot be written (storage full, say), the search still answers from what is
    // indexed.
    if let Err(e) =
        crate::room::indexer::catch_up(hs, &rooms, crate::room::indexer::MAX_PER_SEARCH).await
    {
        tracing::warn!(error = %e, "search: bringing the index up to date failed");
    }
    let cands = candidates(hs, &rooms, &q.words, upper).await?;
    let mut hits = Vec::new();
    let mut unexamined_below = None;
    for (i, (_, id)) in cands.iter().enumerate() {
        if i == MAX_EXAMINED {
            // Candidates below the last examined one are left for the next page.
            unexamined_below = cands.get(i - 1).map(|(p, _)| *p);
            break;
        }
        if let Some(h) = check(hs, &s.user_id, c, &q, &token, id).await? {
            hits.push(h);
        }
    }

    // The page, and where the next one starts.
    let offset = match q.order {
        Order::Rank => token.offset.unwrap_or(0),
        Order::Recent => 0,
    };
    if q.order == Order::Rank {
        hits.sort_by(|a, b| b.rank.total_cmp(&a.rank).then(b.pdu.pos.cmp(&a.pdu.pos)));
    }
    let end = offset.saturating_add(q.limit).min(hits.len());
    let pager = Pager {
        order: q.order,
        hits: &hits,
        end,
        page: hits.get(offset..end).unwrap_or(&[]),
        snapshot,
        unexamined_below,
    };
    let page = pager.page;
    let base = Token {
        room: token.room.clone(),
        sender: token.sender.clone(),
        ..Token::default()
    };
    out.next_batch = pager.next(|_| true, base)?;
    out.count = Some(UInt::new_saturating(hits.len() as u64));
    out.groups = groups(&q, &pager, &token)?;

    let now = hs.now_ms();
    let mut highlights: BTreeSet<String> = q.words.iter().cloned().collect();
    for h in page {
        highlights.extend(h.matched.iter().cloned());
        let mut r = SearchResult::new();
        r.rank = Some(h.rank);
        r.result = Some(raw(&h
            .pdu
            .to_client(now, Some((&s.user_id, s.device_id.as_str()))))?);
        r.context = context(hs, s, c, &h.pdu).await?;
        out.results.push(r);
    }
    out.highlights = highlights.into_iter().collect();

    if c.include_state == Some(true) {
        let result_rooms: BTreeSet<&RoomId> = page.iter().map(|h| &*h.pdu.room_id).collect();
        for room in result_rooms {
            let state = rooms::current_state_events(hs, room).await?;
            out.state.insert(
                room.to_owned(),
                state
                    .iter()
                    .map(|p| raw(&p.to_client(now, None)))
                    .collect::<Result<_>>()?,
            );
        }
    }

    let mut cats = ResultCategories::new();
    cats.room_events = out;
    Ok(Response::new(cats))
}

/// The group a hit falls in under one grouping key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Group {
    Room(OwnedRoomId),
    Sender(OwnedUserId),
}

impl Group {
    fn of(key: &GroupingKey, h: &Hit) -> Self {
        match key {
            GroupingKey::RoomId => Self::Room(h.pdu.room_id.clone()),
            _ => Self::Sender(h.pdu.sender.clone()),
        }
    }

    fn contains(&self, h: &Hit) -> bool {
        match self {
            Self::Room(r) => h.pdu.room_id == *r,
            Self::Sender(u) => h.pdu.sender == *u,
        }
    }

    /// The restriction of a token that continues this group, keeping the current one's other
    /// restriction.
    fn restrict(&self, token: &Token) -> Token {
        match self {
            Self::Room(r) => Token {
                room: Some(r.clone()),
                sender: token.sender.clone(),
                ..Token::default()
            },
            Self::Sender(u) => Token {
                room: token.room.clone(),
                sender: Some(u.clone()),
                ..Token::default()
            },
        }
    }
}

/// Every checked hit in result order, the page shown, and what is needed to continue.
struct Pager<'a> {
    order: Order,
    hits: &'a [Hit],
    /// `hits[..end]` has been shown, on this page or earlier ones.
    end: usize,
    page: &'a [Hit],
    snapshot: u64,
    /// Set when candidates were left unexamined: they lie below this position.
    unexamined_below: Option<u64>,
}

impl Pager<'_> {
    /// The `next_batch` that continues the hits `member` selects, with `restrict`'s group.
    fn next(&self, member: impl Fn(&Hit) -> bool, restrict: Token) -> Result<Option<String>> {
        let in_group = self.hits.iter().filter(|h| member(h)).count();
        let shown = self
            .hits
            .get(..self.end)
            .unwrap_or(&[])
            .iter()
            .filter(|h| member(h))
            .count();
        let token = match self.order {
            Order::Recent => {
                let last_shown = self
                    .page
                    .iter()
                    .rev()
                    .find(|h| member(h))
                    .map(|h| h.pdu.pos);
                let before = match (in_group > shown, last_shown) {
                    (true, Some(last)) => Some(last),
                    _ => self.unexamined_below,
                };
                before.map(|b| Token {
                    order: Some(Order::Recent),
                    before: Some(b),
                    ..restrict
                })
            }
            Order::Rank => (shown < in_group).then_some(Token {
                order: Some(Order::Rank),
                snapshot: Some(self.snapshot),
                offset: Some(shown),
                ..restrict
            }),
        };
        token.map(|t| t.encode()).transpose()
    }
}

/// The requested groupings of the page: each group's results, its order of first appearance,
/// and a `next_batch` that continues within it.
fn groups(q: &Query, pager: &Pager<'_>, token: &Token) -> Result<ResultGroupMapsByGroupingKey> {
    let mut out = ResultGroupMapsByGroupingKey::new();
    for key in &q.groupings {
        let mut seen: Vec<Group> = Vec::new();
        for h in pager.page {
            let g = Group::of(key, h);
            if !seen.contains(&g) {
                seen.push(g);
            }
        }
        let mut by_room = BTreeMap::new();
        let mut by_sender = BTreeMap::new();
        for (i, g) in seen.into_iter().enumerate() {
            let mut rg = ResultGroup::new();
            rg.order = Some(UInt::new_saturating(i as u64 + 1));
            rg.results = pager
                .page
                .iter()
                .filter(|h| g.contains(h))
                .map(|h| h.pdu.event_id.clone())
                .collect();
            rg.next_batch = pager.next(|h| g.contains(h), g.restrict(token))?;
            match g {
                Group::Room(r) => {
                    by_room.insert(r, rg);
                }
                Group::Sender(u) => {
                    by_sender.insert(u, rg);
                }
            }
        }
        out.insert(match key {
            GroupingKey::RoomId => ResultGroupMap::RoomId(by_room),
            _ => ResultGroupMap::Sender(by_sender),
        });
    }
    Ok(out)
}

/// Visible events around a result (the search filter applies to them too), with pagination
/// tokens and, when asked, the senders' profiles as of the result.
async fn context(
    hs: &Homeserver,
    s: &Session,
    c: &Criteria,
    pdu: &Pdu,
) -> Result<EventContextResult> {
    let before_n = (u64::from(c.event_context.before_limit) as usize).min(MAX_CONTEXT);
    let after_n = (u64::from(c.event_context.after_limit) as usize).min(MAX_CONTEXT);
    let viewer = Some((&*s.user_id, s.device_id.as_str()));
    let now = hs.now_ms();

    // Hidden or filtered events are skipped, within a bounded scan.
    let view = RoomView::load(hs, &s.user_id, &pdu.room_id).await?;
    let budget = |n: usize| n * 4 + 20;
    let mut before = Vec::new();
    let mut cursor = pdu.pos.saturating_sub(1);
    let mut scanned = 0;
    while before.len() < before_n && cursor > 0 && scanned < budget(before_n) {
        let page = rooms::timeline_events(
            hs,
            &pdu.room_id,
            0,
            cursor,
            Direction::Backward,
            before_n * 2,
        )
        .await?;
        let Some(last) = page.last() else { break };
        cursor = last.pos.saturating_sub(1);
        scanned += page.len();
        for p in page {
            if before.len() < before_n && filter_matches(&c.filter, &p) && view.allows(&p) {
                before.push(p);
            }
        }
    }
    let mut after = Vec::new();
    let mut cursor = pdu.pos;
    let head = hs.current_pos();
    let mut scanned = 0;
    while after.len() < after_n && cursor < head && scanned < budget(after_n) {
        let page = rooms::timeline_events(
            hs,
            &pdu.room_id,
            cursor,
            head,
            Direction::Forward,
            after_n * 2,
        )
        .await?;
        let Some(last) = page.last() else { break };
        cursor = last.pos;
        scanned += page.len();
        for p in page {
            if after.len() < after_n && filter_matches(&c.filter, &p) && view.allows(&p) {
                after.push(p);
            }
        }
    }

    let mut r = EventContextResult::new();
    r.start = Some(tokens::format(
        before.last().map_or(pdu.pos, |p| p.pos).saturating_sub(1),
    ));
    r.end = Some(tokens::format(after.last().map_or(pdu.pos, |p| p.pos)));
    if c.event_context.include_profile {
        let senders: BTreeSet<&UserId> = before
            .iter()
            .chain(after.iter())
            .map(|p| &*p.sender)
            .chain(std::iter::once(&*pdu.sender))
            .collect();
        let state = rooms::state_at(hs, &pdu.room_id, pdu.pos).await?;
        for sender in senders {
            let Some(id) = state.get(&("m.room.member".to_owned(), sender.to_string())) else {
                continue;
            };
            let Some(member) = rooms::get_pdu(hs, id.as_str()).await? else {
                continue;
            };
            let mut profile = UserProfile::new();
            profile.displayname = member
                .content
                .get("displayname")
                .and_then(Value::as_str)
                .map(str::to_owned);
            profile.avatar_url = member
                .content
                .get("avatar_url")
                .and_then(Value::as_str)
                .map(OwnedMxcUri::from)
                .filter(|a| a.is_valid());
            r.profile_info.insert(sender.to_owned(), profile);
        }
    }
    r.events_before = before
        .iter()
        .map(|p| raw(&p.to_client(now, viewer)))
        .collect::<Result<_>>()?;
    r.events_after = after
        .iter()
        .map(|p| raw(&p.to_client(now, viewer)))
        .collect::<Result<_>>()?;
    Ok(r)
}
