//! The Server-Server API: what this server answers other servers, and how it asks them.
//!
//! - Inbound: one module per chapter of the spec (`version`, `key_server`, `query`,
//!   `devices`, `user_keys`, `openid`, `public_rooms`), registered like `client/` from ruma's
//!   endpoint metadata. Endpoints whose metadata says `ServerSignatures` pass [`auth`] first:
//!   no valid X-Matrix signature, no handler.
//! - Outbound: [`client`] builds, signs and sends requests through the host's
//!   [`transport::Transport`], with timeouts on the world's clock.
//! - Keys: [`server_keys`] finds the key that checks a peer's signature (from a key-named
//!   server's name, or fetched from a named server's key server and cached).

pub mod arrival;
pub mod auth;
pub mod client;
pub mod devices;
pub mod edus;
pub mod events;
pub mod key_server;
pub mod media;
pub mod membership;
pub mod openid;
pub mod outbox;
pub mod peers;
pub mod public_rooms;
pub mod query;
pub mod receive;
pub mod remote_membership;
pub mod server_keys;
pub mod transport;
pub mod user_keys;
pub mod version;

use crate::router::Router;

/// The federation side of the server's memory.
#[derive(Default)]
pub struct State {
    pub keys: server_keys::KeyCache,
    pub outbox: outbox::Outbox,
    /// The order of `/send`s that share a channel (see [`arrival`]).
    pub arrivals: arrival::Arrivals,
}

pub fn register_routes(r: &mut Router) {
    version::routes(r);
    key_server::routes(r);
    query::routes(r);
    devices::routes(r);
    user_keys::routes(r);
    openid::routes(r);
    public_rooms::routes(r);
    events::routes(r);
    membership::routes(r);
    media::routes(r);
    receive::routes(r);
}
