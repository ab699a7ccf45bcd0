//! User-interactive authentication (spec: "User-Interactive Authentication API").
//!
//! An operation names the flows it accepts; [`authenticate`] checks a request's `auth` object
//! against them. Either every stage of some flow is complete and the operation goes ahead, or
//! the client gets `401` with `flows`, `params`, `session` and `completed` (plus `errcode` and
//! `error` when the stage it just tried failed). Sessions live in the `uia_sessions` tree, so
//! a server that the browser restarts between two stages still knows them.

use std::rc::Rc;

use http::{Request, Response, StatusCode};
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponseExt};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::db::users;
use crate::error::{MatrixError, Result};
use crate::router::{self, Router, auth_of, json_response, request_error};
use crate::storage::{Batch, Direction, KeyRange, StorageError};
use crate::world::LocalBoxFuture;
use crate::{Ctx, Homeserver};

const TREE: &str = "uia_sessions";

/// How long a client has to complete the stages of one operation.
pub const SESSION_LIFETIME_MS: u64 = 60 * 60 * 1000;

/// Why an operation guarded by UIA did not run.
#[derive(Debug)]
pub enum UiaError {
    /// `401`: more stages are needed. `failure` is set when the stage just tried failed.
    Incomplete {
        info: Box<UiaaInfo>,
        failure: Option<MatrixError>,
    },
    /// Any other error, answered as usual.
    Matrix(MatrixError),
}

impl From<MatrixError> for UiaError {
    fn from(e: MatrixError) -> Self {
        Self::Matrix(e)
    }
}

impl From<StorageError> for UiaError {
    fn from(e: StorageError) -> Self {
        Self::Matrix(e.into())
    }
}

impl From<serde_json::Error> for UiaError {
    fn from(e: serde_json::Error) -> Self {
        Self::Matrix(e.into())
    }
}

impl UiaError {
    pub fn into_response(self) -> Response<Vec<u8>> {
        match self {
            Self::Matrix(e) => e.into_response(),
            Self::Incomplete { info, failure } => {
                let mut body = match serde_json::to_value(&*info) {
                    Ok(v) => v,
                    Err(e) => return MatrixError::from(e).into_response(),
                };
                if let (Some(f), Some(map)) = (failure, body.as_object_mut()) {
                    map.insert("errcode".into(), Value::String(f.errcode.to_owned()));
                    map.insert("error".into(), Value::String(f.error));
                }
                json_response(StatusCode::UNAUTHORIZED, &body)
            }
        }
    }
}

/// What an operation asks the client to prove.
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    /// The operation a session is bound to, so stages completed for one request cannot
    /// authorise a different one.
    pub name: &'static str,
    /// The account the stages must prove control of; `None` for registration.
    pub user: Option<&'a UserId>,
    /// Each flow is a list of stages; completing every stage of one flow is enough.
    pub flows: Vec<Vec<AuthType>>,
}

impl<'a> Operation<'a> {
    /// Registration needs no secret: one `m.login.dummy` stage.
    pub fn registration() -> Self {
        Self {
            name: "register",
            user: None,
            flows: vec![vec![AuthType::Dummy]],
        }
    }

    /// A sensitive change to `user`'s account: the user re-enters their password. An account
    /// registered without a password has no secret to re-enter (its access token is its only
    /// credential), so it confirms with `m.login.dummy` instead of being locked out.
    pub async fn sensitive(hs: &Homeserver, name: &'static str, user: &'a UserId) -> Result<Self> {
        let has_password = users::get_user(hs, user)
            .await?
            .is_some_and(|u| u.password_hash.is_some());
        let stage = if has_password {
            AuthType::Password
        } else {
            AuthType::Dummy
        };
        Ok(Self {
            name,
            user: Some(user),
            flows: vec![vec![stage]],
        })
    }

    fn offers(&self, stage: &AuthType) -> bool {
        self.flows.iter().flatten().any(|s| s == stage)
    }
}

/// Proof that the client completed a flow. The operation deletes the session in its own
/// batch, so a completed session cannot authorise a second request.
#[must_use = "consume the session in the operation's batch"]
#[derive(Debug)]
pub struct Completed {
    session: String,
}

