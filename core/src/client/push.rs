//! Push notifications (Client-Server API): push rules (`/pushrules/...`), pushers
//! (`/pushers`, `/pushers/set`) and `GET /notifications`. Rule storage, evaluation of new
//! events and unread counts live in [`crate::db::push`].

use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;

use http::{Request, StatusCode};
use ruma::api::client::push::{
    PushRule, PusherKind, delete_pushrule, get_notifications, get_pushers, get_pushrule,
    get_pushrule_actions, get_pushrule_enabled, get_pushrules_all, get_pushrules_global_scope,
    set_pusher, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
};
use ruma::api::path_builder::PathBuilder;
use ruma::api::{IncomingRequest, IncomingRequestExt, OutgoingResponseExt};
use ruma::push::{InsertPushRuleError, RemovePushRuleError, RuleKind};
use ruma::serde::Raw;
use ruma::{MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt};
use serde_json::{Map, Value, json};

pub use crate::db::push::{evaluate_event, notification_counts};

use crate::db::push::{self as store, rules, update_rules};
use crate::error::{MatrixError, Result};
use crate::router::{Handler, Router, auth_of, request_error};
use crate::{Ctx, Homeserver, route};

/// Default and largest page of `GET /notifications`.
const NOTIFICATIONS_DEFAULT_LIMIT: u64 = 20;
const NOTIFICATIONS_MAX_LIMIT: u64 = 100;
/// The spec's limits on pusher identifiers.
const MAX_APP_ID_CHARS: usize = 64;
const MAX_PUSHKEY_BYTES: usize = 512;
const PUSH_GATEWAY_PATH: &str = "/_matrix/push/v1/notify";

pub fn routes(r: &mut Router) {
    route!(r, get_pushrules_all::v3::Request, get_all);
    route!(r, get_pushrules_global_scope::v3::Request, get_global);
    route!(r, get_pushrule::v3::Request, get_rule);
    route!(r, delete_pushrule::v3::Request, delete_rule);
    route_filled::<set_pushrule::v3::Request, _, _>(
        r,
        default_conditions,
        |hs, ctx, req| async move { set_rule(&hs, ctx, req).await },
    );
    route!(r, get_pushrule_enabled::v3::Request, get_enabled);
    route!(r, set_pushrule_enabled::v3::Request, set_enabled);
    route!(r, get_pushrule_actions::v3::Request, get_actions);
    route!(r, set_pushrule_actions::v3::Request, set_actions);
    route!(r, get_pushers::v3::Request, list_pushers);
    route_filled::<set_pusher::v3::Request, _, _>(
        r,
        require_pusher_fields,
        |hs, ctx, req| async move { post_pusher(&hs, ctx, req).await },
    );
    route!(r, get_notifications::v3::Request, list_notifications);
}

/// Registers a ruma endpoint whose JSON body object first goes through `prepare`, which fills
/// in spec defaults ruma's parser insists on, or refuses what the spec requires but ruma
/// would let through. Otherwise identical to [`Router::add`]: authentication from ruma's
/// metadata, ruma's parsing and the same error mapping.
pub(crate) fn route_filled<R, F, Fut>(
    r: &mut Router,
    prepare: fn(&mut Map<String, Value>) -> Result<()>,
    f: F,
) where
    R: IncomingRequest + 'static,
    F: Fn(Homeserver, Ctx, R) -> Fut + 'static,
    Fut: Future<Output = Result<R::OutgoingResponse>> + 'static,
{
    let f = Rc::new(f);
    let auth = auth_of::<R>();
    let handler: Handler = Rc::new(
        move |hs: Homeserver, req: Request<Vec<u8>>, args: Vec<String>| {
            let f = f.clone();
            Box::pin(async move {
                let ctx = match hs.authenticate(&req, auth).await {
                    Ok(ctx) => ctx,
                    Err(e) => return e.into_response(),
                };
                let (parts, mut body) = req.into_parts();
                if let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body) {
                    if let Err(e) = prepare(&mut obj) {
                        return e.into_response();
                    }
                    if let Ok(filled) = serde_json::to_vec(&obj) {
                        body = filled;
                    }
                }
                let parsed = {
                    let borrowed = Request::from_parts(parts, body.as_slice());
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    R::try_from_http_request(borrowed, &args).map_err(|e| request_error(e, &body))
                };
                let parsed = match parsed {
                    Ok(p) => p,
                    Err(e) => return e.into_response(),
                };
                match f(hs, ctx, parsed).await {
                    Ok(resp) => match resp.try_into_http_response::<Vec<u8>>() {
                        Ok(r) => r,
                        Err(e) => {
                            MatrixError::unknown(format!("response serialization failed: {e}"))
                                .into_response()
                        }
                    },
                    Err(e) => e.into_response(),
                }
            })
        },
    );
    for path in R::PATH_BUILDER.all_paths() {
        r.add_raw(R::METHOD, path, handler.clone());
    }
}

