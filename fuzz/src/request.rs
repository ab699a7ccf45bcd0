//! Turns a step into a concrete HTTP request: the route and its example, path variables from
//! the identifiers seen so far, query parameters, and the body with its mutations applied.

use http::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value, json};

use crate::input::{
    Action, ByteMutation, Call, EdgeInt, IdKind, Json, Mutation, Pick, RelKind, Var, Whole,
};
use crate::pool::Pool;
use crate::routes::{self, Routes, VarKind};

/// A request ready to send, with what the checks need to know about it.
#[derive(Debug, Clone)]
pub struct Req {
    /// The user sending it (an index into the run's users), or `None` for no access token.
    pub who: Option<usize>,
    pub method: Method,
    /// Percent-encoded path.
    pub path: String,
    /// Encoded query string, without `?`.
    pub query: String,
    pub body: Vec<u8>,
    /// The room the request is about, for events in its answer that do not name theirs.
    pub room: Option<String>,
}

impl Req {
    pub fn uri(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }
}

/// What the builder needs from the run.
pub struct Ctx<'a> {
    pub pool: &'a Pool,
    /// The caller's user id, if any.
    pub me: Option<&'a str>,
    /// The caller's last `next_batch`.
    pub since: Option<&'a str>,
    /// A number unique in the run (transaction ids, names).
    pub n: u64,
}

pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Largest string a fuzz input may put anywhere, so that one input cannot make megabyte bodies.
const MAX_TEXT: usize = 512;

