//! The forwarding role: who is connected, which requests wait for which answers, and the
//! delivery of stored transactions.
//!
//! Every connection has a bounded outbound channel that its own task writes to the socket.
//! A request from A to B is checked, given an id of B's (so ids from many senders cannot
//! collide), re-encoded with A's name as its peer and pushed onto B's channel; B's answer is
//! matched by that id and goes back to A with A's id. Nothing here awaits on another
//! connection: a full channel means a slow reader, which is closed.
//!
//! A transaction for a destination that is absent, or whose stored queue is not empty (so it
//! cannot overtake older ones), is stored and answered with 202. While a destination with a
//! stored queue is connected, one drainer task delivers the queue in order, a few at a time
//! (`--delivery-window`), removing each item when the destination answers 200.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hearth_relay_proto::answer::{self, errcode};
use hearth_relay_proto::auth;
use hearth_relay_proto::frame::{self, Frame, FrameError, Request, Response};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::config::Limits;
use crate::metrics::{CloseReason, Metrics, Outcome};
use crate::queue::{QueueError, QueueStore};

/// Frames waiting in one connection's outbound channel before it counts as a slow reader
/// (bytes are bounded separately by `--outbound-max-bytes`).
pub const OUTBOUND_FRAMES: usize = 4096;

/// Delays between deliveries of a stored transaction that was not accepted.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// How often unanswered requests are checked against their deadline.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

pub struct Hub {
    pub limits: Limits,
    pub metrics: Metrics,
    pub store: QueueStore,
    configured_origins: Vec<String>,
    origins: OnceLock<Vec<String>>,
    dests: Mutex<HashMap<String, Dest>>,
    next_conn_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// Connection, drainer and storing tasks still running; shutdown waits for them.
    tasks: AtomicUsize,
    tasks_done: Notify,
}

#[derive(Default)]
struct Dest {
    conn: Option<Arc<Conn>>,
    /// Stored transactions, counting those being stored right now.
    queued: u64,
    draining: bool,
    /// Bumped whenever a stored transaction becomes visible to the drainer.
    generation: u64,
}

impl Dest {
    fn is_idle(&self) -> bool {
        self.conn.is_none() && self.queued == 0 && !self.draining
    }
}

/// One authenticated connection, as others see it.
pub struct Conn {
    pub id: u64,
    pub name: String,
    out: mpsc::Sender<Bytes>,
    out_bytes: AtomicUsize,
    out_max: usize,
    pending: Mutex<Pending>,
    pending_len: AtomicUsize,
    close_reason: Mutex<Option<CloseReason>>,
    pub kicked: Notify,
}

#[derive(Default)]
struct Pending {
    next_id: u32,
    closed: bool,
    map: HashMap<u32, Waiting>,
}

/// A request this connection was sent and has not answered yet.
enum Waiting {
    Forward {
        from: Arc<Conn>,
        their_id: u32,
        started: Instant,
        deadline: Instant,
        /// For a transaction: the frame as sent, to store it if this connection goes away.
        txn: Option<Bytes>,
    },
    Delivery {
        reply: oneshot::Sender<Delivered>,
        deadline: Instant,
    },
}

/// A stored transaction sent and not answered yet.
struct InFlight {
    seq: u64,
    rid: u32,
    /// The destination's connection generation it went out on.
    generation: u64,
    answered: oneshot::Receiver<Delivered>,
}

/// Why a drainer sent nothing more.
enum Stall {
    /// Nothing more is stored.
    Empty,
    /// The queue could not be read.
    Unreadable,
    /// The connection is closing.
    Closing,
}

enum Delivered {
    Status(u16),
    TimedOut,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connection closed")]
    Gone,
    #[error("outbound buffer full")]
    Slow,
}

