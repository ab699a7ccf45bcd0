//! Path routing. Routes are registered from ruma's endpoint metadata, so paths, methods and
//! authentication schemes come from the same definitions the request types parse with.

use std::any::TypeId;
use std::collections::HashMap;
use std::rc::Rc;

use http::{Method, Request, Response, StatusCode};
use ruma::api::auth_scheme::{AccessToken, AccessTokenOptional};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::federation::authentication::ServerSignatures;
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponseExt};

use crate::error::{MatrixError, Result};
pub use crate::request_body::{BodyKind, BodyRule};
use crate::world::LocalBoxFuture;
use crate::{Ctx, Homeserver};

/// A typed endpoint handler, before type erasure.
pub type TypedHandler<R, T> = Rc<dyn Fn(Homeserver, Ctx, R) -> LocalBoxFuture<'static, Result<T>>>;

/// A type-erased endpoint: parses, authenticates, runs the handler, serialises.
pub type Handler = Rc<
    dyn Fn(Homeserver, Request<Vec<u8>>, Vec<String>) -> LocalBoxFuture<'static, Response<Vec<u8>>>,
>;

/// The authentication an endpoint asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// An access token.
    Required,
    /// An access token if the client has one.
    Optional,
    None,
    /// A federation request: the X-Matrix signature of the origin server.
    Server,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Var,
}

struct Route {
    method: Method,
    segs: Vec<Seg>,
    handler: Handler,
    body: BodyRule,
}

#[derive(Default)]
pub struct Router {
    /// Routes grouped by segment count, so a lookup only compares paths of the same length.
    by_len: HashMap<usize, Vec<Route>>,
}

pub enum Lookup<'a> {
    /// The handler, the path's arguments, and the rule for the route's body.
    Found(&'a Handler, Vec<String>, BodyRule),
    WrongMethod,
    NotFound,
}

fn parse_template(path: &str) -> Vec<Seg> {
    path.trim_start_matches('/')
        .split('/')
        .map(|s| {
            if s.starts_with('{') || s.starts_with(':') {
                Seg::Var
            } else {
                Seg::Lit(s.to_owned())
            }
        })
        .collect()
}

/// Every path under which an endpoint is served: its own, plus the `r0`/`v3` twin, since old
/// clients (Hydrogen) still use `r0` for endpoints that only `v3` lists.
fn with_twins(path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    for (a, b) in [
        ("/_matrix/client/v3/", "/_matrix/client/r0/"),
        ("/_matrix/client/r0/", "/_matrix/client/v3/"),
    ] {
        if let Some(rest) = path.strip_prefix(a) {
            out.push(format!("{b}{rest}"));
        }
    }
    if let Some(rest) = path.strip_prefix("/_matrix/media/r0/") {
        out.push(format!("/_matrix/media/v3/{rest}"));
    }
    out
}

impl Router {
    /// Registers a handler for an endpoint whose body is a JSON object (or nothing).
    pub fn add_raw(&mut self, method: Method, path: &str, handler: Handler) {
        self.add_raw_with(method, path, BodyKind::JsonObject, handler);
    }

    /// Registers a handler for an endpoint that takes `body`.
    pub fn add_raw_with(&mut self, method: Method, path: &str, body: BodyKind, handler: Handler) {
        for p in with_twins(path) {
            let segs = parse_template(&p);
            let routes = self.by_len.entry(segs.len()).or_default();
            if routes.iter().any(|r| r.method == method && r.segs == segs) {
                continue;
            }
            routes.push(Route {
                body: BodyRule::new(body, &method, &p),
                method: method.clone(),
                segs,
                handler: handler.clone(),
            });
        }
    }

    /// Registers a ruma endpoint under every path its metadata lists.
    pub fn add<R>(&mut self, f: TypedHandler<R, R::OutgoingResponse>)
    where
        R: IncomingRequest + 'static,
    {
        self.add_mapped::<R, R::OutgoingResponse>(f, |resp| {
            match resp.try_into_http_response::<Vec<u8>>() {
                Ok(r) => r,
                Err(e) => MatrixError::unknown(format!("response serialization failed: {e}"))
                    .into_response(),
            }
        });
    }

    /// Registers a ruma endpoint whose answer is built as JSON by hand, for responses ruma's
    /// types would shape against the spec (e.g. `null` where the spec wants a field absent).
    pub fn add_json<R>(&mut self, f: TypedHandler<R, serde_json::Value>)
    where
        R: IncomingRequest + 'static,
    {
        self.add_mapped::<R, serde_json::Value>(f, |v| json_response(StatusCode::OK, &v));
    }

