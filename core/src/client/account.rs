//! Accounts: registration, username availability, whoami, password change and the list of
//! third-party identifiers.

use std::time::Duration;

use http::Method;
use ruma::api::client::account::register::RegistrationKind;
use ruma::api::client::account::{change_password, get_username_availability, register};
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::client::devices::remove_device;
use crate::client::misc::add_json_route;
use crate::client::uia::{self, Operation, UiaError};
use crate::db::users::{self, UserRecord};
use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, Session, route, uia_route};

/// Longest accepted password, in bytes; hashing unbounded input would be a cheap DoS.
pub const MAX_PASSWORD_BYTES: usize = 512;

pub fn routes(r: &mut Router) {
    uia_route!(r, register::v3::Request, register);
    route!(r, get_username_availability::v3::Request, available);
    uia_route!(r, change_password::v3::Request, change_password);
    add_json_route(r, Method::GET, "/_matrix/client/v3/account/whoami", whoami);
    add_json_route(r, Method::GET, "/_matrix/client/v3/account/3pid", threepids);
}

/// The user id for a requested username. Rejected rather than mapped: the localpart grammar
/// (spec appendix "User Identifiers") allows lowercase letters, digits and `._=-/+`, and the
/// whole id must fit the spec's identifier limit.
pub fn user_id_for_username(hs: &Homeserver, username: &str) -> Result<OwnedUserId> {
    if username.is_empty() {
        return Err(MatrixError::invalid_username(
            "the username must not be empty",
        ));
    }
    if let Some(c) = username
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+'))
    {
        return Err(MatrixError::invalid_username(format!(
            "usernames may contain only lowercase letters, digits and ._=-/+, not {c:?}"
        )));
    }
    crate::limits::new_user_id(username, hs.server_name())
}

