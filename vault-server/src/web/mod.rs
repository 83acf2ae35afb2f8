//! The web page (issue 14): server-rendered HTML on the API's
//! origin, doing through the same `Vault` calls (and so the same role
//! checks and audit events) what the CLI does. No script at all, no
//! resource from elsewhere; every page carries a strict
//! Content-Security-Policy, `frame-ancestors 'none'` and `no-store`.
//!
//! - The session is the API's bearer token in a `__Host-pivault` cookie
//!   (`Secure`, `HttpOnly`, `SameSite=Strict`, path `/`), never in a URL.
//! - Every state-changing form carries a CSRF token bound to the session
//!   (`csrf_token`), and every POST from another site is refused by its
//!   `Sec-Fetch-Site` / `Origin` headers before anything else.
//! - Personal information is never in a URL or a title: searches are POSTs,
//!   titles name the page only.
//!
//! Pages: sign in (password, then the second factor's code when the
//! account has one), two-factor enrolment with its QR code, and, for
//! anyone, verify a certificate (here); the clerk's find, reveal, add and
//! correct (`clerk`); the import of a file with its preview (`import`);
//! the admin's users (`admin`) and collections (`collections`); the
//! officer's holds, retention and disposals (`officer`); the trail and its
//! verification (`auditor`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use vault_core::access::{Permission, Role};
use vault_core::secret::SecretString;

use crate::problem::{self, ApiError};
use crate::{App, Bearer, RequestContext};

mod admin;
mod auditor;
mod certificates;
mod clerk;
mod collections;
mod contractor;
mod cosign;
mod import;
mod officer;
mod progress;
mod status;

pub use progress::Jobs;

pub(crate) use import::ImportPreviews;

/// The pages a role is offered, in the order of the menu: the permission
/// that opens each (the core decides again on every call).
const MENU: [(Permission, &str, &str, &str); 15] = [
    (
        Permission::FindRecords,
        "/ui/find",
        "Find a customer",
        "by SSN, licence, e-mail, phone or name (shown masked)",
    ),
    (
        Permission::CreateRecord,
        "/ui/records/new",
        "Add a record",
        "through a form made from the collection's schema",
    ),
    (
        Permission::CreateRecord,
        "/ui/import",
        "Import records",
        "a CSV or JSON Lines file, previewed line by line before anything is stored",
    ),
    (
        Permission::RecordReview,
        "/ui/holds",
        "Legal holds",
        "place and release holds on records and customers",
    ),
    (
        Permission::RecordReview,
        "/ui/retention",
        "Retention",
        "the policies and what is past retention now",
    ),
    (
        Permission::Dispose,
        "/ui/disposals",
        "Dispose",
        "preview, confirm, and get the certificate",
    ),
    (
        Permission::ValidateCertificate,
        "/ui/certificates",
        "Certificates",
        "validate drafts (a second person), download PDFs",
    ),
    (
        Permission::Dispose,
        COSIGN,
        "Co-sign",
        "sign the certificates of your disposals with your own key, offline",
    ),
    (
        Permission::ListRecords,
        "/ui/scope",
        "Records",
        "IDs, counts and dates, never contents (a contractor's: the assigned scope)",
    ),
    (
        Permission::ReadAudit,
        "/ui/audit",
        "Audit trail",
        "with filters, and the trail's verification",
    ),
    (
        Permission::Reports,
        "/ui/status",
        "Security status",
        "doctor's checks, failures first",
    ),
    (
        Permission::Reports,
        "/ui/review",
        "Annual review",
        "when the security program was last reviewed, and record this year's",
    ),
    (
        Permission::ManageUsers,
        "/ui/users",
        "Users",
        "add users, change roles, disable, enable, unlock",
    ),
    (
        Permission::ManageCollections,
        "/ui/collections",
        "Collections",
        "their fields; create one from a schema, change one",
    ),
    (
        Permission::ManageUsers,
        "/ui/holds",
        "Legal holds",
        "place and release holds on records and customers",
    ),
];

/// Co-signing is the contractor's (the core accepts a co-signature only
/// from the batch's contractor): offered to contractors only.
const COSIGN: &str = "/ui/cosign";

/// The menu entries a visitor's role may open, each page once.
fn menu(who: &Signed) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out: Vec<(&str, &str, &str)> = Vec::new();
    for (p, href, label, what) in MENU {
        if href == COSIGN && who.role != Role::Contractor {
            continue;
        }
        if who.may(p) && !out.iter().any(|(h, _, _)| *h == href) {
            out.push((href, label, what));
        }
    }
    out
}

