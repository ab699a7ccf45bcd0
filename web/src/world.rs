//! The browser's world: wall clock, the platform's CSPRNG, timers and image codecs.
//!
//! Everything goes through `globalThis`, so the same code runs in a page, a dedicated worker,
//! a SharedWorker and a service worker (where `window` does not exist).

use std::time::Duration;

use gloo_timers::future::TimeoutFuture;
use hearth_core::thumbnail::{Render, RenderError};
use hearth_core::world::{LocalBoxFuture, World};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// `crypto.getRandomValues` on whatever global scope we run in.
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues, catch)]
    fn get_random_values(buf: &mut [u8]) -> Result<(), JsValue>;
}

/// `getRandomValues` refuses more than this many bytes per call.
const MAX_RANDOM_CHUNK: usize = 65_536;

#[derive(Debug, Default, Clone, Copy)]
pub struct BrowserWorld;

impl World for BrowserWorld {
    fn now_ms(&self) -> u64 {
        // Date.now() is a non-negative integral number of milliseconds well below 2^53.
        js_sys::Date::now() as u64
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(MAX_RANDOM_CHUNK) {
            // Only fails without Web Crypto, i.e. outside any browser context; keys and tokens
            // drawn from zeroes would be guessable, so refusing to go on is the only safe answer.
            if let Err(e) = get_random_values(chunk) {
                wasm_bindgen::throw_val(e);
            }
        }
    }

    fn sleep(&self, duration: Duration) -> LocalBoxFuture<'static, ()> {
        // setTimeout takes an i32 of milliseconds; longer waits are clamped rather than wrapped.
        let ms = u32::try_from(duration.as_millis())
            .unwrap_or(u32::MAX)
            .min(i32::MAX as u32);
        // Dropping a TimeoutFuture clears its timer, so abandoned long-polls leave nothing behind.
        Box::pin(TimeoutFuture::new(ms))
    }

    fn render_thumbnail<'a>(
        &'a self,
        job: Render<'a>,
    ) -> LocalBoxFuture<'a, Result<Vec<u8>, RenderError>> {
        Box::pin(crate::thumbnail::render(job))
    }
}
