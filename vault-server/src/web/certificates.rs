//! Certificates for the officer (and the auditor): the drafts waiting for
//! a second person's validation (`Vault::certificates_to_validate`), each
//! with a form to validate it (`Vault::validate_certificate`, as
//! `pivault certificate validate` and `POST /v1/certificates/{id}/validate`:
//! the core refuses the disposal's own operator, and the page shows its
//! message), and the validated ones; each as a PDF and as the signed JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use vault_core::ids::CertificateId;
use vault_core::vault::CertificateSummary;

use super::{Signed, error_page, esc, form_session, page, visitor};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new().route("/ui/certificates", get(list).post(validate))
}

/// The most validated certificates listed (newest first).
const SHOWN: usize = 50;

fn downloads(id: &str) -> String {
    format!(
        "<p class=\"actions\"><a href=\"/ui/certificates/{id}/pdf\" download>PDF of {id}</a>\
         <a href=\"/ui/disposals/certificate/{id}\" download>Signed JSON of {id}</a></p>"
    )
}

fn facts(c: &CertificateSummary) -> String {
    format!(
        "<dl><dt>Issued</dt><dd>{}</dd><dt>Operator</dt><dd>{}</dd><dt>Records</dt><dd>{}</dd>\
         <dt>Co-signed by</dt><dd>{}</dd></dl>",
        esc(&c.issued_at),
        esc(c.operator.as_deref().unwrap_or("?")),
        c.record_count,
        if c.cosigned_by.is_empty() {
            "no one".to_owned()
        } else {
            esc(&c.cosigned_by.join(", "))
        }
    )
}

async fn render(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    status: StatusCode,
    top: &str,
) -> Response {
    let me = who.user_id.to_string();
    let r = app
        .as_user_long(rc, who.bearer(), |v, s| {
            Ok((
                v.certificates_to_validate(s)?,
                v.list_certificates(s, false)?,
            ))
        })
        .await;
    let (drafts, all) = match r {
        Ok(x) => x,
        Err(e) => return error_page(who, &e),
    };
    let waiting: String = if drafts.is_empty() {
        "<p>No certificate is waiting for validation.</p>".into()
    } else {
        let items: String = drafts
            .iter()
            .map(|c| {
                let id = esc(&c.id);
                let own = if c.operator_user_id.as_deref() == Some(me.as_str()) {
                    "<p class=\"hint\">You ran this disposal: a second person validates its certificate, so the vault will refuse yours.</p>"
                } else {
                    ""
                };
                format!(
                    "<li id=\"draft-{id}\"><h3>Certificate {id}</h3>{facts}{own}\
                     <form method=\"post\" action=\"/ui/certificates\">\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"id\" value=\"{id}\">\
                     <label for=\"title-{id}\">Your title on the certificate (optional)</label>\
                     <input id=\"title-{id}\" name=\"title\" autocomplete=\"organization-title\">\
                     <button type=\"submit\">Validate certificate {id}</button></form>{dl}</li>",
                    facts = facts(c),
                    csrf = esc(&who.csrf),
                    dl = downloads(&id),
                )
            })
            .collect();
        format!("<ul class=\"cards\">{items}</ul>")
    };
    let validated: Vec<&CertificateSummary> = all
        .iter()
        .rev()
        .filter(|c| c.status == "validated")
        .take(SHOWN)
        .collect();
    let done: String = if validated.is_empty() {
        "<p>None yet.</p>".into()
    } else {
        let items: String = validated
            .iter()
            .map(|c| {
                let id = esc(&c.id);
                format!(
                    "<li id=\"validated-{id}\"><h3>Certificate {id}</h3>{}{}</li>",
                    facts(c),
                    downloads(&id)
                )
            })
            .collect();
        format!("<ul class=\"cards\">{items}</ul>")
    };
    page(
        status,
        "Certificates",
        Some(who),
        &format!(
            "{top}<p>A certificate of destruction is a draft until someone other than the disposal's operator \
             validates it (NIST SP 800-88's second person); validation re-signs it and keeps its co-signatures.</p>\
             <h2>Waiting for validation</h2>{waiting}<h2>Validated (newest first)</h2>{done}"
        ),
    )
}

async fn list(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    render(&app, &rc, &who, StatusCode::OK, "").await
}

#[derive(Deserialize)]
struct ValidateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    title: String,
}

/// Validates one draft (`Vault::validate_certificate`); the list again,
/// with the outcome (the core's message when it refuses).
async fn validate(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<ValidateForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let Ok(id) = f.id.trim().parse::<CertificateId>() else {
        return error_page(&who, &ApiError::invalid("certificate is not a valid ID"));
    };
    let title = Some(f.title.trim().to_owned()).filter(|t| !t.is_empty());
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| {
            v.validate_certificate(s, id, title.as_deref())
        })
        .await;
    let (status, top) = match r {
        Ok(_) => (
            StatusCode::OK,
            format!(
                "<p role=\"status\" id=\"outcome\">Certificate <code>{id}</code> validated: it is re-signed with you as the validator.</p>{}",
                downloads(&id.to_string())
            ),
        ),
        Err(e) => (
            e.status,
            format!(
                "<p role=\"alert\" class=\"error\" id=\"outcome\">Certificate <code>{id}</code> was not validated: {} \
                 Check it in the list below; a certificate of your own disposal is validated by another officer or an auditor.</p>",
                esc(&e.detail)
            ),
        ),
    };
    render(&app, &rc, &who, status, &top).await
}
