//! A deterministic world: a virtual clock that timers move instead of waiting, and a seeded
//! PRNG. The same input therefore makes the same identifiers, timestamps and answers on every
//! run, which is what lets a saved failure replay as a test.

use std::cell::Cell;
use std::time::Duration;

use hearth_core::federation::transport::{Transport, TransportError};
use hearth_core::world::{LocalBoxFuture, World};
use http::{Request, Response};
use ruma::ServerName;

/// 2026-01-01T00:00:00Z: a fixed start, so timestamps are the same on every run.
const EPOCH_MS: u64 = 1_767_225_600_000;

pub struct FuzzWorld {
    now_ms: Cell<u64>,
    rng: Cell<u64>,
}

impl FuzzWorld {
    pub fn new(seed: u64) -> Self {
        Self {
            now_ms: Cell::new(EPOCH_MS),
            rng: Cell::new(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    pub fn advance(&self, ms: u64) {
        self.now_ms.set(self.now_ms.get().saturating_add(ms));
    }
}

impl World for FuzzWorld {
    /// Each reading moves the clock by a millisecond, so that events get distinct timestamps
    /// as they would in real time.
    fn now_ms(&self) -> u64 {
        let now = self.now_ms.get();
        self.now_ms.set(now + 1);
        now
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for b in buf {
            // splitmix64: not cryptographic, which a fuzzer does not need.
            let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            self.rng.set(z);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
    }

    /// Completes at once and moves the clock past the deadline: a long-poll `/sync` ends as if
    /// its timeout had passed, without the fuzzer waiting for it.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        self.advance(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        Box::pin(std::future::ready(()))
    }
}

/// The fuzzed server's transport: no other server ever answers, and every attempt is counted,
/// so a `502` can be told apart from a bug (see [`crate::check::gateway`]).
#[derive(Debug, Default)]
pub struct Unreachable {
    tried: Cell<u64>,
}

impl Unreachable {
    pub fn tried(&self) -> u64 {
        self.tried.get()
    }
}

impl Transport for Unreachable {
    fn send<'a>(
        &'a self,
        destination: &'a ServerName,
        _request: Request<Vec<u8>>,
    ) -> LocalBoxFuture<'a, Result<Response<Vec<u8>>, TransportError>> {
        self.tried.set(self.tried.get() + 1);
        Box::pin(std::future::ready(Err(TransportError::unreachable(
            destination,
            "no server answers on the fuzzer's network",
        ))))
    }
}
