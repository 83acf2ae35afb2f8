//! The `/v1` API: one handler per CLI command, each answering with the same
//! JSON document as `pivault --json`. Personal information travels only in
//! bodies (never in paths or query strings): look-ups by value are POSTs.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use vault_core::access::Role;
use vault_core::audit::EventFilter;
use vault_core::certificate;
use vault_core::ids::{CertificateId, CollectionName, DisposalId, RecordId, SubjectId};
use vault_core::schema::Schema;
use vault_core::secret::SecretString;
use vault_core::vault::{
    ContractorScope, DisposalParties, DisposalRequest, DisposalScope, ExportRecipient,
    ExportRequest, ExportScope, ImportFormat, RecordFilter, RetentionPolicy,
};
use vault_core::views;

use crate::problem::{ApiError, Problem};
use crate::{App, Bearer, RequestContext};

type Res = Result<Response, ApiError>;

// ----- extractors ----------------------------------------------------------

impl<S: Send + Sync> FromRequestParts<S> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let v = crate::bearer_token(&parts.headers).ok_or_else(ApiError::unauthenticated)?;
        Ok(Bearer(SecretString::new(v.to_owned())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .ok_or_else(ApiError::internal)
    }
}

/// A JSON body. Rejections never quote the body (see [`ApiError::bad_json`]).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let v = v.split(';').next().unwrap_or("").trim();
                v.eq_ignore_ascii_case("application/json")
                    || v.eq_ignore_ascii_case("application/merge-patch+json")
            });
        // The body is read (within the limit) before any rejection, so that
        // the connection stays usable for the client's next request.
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE))?;
        if !json {
            return Err(ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_json(&e))
    }
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid(&format!("{what} is not a valid ID")))
}

fn parse_time(s: &str) -> Result<i64, ApiError> {
    Ok(vault_core::clock::parse_time(s)?)
}

/// A 200 answer: the document named `document` (`schemas/<document>.json`),
/// named by [`views::document`] as `pivault --json` names it.
fn ok(document: &str, v: Value) -> Res {
    Ok(Json(views::document(document, v)).into_response())
}

/// A 201 answer, named as [`ok`] names it.
fn created(document: &str, v: Value) -> Res {
    Ok((StatusCode::CREATED, Json(views::document(document, v))).into_response())
}

// ----- request bodies --------------------------------------------------------

/// Log in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginReq {
    /// Username.
    pub username: String,
    /// Password (sent once; never logged).
    pub password: String,
    /// The second factor, when the account has one: the 6-digit code of
    /// its authenticator app, or a recovery code (never logged).
    #[serde(default)]
    pub code: Option<String>,
}

/// A code from the authenticator app (confirms an enrolment).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeReq {
    /// The 6-digit code the app shows now.
    pub code: String,
}

/// Which roles must sign in with a second factor.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TwoFactorPolicyReq {
    /// Role names (admin, officer, clerk, auditor, contractor); empty for none.
    pub required: Vec<String>,
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Unique login name.
    pub username: String,
    /// admin, officer, clerk, auditor or contractor.
    pub role: String,
    /// Their initial password (policy: 12+ characters, not common).
    pub password: String,
    /// Grant a clerk the reveal of sensitive fields.
    #[serde(default)]
    pub reveal: bool,
    /// The person's full name, printed on the certificates they sign (a new
    /// officer waiting for approval keeps it until approved).
    #[serde(default)]
    pub full_name: Option<String>,
}

/// A new service account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewService {
    /// Its unique name.
    pub username: String,
    /// Its role: retention-runner (the default) or audit-exporter.
    #[serde(default = "retention_runner")]
    pub role: String,
}

fn retention_runner() -> String {
    Role::RetentionRunner.as_str().to_owned()
}

/// A reveal grant given or taken away.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealGrantReq {
    /// `true` gives the grant (waits for a second officer), `false` takes it away.
    pub grant: bool,
}

/// A person's full name set or cleared.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FullNameReq {
    /// The full name certificates print; `null` clears it (the username is printed).
    pub full_name: Option<String>,
}

/// A role change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleReq {
    /// The new role.
    pub role: String,
}

/// A password change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordReq {
    /// The new password.
    pub password: String,
    /// Your current password: required to change your own (not for an admin's reset of another user).
    #[serde(default)]
    pub current_password: Option<String>,
}

/// A new collection.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// Collection name.
    pub name: String,
    /// Schema document (format in the README).
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// A new record.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// Collection.
    pub collection: String,
    /// Subject UUID or customer reference; a new subject when absent.
    pub subject: Option<String>,
    /// The record's fields, per the collection's schema.
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A record correction.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecord {
    /// The record's new fields (a new version).
    #[schema(value_type = Object)]
    pub data: Value,
}

/// A reveal of sensitive fields.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealReq {
    /// Fields to show in full.
    pub fields: Vec<String>,
    /// Why (audited; no personal information).
    pub reason: String,
}

/// A search of one collection by a searchable field's value. The value is
/// in the body, never in the URL (URLs are logged by proxies).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FindReq {
    /// A field type: every searchable field of that type is searched
    /// (`ssn`, `drivers_license`, `state_id`, `email`, `phone`; a name type
    /// such as `family_name` searches every searchable name field).
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// One searchable field by name (instead of `type`).
    pub field: Option<String>,
    /// The value, in any formatting the field's type accepts.
    pub value: String,
    /// `exact` (default) or `prefix` (names only, 3 letters or more).
    #[serde(rename = "match")]
    pub mode: Option<String>,
}

/// A customer reference to map to its subject ID.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectReq {
    /// Customer reference or subject UUID.
    pub reference: String,
}

/// An export of records (REQ-WISP-05): exactly one of `subject` and
/// `collection`; exactly one of `to`, `passphrase` and `plaintext`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportReq {
    /// A data subject: customer reference or subject UUID.
    pub subject: Option<String>,
    /// A collection.
    pub collection: Option<String>,
    /// An incident: every record of its affected data subjects.
    pub incident: Option<String>,
    /// age X25519 recipients (`age1…`).
    #[serde(default)]
    pub to: Vec<String>,
    /// A passphrase to encrypt with (age scrypt).
    pub passphrase: Option<String>,
    /// No encryption (needs the export-plaintext permission).
    #[serde(default)]
    pub plaintext: bool,
    /// Why (audited).
    pub reason: String,
}

impl std::fmt::Debug for ExportReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The passphrase is a secret: never in a log.
        f.debug_struct("ExportReq")
            .field("subject", &self.subject.as_ref().map(|_| "<reference>"))
            .field("collection", &self.collection)
            .field("incident", &self.incident)
            .field("to", &self.to)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

/// Record list filter.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecordQuery {
    /// Only this collection.
    pub collection: Option<String>,
    /// Only this subject (UUID; resolve references with POST /v1/subjects/resolve).
    pub subject: Option<String>,
}

/// Import parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `jsonl` (default) or `csv`.
    pub format: Option<String>,
    /// Column naming each row's subject (default `subject`).
    pub subject_column: Option<String>,
    /// CSV headers to fields: `Header=field,Other Header=other` (`Header=`
    /// drops a column).
    pub map: Option<String>,
    /// Validate every row and store nothing.
    pub check: Option<bool>,
}

/// What to dispose of, and who is named on the certificate.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisposeReq {
    /// `record`, `subject`, `query`, `records` or `past_retention`.
    pub scope: String,
    /// The record (scope `record`).
    pub record: Option<String>,
    /// The subject UUID or customer reference (scope `subject`).
    pub subject: Option<String>,
    /// Record IDs (scope `records`: one batch and one certificate, like `dispose from`).
    pub records: Option<Vec<String>>,
    /// Only this collection (scope `query`).
    pub collection: Option<String>,
    /// Cut-off, RFC 3339 or YYYY-MM-DD, exclusive (scope `query`).
    pub before: Option<String>,
    /// Compare the last update instead of creation (scope `query`).
    #[serde(default)]
    pub by_updated: bool,
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's `plan`: dispose only if the records are exactly those
    /// (409 `preview_stale` when one was added, held or disposed of since).
    pub plan: Option<String>,
    #[serde(flatten)]
    pub parties: Parties,
}

/// Parties named on a certificate.
#[derive(Deserialize, ToSchema, Default)]
pub struct Parties {
    /// The data owner (your business).
    #[serde(default)]
    pub data_owner: String,
    /// The data owner's address.
    pub data_owner_address: Option<String>,
    /// The operator's title.
    pub title: Option<String>,
    /// The disposal contractor's organisation.
    pub contractor_org: Option<String>,
    /// The contract reference.
    pub contract_ref: Option<String>,
    /// The contractor's certification (scheme and number, e.g. NAID AAA).
    pub contractor_cert: Option<String>,
}

impl Parties {
    fn into_core(self) -> DisposalParties {
        DisposalParties {
            data_owner: self.data_owner,
            data_owner_address: self.data_owner_address,
            operator_title: self.title,
            operator_organisation: None,
            contractor_organisation: self.contractor_org,
            contract_reference: self.contract_ref,
            contractor_certification: self.contractor_cert,
        }
    }
}

/// The retention schedule: dispose of everything past retention every N
/// hours, run by the server; `null` turns it off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionScheduleReq {
    /// Hours between runs (1..=8784), or null for off.
    pub every_hours: Option<u32>,
}

/// A retention run.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionRunReq {
    /// Plan only.
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's (or `retention/due`'s) `plan`: dispose only if the
    /// records past retention are exactly those (409 `preview_stale`).
    pub plan: Option<String>,
    #[serde(flatten)]
    pub parties: Parties,
}

