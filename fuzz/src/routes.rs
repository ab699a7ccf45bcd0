//! The router's table as the fuzzer sees it: which route a number names, what each path
//! variable holds, and a few valid example requests per route to mutate from.

use std::collections::HashMap;

use http::Method;
use serde_json::{Value, json};

use crate::input::IdKind;

pub struct Route {
    pub method: Method,
    /// The router's template, `{}` for each variable.
    pub template: String,
    point: u16,
}

impl Route {
    /// The number that names this route in a [`crate::input::Call`].
    pub fn point(&self) -> u16 {
        self.point
    }
}

/// Routes placed on a ring by a hash of their method and template. A number picks the first
/// route at or after it, so adding a route moves only the numbers that fall just before it,
/// and saved inputs keep naming the routes they named.
pub struct Routes {
    ring: Vec<Route>,
    /// Indices into `ring` by number of path segments, for [`Routes::lookup`].
    by_len: HashMap<usize, Vec<usize>>,
}

fn segments(path: &str) -> std::str::Split<'_, char> {
    path.trim_start_matches('/').split('/')
}

fn fnv1a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Routes {
    pub fn new(routes: Vec<(Method, String)>) -> Self {
        let mut ring: Vec<Route> = routes
            .into_iter()
            .map(|(method, template)| {
                let h = fnv1a(&format!("{method} {template}"));
                Route {
                    method,
                    template,
                    point: (h ^ (h >> 16)) as u16,
                }
            })
            .collect();
        ring.sort_by(|a, b| (a.point, &a.template).cmp(&(b.point, &b.template)));
        let mut by_len: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, r) in ring.iter().enumerate() {
            by_len
                .entry(segments(&r.template).count())
                .or_default()
                .push(i);
        }
        Self { ring, by_len }
    }

    /// The route whose template matches a request path (`{}` matches any segment).
    pub fn lookup(&self, method: &Method, path: &str) -> Option<&Route> {
        let segs: Vec<&str> = segments(path).collect();
        self.by_len
            .get(&segs.len())?
            .iter()
            .map(|&i| &self.ring[i])
            .find(|r| {
                r.method == *method
                    && segments(&r.template)
                        .zip(&segs)
                        .all(|(t, s)| t == "{}" || t == *s)
            })
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    pub fn pick(&self, n: u16) -> Option<&Route> {
        self.ring
            .iter()
            .find(|r| r.point >= n)
            .or_else(|| self.ring.first())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.ring.iter()
    }
}

/// What a path variable holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    Id(IdKind),
    Txn,
    StateKey,
    RelType,
    ReceiptType,
    ProfileField,
    MediaServer,
    MediaId,
    FileName,
    PushKind,
    RuleId,
    Tag,
    FilterId,
    BackupVersion,
    Session,
    Text,
}

/// The kind of each `{}` of a template, from the literal segment before it (and how many
/// variables follow that literal).
pub fn var_kinds(template: &str) -> Vec<VarKind> {
    use IdKind::*;
    use VarKind::*;
    let mut out = Vec::new();
    let mut last_lit = "";
    let mut before_last = "";
    let mut offset = 0;
    for seg in template.trim_start_matches('/').split('/') {
        if seg != "{}" {
            before_last = last_lit;
            last_lit = seg;
            offset = 0;
            continue;
        }
        let kind = match (last_lit, offset) {
            ("rooms", 0) | ("join", 0) | ("knock", 0) | ("room_summary", 0) => Id(Room),
            ("room", 0) if before_last == "list" => Id(Room),
            ("room", 0) => Id(Alias),
            ("context" | "event", 0) | ("redact", 0) | ("report", 0) => Id(Event),
            ("relations", 0) => Id(Event),
            ("relations", 1) => RelType,
            ("relations", 2) => Id(Type),
            ("redact", 1) | ("send", 1) | ("sendToDevice", 1) => Txn,
            ("send" | "sendToDevice" | "account_data", 0) => Id(Type),
            ("state", 0) => Id(Type),
            ("state", 1) => StateKey,
            ("receipt", 0) => ReceiptType,
            ("receipt", 1) => Id(Event),
            ("typing" | "user" | "users" | "presence" | "profile" | "lock" | "suspend", 0)
            | ("whois", 0) => Id(User),
            ("profile", 1) => ProfileField,
            ("devices", 0) => Id(Device),
            ("download" | "thumbnail" | "upload", 0) => MediaServer,
            ("download" | "thumbnail" | "upload", 1) => MediaId,
            ("download", 2) => FileName,
            ("global", 0) => PushKind,
            ("global", 1) => RuleId,
            ("tags", 0) => Tag,
            ("filter", 0) => FilterId,
            ("version", 0) => BackupVersion,
            ("keys", 0) => Id(Room),
            ("keys", 1) => Session,
            _ => Text,
        };
        out.push(kind);
        offset += 1;
    }
    out
}

