//! The Client-Server API, one module per chapter of the specification.

pub mod directory;
pub mod discovery;
pub mod events;
pub mod membership;
pub mod room;
pub mod sync;
pub mod tokens;
pub mod keys;
pub mod media;
pub mod to_device;
pub mod account;
pub mod account_data;
pub mod capabilities;
pub mod devices;
pub mod misc;
pub mod profile;
pub mod session;
pub mod uia;
pub mod filter;
pub mod presence;
pub mod push;
pub mod receipts;
pub mod typing;
pub mod knock;
pub mod tags;

use crate::router::Router;

/// Registers a ruma endpoint: `route!(router, ruma::api::...::v3::Request, module::handler)`.
/// The handler is `async fn(&Homeserver, Ctx, Request) -> Result<Response>`.
#[macro_export]
macro_rules! route {
    ($router:expr, $req:ty, $handler:path) => {
        $router.add::<$req>(::std::rc::Rc::new(
            |hs: $crate::Homeserver, ctx: $crate::Ctx, req: $req| {
                Box::pin(async move { $handler(&hs, ctx, req).await })
            },
        ))
    };
}

/// Like [`route!`], for a handler that answers with a `serde_json::Value` built by hand.
#[macro_export]
macro_rules! route_json {
    ($router:expr, $req:ty, $handler:path) => {
        $router.add_json::<$req>(::std::rc::Rc::new(
            |hs: $crate::Homeserver, ctx: $crate::Ctx, req: $req| {
                Box::pin(async move { $handler(&hs, ctx, req).await })
            },
        ))
    };
}

pub fn register_routes(r: &mut Router) {
    discovery::routes(r);
    directory::routes(r);
    events::routes(r);
    membership::routes(r);
    room::routes(r);
    sync::routes(r);
    keys::routes(r);
    media::routes(r);
    to_device::routes(r);
    account_data::routes(r);
    filter::routes(r);
    presence::routes(r);
    push::routes(r);
    receipts::routes(r);
    typing::routes(r);
    tags::routes(r);
    account::routes(r);
    session::routes(r);
    devices::routes(r);
    profile::routes(r);
    capabilities::routes(r);
    misc::routes(r);
    knock::routes(r);
}

/// Wraps a JSON value as ruma's `Raw<T>` for a response field.
pub fn raw<T>(v: &serde_json::Value) -> crate::error::Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(v)?))
}