/// A retention policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionReq {
    /// Keep records this many days.
    pub days: u32,
    /// Count from the last update instead of creation.
    #[serde(default)]
    pub from_updated: bool,
}

/// A legal hold on a record or a subject.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldReq {
    /// The record.
    pub record: Option<String>,
    /// The subject UUID or customer reference.
    pub subject: Option<String>,
    /// Why (required to place a hold; no personal information).
    pub reason: Option<String>,
}

/// Certificate validation.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateReq {
    /// The validator's title.
    pub title: Option<String>,
}

/// A contractor's co-signature, made offline with their own key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CosignReq {
    /// Ed25519 signature over the certificate payload, hex (128 digits).
    pub signature: String,
}

/// A contractor's scope.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContractorReq {
    /// Collections the contractor may dispose in.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Individual records.
    #[serde(default)]
    pub records: Vec<String>,
    /// The contractor's Ed25519 public key, PEM.
    pub public_key_pem: Option<String>,
}

/// Audit log filter.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this user (username).
    pub actor: Option<String>,
    /// From this time (RFC 3339 or YYYY-MM-DD).
    pub since: Option<String>,
    /// Before this time.
    pub until: Option<String>,
    /// Only actions starting with this.
    pub action: Option<String>,
    /// The latest N events.
    pub limit: Option<usize>,
}

/// What `GET /v1/audit/export` exports.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// From the first event at or after this time (RFC 3339 or YYYY-MM-DD).
    pub since: Option<String>,
    /// From this seq.
    pub from_seq: Option<u64>,
    /// jsonl (the default), syslog or cef.
    pub format: Option<String>,
}

/// Report window.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// From (default: 30 days ago).
    pub since: Option<String>,
    /// Until (default: now).
    pub until: Option<String>,
}

/// Request bodies may hold passwords or personal information: their Debug
/// shows the type only.
macro_rules! opaque_debug {
    ($($t:ty),* $(,)?) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t)).finish_non_exhaustive()
            }
        }
    )*};
}

opaque_debug!(
    LoginReq,
    CodeReq,
    TwoFactorPolicyReq,
    NewUser,
    RoleReq,
    PasswordReq,
    NewCollection,
    NewRecord,
    UpdateRecord,
    RevealReq,
    FindReq,
    SubjectReq,
    RecordQuery,
    ImportQuery,
    DisposeReq,
    Parties,
    RetentionRunReq,
    RetentionReq,
    HoldReq,
    ValidateReq,
    CosignReq,
    ContractorReq,
    AuditQuery,
    ReportQuery
);

impl<T> std::fmt::Debug for Body<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body(..)")
    }
}

// ----- sessions ----------------------------------------------------------------

/// Log in: returns a bearer token (shown once).
#[utoipa::path(post, path = "/v1/sessions", request_body = LoginReq, tag = "sessions",
    responses((status = 201, description = "token issued", body = Object),
              (status = 401, body = Problem), (status = 423, description = "account locked", body = Problem),
              (status = 429, body = Problem)))]
async fn login(State(app): State<Arc<App>>, rc: RequestContext, Body(req): Body<LoginReq>) -> Res {
    if let Err(wait) = app.login_buckets.take(crate::SourceKey::from(rc.peer)) {
        return Err(ApiError::rate_limited(wait));
    }
    let (s, token, ttl_ms) = app
        .login(
            &rc,
            req.username,
            SecretString::new(req.password),
            req.code.map(SecretString::new),
        )
        .await?;
    let expires = jiff::Timestamp::now().as_millisecond() + ttl_ms;
    created(
        "session",
        json!({
            "token": token.expose(), "user_id": s.user().to_string(),
            "expires": vault_core::clock::format_ms(expires),
            "enrol_only": s.enrol_only(),
        }),
    )
}

// ----- two-factor sign-in -----------------------------------------------------

/// Start enrolling your second factor: a new TOTP secret, shown once, for
/// your authenticator app. Allowed to a session that may only enrol.
#[utoipa::path(post, path = "/v1/two-factor/enrolment", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem), (status = 409, body = Problem)))]
async fn begin_enrolment(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let e = app
        .as_user(&rc, t, |v, s| v.begin_two_factor_enrolment(s))
        .await?;
    ok(
        "two-factor-enrolment",
        json!({ "secret": e.secret_base32.expose(), "otpauth_uri": e.uri.expose(),
                "period_s": vault_core::totp::PERIOD_S, "digits": vault_core::totp::DIGITS }),
    )
}

/// Confirm the enrolment with a code from the app. Returns a new token with
/// everything your role grants (the token that confirmed is revoked) and
/// the recovery codes, shown once.
#[utoipa::path(post, path = "/v1/two-factor/enrolment/confirm", request_body = CodeReq, tag = "sessions",
    security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem), (status = 404, body = Problem),
              (status = 423, body = Problem)))]
async fn confirm_enrolment(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<CodeReq>,
) -> Res {
    let (token, codes, ttl_ms) = app
        .confirm_enrolment(&rc, t, SecretString::new(req.code))
        .await?;
    let expires = jiff::Timestamp::now().as_millisecond() + ttl_ms;
    ok(
        "two-factor-confirmed",
        json!({ "token": token.expose(), "expires": vault_core::clock::format_ms(expires),
                "recovery_codes": codes.iter().map(|c| c.expose()).collect::<Vec<_>>() }),
    )
}

/// Remove a user's second factor (admin; not your own): a lost phone.
#[utoipa::path(delete, path = "/v1/users/{name}/two-factor", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn reset_two_factor(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let id = app
        .as_user(&rc, t, move |v, s| v.reset_two_factor(s, &name))
        .await?;
    ok(
        "user-change",
        json!({ "user_id": id.to_string(), "two_factor": "none" }),
    )
}

/// Which roles must sign in with a second factor.
#[utoipa::path(get, path = "/v1/policy/two-factor", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn show_two_factor_policy(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let p = app
        .as_user(&rc, t, |v, s| v.get_two_factor_policy(s))
        .await?;
    ok("two-factor-policy", views::two_factor_policy(&p))
}

/// Set which roles must sign in with a second factor (admin).
#[utoipa::path(put, path = "/v1/policy/two-factor", request_body = TwoFactorPolicyReq, tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_two_factor_policy(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<TwoFactorPolicyReq>,
) -> Res {
    let p = vault_core::access::TwoFactorPolicy::parse(&if req.required.is_empty() {
        "none".to_owned()
    } else {
        req.required.join(",")
    })
    .map_err(ApiError::from)?;
    let p2 = p.clone();
    app.as_user(&rc, t, move |v, s| v.set_two_factor_policy(s, &p2))
        .await?;
    ok("two-factor-policy", views::two_factor_policy(&p))
}

/// Log out: revokes the token.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn logout(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let token = SecretString::new(t.0.expose().to_owned());
    app.as_user(&rc, t, move |v, _| v.revoke_token(&token))
        .await?;
    ok("session-end", json!({ "logged_out": true }))
}

/// The authenticated user.
#[utoipa::path(get, path = "/v1/whoami", tag = "sessions", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn whoami(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let u = app.as_user(&rc, t, |v, s| v.whoami(s)).await?;
    ok("user", views::user(&u))
}

// ----- users -------------------------------------------------------------------

/// List users (admin, officer, auditor).
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_users(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let us = app.as_user(&rc, t, |v, s| v.list_users(s)).await?;
    ok(
        "user-list",
        Value::Array(us.iter().map(views::user).collect()),
    )
}

/// Add a user (admin).
#[utoipa::path(post, path = "/v1/users", request_body = NewUser, tag = "users", security(("bearer" = [])),
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn add_user(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<NewUser>,
) -> Res {
    let role = Role::parse(&req.role).map_err(ApiError::from)?;
    let pw = SecretString::new(req.password);
    let name = req.username;
    let n2 = name.clone();
    let id = app
        .as_user_long(&rc, t, move |v, s| {
            v.add_person(s, &n2, &pw, role, req.reveal, req.full_name.as_deref())
        })
        .await?;
    created(
        "user-added",
        json!({ "user_id": id.to_string(), "username": name, "role": role.as_str() }),
    )
}

/// Add a service account (a script's credential); its token is in the
/// answer, shown this once (officer: the caller must hold every permission
/// of the service's role).
#[utoipa::path(post, path = "/v1/services", request_body = NewService, tag = "services", security(("bearer" = [])),
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn add_service(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<NewService>,
) -> Res {
    let role = Role::parse(&req.role).map_err(ApiError::from)?;
    let name = req.username;
    let n2 = name.clone();
    let (id, token) = app
        .as_user(&rc, t, move |v, s| v.add_service_account(s, &n2, role))
        .await?;
    created(
        "service-token",
        views::service_token(id, &name, role.as_str(), token.expose()),
    )
}

/// List service accounts and their last use (admin, officer, auditor).
#[utoipa::path(get, path = "/v1/services", tag = "services", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_services(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let list = app
        .as_user(&rc, t, |v, s| v.list_service_accounts(s))
        .await?;
    ok(
        "service-list",
        Value::Array(list.iter().map(views::service_account).collect()),
    )
}

