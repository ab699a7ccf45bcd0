//! An in-process network of homeservers for tests: each server's [`Transport`] delivers its
//! requests straight to the destination's [`Homeserver::handle`], through hooks that make the
//! network misbehave on purpose: delay, loss (of the request or of the answer), duplication,
//! reordering (hold requests, release them in any order) and partitions. Every delivery is
//! logged, so tests can count what crossed the network.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::Duration;

use futures::channel::oneshot;
use http::{Method, Request, Response, Uri};
use ruma::{OwnedServerName, ServerName};

use super::TestWorld;
use crate::federation::transport::{Transport, TransportError};
use crate::storage::{MemoryStorage, Storage};
use crate::world::{LocalBoxFuture, World};
use crate::{Config, Homeserver};

/// Which requests a hook applies to: those from `from` (any sender if `None`) to `to` (any
/// destination if `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub from: Option<OwnedServerName>,
    pub to: Option<OwnedServerName>,
}

impl Link {
    pub fn any() -> Self {
        Self::default()
    }

    pub fn between(from: &ServerName, to: &ServerName) -> Self {
        Self {
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
        }
    }

    pub fn to(to: &ServerName) -> Self {
        Self {
            from: None,
            to: Some(to.to_owned()),
        }
    }

    fn matches(&self, from: &ServerName, to: &ServerName) -> bool {
        self.from.as_deref().is_none_or(|f| f == from) && self.to.as_deref().is_none_or(|t| t == to)
    }
}

/// What a dropped exchange loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The request never arrives.
    Request,
    /// The request is handled, but its answer never comes back.
    Response,
}

/// One request that reached its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub from: OwnedServerName,
    pub to: OwnedServerName,
    pub method: Method,
    /// Path and query, as the destination saw them.
    pub path: String,
}

/// A stand-in server: answers every request with this function.
pub type Handler = Rc<dyn Fn(Request<Vec<u8>>) -> Response<Vec<u8>>>;

#[derive(Clone)]
enum Node {
    Server(Homeserver),
    Handler(Handler),
}

type Answer = Result<Response<Vec<u8>>, TransportError>;

struct Held {
    from: OwnedServerName,
    to: OwnedServerName,
    request: Request<Vec<u8>>,
    reply: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Hooks {
    delays: Vec<(Link, Duration)>,
    drops: Vec<(Link, Loss, usize)>,
    duplicates: Vec<(Link, usize)>,
    holds: Vec<Link>,
    partitions: HashSet<(OwnedServerName, OwnedServerName)>,
}

struct NetInner {
    nodes: RefCell<HashMap<OwnedServerName, Node>>,
    hooks: RefCell<Hooks>,
    held: RefCell<Vec<Held>>,
    log: RefCell<Vec<Delivery>>,
    attempts: Cell<usize>,
    timers: Rc<dyn World>,
}

/// The network. Cheap to clone; servers hold it weakly, so dropping the last `Network` (and
/// the servers) frees everything.
#[derive(Clone)]
pub struct Network(Rc<NetInner>);

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    pub fn new() -> Self {
        Self(Rc::new(NetInner {
            nodes: RefCell::default(),
            hooks: RefCell::default(),
            held: RefCell::default(),
            log: RefCell::default(),
            attempts: Cell::new(0),
            timers: Rc::new(TestWorld::new(0)),
        }))
    }

    /// A key-named server on fresh memory storage, joined to this network.
    pub async fn server(&self, seed: u64) -> (Homeserver, Rc<TestWorld>) {
        self.server_with(seed, super::test_config()).await
    }

    /// A named server (`config.server_name`), joined to this network.
    pub async fn named_server(&self, name: &str, seed: u64) -> (Homeserver, Rc<TestWorld>) {
        let config = Config {
            server_name: Some(ServerName::parse(name).expect("test server name is valid")),
            ..super::test_config()
        };
        self.server_with(seed, config).await
    }

    /// A server with `config` on fresh memory storage, joined to this network.
    pub async fn server_with(&self, seed: u64, config: Config) -> (Homeserver, Rc<TestWorld>) {
        let world = Rc::new(TestWorld::new(seed));
        let hs = self
            .server_on(Rc::new(MemoryStorage::new()), world.clone(), config)
            .await;
        (hs, world)
    }

