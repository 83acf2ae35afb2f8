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
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            certificate: None,
        }
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
            Error::AuthFailed | Error::SessionInvalid => StatusCode::UNAUTHORIZED,
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
            | Error::RotationBlocked(_) => StatusCode::CONFLICT,
            Error::ImportIncomplete { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Disposed { .. } => StatusCode::GONE,
            Error::VaultBusy | Error::AuditUnavailable(_) | Error::WritesFenced => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut out = ApiError::new(status, e.code(), e.to_string());
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
            detail: self.detail,
            code: self.code.to_owned(),
            certificate: self.certificate,
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
        resp
    }
}
