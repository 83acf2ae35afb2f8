//! The clerk's pages (and the officer's reveal): find a customer (masked),
//! add a record and correct one through a form generated from the
//! collection's schema, reveal one field with a reason. Every page calls the
//! `Vault` method the API calls; the forms show the core's validation
//! messages beside the field they concern (`Schema::field_errors`).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use vault_core::access::Permission;
use vault_core::ids::{RecordId, SubjectId};
use vault_core::schema::{FieldError, FieldType, Schema};
use vault_core::secret::SecretString;

use super::{Signed, error_page, esc, form_session, page, visitor};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/find", get(find_page).post(find))
        .route("/ui/reveal", post(reveal))
        .route("/ui/records/new", get(new_page).post(add))
        .route("/ui/records/{id}/correct", get(correct_page).post(correct))
}

fn find_form(who: &Signed, collection: &str, message: Option<&str>) -> String {
    let alert = message
        .map(|m| format!("<p role=\"alert\" class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let option = |v: &str, label: &str| format!("<option value=\"{v}\">{label}</option>");
    format!(
        "{alert}<form method=\"post\" action=\"/ui/find\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"collection\">Collection</label><input id=\"collection\" name=\"collection\" value=\"{coll}\" required>\
         <label for=\"type\">Find by</label><select id=\"type\" name=\"type\">{opts}</select>\
         <label for=\"value\">Value</label><input id=\"value\" name=\"value\" type=\"password\" required>\
         <p class=\"hint\">Typed hidden, as it may be a full SSN. Any formatting: dashes, spaces, case.</p>\
         <label class=\"check\"><input type=\"checkbox\" name=\"prefix\" value=\"1\"> Names starting with (3 letters or more)</label>\
         <button type=\"submit\">Find</button></form>",
        csrf = esc(&who.csrf),
        coll = esc(collection),
        opts = [
            option("ssn", "SSN"),
            option("drivers_license", "Driver's licence"),
            option("email", "E-mail"),
            option("phone", "Phone"),
            option("name", "Name"),
        ]
        .join(""),
    )
}

async fn find_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    page(
        StatusCode::OK,
        "Find a customer",
        Some(&who),
        &find_form(&who, "customers", None),
    )
}

#[derive(Deserialize)]
struct FindForm {
    #[serde(default)]
    csrf: String,
    collection: String,
    #[serde(rename = "type")]
    ty: String,
    value: String,
    #[serde(default)]
    prefix: Option<String>,
}

async fn find(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<FindForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let ty = match vault_core::schema::FieldType::parse(&f.ty) {
        Ok(t) => t,
        Err(e) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Find a customer",
                Some(&who),
                &find_form(&who, &f.collection, Some(&e.to_string())),
            );
        }
    };
    let q = vault_core::vault::FindQuery {
        collection: f.collection.clone(),
        target: vault_core::vault::FindTarget::Type(ty),
        value: SecretString::new(f.value),
        mode: if f.prefix.is_some() {
            vault_core::beacon::Match::Prefix
        } else {
            vault_core::beacon::Match::Exact
        },
    };
    match app
        .as_user(&rc, who.bearer(), move |v, s| v.find_records(s, &q))
        .await
    {
        Ok(r) => {
            let rows: String = r
                .records
                .iter()
                .map(|rec| {
                    let fields: String = rec
                        .fields
                        .iter()
                        .map(|(k, v)| {
                            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                            format!("<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v))
                        })
                        .collect();
                    let reveal = if who.may(Permission::RevealField) {
                        reveal_form(&who, &rec.meta.id.to_string(), rec.fields.keys())
                    } else {
                        String::new()
                    };
                    let id = rec.meta.id.to_string();
                    let correct = if who.may(Permission::UpdateRecord) {
                        format!(
                            "<p><a href=\"/ui/records/{0}/correct\">Correct record <code>{0}</code></a></p>",
                            esc(&id)
                        )
                    } else {
                        String::new()
                    };
                    format!(
                        "<li><p>Record <code>{}</code></p><dl>{fields}</dl>{correct}{reveal}</li>",
                        esc(&id)
                    )
                })
                .collect();
            let body = format!(
                "<p role=\"status\">{} record(s) found, shown masked.</p><ul class=\"records\">{rows}</ul>{}",
                r.records.len(),
                find_form(&who, &f.collection, None)
            );
            page(StatusCode::OK, "Find a customer", Some(&who), &body)
        }
        Err(e) => page(
            e.status,
            "Find a customer",
            Some(&who),
            &find_form(&who, &f.collection, Some(&e.detail)),
        ),
    }
}