    /// A server booted over `store` (a restart, when the store held a server before), joined
    /// to this network in place of any server of the same name.
    pub async fn server_on(
        &self,
        store: Rc<dyn Storage>,
        world: Rc<dyn World>,
        config: Config,
    ) -> Homeserver {
        let transport = Rc::new(NetTransport {
            net: Rc::downgrade(&self.0),
            from: RefCell::new(None),
        });
        let hs = Homeserver::with_transport(store, world, transport.clone(), config)
            .await
            .expect("test server boots");
        *transport.from.borrow_mut() = Some(hs.owned_server_name());
        self.0
            .nodes
            .borrow_mut()
            .insert(hs.owned_server_name(), Node::Server(hs.clone()));
        hs
    }

    /// Makes `name` answer every request with `handler`: a peer that misbehaves in ways a
    /// Hearth server never would.
    pub fn add_handler(&self, name: &ServerName, handler: Handler) {
        self.0
            .nodes
            .borrow_mut()
            .insert(name.to_owned(), Node::Handler(handler));
    }

    /// Takes `name` off the network: requests to it find no one.
    pub fn remove(&self, name: &ServerName) {
        self.0.nodes.borrow_mut().remove(name);
    }

    /// Requests on `link` wait `delay` before delivery (the last matching delay wins).
    pub fn set_delay(&self, link: Link, delay: Duration) {
        self.0.hooks.borrow_mut().delays.push((link, delay));
    }

    /// The next `count` exchanges on `link` lose their request or their answer; the sender sees
    /// a timeout.
    pub fn drop_next(&self, link: Link, count: usize, loss: Loss) {
        self.0.hooks.borrow_mut().drops.push((link, loss, count));
    }

    /// The next `count` requests on `link` arrive twice; the sender gets the second answer.
    pub fn duplicate_next(&self, link: Link, count: usize) {
        self.0.hooks.borrow_mut().duplicates.push((link, count));
    }

    /// Requests on `link` wait in [`Network::held`] until released.
    pub fn hold(&self, link: Link) {
        self.0.hooks.borrow_mut().holds.push(link);
    }

    /// No more holding (requests already held stay held until released).
    pub fn stop_holding(&self) {
        self.0.hooks.borrow_mut().holds.clear();
    }

    /// The held requests, in arrival order: (from, to, path).
    pub fn held(&self) -> Vec<(OwnedServerName, OwnedServerName, String)> {
        self.0
            .held
            .borrow()
            .iter()
            .map(|h| (h.from.clone(), h.to.clone(), path_of(h.request.uri())))
            .collect()
    }

    /// Delivers held requests one after the other in `order` (indexes into [`Network::held`]),
    /// each answered before the next is delivered. Indexes not listed stay held.
    pub async fn release(&self, order: &[usize]) {
        let mut chosen = Vec::new();
        {
            let mut held = self.0.held.borrow_mut();
            let mut slots: Vec<Option<Held>> = held.drain(..).map(Some).collect();
            for &i in order {
                if let Some(h) = slots.get_mut(i).and_then(Option::take) {
                    chosen.push(h);
                }
            }
            held.extend(slots.into_iter().flatten());
        }
        for h in chosen {
            let answer = self.deliver(&h.from, &h.to, h.request).await;
            let _ = h.reply.send(answer);
        }
    }

    /// Cuts every link between `a` and `b`, both ways: requests fail as unreachable.
    pub fn partition(&self, a: &ServerName, b: &ServerName) {
        let mut hooks = self.0.hooks.borrow_mut();
        hooks.partitions.insert((a.to_owned(), b.to_owned()));
        hooks.partitions.insert((b.to_owned(), a.to_owned()));
    }

    /// Restores the links between `a` and `b`.
    pub fn heal(&self, a: &ServerName, b: &ServerName) {
        let mut hooks = self.0.hooks.borrow_mut();
        hooks.partitions.remove(&(a.to_owned(), b.to_owned()));
        hooks.partitions.remove(&(b.to_owned(), a.to_owned()));
    }

    /// Removes every hook (held requests stay held).
    pub fn reset_hooks(&self) {
        *self.0.hooks.borrow_mut() = Hooks::default();
    }

