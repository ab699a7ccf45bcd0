//! Contact 3PIDs without an identity server: `POST /account/3pid/add`, `/account/3pid/delete`
//! and `/account/3pid/unbind` (the list, `GET /account/3pid`, is in `account.rs`).
//!
//! Adding a 3PID needs a `sid` that the server validated through its own
//! `/account/3pid/{email,msisdn}/requestToken`. This server sends no email and no SMS, so it
//! offers no such endpoint and advertises `m.3pid_changes: false`: no session id can ever have
//! been validated, and every add is refused with `M_THREEPID_AUTH_FAILED` — before the password
//! prompt, since no password could make it succeed.
//!
//! Unbinding needs an identity server; this server never binds a 3PID to one and talks to
//! none, so it cannot tell which one to ask and answers `no-support`, as the spec requires of a
//! server that does not know the identity server.

use http::StatusCode;
use ruma::UserId;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::api::client::account::{add_3pid, delete_3pid, unbind_3pid};
use ruma::thirdparty::Medium;

use crate::client::uia::UiaError;
use crate::db::key;
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route, uia_route};

pub fn routes(r: &mut Router) {
    uia_route!(r, add_3pid::v3::Request, add);
    route!(r, delete_3pid::v3::Request, delete);
    route!(r, unbind_3pid::v3::Request, unbind);
}

/// The key of one 3PID in the `threepids` tree (the layout `users::list_threepids` reads).
pub fn threepid_key(user: &UserId, medium: &Medium, address: &str) -> Vec<u8> {
    key(&[
        user.as_bytes(),
        medium.as_str().as_bytes(),
        address.as_bytes(),
    ])
}

fn check_medium(medium: &Medium) -> Result<()> {
    match medium {
        Medium::Email | Medium::Msisdn => Ok(()),
        other => Err(MatrixError::invalid_param(format!(
            "unknown medium {}; expected email or msisdn",
            other.as_str()
        ))),
    }
}

async fn add(
    _hs: &Homeserver,
    ctx: Ctx,
    req: add_3pid::v3::Request,
) -> Result<add_3pid::v3::Response, UiaError> {
    ctx.user_id()?;
    Err(MatrixError::new(
        StatusCode::FORBIDDEN,
        "M_THREEPID_AUTH_FAILED",
        format!(
            "no validated session {}: this server does not validate email addresses or phone numbers",
            req.sid
        ),
    )
    .into())
}

async fn delete(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_3pid::v3::Request,
) -> Result<delete_3pid::v3::Response> {
    let user = ctx.user_id()?;
    check_medium(&req.medium)?;
    let _g = hs.write_lock().await;
    let k = threepid_key(user, &req.medium, &req.address);
    // Removing an identifier the account does not have is not an error: the outcome the
    // client asked for holds.
    if hs.store.get("threepids", &k).await?.is_some() {
        let mut batch = Batch::new();
        batch.delete("threepids", k);
        hs.store.write(batch).await?;
        tracing::info!(user = %user, medium = req.medium.as_str(), "3pid removed");
    }
    Ok(delete_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}

/// Unbinding leaves the homeserver's own list alone (that is what `delete` is for).
async fn unbind(
    _hs: &Homeserver,
    ctx: Ctx,
    req: unbind_3pid::v3::Request,
) -> Result<unbind_3pid::v3::Response> {
    ctx.user_id()?;
    check_medium(&req.medium)?;
    Ok(unbind_3pid::v3::Response::new(
        ThirdPartyIdRemovalStatus::NoSupport,
    ))
}