/// The reveal of one field with a stated reason (officers; clerks with the
/// reveal grant are refused or allowed by the core, as over the API).
fn reveal_form<'a>(who: &Signed, record: &str, fields: impl Iterator<Item = &'a String>) -> String {
    let options: String = fields
        .map(|f| format!("<option value=\"{0}\">{0}</option>", esc(f)))
        .collect();
    let r = esc(record);
    format!(
        "<form method=\"post\" action=\"/ui/reveal\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"record\" value=\"{r}\">\
         <label for=\"field-{r}\">Reveal a field</label><select id=\"field-{r}\" name=\"field\">{options}</select>\
         <label for=\"reason-{r}\">Reason (audited; no numbers of 4 or more digits)</label>\
         <input id=\"reason-{r}\" name=\"reason\" required>\
         <button type=\"submit\">Reveal</button></form>",
        csrf = esc(&who.csrf),
    )
}

#[derive(Deserialize)]
struct RevealForm {
    #[serde(default)]
    csrf: String,
    record: String,
    field: String,
    reason: String,
}

/// Shows one field of one record in full, once: the page is `no-store`,
/// its URL and title name no value, and the reveal is audited with its
/// reason by the core (`record.reveal`).
async fn reveal(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<RevealForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let Ok(id) = f.record.parse::<vault_core::ids::RecordId>() else {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reveal a field",
            Some(&who),
            "<p role=\"alert\" class=\"error\">That is not a record ID. Find the customer again.</p>",
        );
    };
    let (field, reason) = (f.field.clone(), f.reason);
    match app
        .as_user(&rc, who.bearer(), move |v, s| {
            v.get_record(s, id, &[field.as_str()], Some(&reason))
        })
        .await
    {
        Ok(r) => {
            let value = r
                .fields
                .get(&f.field)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .unwrap_or_default();
            let body = format!(
                "<p role=\"status\">Revealed for your stated reason; this is in the audit trail. \
                 The value is not kept by this page: leave it when done.</p>\
                 <dl><dt>Record</dt><dd><code>{}</code></dd><dt>{}</dt><dd class=\"revealed\">{}</dd></dl>\
                 <p><a href=\"/ui/find\">Find another customer</a></p>",
                esc(&f.record),
                esc(&f.field),
                esc(&value)
            );
            page(StatusCode::OK, "Reveal a field", Some(&who), &body)
        }
        Err(e) => error_page(&who, &e),
    }
}

// ----- add and correct a record --------------------------------------------------

/// How a field of this type is typed into a form: the `inputmode` and a
/// hint that says what the core accepts.
fn input_of(ty: FieldType) -> (&'static str, &'static str) {
    match ty {
        FieldType::Ssn => ("numeric", "9 digits, e.g. 123-45-6789."),
        FieldType::DriversLicense | FieldType::StateId => {
            ("text", "Issuing state, then the number, e.g. MA S12345678.")
        }
        FieldType::AccountNumber => ("numeric", "The account's digits."),
        FieldType::CardNumber => ("numeric", "The card's digits; spaces are fine."),
        FieldType::Email => ("email", "e.g. name@example.com."),
        FieldType::Phone => ("tel", "Digits, with + and the country code if not US."),
        FieldType::Date => ("text", "YYYY-MM-DD or MM/DD/YYYY."),
        FieldType::ResidenceState => ("text", "2-letter state code, e.g. MA."),
        _ => ("text", ""),
    }
}