/// The session cookie. `__Host-` makes the browser refuse it unless it is
/// `Secure`, has path `/` and no domain: no other host or path can set it.
pub const COOKIE: &str = "__Host-pivault";

/// The policy of every page: nothing but this origin's style sheet and
/// `data:` images (the QR code), forms only to this origin, no framing.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The web routes (merged into the API's router).
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(root))
        .route("/ui/", get(home))
        .route("/ui/style.css", get(style))
        // Browsers ask for it on every first visit: an answer, not a 404
        // that would count against the visitor's refusal budget.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/ui/sign-in", axum::routing::post(sign_in))
        .route("/ui/sign-out", axum::routing::post(sign_out))
        .route("/ui/two-factor", get(enrol_page).post(enrol_confirm))
        .route("/ui/verify", get(verify_page).post(verify))
        .route("/ui/verify/upload", axum::routing::post(verify_upload))
        .route("/ui/certificates/{id}/pdf", get(certificate_pdf))
        .merge(clerk::router())
        .merge(admin::router())
        .merge(officer::router())
        .merge(auditor::router())
        .merge(contractor::router())
        .merge(import::router())
        .merge(collections::router())
        .merge(status::router())
        .merge(certificates::router())
        .merge(cosign::router())
        .merge(progress::router())
}

/// Whether a route is one of the web page's (answered without a bearer
/// token: the page reads its own cookie).
pub fn is_web(route: &str) -> bool {
    route == "/" || route == "/favicon.ico" || route.starts_with("/ui/")
}

/// Routes whose requests are not audited one by one: the style sheet and
/// the pages any visitor may load (what they *do* is audited by the vault).
pub fn is_quiet(method: &str, route: &str) -> bool {
    matches!(
        (method, route),
        ("GET", "/" | "/favicon.ico" | "/ui/style.css" | "/ui/verify")
            | ("POST", "/ui/verify" | "/ui/verify/upload")
    )
}

/// HTML-escapes text for an element or a double-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The CSRF token of a session: bound to its bearer token (a page of
/// another site can neither read the cookie nor compute this).
pub fn csrf_token(token: &SecretString) -> String {
    let mut data = b"pivault-csrf-v1\0".to_vec();
    data.extend_from_slice(token.expose().as_bytes());
    hex::encode(&vault_core::crypto::sha256(&data)[..16])
}

fn session_token(headers: &HeaderMap) -> Option<SecretString> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .map(|v| SecretString::new(v.to_owned()))
}

/// A POST that a page of another site made the browser send: refused
/// whatever it carries. Browsers say where a request comes from in
/// `Sec-Fetch-Site`, and in `Origin` on every cross-origin POST.
fn cross_site(headers: &HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (get("origin"), get("host")) {
        (Some(origin), Some(host)) => {
            let bare = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .unwrap_or(origin);
            bare != host
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// A page: the layout, the security headers, and the status.
fn page(status: StatusCode, title: &str, who: Option<&Signed>, body: &str) -> Response {
    let nav = match who {
        Some(w) => format!(
            "<nav aria-label=\"main\"><a href=\"/ui/\">Home</a>{links}<a href=\"/ui/verify\">Verify a certificate</a>\
             <form method=\"post\" action=\"/ui/sign-out\" class=\"inline\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <button type=\"submit\">Sign out {user}</button></form></nav>",
            links = menu(w)
                .iter()
                .map(|(href, label, _)| format!("<a href=\"{href}\">{label}</a>"))
                .collect::<String>(),
            csrf = esc(&w.csrf),
            user = esc(&w.username),
        ),
        None => "<nav aria-label=\"main\"><a href=\"/ui/\">Sign in</a><a href=\"/ui/verify\">Verify a certificate</a></nav>".into(),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · pivault</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
         <body><header><p class=\"brand\">pivault</p>{nav}</header><main id=\"main\"><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title),
    );
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(h);
    if !status.is_success() && !status.is_redirection() {
        // Ours, not a router rejection: the framing keeps this page.
        r.extensions_mut().insert(problem::Code("web"));
    }
    r
}

fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(to).expect("a path of ours"),
    );
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    secure_headers(h);
    r
}

fn set_cookie(token: &SecretString, max_age_s: i64) -> String {
    format!(
        "{COOKIE}={}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_s}",
        token.expose()
    )
}

fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn refused_cross_site() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Refused",
        None,
        "<p role=\"alert\">This form was sent from another site, so it was refused. Open pivault's own page and try again.</p>",
    )
}