impl Completed {
    pub fn consume(self, batch: &mut Batch) {
        batch.delete(TREE, self.session.into_bytes());
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UiaSession {
    operation: String,
    user_id: Option<OwnedUserId>,
    completed: Vec<String>,
    created_ts: u64,
}

impl UiaSession {
    fn new(op: &Operation<'_>, now: u64) -> Self {
        Self {
            operation: op.name.to_owned(),
            user_id: op.user.map(ToOwned::to_owned),
            completed: Vec::new(),
            created_ts: now,
        }
    }

    fn expired(&self, now: u64) -> bool {
        now >= self.created_ts.saturating_add(SESSION_LIFETIME_MS)
    }
}

/// Runs the UIA check of `op` for a request carrying `auth`.
pub async fn authenticate(
    hs: &Homeserver,
    op: &Operation<'_>,
    auth: Option<&AuthData>,
) -> Result<Completed, UiaError> {
    let now = hs.now_ms();
    let Some(auth) = auth else {
        let id = hs.random_string(24);
        let session = UiaSession::new(op, now);
        save(hs, &id, &session).await?;
        return Err(incomplete(op, &id, &session, None));
    };
    let (id, mut session) = match auth.session() {
        Some(id) => {
            let session = load(hs, id, now).await?.ok_or_else(|| {
                MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    "M_UNKNOWN",
                    "unknown or expired authentication session",
                )
            })?;
            if session.operation != op.name || session.user_id.as_deref() != op.user {
                return Err(MatrixError::forbidden(
                    "this authentication session belongs to another operation",
                )
                .into());
            }
            (id.to_owned(), session)
        }
        None => (hs.random_string(24), UiaSession::new(op, now)),
    };
    match run_stage(hs, op, auth).await? {
        Ok(Some(stage)) => {
            if !session.completed.iter().any(|s| s == stage.as_str()) {
                session.completed.push(stage.as_str().to_owned());
            }
        }
        Ok(None) => {}
        Err(failure) => {
            save(hs, &id, &session).await?;
            return Err(incomplete(op, &id, &session, Some(failure)));
        }
    }
    let done = op.flows.iter().any(|flow| {
        flow.iter()
            .all(|stage| session.completed.iter().any(|c| c == stage.as_str()))
    });
    if done {
        return Ok(Completed { session: id });
    }
    save(hs, &id, &session).await?;
    Err(incomplete(op, &id, &session, None))
}

/// Checks one stage. The outer error is a server failure; the inner one a failed stage, which
/// the client may retry within the same session.
async fn run_stage(
    hs: &Homeserver,
    op: &Operation<'_>,
    auth: &AuthData,
) -> Result<Result<Option<AuthType>, MatrixError>> {
    // A body with only `session` asks whether out-of-band stages are done: nothing to check.
    let Some(stage) = auth.auth_type() else {
        return Ok(Ok(None));
    };
    if !op.offers(&stage) {
        return Ok(Err(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNRECOGNIZED",
            format!(
                "the stage {} is not offered for this operation",
                stage.as_str()
            ),
        )));
    }
    match auth {
        AuthData::Dummy(_) => Ok(Ok(Some(stage))),
        AuthData::Password(p) => {
            let Some(expected) = op.user else {
                return Ok(Err(MatrixError::forbidden(
                    "no account to check the password of",
                )));
            };
            let named = match &p.identifier {
                UserIdentifier::Matrix(m) => users::local_user_id(hs, &m.user),
                _ => None,
            };
            if named.as_deref() != Some(expected) {
                return Ok(Err(MatrixError::forbidden(
                    "the identifier does not name the logged-in user",
                )));
            }
            let hash = users::get_user(hs, expected)
                .await?
                .and_then(|u| u.password_hash);
            let valid = hash.is_some_and(|h| users::verify_password(hs, &h, &p.password));
            Ok(if valid {
                Ok(Some(stage))
            } else {
                Err(MatrixError::forbidden("Invalid password"))
            })
        }
        _ => Ok(Err(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNRECOGNIZED",
            format!(
                "the stage {} is not supported by this server",
                stage.as_str()
            ),
        ))),
    }
}

