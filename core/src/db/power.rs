//! Reading `m.room.power_levels` content, with the spec's defaults for missing fields.

use ruma::UserId;
use serde_json::Value;

/// Power levels of a room. Built from the content of its `m.room.power_levels` event (or the
/// defaults the spec gives when there is none: the creator has 100, everyone else 0).
#[derive(Debug, Clone)]
pub struct PowerLevels {
    content: Value,
    /// When the room has no power levels event, the creator is the only one with power.
    creator: Option<String>,
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        // Room versions before 10 allowed string-encoded integers.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl PowerLevels {
    pub fn new(content: Option<&Value>, creator: Option<&UserId>) -> Self {
        match content {
            Some(c) => Self {
                content: c.clone(),
                creator: None,
            },
            None => Self {
                content: Value::Object(Default::default()),
                creator: creator.map(|c| c.to_string()),
            },
        }
    }

    fn field(&self, name: &str, default: i64) -> i64 {
        int(self.content.get(name)).unwrap_or(default)
    }

    pub fn user(&self, user: &UserId) -> i64 {
        if let Some(c) = &self.creator {
            return if c == user.as_str() { 100 } else { 0 };
        }
        int(self.content.get("users").and_then(|u| u.get(user.as_str())))
            .unwrap_or_else(|| self.field("users_default", 0))
    }

    /// The level needed to send an event of `event_type`.
    pub fn event(&self, event_type: &str, is_state: bool) -> i64 {
        if let Some(l) = int(self.content.get("events").and_then(|e| e.get(event_type))) {
            return l;
        }
        if is_state {
            self.field("state_default", if self.creator.is_some() { 0 } else { 50 })
        } else {
            self.field("events_default", 0)
        }
    }

    pub fn invite(&self) -> i64 {
        self.field("invite", 0)
    }
    pub fn kick(&self) -> i64 {
        self.field("kick", 50)
    }
    pub fn ban(&self) -> i64 {
        self.field("ban", 50)
    }
    pub fn redact(&self) -> i64 {
        self.field("redact", 50)
    }
    pub fn notification(&self, key: &str) -> i64 {
        int(self.content.get("notifications").and_then(|n| n.get(key))).unwrap_or(50)
    }
    pub fn users_default(&self) -> i64 {
        self.field("users_default", 0)
    }
    pub fn content(&self) -> &Value {
        &self.content
    }
}
