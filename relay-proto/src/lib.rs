//! The wire protocol between Hearth servers and `hearth-relay`, shared by the relay, the
//! native `hearth-testhost` and the browser's `hearth-web`. No I/O and no runtime: it builds
//! for `wasm32-unknown-unknown`. The protocol is described in `docs/relay-protocol.md`.
//!
//! - [`frame`]: the binary frames and their encoding.
//! - [`auth`]: the bytes a server signs to prove its name, and the relay's check.
//! - [`answer`]: the relay's own answers (stored transaction, errors) and close codes.
//! - [`client`]: the server's side, around whatever WebSocket the host has.

pub mod answer;
pub mod auth;
pub mod client;
pub mod frame;

pub use client::{Client, ClientError, Incoming};
pub use frame::{Frame, FrameError, VERSION};
