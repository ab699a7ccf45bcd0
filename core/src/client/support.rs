//! `GET /.well-known/matrix/support`: whom to contact about this server.
//!
//! The host configures it ([`crate::Config::support`]). The spec requires at least one of
//! `contacts` (each with a `matrix_id` or an `email_address`) and `support_page`, and answers
//! `404` when there is no support information — which is what an unconfigured server says,
//! rather than a made-up contact.

use ruma::api::client::discovery::discover_support::{self, Contact};

use crate::error::{MatrixError, Result};
use crate::router::Router;
use crate::{Ctx, Homeserver, route};

/// Support information published by the server.
#[derive(Debug, Clone, Default)]
pub struct SupportInfo {
    pub contacts: Vec<Contact>,
    pub support_page: Option<String>,
}

impl SupportInfo {
    /// The contacts that the spec accepts: those giving a way to reach someone.
    fn usable_contacts(&self) -> Vec<Contact> {
        self.contacts
            .iter()
            .filter(|c| {
                c.matrix_id.is_some() || c.email_address.as_deref().is_some_and(|e| !e.is_empty())
            })
            .cloned()
            .collect()
    }
}

pub fn routes(r: &mut Router) {
    route!(r, discover_support::Request, support);
}

async fn support(
    hs: &Homeserver,
    _ctx: Ctx,
    _req: discover_support::Request,
) -> Result<discover_support::Response> {
    let info = &hs.config.support;
    let contacts = info.usable_contacts();
    let page = info.support_page.clone().filter(|p| !p.is_empty());
    if contacts.is_empty() && page.is_none() {
        return Err(MatrixError::not_found(
            "this server publishes no support information",
        ));
    }
    let mut resp = discover_support::Response::with_contacts(contacts);
    resp.support_page = page;
    Ok(resp)
}