/// Replace a service account's token: the old one fails its next call.
#[utoipa::path(post, path = "/v1/services/{name}/rotate", tag = "services", security(("bearer" = [])),
    params(("name" = String, Path, description = "service account name")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn rotate_service(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let n2 = name.clone();
    let (token, list) = app
        .as_user(&rc, t, move |v, s| {
            let token = v.rotate_service_token(s, &n2)?;
            Ok((token, v.service_accounts()?))
        })
        .await?;
    let a = list
        .iter()
        .find(|a| a.username.as_str() == name)
        .ok_or_else(|| ApiError::from(vault_core::Error::NotFound("service account")))?;
    ok(
        "service-token",
        views::service_token(a.id, &name, a.role.as_str(), token.expose()),
    )
}

/// Revoke a service account: its token fails the next call.
#[utoipa::path(delete, path = "/v1/services/{name}", tag = "services", security(("bearer" = [])),
    params(("name" = String, Path, description = "service account name")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_service(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let n2 = name.clone();
    let id = app
        .as_user(&rc, t, move |v, s| v.revoke_service_account(s, &n2))
        .await?;
    ok(
        "service-revocation",
        json!({ "user_id": id.to_string(), "username": name, "state": "revoked" }),
    )
}

/// What an admin can do to a user by name.
#[derive(Clone, Copy)]
enum UserAction {
    Disable,
    Enable,
    Unlock,
}

async fn user_action(
    app: Arc<App>,
    rc: RequestContext,
    t: Bearer,
    name: String,
    a: UserAction,
) -> Res {
    let id = app
        .as_user(&rc, t, move |v, s| match a {
            UserAction::Disable => v.disable_user(s, &name),
            UserAction::Enable => v.enable_user(s, &name),
            UserAction::Unlock => v.unlock_user(s, &name),
        })
        .await?;
    ok(
        "user-change",
        match a {
            UserAction::Disable => json!({ "user_id": id.to_string(), "state": "disabled" }),
            UserAction::Enable => json!({ "user_id": id.to_string(), "state": "active" }),
            UserAction::Unlock => json!({ "user_id": id.to_string(), "locked": false }),
        },
    )
}

/// Disable a user (admin): their sessions and tokens stop at once (REQ-WISP-07).
#[utoipa::path(post, path = "/v1/users/{name}/disable", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn disable_user(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    user_action(app, rc, t, name, UserAction::Disable).await
}

/// Re-enable a user (admin).
#[utoipa::path(post, path = "/v1/users/{name}/enable", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn enable_user(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    user_action(app, rc, t, name, UserAction::Enable).await
}

/// Lift a lock-out (admin).
#[utoipa::path(post, path = "/v1/users/{name}/unlock", tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn unlock_user(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    user_action(app, rc, t, name, UserAction::Unlock).await
}

/// Change a user's role (admin).
#[utoipa::path(put, path = "/v1/users/{name}/role", request_body = RoleReq, tag = "users", security(("bearer" = [])),
    params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn set_role(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<RoleReq>,
) -> Res {
    let role = Role::parse(&req.role).map_err(ApiError::from)?;
    let id = app
        .as_user(&rc, t, move |v, s| v.set_role(s, &name, role))
        .await?;
    ok(
        "user-change",
        json!({ "user_id": id.to_string(), "role": role.as_str() }),
    )
}

/// Give a clerk the reveal grant (409 `approval_required` until a second
/// officer approves) or take it away (at once). Admin or officer.
#[utoipa::path(put, path = "/v1/users/{name}/reveal", request_body = RevealGrantReq, tag = "users",
    security(("bearer" = [])), params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn set_reveal_grant(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<RevealGrantReq>,
) -> Res {
    let grant = req.grant;
    let id = app
        .as_user(&rc, t, move |v, s| v.set_reveal_grant(s, &name, grant))
        .await?;
    ok(
        "user-change",
        json!({ "user_id": id.to_string(), "reveal": grant }),
    )
}

/// Set or clear a person's full name, printed on the certificates they
/// sign (admin).
#[utoipa::path(put, path = "/v1/users/{name}/full-name", request_body = FullNameReq, tag = "users",
    security(("bearer" = [])), params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn set_full_name(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<FullNameReq>,
) -> Res {
    let full = req.full_name;
    let shown = full.as_deref().map(|n| n.trim().to_owned());
    let id = app
        .as_user(&rc, t, move |v, s| {
            v.set_full_name(s, &name, full.as_deref())
        })
        .await?;
    ok(
        "user-change",
        json!({ "user_id": id.to_string(), "full_name": shown }),
    )
}

/// Change a password (your own, or anyone's as admin).
#[utoipa::path(put, path = "/v1/users/{name}/password", request_body = PasswordReq, tag = "users",
    security(("bearer" = [])), params(("name" = String, Path, description = "username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn set_password(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<PasswordReq>,
) -> Res {
    let pw = SecretString::new(req.password);
    let current = req.current_password.map(SecretString::new);
    let n2 = name.clone();
    app.as_user_long(&rc, t, move |v, s| match current {
        // Your own password: the current one is verified by the vault.
        Some(cur) if v.whoami(s)?.username.as_str() == n2 => v.change_own_password(s, &cur, &pw),
        Some(_) => Err(vault_core::Error::InvalidInput(
            "current_password is only for changing your own password".into(),
        )),
        None => v.set_password(s, &n2, &pw),
    })
    .await?;
    ok(
        "password-change",
        json!({ "username": name, "password_changed": true }),
    )
}

/// Pending two-person requests (admin, officer, auditor).
#[utoipa::path(get, path = "/v1/approvals", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_approvals(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let rs = app.as_user(&rc, t, |v, s| v.pending_requests(s)).await?;
    ok(
        "request-list",
        Value::Array(rs.iter().map(views::pending).collect()),
    )
}

/// Approve and apply a pending request (an officer other than the requester).
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "request ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn approve_request(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let i2 = id.clone();
    app.as_user(&rc, t, move |v, s| v.approve_request(s, &i2))
        .await?;
    ok(
        "request-decision",
        json!({ "request": id, "approved": true }),
    )
}

/// Reject a pending request (an officer, or the requester).
#[utoipa::path(post, path = "/v1/approvals/{id}/reject", tag = "users", security(("bearer" = [])),
    params(("id" = String, Path, description = "request ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn reject_request(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let i2 = id.clone();
    app.as_user(&rc, t, move |v, s| v.reject_request(s, &i2))
        .await?;
    ok(
        "request-decision",
        json!({ "request": id, "rejected": true }),
    )
}

// ----- collections ---------------------------------------------------------------

/// List collections.
#[utoipa::path(get, path = "/v1/collections", tag = "collections", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn list_collections(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let cs = app.as_user(&rc, t, |v, s| v.collections(s)).await?;
    ok("collection-list", Value::Array(
        cs.iter()
            .map(|(n, sc)| json!({ "collection": n.as_str(), "purpose": sc.purpose, "fields": sc.fields.len() }))
            .collect(),
    ))
}

/// Create a collection (admin).
#[utoipa::path(post, path = "/v1/collections", request_body = NewCollection, tag = "collections",
    security(("bearer" = [])),
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn create_collection(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<NewCollection>,
) -> Res {
    let schema = Schema::from_json(&req.schema.to_string()).map_err(ApiError::from)?;
    let fields = schema.fields.len();
    let name = app
        .as_user(&rc, t, move |v, s| {
            v.create_collection(s, &req.name, &schema)
        })
        .await?;
    created(
        "collection-change",
        json!({ "collection": name.as_str(), "fields": fields }),
    )
}

/// A schema change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaUpdate {
    /// The new schema (the schema file format).
    #[schema(value_type = Object)]
    pub schema: Value,
}

/// Change a collection's schema without losing records: new optional
/// fields, retired fields, purposes (admin).
#[utoipa::path(put, path = "/v1/collections/{name}", request_body = SchemaUpdate, tag = "collections",
    security(("bearer" = [])), params(("name" = String, Path, description = "collection")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn update_collection(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<SchemaUpdate>,
) -> Res {
    let schema = Schema::from_json(&req.schema.to_string()).map_err(ApiError::from)?;
    let (fields, retired) = (schema.fields.len(), schema.retired.clone());
    let n = name.clone();
    app.as_user(&rc, t, move |v, s| v.update_collection(s, &n, &schema))
        .await?;
    ok(
        "collection-change",
        json!({ "collection": name, "fields": fields, "retired": retired }),
    )
}

/// A collection's schema.
#[utoipa::path(get, path = "/v1/collections/{name}", tag = "collections", security(("bearer" = [])),
    params(("name" = String, Path, description = "collection")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn show_collection(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let text = app
        .as_user(&rc, t, move |v, s| {
            v.collections(s)?
                .into_iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, sc)| sc.to_json())
                .ok_or(vault_core::Error::NotFound("collection"))
        })
        .await?;
    ok(
        "collection-schema",
        serde_json::from_str(&text).map_err(|_| ApiError::internal())?,
    )
}

// ----- records -------------------------------------------------------------------

/// Store a record (clerk, officer).
#[utoipa::path(post, path = "/v1/records", request_body = NewRecord, tag = "records", security(("bearer" = [])),
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn put_record(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<NewRecord>,
) -> Res {
    let (id, subject) = app
        .as_user(&rc, t, move |v, s| {
            let subject = match &req.subject {
                Some(r) => v.resolve_subject(r)?,
                None => SubjectId::new(),
            };
            Ok((
                v.put_record(s, &req.collection, subject, &req.data)?,
                subject,
            ))
        })
        .await?;
    created(
        "record-stored",
        json!({ "record_id": id.to_string(), "subject": subject.to_string() }),
    )
}