pub fn check_new_password(password: &str) -> Result<()> {
    if password.is_empty() {
        return Err(MatrixError::weak_password("the password must not be empty"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(MatrixError::invalid_param(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

async fn ensure_free(hs: &Homeserver, user_id: &UserId) -> Result<()> {
    if users::get_user(hs, user_id).await?.is_some() {
        return Err(MatrixError::user_in_use("that user id is already taken"));
    }
    Ok(())
}

/// A user id for a client that did not ask for a username.
async fn generate_user_id(hs: &Homeserver) -> Result<OwnedUserId> {
    for _ in 0..8 {
        let id = user_id_for_username(hs, &format!("u{}", hs.random_string(11).to_lowercase()))?;
        if users::get_user(hs, &id).await?.is_none() {
            return Ok(id);
        }
    }
    Err(MatrixError::unknown("could not find a free user id"))
}

async fn register(
    hs: &Homeserver,
    _ctx: Ctx,
    req: register::v3::Request,
) -> Result<register::v3::Response, UiaError> {
    match req.kind {
        RegistrationKind::User => {}
        // Guests would need guest-access checks in every room endpoint; this server has none.
        RegistrationKind::Guest => {
            return Err(MatrixError::guest_access_forbidden(
                "this server does not offer guest accounts",
            )
            .into());
        }
        _ => return Err(MatrixError::invalid_param("kind must be user or guest").into()),
    }
    if !hs.config.registration_open {
        return Err(MatrixError::forbidden("registration is disabled on this server").into());
    }
    if let Some(p) = &req.password {
        check_new_password(p)?;
    }
    if let Some(d) = &req.device_id {
        crate::limits::device_id(d.as_str())?;
    }
    // The spec wants username errors before authentication, so clients learn them first.
    let wanted = req
        .username
        .as_deref()
        .map(|u| user_id_for_username(hs, u))
        .transpose()?;
    if let Some(id) = &wanted {
        ensure_free(hs, id).await?;
    }
    let done = uia::authenticate(hs, &Operation::registration(), req.auth.as_ref()).await?;

    let _g = hs.write_lock().await;
    let user_id = match wanted {
        // Someone may have taken the name while the client was authenticating.
        Some(id) => {
            ensure_free(hs, &id).await?;
            id
        }
        None => generate_user_id(hs).await?,
    };
    let password_hash = req
        .password
        .as_deref()
        .map(|p| users::hash_password(hs, p))
        .transpose()?;
    let mut batch = Batch::new();
    // The first account of a server is its owner and administrator (client::moderation).
    let first = hs
        .store
        .scan(
            "users",
            crate::storage::KeyRange::all(),
            crate::storage::Direction::Forward,
            1,
        )
        .await?
        .is_empty();
    let record = UserRecord {
        password_hash,
        created_ts: hs.now_ms(),
        admin: first,
        // Like other servers, start with the localpart as display name, so member lists show a
        // name rather than a bare id.
        displayname: Some(user_id.localpart().to_owned()),
        ..UserRecord::default()
    };
    users::put_user(&mut batch, &user_id, &record)?;
    done.consume(&mut batch);
    let mut resp = register::v3::Response::new(user_id.clone());
    if !req.inhibit_login {
        let device_id = match req.device_id {
            Some(d) => d,
            None => users::fresh_device_id(hs, &user_id).await?,
        };
        let (dev, issued) = users::new_device(
            hs,
            &mut batch,
            &user_id,
            Some(device_id),
            req.initial_device_display_name,
            req.refresh_token,
        )?;
        resp.access_token = Some(issued.access_token);
        resp.device_id = Some(dev.device_id);
        resp.refresh_token = issued.refresh_token;
        resp.expires_in = issued.expires_in_ms.map(Duration::from_millis);
    }
    hs.commit(batch).await?;
    tracing::info!(user = %user_id, "registered");
    Ok(resp)
}

async fn available(
    hs: &Homeserver,
    _ctx: Ctx,
    req: get_username_availability::v3::Request,
) -> Result<get_username_availability::v3::Response> {
    if !hs.config.registration_open {
        return Err(MatrixError::forbidden(
            "registration is disabled on this server",
        ));
    }
    let id = user_id_for_username(hs, &req.username)?;
    ensure_free(hs, &id).await?;
    Ok(get_username_availability::v3::Response::new(true))
}

/// `is_guest` is always present: ruma's response type drops it when false.
async fn whoami(hs: Homeserver, session: Session) -> Result<Value> {
    let is_guest = users::get_user(&hs, &session.user_id)
        .await?
        .is_some_and(|u| u.is_guest);
    Ok(json!({
        "user_id": session.user_id,
        "device_id": session.device_id,
        "is_guest": is_guest,
    }))
}

/// Always carries `threepids`, even empty (ruma omits an empty list; clients index it).
async fn threepids(hs: Homeserver, session: Session) -> Result<Value> {
    let list = users::list_threepids(&hs, &session.user_id).await?;
    Ok(json!({ "threepids": list }))
}

async fn change_password(
    hs: &Homeserver,
    ctx: Ctx,
    req: change_password::v3::Request,
) -> Result<change_password::v3::Response, UiaError> {
    // Without a token the spec's route is a reset by email, which this server cannot send.
    let session = ctx.session.ok_or_else(|| {
        MatrixError::missing_token(
            "log in to change your password; this server cannot reset passwords by email",
        )
    })?;
    let user = &session.user_id;
    check_new_password(&req.new_password)?;
    let op = Operation::sensitive(hs, "change_password", user).await?;
    let done = uia::authenticate(hs, &op, req.auth.as_ref()).await?;

    let _g = hs.write_lock().await;
    let mut record = users::get_user(hs, user)
        .await?
        .ok_or_else(|| MatrixError::unknown_token("the account no longer exists"))?;
    record.password_hash = Some(users::hash_password(hs, &req.new_password)?);
    let mut batch = Batch::new();
    users::put_user(&mut batch, user, &record)?;
    done.consume(&mut batch);
    if req.logout_devices {
        for dev in users::list_devices(hs, user).await? {
            if dev.device_id != session.device_id {
                remove_device(hs, &mut batch, user, &dev).await?;
            }
        }
    }
    hs.commit(batch).await?;
    tracing::info!(user = %user, logout_devices = req.logout_devices, "password changed");
    Ok(change_password::v3::Response::new())
}
