//! Wakes long-polling `/sync` requests when anything new is committed. Single-threaded: a
//! generation counter and the wakers of the futures waiting on it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct Notifier {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notifier {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes once `notify` has been called after generation `seen`.
    pub fn changed_since(&self, seen: u64) -> Changed<'_> {
        Changed {
            notifier: self,
            seen,
        }
    }
}

pub struct Changed<'a> {
    notifier: &'a Notifier,
    seen: u64,
}

impl Future for Changed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notifier.generation.get() > self.seen {
            return Poll::Ready(());
        }
        let mut wakers = self.notifier.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