/// A valid request to start from. Strings in `vars` and `body` may hold placeholders that the
/// request builder fills from the run: `<me>` (the caller), `<user>`, `<room>`, `<event>`,
/// `<alias>`, `<server>`, `<mxc>`, `<device>`, `<n>` (a number unique in the run).
pub struct Example {
    /// Values for the path's variables, by position; `None` leaves one to the variable's kind.
    pub vars: Vec<Option<&'static str>>,
    pub query: &'static str,
    pub body: Option<Value>,
}

fn ex(vars: &[Option<&'static str>], query: &'static str, body: Option<Value>) -> Example {
    Example {
        vars: vars.to_vec(),
        query,
        body,
    }
}

/// The part of a template after its API version (`/_matrix/client/v3/rooms/{}/send/{}/{}` →
/// `rooms/{}/send/{}/{}`), so that `r0`, `v3` and unstable twins share examples.
pub fn tail(template: &str) -> &str {
    let rest = template
        .strip_prefix("/_matrix/client/")
        .or_else(|| template.strip_prefix("/_matrix/media/"))
        .unwrap_or(template);
    let Some((_version, mut rest)) = rest.split_once('/') else {
        return rest;
    };
    // Unstable prefixes carry an MSC namespace (`org.matrix.msc3916/media/...`).
    if let Some((first, after)) = rest.split_once('/')
        && first.contains('.')
    {
        rest = after;
    }
    rest
}

/// The example requests of a route; an empty object body when none is listed.
pub fn examples(method: &Method, template: &str) -> Vec<Example> {
    let t = tail(template);
    let m = method.as_str();
    let text = json!({"msgtype": "m.text", "body": "hello <n>"});
    let list = match (m, t) {
        ("POST", "createRoom") => vec![
            ex(&[], "", Some(json!({"preset": "private_chat"}))),
            ex(
                &[],
                "",
                Some(json!({
                    "preset": "public_chat",
                    "room_alias_name": "fuzz<n>",
                    "name": "room <n>",
                    "topic": "t",
                    "visibility": "public",
                    "invite": ["<user>"],
                    "initial_state": [{
                        "type": "m.room.history_visibility",
                        "state_key": "",
                        "content": {"history_visibility": "joined"}
                    }],
                    "power_level_content_override": {"users_default": 0}
                })),
            ),
            ex(
                &[],
                "",
                Some(json!({"is_direct": true, "invite": ["<user>"], "room_version": "11"})),
            ),
        ],
        ("PUT", "rooms/{}/send/{}/{}") => vec![
            ex(&[None, Some("m.room.message"), None], "", Some(text)),
            ex(
                &[None, Some("m.reaction"), None],
                "",
                Some(
                    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "<event>", "key": "👍"}}),
                ),
            ),
            ex(
                &[None, Some("m.room.message"), None],
                "",
                Some(json!({
                    "msgtype": "m.text",
                    "body": "in a thread",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": "<event>"}
                })),
            ),
        ],
        ("PUT", "rooms/{}/state/{}/{}") => vec![
            ex(
                &[None, Some("m.room.history_visibility"), Some("")],
                "",
                Some(json!({"history_visibility": "joined"})),
            ),
            ex(
                &[None, Some("m.room.history_visibility"), Some("")],
                "",
                Some(json!({"history_visibility": "world_readable"})),
            ),
            ex(
                &[None, Some("m.room.name"), Some("")],
                "",
                Some(json!({"name": "n<n>"})),
            ),
            ex(
                &[None, Some("m.room.join_rules"), Some("")],
                "",
                Some(json!({"join_rule": "public"})),
            ),
            ex(
                &[None, Some("m.room.member"), Some("<user>")],
                "",
                Some(json!({"membership": "invite"})),
            ),
            ex(
                &[None, Some("m.room.power_levels"), Some("")],
                "",
                Some(json!({"users": {"<me>": 100, "<user>": 50}, "events_default": 0})),
            ),
        ],
        ("GET", "rooms/{}/state/{}/{}") => vec![
            ex(&[None, Some("m.room.create"), Some("")], "", None),
            ex(
                &[None, Some("m.room.member"), Some("<user>")],
                "format=event",
                None,
            ),
        ],
        ("POST", "rooms/{}/invite" | "rooms/{}/kick" | "rooms/{}/ban" | "rooms/{}/unban") => {
            vec![ex(
                &[],
                "",
                Some(json!({"user_id": "<user>", "reason": "r"})),
            )]
        }
        ("POST", "rooms/{}/join" | "join/{}" | "knock/{}" | "rooms/{}/leave") => {
            vec![
                ex(&[], "", Some(json!({}))),
                ex(&[], "", Some(json!({"reason": "why"}))),
            ]
        }
        ("PUT", "rooms/{}/redact/{}/{}") => vec![ex(&[], "", Some(json!({"reason": "spam"})))],
        ("POST", "rooms/{}/receipt/{}/{}") => {
            vec![ex(&[Some(""), Some("m.read")], "", Some(json!({})))]
        }
        ("POST", "rooms/{}/read_markers") => vec![ex(
            &[],
            "",
            Some(json!({"m.fully_read": "<event>", "m.read": "<event>"})),
        )],
        ("PUT", "rooms/{}/typing/{}") => vec![ex(
            &[None, Some("<me>")],
            "",
            Some(json!({"typing": true, "timeout": 30000})),
        )],
        ("GET", "sync") => vec![
            ex(&[], "timeout=0", None),
            ex(&[], "timeout=0&full_state=true", None),
            ex(
                &[],
                "timeout=0&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A2%7D%2C%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%7D%7D",
                None,
            ),
        ],
        ("GET", "rooms/{}/messages") => vec![
            ex(&[], "dir=b&limit=5", None),
            ex(&[], "dir=f", None),
            ex(
                &[],
                "dir=b&filter=%7B%22lazy_load_members%22%3Atrue%7D",
                None,
            ),
        ],
        ("GET", "rooms/{}/context/{}") => vec![ex(&[], "limit=3", None)],
        ("GET", "rooms/{}/relations/{}" | "rooms/{}/threads") => {
            vec![ex(&[], "", None), ex(&[], "dir=f&limit=1", None)]
        }
        ("POST", "search") => vec![ex(
            &[],
            "",
            Some(
                json!({"search_categories": {"room_events": {"search_term": "hello", "event_context": {"before_limit": 1, "after_limit": 1}}}}),
            ),
        )],
        ("PUT", "directory/room/{}") => vec![ex(
            &[Some("#a<n>:<server>")],
            "",
            Some(json!({"room_id": "<room>"})),
        )],
        ("PUT", "directory/list/room/{}") => {
            vec![ex(&[], "", Some(json!({"visibility": "public"})))]
        }
        ("POST", "publicRooms") => vec![ex(
            &[],
            "",
            Some(json!({"limit": 5, "filter": {"generic_search_term": "room"}})),
        )],
        ("PUT", "profile/{}/displayname") => {
            vec![ex(
                &[Some("<me>")],
                "",
                Some(json!({"displayname": "D<n>"})),
            )]
        }
        ("PUT", "profile/{}/avatar_url") => {
            vec![ex(
                &[Some("<me>")],
                "",
                Some(json!({"avatar_url": "<mxc>"})),
            )]
        }
        ("PUT", "profile/{}/{}") => {
            vec![ex(
                &[Some("<me>"), Some("m.tz")],
                "",
                Some(json!({"m.tz": "Europe/Paris"})),
            )]
        }
        ("PUT", "presence/{}/status") => vec![ex(
            &[Some("<me>")],
            "",
            Some(json!({"presence": "online", "status_msg": "hi"})),
        )],
        ("PUT", "user/{}/account_data/{}") => vec![ex(
            &[Some("<me>"), Some("org.example.data")],
            "",
            Some(json!({"k": 1})),
        )],
        ("PUT", "user/{}/rooms/{}/account_data/{}") => vec![ex(
            &[Some("<me>"), None, Some("org.example.data")],
            "",
            Some(json!({"k": 1})),
        )],
        ("PUT", "user/{}/rooms/{}/tags/{}") => vec![ex(
            &[Some("<me>"), None, Some("m.favourite")],
            "",
            Some(json!({"order": 0.5})),
        )],
        ("POST", "user/{}/filter") => vec![ex(
            &[Some("<me>")],
            "",
            Some(json!({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": true}}})),
        )],
        ("POST", "user/{}/openid/request_token") => vec![ex(&[Some("<me>")], "", Some(json!({})))],
        ("PUT", "sendToDevice/{}/{}") => vec![ex(
            &[Some("m.room_key_request"), None],
            "",
            Some(
                json!({"messages": {"<user>": {"*": {"action": "request_cancellation", "request_id": "r", "requesting_device_id": "D"}}}}),
            ),
        )],
        ("POST", "keys/upload") => vec![ex(
            &[],
            "",
            Some(
                json!({"one_time_keys": {"signed_curve25519:AAAA<n>": {"key": "a2V5", "signatures": {}}}}),
            ),
        )],
        ("POST", "keys/query") => vec![ex(&[], "", Some(json!({"device_keys": {"<user>": []}})))],
        ("POST", "keys/claim") => vec![ex(
            &[],
            "",
            Some(json!({"one_time_keys": {"<user>": {"<device>": "signed_curve25519"}}})),
        )],
        ("POST", "user_directory/search") => {
            vec![ex(&[], "", Some(json!({"search_term": "a", "limit": 3})))]
        }
        ("PUT", "devices/{}") => vec![ex(&[], "", Some(json!({"display_name": "phone"})))],
        ("POST", "delete_devices") => vec![ex(&[], "", Some(json!({"devices": ["<device>"]})))],
        ("PUT", "pushrules/global/{}/{}") => vec![ex(
            &[Some("room"), Some("<room>")],
            "",
            Some(json!({"actions": ["notify"]})),
        )],
        ("PUT", "pushrules/global/{}/{}/enabled") => vec![ex(
            &[Some("override"), Some(".m.rule.master")],
            "",
            Some(json!({"enabled": false})),
        )],
        ("POST", "pushers/set") => vec![ex(
            &[],
            "",
            Some(
                json!({"pushkey": "k", "kind": "http", "app_id": "a", "app_display_name": "A", "device_display_name": "D", "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}}),
            ),
        )],
        ("POST", "rooms/{}/report/{}" | "rooms/{}/report" | "users/{}/report") => {
            vec![ex(&[], "", Some(json!({"reason": "bad", "score": -100})))]
        }
        ("POST", "rooms/{}/upgrade") => vec![ex(&[], "", Some(json!({"new_version": "11"})))],
        ("POST", "rooms/{}/forget") => vec![ex(&[], "", Some(json!({})))],
        ("POST", "register") => vec![ex(
            &[],
            "",
            Some(json!({"username": "u<n>", "password": "pw", "auth": {"type": "m.login.dummy"}})),
        )],
        ("POST", "login") => vec![ex(
            &[],
            "",
            Some(
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "<user>"}, "password": "correct horse battery staple"}),
            ),
        )],
        ("POST", "upload") | ("PUT", "upload/{}/{}") => {
            vec![ex(&[], "filename=a.txt", Some(json!({"not": "an image"})))]
        }
        ("GET", "thumbnail/{}/{}" | "media/thumbnail/{}/{}") => {
            vec![ex(&[], "width=32&height=32&method=crop", None)]
        }
        ("GET", "rooms/{}/timestamp_to_event") => vec![ex(&[], "ts=0&dir=f", None)],
        ("GET", "rooms/{}/hierarchy") => vec![ex(&[], "limit=2&max_depth=1", None)],
        (_, "room_keys/keys" | "room_keys/keys/{}" | "room_keys/keys/{}/{}") => vec![ex(
            &[],
            "version=1",
            (*method == Method::PUT).then(|| {
                json!({"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": {"ephemeral": "e", "ciphertext": "c", "mac": "m"}})
            }),
        )],
        ("GET", "events") => vec![ex(&[], "timeout=0&room_id=<room>", None)],
        ("PUT", "room_keys/version/{}") | ("POST", "room_keys/version") => vec![ex(
            &[],
            "",
            Some(
                json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "abcdefg"}}),
            ),
        )],
        _ => Vec::new(),
    };
    if list.is_empty() {
        let body = matches!(*method, Method::POST | Method::PUT).then(|| json!({}));
        vec![ex(&[], "", body)]
    } else {
        list
    }
}
