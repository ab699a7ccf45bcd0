//! Transactions that arrive over one ordered channel are applied in that order, even when
//! several are in flight at once.
//!
//! The relay hands a returning server its stored transactions a few at a time instead of one
//! per round trip, so that the receiver checks the next transaction's signatures while the
//! previous one's write is being committed (in a browser, an IndexedDB commit is where a
//! catch-up spends most of its waiting). The host takes a ticket for each `/send` as its frame
//! arrives, in the channel's order ([`arrive`]). The handler checks signatures, then waits
//! until every earlier ticket has finished before it writes ([`Arrivals::turn`]). A ticket
//! whose writes are all issued lets the next one go ahead before it is answered
//! ([`Arrivals::pass`]): the next transaction is checked against the auth rules and prepared
//! while storage commits the previous one, and its own write waits for that commit.
//!
//! When a transaction fails, the ones from the same origin already in flight behind it fail
//! too, with a retryable error: the sender (the relay) retries in order, and must never find a
//! later transaction applied before an earlier one whose events it builds on. Only the same
//! origin (as its X-Matrix header claims it): a failing or forged transaction from one server
//! must not make another's fail.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use http::{Method, Request};

use ruma::ServerName;
use ruma::api::federation::authentication::XMatrix;

use crate::Homeserver;
use crate::error::{MatrixError, Result};

/// A request's place in its channel; set by the host as a request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival(pub u64);

#[derive(Debug, Default)]
pub struct Arrivals {
    state: RefCell<State>,
    wakers: RefCell<Vec<Waker>>,
}

#[derive(Debug, Default)]
struct State {
    /// The next ticket to hand out.
    issued: u64,
    /// The lowest ticket not finished yet.
    next: u64,
    /// Finished tickets above `next` (one that failed early, before its turn).
    finished: std::collections::BTreeSet<u64>,
    /// `(failed, issued then, its origin)`: that origin's tickets strictly between the two
    /// were in flight behind a failure and must not be applied.
    failures: Vec<(u64, u64, Option<String>)>,
}

impl State {
    fn finish(&mut self, seq: u64, ok: bool, origin: Option<&str>) {
        if !ok {
            self.failures
                .push((seq, self.issued, origin.map(str::to_owned)));
        }
        self.pass(seq);
    }

    fn pass(&mut self, seq: u64) {
        // A ticket passed earlier finishes again when it is answered.
        if seq >= self.next {
            self.finished.insert(seq);
        }
        while self.finished.remove(&self.next) {
            self.next += 1;
        }
        let next = self.next;
        self.failures.retain(|&(_, until, _)| until > next);
    }

    fn behind_a_failure(&self, seq: u64, origin: &str) -> bool {
        self.failures
            .iter()
            .any(|(f, until, o)| *f < seq && seq < *until && o.as_deref() == Some(origin))
    }
}

impl Arrivals {
    fn issue(&self) -> u64 {
        let mut s = self.state.borrow_mut();
        let seq = s.issued;
        s.issued += 1;
        seq
    }

    fn finish(&self, seq: u64, ok: bool, origin: Option<&str>) {
        self.state.borrow_mut().finish(seq, ok, origin);
        self.wake();
    }

    fn wake(&self) {
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Lets the transactions behind `arrival` take their turn before it is answered: every
    /// write it makes has been issued, so whatever they read reflects it. If that write then
    /// fails, the failure still holds back the ones of its origin that have not taken their
    /// turn yet, and the writes of those that have are refused (see [`crate::write`]).
    pub fn pass(&self, arrival: Arrival) {
        self.state.borrow_mut().pass(arrival.0);
        self.wake();
    }

    /// Completes when every transaction that arrived before `arrival` has finished; fails,
    /// retryably, when one of them from `origin` failed while this one was already in flight.
    pub async fn turn(&self, arrival: Arrival, origin: &ServerName) -> Result<()> {
        Turn {
            arrivals: self,
            seq: arrival.0,
        }
        .await;
        if self
            .state
            .borrow()
            .behind_a_failure(arrival.0, origin.as_str())
        {
            return Err(MatrixError::unavailable(
                "an earlier transaction on this channel failed; send this one again after it",
            ));
        }
        Ok(())
    }
}

struct Turn<'a> {
    arrivals: &'a Arrivals,
    seq: u64,
}

impl Future for Turn<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.arrivals.state.borrow().next >= self.seq {
            return Poll::Ready(());
        }
        let mut wakers = self.arrivals.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A `/send`'s place, held by the host until the request is answered. Dropped unfinished, it