/// List record metadata (no contents).
#[utoipa::path(get, path = "/v1/records", tag = "records", security(("bearer" = [])), params(RecordQuery),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_records(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<RecordQuery>,
) -> Res {
    let filter = RecordFilter {
        collection: q
            .collection
            .as_deref()
            .map(CollectionName::parse)
            .transpose()
            .map_err(ApiError::from)?,
        subject: q
            .subject
            .as_deref()
            .map(|s| parse::<SubjectId>(s, "subject"))
            .transpose()?,
    };
    let ms = app
        .as_user_long(&rc, t, move |v, s| v.list_records(s, &filter))
        .await?;
    ok(
        "record-list",
        Value::Array(ms.iter().map(views::meta).collect()),
    )
}

/// Read a record, masked.
#[utoipa::path(get, path = "/v1/records/{id}", tag = "records", security(("bearer" = [])),
    params(("id" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 410, description = "disposed of; the problem names the certificate", body = Problem)))]
async fn get_record(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: RecordId = parse(&id, "record")?;
    let r = app
        .as_user(&rc, t, move |v, s| v.get_record(s, id, &[], None))
        .await?;
    Ok(Json(views::RecordDoc::from(&r)).into_response())
}

/// Find records by a searchable field's value (clerk, officer): masked
/// records, at most 20 (a broader search is refused); audited with the
/// fields searched and the number of hits, never the value.
#[utoipa::path(post, path = "/v1/collections/{name}/find", request_body = FindReq, tag = "records",
    security(("bearer" = [])), params(("name" = String, Path, description = "collection")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn find_records(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<FindReq>,
) -> Res {
    let target = match (&req.ty, &req.field) {
        (Some(ty), None) => vault_core::vault::FindTarget::Type(
            vault_core::schema::FieldType::parse(ty).map_err(ApiError::from)?,
        ),
        (None, Some(f)) => vault_core::vault::FindTarget::Field(f.clone()),
        _ => {
            return Err(ApiError::from(vault_core::Error::InvalidInput(
                "give either `type` or `field`".into(),
            )));
        }
    };
    let mode = match req.mode.as_deref() {
        None | Some("exact") => vault_core::beacon::Match::Exact,
        Some("prefix") => vault_core::beacon::Match::Prefix,
        Some(_) => {
            return Err(ApiError::from(vault_core::Error::InvalidInput(
                "`match` is exact or prefix".into(),
            )));
        }
    };
    let q = vault_core::vault::FindQuery {
        collection: name.clone(),
        target,
        value: SecretString::new(req.value),
        mode,
    };
    let r = app
        .as_user(&rc, t, move |v, s| v.find_records(s, &q))
        .await?;
    ok("record-find", views::record_find(&name, &r))
}

/// Rebuild a collection's search indexes from its records (officer).
#[utoipa::path(post, path = "/v1/collections/{name}/reindex", tag = "collections",
    security(("bearer" = [])), params(("name" = String, Path, description = "collection")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn reindex_collection(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let n = name.clone();
    let indexed = app
        .as_user_long(&rc, t, move |v, s| v.reindex_collection(s, &n))
        .await?;
    ok(
        "collection-reindex",
        views::collection_reindex(&name, indexed),
    )
}

/// Read a record with some fields revealed, stating why (audited).
#[utoipa::path(post, path = "/v1/records/{id}/reveal", request_body = RevealReq, tag = "records",
    security(("bearer" = [])), params(("id" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 410, body = Problem)))]
async fn reveal_record(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<RevealReq>,
) -> Res {
    let id: RecordId = parse(&id, "record")?;
    let r = app
        .as_user(&rc, t, move |v, s| {
            let fields: Vec<&str> = req.fields.iter().map(String::as_str).collect();
            v.get_record(s, id, &fields, Some(&req.reason))
        })
        .await?;
    Ok(Json(views::RecordDoc::from(&r)).into_response())
}

/// Correct a record: a new version under a new key.
#[utoipa::path(put, path = "/v1/records/{id}", request_body = UpdateRecord, tag = "records",
    security(("bearer" = [])), params(("id" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn update_record(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<UpdateRecord>,
) -> Res {
    let id: RecordId = parse(&id, "record")?;
    let version = app
        .as_user(&rc, t, move |v, s| v.update_record(s, id, &req.data))
        .await?;
    ok(
        "record-version",
        json!({ "record_id": id.to_string(), "record_version": version }),
    )
}

/// Change some fields of a record: the body is a JSON merge patch (RFC
/// 7396) over the current fields — a field set to a value is replaced, a
/// field set to `null` is removed, fields not named are kept. A new version
/// under a new key.
#[utoipa::path(patch, path = "/v1/records/{id}", tag = "records",
    request_body(content = Object, content_type = "application/merge-patch+json", description = "fields to set; null removes"),
    security(("bearer" = [])), params(("id" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 410, body = Problem), (status = 422, body = Problem)))]
async fn patch_record(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(patch): Body<Value>,
) -> Res {
    let id: RecordId = parse(&id, "record")?;
    let version = app
        .as_user(&rc, t, move |v, s| v.patch_record(s, id, &patch))
        .await?;
    ok(
        "record-version",
        json!({ "record_id": id.to_string(), "record_version": version }),
    )
}

/// The versions of a record: when, by whom, which fields changed (names
/// only, never values).
#[utoipa::path(get, path = "/v1/records/{id}/history", tag = "records",
    security(("bearer" = [])), params(("id" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn record_history(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: RecordId = parse(&id, "record")?;
    let doc = app
        .as_user_long(&rc, t, move |v, s| {
            let h = v.record_history(s, id)?;
            Ok(views::record_history(id, &h))
        })
        .await?;
    ok("record-history", doc)
}

/// Streams an import body into an encrypted spool on the vault's disk
/// (`vault_core::spool`): memory stays at one segment per upload, however
/// large or many the uploads, and the import still checks every row
/// before storing any. Past the import limit: 413; when the disk could not
/// take another segment and keep the disk guard's reserve: 503 `disk_low`.
async fn spool_import(
    app: &App,
    mut body: axum::body::Body,
) -> Result<vault_core::spool::SpooledBody, ApiError> {
    use axum::body::HttpBody;
    let limit = app.limits().import_bytes as u64;
    use tokio::task::block_in_place as blocking;
    let mut spool = blocking(|| vault_core::spool::Spool::create(app.vault().dir()))?;
    let mut checked_to = 0u64;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|_| ApiError::from_status(StatusCode::BAD_REQUEST))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if spool.len() + data.len() as u64 > limit {
            return Err(ApiError::too_large());
        }
        if spool.len() + data.len() as u64 > checked_to {
            // Room for the next MiB, above the disk guard's reserve.
            if !app.has_room_for(1 << 20) {
                return Err(ApiError::disk_low());
            }
            checked_to = spool.len() + (1 << 20);
        }
        blocking(|| spool.write(&data))?;
    }
    Ok(blocking(|| spool.finish())?)
}

/// Import records (JSON Lines or CSV body). A first pass checks every row;
/// a bad row stores nothing and is answered 422 with line numbers.
#[utoipa::path(post, path = "/v1/collections/{name}/import", tag = "records", security(("bearer" = [])),
    params(("name" = String, Path, description = "collection"), ImportQuery),
    request_body(content = String, content_type = "text/plain", description = "JSON Lines (format=jsonl) or CSV (format=csv)"),
    responses((status = 200, body = Object), (status = 422, body = Object), (status = 403, body = Problem)))]
async fn import(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Query(q): Query<ImportQuery>,
    body: axum::body::Body,
) -> Res {
    let format = match q.format.as_deref() {
        None | Some("jsonl") => ImportFormat::JsonLines,
        Some("csv") => ImportFormat::Csv,
        Some(_) => return Err(ApiError::invalid("format must be jsonl or csv")),
    };
    let column = q.subject_column.unwrap_or_else(|| "subject".into());
    let columns = vault_core::vault::ImportColumns::parse(q.map.as_deref().unwrap_or(""))?;
    let check_only = q.check.unwrap_or(false);
    let body = spool_import(&app, body).await?;
    let rc2 = rc.clone();
    let (check, done) = app
        .as_user_long(&rc, t, move |v, s| {
            let check = v.import_mapped(
                s,
                &name,
                body.reader()?,
                format,
                &column,
                &columns,
                true,
                &mut |_| {},
            )?;
            if check.rejected_count > 0 {
                // Nothing stored: the request is audited as the 422 it is.
                rc2.audit(v, Some(&ApiError::import_refused()))
                    .map_err(|_| vault_core::Error::AuditUnavailable("request audit".into()))?;
                return Ok((check, None));
            }
            if check_only {
                return Ok((check, None));
            }
            let done = v.import_mapped(
                s,
                &name,
                body.reader()?,
                format,
                &column,
                &columns,
                false,
                &mut |_| {},
            )?;
            Ok((check, Some(done)))
        })
        .await?;
    match done {
        Some(r) => ok("import-report", views::import_done(&r)),
        None if check.rejected_count == 0 => ok("import-report", views::import_checked(&check)),
        None => {
            // The report of the refused rows (line numbers and reasons, no values).
            let mut r = (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(views::document(
                    "import-report",
                    views::import_refused(&check),
                )),
            )
                .into_response();
            r.extensions_mut()
                .insert(crate::problem::Code("invalid_input"));
            Ok(r)
        }
    }
}

/// The subject ID of a customer reference (sent in the body, never the URL).
#[utoipa::path(post, path = "/v1/subjects/resolve", request_body = SubjectReq, tag = "records",
    security(("bearer" = [])), responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn resolve_subject(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<SubjectReq>,
) -> Res {
    let id = app
        .as_user(&rc, t, move |v, s| {
            v.whoami(s)?;
            v.resolve_subject(&req.reference)
        })
        .await?;
    ok("subject", json!({ "subject": id.to_string() }))
}