fn clip(s: &str) -> &str {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Ctx<'_> {
    fn fill(&self, s: &str, pick: Pick) -> String {
        if !s.contains('<') {
            return s.to_owned();
        }
        let pool = self.pool;
        let me = self
            .me
            .map(str::to_owned)
            .unwrap_or_else(|| pool.id(IdKind::User, pick));
        let mxc = match pool.media(pick) {
            Some(m) => format!("mxc://{m}"),
            None => format!("mxc://{}/nothing", pool.server_name),
        };
        s.replace("<me>", &me)
            .replace("<user>", &pool.id(IdKind::User, pick))
            .replace("<room>", &pool.id(IdKind::Room, pick))
            .replace("<event>", &pool.id(IdKind::Event, pick))
            .replace("<alias>", &pool.id(IdKind::Alias, pick))
            .replace("<device>", &pool.id(IdKind::Device, pick))
            .replace("<mxc>", &mxc)
            .replace("<server>", &pool.server_name)
            .replace("<n>", &self.n.to_string())
    }

    fn fill_json(&self, v: &Value, pick: Pick) -> Value {
        match v {
            Value::String(s) => Value::String(self.fill(s, pick)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.fill_json(x, pick)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.fill(k, pick), self.fill_json(x, pick)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn json(&self, j: &Json) -> Value {
        match j {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Edge(e) => match e {
                EdgeInt::MaxSafe => json!(9_007_199_254_740_991_i64),
                EdgeInt::PastSafe => json!(9_007_199_254_740_992_i64),
                EdgeInt::MinSafe => json!(-9_007_199_254_740_991_i64),
                EdgeInt::Zero => json!(0),
                EdgeInt::Minus1 => json!(-1),
                EdgeInt::U64Max => json!(u64::MAX),
            },
            Json::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Json::Str(s) => Value::String(clip(&s.0).to_owned()),
            Json::LongStr(len) => Value::String("x".repeat(len.bytes())),
            Json::Id(kind, p) => Value::String(self.pool.id(*kind, *p)),
            Json::LongId(kind, len) => Value::String(self.pool.long_id(*kind, *len)),
            Json::Token(p) => Value::String(self.pool.token(*p).unwrap_or("s0").to_owned()),
            Json::EmptyArray => json!([]),
            Json::ArrayOf(inner) => json!([self.json(inner)]),
            Json::EmptyObject => json!({}),
            Json::ObjectOf(name, inner) => {
                let mut m = Map::new();
                m.insert(name.as_str().to_owned(), self.json(inner));
                Value::Object(m)
            }
        }
    }

    /// A query parameter's value as text.
    fn query_value(&self, j: &Json) -> String {
        match self.json(j) {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        }
    }

    fn var(&self, kind: VarKind, pick: Pick) -> String {
        let i = usize::from(pick.0);
        let one = |options: &[&str]| options[i % options.len()].to_owned();
        let pool = self.pool;
        match kind {
            VarKind::Id(k) => pool.id(k, pick),
            VarKind::Txn => format!("txn{}", self.n),
            VarKind::StateKey => {
                if i % 2 == 0 {
                    String::new()
                } else {
                    pool.id(IdKind::User, pick)
                }
            }
            VarKind::RelType => one(&["m.annotation", "m.thread", "m.reference", "m.replace"]),
            VarKind::ReceiptType => one(&["m.read", "m.read.private", "m.fully_read"]),
            VarKind::ProfileField => one(&["displayname", "avatar_url", "m.tz", "org.example"]),
            VarKind::MediaServer => pool
                .media(pick)
                .and_then(|m| m.split_once('/'))
                .map(|(s, _)| s.to_owned())
                .unwrap_or_else(|| pool.server_name.clone()),
            VarKind::MediaId => pool
                .media(pick)
                .and_then(|m| m.split_once('/'))
                .map(|(_, id)| id.to_owned())
                .unwrap_or_else(|| "nothing".to_owned()),
            VarKind::FileName => "f.txt".to_owned(),
            VarKind::PushKind => one(&["override", "underride", "sender", "room", "content"]),
            VarKind::RuleId => match i % 3 {
                0 => ".m.rule.master".to_owned(),
                1 => pool.id(IdKind::Room, pick),
                _ => "my.rule".to_owned(),
            },
            VarKind::Tag => one(&["m.favourite", "u.work"]),
            VarKind::FilterId => pool.filter(pick).unwrap_or("0").to_owned(),
            VarKind::BackupVersion => "1".to_owned(),
            VarKind::Session => "session".to_owned(),
            VarKind::Text => "x".to_owned(),
        }
    }
}

/// Builds a request to a route of the table.
pub fn call(ctx: &Ctx<'_>, routes: &Routes, c: &Call, users: usize) -> Option<Req> {
    let route = routes.pick(c.route)?;
    let examples = routes::examples(&route.method, &route.template);
    let example = examples.get(usize::from(c.example) % examples.len().max(1))?;
    let pick = Pick(c.example.wrapping_add(ctx.n as u8));
    let kinds = routes::var_kinds(&route.template);
    let mut values = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let v = match c.vars.get(i) {
            None => match example.vars.get(i).copied().flatten() {
                Some(preset) => ctx.fill(preset, pick),
                None => ctx.var(*kind, pick),
            },
            Some(Var::Auto(p)) => ctx.var(*kind, *p),
            Some(Var::Id(k, p)) => ctx.pool.id(*k, *p),
            Some(Var::Long(k, len)) => ctx.pool.long_id(*k, *len),
            Some(Var::Text(s)) => clip(&s.0).to_owned(),
            Some(Var::Empty) => String::new(),
        };
        values.push(v);
    }
    let room = kinds
        .iter()
        .zip(&values)
        .find(|(k, _)| **k == VarKind::Id(IdKind::Room))
        .map(|(_, v)| v.clone());
    let mut path = String::new();
    let mut vals = values.iter();
    for seg in route.template.trim_start_matches('/').split('/') {
        path.push('/');
        if seg == "{}" {
            path.push_str(&enc(vals.next().map(String::as_str).unwrap_or("")));
        } else {
            path.push_str(seg);
        }
    }
    let mut query: Vec<String> = example
        .query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if v.contains('<') => format!("{k}={}", enc(&ctx.fill(v, pick))),
            _ => kv.to_owned(),
        })
        .collect();
    for q in c.query.iter() {
        query.push(format!(
            "{}={}",
            q.name.as_str(),
            enc(&ctx.query_value(&q.value))
        ));
    }
    let body = example.body.as_ref().map(|b| ctx.fill_json(b, pick));
    let who = who_index(c.who, users);
    Some(Req {
        who,
        method: route.method.clone(),
        path,
        query: query.join("&"),
        body: mutate(ctx, body, &c.body),
        room,
    })
}

/// The user of a `Who`: the registered users, then `None` (anonymous).
pub fn who_index(who: crate::input::Who, users: usize) -> Option<usize> {
    let i = usize::from(who.0) % (users + 1);
    (i < users).then_some(i)
}

const V3: &str = "/_matrix/client/v3";

