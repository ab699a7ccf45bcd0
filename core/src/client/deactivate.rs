//! Account deactivation: `POST /account/deactivate`.
//!
//! A deactivated account leaves every room it is in, loses every device (with its tokens,
//! end-to-end keys and pushers), its cross-signing keys, its key backups and its contact 3PIDs, and can never log in again: login
//! answers `M_USER_DEACTIVATED`. The user record stays, so the user id is never handed out
//! again. With `erase: true` the non-event data goes too: display name, avatar, the other
//! profile fields, account data (push rules and tags included), presence and filters. The
//! erasure is recorded in the `erased_users` tree ([`is_erased`]) so that event-serving code can
//! serve redacted copies of the user's events to those who join later, as the spec asks.
//!
//! Identity servers: this server never binds 3PIDs to one, so there is nothing to unbind. The
//! spec makes `id_server_unbind_result` `success` when the server has no identifiers to unbind,
//! and `no-support` when it cannot tell which identity server to ask — which is the case for
//! every 3PID the account still has.

use http::StatusCode;
use ruma::api::client::account::ThirdPartyIdRemovalStatus;
use ruma::api::client::account::deactivate;
use ruma::api::client::uiaa::{AuthData, AuthFlow, AuthType, UiaaInfo, UserIdentifier};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::devices::remove_device;
use crate::client::uia::{self, Operation, UiaError};
use crate::db::{backup, e2ee, prefix, rooms, to_json, users};
use crate::error::{MatrixError, Result};
use crate::room::txn::{NewEvent, RoomTxn};
use crate::router::Router;
use crate::storage::Batch;
use crate::{Ctx, Homeserver, uia_route};

const ERASED: &str = "erased_users";

/// What the `erased_users` tree keeps about a user who asked for erasure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasureRecord {
    pub erased_ts: u64,
}

pub fn routes(r: &mut Router) {
    uia_route!(r, deactivate::v3::Request, deactivate);
}

/// Whether `user` deactivated their account with `erase: true`.
pub async fn is_erased(hs: &Homeserver, user: &UserId) -> Result<bool> {
    Ok(hs.store.get(ERASED, user.as_bytes()).await?.is_some())
}

async fn deactivate(
    hs: &Homeserver,
    ctx: Ctx,
    req: deactivate::v3::Request,
) -> Result<deactivate::v3::Response, UiaError> {
    let user = match &ctx.session {
        Some(s) => s.user_id.clone(),
        None => named_account(hs, req.auth.as_ref())?,
    };
    let op = match &ctx.session {
        Some(_) => Operation::sensitive(hs, "deactivate", &user).await?,
        // Without a token the password is the only proof; an account that has none cannot be
        // deactivated this way (it would take nothing but its name).
        None => Operation {
            name: "deactivate",
            user: Some(&user),
            flows: vec![vec![AuthType::Password]],
        },
    };
    let done = uia::authenticate(hs, &op, req.auth.as_ref()).await?;

    let _g = hs.write_lock().await;
    let mut record = users::get_user(hs, &user)
        .await?
        .ok_or_else(|| MatrixError::forbidden("invalid username or password"))?;
    if record.deactivated {
        return Err(MatrixError::user_deactivated("this account is already deactivated").into());
    }
    let mut batch = Batch::new();
    done.consume(&mut batch);
    let mut txns = leave_all_rooms(hs, &mut batch, &user).await?;

    for dev in users::list_devices(hs, &user).await? {
        remove_device(hs, &mut batch, &user, &dev).await?;
    }
    if e2ee::delete_cross_signing(hs, &mut batch, &user).await? {
        e2ee::record_key_change(&mut batch, hs.alloc_pos(), &user);
    }
    backup::delete_all_backups(hs, &mut batch, &user).await?;
    if let Some(s) = &ctx.session {
        // A token whose device record is gone must stop working as well.
        batch.delete("tokens", s.access_token.as_bytes().to_vec());
        hs.caches.tokens.borrow_mut().remove(&s.access_token);
    }

    let threepids = users::list_threepids(hs, &user).await?;
    delete_prefix(hs, &mut batch, "threepids", &user).await?;
    let unbind = if threepids.is_empty() {
        ThirdPartyIdRemovalStatus::Success
    } else {
        ThirdPartyIdRemovalStatus::NoSupport
    };

    if req.erase {
        record.displayname = None;
        record.avatar_url = None;
        for tree in [
            "profile_fields",
            "account_data",
            "account_data_stream",
            "filters",
        ] {
            delete_prefix(hs, &mut batch, tree, &user).await?;
        }
        batch.delete("presence", user.as_bytes().to_vec());
        // The erased account data included any stored push rules.
        hs.caches.push_rules.borrow_mut().remove(&user);
        batch.put(
            ERASED,
            user.as_bytes(),
            to_json(&ErasureRecord {
                erased_ts: hs.now_ms(),
            })?,
        );
    }
    record.deactivated = true;
    users::put_user(&mut batch, &user, &record)?;

    hs.commit(batch).await?;
    for txn in txns.drain(..) {
        txn.publish();
    }
    tracing::info!(user = %user, erase = req.erase, "account deactivated");
    Ok(deactivate::v3::Response::new(unbind))
}