/// Export a subject's or a collection's records, encrypted with age (ASCII
/// armor, in `data`) to a recipient's key or a passphrase, or in clear
/// with the export-plaintext permission; audited with count and reason.
#[utoipa::path(post, path = "/v1/exports", request_body = ExportReq, tag = "records",
    security(("bearer" = [])), responses((status = 200, body = Object), (status = 403, body = Problem),
    (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn export_records(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<ExportReq>,
) -> Res {
    let recipient = match (!req.to.is_empty(), req.passphrase, req.plaintext) {
        (true, None, false) => ExportRecipient::Keys(req.to),
        (false, Some(p), false) => ExportRecipient::Passphrase(SecretString::new(p)),
        (false, None, true) => ExportRecipient::Plaintext,
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of to, passphrase and plaintext",
            ));
        }
    };
    let (subject, collection, incident) = (req.subject, req.collection, req.incident);
    if [subject.is_some(), collection.is_some(), incident.is_some()]
        .iter()
        .filter(|x| **x)
        .count()
        != 1
    {
        return Err(ApiError::invalid(
            "give exactly one of subject, collection and incident",
        ));
    }
    let collection = collection.map(|c| CollectionName::parse(&c)).transpose()?;
    let incident: Option<vault_core::ids::IncidentId> =
        incident.map(|i| parse(&i, "incident")).transpose()?;
    let reason = req.reason;
    let (outcome, data) = app
        .as_user_long(&rc, t, move |v, s| {
            let scope = match (subject, collection, incident) {
                (Some(r), _, _) => ExportScope::Subject(v.resolve_subject(&r)?),
                (_, Some(c), _) => ExportScope::Collection(c),
                (_, _, Some(i)) => ExportScope::Incident(i),
                _ => unreachable!("checked above"),
            };
            let req = ExportRequest {
                scope,
                recipient,
                reason,
                armor: true,
            };
            let mut data = Vec::new();
            let o = v.export_records(s, &req, &mut data)?;
            Ok((o, data))
        })
        .await?;
    ok(
        "record-export",
        json!({ "export_id": outcome.export_id, "records": outcome.records, "subjects": outcome.subjects,
                "encryption": outcome.encryption, "data": String::from_utf8_lossy(&data) }),
    )
}

// ----- disposal ------------------------------------------------------------------

/// Dispose of records provably (crypto-shredding); issues a certificate.
///
/// One-record disposals (`scope: record`) by the same user with the same
/// certificate parties that arrive within the server's disposal window
/// (`--disposal-window-ms`, default 20) share one batch and one
/// certificate; each is first checked alone, so an unknown, disposed, held
/// or out-of-scope record gets its own error, and each answer is the shared
/// batch's outcome.
#[utoipa::path(post, path = "/v1/disposals", request_body = DisposeReq, tag = "disposal", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn dispose(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<DisposeReq>,
) -> Res {
    let dry_run = req.dry_run;
    let parties = req.parties.into_core();
    let records: Option<Vec<RecordId>> = match (req.scope.as_str(), &req.records) {
        ("records", Some(ids)) => Some(
            ids.iter()
                .map(|i| parse::<RecordId>(i, "record"))
                .collect::<Result<_, _>>()?,
        ),
        ("records", None) => return Err(ApiError::invalid("scope records needs records")),
        _ => None,
    };
    let scope_kind = req.scope.clone();
    let before = req.before.as_deref().map(parse_time).transpose()?;
    let record = req
        .record
        .as_deref()
        .map(|r| parse::<RecordId>(r, "record"))
        .transpose()?;
    let collection = req
        .collection
        .as_deref()
        .map(CollectionName::parse)
        .transpose()
        .map_err(ApiError::from)?;
    let plan = req.plan.clone();
    if let (Some(id), "record", false, false, None) = (
        record,
        scope_kind.as_str(),
        dry_run,
        app.limits.disposal_window.is_zero(),
        &plan,
    ) {
        return ok(
            "disposal-outcome",
            app.dispose_record_grouped(&rc, t, id, parties).await?,
        );
    }
    let v = app
        .as_user_long(&rc, t, move |v, s| {
            let one = |scope| {
                let req = DisposalRequest {
                    scope,
                    parties: parties.clone(),
                    dry_run,
                };
                match &plan {
                    Some(p) => v.dispose_as_previewed(s, &req, p),
                    None => v.dispose(s, &req),
                }
                .map(|o| views::outcome(&o, dry_run))
            };
            match scope_kind.as_str() {
                "record" => one(DisposalScope::Record(record.ok_or_else(|| {
                    vault_core::Error::InvalidInput("scope record needs record".into())
                })?)),
                "subject" => {
                    let r = req.subject.as_deref().ok_or_else(|| {
                        vault_core::Error::InvalidInput("scope subject needs subject".into())
                    })?;
                    one(DisposalScope::Subject(v.resolve_subject(r)?))
                }
                "query" => one(DisposalScope::Query {
                    collection,
                    before_ms: before.ok_or_else(|| {
                        vault_core::Error::InvalidInput("scope query needs before".into())
                    })?,
                    by_updated: req.by_updated,
                }),
                "past_retention" => one(DisposalScope::PastRetention),
                "records" => one(DisposalScope::Records(records.unwrap_or_default())),
                _ => Err(vault_core::Error::InvalidInput(
                    "scope must be record, subject, query, records or past_retention".into(),
                )),
            }
        })
        .await?;
    ok("disposal-outcome", v)
}

/// List disposal batches and their state.
#[utoipa::path(get, path = "/v1/disposals", tag = "disposal", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_disposals(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let ds = app.as_user(&rc, t, |v, s| v.disposals(s)).await?;
    ok(
        "disposal-list",
        Value::Array(ds.iter().map(views::disposal).collect()),
    )
}

/// Retry a failed batch.
#[utoipa::path(post, path = "/v1/disposals/{id}/retry", tag = "disposal", security(("bearer" = [])),
    params(("id" = String, Path, description = "disposal ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn retry_disposal(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: DisposalId = parse(&id, "disposal")?;
    let cert = app
        .as_user_long(&rc, t, move |v, s| v.retry_disposal(s, id))
        .await?;
    ok(
        "disposal-retry",
        json!({ "disposal_id": id.to_string(), "certificate_id": cert.to_string() }),
    )
}

// ----- retention and holds -----------------------------------------------------------

/// Retention policies.
#[utoipa::path(get, path = "/v1/retention", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn show_retention(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let p = app.as_user(&rc, t, |v, s| v.retention(s)).await?;
    ok(
        "retention-list",
        Value::Array(p.iter().map(|(c, p)| views::retention(c, p)).collect()),
    )
}

/// Set a collection's retention policy (admin, officer).
#[utoipa::path(put, path = "/v1/retention/{collection}", request_body = RetentionReq, tag = "retention",
    security(("bearer" = [])), params(("collection" = String, Path, description = "collection")),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn set_retention(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(collection): Path<String>,
    Body(req): Body<RetentionReq>,
) -> Res {
    let p = RetentionPolicy {
        days: req.days,
        from_updated: req.from_updated,
    };
    let c2 = collection.clone();
    let p2 = p.clone();
    app.as_user(&rc, t, move |v, s| v.set_retention(s, &c2, p2))
        .await?;
    ok("retention-policy", views::retention(&collection, &p))
}

/// The retention schedule the server runs (off by default).
#[utoipa::path(get, path = "/v1/retention-schedule", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401, body = Problem)))]
async fn show_retention_schedule(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
) -> Res {
    let r = app.as_user(&rc, t, |v, s| v.retention_schedule(s)).await?;
    ok("retention-schedule", views::retention_schedule(r.as_ref()))
}

/// Set (or, with `every_hours: null`, turn off) the retention schedule (admin, officer).
#[utoipa::path(put, path = "/v1/retention-schedule", request_body = RetentionScheduleReq, tag = "retention",
    security(("bearer" = [])), responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn set_retention_schedule(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<RetentionScheduleReq>,
) -> Res {
    let every = req.every_hours;
    let r = app
        .as_user(&rc, t, move |v, s| {
            v.set_retention_schedule(s, every)?;
            v.retention_schedule(s)
        })
        .await?;
    ok("retention-schedule", views::retention_schedule(r.as_ref()))
}

/// What is past retention (a dry run).
#[utoipa::path(get, path = "/v1/retention/due", tag = "retention", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn retention_due(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let o = app.as_user(&rc, t, |v, s| v.retention_due(s)).await?;
    ok("disposal-outcome", views::outcome(&o, true))
}

/// Dispose of everything past retention.
#[utoipa::path(post, path = "/v1/retention/run", request_body = RetentionRunReq, tag = "retention",
    security(("bearer" = [])), responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn retention_run(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<RetentionRunReq>,
) -> Res {
    let dry_run = req.dry_run;
    let plan = req.plan;
    let parties = req.parties.into_core();
    let o = app
        .as_user_long(&rc, t, move |v, s| {
            let req = DisposalRequest {
                scope: DisposalScope::PastRetention,
                parties,
                dry_run,
            };
            match &plan {
                Some(p) => v.dispose_as_previewed(s, &req, p),
                None => v.dispose(s, &req),
            }
        })
        .await?;
    ok("disposal-outcome", views::outcome(&o, dry_run))
}

/// Legal holds.
#[utoipa::path(get, path = "/v1/holds", tag = "holds", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_holds(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let hs = app.as_user(&rc, t, |v, s| v.holds(s)).await?;
    ok(
        "hold-list",
        Value::Array(hs.iter().map(views::hold).collect()),
    )
}