/// What the user typed into a record form.
#[derive(Default)]
struct RecordForm {
    csrf: String,
    collection: String,
    subject: String,
    /// Field name → the text typed (only fields of the schema are used).
    values: Map<String, Value>,
    /// Optional fields to remove (a correction).
    remove: Vec<String>,
}

impl RecordForm {
    fn from_pairs(pairs: Vec<(String, String)>) -> RecordForm {
        let mut f = RecordForm::default();
        for (k, v) in pairs {
            match k.as_str() {
                "csrf" => f.csrf = v,
                "collection" => f.collection = v,
                "subject" => f.subject = v,
                "remove" => f.remove.push(v),
                _ => {
                    if let Some(name) = k.strip_prefix("f.") {
                        f.values.insert(name.to_owned(), Value::String(v));
                    }
                }
            }
        }
        f
    }

    /// The typed text of each field offered by the form; an empty field is
    /// left out (a new record: not given; a correction: kept as it is).
    fn typed(&self, schema: &Schema) -> Map<String, Value> {
        offered(schema)
            .filter_map(|spec| {
                let v = self.values.get(&spec.name)?.as_str()?.trim();
                (!v.is_empty()).then(|| (spec.name.clone(), Value::String(v.to_owned())))
            })
            .collect()
    }
}

/// The fields a form offers: declared, not retired, typed by hand (a
/// biometric template is not).
fn offered(schema: &Schema) -> impl Iterator<Item = &vault_core::schema::FieldSpec> {
    schema
        .fields
        .iter()
        .filter(|f| !schema.is_retired(&f.name) && f.ty != FieldType::Biometric)
}

/// What the form is for.
enum FormKind<'a> {
    New,
    /// A correction of this record, whose current (masked) fields are shown.
    Correct(&'a str, &'a Map<String, Value>),
}