    /// Every request that reached a destination, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.0.log.borrow().clone()
    }

    /// Deliveries to `to` whose path starts with `prefix`.
    pub fn count(&self, to: &ServerName, prefix: &str) -> usize {
        self.0
            .log
            .borrow()
            .iter()
            .filter(|d| d.to == to && d.path.starts_with(prefix))
            .count()
    }

    /// How many requests servers handed to the network (delivered or not).
    pub fn attempts(&self) -> usize {
        self.0.attempts.get()
    }

    pub fn clear_log(&self) {
        self.0.log.borrow_mut().clear();
        self.0.attempts.set(0);
    }

    /// One request through the hooks.
    async fn send(
        &self,
        from: OwnedServerName,
        to: OwnedServerName,
        request: Request<Vec<u8>>,
    ) -> Answer {
        self.0.attempts.set(self.0.attempts.get() + 1);
        let (partitioned, delay, loss, duplicate, hold) = {
            let mut hooks = self.0.hooks.borrow_mut();
            let partitioned = hooks.partitions.contains(&(from.clone(), to.clone()));
            let delay = hooks
                .delays
                .iter()
                .rev()
                .find(|(l, _)| l.matches(&from, &to))
                .map(|(_, d)| *d);
            let loss = take_one(&mut hooks.drops, &from, &to);
            let duplicate = hooks
                .duplicates
                .iter_mut()
                .find(|(l, n)| *n > 0 && l.matches(&from, &to))
                .map(|(_, n)| *n -= 1)
                .is_some();
            let hold = hooks.holds.iter().any(|l| l.matches(&from, &to));
            (partitioned, delay, loss, duplicate, hold)
        };
        if partitioned {
            return Err(TransportError::unreachable(&to, "network partition"));
        }
        if let Some(delay) = delay {
            self.0.timers.sleep(delay).await;
        }
        if loss == Some(Loss::Request) {
            return Err(TransportError::timeout(&to));
        }
        if hold {
            let (reply, answer) = oneshot::channel();
            self.0.held.borrow_mut().push(Held {
                from,
                to: to.clone(),
                request,
                reply,
            });
            return answer
                .await
                .unwrap_or_else(|_| Err(TransportError::timeout(&to)));
        }
        let mut answer = if duplicate {
            let _ = self.deliver(&from, &to, clone_request(&request)).await;
            self.deliver(&from, &to, request).await
        } else {
            self.deliver(&from, &to, request).await
        };
        if loss == Some(Loss::Response) {
            answer = Err(TransportError::timeout(&to));
        }
        answer
    }

    async fn deliver(
        &self,
        from: &ServerName,
        to: &ServerName,
        request: Request<Vec<u8>>,
    ) -> Answer {
        let node = self.0.nodes.borrow().get(to).cloned();
        let Some(node) = node else {
            return Err(TransportError::unreachable(
                to,
                "no such server on the network",
            ));
        };
        let (mut parts, body) = request.into_parts();
        // What a server receives over HTTP: the request target in origin form.
        let path = path_of(&parts.uri);
        parts.uri = path.parse::<Uri>().unwrap_or_default();
        self.0.log.borrow_mut().push(Delivery {
            from: from.to_owned(),
            to: to.to_owned(),
            method: parts.method.clone(),
            path,
        });
        let request = Request::from_parts(parts, body);
        Ok(match node {
            Node::Server(hs) => hs.handle(request).await,
            Node::Handler(h) => h(request),
        })
    }
}

fn take_one(drops: &mut [(Link, Loss, usize)], from: &ServerName, to: &ServerName) -> Option<Loss> {
    let (_, loss, n) = drops
        .iter_mut()
        .find(|(l, _, n)| *n > 0 && l.matches(from, to))?;
    *n -= 1;
    Some(*loss)
}

fn path_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

fn clone_request(r: &Request<Vec<u8>>) -> Request<Vec<u8>> {
    let mut copy = Request::new(r.body().clone());
    *copy.method_mut() = r.method().clone();
    *copy.uri_mut() = r.uri().clone();
    *copy.headers_mut() = r.headers().clone();
    copy
}

/// A server's way onto the network.
struct NetTransport {
    net: Weak<NetInner>,
    /// The server's name, known once it has booted.
    from: RefCell<Option<OwnedServerName>>,
}

impl Transport for NetTransport {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Answer> {
        Box::pin(async move {
            let Some(net) = self.net.upgrade() else {
                return Err(TransportError::unreachable(
                    destination,
                    "the network is gone",
                ));
            };
            let Some(from) = self.from.borrow().clone() else {
                return Err(TransportError::unreachable(
                    destination,
                    "the sender has not booted",
                ));
            };
            Network(net)
                .send(from, destination.to_owned(), request)
                .await
        })
    }
}
