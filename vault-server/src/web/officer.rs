//! The officer's pages: legal holds (place, release), retention (the
//! policies, setting one per collection, and what is due now) and
//! disposals — the scope, a dry-run preview with the record and customer
//! counts and the exclusions (held records), a confirmation that starts the
//! batch and its progress page (`progress.rs`), then the certificate. Every
//! step is the API's `Vault` call: the hold rules, the contractor's scope
//! and the audit events are the core's.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use vault_core::clock::format_ms;
use vault_core::ids::{CertificateId, CollectionName, RecordId};
use vault_core::vault::{
    DisposalOutcome, DisposalParties, DisposalRequest, DisposalScope, RetentionPolicy,
};

use super::{
    Signed, error_page, esc, form_session, page, secure_headers, see_other, signed_in, visitor,
};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/holds", get(holds_page).post(hold_change))
        .route("/ui/retention", get(retention_page).post(set_retention))
        .route("/ui/disposals", get(disposal_page).post(disposal_step))
        .route("/ui/disposals/certificate/{id}", get(certificate_file))
}

// ----- legal holds --------------------------------------------------------------

async fn holds_list(app: &Arc<App>, rc: &RequestContext, who: &Signed) -> Result<String, ApiError> {
    let holds = app.as_user(rc, who.bearer(), |v, s| v.holds(s)).await?;
    if holds.is_empty() {
        return Ok("<h2>Holds in force</h2><p>No legal hold is in force.</p>".into());
    }
    let items: String = holds
        .iter()
        .map(|h| {
            format!(
                "<li><dl><dt>{kind}</dt><dd><code>{target}</code></dd><dt>Reason</dt><dd>{reason}</dd>\
                 <dt>Since</dt><dd>{since}</dd></dl>\
                 <form method=\"post\" action=\"/ui/holds\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"release\">\
                 <input type=\"hidden\" name=\"kind\" value=\"{kind}\"><input type=\"hidden\" name=\"target\" value=\"{target}\">\
                 <button type=\"submit\" class=\"secondary\">Release the hold on {kind} {target}</button></form></li>",
                kind = esc(h.kind),
                target = esc(&h.target),
                reason = esc(&h.reason),
                since = esc(&format_ms(h.created_ms)),
                csrf = esc(&who.csrf),
            )
        })
        .collect();
    Ok(format!(
        "<h2>Holds in force</h2><ul class=\"cards\">{items}</ul>"
    ))
}

fn place_form(who: &Signed) -> String {
    format!(
        "<h2>Place a hold</h2><form method=\"post\" action=\"/ui/holds\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"place\">\
         <label for=\"hold-kind\">Hold</label><select id=\"hold-kind\" name=\"kind\">\
         <option value=\"record\">one record</option><option value=\"subject\">every record of a customer</option></select>\
         <label for=\"hold-target\">Record ID, or the customer's subject ID or reference</label>\
         <input id=\"hold-target\" name=\"target\" required spellcheck=\"false\">\
         <label for=\"hold-reason\">Reason (audited; no numbers of 4 or more digits)</label>\
         <input id=\"hold-reason\" name=\"reason\" required>\
         <button type=\"submit\">Place the hold</button></form>\
         <p class=\"hint\">A held record is left out of every disposal until the hold is released.</p>",
        csrf = esc(&who.csrf),
    )
}

async fn holds_render(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    status: StatusCode,
    top: &str,
) -> Response {
    match holds_list(app, rc, who).await {
        Ok(list) => page(
            status,
            "Legal holds",
            Some(who),
            &format!("{top}{}{list}", place_form(who)),
        ),
        Err(e) => error_page(who, &e),
    }
}

async fn holds_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    holds_render(&app, &rc, &who, StatusCode::OK, "").await
}

#[derive(Deserialize)]
struct HoldForm {
    #[serde(default)]
    csrf: String,
    action: String,
    kind: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    reason: String,
}