impl Conn {
    pub fn new(id: u64, name: String, out_max: usize) -> (Arc<Self>, mpsc::Receiver<Bytes>) {
        let (out, rx) = mpsc::channel(OUTBOUND_FRAMES);
        let conn = Arc::new(Self {
            id,
            name,
            out,
            out_bytes: AtomicUsize::new(0),
            out_max,
            pending: Mutex::new(Pending {
                next_id: 1,
                ..Pending::default()
            }),
            pending_len: AtomicUsize::new(0),
            close_reason: Mutex::new(None),
            kicked: Notify::new(),
        });
        (conn, rx)
    }

    /// Queues a frame for this connection's writer. A reader too slow to keep its buffer
    /// under the bound is closed instead of buffered for without limit.
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let len = frame.len();
        let queued = self.out_bytes.load(Relaxed);
        // An empty buffer takes any one frame, so a frame larger than the bound can pass.
        if queued > 0 && queued + len > self.out_max {
            self.kick(CloseReason::SlowReader);
            return Err(SendError::Slow);
        }
        self.out_bytes.fetch_add(len, Relaxed);
        match self.out.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.out_bytes.fetch_sub(len, Relaxed);
                self.kick(CloseReason::SlowReader);
                Err(SendError::Slow)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.out_bytes.fetch_sub(len, Relaxed);
                Err(SendError::Gone)
            }
        }
    }

    /// The writer wrote `len` bytes that [`Conn::send`] had counted.
    pub fn written(&self, len: usize) {
        self.out_bytes.fetch_sub(len, Relaxed);
    }

    /// Asks the connection's task to close with this reason (the first reason wins).
    pub fn kick(&self, reason: CloseReason) {
        if let Ok(mut r) = self.close_reason.lock() {
            r.get_or_insert(reason);
        }
        self.kicked.notify_one();
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.lock().ok().and_then(|r| *r)
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means another task panicked mid-update of this map; the map
        // itself is still a valid map.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a request this connection must answer; `None` once it has closed.
    fn wait_for(&self, w: Waiting) -> Option<u32> {
        let mut p = self.pending();
        if p.closed {
            return None;
        }
        let mut id = p.next_id;
        while p.map.contains_key(&id) {
            id = id.wrapping_add(1).max(1);
        }
        p.next_id = id.wrapping_add(1).max(1);
        p.map.insert(id, w);
        self.pending_len.store(p.map.len(), Relaxed);
        Some(id)
    }

    /// Keeps a transaction's frame with its waiting entry, to store it if this connection
    /// closes before it answers.
    fn attach_transaction(&self, id: u32, frame: Bytes) {
        if let Some(Waiting::Forward { txn, .. }) = self.pending().map.get_mut(&id) {
            *txn = Some(frame);
        }
    }

    fn take_waiting(&self, id: u32) -> Option<Waiting> {
        let mut p = self.pending();
        let w = p.map.remove(&id);
        self.pending_len.store(p.map.len(), Relaxed);
        w
    }

    /// Closes the pending map and hands back what was still waiting, in the order it was
    /// sent (ids grow; a wrap-around in one connection's life only reorders failures).
    fn close_pending(&self) -> Vec<Waiting> {
        let mut p = self.pending();
        p.closed = true;
        self.pending_len.store(0, Relaxed);
        let mut all: Vec<(u32, Waiting)> = p.map.drain().collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all.into_iter().map(|(_, w)| w).collect()
    }

    fn take_expired(&self, now: Instant) -> Vec<Waiting> {
        let mut p = self.pending();
        let expired: Vec<u32> = p
            .map
            .iter()
            .filter(|(_, w)| match w {
                Waiting::Forward { deadline, .. } | Waiting::Delivery { deadline, .. } => {
                    *deadline <= now
                }
            })
            .map(|(id, _)| *id)
            .collect();
        let taken = expired
            .into_iter()
            .filter_map(|id| p.map.remove(&id))
            .collect();
        self.pending_len.store(p.map.len(), Relaxed);
        taken
    }
}