/// The account a request without an access token names in its password stage. Anything else
/// is answered with the password flow, so the client knows what to send.
fn named_account(hs: &Homeserver, auth: Option<&AuthData>) -> Result<OwnedUserId, UiaError> {
    let password_flow = |failure: Option<MatrixError>| {
        let mut info = UiaaInfo::new(vec![AuthFlow::new(vec![AuthType::Password])]);
        info.params = serde_json::value::to_raw_value(&json!({})).ok();
        UiaError::Incomplete {
            info: Box::new(info),
            failure,
        }
    };
    match auth {
        None => Err(password_flow(None)),
        Some(AuthData::Password(p)) => match &p.identifier {
            UserIdentifier::Matrix(m) => users::local_user_id(hs, &m.user).ok_or_else(|| {
                password_flow(Some(MatrixError::forbidden("invalid username or password")))
            }),
            _ => Err(password_flow(Some(MatrixError::forbidden(
                "name the account with an m.id.user identifier",
            )))),
        },
        Some(_) => Err(password_flow(Some(MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNRECOGNIZED",
            "without an access token, deactivation needs the account's password",
        )))),
    }
}

/// Appends a leave event for `user` to every room they are joined to, invited to or knocking
/// on, into `batch`. The returned transactions publish their state once the batch is durable.
async fn leave_all_rooms<'a>(
    hs: &'a Homeserver,
    batch: &mut Batch,
    user: &UserId,
) -> Result<Vec<RoomTxn<'a>>> {
    let mut txns = Vec::new();
    for (room, membership) in rooms::rooms_for_user(hs, user).await? {
        if !is_in_room(&membership) {
            continue;
        }
        // A room this server can no longer write to (an unsupported version) must not keep
        // the account from being deactivated; there is no event we could send there anyway.
        let mut txn = match RoomTxn::open(hs, &room).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "cannot leave room on deactivation");
                continue;
            }
        };
        if !txn.membership(user).await?.as_ref().is_some_and(is_in_room) {
            continue;
        }
        txn.append(NewEvent::state(
            user,
            "m.room.member",
            user.as_str(),
            json!({ "membership": "leave" }),
        ))
        .await?;
        batch.extend(txn.finish().await?);
        txns.push(txn);
    }
    Ok(txns)
}

fn is_in_room(m: &MembershipState) -> bool {
    matches!(
        m,
        MembershipState::Join | MembershipState::Invite | MembershipState::Knock
    )
}

/// Deletes every record of `tree` whose key starts with the user's id part.
async fn delete_prefix(
    hs: &Homeserver,
    batch: &mut Batch,
    tree: &'static str,
    user: &UserId,
) -> Result<()> {
    for (k, _) in hs.scan_prefix(tree, &prefix(&[user.as_bytes()])).await? {
        batch.delete(tree, k);
    }
    Ok(())
}