/// The signed-in visitor.
struct Signed {
    /// The user's ID (what a server-side preview is bound to, with the token).
    id: vault_core::ids::UserId,
    token: SecretString,
    user_id: vault_core::ids::UserId,
    csrf: String,
    username: String,
    role: Role,
    enrol_only: bool,
    two_factor: &'static str,
}

impl Signed {
    /// The session's token, for a vault call on the visitor's behalf.
    fn bearer(&self) -> Bearer {
        Bearer(SecretString::new(self.token.expose().to_owned()))
    }

    fn may(&self, p: Permission) -> bool {
        !self.enrol_only && self.role.permits(p)
    }
}

/// The visitor's session, if their cookie holds a live one.
/// The signed-in visitor of a page, or the answer that sends them where
/// they must go first: the sign-in page without a session, the enrolment
/// page with a session that may only enrol a second factor.
async fn visitor(
    app: &Arc<App>,
    rc: &RequestContext,
    headers: &HeaderMap,
) -> Result<Signed, Response> {
    let Some(who) = signed_in(app, rc, headers).await else {
        return Err(see_other("/ui/", None));
    };
    if who.enrol_only {
        return Err(see_other("/ui/two-factor", None));
    }
    Ok(who)
}

async fn signed_in(app: &Arc<App>, rc: &RequestContext, headers: &HeaderMap) -> Option<Signed> {
    let token = session_token(headers)?;
    let t2 = SecretString::new(token.expose().to_owned());
    let (me, enrol_only) = app
        .as_user(rc, Bearer(t2), |v, s| Ok((v.whoami(s)?, s.enrol_only())))
        .await
        .ok()?;
    Some(Signed {
        id: me.id,
        csrf: csrf_token(&token),
        token,
        user_id: me.id,
        username: me.username.as_str().to_owned(),
        role: me.role,
        enrol_only,
        two_factor: me.two_factor.as_str(),
    })
}