/// Builds the request of a well-formed action.
pub fn action(
    ctx: &Ctx<'_>,
    a: &Action,
    who: Option<usize>,
    users: &[String],
    mutations: &[Mutation],
) -> Req {
    let pool = ctx.pool;
    let n = ctx.n;
    let user_of = |w: crate::input::Who| -> String {
        match who_index(w, users.len()) {
            Some(i) => users[i].clone(),
            None => format!("@nobody:{}", pool.server_name),
        }
    };
    let room_of = |p: Pick| pool.id(IdKind::Room, p);
    // An event and its room (the room it was seen in, else any room).
    let event_of = |p: Pick| match pool.event(p) {
        Some((e, Some(r))) => (e.to_owned(), r.to_owned()),
        Some((e, None)) => (e.to_owned(), room_of(p)),
        None => ("$nothing".to_owned(), room_of(p)),
    };
    let (method, path, query, body, room): (Method, String, String, Option<Value>, Option<String>) =
        match a {
            Action::CreateRoom {
                preset,
                history,
                invite,
            } => {
                let mut b = json!({"preset": preset.as_str(), "name": format!("room {n}")});
                if let Some(h) = history {
                    b["initial_state"] = json!([{
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": h.as_str()}
                    }]);
                }
                if let Some(w) = invite {
                    b["invite"] = json!([user_of(*w)]);
                }
                (
                    Method::POST,
                    format!("{V3}/createRoom"),
                    String::new(),
                    Some(b),
                    None,
                )
            }
            Action::Invite { room, target }
            | Action::Kick { room, target }
            | Action::Ban { room, target } => {
                let verb = match a {
                    Action::Invite { .. } => "invite",
                    Action::Kick { .. } => "kick",
                    _ => "ban",
                };
                let r = room_of(*room);
                (
                    Method::POST,
                    format!("{V3}/rooms/{}/{verb}", enc(&r)),
                    String::new(),
                    Some(json!({"user_id": user_of(*target)})),
                    Some(r),
                )
            }
            Action::Join { room } => {
                let r = room_of(*room);
                (
                    Method::POST,
                    format!("{V3}/join/{}", enc(&r)),
                    String::new(),
                    Some(json!({})),
                    Some(r),
                )
            }
            Action::Leave { room } => {
                let r = room_of(*room);
                (
                    Method::POST,
                    format!("{V3}/rooms/{}/leave", enc(&r)),
                    String::new(),
                    Some(json!({})),
                    Some(r),
                )
            }
            Action::Send { room, text } => {
                let r = room_of(*room);
                (
                    Method::PUT,
                    format!("{V3}/rooms/{}/send/m.room.message/fz{n}", enc(&r)),
                    String::new(),
                    Some(json!({"msgtype": "m.text", "body": format!("message {text}")})),
                    Some(r),
                )
            }
            Action::SetHistoryVisibility { room, to } => {
                let r = room_of(*room);
                (
                    Method::PUT,
                    format!("{V3}/rooms/{}/state/m.room.history_visibility/", enc(&r)),
                    String::new(),
                    Some(json!({"history_visibility": to.as_str()})),
                    Some(r),
                )
            }
            Action::SetJoinRule { room, public } => {
                let r = room_of(*room);
                let rule = if *public { "public" } else { "invite" };
                (
                    Method::PUT,
                    format!("{V3}/rooms/{}/state/m.room.join_rules/", enc(&r)),
                    String::new(),
                    Some(json!({"join_rule": rule})),
                    Some(r),
                )
            }
            Action::Redact { event } => {
                let (e, r) = event_of(*event);
                (
                    Method::PUT,
                    format!("{V3}/rooms/{}/redact/{}/fz{n}", enc(&r), enc(&e)),
                    String::new(),
                    Some(json!({"reason": "fuzz"})),
                    Some(r),
                )
            }
            Action::Relate { event, kind } => {
                let (e, r) = event_of(*event);
                let (event_type, content) = match kind {
                    RelKind::Reaction => (
                        "m.reaction",
                        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": e, "key": "+1"}}),
                    ),
                    RelKind::Thread => (
                        "m.room.message",
                        json!({"msgtype": "m.text", "body": "thread", "m.relates_to": {"rel_type": "m.thread", "event_id": e}}),
                    ),
                    RelKind::Reply => (
                        "m.room.message",
                        json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"m.in_reply_to": {"event_id": e}}}),
                    ),
                    RelKind::Edit => (
                        "m.room.message",
                        json!({"msgtype": "m.text", "body": "* edit", "m.new_content": {"msgtype": "m.text", "body": "edit"}, "m.relates_to": {"rel_type": "m.replace", "event_id": e}}),
                    ),
                };
                (
                    Method::PUT,
                    format!("{V3}/rooms/{}/send/{event_type}/fz{n}", enc(&r)),
                    String::new(),
                    Some(content),
                    Some(r),
                )
            }
            Action::Sync {
                incremental,
                full_state,
                lazy_members,
                limit,
            } => {
                let mut q = vec!["timeout=0".to_owned()];
                if *incremental && let Some(since) = ctx.since {
                    q.push(format!("since={}", enc(since)));
                }
                if *full_state {
                    q.push("full_state=true".to_owned());
                }
                if *lazy_members || *limit > 0 {
                    let mut room = json!({"state": {"lazy_load_members": lazy_members}});
                    if *limit > 0 {
                        room["timeline"] = json!({"limit": limit % 16});
                    }
                    q.push(format!(
                        "filter={}",
                        enc(&json!({"room": room}).to_string())
                    ));
                }
                (Method::GET, format!("{V3}/sync"), q.join("&"), None, None)
            }
            Action::Messages {
                room,
                backward,
                limit,
            } => {
                let r = room_of(*room);
                let dir = if *backward { "b" } else { "f" };
                (
                    Method::GET,
                    format!("{V3}/rooms/{}/messages", enc(&r)),
                    format!("dir={dir}&limit={}", limit % 32),
                    None,
                    Some(r),
                )
            }
            Action::Context { event, limit } => {
                let (e, r) = event_of(*event);
                (
                    Method::GET,
                    format!("{V3}/rooms/{}/context/{}", enc(&r), enc(&e)),
                    format!("limit={}", limit % 16),
                    None,
                    Some(r),
                )
            }
            Action::Event { event } => {
                let (e, r) = event_of(*event);
                (
                    Method::GET,
                    format!("{V3}/rooms/{}/event/{}", enc(&r), enc(&e)),
                    String::new(),
                    None,
                    Some(r),
                )
            }
            Action::Relations { event } => {
                let (e, r) = event_of(*event);
                (
                    Method::GET,
                    format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&r), enc(&e)),
                    String::new(),
                    None,
                    Some(r),
                )
            }
            Action::Threads { room } => {
                let r = room_of(*room);
                (
                    Method::GET,
                    format!("/_matrix/client/v1/rooms/{}/threads", enc(&r)),
                    String::new(),
                    None,
                    Some(r),
                )
            }
        };
    Req {
        who,
        method,
        path,
        query,
        body: mutate(ctx, body, mutations),
        room,
    }
}

