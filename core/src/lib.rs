//! hearth-core: a Matrix homeserver engine with no I/O of its own.
//!
//! One way in: [`Homeserver::handle`] takes an HTTP-shaped request and returns a response.
//! Storage ([`storage::Storage`]) and the world (clock, randomness, timers: [`world::World`])
//! are injected, so the same code runs natively, in tests and in the browser.

pub mod client;
pub mod db;
pub mod error;
pub mod federation;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod notifier;
pub mod request_body;
pub mod room;
pub mod router;
pub mod storage;
pub mod testing;
pub mod thumbnail;
pub mod visibility;
pub mod world;
pub mod write;

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use futures::FutureExt;
use futures::lock::Mutex;
use http::{Method, Request, Response, StatusCode};
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName};

use crate::error::{MatrixError, Result};
use crate::federation::transport::{Offline, Transport};
use crate::keys::ServerKey;
use crate::notifier::Notifier;
use crate::router::{Auth, Lookup, Router};
use crate::storage::{Batch, Storage};
use crate::world::World;

pub use crate::error::MatrixError as Error;

/// The version reported by `/versions` and the server's status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest request body accepted, in bytes (media uploads included).
pub const DEFAULT_MAX_BODY: usize = 50 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    /// A *named* server's name (a DNS name or IP literal with an optional port, such as
    /// `127.0.0.1:8448`), whose keys peers fetch from `/_matrix/key/v2/server`. `None` makes a
    /// *key-named* server: its name is the hex of its public key. A store remembers the name it
    /// was first booted with and refuses another (user ids contain it).
    pub server_name: Option<OwnedServerName>,
    /// Whether anyone may register (with `m.login.dummy` or a password).
    pub registration_open: bool,
    /// Largest accepted request body; larger requests get `413 M_TOO_LARGE`.
    pub max_body_bytes: usize,
    /// How long an access token lives when the client asked for a refresh token.
    pub access_token_lifetime_ms: Option<u64>,
    /// Argon2 memory cost in KiB. Tests lower it to stay fast.
    pub password_hash_memory_kib: u32,
    /// Contacts served at `/.well-known/matrix/support`; none by default (that endpoint is
    /// then `404`, as the spec has it).
    pub support: client::support::SupportInfo,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: None,
            registration_open: true,
            max_body_bytes: DEFAULT_MAX_BODY,
            access_token_lifetime_ms: Some(5 * 60 * 1000),
            password_hash_memory_kib: 19 * 1024,
            support: client::support::SupportInfo::default(),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

/// What a handler knows about the request besides its parsed body.
#[derive(Debug, Clone, Default)]
pub struct Ctx {
    pub session: Option<Session>,
    /// The server whose X-Matrix signature authenticated a federation request.
    pub origin: Option<OwnedServerName>,
    /// The request's place in an ordered channel, when its host gave it one.
    pub arrival: Option<federation::arrival::Arrival>,
}

impl Ctx {
    /// The caller, for endpoints that require authentication (the router guarantees it).
    pub fn session(&self) -> Result<&Session> {
        self.session
            .as_ref()
            .ok_or_else(|| MatrixError::missing_token("missing access token"))
    }

    pub fn user_id(&self) -> Result<&OwnedUserId> {
        Ok(&self.session()?.user_id)
    }

    /// The requesting server, for federation endpoints (the router guarantees it).
    pub fn origin(&self) -> Result<&ServerName> {
        self.origin
            .as_deref()
            .ok_or_else(|| MatrixError::unauthorized("missing X-Matrix authorization"))
    }
}