/// Places or releases a hold (`Vault::add_hold`, `Vault::remove_hold`).
async fn hold_change(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<HoldForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let (action, kind, target, reason) = (f.action.clone(), f.kind.clone(), f.target, f.reason);
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| {
            let t = target.trim();
            let (record, subject) = match kind.as_str() {
                "record" => (Some(t.parse::<RecordId>()?), None),
                "subject" => (None, Some(v.resolve_subject(t)?)),
                _ => {
                    return Err(vault_core::Error::InvalidInput(
                        "a hold is on a record or a subject".into(),
                    ));
                }
            };
            match action.as_str() {
                "place" => v.add_hold(s, record, subject, &reason),
                "release" => v.remove_hold(s, record, subject),
                _ => Err(vault_core::Error::InvalidInput(
                    "the action is place or release".into(),
                )),
            }
        })
        .await;
    let (status, top) = match r {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "<p role=\"status\">Hold {}.</p>",
                if f.action == "place" {
                    "placed"
                } else {
                    "released"
                }
            ),
        ),
        Err(e) => (
            e.status,
            format!(
                "<p role=\"alert\" class=\"error\">Not done: {} Check the ID and the reason, then try again.</p>",
                esc(&e.detail)
            ),
        ),
    };
    holds_render(&app, &rc, &who, status, &top).await
}

// ----- retention -------------------------------------------------------------------

/// What a retention form sent, kept when it comes back with a message.
#[derive(Default, Deserialize)]
struct RetentionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    collection: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    from: String,
}

/// One collection's policy form: the current policy filled in (or what was
/// typed, with the core's message beside the days).
fn retention_form(
    who: &Signed,
    collection: &str,
    current: Option<&RetentionPolicy>,
    typed: Option<(&RetentionForm, &str)>,
) -> String {
    let c = esc(collection);
    let days = match (typed, current) {
        (Some((t, _)), _) => t.days.clone(),
        (None, Some(p)) => p.days.to_string(),
        (None, None) => String::new(),
    };
    let from_updated = match (typed, current) {
        (Some((t, _)), _) => t.from == "updated",
        (None, Some(p)) => p.from_updated,
        (None, None) => false,
    };
    let (note, aria) = match typed {
        Some((_, m)) => (
            format!("<p class=\"field-error\" id=\"e-days-{c}\">{}</p>", esc(m)),
            format!(" aria-describedby=\"h-days-{c} e-days-{c}\" aria-invalid=\"true\""),
        ),
        None => (String::new(), format!(" aria-describedby=\"h-days-{c}\"")),
    };
    let opt = |v: &str, label: &str, sel: bool| {
        format!(
            "<option value=\"{v}\"{}>{label}</option>",
            if sel { " selected" } else { "" }
        )
    };
    format!(
        "<form method=\"post\" action=\"/ui/retention\" class=\"retention\" autocomplete=\"off\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"collection\" value=\"{c}\">\
         <label for=\"days-{c}\">Keep records of {c} for (days)</label>\
         <p class=\"hint\" id=\"h-days-{c}\">At least 1; e.g. 2555 for seven years.</p>{note}\
         <input id=\"days-{c}\" name=\"days\" inputmode=\"numeric\" value=\"{days}\"{aria}>\
         <label for=\"from-{c}\">Counted from each record's</label>\
         <select id=\"from-{c}\" name=\"from\">{opts}</select>\
         <button type=\"submit\">Set the policy of {c}</button></form>",
        csrf = esc(&who.csrf),
        days = esc(&days),
        opts = [
            opt("created", "creation", !from_updated),
            opt("updated", "last update", from_updated),
        ]
        .join(""),
    )
}

