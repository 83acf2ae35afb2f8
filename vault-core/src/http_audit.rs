//! The front end's own audit event for an HTTP request (REQ-MON-01 over
//! HTTP). A request whose operation succeeded and wrote its own event (which
//! carries the user, the client address and the request ID) needs no other;
//! every other request gets this one: failed and refused operations, and
//! requests that never reached one (bad token, malformed body, unknown
//! route, rate limited), so that every request leaves a trace.

use crate::audit::{Channel, NewEvent, Outcome};
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

/// Unauthenticated requests refused from one source within one minute,
/// audited as one event (see [`Vault::audit_http_refused`]).
#[derive(Debug)]
pub struct RefusedRequests<'a> {
    /// The front end they came through.
    pub channel: Channel,
    /// The client: address (or `(other sources)` past the server's table).
    pub source: &'a str,
    /// How many requests.
    pub count: u64,
    /// When the first arrived, unix milliseconds.
    pub first_ms: i64,
    /// When the last arrived.
    pub last_ms: i64,
    /// Answers by HTTP status.
    pub statuses: &'a [(u16, u64)],
    /// `METHOD:route-template` of the requests (never a concrete path).
    pub routes: &'a [String],
    /// Connections from the source closed at accept, before TLS or any
    /// request, while it was shut out for refusals (not in `count`).
    pub closed_at_accept: u64,
}

impl Vault {
    /// Appends one `http.refused` event for requests refused before anyone
    /// authenticated (no or a malformed token, unknown route, rate limit),
    /// aggregated by the server per source and minute so that a flood of
    /// them cannot fill the disk. Targets: `count=N`, `first=` and `last=`
    /// (RFC 3339), `<status>=N` per answer, then the route templates.
    pub fn audit_http_refused(&self, r: &RefusedRequests<'_>) -> Result<()> {
        let mut targets = vec![
            format!("count={}", r.count),
            format!("first={}", crate::clock::format_ms(r.first_ms)),
            format!("last={}", crate::clock::format_ms(r.last_ms)),
        ];
        targets.extend(r.statuses.iter().map(|(s, n)| format!("{s}={n}")));
        if r.closed_at_accept > 0 {
            targets.push(format!("closed_at_accept={}", r.closed_at_accept));
        }
        targets.extend(r.routes.iter().cloned());
        self.append_event(NewEvent {
            time_ms: self.now(),
            actor: None,
            channel: r.channel,
            source: Some(r.source.to_owned()),
            action: "http.refused".to_owned(),
            targets,
            outcome: Outcome::Denied,
            code: None,
            reason: None,
            request_id: None,
        })
        .map(|_| ())
    }
}