/// `conditions` is optional in the spec ("a rule with no conditions always matches").
fn default_conditions(body: &mut Map<String, Value>) -> Result<()> {
    body.entry("conditions").or_insert_with(|| json!([]));
    Ok(())
}

/// `kind` is required (`null` deletes), and so are the pusher's details unless it is `null`;
/// the spec's answer names every missing one.
fn require_pusher_fields(body: &mut Map<String, Value>) -> Result<()> {
    let mut required = vec!["kind", "app_id", "pushkey"];
    if body.get("kind").is_some_and(|k| !k.is_null()) {
        required.extend(["app_display_name", "device_display_name", "lang", "data"]);
    }
    let missing: Vec<&str> = required
        .into_iter()
        .filter(|f| !body.contains_key(*f))
        .collect();
    if !missing.is_empty() {
        return Err(MatrixError::missing_param(format!(
            "Missing parameters: {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn check_kind(kind: &RuleKind) -> Result<()> {
    match kind {
        RuleKind::Override
        | RuleKind::Underride
        | RuleKind::Sender
        | RuleKind::Room
        | RuleKind::Content => Ok(()),
        other => Err(MatrixError::invalid_param(format!(
            "unknown push rule kind {other}"
        ))),
    }
}

fn rule_not_found() -> MatrixError {
    MatrixError::not_found("the push rule was not found")
}

fn insert_error(e: InsertPushRuleError) -> MatrixError {
    match e {
        // The spec's example answer for an unknown `before`/`after` rule.
        InsertPushRuleError::UnknownRuleId => MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "before/after rule not found",
        ),
        InsertPushRuleError::ServerDefaultRuleId => MatrixError::invalid_param(
            "rule ids starting with '.' are reserved for server-default rules",
        ),
        InsertPushRuleError::InvalidRuleId => {
            MatrixError::invalid_param("rule ids cannot contain '/' or '\\'")
        }
        InsertPushRuleError::RelativeToServerDefaultRule => {
            MatrixError::invalid_param("rules cannot be placed relative to server-default rules")
        }
        InsertPushRuleError::BeforeHigherThanAfter => {
            MatrixError::invalid_param("the 'before' rule is more important than the 'after' rule")
        }
        other => MatrixError::invalid_param(other.to_string()),
    }
}

async fn get_all(
    hs: &Homeserver,
    ctx: Ctx,
    _req: get_pushrules_all::v3::Request,
) -> Result<get_pushrules_all::v3::Response> {
    Ok(get_pushrules_all::v3::Response::new(
        rules(hs, ctx.user_id()?).await?,
    ))
}

async fn get_global(
    hs: &Homeserver,
    ctx: Ctx,
    _req: get_pushrules_global_scope::v3::Request,
) -> Result<get_pushrules_global_scope::v3::Response> {
    Ok(get_pushrules_global_scope::v3::Response::new(
        rules(hs, ctx.user_id()?).await?,
    ))
}

async fn find_rule(hs: &Homeserver, ctx: &Ctx, kind: &RuleKind, rule_id: &str) -> Result<PushRule> {
    check_kind(kind)?;
    let ruleset = rules(hs, ctx.user_id()?).await?;
    ruleset
        .get(kind.clone(), rule_id)
        .map(PushRule::from)
        .ok_or_else(rule_not_found)
}

async fn get_rule(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_pushrule::v3::Request,
) -> Result<get_pushrule::v3::Response> {
    Ok(get_pushrule::v3::Response::new(
        find_rule(hs, &ctx, &req.kind, &req.rule_id).await?,
    ))
}

async fn delete_rule(
    hs: &Homeserver,
    ctx: Ctx,
    req: delete_pushrule::v3::Request,
) -> Result<delete_pushrule::v3::Response> {
    check_kind(&req.kind)?;
    update_rules(hs, ctx.user_id()?, |rs| {
        rs.remove(req.kind.clone(), &req.rule_id)
            .map_err(|e| match e {
                RemovePushRuleError::ServerDefault => {
                    MatrixError::invalid_param("server-default rules cannot be deleted")
                }
                _ => rule_not_found(),
            })
    })
    .await?;
    Ok(delete_pushrule::v3::Response::new())
}

async fn set_rule(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_pushrule::v3::Request,
) -> Result<set_pushrule::v3::Response> {
    let set_pushrule::v3::Request {
        rule,
        before,
        after,
        ..
    } = req;
    let kind = rule.kind();
    check_kind(&kind)?;
    let rule_id = rule.rule_id().to_owned();
    update_rules(hs, ctx.user_id()?, |rs| {
        // ruma moves an existing rule in place, which can index past the end of its list;
        // taking it out first makes every placement an insertion. `enabled` survives updates.
        let mut enabled = None;
        if (before.is_some() || after.is_some())
            && !rule_id.starts_with('.')
            && let Some(existing) = rs.get(kind.clone(), &rule_id)
        {
            enabled = Some(existing.enabled());
            rs.remove(kind.clone(), &rule_id)
                .map_err(|_| rule_not_found())?;
        }
        rs.insert(rule, after.as_deref(), before.as_deref())
            .map_err(insert_error)?;
        if let Some(enabled) = enabled {
            rs.set_enabled(kind.clone(), &rule_id, enabled)
                .map_err(|_| rule_not_found())?;
        }
        Ok(())
    })
    .await?;
    Ok(set_pushrule::v3::Response::new())
}

async fn get_enabled(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_pushrule_enabled::v3::Request,
) -> Result<get_pushrule_enabled::v3::Response> {
    let rule = find_rule(hs, &ctx, &req.kind, &req.rule_id).await?;
    Ok(get_pushrule_enabled::v3::Response::new(rule.enabled))
}

async fn set_enabled(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_pushrule_enabled::v3::Request,
) -> Result<set_pushrule_enabled::v3::Response> {
    check_kind(&req.kind)?;
    update_rules(hs, ctx.user_id()?, |rs| {
        rs.set_enabled(req.kind.clone(), &req.rule_id, req.enabled)
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_enabled::v3::Response::new())
}

async fn get_actions(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_pushrule_actions::v3::Request,
) -> Result<get_pushrule_actions::v3::Response> {
    let rule = find_rule(hs, &ctx, &req.kind, &req.rule_id).await?;
    Ok(get_pushrule_actions::v3::Response::new(rule.actions))
}

async fn set_actions(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_pushrule_actions::v3::Request,
) -> Result<set_pushrule_actions::v3::Response> {
    check_kind(&req.kind)?;
    let set_pushrule_actions::v3::Request {
        kind,
        rule_id,
        actions,
        ..
    } = req;
    update_rules(hs, ctx.user_id()?, |rs| {
        rs.set_actions(kind, &rule_id, actions)
            .map_err(|_| rule_not_found())
    })
    .await?;
    Ok(set_pushrule_actions::v3::Response::new())
}

async fn list_pushers(
    hs: &Homeserver,
    ctx: Ctx,
    _req: get_pushers::v3::Request,
) -> Result<get_pushers::v3::Response> {
    let pushers = store::pushers(hs, ctx.user_id()?)
        .await?
        .into_iter()
        .map(|r| r.pusher)
        .collect();
    Ok(get_pushers::v3::Response::new(pushers))
}

fn check_ids(app_id: &str, pushkey: &str) -> Result<()> {
    if app_id.is_empty() || app_id.chars().count() > MAX_APP_ID_CHARS || app_id.contains('\0') {
        return Err(MatrixError::invalid_param(format!(
            "app_id must be 1 to {MAX_APP_ID_CHARS} characters"
        )));
    }
    if pushkey.is_empty() || pushkey.len() > MAX_PUSHKEY_BYTES || pushkey.contains('\0') {
        return Err(MatrixError::invalid_param(format!(
            "pushkey must be 1 to {MAX_PUSHKEY_BYTES} bytes"
        )));
    }
    Ok(())
}

fn check_kind_data(kind: &PusherKind) -> Result<()> {
    match kind {
        PusherKind::Http(data) => {
            let url = url::Url::parse(&data.url)
                .map_err(|e| MatrixError::invalid_param(format!("data.url: {e}")))?;
            if !matches!(url.scheme(), "https" | "http") || url.path() != PUSH_GATEWAY_PATH {
                return Err(MatrixError::invalid_param(format!(
                    "data.url must be an http(s) URL with the path {PUSH_GATEWAY_PATH}"
                )));
            }
            Ok(())
        }
        PusherKind::Email(_) => Err(MatrixError::invalid_param(
            "this server does not send email notifications",
        )),
        _ => Err(MatrixError::invalid_param("unknown pusher kind")),
    }
}

async fn post_pusher(
    hs: &Homeserver,
    ctx: Ctx,
    req: set_pusher::v3::Request,
) -> Result<set_pusher::v3::Response> {
    let session = ctx.session()?;
    match req.action {
        set_pusher::v3::PusherAction::Post(data) => {
            check_ids(&data.pusher.ids.app_id, &data.pusher.ids.pushkey)?;
            check_kind_data(&data.pusher.kind)?;
            store::set_pusher(
                hs,
                &session.user_id,
                Some(session.device_id.clone()),
                data.pusher,
                data.append,
            )
            .await?;
        }
        set_pusher::v3::PusherAction::Delete(ids) => {
            check_ids(&ids.app_id, &ids.pushkey)?;
            store::delete_pusher(hs, &session.user_id, &ids).await?;
        }
        _ => return Err(MatrixError::bad_json("unknown pusher action")),
    }
    Ok(set_pusher::v3::Response::new())
}

async fn list_notifications(
    hs: &Homeserver,
    ctx: Ctx,
    req: get_notifications::v3::Request,
) -> Result<get_notifications::v3::Response> {
    let session = ctx.session()?;
    let user = &session.user_id;
    let before = match req.from.as_deref() {
        Some(token) => Some(
            token
                .parse::<u64>()
                .map_err(|_| MatrixError::invalid_param("invalid 'from' token"))?,
        ),
        None => None,
    };
    let limit = req
        .limit
        .map(u64::from)
        .unwrap_or(NOTIFICATIONS_DEFAULT_LIMIT)
        .clamp(1, NOTIFICATIONS_MAX_LIMIT);
    let only_highlight = req.only.as_deref() == Some("highlight");
    let (page, next) = store::notifications_page(
        hs,
        user,
        before,
        usize::try_from(limit).unwrap_or(usize::MAX),
        only_highlight,
    )
    .await?;
    let now = hs.now_ms();
    let mut read_upto: HashMap<OwnedRoomId, u64> = HashMap::new();
    let mut notifications = Vec::with_capacity(page.len());
    let views = crate::visibility::Views::new();
    for (pos, rec) in page {
        let Some(pdu) = crate::db::rooms::get_pdu(hs, rec.event_id.as_str()).await? else {
            continue;
        };
        if !views.allows(hs, user, &pdu).await? {
            continue;
        }
        let read_pos = match read_upto.get(&rec.room_id) {
            Some(p) => *p,
            None => {
                let p = crate::client::receipts::read_up_to(hs, user, &rec.room_id).await?;
                read_upto.insert(rec.room_id.clone(), p);
                p
            }
        };
        let event = pdu.to_sync(now, Some((user, session.device_id.as_str())));
        notifications.push(get_notifications::v3::Notification::new(
            rec.actions,
            Raw::from_json(serde_json::value::to_raw_value(&event)?),
            pos <= read_pos,
            rec.room_id,
            MilliSecondsSinceUnixEpoch(UInt::new_saturating(rec.ts)),
        ));
    }
    let mut resp = get_notifications::v3::Response::new(notifications);
    resp.next_token = next.map(|p| p.to_string());
    Ok(resp)
}