fn incomplete(
    op: &Operation<'_>,
    id: &str,
    session: &UiaSession,
    failure: Option<MatrixError>,
) -> UiaError {
    let flows = op.flows.iter().map(|f| AuthFlow::new(f.clone())).collect();
    let mut info = UiaaInfo::new(flows);
    info.completed = session
        .completed
        .iter()
        .map(|s| AuthType::from(s.as_str()))
        .collect();
    // No stage we offer takes parameters, but clients expect the object.
    info.params = serde_json::value::to_raw_value(&json!({})).ok();
    info.session = Some(id.to_owned());
    UiaError::Incomplete {
        info: Box::new(info),
        failure,
    }
}

async fn load(hs: &Homeserver, id: &str, now: u64) -> Result<Option<UiaSession>> {
    Ok(hs
        .get_json::<UiaSession>(TREE, id.as_bytes())
        .await?
        .filter(|s| !s.expired(now)))
}

/// Stores a session and drops the expired ones, so abandoned sessions do not pile up.
async fn save(hs: &Homeserver, id: &str, session: &UiaSession) -> Result<()> {
    let now = hs.now_ms();
    let mut batch = Batch::new();
    for (k, v) in hs
        .store
        .scan(TREE, KeyRange::all(), Direction::Forward, usize::MAX)
        .await?
    {
        let stale = serde_json::from_slice::<UiaSession>(&v)
            .map(|s| s.expired(now))
            .unwrap_or(true);
        if stale {
            batch.delete(TREE, k);
        }
    }
    batch.put(TREE, id.as_bytes(), crate::db::to_json(session)?);
    hs.store.write(batch).await?;
    Ok(())
}

/// A handler of an endpoint that uses UIA.
pub type UiaHandler<R> = Rc<
    dyn Fn(
        Homeserver,
        Ctx,
        R,
    )
        -> LocalBoxFuture<'static, Result<<R as IncomingRequest>::OutgoingResponse, UiaError>>,
>;

/// Registers an endpoint that uses UIA. Like [`Router::add`], except that the handler may
/// answer [`UiaError::Incomplete`], whose body is the spec's UIA object rather than an error
/// body (clients show an `errcode` in a first 401 as a failure).
pub fn add_route<R: IncomingRequest + 'static>(r: &mut Router, f: UiaHandler<R>) {
    let handler = handler(f);
    for path in R::PATH_BUILDER.all_paths() {
        r.add_raw(R::METHOD, path, handler.clone());
    }
}

/// The type-erased handler behind [`add_route`]: authenticates, parses `R`, runs `f`,
/// serialises. For endpoints that need to wrap it further.
pub fn handler<R: IncomingRequest + 'static>(f: UiaHandler<R>) -> router::Handler {
    let auth = auth_of::<R>();
    Rc::new(
        move |hs: Homeserver, req: Request<Vec<u8>>, args: Vec<String>| {
            let f = f.clone();
            Box::pin(async move {
                let ctx = match hs.authenticate(&req, auth).await {
                    Ok(ctx) => ctx,
                    Err(e) => return e.into_response(),
                };
                let parsed = {
                    let (parts, body) = req.into_parts();
                    let borrowed = Request::from_parts(parts, body.as_slice());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    R::try_from_http_request(borrowed, &args).map_err(|e| request_error(e, &body))
                };
                let parsed = match parsed {
                    Ok(p) => p,
                    Err(e) => return e.into_response(),
                };
                match f(hs, ctx, parsed).await {
                    Ok(resp) => resp
                        .try_into_http_response::<Vec<u8>>()
                        .unwrap_or_else(|e| {
                            MatrixError::unknown(format!("response serialization failed: {e}"))
                                .into_response()
                        }),
                    Err(e) => e.into_response(),
                }
            })
        },
    )
}

/// Registers a UIA endpoint: `uia_route!(router, Request, handler)`, where the handler is
/// `async fn(&Homeserver, Ctx, Request) -> Result<Response, UiaError>`.
#[macro_export]
macro_rules! uia_route {
    ($router:expr, $req:ty, $handler:path) => {
        $crate::client::uia::add_route::<$req>(
            $router,
            ::std::rc::Rc::new(|hs: $crate::Homeserver, ctx: $crate::Ctx, req: $req| {
                Box::pin(async move { $handler(&hs, ctx, req).await })
            }),
        )
    };
}
