//! The identifiers a run has seen so far, gathered from every response, so that later steps can
//! name real rooms, events, users and tokens.

use serde_json::Value;

use crate::input::{IdKind, Length, Pick};

/// How many identifiers of one kind are kept; later ones are dropped.
const CAP: usize = 48;

#[derive(Debug, Default, Clone)]
pub struct Pool {
    pub rooms: Vec<String>,
    /// Event ids with the room they were seen in, when known.
    pub events: Vec<(String, Option<String>)>,
    pub users: Vec<String>,
    pub aliases: Vec<String>,
    pub devices: Vec<String>,
    /// Sync and pagination tokens.
    pub tokens: Vec<String>,
    /// `server/media_id` of uploaded media.
    pub media: Vec<String>,
    pub filters: Vec<String>,
    pub server_name: String,
}

fn push(list: &mut Vec<String>, s: &str) {
    if list.len() < CAP && !list.iter().any(|x| x == s) {
        list.push(s.to_owned());
    }
}

fn pick<T>(list: &[T], p: Pick) -> Option<&T> {
    if list.is_empty() {
        None
    } else {
        list.get(usize::from(p.0) % list.len())
    }
}

impl Pool {
    pub fn room(&self, p: Pick) -> Option<&str> {
        pick(&self.rooms, p).map(String::as_str)
    }

    pub fn event(&self, p: Pick) -> Option<(&str, Option<&str>)> {
        pick(&self.events, p).map(|(e, r)| (e.as_str(), r.as_deref()))
    }

    pub fn user(&self, p: Pick) -> Option<&str> {
        pick(&self.users, p).map(String::as_str)
    }

    pub fn token(&self, p: Pick) -> Option<&str> {
        pick(&self.tokens, p).map(String::as_str)
    }

    pub fn media(&self, p: Pick) -> Option<&str> {
        pick(&self.media, p).map(String::as_str)
    }

    pub fn filter(&self, p: Pick) -> Option<&str> {
        pick(&self.filters, p).map(String::as_str)
    }

    /// An identifier of `kind`, or a well-formed stand-in when none was seen yet.
    pub fn id(&self, kind: IdKind, p: Pick) -> String {
        let server = &self.server_name;
        let found = match kind {
            IdKind::Room => self.room(p).map(str::to_owned),
            IdKind::Event => self.event(p).map(|(e, _)| e.to_owned()),
            IdKind::User => self.user(p).map(str::to_owned),
            IdKind::Alias => pick(&self.aliases, p).cloned(),
            IdKind::Device => pick(&self.devices, p).cloned(),
            IdKind::Type => Some(
                [
                    "m.room.message",
                    "m.room.name",
                    "m.room.member",
                    "m.room.history_visibility",
                    "m.reaction",
                    "org.example.custom",
                ][usize::from(p.0) % 6]
                    .to_owned(),
            ),
        };
        found.unwrap_or_else(|| match kind {
            IdKind::Room => format!("!nowhere:{server}"),
            IdKind::Event => "$nothing".to_owned(),
            IdKind::User => format!("@nobody:{server}"),
            IdKind::Alias => format!("#nowhere:{server}"),
            IdKind::Device => "NODEVICE".to_owned(),
            IdKind::Type => "m.room.message".to_owned(),
        })
    }

    /// An identifier of `kind` exactly `len` bytes long, made of valid characters: at the
    /// spec's limit (255) or past it.
    pub fn long_id(&self, kind: IdKind, len: Length) -> String {
        let n = len.bytes();
        let server = &self.server_name;
        let (sigil, suffix) = match kind {
            IdKind::Room => ("!", format!(":{server}")),
            IdKind::User => ("@", format!(":{server}")),
            IdKind::Alias => ("#", format!(":{server}")),
            IdKind::Event => ("$", String::new()),
            IdKind::Device | IdKind::Type => ("", String::new()),
        };
        let fill = n.saturating_sub(sigil.len() + suffix.len()).max(1);
        format!("{sigil}{}{suffix}", "a".repeat(fill))
    }

    /// Gathers identifiers from a response body. `room` is the room the request was about, for
    /// events whose room the body does not say (a send's `{"event_id"}`).
    pub fn collect(&mut self, body: &Value, room: Option<&str>) {
        self.walk(body, room, 0);
    }

    fn walk(&mut self, v: &Value, room: Option<&str>, depth: usize) {
        if depth > 12 {
            return;
        }
        match v {
            Value::Object(map) => {
                let here = map.get("room_id").and_then(Value::as_str).or(room);
                for (k, v) in map {
                    let mut child_room = here;
                    if k.starts_with('!') && ruma::RoomId::parse(k.as_str()).is_ok() {
                        push(&mut self.rooms, k);
                        child_room = Some(k.as_str());
                    } else if k.starts_with('@') && ruma::UserId::parse(k.as_str()).is_ok() {
                        push(&mut self.users, k);
                    }
                    if let Value::String(s) = v {
                        match k.as_str() {
                            "device_id" => push(&mut self.devices, s),
                            "next_batch" | "prev_batch" | "start" | "end" | "next_token"
                            | "prev_token" | "from" | "to" => push(&mut self.tokens, s),
                            "content_uri" => {
                                if let Some(m) = s.strip_prefix("mxc://") {
                                    push(&mut self.media, m);
                                }
                            }
                            "event_id" => self.event_seen(s, here),
                            "filter_id" => push(&mut self.filters, s),
                            _ => {}
                        }
                    }
                    self.walk(v, child_room, depth + 1);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, room, depth + 1);
                }
            }
            Value::String(s) => self.string_seen(s, room),
            _ => {}
        }
    }

    fn event_seen(&mut self, id: &str, room: Option<&str>) {
        if ruma::EventId::parse(id).is_err() {
            return;
        }
        if let Some(entry) = self.events.iter_mut().find(|(e, _)| e == id) {
            if entry.1.is_none() {
                entry.1 = room.map(str::to_owned);
            }
        } else if self.events.len() < CAP {
            self.events.push((id.to_owned(), room.map(str::to_owned)));
        }
    }

    fn string_seen(&mut self, s: &str, room: Option<&str>) {
        match s.as_bytes().first() {
            Some(b'!') if ruma::RoomId::parse(s).is_ok() => push(&mut self.rooms, s),
            Some(b'@') if ruma::UserId::parse(s).is_ok() => push(&mut self.users, s),
            Some(b'#') if ruma::RoomAliasId::parse(s).is_ok() => push(&mut self.aliases, s),
            Some(b'$') => self.event_seen(s, room),
            _ => {}
        }
    }
}