/// The retention policies and what is due now (`Vault::retention`,
/// `Vault::retention_due`: a dry run of the past-retention scope, holds
/// reported as left out), a form per collection to set its policy, and
/// the way to dispose of what is due.
async fn retention_render(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    status: StatusCode,
    top: &str,
    typed: Option<(&RetentionForm, &str)>,
) -> Response {
    let r = app
        .as_user_long(rc, who.bearer(), |v, s| {
            let names: Vec<String> = v
                .collections(s)?
                .into_iter()
                .map(|(n, _)| n.as_str().to_owned())
                .collect();
            Ok((v.retention(s)?, v.retention_due(s)?, names))
        })
        .await;
    let (policies, due, names) = match r {
        Ok(x) => x,
        Err(e) => return error_page(who, &e),
    };
    let cards: String = names
        .iter()
        .map(|c| {
            let p = policies.get(c);
            let now = match p {
                Some(p) => format!(
                    "<p id=\"policy-{}\"><strong>{}</strong>: kept {} day(s) from its {}</p>",
                    esc(c),
                    esc(c),
                    p.days,
                    if p.from_updated {
                        "last update"
                    } else {
                        "creation"
                    }
                ),
                None => format!(
                    "<p id=\"policy-{0}\"><strong>{0}</strong>: no policy; its records never fall due.</p>",
                    esc(c)
                ),
            };
            let mine = typed.filter(|(t, _)| t.collection == *c);
            format!("<li>{now}{}</li>", retention_form(who, c, p, mine))
        })
        .collect();
    let list = if names.is_empty() {
        "<p>There is no collection yet.</p>".to_owned()
    } else {
        format!("<ul class=\"cards\">{cards}</ul>")
    };
    let next = if due.records.is_empty() {
        "<p role=\"status\" id=\"due\">Nothing is past its retention period now.</p>".to_owned()
    } else {
        format!(
            "<p role=\"status\" id=\"due\">{} record(s) of {} customer(s) are past retention; {} held.</p><p><a href=\"/ui/disposals\">Dispose of them</a>: choose \"what is past its retention period\", preview, confirm.</p>",
            due.records.len(),
            due.subjects,
            due.excluded.len()
        )
    };
    page(
        status,
        "Retention",
        Some(who),
        &format!(
            "{top}<h2>Policies</h2>{list}\
             <p class=\"hint\">A new or shorter policy makes records due sooner: only an officer may set one. \
             Setting a policy disposes of nothing: what is due is disposed of from the disposal page (or by the retention schedule).</p>\
             <h2>Due now</h2>{next}{}",
            exclusions(&due)
        ),
    )
}

async fn retention_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    retention_render(&app, &rc, &who, StatusCode::OK, "", None).await
}

/// Sets a collection's policy (`Vault::set_retention`, as `pivault
/// retention set`: the core checks the role, refuses a new or shorter
/// policy to whoever may not make records due, and audits).
async fn set_retention(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<RetentionForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let Ok(days) = f.days.trim().parse::<u32>() else {
        let m = "Type the number of days as digits, at least 1.";
        return retention_render(
            &app,
            &rc,
            &who,
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "<p role=\"alert\" class=\"error\">The policy of {} was not set: {m}</p>",
                esc(&f.collection)
            ),
            Some((&f, m)),
        )
        .await;
    };
    let policy = RetentionPolicy {
        days,
        from_updated: f.from == "updated",
    };
    let (coll, p2) = (f.collection.clone(), policy.clone());
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| v.set_retention(s, &coll, p2))
        .await;
    match r {
        Ok(()) => {
            let top = format!(
                "<p role=\"status\">The policy of <strong>{}</strong> is set: records are kept {} day(s) from their {}.</p>",
                esc(&f.collection),
                policy.days,
                if policy.from_updated {
                    "last update"
                } else {
                    "creation"
                }
            );
            retention_render(&app, &rc, &who, StatusCode::OK, &top, None).await
        }
        Err(e) => {
            let m = format!("{} Change the days, or ask an officer.", e.detail);
            let top = format!(
                "<p role=\"alert\" class=\"error\">The policy of {} was not set: {}</p>",
                esc(&f.collection),
                esc(&m)
            );
            retention_render(&app, &rc, &who, e.status, &top, Some((&f, &m))).await
        }
    }
}

// ----- disposals ------------------------------------------------------------------

/// What the disposal form asked for; carried from the preview to the
/// confirmation in the form itself (never in a URL).
#[derive(Clone, Default, Deserialize)]
struct DisposalForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    data_owner: String,
    #[serde(default)]
    confirm: Option<String>,
    /// The preview's fingerprint (`vault_core::vault::plan_fingerprint`):
    /// the confirmation destroys exactly what the preview showed.
    #[serde(default)]
    plan: String,
}

