//! The fuzzer's harness for hearth-core, built on stable.
//!
//! An input ([`input::Script`], decoded from bytes with `arbitrary`) is a sequence of steps
//! run on a fresh server with [`USERS`] registered users: well-formed actions that shape rooms
//! and their history (create, invite, join, leave, send, change history visibility, relate,
//! redact) and read it back (`/sync`, `/messages`, `/context`, `/event`, `/relations`), and
//! requests to any route of the router's table, started from a valid example and mutated
//! (identifiers at and past 255 bytes, fields dropped or of the wrong type, invalid UTF-8,
//! arrays for objects). Path variables are filled with identifiers earlier answers produced.
//!
//! After every step: no `5xx`, no panic, the answer matches the spec's schema, and every event
//! handed to a user passes the history visibility rule ([`visibility`]). The libFuzzer target
//! (`fuzz/libfuzzer/`) only calls [`Harness::fuzz`]; `tests/regressions.rs` replays every saved
//! failure on stable.

pub mod check;
pub mod input;
pub mod known;
pub mod pool;
pub mod request;
pub mod routes;
pub mod seed;
pub mod visibility;
pub mod world;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;

use arbitrary::{Arbitrary, Unstructured};
use hearth_core::storage::MemoryStorage;
use hearth_core::{Config, Homeserver};
use hearth_spec::Spec;
use http::{Method, Request};
use serde_json::{Value, json};

use crate::check::{Finding, Invariant, preview};
use crate::input::{Script, Step};
use crate::known::Known;
use crate::pool::Pool;
use crate::request::Req;
use crate::routes::Routes;
use crate::world::{FuzzWorld, Unreachable};

/// Users registered before the first step.
pub const USERS: usize = 3;
/// Steps run per input; the rest are ignored.
pub const MAX_STEPS: usize = 48;
/// Set, known findings fail too: how an input for a new entry of `known.rs` is found.
pub const STRICT_ENV: &str = "HEARTH_FUZZ_STRICT";
const PASSWORD: &str = "correct horse battery staple";

/// What a process builds once: the spec (slow to parse) and the route table.
pub struct Harness {
    spec: Spec,
    routes: Routes,
    /// Known findings already printed by [`Harness::fuzz`].
    known_reported: RefCell<BTreeSet<&'static str>>,
    /// The spec's operations for each route, by `METHOD template`.
    ops_by_route: RefCell<HashMap<String, Rc<Vec<usize>>>>,
}

/// The outcome of one input.
#[derive(Debug, Default)]
pub struct Report {
    /// The first finding that is not a known one; the run stops there.
    pub failure: Option<Finding>,
    /// Known findings met on the way.
    pub known: Vec<(Finding, &'static Known)>,
    /// One line per request sent.
    pub transcript: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "transcript:")?;
        for (i, line) in self.transcript.iter().enumerate() {
            writeln!(f, "  {i:>2} {line}")?;
        }
        for (k, known) in &self.known {
            writeln!(f, "known finding ({}): {k}", known.id)?;
        }
        if let Some(failure) = &self.failure {
            writeln!(f, "FAILURE {failure}")?;
        }
        Ok(())
    }
}

struct User {
    id: String,
    token: String,
    since: Option<String>,
}

