//! Sessions: password login, logout, and refreshing access tokens.

use std::rc::Rc;
use std::time::Duration;

use http::{Request, StatusCode};
use ruma::api::Metadata;
use ruma::api::client::session::get_login_types::v3::{LoginType, PasswordLoginType};
use ruma::api::client::session::login::v3::LoginInfo;
use ruma::api::client::session::{get_login_types, login, logout, logout_all, refresh_token};
use ruma::api::client::uiaa::UserIdentifier;
use ruma::api::path_builder::PathBuilder;
use serde_json::Value;

use crate::client::devices::remove_device;
use crate::client::uia::{self, UiaError};
use crate::db::users;
use crate::error::{MatrixError, Result};
use crate::router::{Handler, Router};
use crate::storage::Batch;
use crate::{Ctx, Homeserver, route};

pub fn routes(r: &mut Router) {
    route!(r, get_login_types::v3::Request, login_types);
    add_login_route(r);
    route!(r, logout::v3::Request, logout);
    route!(r, logout_all::v3::Request, logout_all);
    route!(r, refresh_token::v3::Request, refresh);
}

/// ruma's `LoginInfo` parser indexes the body's `type` field and panics when it is missing
/// (or the body is not JSON at all), so such bodies are refused before ruma sees them.
fn add_login_route(r: &mut Router) {
    let inner = uia::handler::<login::v3::Request>(Rc::new(
        |hs: Homeserver, ctx: Ctx, req: login::v3::Request| {
            Box::pin(async move { login(&hs, ctx, req).await.map_err(UiaError::from) })
        },
    ));
    let guarded: Handler = Rc::new(
        move |hs: Homeserver, req: Request<Vec<u8>>, args: Vec<String>| {
            let inner = inner.clone();
            Box::pin(async move {
                match serde_json::from_slice::<Value>(req.body()) {
                    Err(e) => {
                        return MatrixError::not_json(format!("request body is not JSON: {e}"))
                            .into_response();
                    }
                    Ok(v) if !v.get("type").is_some_and(Value::is_string) => {
                        return MatrixError::bad_json("the login type (`type`) is required")
                            .into_response();
                    }
                    Ok(_) => {}
                }
                inner(hs, req, args).await
            })
        },
    );
    for path in login::v3::Request::PATH_BUILDER.all_paths() {
        r.add_raw(login::v3::Request::METHOD, path, guarded.clone());
    }
}

async fn login_types(
    _hs: &Homeserver,
    _ctx: Ctx,
    _req: get_login_types::v3::Request,
) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
    ]))
}

/// The user name a password login names, from `identifier` or the deprecated `user` field.
fn login_name(p: &login::v3::Password) -> Result<&str> {
    #[allow(deprecated)]
    let legacy = p.user.as_deref();
    match (&p.identifier, legacy) {
        (Some(UserIdentifier::Matrix(m)), _) => Ok(m.user.as_str()),
        // No account here has a third-party identifier, so none can log in with one.
        (
            Some(
                UserIdentifier::Email(_)
                | UserIdentifier::Msisdn(_)
                | UserIdentifier::PhoneNumber(_),
            ),
            _,
        ) => Err(MatrixError::forbidden("invalid username or password")),
        (Some(other), _) => Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            format!("unsupported identifier type {}", other.identifier_type()),
        )),
        (None, Some(user)) => Ok(user),
        (None, None) => Err(MatrixError::missing_param("identifier is required")),
    }
}

async fn login(hs: &Homeserver, _ctx: Ctx, req: login::v3::Request) -> Result<login::v3::Response> {
    let LoginInfo::Password(p) = &req.login_info else {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            format!("unsupported login type {}", req.login_info.login_type()),
        ));
    };
    if let Some(d) = &req.device_id {
        crate::limits::device_id(d.as_str())?;
    }
    // Unknown user and wrong password look the same, so logins cannot probe for accounts.
    let invalid = || MatrixError::forbidden("invalid username or password");
    let user_id = users::local_user_id(hs, login_name(p)?).ok_or_else(invalid)?;
    let record = users::get_user(hs, &user_id).await?.ok_or_else(invalid)?;
    let password_ok = record
        .password_hash
        .as_deref()
        .is_some_and(|h| users::verify_password(hs, h, &p.password));
    if record.deactivated && (password_ok || record.password_hash.is_none()) {
        return Err(MatrixError::user_deactivated(
            "this account has been deactivated",
        ));
    }
    if !password_ok {
        return Err(invalid());
    }

    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    let existing = match &req.device_id {
        Some(d) => users::get_device(hs, &user_id, d.as_str()).await?,
        None => None,
    };
    let (device_id, issued) = match existing {
        // Logging in again as a known device replaces its credentials and keeps its name.
        Some(mut dev) => {
            dev.last_seen_ts = Some(hs.now_ms());
            let issued =
                users::issue_tokens(hs, &mut batch, &user_id, &mut dev, req.refresh_token)?;
            (dev.device_id, issued)
        }
        None => {
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
            (dev.device_id, issued)
        }
    };
    hs.commit(batch).await?;
    tracing::info!(user = %user_id, device = %device_id, "logged in");
    let mut resp = login::v3::Response::new(user_id, issued.access_token, device_id);
    #[allow(deprecated)]
    {
        resp.home_server = Some(hs.owned_server_name());
    }
    resp.refresh_token = issued.refresh_token;
    resp.expires_in = issued.expires_in_ms.map(Duration::from_millis);
    Ok(resp)
}

/// Logs out the calling device: the spec deletes the device along with its token and keys.
async fn logout(
    hs: &Homeserver,
    ctx: Ctx,
    _req: logout::v3::Request,
) -> Result<logout::v3::Response> {
    let session = ctx.session()?;
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    match users::get_device(hs, &session.user_id, session.device_id.as_str()).await? {
        Some(dev) => remove_device(hs, &mut batch, &session.user_id, &dev).await?,
        // A token whose device record is gone still must stop working.
        None => {
            batch.delete("tokens", session.access_token.as_bytes().to_vec());
            hs.caches.tokens.borrow_mut().remove(&session.access_token);
        }
    }
    hs.commit(batch).await?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(
    hs: &Homeserver,
    ctx: Ctx,
    _req: logout_all::v3::Request,
) -> Result<logout_all::v3::Response> {
    let session = ctx.session()?;
    let _g = hs.write_lock().await;
    let mut batch = Batch::new();
    for dev in users::list_devices(hs, &session.user_id).await? {
        remove_device(hs, &mut batch, &session.user_id, &dev).await?;
    }
    batch.delete("tokens", session.access_token.as_bytes().to_vec());
    hs.caches.tokens.borrow_mut().remove(&session.access_token);
    hs.commit(batch).await?;
    Ok(logout_all::v3::Response::new())
}

async fn refresh(
    hs: &Homeserver,
    _ctx: Ctx,
    req: refresh_token::v3::Request,
) -> Result<refresh_token::v3::Response> {
    let issued = users::refresh(hs, &req.refresh_token).await?;
    let mut resp = refresh_token::v3::Response::new(issued.access_token);
    resp.refresh_token = issued.refresh_token;
    resp.expires_in_ms = issued.expires_in_ms.map(Duration::from_millis);
    Ok(resp)
}