/// A record form generated from the schema: a label per field (required
/// ones say so), the hint of what the core accepts, and the core's message
/// beside each field it refused. Values the user typed are shown again on
/// this `no-store` page (never in a URL).
fn record_form(
    who: &Signed,
    collection: &str,
    schema: &Schema,
    form: &RecordForm,
    errors: &[FieldError],
    general: Option<&str>,
    kind: &FormKind<'_>,
) -> String {
    let mut top: Vec<String> = general.map(esc).into_iter().collect();
    top.extend(
        errors
            .iter()
            .filter(|e| {
                e.field
                    .as_deref()
                    .is_none_or(|f| !offered(schema).any(|o| o.name == f))
            })
            .map(|e| esc(&e.message)),
    );
    let marked = errors.iter().filter(|e| e.field.is_some()).count();
    let alert = if top.is_empty() && marked == 0 {
        String::new()
    } else {
        let fix = if marked > 0 {
            format!(
                "<p>{marked} field(s) need a change: fix the fields marked below, then send the form again. Nothing was stored.</p>"
            )
        } else {
            "<p>Nothing was stored. Change what the message says, then send the form again.</p>"
                .to_owned()
        };
        format!(
            "<div role=\"alert\" class=\"error\">{}{fix}</div>",
            top.iter()
                .map(|t| format!("<p>{t}</p>"))
                .collect::<String>()
        )
    };
    let mut fields = String::new();
    for spec in offered(schema) {
        let n = esc(&spec.name);
        let (mode, hint) = input_of(spec.ty);
        let err = errors
            .iter()
            .find(|e| e.field.as_deref() == Some(&spec.name));
        let value = form
            .values
            .get(&spec.name)
            .and_then(Value::as_str)
            .unwrap_or("");
        let now = match kind {
            FormKind::Correct(_, current) => current
                .get(&spec.name)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
            FormKind::New => None,
        };
        let required = spec.required && matches!(kind, FormKind::New);
        let mut described = Vec::new();
        let mut notes = String::new();
        if !hint.is_empty() || now.is_some() {
            described.push(format!("h-{n}"));
            let now = now
                .as_deref()
                .map(|v| {
                    format!(
                        " Now: <span class=\"now\">{}</span>; leave empty to keep it.",
                        esc(v)
                    )
                })
                .unwrap_or_default();
            notes.push_str(&format!(
                "<p class=\"hint\" id=\"h-{n}\">{}{now}</p>",
                esc(hint)
            ));
        }
        if let Some(e) = err {
            described.push(format!("e-{n}"));
            notes.push_str(&format!(
                "<p class=\"field-error\" id=\"e-{n}\">{}</p>",
                esc(&e.message)
            ));
        }
        let input = if spec.ty == FieldType::Text {
            format!(
                "<textarea id=\"f-{n}\" name=\"f.{n}\" rows=\"3\"{aria}>{v}</textarea>",
                aria = aria(&described, err.is_some(), required),
                v = esc(value)
            )
        } else {
            format!(
                "<input id=\"f-{n}\" name=\"f.{n}\" inputmode=\"{mode}\" autocomplete=\"off\" spellcheck=\"false\" value=\"{v}\"{aria}>",
                aria = aria(&described, err.is_some(), required),
                v = esc(value)
            )
        };
        let remove = match kind {
            FormKind::Correct(_, current) if !spec.required && current.contains_key(&spec.name) => {
                format!(
                    "<label class=\"check\"><input type=\"checkbox\" name=\"remove\" value=\"{n}\"{c}> Remove the {label}</label>",
                    c = if form.remove.contains(&spec.name) {
                        " checked"
                    } else {
                        ""
                    },
                    label = esc(&label_of(&spec.name)),
                )
            }
            _ => String::new(),
        };
        fields.push_str(&format!(
            "<div class=\"field{bad}\"><label for=\"f-{n}\">{label}{req}</label>{notes}{input}{remove}</div>",
            bad = if err.is_some() { " invalid" } else { "" },
            label = esc(&label_of(&spec.name)),
            req = if required { " (required)" } else { "" },
        ));
    }
    let (action, subject, button) = match kind {
        FormKind::New => (
            "/ui/records/new".to_owned(),
            format!(
                "<div class=\"field\"><label for=\"subject\">Customer reference (optional)</label>\
                 <p class=\"hint\" id=\"h-subject\">Your own reference for this customer, or a subject ID, so that their records are kept (and disposed of) together. Empty: a new customer.</p>\
                 <input id=\"subject\" name=\"subject\" autocomplete=\"off\" value=\"{}\" aria-describedby=\"h-subject\"></div>",
                esc(&form.subject)
            ),
            "Add the record",
        ),
        FormKind::Correct(id, _) => (
            format!("/ui/records/{}/correct", esc(id)),
            String::new(),
            "Save the correction",
        ),
    };
    format!(
        "{alert}<form method=\"post\" action=\"{action}\" autocomplete=\"off\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"collection\" value=\"{coll}\">\
         <p>Collection <strong>{coll}</strong>: {purpose}</p>{fields}{subject}\
         <button type=\"submit\">{button}</button></form>",
        csrf = esc(&who.csrf),
        coll = esc(collection),
        purpose = esc(&schema.purpose),
    )
}

fn aria(described: &[String], invalid: bool, required: bool) -> String {
    let mut a = String::new();
    if !described.is_empty() {
        a.push_str(&format!(" aria-describedby=\"{}\"", described.join(" ")));
    }
    if invalid {
        a.push_str(" aria-invalid=\"true\"");
    }
    if required {
        a.push_str(" aria-required=\"true\"");
    }
    a
}