    fn add_mapped<R, T>(&mut self, f: TypedHandler<R, T>, respond: fn(T) -> Response<Vec<u8>>)
    where
        R: IncomingRequest + 'static,
        T: 'static,
    {
        let auth = auth_of::<R>();
        let handler: Handler = Rc::new(
            move |hs: Homeserver, req: Request<Vec<u8>>, args: Vec<String>| {
                let f = f.clone();
                Box::pin(async move {
                    let ctx = match hs.authenticate(&req, auth).await {
                        Ok(ctx) => ctx,
                        Err(e) => return e.into_response(),
                    };
                    let parsed = {
                        let (parts, body) = req.into_parts();
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let borrowed = Request::from_parts(parts.clone(), body.as_slice());
                        match R::try_from_http_request(borrowed, &args) {
                            // Clients (matrix-nio's join) send no body where every field is
                            // optional: read an absent body as `{}` before refusing it.
                            Err(_) if body.is_empty() => {
                                let empty = Request::from_parts(parts, &b"{}"[..]);
                                R::try_from_http_request(empty, &args)
                                    .map_err(|e| request_error(e, &body))
                            }
                            other => other.map_err(|e| request_error(e, &body)),
                        }
                    };
                    let parsed = match parsed {
                        Ok(p) => p,
                        Err(e) => return e.into_response(),
                    };
                    match f(hs, ctx, parsed).await {
                        Ok(resp) => respond(resp),
                        Err(e) => e.into_response(),
                    }
                })
            },
        );
        for path in R::PATH_BUILDER.all_paths() {
            self.add_raw(R::METHOD, path, handler.clone());
        }
    }

    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        match self.lookup_exact(method, path) {
            // `/state/{eventType}` may omit an empty state key entirely.
            Lookup::NotFound if !path.ends_with('/') => {
                self.lookup_exact(method, &format!("{path}/"))
            }
            found => found,
        }
    }

    fn lookup_exact(&self, method: &Method, path: &str) -> Lookup<'_> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let last = segs.len().saturating_sub(1);
        let Some(routes) = self.by_len.get(&segs.len()) else {
            return Lookup::NotFound;
        };
        let mut wrong_method = false;
        for route in routes {
            // Only a final variable may be empty (an empty state key).
            let matches = route
                .segs
                .iter()
                .zip(&segs)
                .enumerate()
                .all(|(i, (t, s))| match t {
                    Seg::Lit(l) => l == s,
                    Seg::Var => !s.is_empty() || i == last,
                });
            if !matches {
                continue;
            }
            let method_ok =
                route.method == *method || (route.method == Method::GET && method == Method::HEAD);
            if !method_ok {
                wrong_method = true;
                continue;
            }
            let args = route
                .segs
                .iter()
                .zip(&segs)
                .filter(|(t, _)| **t == Seg::Var)
                .map(|(_, s)| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect();
            return Lookup::Found(&route.handler, args, route.body);
        }
        if wrong_method {
            Lookup::WrongMethod
        } else {
            Lookup::NotFound
        }
    }

    /// Every registered (method, path template), for coverage checks.
    pub fn routes(&self) -> Vec<(Method, String)> {
        let mut out: Vec<(Method, String)> = self
            .by_len
            .values()
            .flatten()
            .map(|r| {
                let path = r
                    .segs
                    .iter()
                    .map(|s| match s {
                        Seg::Lit(l) => l.as_str(),
                        Seg::Var => "{}",
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                (r.method.clone(), format!("/{path}"))
            })
            .collect();
        out.sort_by(|a, b| (a.1.as_str(), a.0.as_str()).cmp(&(b.1.as_str(), b.0.as_str())));
        out
    }
}

pub fn auth_of<R: IncomingRequest + 'static>() -> Auth {
    let t = TypeId::of::<R::Authentication>();
    if t == TypeId::of::<AccessToken>() {
        Auth::Required
    } else if t == TypeId::of::<AccessTokenOptional>() {
        Auth::Optional
    } else if t == TypeId::of::<ServerSignatures>() {
        Auth::Server
    } else {
        Auth::None
    }
}

/// Maps a request that ruma could not parse to the spec's error: `M_NOT_JSON` when the body is
/// not JSON at all, `M_BAD_JSON` when it is JSON of the wrong shape, `M_INVALID_PARAM` for bad
/// query strings and identifiers.
pub fn request_error(e: FromHttpRequestError, body: &[u8]) -> MatrixError {
    match e {
        FromHttpRequestError::MethodMismatch { .. } => MatrixError::method_not_allowed(),
        FromHttpRequestError::Deserialization(d) => match d {
            DeserializationError::Json(j) => {
                if !body.is_empty() && serde_json::from_slice::<serde_json::Value>(body).is_err() {
                    MatrixError::not_json(format!("request body is not valid JSON: {j}"))
                } else if body.is_empty() {
                    MatrixError::not_json("request body is missing; a JSON object is required")
                } else {
                    MatrixError::bad_json(format!("request body has the wrong shape: {j}"))
                }
            }
            DeserializationError::Utf8(e) => {
                MatrixError::not_json(format!("body is not UTF-8: {e}"))
            }
            DeserializationError::Query(q) => {
                MatrixError::invalid_param(format!("invalid query string: {q}"))
            }
            DeserializationError::Ident(i) => {
                MatrixError::invalid_param(format!("invalid identifier: {i}"))
            }
            other => MatrixError::bad_json(format!("invalid request: {other}")),
        },
        #[allow(unreachable_patterns)]
        other => MatrixError::bad_json(format!("invalid request: {other}")),
    }
}

/// A plain JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(value).unwrap_or_default())
        .unwrap_or_default()
}