/// A running task that shutdown waits for.
pub struct TaskGuard(Arc<Hub>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Relaxed) == 1 {
            self.0.tasks_done.notify_waiters();
        }
    }
}

impl Hub {
    pub fn new(
        limits: Limits,
        configured_origins: Vec<String>,
        store: QueueStore,
        queued: HashMap<String, u64>,
    ) -> Self {
        let dests = queued
            .into_iter()
            .map(|(name, n)| {
                (
                    name,
                    Dest {
                        queued: n,
                        ..Dest::default()
                    },
                )
            })
            .collect();
        Self {
            limits,
            metrics: Metrics::default(),
            store,
            configured_origins,
            origins: OnceLock::new(),
            dests: Mutex::new(dests),
            next_conn_id: AtomicU64::new(1),
            shutdown: watch::channel(false).0,
            tasks: AtomicUsize::new(0),
            tasks_done: Notify::new(),
        }
    }

    fn dests(&self) -> MutexGuard<'_, HashMap<String, Dest>> {
        self.dests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called once the listening address is known: fixes the accepted origins and starts the
    /// deadline sweeper.
    pub fn start(self: &Arc<Self>, local: SocketAddr) {
        let origins = if self.configured_origins.is_empty() {
            default_origins(local)
        } else {
            self.configured_origins.clone()
        };
        tracing::info!(?origins, "servers may sign for these origins");
        let _ = self.origins.set(origins);
        let hub = self.clone();
        let guard = self.task();
        tokio::spawn(async move {
            let _guard = guard;
            let mut shutdown = hub.shutdown.subscribe();
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => hub.sweep(),
                    _ = until_shutdown(&mut shutdown) => return,
                }
            }
        });
    }

    pub fn origins(&self) -> &[String] {
        self.origins.get().map(Vec::as_slice).unwrap_or_default()
    }

    pub fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Relaxed);
        TaskGuard(self.clone())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Relaxed)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops taking new work and tells every connection to close.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits (up to `grace`) for connections and storing tasks to end, then closes the queue
    /// store so that everything it acknowledged is on disk.
    pub async fn finish(&self, grace: Duration) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let done = self.tasks_done.notified();
            if self.tasks.load(Relaxed) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!(
                    tasks = self.tasks.load(Relaxed),
                    "shutdown grace period over; closing the queue with tasks still running"
                );
                break;
            }
        }
        self.store.close().await;
    }

    /// Makes `conn` the connection for its name, replacing (and closing) an older one.
    /// Returns how many stored transactions wait for it.
    pub fn register(self: &Arc<Self>, conn: &Arc<Conn>) -> u64 {
        let (queued, start_drainer) = {
            let mut dests = self.dests();
            let d = dests.entry(conn.name.clone()).or_default();
            match d.conn.replace(conn.clone()) {
                Some(old) => old.kick(CloseReason::Replaced),
                None => {
                    self.metrics.connections.fetch_add(1, Relaxed);
                }
            }
            let start = d.queued > 0 && !d.draining;
            if start {
                d.draining = true;
            }
            (d.queued, start)
        };
        if start_drainer {
            self.spawn_drainer(conn.name.clone());
        }
        queued
    }

    /// Forgets a connection that ended; requests it had not answered fail (or, transactions,
    /// are stored for its next connection).
    pub fn unregister(self: &Arc<Self>, conn: &Arc<Conn>) {
        {
            let mut dests = self.dests();
            if let Some(d) = dests.get_mut(&conn.name) {
                if d.conn.as_ref().is_some_and(|c| c.id == conn.id) {
                    d.conn = None;
                    self.metrics.connections.fetch_sub(1, Relaxed);
                }
                if d.is_idle() {
                    dests.remove(&conn.name);
                }
            }
        }
        for w in conn.close_pending() {
            match w {
                Waiting::Forward {
                    from,
                    their_id,
                    txn: Some(frame),
                    ..
                } => self.store_transaction(from, their_id, conn.name.clone(), frame.to_vec()),
                Waiting::Forward { from, their_id, .. } => {
                    self.metrics.forwarded(Outcome::Disconnected);
                    self.reply_error(
                        &from,
                        their_id,
                        502,
                        errcode::DISCONNECTED,
                        "the destination disconnected before it answered",
                    );
                }
                // Dropping the reply tells the drainer; the item stays stored.
                Waiting::Delivery { .. } => {}
            }
        }
    }

    /// Handles one binary message from an authenticated connection. An error means the frame
    /// is garbage and the connection must close.
    pub fn on_frame(self: &Arc<Self>, conn: &Arc<Conn>, bytes: Bytes) -> Result<(), FrameError> {
        match Frame::decode(&bytes)? {
            Frame::Request(r) => {
                self.forward(conn, &r);
                Ok(())
            }
            Frame::Response(r) => {
                self.answer(conn, &r, &bytes);
                Ok(())
            }
            Frame::Challenge(_) | Frame::Hello(_) | Frame::Welcome(_) => {
                Err(FrameError::Invalid("frame type after the handshake"))
            }
        }
    }

    fn forward(self: &Arc<Self>, from: &Arc<Conn>, r: &Request<'_>) {
        let started = Instant::now();
        if self.is_shutting_down() {
            self.metrics.forwarded(Outcome::Refused);
            self.reply_error(
                from,
                r.id,
                503,
                errcode::SHUTTING_DOWN,
                "the relay is shutting down",
            );
            return;
        }
        if !auth::is_key_name(r.peer) {
            self.metrics.forwarded(Outcome::Unreachable);
            self.reply_error(
                from,
                r.id,
                502,
                errcode::UNREACHABLE,
                &format!(
                    "{} is not a key-named server; a relay reaches only servers named by their key",
                    r.peer
                ),
            );
            return;
        }
        let is_txn = answer::is_transaction(r.method, r.path);
        let to = {
            let mut dests = self.dests();
            match dests.get_mut(r.peer) {
                Some(d) if d.conn.is_some() && (!is_txn || (d.queued == 0 && !d.draining)) => {
                    d.conn.clone()
                }
                Some(d) if is_txn => {
                    d.queued += 1;
                    None
                }
                None if is_txn => {
                    dests.insert(
                        r.peer.to_owned(),
                        Dest {
                            queued: 1,
                            ..Dest::default()
                        },
                    );
                    None
                }
                _ => {
                    drop(dests);
                    self.metrics.forwarded(Outcome::NotConnected);
                    self.reply_error(
                        from,
                        r.id,
                        502,
                        errcode::NOT_CONNECTED,
                        &format!("{} is not connected to this relay", r.peer),
                    );
                    return;
                }
            }
        };
        let Some(to) = to else {
            // Counted in `queued` above, so nothing later can overtake it.
            let mut frame = Vec::with_capacity(r.encoded_len_with_peer(&from.name));
            if let Err(e) = r.encode_to(0, &from.name, &mut frame) {
                self.unreserve(r.peer);
                self.cannot_encode(from, r.id, e);
                return;
            }
            self.store_reserved(from.clone(), r.id, r.peer.to_owned(), frame);
            return;
        };
        let deadline = started + self.limits.request_timeout;
        let waiting = Waiting::Forward {
            from: from.clone(),
            their_id: r.id,
            started,
            deadline,
            txn: None,
        };
        let Some(rid) = to.wait_for(waiting) else {
            self.destination_gone(from, r, is_txn);
            return;
        };
        let mut frame = Vec::with_capacity(r.encoded_len_with_peer(&from.name));
        if let Err(e) = r.encode_to(rid, &from.name, &mut frame) {
            let _ = to.take_waiting(rid);
            self.cannot_encode(from, r.id, e);
            return;
        }
        let frame = Bytes::from(frame);
        if is_txn {
            to.attach_transaction(rid, frame.clone());
        }
        if to.send(frame).is_err() && to.take_waiting(rid).is_some() {
            self.destination_gone(from, r, is_txn);
        }
    }

    /// Re-encoding fails only for a source name no connection can have; answer anyway, so
    /// that no request is left without one.
    fn cannot_encode(&self, from: &Conn, id: u32, e: FrameError) {
        tracing::error!(source = %from.name, "cannot re-encode a request: {e}");
        self.metrics.forwarded(Outcome::Refused);
        self.reply_error(
            from,
            id,
            500,
            "M_UNKNOWN",
            &format!("the relay cannot pass this request on: {e}"),
        );
    }

    /// The destination went away between lookup and send.
    fn destination_gone(self: &Arc<Self>, from: &Arc<Conn>, r: &Request<'_>, is_txn: bool) {
        let mut frame = Vec::with_capacity(r.encoded_len_with_peer(&from.name));
        if is_txn && r.encode_to(0, &from.name, &mut frame).is_ok() {
            self.store_transaction(from.clone(), r.id, r.peer.to_owned(), frame);
        } else {
            self.metrics.forwarded(Outcome::Disconnected);
            self.reply_error(
                from,
                r.id,
                502,
                errcode::DISCONNECTED,
                &format!("{} disconnected", r.peer),
            );
        }
    }

    fn unreserve(&self, dest: &str) {
        let mut dests = self.dests();
        if let Some(d) = dests.get_mut(dest) {
            d.queued = d.queued.saturating_sub(1);
            if d.is_idle() {
                dests.remove(dest);
            }
        }
    }

    /// Stores a transaction that was not yet counted in its destination's queue.
    fn store_transaction(
        self: &Arc<Self>,
        from: Arc<Conn>,
        their_id: u32,
        dest: String,
        frame: Vec<u8>,
    ) {
        self.dests().entry(dest.clone()).or_default().queued += 1;
        self.store_reserved(from, their_id, dest, frame);
    }

    /// Stores a transaction already counted in `queued`, then answers the sender: 202 once
    /// it is durable, or the reason it is not stored.
    fn store_reserved(
        self: &Arc<Self>,
        from: Arc<Conn>,
        their_id: u32,
        dest: String,
        mut frame: Vec<u8>,
    ) {
        // Stored with id 0; the drainer sets its own id at delivery.
        let _ = frame::set_id(&mut frame, 0);
        // Submitted here, in the sender's frame order; only the wait for the commit is spawned.
        let stored = self.store.submit(&dest, frame);
        let hub = self.clone();
        let guard = self.task();
        tokio::spawn(async move {
            let _guard = guard;
            match stored.await {
                Ok(length) => {
                    hub.metrics.forwarded(Outcome::Queued);
                    tracing::debug!(%dest, length, "transaction stored");
                    let body = serde_json::json!({
                        "queued": true,
                        "destination": dest,
                        "queue_length": length,
                    })
                    .to_string();
                    hub.reply(
                        &from,
                        their_id,
                        answer::QUEUED_STATUS,
                        answer::RELAY_HEADER_QUEUED,
                        body.as_bytes(),
                    );
                    let start = {
                        let mut dests = hub.dests();
                        let d = dests.entry(dest.clone()).or_default();
                        d.generation += 1;
                        let start = d.conn.is_some() && !d.draining;
                        if start {
                            d.draining = true;
                        }
                        start
                    };
                    if start {
                        hub.spawn_drainer(dest);
                    }
                }
                Err(e) => {
                    hub.unreserve(&dest);
                    let (status, code, outcome) = match e {
                        QueueError::Full(_) => (503, errcode::QUEUE_FULL, Outcome::QueueFull),
                        QueueError::Closed => (503, errcode::SHUTTING_DOWN, Outcome::Refused),
                        QueueError::Store(_) => (500, errcode::STORE_FAILED, Outcome::Refused),
                    };
                    hub.metrics.forwarded(outcome);
                    tracing::debug!(%dest, "transaction not stored: {e}");
                    hub.reply_error(&from, their_id, status, code, &format!("{dest}: {e}"));
                }
            }
        });
    }

    fn answer(&self, conn: &Arc<Conn>, r: &Response<'_>, raw: &Bytes) {
        match conn.take_waiting(r.id) {
            Some(Waiting::Forward {
                from,
                their_id,
                started,
                ..
            }) => {
                let mut frame = raw.to_vec();
                if frame::set_id(&mut frame, their_id).is_ok() && from.send(frame.into()).is_ok() {
                    self.metrics.forwarded(Outcome::Answered);
                    self.metrics.forward_latency.observe(started.elapsed());
                }
            }
            Some(Waiting::Delivery { reply, .. }) => {
                let _ = reply.send(Delivered::Status(r.status));
            }
            None => {
                self.metrics.unmatched_answers.fetch_add(1, Relaxed);
            }
        }
    }

    /// Fails requests whose destination did not answer in time.
    fn sweep(&self) {
        let busy: Vec<Arc<Conn>> = self
            .dests()
            .values()
            .filter_map(|d| d.conn.as_ref())
            .filter(|c| c.pending_len.load(Relaxed) > 0)
            .cloned()
            .collect();
        let now = Instant::now();
        for conn in busy {
            for w in conn.take_expired(now) {
                match w {
                    Waiting::Forward { from, their_id, .. } => {
                        self.metrics.forwarded(Outcome::Timeout);
                        self.reply_error(
                            &from,
                            their_id,
                            504,
                            errcode::TIMEOUT,
                            &format!(
                                "{} did not answer within {} ms",
                                conn.name,
                                self.limits.request_timeout.as_millis()
                            ),
                        );
                    }
                    Waiting::Delivery { reply, .. } => {
                        let _ = reply.send(Delivered::TimedOut);
                    }
                }
            }
        }
    }

    fn spawn_drainer(self: &Arc<Self>, dest: String) {
        let hub = self.clone();
        let guard = self.task();
        tokio::spawn(async move {
            let _guard = guard;
            hub.drain(dest).await;
        });
    }

    /// Delivers `dest`'s stored transactions in order while it is connected. Exactly one runs
    /// per destination (`Dest::draining`). Up to `--delivery-window` are in flight: the
    /// destination can check the next one's signatures while it writes the previous one, and
    /// applies them in the order they arrive. Items are removed in order, each when it is
    /// answered 200; after any other answer, what was in flight behind it is sent again.
    async fn drain(self: &Arc<Self>, dest: String) {
        let mut shutdown = self.shutdown.subscribe();
        let mut backoff = RETRY_FIRST;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        loop {
            let (conn, generation) = {
                let mut dests = self.dests();
                let Some(d) = dests.get_mut(&dest) else {
                    return;
                };
                match (&d.conn, self.is_shutting_down()) {
                    (Some(c), false) => (c.clone(), d.generation),
                    _ => {
                        d.draining = false;
                        if d.is_idle() {
                            dests.remove(&dest);
                        }
                        return;
                    }
                }
            };
            // A newer connection than the one the window went out on: start again on it.
            if in_flight
                .front()
                .is_some_and(|f| f.generation != generation)
            {
                in_flight.clear();
            }
            // Why nothing more went out, for when nothing is in flight either.
            let mut stalled = Stall::Closing;
            while in_flight.len() < usize::from(self.limits.delivery_window) {
                let after = in_flight.back().map(|f| f.seq);
                let (seq, mut frame) = match self.store.peek_after(&dest, after).await {
                    Ok(Some(item)) => item,
                    Ok(None) => {
                        stalled = Stall::Empty;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%dest, "cannot read the queue: {e}");
                        stalled = Stall::Unreadable;
                        break;
                    }
                };
                let (reply, answered) = oneshot::channel();
                let deadline = Instant::now() + self.limits.request_timeout;
                // `None`: the connection is closing; its successor (or none) shows up shortly.
                let Some(rid) = conn.wait_for(Waiting::Delivery { reply, deadline }) else {
                    break;
                };
                if frame::set_id(&mut frame, rid).is_err() {
                    // Only a frame this relay wrote is stored; a bad one can never be delivered.
                    let _ = conn.take_waiting(rid);
                    if in_flight.is_empty() {
                        tracing::error!(%dest, seq, "stored item is not a request frame; dropping it");
                        if self.delivered(&dest, seq) {
                            return;
                        }
                        continue;
                    }
                    // It is dropped once it is at the front.
                    break;
                }
                if conn.send(Bytes::from(frame)).is_err() {
                    let _ = conn.take_waiting(rid);
                    break;
                }
                in_flight.push_back(InFlight {
                    seq,
                    rid,
                    generation,
                    answered,
                });
            }
            let Some(mut oldest) = in_flight.pop_front() else {
                match stalled {
                    Stall::Empty => {
                        let mut dests = self.dests();
                        let Some(d) = dests.get_mut(&dest) else {
                            return;
                        };
                        if d.generation == generation {
                            d.draining = false;
                            if d.is_idle() {
                                dests.remove(&dest);
                            }
                            return;
                        }
                    }
                    // Its successor (or none) shows up shortly.
                    Stall::Closing => tokio::time::sleep(Duration::from_millis(10)).await,
                    Stall::Unreadable => {
                        // The next round checks for shutdown.
                        sleep_or_shutdown(&mut shutdown, backoff).await;
                    }
                }
                continue;
            };
            let status = tokio::select! {
                r = &mut oldest.answered => r.ok(),
                _ = until_shutdown(&mut shutdown) => None,
            };
            match status {
                Some(Delivered::Status(200)) => {
                    self.metrics.delivered_from_queue.fetch_add(1, Relaxed);
                    if self.delivered(&dest, oldest.seq) {
                        return;
                    }
                    backoff = RETRY_FIRST;
                }
                Some(Delivered::Status(s)) if (400..500).contains(&s) && s != 429 => {
                    // The destination has read it and refuses it for good; sending it again
                    // would only block everything queued behind it.
                    tracing::warn!(%dest, seq = oldest.seq, status = s, "stored transaction refused; dropping it");
                    self.metrics.rejected_from_queue.fetch_add(1, Relaxed);
                    if self.delivered(&dest, oldest.seq) {
                        return;
                    }
                }
                Some(other) => {
                    let what = match other {
                        Delivered::Status(s) => format!("answered {s}"),
                        Delivered::TimedOut => "did not answer".to_owned(),
                    };
                    tracing::debug!(%dest, seq = oldest.seq, "stored transaction {what}; retrying in {backoff:?}");
                    self.metrics.delivery_retries.fetch_add(1, Relaxed);
                    // What went out behind it goes again after it; their answers no longer
                    // matter (the destination recognises a repeat by its transaction id).
                    for f in in_flight.drain(..) {
                        let _ = conn.take_waiting(f.rid);
                    }
                    sleep_or_shutdown(&mut shutdown, backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                // The connection closed (or the relay is stopping): the items stay stored.
                None => in_flight.clear(),
            }
        }
    }

    /// Removes a delivered (or refused) item. Returns true when the queue is now empty, with
    /// nothing being stored either: the drainer has then stopped, and must end without
    /// touching the destination's state again (a new drainer may already run).
    fn delivered(&self, dest: &str, seq: u64) -> bool {
        if let Err(e) = self.store.remove(dest, seq) {
            tracing::warn!(%dest, seq, "cannot remove a delivered transaction: {e}");
        }
        let mut dests = self.dests();
        let Some(d) = dests.get_mut(dest) else {
            return true;
        };
        d.queued = d.queued.saturating_sub(1);
        if d.queued > 0 {
            return false;
        }
        // Stopping here rather than after one more look at the store lets the next
        // transaction go straight through as soon as the last stored one is accepted.
        d.draining = false;
        if d.is_idle() {
            dests.remove(dest);
        }
        true
    }

    fn reply(&self, to: &Conn, id: u32, status: u16, relay_header: &str, body: &[u8]) {
        let headers = [
            ("content-type", b"application/json".as_slice()),
            (answer::RELAY_HEADER, relay_header.as_bytes()),
        ];
        match frame::encode_response(id, status, headers, body) {
            Ok(f) => {
                let _ = to.send(f.into());
            }
            Err(e) => tracing::error!("cannot encode an answer: {e}"),
        }
    }

    fn reply_error(&self, to: &Conn, id: u32, status: u16, errcode: &str, error: &str) {
        let body = serde_json::json!({ "errcode": errcode, "error": error }).to_string();
        self.reply(to, id, status, answer::RELAY_HEADER_ERROR, body.as_bytes());
    }
}

