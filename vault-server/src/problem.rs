//! Errors as RFC 9457 problem documents. The `code` member is the same stable
//! code the CLI prints (`vault_core::Error::code`), so scripts handle both
//! front ends alike. A problem never quotes submitted input: vault-core's
//! messages are written never to echo values, and every rejection of the
//! HTTP layer itself (bad JSON, wrong type, unknown route) gets a fixed text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use vault_core::Error;

/// The problem's stable code, kept in the response's extensions for the audit event.
#[derive(Clone, Copy, Debug)]
pub struct Code(pub &'static str);

/// A server-side error's own message (which can quote RocksDB or name
/// files) and the problem the client gets instead; the framing middleware
/// logs the first under the request ID and answers the second with that ID.
#[derive(Clone, Debug)]
pub struct Internal(pub String, pub Box<ApiError>);

/// An API error: status, stable code, and a message free of personal information.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code.
    pub code: &'static str,
    /// Human-readable detail.
    pub detail: String,
    /// Seconds to wait (429, 423).
    pub retry_after: Option<u64>,
    /// The certificate of a disposed record (410).
    pub certificate: Option<String>,
    /// Server errors only (boxed: most errors carry neither).
    server: Option<Box<ServerSide>>,
}

/// What a server error carries besides the public problem.
#[derive(Clone, Debug, Default)]
struct ServerSide {
    /// The request's ID (the operator finds the cause under it in the log).
    request_id: Option<String>,
    /// The error's own message, for the server's log only.
    internal: Option<String>,
}

