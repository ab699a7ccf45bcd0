//! Server administration endpoints of the Client-Server API: `GET /admin/whois/{userId}`.
//!
//! The spec leaves server admins undefined, and this server has none: whois answers for the
//! caller's own account only, `403 M_FORBIDDEN` for anyone else.
//!
//! Each device is one session (one access token). Its one connection carries what the server
//! records: when the device was last seen, and its address when the host passed one on. User
//! agents are not recorded, so that field is left out. The response is built as JSON rather
//! than with ruma's type, which writes unknown fields as `null` where the spec wants strings.

use std::rc::Rc;

use http::{Method, StatusCode};
use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::db::users::{self, DeviceRecord};
use crate::error::{MatrixError, Result};
use crate::router::{Auth, Router, json_response};
use crate::{Homeserver, Session};

pub fn routes(r: &mut Router) {
    r.add_raw(
        Method::GET,
        "/_matrix/client/v3/admin/whois/{userId}",
        Rc::new(|hs: Homeserver, req, args: Vec<String>| {
            Box::pin(async move {
                let answer = async {
                    let session = hs
                        .authenticate(&req, Auth::Required)
                        .await?
                        .session()?
                        .clone();
                    let target = args.first().map(String::as_str).unwrap_or_default();
                    whois(&hs, &session, target).await
                };
                match answer.await {
                    Ok(v) => json_response(StatusCode::OK, &v),
                    Err(e) => e.into_response(),
                }
            })
        }),
    );
}

async fn whois(hs: &Homeserver, session: &Session, target: &str) -> Result<Value> {
    let target = UserId::parse(target)
        .map_err(|e| MatrixError::invalid_param(format!("invalid user id: {e}")))?;
    if target != session.user_id {
        return Err(MatrixError::forbidden(
            "you may only look up your own account",
        ));
    }
    let mut devices = Map::new();
    for dev in users::list_devices(hs, &target).await? {
        devices.insert(
            dev.device_id.to_string(),
            json!({ "sessions": [{ "connections": connections(&dev) }] }),
        );
    }
    Ok(json!({ "user_id": target, "devices": devices }))
}

fn connections(dev: &DeviceRecord) -> Vec<Value> {
    let mut c = Map::new();
    if let Some(ip) = &dev.last_seen_ip {
        c.insert("ip".into(), json!(ip));
    }
    if let Some(ts) = dev.last_seen_ts {
        c.insert("last_seen".into(), json!(ts));
    }
    if c.is_empty() {
        Vec::new()
    } else {
        vec![Value::Object(c)]
    }
}
