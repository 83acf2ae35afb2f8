//! The front end's own audit event for an HTTP request (REQ-MON-01 over
//! HTTP). A request whose operation succeeded and wrote its own event (which
//! carries the user, the client address and the request ID) needs no other;
//! every other request gets this one: failed and refused operations, and
//! requests that never reached one (bad token, malformed body, unknown
//! route, rate limited), so that every request leaves a trace.

use crate::audit::{NewEvent, Outcome};
use crate::error::Result;
use crate::ids::UserId;

use super::{Context, Vault};

impl Vault {
    /// Appends an `http.request` event: the user (if authenticated), the
    /// client address and request ID from `ctx`, the method and route
    /// template (never the concrete path: it could carry input), the HTTP
    /// status and the stable error code. Fails closed like every audit write.
    pub fn audit_http_request(
        &self,
        actor: Option<UserId>,
        ctx: &Context,
        method: &str,
        route: &str,
        status: u16,
        code: Option<&str>,
    ) -> Result<()> {
        let outcome = match status {
            200..=399 => Outcome::Success,
            401 | 403 | 423 | 429 => Outcome::Denied,
            _ => Outcome::Failed,
        };
        self.append_event(NewEvent {
            time_ms: self.now(),
            actor,
            channel: ctx.channel,
            source: ctx.source.clone(),
            action: "http.request".to_owned(),
            targets: vec![format!("{method}:{route}"), status.to_string()],
            outcome,
            code: code.map(str::to_owned),
            reason: None,
            request_id: ctx.request_id.clone(),
        })
        .map(|_| ())
    }
}