fn hold_target(
    v: &vault_core::Vault,
    record: Option<&str>,
    subject: Option<&str>,
) -> vault_core::Result<(Option<RecordId>, Option<SubjectId>)> {
    Ok((
        record.map(str::parse::<RecordId>).transpose()?,
        subject.map(|t| v.resolve_subject(t)).transpose()?,
    ))
}

/// Place a legal hold (admin, officer).
#[utoipa::path(post, path = "/v1/holds", request_body = HoldReq, tag = "holds", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn add_hold(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<HoldReq>,
) -> Res {
    app.as_user(&rc, t, move |v, s| {
        let (r, sub) = hold_target(v, req.record.as_deref(), req.subject.as_deref())?;
        v.add_hold(s, r, sub, req.reason.as_deref().unwrap_or(""))
    })
    .await?;
    ok("hold-change", json!({ "held": true }))
}

/// Lift a legal hold (admin, officer).
#[utoipa::path(post, path = "/v1/holds/remove", request_body = HoldReq, tag = "holds", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn remove_hold(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<HoldReq>,
) -> Res {
    app.as_user(&rc, t, move |v, s| {
        let (r, sub) = hold_target(v, req.record.as_deref(), req.subject.as_deref())?;
        v.remove_hold(s, r, sub)
    })
    .await?;
    ok("hold-change", json!({ "held": false }))
}

// ----- certificates and keys -----------------------------------------------------------

/// Which certificates to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CertificateQuery {
    /// Only drafts waiting for validation.
    pub draft: Option<bool>,
}

/// Stored certificates: ID, status, issued, operator, records, co-signers.
#[utoipa::path(get, path = "/v1/certificates", tag = "certificates", security(("bearer" = [])),
    params(CertificateQuery), responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_certificates(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<CertificateQuery>,
) -> Res {
    let drafts = q.draft.unwrap_or(false);
    let list = app
        .as_user_long(&rc, t, move |v, s| v.list_certificates(s, drafts))
        .await?;
    ok("certificate-list", views::certificates(&list))
}

/// A certificate: the signed body and its signers.
#[utoipa::path(get, path = "/v1/certificates/{id}", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn show_certificate(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let c = app
        .as_user(&rc, t, move |v, s| v.certificate(s, id))
        .await?;
    ok("certificate", views::certificate(&c))
}

/// Download the signed certificate file (verify it offline with `pivault certificate verify`).
#[utoipa::path(get, path = "/v1/certificates/{id}/file", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, description = "the certificate file", body = Object), (status = 404, body = Problem)))]
async fn certificate_file(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let c = app
        .as_user(&rc, t, move |v, s| v.certificate(s, id))
        .await?;
    let mut r = c.to_file_json().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"certificate-{id}.json\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// The proof that a record was among a certificate's disposed records
/// (checked offline with `pivault certificate verify --record --proof`).
#[utoipa::path(get, path = "/v1/certificates/{id}/proof/{record}", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID"), ("record" = String, Path, description = "record ID")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn certificate_proof(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path((id, record)): Path<(String, String)>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let record: RecordId = parse(&record, "record")?;
    let p = app
        .as_user(&rc, t, move |v, s| v.certificate_proof(s, id, record))
        .await?;
    ok("certificate-proof", p.to_json())
}

/// The certificate as a W3C Verifiable Credential (Data Integrity proof,
/// cryptosuite eddsa-jcs-2022, issuer the vault key's did:key).
#[utoipa::path(get, path = "/v1/certificates/{id}/vc", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, description = "the credential", body = Object), (status = 404, body = Problem)))]
async fn certificate_vc(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let vc = app
        .as_user(&rc, t, move |v, s| v.certificate_credential(s, id))
        .await?;
    let mut r = format!(
        "{}\n",
        serde_json::to_string_pretty(&vc).unwrap_or_default()
    )
    .into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vc+ld+json"),
    );
    Ok(r)
}

/// The certificate as a printable HTML page.
#[utoipa::path(get, path = "/v1/certificates/{id}/html", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, description = "HTML page", body = String, content_type = "text/html"),
              (status = 404, body = Problem)))]
async fn certificate_html(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let c = app
        .as_user(&rc, t, move |v, s| v.certificate(s, id))
        .await?;
    let key = app.vault().certificate_public_key();
    let mut r = certificate::render_html(&c, certificate::Check::Issuer(&key)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(r)
}

/// The certificate as the PDF document a business files: the one-page
/// summary (the verdict, checked by this vault, first), the appendix, and
/// the signed certificate file attached inside (`certificate-{id}.json`;
/// `pdfdetach -saveall`, then `pivault certificate verify`).
#[utoipa::path(get, path = "/v1/certificates/{id}/pdf", tag = "certificates", security(("bearer" = [])),
    params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, description = "PDF document with the certificate file attached", body = String,
               content_type = "application/pdf"),
              (status = 404, body = Problem)))]
async fn certificate_pdf(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    // Rendered on the blocking pool with the read (a large batch's appendix
    // is a few hundred kilobytes of layout).
    let pdf = app
        .as_user(&rc, t, move |v, s| {
            let c = v.certificate(s, id)?;
            Ok(certificate::render_pdf(
                &c,
                certificate::Check::Issuer(&v.certificate_public_key()),
            ))
        })
        .await?;
    let mut r = pdf.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pdf"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"certificate-{id}.pdf\""))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Validate a draft certificate (an officer other than the operator).
#[utoipa::path(post, path = "/v1/certificates/{id}/validate", request_body = ValidateReq, tag = "certificates",
    security(("bearer" = [])), params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn validate_certificate(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<ValidateReq>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    app.as_user(&rc, t, move |v, s| {
        v.validate_certificate(s, id, req.title.as_deref())
    })
    .await?;
    ok(
        "certificate-change",
        json!({ "certificate_id": id.to_string(), "status": "validated" }),
    )
}

/// Add the contractor's co-signature (made offline with their key).
#[utoipa::path(post, path = "/v1/certificates/{id}/cosign", request_body = CosignReq, tag = "certificates",
    security(("bearer" = [])), params(("id" = String, Path, description = "certificate ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn cosign_certificate(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<CosignReq>,
) -> Res {
    let id: CertificateId = parse(&id, "certificate")?;
    let sig: [u8; 64] = hex::decode(&req.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ApiError::invalid("signature must be 64 bytes, hex"))?;
    app.as_user(&rc, t, move |v, s| v.cosign_certificate(s, id, &sig))
        .await?;
    ok(
        "certificate-change",
        json!({ "certificate_id": id.to_string(), "cosigned": true }),
    )
}

/// The vault's public keys (certificate and audit), PEM, with fingerprints.
#[utoipa::path(get, path = "/v1/keys", tag = "certificates",
    responses((status = 200, body = Object)))]
async fn keys(State(app): State<Arc<App>>) -> Res {
    let v = app.vault();
    let (c, a) = (v.certificate_public_key(), v.audit_public_key());
    let fp =
        |k: &vault_core::ed25519_dalek::VerifyingKey| vault_core::crypto::fingerprint(k.as_bytes());
    ok(
        "public-keys",
        json!({
            "certificate_key": certificate::public_key_pem(&c), "certificate_fingerprint": fp(&c),
            "audit_key": certificate::public_key_pem(&a), "audit_fingerprint": fp(&a),
        }),
    )
}

/// Contractors: scope and registered key fingerprint (admin, officer, auditor).
#[utoipa::path(get, path = "/v1/contractors", tag = "disposal", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_contractors(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let list = app.as_user(&rc, t, |v, s| v.list_contractors(s)).await?;
    ok("contractor-list", views::contractors(&list))
}

/// Take a contractor's scope and registered key away (admin).
#[utoipa::path(delete, path = "/v1/contractors/{name}", tag = "disposal",
    security(("bearer" = [])), params(("name" = String, Path, description = "contractor's username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn revoke_contractor(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
) -> Res {
    let n = name.clone();
    let id = app
        .as_user(&rc, t, move |v, s| v.revoke_contractor(s, &n))
        .await?;
    ok(
        "contractor-revocation",
        json!({ "user_id": id.to_string(), "revoked": name }),
    )
}

/// Assign a contractor's scope and register their key (admin).
#[utoipa::path(put, path = "/v1/contractors/{name}", request_body = ContractorReq, tag = "disposal",
    security(("bearer" = [])), params(("name" = String, Path, description = "contractor's username")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn assign_contractor(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(name): Path<String>,
    Body(req): Body<ContractorReq>,
) -> Res {
    let public_key = req
        .public_key_pem
        .as_deref()
        .map(|p| certificate::parse_public_key(p).map(|k| hex::encode(k.as_bytes())))
        .transpose()
        .map_err(ApiError::from)?;
    let (collections, n) = (req.collections.clone(), req.records.len());
    let id = app
        .as_user(&rc, t, move |v, s| {
            v.assign_contractor(
                s,
                &name,
                ContractorScope {
                    collections: req.collections,
                    records: req.records,
                    public_key,
                },
            )
        })
        .await?;
    ok(
        "contractor-assignment",
        json!({ "user_id": id.to_string(), "collections": collections, "records": n }),
    )
}

// ----- audit -------------------------------------------------------------------------

/// Audit events.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", security(("bearer" = [])), params(AuditQuery),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_events(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<AuditQuery>,
) -> Res {
    let from_ms = q.since.as_deref().map(parse_time).transpose()?;
    let to_ms = q.until.as_deref().map(parse_time).transpose()?;
    let evs = app
        .as_user_long(&rc, t, move |v, s| {
            let actor = match &q.actor {
                Some(name) => Some(
                    v.list_users(s)?
                        .into_iter()
                        .find(|u| u.username.as_str() == name.to_ascii_lowercase())
                        .ok_or(vault_core::Error::NotFound("user"))?
                        .id,
                ),
                None => None,
            };
            let mut evs = v.audit_events(
                s,
                &EventFilter {
                    actor,
                    from_ms,
                    to_ms,
                    action_prefix: q.action.clone(),
                    ..EventFilter::default()
                },
            )?;
            if let Some(n) = q.limit {
                evs.drain(..evs.len().saturating_sub(n));
            }
            Ok(evs)
        })
        .await?;
    ok(
        "audit-log",
        Value::Array(evs.iter().map(views::event).collect()),
    )
}

/// Export a span of the audit trail for a log system, rendered as JSON
/// lines, RFC 5424 syslog or CEF (`text`), from the signed checkpoint
/// before `since`/`from_seq` to a checkpoint signed now; the file verifies
/// offline with `pivault audit verify --file`.
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", security(("bearer" = [])), params(ExportQuery),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_export(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<ExportQuery>,
) -> Res {
    let since_ms = q.since.as_deref().map(parse_time).transpose()?;
    let format = vault_core::siem::Format::parse(q.format.as_deref().unwrap_or("jsonl"))?;
    let start = vault_core::vault::ExportStart {
        since_ms,
        from_seq: q.from_seq,
    };
    let b = app
        .as_user_long(&rc, t, move |v, s| v.audit_export(s, start))
        .await?;
    let text = b.render(format, &vault_core::siem::default_hostname());
    ok(
        "audit-export",
        json!({
            "format": format.as_str(),
            "from_seq": b.from_seq(),
            "to_seq": b.to_seq(),
            "events": b.events.len(),
            "checkpoint_seq": b.checkpoints.last().map_or(0, |c| c.seq),
            "text": text,
        }),
    )
}

