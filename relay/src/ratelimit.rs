//! A token bucket per connection, for frames and for bytes.

use std::time::Instant;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Refills `rate` tokens per second up to `burst`; starts full.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes `n` tokens; false when there are not enough (nothing is taken then).
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The limits on what one connection may send.
pub struct ConnLimiter {
    frames: TokenBucket,
    bytes: TokenBucket,
}

impl ConnLimiter {
    pub fn new(frames_per_sec: u32, bytes_per_sec: u64, max_frame: usize, now: Instant) -> Self {
        let fps = f64::from(frames_per_sec);
        let bps = bytes_per_sec as f64;
        Self {
            frames: TokenBucket::new(fps, 2.0 * fps, now),
            // A single largest frame must always fit, or it could never be sent.
            bytes: TokenBucket::new(bps, (2.0 * bps).max(max_frame as f64), now),
        }
    }

    /// Accounts for one received frame; false when the connection exceeds its rate.
    pub fn allow(&mut self, len: usize, now: Instant) -> bool {
        self.frames.take(1.0, now) && self.bytes.take(len as f64, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        for _ in 0..20 {
            assert!(b.take(1.0, t0));
        }
        assert!(!b.take(1.0, t0));
        assert!(b.take(1.0, t0 + Duration::from_millis(100)));
        assert!(!b.take(1.0, t0 + Duration::from_millis(100)));
        assert!(b.take(20.0, t0 + Duration::from_secs(100)));
    }

    #[test]
    fn one_largest_frame_always_fits() {
        let t0 = Instant::now();
        let mut l = ConnLimiter::new(100, 10, 1000, t0);
        assert!(l.allow(1000, t0));
        assert!(!l.allow(1000, t0));
    }
}
