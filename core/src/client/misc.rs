//! Small endpoints with nothing behind them on this server: VoIP TURN credentials and
//! third-party protocols. Also the helper for JSON endpoints whose exact shape ruma's
//! response types cannot produce.

use std::future::Future;
use std::rc::Rc;

use http::{Method, StatusCode};
use ruma::api::client::thirdparty::get_protocols;
use serde_json::{Value, json};

use crate::error::Result;
use crate::router::{Auth, Router, json_response};
use crate::{Ctx, Homeserver, Session, route};

pub fn routes(r: &mut Router) {
    add_json_route(
        r,
        Method::GET,
        "/_matrix/client/v3/voip/turnServer",
        |_hs, _session| async { turn_server() },
    );
    route!(r, get_protocols::v3::Request, protocols);
}

/// This server has no TURN server. The spec documents only `200` (with `username`,
/// `password`, `uris` and `ttl` all required) and `429` for this endpoint, so the answer is a
/// schema-valid `200` with no URIs and a day-long `ttl`: clients see nothing to use and do not
/// ask again soon. (`{}` and `404`, which other servers send, are not in the spec.)
fn turn_server() -> Result<Value> {
    Ok(json!({ "username": "", "password": "", "uris": [], "ttl": 86400 }))
}

/// No bridges: no third-party protocols.
async fn protocols(
    _hs: &Homeserver,
    _ctx: Ctx,
    _req: get_protocols::v3::Request,
) -> Result<get_protocols::v3::Response> {
    Ok(get_protocols::v3::Response::new(Default::default()))
}

/// Registers an endpoint that requires an access token and answers `200` with the JSON that
/// `f` returns. For responses that ruma would shape differently (it omits fields that sit at
/// their default, where the spec or clients want them present).
pub fn add_json_route<F, Fut>(r: &mut Router, method: Method, path: &str, f: F)
where
    F: Fn(Homeserver, Session) -> Fut + 'static,
    Fut: Future<Output = Result<Value>> + 'static,
{
    let f = Rc::new(f);
    r.add_raw(
        method,
        path,
        Rc::new(move |hs: Homeserver, req, _args| {
            let f = f.clone();
            Box::pin(async move {
                let session = match hs
                    .authenticate(&req, Auth::Required)
                    .await
                    .and_then(|ctx| ctx.session().cloned())
                {
                    Ok(s) => s,
                    Err(e) => return e.into_response(),
                };
                match f(hs, session).await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => e.into_response(),
                }
            })
        }),
    );
}
