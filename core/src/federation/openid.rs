//! `GET /_matrix/federation/v1/openid/userinfo`: whom an OpenID token of this server was
//! issued to. The third party asking is often not a homeserver at all, so the spec has no
//! signature on it: the token is the credential.

use ruma::api::federation::openid::get_openid_userinfo;

use crate::client::openid::user_for_token;
use crate::error::Result;
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_openid_userinfo::v1::Request, userinfo);
}

async fn userinfo(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_openid_userinfo::v1::Request,
) -> Result<get_openid_userinfo::v1::Response> {
    Ok(get_openid_userinfo::v1::Response::new(
        user_for_token(hs, &req.access_token).await?,
    ))
}