/// The state of the server's syslog stream of the audit trail.
#[utoipa::path(get, path = "/v1/audit/stream", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_stream(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    app.as_user(&rc, t, |v, s| v.audit_stream_allowed(s))
        .await?;
    let v = match app.stream() {
        Some(st) => st.status(),
        None => json!({ "configured": false }),
    };
    ok("audit-stream", v)
}

/// Verify the audit trail's hash chain and signed checkpoints.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_verify(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let r = app.as_user_long(&rc, t, |v, s| v.audit_verify(s)).await?;
    ok("audit-verify", views::verify(&r))
}

/// Sign the current audit head and export it for an outside witness: the
/// head (JSON text, the exact bytes stamped) and an RFC 3161 time-stamp
/// request over its SHA-256 (DER, hex).
#[utoipa::path(post, path = "/v1/audit/anchor", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_anchor(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let a = app.as_user_long(&rc, t, |v, s| v.audit_anchor(s)).await?;
    ok(
        "audit-head",
        json!({ "seq": a.seq, "head": a.head_json, "request_hex": hex::encode(a.request) }),
    )
}

/// Store an RFC 3161 time-stamp response (DER, hex in `tsr_hex`) for a
/// head exported by `/v1/audit/anchor`; `audit verify` re-checks it.
#[utoipa::path(post, path = "/v1/audit/timestamp", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn audit_timestamp(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<TimestampReq>,
) -> Res {
    let tsr = hex::decode(&req.tsr_hex).map_err(|_| ApiError::invalid("tsr_hex: not hex"))?;
    let r = app
        .as_user_long(&rc, t, move |v, s| v.audit_timestamp(s, &tsr))
        .await?;
    ok(
        "audit-timestamp",
        json!({
            "seq": r.seq, "status": r.info.status, "gen_time": r.info.gen_time, "serial": r.info.serial,
        }),
    )
}

/// Body of `POST /v1/audit/timestamp`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TimestampReq {
    /// The time-stamp response, DER, hex.
    tsr_hex: String,
}

/// Per-user activity report.
#[utoipa::path(get, path = "/v1/audit/report", tag = "audit", security(("bearer" = [])), params(ReportQuery),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn audit_report(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<ReportQuery>,
) -> Res {
    let now = jiff::Timestamp::now().as_millisecond();
    let from = q
        .since
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now - 30 * 86_400_000);
    let to = q
        .until
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(now + 1);
    let (users, report) = app
        .as_user_long(&rc, t, move |v, s| {
            let users = v.list_users(s).unwrap_or_default();
            Ok((users, v.activity_report(s, from, to)?))
        })
        .await?;
    let rows: Vec<Value> = report
        .iter()
        .map(|a| {
            let name = users
                .iter()
                .find(|u| u.id == a.user)
                .map(|u| u.username.to_string())
                .unwrap_or_else(|| a.user.to_string());
            views::activity(a, &name)
        })
        .collect();
    ok(
        "audit-report",
        json!({ "from": from, "to": to, "users": rows }),
    )
}

// ----- incidents and the WISP pack (issue 15) --------------------------------

/// Whom an incident is about (exactly one) and the window.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct IncidentScopeReq {
    /// A user's name or ID.
    pub actor: Option<String>,
    /// A service account's name or ID (its tokens' events).
    pub token: Option<String>,
    /// A client address as the audit trail records it.
    pub source: Option<String>,
    /// Window start (RFC 3339 or YYYY-MM-DD, inclusive).
    pub since: String,
    /// Window end (exclusive; default now).
    pub until: Option<String>,
}

/// Opening an incident.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentOpenReq {
    /// A user's name or ID.
    pub actor: Option<String>,
    /// A service account's name or ID.
    pub token: Option<String>,
    /// A client address.
    pub source: Option<String>,
    /// Window start.
    pub since: String,
    /// Window end (default now).
    pub until: Option<String>,
    /// The nature of the breach (no personal information).
    pub nature: String,
    /// Free credit monitoring is offered (M.G.L. c. 93H §3A).
    #[serde(default)]
    pub credit_monitoring: bool,
}

/// A responsive action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentActionReq {
    /// What was done or is planned.
    pub text: String,
    /// Free credit monitoring is now offered.
    #[serde(default)]
    pub credit_monitoring: bool,
}

/// The post-incident review.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentReviewReq {
    /// The review of events and actions taken.
    pub notes: String,
    /// Changes to business practices or the WISP (`none` if none).
    pub wisp_changes: String,
}

/// The period of the WISP pack.
#[derive(Debug, Deserialize, IntoParams)]
pub struct WispQuery {
    /// Period start (default a year before `until`).
    pub since: Option<String>,
    /// Period end (exclusive; default now).
    pub until: Option<String>,
}

fn incident_window(
    actor: Option<String>,
    token: Option<String>,
    source: Option<String>,
    since: &str,
    until: Option<&str>,
) -> Result<(vault_core::vault::SelectorInput, i64, i64), ApiError> {
    let since = parse_time(since)?;
    let until = until
        .map(parse_time)
        .transpose()?
        .unwrap_or(jiff::Timestamp::now().as_millisecond() + 1);
    Ok((
        vault_core::vault::SelectorInput {
            actor,
            token,
            source,
        },
        since,
        until,
    ))
}

fn incident_id(id: &str) -> Result<vault_core::ids::IncidentId, ApiError> {
    Ok(id.parse::<vault_core::ids::IncidentId>()?)
}

/// Incident scope: what one user, service account or address touched in a window (officer).
#[utoipa::path(get, path = "/v1/incidents/scope", tag = "incidents", security(("bearer" = [])), params(IncidentScopeReq),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn incident_scope(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<IncidentScopeReq>,
) -> Res {
    let (sel, since, until) =
        incident_window(q.actor, q.token, q.source, &q.since, q.until.as_deref())?;
    let sc = app
        .as_user_long(&rc, t, move |v, s| v.incident_scope(s, &sel, since, until))
        .await?;
    ok("incident-scope", views::incident_scope(&sc))
}

/// Open an incident; its scope is kept with it (officer).
#[utoipa::path(post, path = "/v1/incidents", request_body = IncidentOpenReq, tag = "incidents", security(("bearer" = [])),
    responses((status = 201, body = Object), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn open_incident(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Body(req): Body<IncidentOpenReq>,
) -> Res {
    let (sel, since, until) = incident_window(
        req.actor,
        req.token,
        req.source,
        &req.since,
        req.until.as_deref(),
    )?;
    let (nature, cm) = (req.nature, req.credit_monitoring);
    let inc = app
        .as_user_long(&rc, t, move |v, s| {
            v.open_incident(s, &sel, since, until, &nature, cm)
        })
        .await?;
    created("incident", views::incident(&inc))
}

/// The incident register (officer, auditor).
#[utoipa::path(get, path = "/v1/incidents", tag = "incidents", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn list_incidents(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let list = app.as_user(&rc, t, |v, s| v.incidents(s)).await?;
    ok(
        "incident-list",
        Value::Array(list.iter().map(views::incident).collect()),
    )
}

/// One incident (officer, auditor).
#[utoipa::path(get, path = "/v1/incidents/{id}", tag = "incidents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incident ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn show_incident(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id = incident_id(&id)?;
    let inc = app.as_user(&rc, t, move |v, s| v.incident(s, id)).await?;
    ok("incident", views::incident(&inc))
}

/// Record a responsive action (officer).
#[utoipa::path(post, path = "/v1/incidents/{id}/actions", request_body = IncidentActionReq, tag = "incidents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incident ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn incident_action(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<IncidentActionReq>,
) -> Res {
    let id = incident_id(&id)?;
    let inc = app
        .as_user(&rc, t, move |v, s| {
            v.incident_action(s, id, &req.text, req.credit_monitoring)
        })
        .await?;
    ok("incident", views::incident(&inc))
}

