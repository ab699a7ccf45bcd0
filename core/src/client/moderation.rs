//! Server administration of accounts: locking and suspension (`/_matrix/client/v1/admin/...`),
//! and registration-token validity.
//!
//! Who is an administrator: the first account registered on a server. Opening a Hearth page
//! is running one's own server, so its first account is its owner; later accounts are not
//! administrators. A locked account can do nothing (`401 M_USER_LOCKED`, soft logout); a
//! suspended one may read, leave rooms and redact its own events, and nothing else that
//! creates events (`403 M_USER_SUSPENDED`).

use ruma::api::client::account::check_registration_token_validity;
use ruma::api::client::admin::{is_user_locked, is_user_suspended, lock_user, suspend_user};
use ruma::{OwnedUserId, UserId};

use crate::db::users::{self, UserRecord};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, is_user_locked::v1::Request, get_locked);
    route!(r, lock_user::v1::Request, set_locked);
    route!(r, is_user_suspended::v1::Request, get_suspended);
    route!(r, suspend_user::v1::Request, set_suspended);
    route!(
        r,
        check_registration_token_validity::v1::Request,
        token_validity
    );
}

pub async fn is_admin(hs: &Homeserver, user: &UserId) -> Result<bool> {
    Ok(users::get_user(hs, user)
        .await?
        .is_some_and(|u| u.admin && !u.deactivated))
}

/// The target of an admin call, after the spec's checks: the caller is an administrator (403),
/// the target is local (400), exists and is active (404), and is not an administrator (403).
async fn admin_target(
    hs: &Homeserver,
    ctx: &Ctx,
    target: &UserId,
) -> Result<(OwnedUserId, UserRecord)> {
    let caller = ctx.user_id()?;
    if !is_admin(hs, caller).await? {
        return Err(MatrixError::forbidden(
            "requesting user is not a server administrator",
        ));
    }
    if target.server_name() != hs.server_name() {
        return Err(MatrixError::invalid_param(
            "user does not belong to the local server",
        ));
    }
    let rec = users::get_user(hs, target)
        .await?
        .filter(|r| !r.deactivated)
        .ok_or_else(|| MatrixError::not_found("user not found"))?;
    if rec.admin {
        return Err(MatrixError::forbidden(
            "the target user is a server administrator",
        ));
    }
    Ok((target.to_owned(), rec))
}

async fn get_locked(
    hs: &Homeserver,
    ctx: Ctx,
    req: is_user_locked::v1::Request,
) -> Result<is_user_locked::v1::Response> {
    let (_, rec) = admin_target(hs, &ctx, &req.user_id).await?;
    Ok(is_user_locked::v1::Response::new(rec.locked))
}

async fn get_suspended(
    hs: &Homeserver,
    ctx: Ctx,
    req: is_user_suspended::v1::Request,
) -> Result<is_user_suspended::v1::Response> {
    let (_, rec) = admin_target(hs, &ctx, &req.user_id).await?;
    Ok(is_user_suspended::v1::Response::new(rec.suspended))
}

async fn set_locked(
    hs: &Homeserver,
    ctx: Ctx,
    req: lock_user::v1::Request,
) -> Result<lock_user::v1::Response> {
    let _lock = hs.write_lock().await;
    let (user, mut rec) = admin_target(hs, &ctx, &req.user_id).await?;
    rec.locked = req.locked;
    let mut batch = Batch::new();
    users::put_user(&mut batch, &user, &rec)?;
    hs.store.write(batch).await?;
    hs.caches.user_flags.borrow_mut().remove(&user);
    Ok(lock_user::v1::Response::new(req.locked))
}

async fn set_suspended(
    hs: &Homeserver,
    ctx: Ctx,
    req: suspend_user::v1::Request,
) -> Result<suspend_user::v1::Response> {
    let _lock = hs.write_lock().await;
    let (user, mut rec) = admin_target(hs, &ctx, &req.user_id).await?;
    rec.suspended = req.suspended;
    let mut batch = Batch::new();
    users::put_user(&mut batch, &user, &rec)?;
    hs.store.write(batch).await?;
    hs.caches.user_flags.borrow_mut().remove(&user);
    Ok(suspend_user::v1::Response::new(req.suspended))
}

pub use crate::db::users::{flags, suspended_error};

/// Registration here takes no tokens: with registration open every token is simply not valid
/// (`200 {"valid": false}`); with registration closed the spec's answer is `403 M_FORBIDDEN`.
async fn token_validity(
    hs: &Homeserver,
    _ctx: Ctx,
    _req: check_registration_token_validity::v1::Request,
) -> Result<check_registration_token_validity::v1::Response> {
    if !hs.config.registration_open {
        return Err(MatrixError::forbidden(
            "registration is not enabled on this homeserver",
        ));
    }
    Ok(check_registration_token_validity::v1::Response::new(false))
}
