//! The Client-Server API, one module per chapter of the specification.

pub mod discovery;

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

pub fn register_routes(r: &mut Router) {
    discovery::routes(r);
}
