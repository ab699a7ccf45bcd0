//! Extended profile fields: `GET/PUT/DELETE /profile/{userId}/{keyName}`.
//!
//! `displayname` and `avatar_url` stay in the user record and go through
//! [`profile::update`](crate::client::profile), so a change made through the generic path is
//! carried into the user's room memberships like any other. Every other field (`m.tz` and
//! namespaced custom keys) lives in the `profile_fields` tree, key `user · field`, value the
//! field's JSON. The whole profile — both kinds together — must stay under the spec's 64 KiB.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use http::{Method, Request, StatusCode};
use ruma::{OwnedMxcUri, UserId};
use serde_json::{Map, Value, json};

use crate::client::profile;
use crate::db::users::UserRecord;
use crate::db::{from_json, key, prefix, to_json};
use crate::error::{MatrixError, Result};
use crate::router::{Auth, Router, json_response};
use crate::storage::Batch;
use crate::{Ctx, Homeserver};

const TREE: &str = "profile_fields";

const PATH: &str = "/_matrix/client/v3/profile/{userId}/{keyName}";

pub fn routes(r: &mut Router) {
    add(r, Method::GET, |hs, _req, user, field| async move {
        get(&hs, &user, &field).await
    });
    add(r, Method::PUT, |hs, req, user, field| async move {
        let ctx = hs.authenticate(&req, Auth::Required).await?;
        set(&hs, &ctx, &user, &field, req.body()).await?;
        Ok(json!({}))
    });
    add(r, Method::DELETE, |hs, req, user, field| async move {
        let ctx = hs.authenticate(&req, Auth::Required).await?;
        delete(&hs, &ctx, &user, &field).await?;
        Ok(json!({}))
    });
}

/// Registers `f` for `PATH`; `f` gets the raw `userId` and `keyName` path segments.
fn add<F, Fut>(r: &mut Router, method: Method, f: F)
where
    F: Fn(Homeserver, Request<Vec<u8>>, String, String) -> Fut + 'static,
    Fut: Future<Output = Result<Value>> + 'static,
{
    let f = Rc::new(f);
    r.add_raw(
        method,
        PATH,
        Rc::new(
            move |hs: Homeserver, req: Request<Vec<u8>>, args: Vec<String>| {
                let f = f.clone();
                Box::pin(async move {
                    let (Some(user), Some(field)) = (args.first().cloned(), args.get(1).cloned())
                    else {
                        return MatrixError::unrecognized("unrecognized endpoint").into_response();
                    };
                    match f(hs, req, user, field).await {
                        Ok(v) => json_response(StatusCode::OK, &v),
                        Err(e) => e.into_response(),
                    }
                })
            },
        ),
    );
}

/// Checks a key against the spec's grammar: `avatar_url`, `displayname`, `m.tz`, or a
/// namespaced identifier (`[a-z][a-z0-9_]*` parts joined by dots, at least two parts).
pub fn check_key(field: &str) -> Result<()> {
    crate::limits::profile_key(field)?;
    let part_ok = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let namespaced = field.split('.').count() >= 2 && field.split('.').all(part_ok);
    if matches!(field, "avatar_url" | "displayname") || namespaced {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(format!(
            "invalid profile key {field:?}"
        )))
    }
}

fn parse_user(user: &str) -> Result<&UserId> {
    <&UserId>::try_from(user)
        .map_err(|e| MatrixError::invalid_param(format!("invalid user id: {e}")))
}

/// The fields of `user` kept outside the user record, by key.
pub async fn custom_fields(hs: &Homeserver, user: &UserId) -> Result<BTreeMap<String, Value>> {
    let pfx = prefix(&[user.as_bytes()]);
    let mut out = BTreeMap::new();
    for (k, v) in hs.scan_prefix(TREE, &pfx).await? {
        let field = String::from_utf8_lossy(k.get(pfx.len()..).unwrap_or_default()).into_owned();
        out.insert(field, from_json(&v)?);
    }
    Ok(out)
}

/// The size of the whole profile as a JSON object, which the spec caps at 64 KiB.
pub fn profile_size(record: &UserRecord, custom: &BTreeMap<String, Value>) -> Result<usize> {
    let mut all: Map<String, Value> = custom.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if let Some(d) = &record.displayname {
        all.insert("displayname".into(), json!(d));
    }
    if let Some(a) = &record.avatar_url {
        all.insert("avatar_url".into(), json!(a));
    }
    Ok(serde_json::to_vec(&all)?.len())
}

