//! The security status page (`doctor` for a signed-in officer or auditor)
//! and the annual review. Both read `Vault::security_checks`, the same
//! run of `doctor`'s checks the WISP pack rests on, behind the same
//! permission (`Reports`); the review is recorded by
//! `Vault::record_security_review`, as `pivault review` and
//! `POST /v1/review` record it. Check names, levels and findings only:
//! usernames of staff, counts, times, never a record's contents.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use vault_core::access::Permission;
use vault_core::clock::format_ms;
use vault_core::doctor::{Check, Level, REVIEW_INTERVAL_MS};
use vault_core::vault::SecurityChecks;

use super::{Signed, error_page, esc, form_session, page, visitor};
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/status", get(status))
        .route("/ui/review", get(review_page).post(review_done))
}

fn level_word(l: Level) -> &'static str {
    match l {
        Level::Fail => "fail",
        Level::Warn => "warn",
        Level::Ok => "ok",
    }
}

/// The plain summary line: what is unsafe, what needs a look, what is fine.
fn summary(c: &SecurityChecks) -> String {
    let (fail, warn, ok) = (
        c.count(Level::Fail),
        c.count(Level::Warn),
        c.count(Level::Ok),
    );
    let verdict = if fail > 0 {
        "Unsafe: fix the failing checks first (each says how)."
    } else if warn > 0 {
        "Nothing unsafe; the warnings need a look."
    } else {
        "Nothing unsafe, nothing to look at."
    };
    format!(
        "<p role=\"status\" id=\"summary\" class=\"{cls}\">{n} checks: {fail} failing, {warn} warning, {ok} fine. {verdict}</p>",
        n = c.checks.len(),
        cls = if fail > 0 { "error" } else { "valid" },
    )
}

fn check_item(c: &Check) -> String {
    format!(
        "<li id=\"check-{name}\"><h3>{name}</h3><dl><dt>Level</dt><dd class=\"level{cls}\">{level}</dd>\
         <dt>Finding</dt><dd>{detail}</dd></dl></li>",
        name = esc(c.name),
        cls = if c.level == Level::Fail { " error" } else { "" },
        level = level_word(c.level),
        detail = esc(&c.detail),
    )
}

async fn checks(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
) -> Result<SecurityChecks, Response> {
    app.as_user_long(rc, who.bearer(), |v, s| v.security_checks(s))
        .await
        .map_err(|e| error_page(who, &e))
}

/// `doctor` as a page: failures first, then warnings, then the rest, each
/// in `doctor`'s order.
async fn status(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let c = match checks(&app, &rc, &who).await {
        Ok(c) => c,
        Err(refused) => return refused,
    };
    let mut ordered: Vec<&Check> = c.checks.iter().collect();
    ordered.sort_by_key(|k| match k.level {
        Level::Fail => 0,
        Level::Warn => 1,
        Level::Ok => 2,
    });
    let items: String = ordered.into_iter().map(check_item).collect();
    page(
        StatusCode::OK,
        "Security status",
        Some(&who),
        &format!(
            "{}<p class=\"hint\">The checks of <code>pivault doctor</code>, run now ({}). The passphrase file's \
             check runs only in the command, where the file is.</p>\
             <p><a href=\"/ui/review\">The annual security review</a></p><h2>Checks, failures first</h2><ul class=\"cards\">{items}</ul>",
            summary(&c),
            esc(&format_ms(c.at_ms)),
        ),
    )
}

/// The review page: when the last review was recorded, whether it is due,
/// the status beside it, and (for those who may record one) the form.
fn review_body(who: &Signed, c: &SecurityChecks, top: &str) -> String {
    let last = match c.last_review_ms {
        Some(t) => format!(
            "<dt>Last review</dt><dd id=\"last-review\">{}</dd><dt>Next due</dt><dd>{}</dd>",
            esc(&format_ms(t)),
            esc(&format_ms(t + REVIEW_INTERVAL_MS))
        ),
        None => "<dt>Last review</dt><dd id=\"last-review\">none recorded</dd>".into(),
    };
    let due = if c.review_overdue() {
        "<p role=\"status\" id=\"review-due\" class=\"error\">The review is overdue: the security program must be \
         reviewed at least once a year (201 CMR 17.03(2)(i)). Review it, then record it here.</p>"
    } else {
        "<p role=\"status\" id=\"review-due\" class=\"valid\">The review is up to date.</p>"
    };
    let form = if who.may(Permission::RecordReview) {
        format!(
            "<h2>Record a review</h2><form method=\"post\" action=\"/ui/review\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label class=\"check\"><input type=\"checkbox\" id=\"confirm\" name=\"confirm\" value=\"1\"> \
             The review of the security measures and the written program took place today.</label>\
             <button type=\"submit\">Record the review</button></form>\
             <p class=\"hint\">Recorded with your name and the time in the audit trail (<code>security.review</code>), \
             as <code>pivault review</code> records it.</p>",
            csrf = esc(&who.csrf)
        )
    } else {
        "<p class=\"hint\">An officer records the review.</p>".into()
    };
    format!(
        "{top}{due}<dl>{last}</dl><h2>Status</h2>{}<p><a href=\"/ui/status\">Every check</a></p>{form}",
        summary(c)
    )
}

async fn review_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    match checks(&app, &rc, &who).await {
        Ok(c) => page(
            StatusCode::OK,
            "Annual security review",
            Some(&who),
            &review_body(&who, &c, ""),
        ),
        Err(refused) => refused,
    }
}

#[derive(Deserialize)]
struct ReviewForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// Records the review (`Vault::record_security_review`), then shows the
/// page again with the new date.
async fn review_done(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<ReviewForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let (status, top) = if f.confirm.is_none() {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "<p role=\"alert\" class=\"error\">Nothing recorded: tick the box to say the review took place, then record it.</p>"
                .to_owned(),
        )
    } else {
        match app
            .as_user_long(&rc, who.bearer(), |v, s| v.record_security_review(s))
            .await
        {
            Ok(()) => (
                StatusCode::OK,
                "<p role=\"status\" id=\"recorded\">Recorded: the annual review is done.</p>"
                    .to_owned(),
            ),
            Err(e) => return error_page(&who, &e),
        }
    };
    match checks(&app, &rc, &who).await {
        Ok(c) => page(
            status,
            "Annual security review",
            Some(&who),
            &review_body(&who, &c, &top),
        ),
        Err(refused) => refused,
    }
}
