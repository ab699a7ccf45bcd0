//! hearth-web: the Hearth homeserver in the browser.
//!
//! This crate is glue, with no Matrix logic of its own: an IndexedDB backend of
//! `hearth_core::storage::Storage` ([`IndexedDbStorage`]), the browser's clock, randomness and
//! timers, and its image codecs for thumbnails ([`BrowserWorld`]), and [`HearthServer`], the wasm-bindgen API that
//! `www/server-worker.js` drives.
//!
//! # Where it runs
//! The server lives in one module SharedWorker (`/server-worker.js`, name `hearth-server`),
//! which holds the Web Lock `hearth-server` while it writes IndexedDB. The service worker
//! `/sw.js` is a stateless proxy that forwards `/_matrix/...` and `/.well-known/matrix/client`
//! to it over a MessagePort; `/hearth.js` wires the two together from each page.
//!
//! # Building by hand
//! ```text
//! cargo build -p hearth-web --target wasm32-unknown-unknown --profile wasm-release
//! wasm-bindgen --target web --no-typescript --out-dir www/pkg \
//!     target/wasm32-unknown-unknown/wasm-release/hearth_web.wasm
//! # optional, about a third smaller: npm's binaryen, never Debian's (its wasm-opt 108 emits
//! # modules Chromium refuses to load)
//! node_modules/.bin/wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
//!     --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue \
//!     -o www/pkg/hearth_web_bg.wasm www/pkg/hearth_web_bg.wasm
//! ```
//! `wasm-release` (root `Cargo.toml`) is `release` tuned for size (`opt-level = "z"`, fat
//! LTO); `--release` works too, with a larger module. The `wasm-bindgen` CLI must be exactly
//! the version pinned in `web/Cargo.toml` (`cargo install wasm-bindgen-cli --version 0.2.130`,
//! without `--locked`). The output includes `www/pkg/snippets/` (a small JS helper for
//! IndexedDB); serve the whole folder.
//!
//! # Testing
//! ```text
//! CHROMEDRIVER=/usr/bin/chromedriver cargo test -p hearth-web --target wasm32-unknown-unknown
//! ```
//! runs the storage conformance suite and the server tests in headless Chromium. Natively only
//! the platform-free parts build (the read cache), and `cargo test -p hearth-web` runs their
//! unit tests.

pub mod read_cache;

#[cfg(target_arch = "wasm32")]
mod indexeddb;
#[cfg(target_arch = "wasm32")]
mod relay;
#[cfg(target_arch = "wasm32")]
mod server;
#[cfg(target_arch = "wasm32")]
mod thumbnail;
#[cfg(target_arch = "wasm32")]
mod world;

#[cfg(target_arch = "wasm32")]
pub use indexeddb::{
    IndexedDbStorage, OpCounter, OpStats, StorageFailure, idb_version, map_dom_exception,
};
#[cfg(target_arch = "wasm32")]
pub use server::HearthServer;
#[cfg(target_arch = "wasm32")]
pub use world::BrowserWorld;
