//! `GET /_matrix/federation/v1/version`: the implementation's name and version. Unsigned
//! requests are welcome (the spec lists no authentication for it).

use ruma::api::federation::discovery::get_server_version;

use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, VERSION, route};

pub fn routes(r: &mut Router) {
    route!(r, get_server_version::v1::Request, version);
}

async fn version(
    _hs: &Homeserver,
    _ctx: Ctx,
    _req: get_server_version::v1::Request,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Hearth".to_owned());
    server.version = Some(VERSION.to_owned());
    let mut resp = get_server_version::v1::Response::new();
    resp.server = Some(server);
    Ok(resp)
}
