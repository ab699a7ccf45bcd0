//! What a request body must be before an endpoint reads it.
//!
//! Every request body of the Client-Server API is a JSON object, media uploads aside (the spec's
//! OpenAPI gives each `requestBody` a `type: object` schema, and the uploads `bytes`). A body is
//! JSON only if all of it is: an invalid UTF-8 sequence or a lone surrogate escape makes it not
//! JSON even inside a field the endpoint ignores. And where the spec says object below the top
//! level, an array is no object either. ruma skips the fields it does not know without decoding
//! them, and serde reads a struct from an array as readily as from an object, so all three are
//! checked here, once, for every route, before the endpoint's own parsing.

use std::fmt;

use http::Method;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{MatrixError, Result};

mod objects;

/// What a route takes as its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON object, or nothing at all.
    JsonObject,
    /// Any bytes, handed over as they are (media uploads).
    Bytes,
}

/// The rule one route's bodies are held to.
#[derive(Debug, Clone, Copy)]
pub struct BodyRule {
    kind: BodyKind,
    /// Where the spec's schema has an object below the top level, as JSON pointers in which `*`
    /// stands for any key of a map or any element of an array.
    objects: &'static [&'static str],
}

impl BodyRule {
    /// The rule for the route `method path` (a template: `{name}` or `:name` for variables).
    pub fn new(kind: BodyKind, method: &Method, path: &str) -> Self {
        let template = spec_template(path);
        let objects = match kind {
            BodyKind::JsonObject => objects::OBJECTS
                .iter()
                .find(|(m, p, _)| *m == method.as_str() && *p == template)
                .map(|(_, _, o)| *o)
                .unwrap_or_default(),
            BodyKind::Bytes => &[],
        };
        Self { kind, objects }
    }

    /// Refuses a body that is not JSON (`M_NOT_JSON`), or is JSON but not an object, or holds
    /// something else where the spec says object (`M_BAD_JSON`). An empty body is left to the
    /// endpoint, which reads it as `{}` where every field is optional; `GET` and `HEAD` take no
    /// body, so theirs is not read.
    pub fn check(&self, method: &Method, body: &[u8]) -> Result<()> {
        if self.kind == BodyKind::Bytes
            || body.is_empty()
            || *method == Method::GET
            || *method == Method::HEAD
        {
            return Ok(());
        }
        match serde_json::from_slice::<Top>(body) {
            Ok(Top::Object) => {}
            Ok(Top::Other(what)) => {
                return Err(MatrixError::bad_json(format!(
                    "the request body must be a JSON object, not {what}"
                )));
            }
            Err(e) => {
                return Err(MatrixError::not_json(format!(
                    "the request body is not valid JSON: {e}"
                )));
            }
        }
        if self.objects.is_empty() {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            MatrixError::not_json(format!("the request body is not valid JSON: {e}"))
        })?;
        for pattern in self.objects {
            let segments: Vec<&str> = pattern.split('/').skip(1).collect();
            not_objects(&value, &segments, String::new())?;
        }
        Ok(())
    }
}