/// Record the post-incident review, once (officer).
#[utoipa::path(post, path = "/v1/incidents/{id}/review", request_body = IncidentReviewReq, tag = "incidents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incident ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn review_incident(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
    Body(req): Body<IncidentReviewReq>,
) -> Res {
    let id = incident_id(&id)?;
    let inc = app
        .as_user(&rc, t, move |v, s| {
            v.review_incident(s, id, &req.notes, &req.wisp_changes)
        })
        .await?;
    ok("incident", views::incident(&inc))
}

/// The breach notice's figures, with the scope run now (officer).
#[utoipa::path(get, path = "/v1/incidents/{id}/notice", tag = "incidents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Incident ID")),
    responses((status = 200, body = Object), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn incident_notice(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Path(id): Path<String>,
) -> Res {
    let id = incident_id(&id)?;
    let (inc, sc, now) = app
        .as_user_long(&rc, t, move |v, s| {
            let (inc, sc) = v.incident_notice(s, id)?;
            Ok((inc, sc, v.now_ms()))
        })
        .await?;
    ok("incident-notice", views::incident_notice(&inc, &sc, now))
}

/// The WISP evidence pack (officer, auditor).
#[utoipa::path(get, path = "/v1/wisp", tag = "incidents", security(("bearer" = [])), params(WispQuery),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn wisp(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    t: Bearer,
    Query(q): Query<WispQuery>,
) -> Res {
    let until = q
        .until
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(jiff::Timestamp::now().as_millisecond() + 1);
    let since = q
        .since
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or(until - 365 * 86_400_000);
    let pack = app
        .as_user_long(&rc, t, move |v, s| v.wisp_pack(s, since, until))
        .await?;
    ok("wisp-pack", views::wisp_pack(&pack))
}

/// Record that the annual security review took place (officer).
#[utoipa::path(post, path = "/v1/review", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn review(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    app.as_user_long(&rc, t, |v, s| v.record_security_review(s))
        .await?;
    ok("review", json!({ "reviewed": true }))
}

/// The maintenance ratchet now (officer): old keys of updated records and
/// orphaned keys destroyed by rotation, epoch ratchet and purge.
#[utoipa::path(post, path = "/v1/maintenance", tag = "disposal", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn maintenance(State(app): State<Arc<App>>, rc: RequestContext, t: Bearer) -> Res {
    let r = app
        .as_user_long(&rc, t, |v, s| v.run_maintenance(s))
        .await?;
    ok("maintenance-report", views::maintenance(&r))
}

// ----- health and the document ---------------------------------------------------------

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Object)))]
async fn healthz() -> Res {
    ok("health", json!({ "status": "ok" }))
}

/// Readiness: the vault is open and the server is not draining.
///
/// Says ready or not and nothing else: the vault's ID and key epoch are nobody's
/// business before they log in.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Object), (status = 503, body = Problem)))]
async fn readyz(State(app): State<Arc<App>>) -> Res {
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::unavailable());
    }
    if app.is_disk_low() {
        return Err(ApiError::disk_low());
    }
    ok("health", json!({ "status": "ready" }))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "health", responses((status = 200, body = Object)))]
async fn openapi_doc() -> Response {
    let mut r = crate::openapi_json().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pivault API", description = "Encrypted personal-information records: store, read (masked), dispose of provably. Errors are RFC 9457 problem documents whose `code` matches the CLI's."),
    modifiers(&BearerScheme),
    paths(login, logout, whoami, begin_enrolment, confirm_enrolment, reset_two_factor, show_two_factor_policy, set_two_factor_policy, list_users, add_user, add_service, list_services, rotate_service, revoke_service, disable_user, enable_user, unlock_user, set_role, set_reveal_grant, set_full_name,
          set_password, list_approvals, approve_request, reject_request, list_collections, create_collection, update_collection, show_collection, put_record, list_records,
          get_record, reveal_record, find_records, reindex_collection, update_record, patch_record, record_history, import, resolve_subject, export_records, dispose, list_disposals,
          retry_disposal, show_retention, set_retention, show_retention_schedule, set_retention_schedule, retention_due, retention_run, list_holds, add_hold,
          remove_hold, list_certificates, show_certificate, certificate_file, certificate_vc, certificate_proof, certificate_html, certificate_pdf, validate_certificate,
          cosign_certificate, keys, list_contractors, assign_contractor, revoke_contractor, audit_events, audit_export, audit_stream, audit_verify, audit_anchor, audit_timestamp, audit_report, review,
          incident_scope, open_incident, list_incidents, show_incident, incident_action, review_incident, incident_notice, wisp,
          maintenance, healthz, readyz, openapi_doc),
    components(schemas(Problem))
)]
struct ApiDoc;

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The routes, with their body limits.
pub fn router(app: Arc<App>) -> Router {
    let import_limit = app.limits.import_bytes;
    let body_limit = app.limits.body_bytes;
    let imports = Router::new()
        .route("/v1/collections/{name}/import", post(import))
        .layer(DefaultBodyLimit::max(import_limit));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi_doc))
        .route("/v1/sessions", post(login))
        .route("/v1/sessions/current", axum::routing::delete(logout))
        .route("/v1/whoami", get(whoami))
        .route("/v1/two-factor/enrolment", post(begin_enrolment))
        .route("/v1/two-factor/enrolment/confirm", post(confirm_enrolment))
        .route(
            "/v1/users/{name}/two-factor",
            axum::routing::delete(reset_two_factor),
        )
        .route(
            "/v1/policy/two-factor",
            get(show_two_factor_policy).put(set_two_factor_policy),
        )
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{name}/disable", post(disable_user))
        .route("/v1/users/{name}/enable", post(enable_user))
        .route("/v1/users/{name}/unlock", post(unlock_user))
        .route("/v1/users/{name}/role", put(set_role))
        .route("/v1/users/{name}/reveal", put(set_reveal_grant))
        .route("/v1/users/{name}/full-name", put(set_full_name))
        .route("/v1/users/{name}/password", put(set_password))
        .route("/v1/services", get(list_services).post(add_service))
        .route("/v1/services/{name}/rotate", post(rotate_service))
        .route("/v1/services/{name}", axum::routing::delete(revoke_service))
        .route("/v1/approvals", get(list_approvals))
        .route("/v1/approvals/{id}/approve", post(approve_request))
        .route("/v1/approvals/{id}/reject", post(reject_request))
        .route(
            "/v1/collections",
            get(list_collections).post(create_collection),
        )
        .route(
            "/v1/collections/{name}",
            get(show_collection).put(update_collection),
        )
        .route("/v1/records", get(list_records).post(put_record))
        .route(
            "/v1/records/{id}",
            get(get_record).put(update_record).patch(patch_record),
        )
        .route("/v1/records/{id}/history", get(record_history))
        .route("/v1/records/{id}/reveal", post(reveal_record))
        .route("/v1/collections/{name}/find", post(find_records))
        .route("/v1/collections/{name}/reindex", post(reindex_collection))
        .route("/v1/subjects/resolve", post(resolve_subject))
        .route("/v1/disposals", get(list_disposals).post(dispose))
        .route("/v1/disposals/{id}/retry", post(retry_disposal))
        .route("/v1/retention", get(show_retention))
        .route("/v1/retention/due", get(retention_due))
        .route(
            "/v1/retention-schedule",
            get(show_retention_schedule).put(set_retention_schedule),
        )
        .route("/v1/retention/run", post(retention_run))
        .route("/v1/retention/{collection}", put(set_retention))
        .route("/v1/holds", get(list_holds).post(add_hold))
        .route("/v1/holds/remove", post(remove_hold))
        .route("/v1/exports", post(export_records))
        .route("/v1/certificates", get(list_certificates))
        .route("/v1/certificates/{id}", get(show_certificate))
        .route("/v1/certificates/{id}/file", get(certificate_file))
        .route(
            "/v1/certificates/{id}/proof/{record}",
            get(certificate_proof),
        )
        .route("/v1/certificates/{id}/vc", get(certificate_vc))
        .route("/v1/certificates/{id}/html", get(certificate_html))
        .route("/v1/certificates/{id}/pdf", get(certificate_pdf))
        .route("/v1/certificates/{id}/validate", post(validate_certificate))
        .route("/v1/certificates/{id}/cosign", post(cosign_certificate))
        .route("/v1/keys", get(keys))
        .route("/v1/contractors", get(list_contractors))
        .route(
            "/v1/contractors/{name}",
            put(assign_contractor).delete(revoke_contractor),
        )
        .route("/v1/audit/events", get(audit_events))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/stream", get(audit_stream))
        .route("/v1/audit/anchor", post(audit_anchor))
        .route("/v1/audit/timestamp", post(audit_timestamp))
        .route("/v1/audit/report", get(audit_report))
        .route("/v1/review", post(review))
        .route("/v1/incidents", get(list_incidents).post(open_incident))
        .route("/v1/incidents/scope", get(incident_scope))
        .route("/v1/incidents/{id}", get(show_incident))
        .route("/v1/incidents/{id}/actions", post(incident_action))
        .route("/v1/incidents/{id}/review", post(review_incident))
        .route("/v1/incidents/{id}/notice", get(incident_notice))
        .route("/v1/wisp", get(wisp))
        .route("/v1/maintenance", post(maintenance))
        .layer(DefaultBodyLimit::max(body_limit))
        .merge(imports)
        .merge(crate::web::router())
        .with_state(app)
}
