//! End-to-end encryption keys for other servers: `POST /_matrix/federation/v1/user/keys/query`
//! and `/user/keys/claim`. The same records as the Client-Server `/keys/query` and
//! `/keys/claim`, as a server may see them: the owner's signatures, no device names, no
//! user-signing keys. Users of other servers in a request are ignored: each server answers for
//! its own.

use ruma::api::federation::keys::{claim_keys, get_keys};

use crate::client::cross_signing;
use crate::client::keys::{KeyRequester, claim_local, local_device_keys};
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_keys::v1::Request, query);
    route!(r, claim_keys::v1::Request, claim);
}

async fn query(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_keys::v1::Request,
) -> Result<get_keys::v1::Response> {
    let mut resp = get_keys::v1::Response::default();
    for (user, wanted) in &req.device_keys {
        if user.server_name() != hs.server_name() {
            continue;
        }
        let Some(devices) = local_device_keys(hs, KeyRequester::Server, user, wanted).await? else {
            continue;
        };
        resp.device_keys.insert(user.clone(), devices);
        let (master, self_signing) = cross_signing::public_keys(hs, user).await?;
        if let Some(master) = master {
            resp.master_keys.insert(user.clone(), master);
        }
        if let Some(self_signing) = self_signing {
            resp.self_signing_keys.insert(user.clone(), self_signing);
        }
    }
    Ok(resp)
}

async fn claim(
    hs: &Homeserver,
    _ctx: Ctx,
    req: claim_keys::v1::Request,
) -> Result<claim_keys::v1::Response> {
    Ok(claim_keys::v1::Response::new(
        claim_local(hs, &req.one_time_keys).await?,
    ))
}