/// counts as a failure.
#[must_use = "a ticket dropped at once lets the next transaction go ahead of this one"]
pub struct Ticket {
    hs: Homeserver,
    seq: u64,
    /// The origin the request's X-Matrix header claims: a failure holds back only its own.
    origin: Option<String>,
    done: bool,
}

impl Ticket {
    /// The request was answered; `ok` when it was a success.
    pub fn finish(mut self, ok: bool) {
        self.done = true;
        self.hs
            .federation
            .arrivals
            .finish(self.seq, ok, self.origin.as_deref());
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.hs
                .federation
                .arrivals
                .finish(self.seq, false, self.origin.as_deref());
        }
    }
}

/// Called by a host for each request from an ordered channel, in the channel's order and
/// before anything of it is awaited: a `/send` gets its ticket (and the request its
/// [`Arrival`]); anything else is not ordered.
pub fn arrive(hs: &Homeserver, req: &mut Request<Vec<u8>>) -> Option<Ticket> {
    let is_send =
        req.method() == Method::PUT && req.uri().path().starts_with("/_matrix/federation/v1/send/");
    if !is_send {
        return None;
    }
    let origin = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| XMatrix::try_from(h).ok())
        .map(|x| x.origin.to_string());
    let seq = hs.federation.arrivals.issue();
    req.extensions_mut().insert(Arrival(seq));
    Some(Ticket {
        hs: hs.clone(),
        seq,
        origin,
        done: false,
    })
}

/// Answers a request from an ordered channel. Call it in the channel's order: the ticket is
/// taken now, before the returned future is first polled.
pub fn handle_in_order(
    hs: &Homeserver,
    mut req: Request<Vec<u8>>,
) -> impl Future<Output = http::Response<Vec<u8>>> + use<> {
    let ticket = arrive(hs, &mut req);
    let hs = hs.clone();
    async move {
        let answer = hs.handle(req).await;
        if let Some(t) = ticket {
            t.finish(answer.status().is_success());
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn the_next_ticket_waits_for_every_earlier_one() {
        let mut s = issued(3);
        s.finish(1, true, Some(X));
        assert_eq!(
            s.next, 0,
            "1 finished early; 0 is still the one to wait for"
        );
        s.finish(0, true, Some(X));
        assert_eq!(s.next, 2);
        s.finish(2, true, Some(X));
        assert_eq!(s.next, 3);
        assert!(s.finished.is_empty());
    }

    const X: &str = "x.example";

    fn issued(n: u64) -> State {
        State {
            issued: n,
            ..State::default()
        }
    }

    #[test]
    fn a_failure_holds_back_only_what_was_in_flight_behind_it() {
        let mut s = issued(3);
        s.finish(0, false, Some(X));
        assert!(s.behind_a_failure(1, X) && s.behind_a_failure(2, X));
        assert!(!s.behind_a_failure(0, X));
        // The sender's retries come after the failure, and go through.
        s.issued = 5;
        assert!(!s.behind_a_failure(3, X) && !s.behind_a_failure(4, X));
        s.finish(1, false, Some(X));
        s.finish(2, false, Some(X));
        s.finish(3, true, Some(X));
        s.finish(4, true, Some(X));
        assert!(
            s.failures.is_empty(),
            "nothing left that a failure could hold back"
        );
    }

    #[test]
    fn an_early_failure_behind_does_not_hold_back_what_came_before() {
        let mut s = issued(2);
        // 1 fails at once (a bad signature, say) while 0 is still being checked.
        s.finish(1, false, Some(X));
        assert!(!s.behind_a_failure(0, X));
    }

    #[test]
    fn a_passed_ticket_lets_the_next_go_and_can_still_fail() {
        let mut s = issued(3);
        s.pass(0);
        assert_eq!(s.next, 1, "1 may take its turn before 0 is answered");
        // 0's write then fails, with 1 past its turn (its write is refused by storage) and
        // 2 not yet at it.
        s.finish(0, false, Some(X));
        assert!(s.behind_a_failure(2, X));
        assert_eq!(s.next, 1, "finishing a passed ticket moves nothing");
        assert!(s.finished.is_empty(), "and leaves nothing behind");
        s.finish(1, false, Some(X));
        s.finish(2, false, Some(X));
        assert_eq!(s.next, 3);
        assert!(s.failures.is_empty());
    }

    #[test]
    fn a_failure_holds_back_nothing_of_another_origin() {
        let mut s = issued(3);
        s.finish(0, false, Some("forger.example"));
        assert!(!s.behind_a_failure(1, X));
        // Nor does one whose origin could not be read.
        s.finish(1, false, None);
        assert!(!s.behind_a_failure(2, X));
    }
}