async fn get(hs: &Homeserver, user: &str, field: &str) -> Result<Value> {
    let user = parse_user(user)?;
    check_key(field)?;
    if user.server_name() != hs.server_name() {
        return Ok(json!({ field: profile::remote_field(hs, user, field).await? }));
    }
    let record = profile::local_profile(hs, user).await?;
    let missing = || MatrixError::not_found(format!("this user has no {field}"));
    let value = match field {
        "displayname" => json!(record.displayname.ok_or_else(missing)?),
        "avatar_url" => json!(record.avatar_url.ok_or_else(missing)?),
        _ => hs
            .get_json::<Value>(TREE, &key(&[user.as_bytes(), field.as_bytes()]))
            .await?
            .ok_or_else(missing)?,
    };
    Ok(json!({ field: value }))
}

/// The value of `field` in a `PUT` body: an object with exactly that one property.
fn body_value(field: &str, body: &[u8]) -> Result<Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| MatrixError::not_json(format!("request body is not JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(MatrixError::bad_json("the body must be a JSON object"));
    };
    let value = obj
        .remove(field)
        .ok_or_else(|| MatrixError::missing_param(format!("the body has no `{field}` property")))?;
    if !obj.is_empty() {
        return Err(MatrixError::bad_json(format!(
            "the body must contain only the `{field}` property"
        )));
    }
    Ok(value)
}

async fn set(hs: &Homeserver, ctx: &Ctx, user: &str, field: &str, body: &[u8]) -> Result<()> {
    let user = parse_user(user)?;
    check_key(field)?;
    if user != ctx.user_id()? {
        return Err(MatrixError::forbidden(
            "you can only change your own profile",
        ));
    }
    let value = body_value(field, body)?;
    match field {
        "displayname" => {
            let name = match value {
                Value::String(s) if !s.is_empty() => Some(s),
                // An empty name, like `null`, is how clients clear it.
                Value::String(_) | Value::Null => None,
                _ => return Err(MatrixError::bad_json("displayname must be a string")),
            };
            profile::update(hs, ctx, user, |p| p.displayname = name).await
        }
        "avatar_url" => {
            let url = match value {
                Value::String(s) if !s.is_empty() => {
                    let uri = OwnedMxcUri::from(s);
                    uri.validate().map_err(|e| {
                        MatrixError::invalid_param(format!("avatar_url must be an mxc:// URI: {e}"))
                    })?;
                    Some(uri.to_string())
                }
                Value::String(_) | Value::Null => None,
                _ => {
                    return Err(MatrixError::bad_json(
                        "avatar_url must be an mxc:// URI string",
                    ));
                }
            };
            profile::update(hs, ctx, user, |p| p.avatar_url = url).await
        }
        _ => {
            if field == "m.tz" && !value.is_string() {
                return Err(MatrixError::bad_json(
                    "m.tz must be a time zone name string",
                ));
            }
            let _g = hs.write_lock().await;
            let record = profile::local_profile(hs, user).await?;
            let mut custom = custom_fields(hs, user).await?;
            custom.insert(field.to_owned(), value.clone());
            crate::limits::profile(profile_size(&record, &custom)?)?;
            let mut batch = Batch::new();
            batch.put(
                TREE,
                key(&[user.as_bytes(), field.as_bytes()]),
                to_json(&value)?,
            );
            hs.store.write(batch).await?;
            Ok(())
        }
    }
}

async fn delete(hs: &Homeserver, ctx: &Ctx, user: &str, field: &str) -> Result<()> {
    let user = parse_user(user)?;
    check_key(field)?;
    if user != ctx.user_id()? {
        return Err(MatrixError::forbidden(
            "you can only change your own profile",
        ));
    }
    match field {
        "displayname" => profile::update(hs, ctx, user, |p| p.displayname = None).await,
        "avatar_url" => profile::update(hs, ctx, user, |p| p.avatar_url = None).await,
        _ => {
            let _g = hs.write_lock().await;
            let mut batch = Batch::new();
            batch.delete(TREE, key(&[user.as_bytes(), field.as_bytes()]));
            hs.store.write(batch).await?;
            Ok(())
        }
    }
}