impl DisposalForm {
    fn request(&self, v: &vault_core::Vault, dry_run: bool) -> vault_core::Result<DisposalRequest> {
        let t = self.target.trim();
        let scope = match self.scope.as_str() {
            "record" => DisposalScope::Record(t.parse()?),
            "subject" => DisposalScope::Subject(v.resolve_subject(t)?),
            "collection" => DisposalScope::Query {
                collection: Some(CollectionName::parse(t)?),
                before_ms: if self.before.trim().is_empty() {
                    jiff::Timestamp::now().as_millisecond() + 1
                } else {
                    vault_core::clock::parse_time(self.before.trim())?
                },
                by_updated: false,
            },
            "past_retention" => DisposalScope::PastRetention,
            _ => {
                return Err(vault_core::Error::InvalidInput(
                    "choose what to dispose of: a record, a customer, a collection or what is past retention".into(),
                ));
            }
        };
        Ok(DisposalRequest {
            scope,
            parties: DisposalParties {
                data_owner: self.data_owner.trim().to_owned(),
                ..DisposalParties::default()
            },
            dry_run,
        })
    }

    fn hidden(&self, who: &Signed) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"scope\" value=\"{}\">\
             <input type=\"hidden\" name=\"target\" value=\"{}\"><input type=\"hidden\" name=\"before\" value=\"{}\">\
             <input type=\"hidden\" name=\"data_owner\" value=\"{}\">",
            esc(&who.csrf),
            esc(&self.scope),
            esc(&self.target),
            esc(&self.before),
            esc(&self.data_owner)
        )
    }
}

fn scope_form(who: &Signed, f: &DisposalForm, message: Option<&str>) -> String {
    let alert = message
        .map(|m| {
            format!(
                "<p role=\"alert\" class=\"error\">Not done: {} Change the scope, then preview again.</p>",
                esc(m)
            )
        })
        .unwrap_or_default();
    let opt = |v: &str, label: &str| {
        format!(
            "<option value=\"{v}\"{s}>{label}</option>",
            s = if f.scope == v { " selected" } else { "" }
        )
    };
    format!(
        "{alert}<form method=\"post\" action=\"/ui/disposals\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"step\" value=\"preview\">\
         <label for=\"scope\">Dispose of</label><select id=\"scope\" name=\"scope\">{opts}</select>\
         <label for=\"target\">Record ID, customer (subject ID or reference), or collection</label>\
         <p class=\"hint\" id=\"h-target\">Leave empty for what is past retention.</p>\
         <input id=\"target\" name=\"target\" spellcheck=\"false\" value=\"{target}\" aria-describedby=\"h-target\">\
         <label for=\"before\">Created before (a collection; YYYY-MM-DD)</label>\
         <p class=\"hint\" id=\"h-before\">Empty: every record created until now.</p>\
         <input id=\"before\" name=\"before\" value=\"{before}\" aria-describedby=\"h-before\">\
         <label for=\"data_owner\">Data owner (the business named on the certificate)</label>\
         <input id=\"data_owner\" name=\"data_owner\" required value=\"{owner}\">\
         <button type=\"submit\">Preview</button></form>\
         <p class=\"hint\">The preview changes nothing: it counts what would be destroyed and what a legal hold keeps.</p>",
        csrf = esc(&who.csrf),
        opts = [
            opt("record", "one record"),
            opt("subject", "every record of a customer"),
            opt("collection", "records of a collection"),
            opt("past_retention", "what is past its retention period"),
        ]
        .join(""),
        target = esc(&f.target),
        before = esc(&f.before),
        owner = esc(&f.data_owner),
    )
}

async fn disposal_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let f = DisposalForm {
        scope: "record".into(),
        ..DisposalForm::default()
    };
    page(
        StatusCode::OK,
        "Dispose",
        Some(&who),
        &scope_form(&who, &f, None),
    )
}

pub(super) fn exclusions(o: &DisposalOutcome) -> String {
    if o.excluded.is_empty() {
        return String::new();
    }
    let items: String = o
        .excluded
        .iter()
        .map(|(id, why)| {
            format!(
                "<li><code>{}</code>: {}</li>",
                esc(&id.to_string()),
                esc(why)
            )
        })
        .collect();
    format!("<h2>Left out</h2><ul>{items}</ul>")
}

