//! The injected world: clock, randomness and timers. Hosts (the browser, the test host, tests)
//! provide these, so the core has no platform types and tests can run deterministically.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::thumbnail::{Render, RenderError};

pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

pub trait World {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]);

    /// A future that completes after `duration`.
    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()>;

    /// Decodes, crops, resizes and encodes one thumbnail. By default the `image` crate does it
    /// (feature `image`); a host with codecs of its own (the browser) overrides this and
    /// leaves the feature off.
    fn render_thumbnail<'a>(
        &'a self,
        job: Render<'a>,
    ) -> LocalBoxFuture<'a, Result<Vec<u8>, RenderError>> {
        #[cfg(feature = "image")]
        let rendered = crate::thumbnail::render_with_image(&job);
        #[cfg(not(feature = "image"))]
        let rendered = {
            let _ = job;
            Err(RenderError::Unsupported)
        };
        Box::pin(std::future::ready(rendered))
    }
}

/// Random identifiers drawn from the world's RNG.
pub fn random_string(world: &dyn World, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    world.fill_random(&mut bytes);
    // 62 does not divide 256; the tiny bias is irrelevant for identifiers and tokens of this size.
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}
