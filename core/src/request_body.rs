//! What a request body must be before an endpoint reads it.
//!
//! Every request body of the Client-Server API is a JSON object, media uploads aside (the spec's
//! OpenAPI gives each `requestBody` a `type: object` schema, and the uploads `bytes`). A body is
//! JSON only if all of it is: an invalid UTF-8 sequence or a lone surrogate escape makes it not
//! JSON even inside a field the endpoint ignores. ruma skips the fields it does not know without
//! decoding them (and serde reads a struct from an array too), so both are checked here, once,
//! for every route, before the endpoint's own parsing.

use std::fmt;

use http::Method;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{MatrixError, Result};

/// What a route takes as its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// A JSON object, or nothing at all.
    JsonObject,
    /// Any bytes, handed over as they are (media uploads).
    Bytes,
}

/// Refuses a body that is not JSON (`M_NOT_JSON`) or is JSON but not an object (`M_BAD_JSON`).
/// An empty body is left to the endpoint, which reads it as `{}` where every field is optional;
/// `GET` and `HEAD` take no body, so theirs is not read.
pub fn check(method: &Method, kind: BodyKind, body: &[u8]) -> Result<()> {
    if kind == BodyKind::Bytes
        || body.is_empty()
        || *method == Method::GET
        || *method == Method::HEAD
    {
        return Ok(());
    }
    match serde_json::from_slice::<Top>(body) {
        Ok(Top::Object) => Ok(()),
        Ok(Top::Other(what)) => Err(MatrixError::bad_json(format!(
            "the request body must be a JSON object, not {what}"
        ))),
        Err(e) => Err(MatrixError::not_json(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
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

    fn errcode(body: &[u8]) -> Option<&'static str> {
        check(&Method::POST, BodyKind::JsonObject, body)
            .err()
            .map(|e| e.errcode)
    }

    #[test]
    fn only_whole_json_objects_pass() {
        assert_eq!(errcode(b"{}"), None);
        assert_eq!(
            errcode(b" {\"a\": [1, {\"b\": null}], \"c\": \"\\u00e9\"} "),
            None
        );
        assert_eq!(errcode(b""), None);
        for not_object in [&b"[]"[..], b"\"x\"", b"1", b"null", b"true"] {
            assert_eq!(errcode(not_object), Some("M_BAD_JSON"));
        }
        for not_json in [
            &b"{\"ignored\": \"\xff\"}"[..],
            b"{\"\xc3\": 1}",
            b"{\"a\": [\"\xed\xa0\x80\"]}",
            b"{\"a\": \"\\ud800\"}",
            b"{\"a\": 1} x",
            b"{",
        ] {
            assert_eq!(errcode(not_json), Some("M_NOT_JSON"), "{not_json:?}");
        }
    }

    #[test]
    fn uploads_and_reads_are_not_checked() {
        assert!(check(&Method::POST, BodyKind::Bytes, b"\xff\xfe").is_ok());
        assert!(check(&Method::GET, BodyKind::JsonObject, b"\xff").is_ok());
    }
}