pub struct Inner {
    pub store: Rc<dyn Storage>,
    pub world: Rc<dyn World>,
    /// How requests reach other servers (see [`federation::transport`]).
    pub transport: Rc<dyn Transport>,
    pub key: ServerKey,
    pub config: Config,
    pub notifier: Notifier,
    /// Serialises every write that allocates stream positions, so that positions become
    /// visible in order and read-modify-write of room state cannot interleave.
    write_lock: Mutex<()>,
    /// The last stream position handed out (shared with the change clock).
    next_pos: Rc<Cell<u64>>,
    /// What changed since a stream position, known without reading storage.
    pub changes: Rc<db::changes::ChangeClock>,
    /// The highest position whose batch is durable; `/sync` never reads past it.
    visible_pos: Cell<u64>,
    /// How many issued batches have failed (see [`write`]).
    failed_writes: Cell<u64>,
    /// `failed_writes` when the current holder took the write lock; `None` when it is free.
    lock_taken_at: Cell<Option<u64>>,
    pub caches: db::Caches,
    /// Peers' signing keys and the bookkeeping of fetching them.
    pub federation: federation::State,
    /// Rooms whose search index is behind their timeline.
    pub search: room::indexer::Backlog,
    router: Router,
}

/// The homeserver. Cheap to clone (it is an `Rc`).
#[derive(Clone)]
pub struct Homeserver(Rc<Inner>);

impl std::ops::Deref for Homeserver {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("this store belongs to server {stored}, not {configured}")]
    NameChanged { stored: String, configured: String },
}

const META_SIGNING_SEED: &[u8] = b"signing_key_seed";
const META_SERVER_NAME: &[u8] = b"server_name";
const META_STREAM_POS: &[u8] = b"stream_pos";

impl Homeserver {
    /// Boots the server over `store` with no way to reach other servers: federation requests
    /// to it are served, but every request it would send fails (see
    /// [`Homeserver::with_transport`]).
    pub async fn new(
        store: Rc<dyn Storage>,
        world: Rc<dyn World>,
        config: Config,
    ) -> Result<Self, StartError> {
        Self::with_transport(store, world, Rc::new(Offline), config).await
    }