/// Applies the mutations to a body and serialises it. With no body and no mutations the
/// request has an empty body.
fn mutate(ctx: &Ctx<'_>, body: Option<Value>, mutations: &[Mutation]) -> Vec<u8> {
    let Some(mut v) = body.or_else(|| (!mutations.is_empty()).then(|| json!({}))) else {
        return Vec::new();
    };
    let mut bytes_ops = Vec::new();
    for m in mutations {
        match m {
            Mutation::Drop(i) => {
                let paths = field_paths(&v);
                if !paths.is_empty() {
                    let p = &paths[usize::from(*i) % paths.len()];
                    remove_at(&mut v, p);
                }
            }
            Mutation::Replace(i, j) => {
                let paths = field_paths(&v);
                if !paths.is_empty() {
                    let p = &paths[usize::from(*i) % paths.len()];
                    let new = ctx.json(j);
                    if let Some(slot) = get_mut(&mut v, p) {
                        *slot = new;
                    }
                }
            }
            Mutation::Add(name, j) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert(name.as_str().to_owned(), ctx.json(j));
                }
            }
            Mutation::Whole(w) => {
                v = match w {
                    Whole::WrapInArray => json!([v]),
                    Whole::EmptyArray => json!([]),
                    Whole::EmptyObject => json!({}),
                    Whole::Null => Value::Null,
                    Whole::String => json!("body"),
                    Whole::Number => json!(7),
                };
            }
            Mutation::Bytes(b) => bytes_ops.push(b),
        }
    }
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    for op in bytes_ops {
        match op {
            ByteMutation::Truncate(n) => bytes.truncate(usize::from(*n) % (bytes.len() + 1)),
            ByteMutation::InvalidUtf8(at) => {
                let at = usize::from(*at) % (bytes.len() + 1);
                bytes.insert(at, 0xff);
            }
            ByteMutation::Empty => bytes.clear(),
            ByteMutation::Raw(raw) => bytes = raw.0.clone(),
        }
    }
    bytes
}

/// Every field of every object in `v`, depth first, as a path of keys and indices.
fn field_paths(v: &Value) -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    let mut here = Vec::new();
    walk_fields(v, &mut here, &mut out, 0);
    out
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn walk_fields(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>, depth: usize) {
    if depth > 8 || out.len() > 64 {
        return;
    }
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                here.push(Step::Key(k.clone()));
                out.push(here.clone());
                walk_fields(x, here, out, depth + 1);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Step::Index(i));
                walk_fields(x, here, out, depth + 1);
                here.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'v>(v: &'v mut Value, path: &[Step]) -> Option<&'v mut Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Step::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if let (Some(p), Step::Key(k)) = (get_mut(v, parent), last)
        && let Some(o) = p.as_object_mut()
    {
        o.remove(k);
    }
}
