//! The front end's own audit event for an HTTP request (REQ-MON-01 over
//! HTTP). A request whose operation succeeded and wrote its own event (which
//! carries the user, the client address and the request ID) needs no other;
//! every other request gets this one: failed and refused operations, and
//! requests that never reached one (bad token, malformed body, unknown
//! route, rate limited), so that every request leaves a trace.

use crate::audit::{NewEvent, Outcome};
use crate::error::{Error, Result};
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
            401 | 403 | 429 => Outcome::Denied,
            _ => Outcome::Failed,
        };
        if self.audit_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::AuditUnavailable(
                "audit failure injected by a test".into(),
            ));
        }
        let ev = NewEvent {
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
        };
        self.audit
            .lock()
            .map_err(|_| Error::AuditUnavailable("audit lock poisoned".into()))?
            .append(ev)
            .map(|_| ())
    }
}