/// Refuses a value at `segments` below `v` (where `ptr` is) that is neither an object nor
/// `null`; a missing one is not this check's business.
fn not_objects(v: &Value, segments: &[&str], ptr: String) -> Result<()> {
    let Some((first, rest)) = segments.split_first() else {
        return match v {
            Value::Object(_) | Value::Null => Ok(()),
            _ => Err(MatrixError::bad_json(format!(
                "`{ptr}` in the request body must be a JSON object"
            ))),
        };
    };
    match (*first, v) {
        ("*", Value::Object(map)) => map
            .iter()
            .try_for_each(|(k, child)| not_objects(child, rest, format!("{ptr}/{}", escape(k)))),
        ("*", Value::Array(items)) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, child)| not_objects(child, rest, format!("{ptr}/{i}"))),
        (key, Value::Object(map)) => {
            let key = key.replace("~1", "/").replace("~0", "~");
            match map.get(&key) {
                Some(child) => not_objects(child, rest, format!("{ptr}/{}", escape(&key))),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A route's path as the spec's table names it: variables as `{}`, and the `r0` twins under
/// the `v3` path the spec lists.
fn spec_template(path: &str) -> String {
    let path = path
        .replacen("/_matrix/client/r0/", "/_matrix/client/v3/", 1)
        .replacen("/_matrix/media/r0/", "/_matrix/media/v3/", 1);
    path.split('/')
        .map(|s| {
            if s.starts_with('{') || s.starts_with(':') {
                "{}"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The shape of a whole document, every part of it decoded.
enum Top {
    Object,
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Decode).map(|shape| match shape {
            "an object" => Top::Object,
            other => Top::Other(other),
        })
    }
}

/// Any JSON value, decoded and dropped. Strings go through `deserialize_any`, where serde_json
/// validates their UTF-8 and escapes (its `IgnoredAny` skips them unchecked).
struct Any;

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Decode).map(|_| Any)
    }
}

/// Decodes one value and names its kind.
struct Decode;

impl<'de> Visitor<'de> for Decode {
    type Value = &'static str;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok("a boolean")
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok("a number")
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok("a number")
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok("a number")
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok("null")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Any>()?.is_some() {}
        Ok("an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_key::<Any>()?.is_some() {
            map.next_value::<Any>()?;
        }
        Ok("an object")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errcode(rule: BodyRule, body: &[u8]) -> Option<&'static str> {
        rule.check(&Method::POST, body).err().map(|e| e.errcode)
    }

    fn object() -> BodyRule {
        BodyRule::new(BodyKind::JsonObject, &Method::POST, "/not/in/the/spec")
    }

    #[test]
    fn only_whole_json_objects_pass() {
        assert_eq!(errcode(object(), b"{}"), None);
        assert_eq!(
            errcode(
                object(),
                b" {\"a\": [1, {\"b\": null}], \"c\": \"\\u00e9\"} "
            ),
            None
        );
        assert_eq!(errcode(object(), b""), None);
        for not_object in [&b"[]"[..], b"\"x\"", b"1", b"null", b"true"] {
            assert_eq!(errcode(object(), not_object), Some("M_BAD_JSON"));
        }
        for not_json in [
            &b"{\"ignored\": \"\xff\"}"[..],
            b"{\"\xc3\": 1}",
            b"{\"a\": [\"\xed\xa0\x80\"]}",
            b"{\"a\": \"\\ud800\"}",
            b"{\"a\": 1} x",
            b"{",
        ] {
            assert_eq!(
                errcode(object(), not_json),
                Some("M_NOT_JSON"),
                "{not_json:?}"
            );
        }
    }

    #[test]
    fn nested_objects_of_the_spec_must_be_objects() {
        let rule = BodyRule {
            kind: BodyKind::JsonObject,
            objects: &["/a", "/m/*", "/m/*/b~1c"],
        };
        assert_eq!(errcode(rule, b"{}"), None);
        assert_eq!(
            errcode(rule, b"{\"a\": {}, \"m\": {\"x\": {\"b/c\": null}}}"),
            None
        );
        assert_eq!(errcode(rule, b"{\"a\": []}"), Some("M_BAD_JSON"));
        assert_eq!(errcode(rule, b"{\"m\": {\"x\": [1]}}"), Some("M_BAD_JSON"));
        assert_eq!(
            errcode(rule, b"{\"m\": [{\"b/c\": 2}]}"),
            Some("M_BAD_JSON")
        );
    }

    #[test]
    fn twins_and_variables_find_the_spec_entry() {
        assert_eq!(
            spec_template("/_matrix/client/r0/rooms/{room_id}/send/:event_type/{txn_id}"),
            "/_matrix/client/v3/rooms/{}/send/{}/{}"
        );
    }

    #[test]
    fn uploads_and_reads_are_not_checked() {
        let upload = BodyRule::new(BodyKind::Bytes, &Method::POST, "/_matrix/media/v3/upload");
        assert!(upload.check(&Method::POST, b"\xff\xfe").is_ok());
        assert!(object().check(&Method::GET, b"\xff").is_ok());
    }
}