/// One step of a disposal: `preview` (a dry run: counts and exclusions,
/// then the confirmation form) or `confirm` (the disposal itself, started
/// as a job and followed on its progress page, which ends with the
/// certificate). Both are `Vault::dispose`, as over the API.
async fn disposal_step(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<DisposalForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let confirm = f.step == "confirm";
    if confirm && f.confirm.is_none() {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Dispose",
            Some(&who),
            &scope_form(
                &who,
                &f,
                Some("the disposal was not confirmed. Preview it again and tick the confirmation."),
            ),
        );
    }
    if confirm {
        // The batch may run for long: on a job of its own, followed on
        // its progress page (`progress.rs`), never inside this request.
        let f2 = f.clone();
        return super::progress::start(&app, &rc, &who, move |v, s| {
            let req = f2.request(v, false)?;
            v.dispose_as_previewed(s, &req, &f2.plan)
        });
    }
    let f2 = f.clone();
    let r = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            let req = f2.request(v, true)?;
            v.dispose(s, &req)
        })
        .await;
    let o = match r {
        Ok(o) => o,
        Err(e) => {
            return page(
                e.status,
                "Dispose",
                Some(&who),
                &scope_form(&who, &f, Some(&e.detail)),
            );
        }
    };
    let counts = format!(
        "<dl><dt>Records</dt><dd id=\"count-records\">{}</dd><dt>Customers</dt><dd id=\"count-subjects\">{}</dd>\
         <dt>Massachusetts residents among them</dt><dd id=\"count-ma-residents\">{}</dd>\
         <dt>Left out (held)</dt><dd id=\"count-excluded\">{}</dd></dl>",
        o.records.len(),
        o.subjects,
        residents(&o),
        o.excluded.len()
    );
    let next = if o.records.is_empty() {
        "<p role=\"status\">Nothing in this scope can be disposed of: nothing would change.</p>"
            .to_owned()
    } else {
        format!(
            "<form method=\"post\" action=\"/ui/disposals\">{hidden}<input type=\"hidden\" name=\"step\" value=\"confirm\">\
             <input type=\"hidden\" name=\"plan\" value=\"{plan}\">\
             <label class=\"check\"><input type=\"checkbox\" name=\"confirm\" value=\"1\" required> \
             Destroy these {n} record(s) for good: their keys are deleted and they can never be read again.</label>\
             <button type=\"submit\" class=\"danger\">Dispose of {n} record(s)</button></form>",
            hidden = f.hidden(&who),
            plan = vault_core::vault::plan_fingerprint(&mut o.records.iter().copied()),
            n = o.records.len()
        )
    };
    page(
        StatusCode::OK,
        "Dispose: preview",
        Some(&who),
        &format!(
            "<p role=\"status\">Preview only: nothing has changed yet.</p>{counts}{}{next}\
             <p><a href=\"/ui/disposals\">Change the scope</a></p>",
            exclusions(&o)
        ),
    )
}

/// The signed certificate file (`Vault::certificate`, as
/// `GET /v1/certificates/{id}/file`), as a download.
async fn certificate_file(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Some(who) = signed_in(&app, &rc, &headers).await else {
        return see_other("/ui/", None);
    };
    let Ok(cid) = id.parse::<CertificateId>() else {
        return page(
            StatusCode::NOT_FOUND,
            "Certificate",
            Some(&who),
            "<p role=\"alert\" class=\"error\">That is not a certificate ID.</p>",
        );
    };
    match app
        .as_user(&rc, who.bearer(), move |v, s| v.certificate(s, cid))
        .await
    {
        Ok(c) => {
            let mut r = c.to_file_json().into_response();
            let h = r.headers_mut();
            secure_headers(h);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Ok(v) =
                HeaderValue::from_str(&format!("attachment; filename=\"certificate-{cid}.json\""))
            {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => error_page(&who, &e),
    }
}

/// The Massachusetts residents of an outcome, or why a preview has no count.
pub(super) fn residents(o: &DisposalOutcome) -> String {
    match o.ma_residents {
        Some(n) => n.to_string(),
        // A completed batch of an older version: its certificate has no count.
        None if o.certificate_id.is_some() => {
            "not counted (a certificate of an older version)".into()
        }
        None => format!(
            "counted by the disposal for its certificate (a preview reads them for up to {} records)",
            vault_core::vault::PREVIEW_RESIDENCE_MAX
        ),
    }
}