/// Resolves once the relay is shutting down (at once if it already is).
pub async fn until_shutdown(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the caller.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Sleeps for `d`; false if the relay began shutting down meanwhile.
async fn sleep_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = until_shutdown(shutdown) => false,
    }
}

/// The origins servers may sign for when none are configured: the listening address, and for
/// loopback or unspecified addresses the usual local names too.
pub fn default_origins(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let mut origins = Vec::new();
    let ip = local.ip();
    if !ip.is_unspecified() {
        origins.push(match ip {
            std::net::IpAddr::V4(v4) => format!("http://{v4}:{port}"),
            std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
        });
    }
    if ip.is_loopback() || ip.is_unspecified() {
        for o in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ] {
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_origins_cover_local_names() {
        let o = default_origins("127.0.0.1:8008".parse().unwrap());
        assert_eq!(
            o,
            [
                "http://127.0.0.1:8008",
                "http://localhost:8008",
                "http://[::1]:8008"
            ]
        );
        let o = default_origins("192.0.2.1:80".parse().unwrap());
        assert_eq!(o, ["http://192.0.2.1:80"]);
    }

    #[test]
    fn pending_ids_are_unique_and_closing_refuses_more() {
        let (conn, _rx) = Conn::new(1, "a".into(), 1 << 20);
        let (tx1, _r1) = oneshot::channel();
        let (tx2, _r2) = oneshot::channel();
        let now = Instant::now();
        let a = conn
            .wait_for(Waiting::Delivery {
                reply: tx1,
                deadline: now,
            })
            .unwrap();
        let b = conn
            .wait_for(Waiting::Delivery {
                reply: tx2,
                deadline: now + Duration::from_secs(60),
            })
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(conn.take_expired(now).len(), 1);
        assert_eq!(conn.close_pending().len(), 1);
        let (tx3, _r3) = oneshot::channel();
        assert!(
            conn.wait_for(Waiting::Delivery {
                reply: tx3,
                deadline: now
            })
            .is_none()
        );
    }

    #[test]
    fn a_full_outbound_buffer_closes_the_slow_reader() {
        let (conn, _rx) = Conn::new(1, "a".into(), 10);
        let (big, _big_rx) = Conn::new(2, "b".into(), 10);
        // One frame larger than the bound passes an empty buffer, and nothing after it.
        assert!(big.send(Bytes::from_static(b"0123456789abc")).is_ok());
        assert!(big.send(Bytes::from_static(b"0")).is_err());
        assert!(conn.send(Bytes::from_static(b"12345")).is_ok());
        assert!(matches!(
            conn.send(Bytes::from_static(b"123456")),
            Err(SendError::Slow)
        ));
        assert_eq!(conn.close_reason(), Some(CloseReason::SlowReader));
    }
}