/// A field name as a label: `given_name` → "Given name".
fn label_of(name: &str) -> String {
    let s = name.replace('_', " ");
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The collections and their schemas (any signed-in user may read them:
/// they hold no personal information).
async fn schemas(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
) -> Result<Vec<(String, Schema)>, ApiError> {
    app.as_user(rc, who.bearer(), |v, s| {
        Ok(v.collections(s)?
            .into_iter()
            .map(|(n, sc)| (n.as_str().to_owned(), sc))
            .collect())
    })
    .await
}

#[derive(Deserialize)]
struct NewQuery {
    collection: Option<String>,
}

fn choose_collection(who: &Signed, all: &[(String, Schema)], message: Option<&str>) -> Response {
    let alert = message
        .map(|m| format!("<p role=\"alert\" class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    let options: String = all
        .iter()
        .map(|(n, sc)| {
            format!(
                "<option value=\"{0}\">{0}: {1}</option>",
                esc(n),
                esc(&sc.purpose)
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Add a record",
        Some(who),
        &format!(
            "{alert}<form method=\"get\" action=\"/ui/records/new\">\
             <label for=\"collection\">Collection</label><select id=\"collection\" name=\"collection\">{options}</select>\
             <button type=\"submit\">Open the form</button></form>"
        ),
    )
}

async fn new_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Query(q): Query<NewQuery>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let all = match schemas(&app, &rc, &who).await {
        Ok(a) => a,
        Err(e) => return error_page(&who, &e),
    };
    let Some(name) = q.collection else {
        return choose_collection(&who, &all, None);
    };
    let Some((name, schema)) = all.iter().find(|(n, _)| *n == name) else {
        return choose_collection(
            &who,
            &all,
            Some("There is no such collection. Choose one from the list."),
        );
    };
    let form = RecordForm::default();
    page(
        StatusCode::OK,
        "Add a record",
        Some(&who),
        &record_form(&who, name, schema, &form, &[], None, &FormKind::New),
    )
}

/// Stores a record through `Vault::put_record` (the API's call: role,
/// validation and audit are the core's). A refused form comes back with
/// what was typed and the core's message beside each field.
async fn add(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = RecordForm::from_pairs(pairs);
    let who = match form_session(&app, &rc, &headers, &form.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let all = match schemas(&app, &rc, &who).await {
        Ok(a) => a,
        Err(e) => return error_page(&who, &e),
    };
    let Some((name, schema)) = all.iter().find(|(n, _)| *n == form.collection) else {
        return choose_collection(
            &who,
            &all,
            Some("There is no such collection. Choose one from the list."),
        );
    };
    let body = Value::Object(form.typed(schema));
    let (coll, reference, b2) = (name.clone(), form.subject.trim().to_owned(), body.clone());
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| {
            let subject = if reference.is_empty() {
                SubjectId::new()
            } else {
                v.resolve_subject(&reference)?
            };
            Ok((v.put_record(s, &coll, subject, &b2)?, subject))
        })
        .await;
    match r {
        Ok((id, subject)) => {
            let id = id.to_string();
            page(
                StatusCode::CREATED,
                "Record added",
                Some(&who),
                &format!(
                    "<p role=\"status\">The record is stored, encrypted under its own key.</p>\
                     <dl><dt>Record</dt><dd><code>{id}</code></dd><dt>Customer (subject)</dt><dd><code>{subject}</code></dd></dl>\
                     <ul><li><a href=\"/ui/records/{id}/correct\">Correct this record</a></li>\
                     <li><a href=\"/ui/records/new?collection={c}\">Add another record to {c}</a></li>\
                     <li><a href=\"/ui/find\">Find a customer</a></li></ul>",
                    id = esc(&id),
                    c = esc(name),
                ),
            )
        }
        Err(e) => {
            let errors = if e.code == "invalid_input" {
                schema.field_errors(&body)
            } else {
                Vec::new()
            };
            let general = errors.is_empty().then_some(e.detail.as_str());
            page(
                e.status,
                "Add a record",
                Some(&who),
                &record_form(&who, name, schema, &form, &errors, general, &FormKind::New),
            )
        }
    }
}

/// The record's masked fields and its collection's schema.
async fn current(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    id: RecordId,
) -> Result<(String, Schema, Map<String, Value>), ApiError> {
    app.as_user(rc, who.bearer(), move |v, s| {
        let r = v.get_record(s, id, &[], None)?;
        let schema = v
            .collections(s)?
            .into_iter()
            .find(|(n, _)| *n == r.meta.collection)
            .map(|(_, sc)| sc)
            .ok_or(vault_core::Error::NotFound("collection"))?;
        Ok((r.meta.collection.as_str().to_owned(), schema, r.fields))
    })
    .await
}

fn not_a_record(who: &Signed) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Correct a record",
        Some(who),
        "<p role=\"alert\" class=\"error\">That is not a record ID. <a href=\"/ui/find\">Find the customer</a> and follow the record's link.</p>",
    )
}

async fn correct_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let Ok(rid) = id.parse::<RecordId>() else {
        return not_a_record(&who);
    };
    match current(&app, &rc, &who, rid).await {
        Ok((coll, schema, now)) => page(
            StatusCode::OK,
            "Correct a record",
            Some(&who),
            &format!(
                "<p>Record <code>{}</code>. Type only what changes; sensitive values are shown masked.</p>{}",
                esc(&id),
                record_form(
                    &who,
                    &coll,
                    &schema,
                    &RecordForm::default(),
                    &[],
                    None,
                    &FormKind::Correct(&id, &now)
                )
            ),
        ),
        Err(e) => error_page(&who, &e),
    }
}

/// Corrects a record through `Vault::patch_record`: the fields typed are
/// replaced, those ticked "remove" are removed, the others are kept (a
/// clerk who sees the SSN masked need not retype it). A new version under
/// a new key, audited by the core.
async fn correct(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = RecordForm::from_pairs(pairs);
    let who = match form_session(&app, &rc, &headers, &form.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let Ok(rid) = id.parse::<RecordId>() else {
        return not_a_record(&who);
    };
    let (coll, schema, now) = match current(&app, &rc, &who, rid).await {
        Ok(c) => c,
        Err(e) => return error_page(&who, &e),
    };
    let mut patch = form.typed(&schema);
    for name in &form.remove {
        if schema.field(name).is_some() && !patch.contains_key(name) {
            patch.insert(name.clone(), Value::Null);
        }
    }
    if patch.is_empty() {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Correct a record",
            Some(&who),
            &record_form(
                &who,
                &coll,
                &schema,
                &form,
                &[],
                Some(
                    "Nothing was typed, so nothing changed. Type the new value of each field to correct.",
                ),
                &FormKind::Correct(&id, &now),
            ),
        );
    }
    let patch = Value::Object(patch);
    let p2 = patch.clone();
    match app
        .as_user(&rc, who.bearer(), move |v, s| v.patch_record(s, rid, &p2))
        .await
    {
        Ok(version) => page(
            StatusCode::OK,
            "Record corrected",
            Some(&who),
            &format!(
                "<p role=\"status\">Record <code>{id}</code> is corrected: version {version}, under a new key; the old version's key is destroyed.</p>\
                 <ul><li><a href=\"/ui/records/{id}/correct\">Correct it again</a></li><li><a href=\"/ui/find\">Find a customer</a></li></ul>",
                id = esc(&id)
            ),
        ),
        Err(e) => {
            let errors = if e.code == "invalid_input" {
                schema.patch_errors(&patch)
            } else {
                Vec::new()
            };
            let general = errors.is_empty().then_some(e.detail.as_str());
            page(
                e.status,
                "Correct a record",
                Some(&who),
                &record_form(
                    &who,
                    &coll,
                    &schema,
                    &form,
                    &errors,
                    general,
                    &FormKind::Correct(&id, &now),
                ),
            )
        }
    }
}