impl Harness {
    /// Loads the spec (panics with a clear message if it is missing) and the route table.
    pub fn new() -> Self {
        check::install_panic_probe();
        let spec = Spec::load();
        let routes = futures::executor::block_on(async {
            let server = boot(Rc::new(FuzzWorld::new(0))).await;
            Routes::new(server.hs.routes())
        });
        Self {
            spec,
            routes,
            known_reported: RefCell::default(),
            ops_by_route: RefCell::default(),
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Decodes `data` as a script and runs it.
    pub fn run_bytes(&self, data: &[u8]) -> Report {
        let script = Script::arbitrary_take_rest(Unstructured::new(data)).unwrap_or_default();
        self.run(&script)
    }

    /// The libFuzzer entry point: panics (a crash, to libFuzzer) on a finding that is not
    /// known, with the transcript that led to it.
    pub fn fuzz(&self, data: &[u8]) {
        let report = self.run_bytes(data);
        for (finding, k) in &report.known {
            if self.known_reported.borrow_mut().insert(k.id) {
                eprintln!(
                    "hearth-fuzz: known finding {} (reported once; not a failure):\n{finding}",
                    k.id
                );
            }
        }
        let strict = std::env::var_os(STRICT_ENV).is_some() && !report.known.is_empty();
        if report.failure.is_some() || strict {
            panic!("hearth-fuzz found a broken invariant\n{report}");
        }
    }

    pub fn run(&self, script: &Script) -> Report {
        futures::executor::block_on(self.run_async(script))
    }

    async fn run_async(&self, script: &Script) -> Report {
        let world = Rc::new(FuzzWorld::new(0x5eed));
        let server = boot(world.clone()).await;
        let hs = &server.hs;
        let mut report = Report::default();
        let mut pool = Pool {
            server_name: hs.server_name().to_string(),
            ..Pool::default()
        };
        let mut users = Vec::new();
        for i in 0..USERS {
            let body = json!({
                "username": format!("user{i}"),
                "password": PASSWORD,
                "auth": {"type": "m.login.dummy"},
            });
            let resp = send(
                hs,
                None,
                &Method::POST,
                "/_matrix/client/v3/register",
                body.to_string().into_bytes(),
            )
            .await;
            let v: Value = serde_json::from_slice(&resp.1).unwrap_or_default();
            let (Some(id), Some(token)) = (v["user_id"].as_str(), v["access_token"].as_str())
            else {
                panic!(
                    "registering user{i} failed: {} {}",
                    resp.0,
                    preview(&resp.1, 300)
                );
            };
            pool.collect(&v, None);
            users.push(User {
                id: id.to_owned(),
                token: token.to_owned(),
                since: None,
            });
        }
        // Users that do not exist, here and elsewhere.
        pool.users.push(format!("@ghost:{}", pool.server_name));
        pool.users.push("@someone:remote.example".to_owned());
        let user_ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();

        for (i, step) in script.steps.iter().take(MAX_STEPS).enumerate() {
            let n = i as u64;
            let req = {
                let who_for_ctx = match step {
                    Step::Do { who, .. } => request::who_index(*who, USERS),
                    Step::Call(c) => request::who_index(c.who, USERS),
                    Step::Wait(_) => None,
                };
                let ctx = request::Ctx {
                    pool: &pool,
                    me: who_for_ctx.map(|w| users[w].id.as_str()),
                    since: who_for_ctx.and_then(|w| users[w].since.as_deref()),
                    n,
                };
                match step {
                    Step::Wait(s) => {
                        world.advance(u64::from(*s) * 1000);
                        report.transcript.push(format!("wait {s}s"));
                        continue;
                    }
                    Step::Do {
                        action, mutations, ..
                    } => request::action(&ctx, action, who_for_ctx, &user_ids, mutations),
                    Step::Call(c) => match request::call(&ctx, &self.routes, c, USERS) {
                        Some(r) => r,
                        None => continue,
                    },
                }
            };
            let finding = self
                .step(&server, &mut users, &mut pool, &req, i, &mut report)
                .await;
            if let Some(f) = finding {
                match known::known(&f) {
                    Some(k) => report.known.push((f, k)),
                    None => {
                        report.failure = Some(f);
                        break;
                    }
                }
            }
        }
        report
    }

    /// Sends one request, checks the invariants, learns identifiers from the answer.
    async fn step(
        &self,
        server: &Server,
        users: &mut [User],
        pool: &mut Pool,
        req: &Req,
        step: usize,
        report: &mut Report,
    ) -> Option<Finding> {
        let token = req.who.map(|w| users[w].token.as_str());
        let uri = req.uri();
        check::take_panic();
        let hs = &server.hs;
        let tried_before = server.peers.tried();
        let (status, body) = send(hs, token, &req.method, &uri, req.body.clone()).await;
        let asked_a_peer = server.peers.tried() > tried_before;
        let who = req.who.map_or("anonymous", |w| users[w].id.as_str());
        let request_line = format!(
            "{who} {} {} {}",
            req.method,
            preview(uri.as_bytes(), 300),
            preview(&req.body, 300)
        );
        report.transcript.push(format!("{request_line} → {status}"));
        let finding = |invariant, detail: String| Finding {
            invariant,
            step,
            route: self.route_of(&req.method, &req.path),
            request: request_line.clone(),
            status,
            response: preview(&body, 600),
            detail,
        };
        if status == 0 {
            return None;
        }
        if let Some(p) = check::take_panic() {
            return Some(finding(Invariant::Panic, format!("panicked: {p}")));
        }
        let ops = self.spec_ops(&req.method, &req.path);
        let ops: Vec<&hearth_spec::Operation> =
            ops.iter().map(|&i| &self.spec.operations[i]).collect();
        if status >= 500
            && !check::documented(&ops, status)
            && !check::gateway(status, asked_a_peer)
        {
            return Some(finding(Invariant::ServerError, format!("status {status}")));
        }
        if let Some(v) = check::schema(&self.spec, &ops, &req.method, status, &body) {
            return Some(finding(Invariant::Schema, v));
        }
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200
            && let Some(w) = req.who
            && let Ok(user) = ruma::UserId::parse(users[w].id.as_str())
            && let Some(why) = visibility::check_response(hs, &user, &req.path, &json).await
        {
            return Some(finding(Invariant::Visibility, why));
        }
        if status == 200 {
            pool.collect(&json, req.room.as_deref());
            if let Some(w) = req.who
                && req.method == Method::GET
                && req.path.ends_with("/sync")
                && let Some(next) = json["next_batch"].as_str()
            {
                users[w].since = Some(next.to_owned());
            }
        }
        None
    }

    /// `METHOD /template` of the route serving `path`.
    fn route_of(&self, method: &Method, path: &str) -> String {
        match self.routes.lookup(method, path) {
            Some(r) => format!("{} {}", r.method, r.template),
            None => format!("{method} {path}"),
        }
    }

    /// The spec's operations for a request (indices into `spec.operations`), found once per
    /// route: matching a path against every operation is a tenth of a run's time otherwise.
    fn spec_ops(&self, method: &Method, path: &str) -> Rc<Vec<usize>> {
        let Some(route) = self.routes.lookup(method, path) else {
            return Rc::new(self.op_indices(&check::spec_ops(&self.spec, method, path)));
        };
        let key = format!("{} {}", route.method, route.template);
        if let Some(found) = self.ops_by_route.borrow().get(&key) {
            return found.clone();
        }
        // Any non-empty value stands for a variable: the spec's templates have theirs at the
        // same places.
        let sample = route.template.replace("{}", "x");
        let found = Rc::new(self.op_indices(&check::spec_ops(&self.spec, method, &sample)));
        self.ops_by_route.borrow_mut().insert(key, found.clone());
        found
    }

    fn op_indices(&self, ops: &[&hearth_spec::Operation]) -> Vec<usize> {
        ops.iter()
            .filter_map(|op| {
                self.spec
                    .operations
                    .iter()
                    .position(|o| std::ptr::eq(o, *op))
            })
            .collect()
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// The server under test, and its only way out: a network on which no other server answers.
struct Server {
    hs: Homeserver,
    peers: Rc<Unreachable>,
}

async fn boot(world: Rc<FuzzWorld>) -> Server {
    let config = Config {
        password_hash_memory_kib: 64,
        ..Config::default()
    };
    let peers = Rc::new(Unreachable::default());
    match Homeserver::with_transport(Rc::new(MemoryStorage::new()), world, peers.clone(), config)
        .await
    {
        Ok(hs) => Server { hs, peers },
        Err(e) => panic!("the server does not boot on memory storage: {e}"),
    }
}

/// Sends a request; `(0, [])` if it cannot even be built (an invalid URI).
async fn send(
    hs: &Homeserver,
    token: Option<&str>,
    method: &Method,
    uri: &str,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let Ok(req) = b.body(body) else {
        return (0, Vec::new());
    };
    let resp = hs.handle(req).await;
    (resp.status().as_u16(), resp.into_body())
}
