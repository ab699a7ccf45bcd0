//! The Client-Server API, one module per chapter of the specification.

pub mod account;
pub mod account_data;
pub mod admin;
pub mod backup;
pub mod capabilities;
pub mod cross_signing;
pub mod deactivate;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod events;
pub mod filter;
pub mod keys;
pub mod knock;
pub mod media;
pub mod membership;
pub mod misc;
pub mod misc_rooms;
pub mod moderation;
pub mod openid;
pub mod peek;
pub mod presence;
pub mod profile;
pub mod profile_fields;
pub mod push;
pub mod receipts;
pub mod relations;
pub mod report;
pub mod room;
pub mod search;
pub mod session;
pub mod space;
pub mod support;
pub mod sync;
pub mod tags;
pub mod threepid;
pub mod to_device;
pub mod tokens;
pub mod typing;
pub mod uia;
pub mod url_preview;
pub mod user_directory;

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
    moderation::routes(r);
    peek::routes(r);
    room::routes(r);
    sync::routes(r);
    keys::routes(r);
    cross_signing::routes(r);
    backup::routes(r);
    media::routes(r);
    to_device::routes(r);
    account_data::routes(r);
    filter::routes(r);
    presence::routes(r);
    push::routes(r);
    receipts::routes(r);
    typing::routes(r);
    tags::routes(r);
    relations::routes(r);
    account::routes(r);
    session::routes(r);
    devices::routes(r);
    profile::routes(r);
    capabilities::routes(r);
    misc::routes(r);
    admin::routes(r);
    deactivate::routes(r);
    misc_rooms::routes(r);
    openid::routes(r);
    report::routes(r);
    support::routes(r);
    threepid::routes(r);
    url_preview::routes(r);
    knock::routes(r);
    space::routes(r);
    user_directory::routes(r);
    search::routes(r);
}

/// Wraps a JSON value as ruma's `Raw<T>` for a response field.
pub fn raw<T>(v: &serde_json::Value) -> crate::error::Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(
        serde_json::value::to_raw_value(v)?,
    ))
}