    /// Boots the server over `store`, sending to other servers through `transport`: loads its
    /// signing key (generating and storing one on first boot), checks the server name against
    /// the one the store was first booted with, and loads the stream position.
    pub async fn with_transport(
        store: Rc<dyn Storage>,
        world: Rc<dyn World>,
        transport: Rc<dyn Transport>,
        config: Config,
    ) -> Result<Self, StartError> {
        let seed = match store.get("meta", META_SIGNING_SEED).await? {
            Some(seed) => seed,
            None => {
                let mut seed = vec![0u8; 32];
                world.fill_random(&mut seed);
                let mut b = Batch::new();
                b.put("meta", META_SIGNING_SEED, seed.clone());
                store.write(b).await?;
                seed
            }
        };
        let key = ServerKey::from_seed_named(&seed, config.server_name.as_deref())?;
        match store.get("meta", META_SERVER_NAME).await? {
            Some(stored) if stored != key.server_name.as_bytes() => {
                return Err(StartError::NameChanged {
                    stored: String::from_utf8_lossy(&stored).into_owned(),
                    configured: key.server_name.to_string(),
                });
            }
            Some(_) => {}
            None => {
                let mut b = Batch::new();
                b.put(
                    "meta",
                    META_SERVER_NAME,
                    key.server_name.as_bytes().to_vec(),
                );
                store.write(b).await?;
            }
        }
        let pos = match store.get("meta", META_STREAM_POS).await? {
            Some(v) => u64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| StartError::Corrupt("stream position".into()))?,
            ),
            None => 0,
        };
        let next_pos = Rc::new(Cell::new(pos));
        let changes = Rc::new(db::changes::ChangeClock::new(next_pos.clone()));
        let store: Rc<dyn Storage> = Rc::new(db::changes::Tracked::new(store, changes.clone()));
        let mut router = Router::default();
        client::register_routes(&mut router);
        federation::register_routes(&mut router);
        tracing::info!(server_name = %key.server_name, "homeserver started");
        Ok(Self(Rc::new(Inner {
            store,
            world,
            transport,
            key,
            config,
            notifier: Notifier::default(),
            write_lock: Mutex::new(()),
            next_pos,
            changes,
            visible_pos: Cell::new(pos),
            failed_writes: Cell::new(0),
            lock_taken_at: Cell::new(None),
            caches: db::Caches::default(),
            federation: federation::State::default(),
            search: room::indexer::Backlog::default(),
            router,
        })))
    }

    pub fn server_name(&self) -> &ServerName {
        &self.key.server_name
    }

    pub fn owned_server_name(&self) -> OwnedServerName {
        self.key.server_name.clone()
    }

    pub fn now_ms(&self) -> u64 {
        self.world.now_ms()
    }

    pub fn random_string(&self, len: usize) -> String {
        world::random_string(&*self.world, len)
    }

    /// Every (method, path template) the router serves.
    pub fn routes(&self) -> Vec<(Method, String)> {
        self.router.routes()
    }

    /// Hands out the next stream position. Call with the write lock held.
    pub fn alloc_pos(&self) -> u64 {
        let p = self.next_pos.get() + 1;
        self.next_pos.set(p);
        p
    }

    /// Leaves `n` positions unused, so the range below the next one is free for events that
    /// are older than everything before them (a remotely joined room's backfilled history).
    /// Call with the write lock held.
    pub fn skip_positions(&self, n: u64) {
        self.next_pos.set(self.next_pos.get().saturating_add(n));
    }

    /// The newest durable stream position.
    pub fn current_pos(&self) -> u64 {
        self.visible_pos.get()
    }

    /// Serves one request. Never panics on any input; every failure is a Matrix error.
    pub async fn handle(&self, req: Request<Vec<u8>>) -> Response<Vec<u8>> {
        let mut resp = self.handle_inner(req).await;
        add_cors(&mut resp);
        resp
    }

    async fn handle_inner(&self, req: Request<Vec<u8>>) -> Response<Vec<u8>> {
        if req.method() == Method::OPTIONS {
            return Response::builder()
                .status(StatusCode::OK)
                .body(Vec::new())
                .unwrap_or_default();
        }
        if req.body().len() > self.config.max_body_bytes {
            return MatrixError::too_large(format!(
                "request body exceeds {} bytes",
                self.config.max_body_bytes
            ))
            .into_response();
        }
        let path = req.uri().path().to_owned();
        match self.router.lookup(req.method(), &path) {
            Lookup::Found(handler, args, body) => {
                if let Err(e) = body.check(req.method(), req.body()) {
                    return e.into_response();
                }
                let handler = handler.clone();
                // A panic (ruma's deserializers have a few on malformed bodies) must not take
                // the server down natively; the bad-input test sweeps every route so that none
                // is left for the browser, where a panic cannot be caught.
                match AssertUnwindSafe(handler(self.clone(), req, args))
                    .catch_unwind()
                    .await
                {
                    Ok(resp) => resp,
                    Err(_) => {
                        tracing::error!(%path, "request handler panicked");
                        MatrixError::unknown("internal error: the request handler panicked")
                            .into_response()
                    }
                }
            }
            Lookup::WrongMethod => MatrixError::method_not_allowed().into_response(),
            Lookup::NotFound => {
                MatrixError::unrecognized(format!("unrecognized endpoint {path}")).into_response()
            }
        }
    }

    /// Resolves the caller: from the `Authorization: Bearer` header or `access_token` query for
    /// the Client-Server API, from the X-Matrix signature for federation endpoints.
    pub async fn authenticate<B: AsRef<[u8]>>(&self, req: &Request<B>, auth: Auth) -> Result<Ctx> {
        match auth {
            Auth::None => return Ok(Ctx::default()),
            Auth::Server => {
                let origin = federation::auth::authenticate(self, req).await?;
                return Ok(Ctx {
                    session: None,
                    origin: Some(origin),
                    arrival: req.extensions().get().copied(),
                });
            }
            Auth::Required | Auth::Optional => {}
        }
        let token = extract_token(req);
        let Some(token) = token else {
            return match auth {
                Auth::Required => Err(MatrixError::missing_token("missing access token")),
                _ => Ok(Ctx::default()),
            };
        };
        let session = db::users::session_for_token(self, &token).await?;
        Ok(Ctx {
            session: Some(session),
            origin: None,
            arrival: None,
        })
    }
}

fn extract_token<B>(req: &Request<B>) -> Option<String> {
    if let Some(h) = req.headers().get(http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

fn add_cors(resp: &mut Response<Vec<u8>>) {
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-origin",
        http::HeaderValue::from_static("*"),
    );
    h.insert(
        "access-control-allow-methods",
        http::HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        http::HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    );
}