/// RFC 9457 problem document.
#[derive(Serialize, ToSchema, Debug)]
pub struct Problem {
    /// `urn:pivault:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, never quoting input.
    pub detail: String,
    /// Stable code, the same as the CLI's `--json` error code.
    pub code: String,
    /// The certificate of a disposed record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// On server errors: the request ID to quote to the operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            certificate: None,
            server: None,
        }
    }

    /// Names the request on a server error's problem.
    pub fn set_request_id(&mut self, id: &str) {
        self.server.get_or_insert_with(Default::default).request_id = Some(id.to_owned());
    }

    /// The vault's disk is nearly full: no new work until space is freed.
    pub fn disk_low() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "disk_low",
            "the vault's disk is nearly full; the server takes no new work until space is freed",
        );
        e.retry_after = Some(60);
        e
    }

    /// A body over the route's limit.
    pub fn too_large() -> Self {
        Self::from_status(StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// The server-wide budget of request body bytes in memory is spent.
    pub fn overloaded() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the server is holding too many request bodies; retry shortly",
        );
        e.retry_after = Some(1);
        e
    }

    /// A body that is not valid JSON or does not match the request type.
    /// Only the position is given: serde's own message can quote the value.
    pub fn bad_json(e: &serde_json::Error) -> Self {
        let what = match e.classify() {
            serde_json::error::Category::Data => {
                "the JSON body has a wrong type, a missing or an unknown field"
            }
            serde_json::error::Category::Eof => "the JSON body ends early",
            _ => "malformed JSON body",
        };
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("{what} (line {}, column {})", e.line(), e.column()),
        )
    }

    /// An import whose check pass refused rows (nothing stored).
    pub fn import_refused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "the import has invalid rows; nothing was stored",
        )
    }

    /// An invalid parameter (ID, time, query value).
    pub fn invalid(what: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", what.to_owned())
    }

    /// No or a malformed `Authorization: Bearer` header.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "session_invalid",
            "missing or malformed bearer token: log in at POST /v1/sessions",
        )
    }

    /// Too many requests from this address.
    pub fn rate_limited(wait_s: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from your address; retry later",
        );
        e.retry_after = Some(wait_s);
        e
    }

    /// The request took longer than the server's limit.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long and was abandoned",
        )
    }

    /// The server is shutting down or overloaded.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is shutting down",
        )
    }

    /// A standby with no holder to forward to: none has published its
    /// address yet (a new holder is still opening the vault), it cannot be
    /// reached, or it is not one of this vault's servers.
    pub fn no_holder(why: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_holder",
            format!(
                "this server stands by and cannot reach the server holding the vault ({why}); retry shortly"
            ),
        );
        e.retry_after = Some(1);
        e
    }

    /// A standby forwarded a request and the holder stopped answering
    /// before it answered: whether it was carried out is unknown.
    pub fn holder_lost() -> Self {
        Self::new(
            StatusCode::BAD_GATEWAY,
            "holder_lost",
            "the server holding the vault stopped answering during the request; whether it was carried out is unknown",
        )
    }

    /// A bug or a panicked worker.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// A rejection of the HTTP layer, by status alone.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, detail) = match status.as_u16() {
            404 => ("not_found", "no such endpoint"),
            405 => ("method_not_allowed", "method not allowed on this endpoint"),
            413 => ("too_large", "request body too large"),
            415 => (
                "invalid_input",
                "unsupported media type: send application/json",
            ),
            408 => ("timeout", "request timed out"),
            s if s >= 500 => ("internal", "internal error"),
            _ => ("invalid_input", "the request is malformed"),
        };
        Self::new(status, code, detail)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidInput(_) | Error::WeakPassword(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::AuthFailed
            | Error::SessionInvalid
            | Error::SecondFactorRequired
            | Error::SecondFactorFailed => StatusCode::UNAUTHORIZED,
            Error::EnrolmentRequired => StatusCode::FORBIDDEN,
            Error::AccountLocked { .. } => StatusCode::LOCKED,
            Error::LoginThrottled { .. } | Error::RateLimited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::AccountDisabled | Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) | Error::NotAVault(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_)
            | Error::LegalHold
            | Error::NoOfficer
            | Error::ApprovalRequired { .. }
            | Error::DisposalInProgress
            | Error::PreviewStale
            | Error::RotationBlocked(_) => StatusCode::CONFLICT,
            Error::ImportIncomplete { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Disposed { .. } => StatusCode::GONE,
            Error::VaultBusy
            | Error::TakenOver
            | Error::AuditUnavailable(_)
            | Error::WritesFenced => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut out = ApiError::new(status, e.code(), e.to_string());
        if status == StatusCode::INTERNAL_SERVER_ERROR || matches!(e, Error::AuditUnavailable(_)) {
            // Storage, I/O and integrity messages can quote RocksDB and
            // name paths: the client gets the code and a fixed text.
            out.server = Some(Box::new(ServerSide {
                request_id: None,
                internal: Some(std::mem::take(&mut out.detail)),
            }));
            out.detail = match &e {
                Error::ImportIncomplete {
                    stored, last_line, ..
                } => format!(
                    "import stopped: {stored} record(s) up to line {last_line} were stored and audited, the rest was not; resume from the line after {last_line} to add no duplicate (the server's log has the cause under this request ID)"
                ),
                Error::AuditUnavailable(_) => "the audit trail cannot be written: the vault refuses work until it can (the server's log has the cause under this request ID)".to_owned(),
                _ => "internal error: the server's log has the cause under this request ID".to_owned(),
            };
        }
        match &e {
            Error::Disposed { certificate } => out.certificate = certificate.clone(),
            Error::AccountLocked { until_ms: at }
            | Error::LoginThrottled { retry_at_ms: at }
            | Error::RateLimited { retry_at_ms: at } => {
                let now = jiff::Timestamp::now().as_millisecond();
                // Rounded up: a client that waits exactly this long is let in.
                out.retry_after =
                    Some(u64::try_from(((at - now).max(1000) + 999) / 1000).unwrap_or(1));
            }
            _ => {}
        }
        out
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let body = Problem {
            type_: format!("urn:pivault:problem:{}", self.code),
            title,
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_owned(),
            certificate: self.certificate.clone(),
            request_id: self.server.as_ref().and_then(|s| s.request_id.clone()),
        };
        let mut resp = (
            self.status,
            serde_json::to_string(&body).unwrap_or_else(|_| "{}".into()),
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp.extensions_mut().insert(Code(self.code));
        if let Some(detail) = self.server.as_ref().and_then(|s| s.internal.clone()) {
            let mut public = self;
            public.server = None;
            resp.extensions_mut()
                .insert(Internal(detail, Box::new(public)));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13: a server error's problem carries the stable code and no
    /// internal message (RocksDB text, paths); the message is kept for the
    /// server's log, and the framing middleware adds the request ID.
    #[test]
    fn server_errors_echo_no_internal_message() {
        for e in [
            Error::Storage(
                "IO error: No space left on device: /srv/vault/records/000123.log".into(),
            ),
            Error::Io("cannot open /srv/vault/audit/seg-00000001.log".into()),
            Error::AuditUnavailable("write /srv/vault/audit/seg-00000001.log: ENOSPC".into()),
        ] {
            let code = e.code();
            let api = ApiError::from(e);
            assert!(api.status.is_server_error());
            assert!(!api.detail.contains("/srv"), "{}", api.detail);
            assert!(!api.detail.contains("IO error"), "{}", api.detail);
            let resp = api.into_response();
            let Some(Internal(log, public)) = resp.extensions().get::<Internal>().cloned() else {
                panic!("the internal message is kept for the log");
            };
            assert!(log.contains("/srv/vault"));
            assert_eq!(public.code, code);
            let mut public = *public;
            public.set_request_id("0190-test");
            let resp = public.into_response();
            assert!(resp.extensions().get::<Internal>().is_none());
        }
    }
}
