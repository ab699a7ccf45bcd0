//! The invariants checked after every step, and what a broken one reports.

use std::cell::RefCell;
use std::fmt;

use hearth_spec::{Operation, Spec, Violation};
use http::Method;

/// Which invariant a finding breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// A `5xx` answer.
    ServerError,
    /// A panic, even one the core caught (natively it turns into a `500`; in the browser it
    /// would take the server down).
    Panic,
    /// An answer that does not match the spec's schema for its endpoint and status.
    Schema,
    /// An event handed to a user whom the history visibility rule hides it from.
    Visibility,
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ServerError => "server error",
            Self::Panic => "panic",
            Self::Schema => "schema",
            Self::Visibility => "visibility",
        })
    }
}

/// One broken invariant, with the request and answer that broke it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub invariant: Invariant,
    /// Index of the step in the script.
    pub step: usize,
    /// `METHOD /template` of the route (`{}` for variables), or the path when no route matches.
    pub route: String,
    /// Who sent it, the request line and a prefix of the body.
    pub request: String,
    pub status: u16,
    /// A prefix of the answer's body.
    pub response: String,
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] step {}: {}\n  route: {}\n  request: {}\n  answer: {} {}",
            self.invariant,
            self.step,
            self.detail,
            self.route,
            self.request,
            self.status,
            self.response
        )
    }
}

/// Shortens text for a report, on a character boundary.
pub fn preview(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= max {
        return s.into_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], bytes.len())
}

/// A spec erratum: the schema is wrong, not the server. Such violations are not findings.
struct Erratum {
    endpoint: &'static str,
    status: u16,
    reason: &'static str,
}

const ERRATA: &[Erratum] = &[
    // rooms.yaml: `oneOf: [{type: object}, StateEvent]`. A correct `?format=event` answer is an
    // object and a state event, so it matches both and fails `oneOf`; the schema needs `anyOf`.
    // The same erratum core's spec_schemas test lists.
    Erratum {
        endpoint: "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        status: 200,
        reason: "is valid under more than one of the schemas listed in the 'oneOf' keyword",
    },
];

/// A `401` for a missing or unknown access token. Endpoints with user-interactive
/// authentication document their `401` as the UIA answer (`flows` required), but the token
/// check comes first and answers with the standard error, as the spec's section on access
/// tokens says: one status, two meanings, and the OpenAPI files can only list one.
fn is_token_error(body: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    matches!(
        v["errcode"].as_str(),
        Some("M_MISSING_TOKEN" | "M_UNKNOWN_TOKEN")
    ) && v["error"].is_string()
}

/// The path the spec lists a request under: `r0` is served as `v3`, and an unstable twin
/// (`/_matrix/client/unstable/org.matrix.msc3916/media/...`) as the stable endpoint it became.
fn spec_path(spec: &Spec, method: &Method, path: &str) -> String {
    if let Some(rest) = path.strip_prefix("/_matrix/client/r0/") {
        return format!("/_matrix/client/v3/{rest}");
    }
    if let Some(rest) = path.strip_prefix("/_matrix/media/r0/") {
        return format!("/_matrix/media/v3/{rest}");
    }
    if let Some(rest) = path.strip_prefix("/_matrix/client/unstable/") {
        let without_namespace = match rest.split_once('/') {
            Some((first, after)) if first.contains('.') => after,
            _ => rest,
        };
        for version in ["v3", "v1"] {
            let stable = format!("/_matrix/client/{version}/{without_namespace}");
            if !spec.find(method, &stable).is_empty() {
                return stable;
            }
        }
    }
    path.to_owned()
}

/// The spec's operations for a request path: the most specific templates that match it.
pub fn spec_ops<'s>(spec: &'s Spec, method: &Method, path: &str) -> Vec<&'s Operation> {
    spec.find(method, &spec_path(spec, method, path))
}

/// Checks an answer against the spec's `ops` for its endpoint. Requests the spec does not
/// describe (no `ops`: unstable endpoints), `HEAD` (no body) and answers without a JSON body
/// where the spec lists none are not checked.
pub fn schema(
    spec: &Spec,
    ops: &[&Operation],
    method: &Method,
    status: u16,
    body: &[u8],
) -> Option<String> {
    if *method == Method::HEAD || ops.is_empty() {
        return None;
    }
    if status == 401 && is_token_error(body) {
        return None;
    }
    let violations: Vec<Violation> = match spec.validate_ops(ops, status, body) {
        Ok(()) => return None,
        Err(v) => v,
    };
    let real: Vec<String> = violations
        .iter()
        .filter(|v| {
            !ERRATA.iter().any(|e| {
                e.endpoint == v.endpoint && e.status == v.status && v.reason.contains(e.reason)
            })
        })
        .map(|v| {
            let mut s = v.to_string();
            if s.len() > 400 {
                s = preview(s.as_bytes(), 400);
            }
            s
        })
        .collect();
    (!real.is_empty()).then(|| real.join("\n    "))
}

/// Whether the spec lists `status` for this request's endpoint: a `5xx` the spec documents
/// (`504 M_NOT_YET_UPLOADED` for media created but not yet uploaded) is an answer, not a
/// server error.
pub fn documented(ops: &[&Operation], status: u16) -> bool {
    let key = status.to_string();
    ops.iter().any(|op| op.responses.contains_key(&key))
}

/// Whether a `5xx` is the gateway answer for a peer that did not answer: `502` or `504` on a
/// step during which the server really tried another server (the spec's own media endpoints
/// answer so). Any other `5xx`, or one with no attempt behind it, is still a server error.
pub fn gateway(status: u16, asked_a_peer: bool) -> bool {
    asked_a_peer && matches!(status, 502 | 504)
}

thread_local! {
    static PANICKED: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Notes every panic on this thread, caught or not, before the previous hook runs (which under
/// libFuzzer aborts: a crash). Installed once.
pub fn install_panic_probe() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            PANICKED.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            previous(info);
        }));
    });
}

/// The panic noted since the last call, if any.
pub fn take_panic() -> Option<String> {
    PANICKED.with(|p| p.borrow_mut().take())
}
