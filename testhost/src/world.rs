//! The real world for a native host: wall clock, the OS random generator, tokio timers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_core::world::{LocalBoxFuture, World};

pub struct HostWorld;

impl World for HostWorld {
    fn now_ms(&self) -> u64 {
        // A clock before 1970 is a broken host; 0 keeps timestamps monotone-ish instead of panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        if let Err(e) = getrandom::fill(buf) {
            // Tokens and keys drawn from a failed generator would be guessable: stop instead.
            tracing::error!(error = %e, "the OS random generator failed; stopping");
            std::process::abort();
        }
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_differ_between_calls() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        HostWorld.fill_random(&mut a);
        HostWorld.fill_random(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn clock_is_wall_time() {
        let now = HostWorld.now_ms();
        // 2020-01-01 .. 2100-01-01
        assert!(
            (1_577_836_800_000..4_102_444_800_000).contains(&now),
            "{now}"
        );
    }

    #[tokio::test]
    async fn sleep_waits_at_least_its_duration() {
        let start = std::time::Instant::now();
        HostWorld.sleep(Duration::from_millis(20)).await;
        assert!(start.elapsed() >= Duration::from_millis(20));
    }
}