/// The prologue of every signed-in form: refused when sent from another
/// site or without the session's CSRF token; the sign-in page when the
/// session is gone (expired, revoked, its user disabled).
async fn form_session(
    app: &Arc<App>,
    rc: &RequestContext,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<Signed, Response> {
    if cross_site(headers) {
        return Err(refused_cross_site());
    }
    let Some(who) = signed_in(app, rc, headers).await else {
        return Err(see_other("/ui/", None));
    };
    if !csrf_ok(&who, csrf) {
        return Err(refused_cross_site());
    }
    Ok(who)
}

/// The token of a state-changing form, checked against the session in
/// constant time.
fn csrf_ok(who: &Signed, sent: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(who.csrf.as_bytes().ct_eq(sent.as_bytes()))
}

async fn root() -> Response {
    see_other("/ui/", None)
}

async fn style() -> Response {
    let mut r = include_str!("web.css").into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    secure_headers(h);
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

fn sign_in_form(message: Option<&str>, need_code: bool) -> String {
    let alert = message
        .map(|m| format!("<p role=\"alert\" class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    format!(
        "{alert}<form method=\"post\" action=\"/ui/sign-in\" autocomplete=\"off\">\
         <label for=\"username\">Username</label><input id=\"username\" name=\"username\" required autocomplete=\"username\">\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" required autocomplete=\"current-password\">\
         <label for=\"code\">Code from your authenticator app{opt}</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\"{req}>\
         <p class=\"hint\">Or one of your recovery codes. Accounts without a second factor leave it empty.</p>\
         <button type=\"submit\">Sign in</button></form>",
        opt = if need_code { "" } else { " (if you have one)" },
        req = if need_code { " required" } else { "" },
    )
}

async fn home(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let Some(who) = signed_in(&app, &rc, &headers).await else {
        return page(StatusCode::OK, "Sign in", None, &sign_in_form(None, false));
    };
    if who.enrol_only {
        return see_other("/ui/two-factor", None);
    }
    let mut items = Vec::new();
    for (href, label, what) in menu(&who) {
        items.push(format!("<li><a href=\"{href}\">{label}</a> {what}</li>"));
    }
    items.push("<li><a href=\"/ui/verify\">Verify a certificate of destruction</a></li>".into());
    if who.two_factor == "none" {
        items.push("<li><a href=\"/ui/two-factor\">Set up two-factor sign-in</a></li>".into());
    }
    let body = format!(
        "<p>Signed in as <strong>{}</strong> ({}). Two-factor sign-in: {}.</p><ul>{}</ul>\
         <p class=\"hint\">What is not here yet is in the <code>pivault</code> command.</p>",
        esc(&who.username),
        esc(who.role.as_str()),
        esc(who.two_factor),
        items.join("")
    );
    page(StatusCode::OK, "Home", Some(&who), &body)
}

#[derive(Deserialize)]
struct SignInForm {
    username: String,
    password: String,
    #[serde(default)]
    code: String,
}

async fn sign_in(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    if cross_site(&headers) {
        return refused_cross_site();
    }
    // The API's sign-in budget per address applies here too.
    if app
        .login_buckets
        .take(crate::SourceKey::from(rc.peer))
        .is_err()
    {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Sign in",
            None,
            &sign_in_form(
                Some("Too many sign-ins from here. Wait a little, then try again."),
                false,
            ),
        );
    }
    let code = Some(f.code.trim().to_owned())
        .filter(|c| !c.is_empty())
        .map(SecretString::new);
    match app
        .login(&rc, f.username, SecretString::new(f.password), code)
        .await
    {
        Ok((s, token, ttl_ms)) => {
            let to = if s.enrol_only() {
                "/ui/two-factor"
            } else {
                "/ui/"
            };
            see_other(to, Some(set_cookie(&token, ttl_ms / 1000)))
        }
        Err(e) => {
            // Messages that tell an attacker nothing a wrong guess would
            // not: the password's own failure and the code's read alike.
            let (status, msg, need_code) = match e.code {
                "second_factor_required" => (
                    StatusCode::UNAUTHORIZED,
                    "Enter the code from your authenticator app (or a recovery code) with your password.",
                    true,
                ),
                "account_locked" => (
                    StatusCode::LOCKED,
                    "This account is locked after repeated failures. Wait, or ask an admin to unlock it.",
                    false,
                ),
                "login_throttled" | "rate_limited" => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed sign-ins from here. Wait a little, then try again.",
                    false,
                ),
                "account_disabled" => (
                    StatusCode::FORBIDDEN,
                    "This account is disabled. Ask an admin.",
                    false,
                ),
                _ => (
                    StatusCode::UNAUTHORIZED,
                    "Sign-in failed: check the username, the password and the code, then try again.",
                    false,
                ),
            };
            page(status, "Sign in", None, &sign_in_form(Some(msg), need_code))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if cross_site(&headers) {
        return refused_cross_site();
    }
    if let Some(who) = signed_in(&app, &rc, &headers).await
        && csrf_ok(&who, &f.csrf)
    {
        let t = SecretString::new(who.token.expose().to_owned());
        let _ = app
            .as_user(&rc, Bearer(who.token), move |v, _| v.revoke_token(&t))
            .await;
    }
    see_other("/ui/", Some(clear_cookie()))
}

fn qr_data_uri(text: &str) -> String {
    let svg = qrcode::QrCode::new(text.as_bytes())
        .map(|c| {
            c.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(220, 220)
                .build()
        })
        .unwrap_or_default();
    format!(
        "data:image/svg+xml;base64,{}",
        data_encoding::BASE64.encode(svg.as_bytes())
    )
}

async fn enrol_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let Some(who) = signed_in(&app, &rc, &headers).await else {
        return see_other("/ui/", None);
    };
    if who.two_factor == "enrolled" {
        return page(
            StatusCode::OK,
            "Two-factor sign-in",
            Some(&who),
            "<p>Your second factor is set up. If you lost the phone, an admin resets it.</p>",
        );
    }
    let e = match app
        .as_user(&rc, who.bearer(), |v, s| v.begin_two_factor_enrolment(s))
        .await
    {
        Ok(e) => e,
        Err(e) => return error_page(&who, &e),
    };
    let body = format!(
        "{must}<ol><li>Scan this code with your authenticator app:<br>\
         <img src=\"{qr}\" alt=\"QR code of your new two-factor secret\" width=\"220\" height=\"220\"></li>\
         <li>Or type the secret by hand: <code class=\"secret\">{secret}</code></li>\
         <li>Enter the 6-digit code the app shows:</li></ol>\
         <form method=\"post\" action=\"/ui/two-factor\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"code\">Code</label><input id=\"code\" name=\"code\" inputmode=\"numeric\" required autocomplete=\"one-time-code\">\
         <button type=\"submit\">Confirm</button></form>\
         <p class=\"hint\">The secret is shown once. Reloading this page makes a new one.</p>",
        must = if who.enrol_only {
            "<p role=\"status\">Your role requires two-factor sign-in. Set it up now: until then, this sign-in can do nothing else.</p>"
        } else {
            ""
        },
        qr = qr_data_uri(e.uri.expose()),
        secret = esc(e.secret_base32.expose()),
        csrf = esc(&who.csrf),
    );
    page(StatusCode::OK, "Two-factor sign-in", Some(&who), &body)
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn enrol_confirm(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let r = app
        .confirm_enrolment(
            &rc,
            who.bearer(),
            SecretString::new(f.code.trim().to_owned()),
        )
        .await;
    match r {
        Ok((token, codes, ttl_ms)) => {
            let list: String = codes
                .iter()
                .map(|c| format!("<li><code>{}</code></li>", esc(c.expose())))
                .collect();
            let body = format!(
                "<p role=\"status\">Two-factor sign-in is set up.</p>\
                 <p>Your recovery codes, each good once if the phone is lost. They are shown only now: print them or keep them offline.</p>\
                 <ul class=\"codes\">{list}</ul><p><a href=\"/ui/\">Continue</a></p>"
            );
            let signed = Signed {
                csrf: csrf_token(&token),
                token: SecretString::new(token.expose().to_owned()),
                enrol_only: false,
                two_factor: "enrolled",
                ..who
            };
            let mut r = page(StatusCode::OK, "Two-factor sign-in", Some(&signed), &body);
            if let Ok(c) = HeaderValue::from_str(&set_cookie(&token, ttl_ms / 1000)) {
                r.headers_mut().insert(header::SET_COOKIE, c);
            }
            r
        }
        Err(e) if e.code == "second_factor_failed" => page(
            StatusCode::UNAUTHORIZED,
            "Two-factor sign-in",
            Some(&who),
            "<p role=\"alert\" class=\"error\">That code is wrong or expired. <a href=\"/ui/two-factor\">Start again</a> and enter the code the app shows for the new secret.</p>",
        ),
        Err(e) => error_page(&who, &e),
    }
}

fn error_page(who: &Signed, e: &ApiError) -> Response {
    page(
        e.status,
        "Not done",
        Some(who),
        &format!("<p role=\"alert\" class=\"error\">{}</p>", esc(&e.detail)),
    )
}

fn verify_form(message: Option<&str>) -> String {
    let alert = message.unwrap_or_default();
    format!(
        "{alert}<form id=\"verify-upload\" method=\"post\" action=\"/ui/verify/upload\" enctype=\"multipart/form-data\">\
         <label for=\"certificate_file\">Certificate file (<code>.json</code>)</label>\
         <input id=\"certificate_file\" name=\"certificate_file\" type=\"file\" accept=\".json,application/json\" required>\
         <label for=\"key_file\">The vault's public key file (<code>certificate.pem</code>)</label>\
         <input id=\"key_file\" name=\"key_file\" type=\"file\" accept=\".pem\" required>\
         <button type=\"submit\">Verify the files</button></form>\
         <p>Or paste their text:</p>\
         <form id=\"verify-paste\" method=\"post\" action=\"/ui/verify\">\
         <label for=\"certificate\">Certificate (the JSON file's text)</label>\
         <textarea id=\"certificate\" name=\"certificate\" rows=\"8\" required></textarea>\
         <label for=\"key\">The vault's public key (<code>certificate.pem</code>)</label>\
         <textarea id=\"key\" name=\"key\" rows=\"4\" required></textarea>\
         <button type=\"submit\">Verify</button></form>\
         <p class=\"hint\">Checked here by the same verifier as <code>pivault certificate verify</code>; nothing is stored.</p>"
    )
}

async fn verify_page(
    headers: HeaderMap,
    State(app): State<Arc<App>>,
    rc: RequestContext,
) -> Response {
    let who = signed_in(&app, &rc, &headers).await;
    page(
        StatusCode::OK,
        "Verify a certificate",
        who.as_ref(),
        &verify_form(None),
    )
}

#[derive(Deserialize)]
struct VerifyForm {
    certificate: String,
    key: String,
}

/// The link to a verified certificate's PDF (only for a well-formed ID).
fn pdf_link(id: Option<&str>) -> String {
    match id.and_then(|i| i.parse::<vault_core::ids::CertificateId>().ok()) {
        Some(id) => format!(
            "<p class=\"hint\">Signed in to the vault that issued it? \
             <a href=\"/ui/certificates/{id}/pdf\">Download it as a PDF</a> \
             (the one-page summary, with the signed file attached inside).</p>"
        ),
        None => String::new(),
    }
}

async fn verify(headers: HeaderMap, Form(f): Form<VerifyForm>) -> Response {
    if cross_site(&headers) {
        return refused_cross_site();
    }
    verdict_page(&f.certificate, &f.key)
}

/// The same check of two uploaded files (`multipart/form-data`): the
/// certificate's JSON file and the vault's `certificate.pem`. Read in
/// memory, checked, and dropped: nothing is stored.
async fn verify_upload(headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if cross_site(&headers) {
        return refused_cross_site();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parts = import::boundary(content_type).and_then(|b| import::parts(&body, &b));
    let file = |name: &str| {
        parts
            .as_ref()?
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| std::str::from_utf8(p.data).ok())
            .filter(|t| !t.trim().is_empty())
    };
    match (file("certificate_file"), file("key_file")) {
        (Some(certificate), Some(key)) => verdict_page(certificate, key),
        _ => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Verify a certificate",
            None,
            &verify_form(Some(
                "<p role=\"alert\" class=\"error\">Choose both files: the certificate (<code>.json</code>) \
                 and the vault's public key (<code>certificate.pem</code>); or paste their text below.</p>",
            )),
        ),
    }
}

/// The verdict on a certificate's text and a vault key's text, above the form.
fn verdict_page(certificate: &str, key: &str) -> Response {
    let report = vault_core::certificate::Certificate::parse(certificate).and_then(|c| {
        let key = vault_core::certificate::parse_public_key(key)?;
        Ok((vault_core::certificate::verify(&c, &key), c))
    });
    let (status, verdict) = match report {
        Ok((r, c)) if r.ok() => (
            StatusCode::OK,
            format!(
                "<p role=\"status\" class=\"valid\">VALID: certificate <code>{}</code> ({}), signed by the vault key {}.{}</p>{}",
                esc(c.id().unwrap_or("?")),
                esc(&r.status),
                esc(&r.vault_key_fingerprint),
                r.cosignatures
                    .iter()
                    .map(|(role, fp, _)| format!(
                        " Co-signed by the {} key {}.",
                        esc(role),
                        esc(fp)
                    ))
                    .collect::<String>(),
                pdf_link(c.id())
            ),
        ),
        Ok((r, _)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "<p role=\"alert\" class=\"error\">INVALID: vault signature {}, co-signatures {}{}. Do not rely on this certificate.</p>",
                if r.vault_signature_ok { "good" } else { "bad" },
                if r.cosignatures.iter().all(|c| c.2) {
                    "good"
                } else {
                    "bad"
                },
                if r.missing_fields.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", fields missing or invalid: {}",
                        esc(&r.missing_fields.join(", "))
                    )
                }
            ),
        ),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "<p role=\"alert\" class=\"error\">INVALID: {}</p>",
                esc(&e.to_string())
            ),
        ),
    };
    page(
        status,
        "Verify a certificate",
        None,
        &format!("{verdict}{}", verify_form(None)),
    )
}

/// A certificate as the PDF document a business files (the API's
/// `GET /v1/certificates/{id}/pdf`, the same bytes), downloaded by a
/// signed-in visitor: what a contractor hands over.
async fn certificate_pdf(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let Ok(id) = id.parse::<vault_core::ids::CertificateId>() else {
        return error_page(&who, &ApiError::invalid("certificate is not a valid ID"));
    };
    let pdf = app
        .as_user(&rc, who.bearer(), move |v, s| {
            let c = v.certificate(s, id)?;
            let key = v.certificate_public_key();
            Ok(vault_core::certificate::render_pdf(
                &c,
                vault_core::certificate::Check::Issuer(&key),
            ))
        })
        .await;
    match pdf {
        Ok(pdf) => {
            let mut r = pdf.into_response();
            let h = r.headers_mut();
            secure_headers(h);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pdf"),
            );
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"certificate-{id}.pdf\""))
            {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => error_page(&who, &e),
    }
}
