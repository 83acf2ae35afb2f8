//! The admin's collections: each with its fields (type, required,
//! sensitive and so shown masked, searchable, retired, purpose), the
//! creation of one from a schema and the change of one's schema — the
//! schema file `pivault collection create|update --schema` takes, through
//! `Vault::create_collection` and `Vault::update_collection`. The core
//! decides who may (the page is asked of it with the permission to manage
//! collections), validates the schema and its evolution, and audits.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use vault_core::access::Permission;
use vault_core::schema::Schema;

use super::{Signed, error_page, esc, form_session, page, visitor};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new().route("/ui/collections", get(collections_page).post(change))
}

/// The collections, asked of the core by someone who may manage them
/// (anyone may read schemas; this page is for changing them).
async fn collections(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
) -> Result<Vec<(String, Schema)>, ApiError> {
    app.as_user(rc, who.bearer(), |v, s| {
        v.authorize_any(s, &[Permission::ManageCollections])?;
        Ok(v.collections(s)?
            .into_iter()
            .map(|(n, sc)| (n.as_str().to_owned(), sc))
            .collect())
    })
    .await
}

/// A form sent back with the core's message: which form, the field the
/// message goes beside, the message, and what was typed.
struct Refused<'a> {
    /// `None`: the create form; else the collection whose schema changed.
    collection: Option<&'a str>,
    /// `name` or `schema`.
    field: &'static str,
    message: &'a str,
    name: &'a str,
    schema: &'a str,
}

fn field_list(sc: &Schema) -> String {
    let items: String = sc
        .fields
        .iter()
        .map(|f| {
            let mut notes = vec![if f.required { "required" } else { "optional" }.to_owned()];
            if f.ty.is_sensitive() {
                notes.push("sensitive: shown masked, each reveal audited".into());
            }
            if sc.is_searchable(&f.name) {
                notes.push("searchable".into());
            }
            if sc.is_retired(&f.name) {
                notes.push("retired: no new value accepted".into());
            }
            let purpose = f
                .purpose
                .as_deref()
                .map(|p| format!(" Purpose: {}.", esc(p.trim_end_matches('.'))))
                .unwrap_or_default();
            format!(
                "<li><code>{}</code>, type <code>{}</code>: {}.{purpose}</li>",
                esc(&f.name),
                esc(f.ty.as_str()),
                esc(&notes.join(", "))
            )
        })
        .collect();
    format!("<ul class=\"fields\">{items}</ul>")
}

/// A labelled textarea (or input) with its hint, and the core's message
/// beside it when it is the refused one.
fn labelled(
    id: &str,
    name: &str,
    label: &str,
    hint: &str,
    control: &str,
    value: &str,
    error: Option<&str>,
) -> String {
    let note = error
        .map(|m| format!("<p class=\"field-error\" id=\"e-{id}\">{}</p>", esc(m)))
        .unwrap_or_default();
    let aria = if error.is_some() {
        format!(" aria-describedby=\"h-{id} e-{id}\" aria-invalid=\"true\"")
    } else {
        format!(" aria-describedby=\"h-{id}\"")
    };
    let input = if control == "textarea" {
        format!(
            "<textarea id=\"{id}\" name=\"{name}\" rows=\"14\" class=\"schema\" spellcheck=\"false\"{aria}>{}</textarea>",
            esc(value)
        )
    } else {
        format!(
            "<input id=\"{id}\" name=\"{name}\" spellcheck=\"false\" autocomplete=\"off\" value=\"{}\"{aria}>",
            esc(value)
        )
    };
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label><p class=\"hint\" id=\"h-{id}\">{hint}</p>{note}{input}</div>"
    )
}

const EXAMPLE: &str = r#"{
  "purpose": "Loyalty programme members",
  "residence": "MA",
  "fields": [
    {"name": "given_name", "type": "given_name", "required": true},
    {"name": "family_name", "type": "family_name", "required": true},
    {"name": "email", "type": "email", "searchable": true,
     "purpose": "newsletters"}
  ]
}"#;

fn render(
    who: &Signed,
    all: &[(String, Schema)],
    top: &str,
    refused: Option<&Refused<'_>>,
) -> String {
    let csrf = esc(&who.csrf);
    let cards: String = all
        .iter()
        .map(|(name, sc)| {
            let n = esc(name);
            let mine = refused.filter(|r| r.collection == Some(name.as_str()));
            let text = mine.map_or_else(|| sc.to_json(), |r| r.schema.to_owned());
            format!(
                "<li><h3>{n}</h3><p>{purpose}</p><p class=\"hint\">Residence assumed when a record names none: {res}.</p>\
                 {fields}<details{open}><summary>Change the schema of {n}</summary>\
                 <form method=\"post\" action=\"/ui/collections\" autocomplete=\"off\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"update\">\
                 <input type=\"hidden\" name=\"name\" value=\"{n}\">{area}\
                 <button type=\"submit\">Save the schema of {n}</button></form></details></li>",
                purpose = esc(&sc.purpose),
                res = esc(sc.default_residence.as_deref().unwrap_or("MA (the default)")),
                fields = field_list(sc),
                open = if mine.is_some() { " open" } else { "" },
                area = labelled(
                    &format!("schema-{name}"),
                    "schema",
                    &format!("Schema of {n} (JSON)"),
                    "Records are never lost: add optional fields, retire a field with \"retired\": true, change purposes. \
                     A field's type never changes and no field is removed.",
                    "textarea",
                    &text,
                    mine.map(|r| r.message),
                ),
            )
        })
        .collect();
    let list = if all.is_empty() {
        "<p>No collection yet: create the first one below.</p>".to_owned()
    } else {
        format!("<ul class=\"cards\">{cards}</ul>")
    };
    let new = refused.filter(|r| r.collection.is_none());
    let (name_err, schema_err) = match new {
        Some(r) if r.field == "name" => (Some(r.message), None),
        Some(r) => (None, Some(r.message)),
        None => (None, None),
    };
    let types: String = vault_core::schema::FieldType::ALL
        .iter()
        .map(|t| format!("<code>{}</code>", t.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{top}<h2>Collections and their fields</h2>{list}<h2>Create a collection</h2>\
         <form method=\"post\" action=\"/ui/collections\" autocomplete=\"off\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"action\" value=\"create\">{name}{schema}\
         <button type=\"submit\">Create the collection</button></form>\
         <p class=\"hint\">An example schema (the file <code>pivault collection create --schema</code> takes):</p>\
         <pre class=\"example\">{example}</pre>\
         <p class=\"hint\">Field types: {types}. A field may say <code>\"required\": true</code>, <code>\"searchable\": true</code> \
         (names, SSN, licence, state ID, e-mail, phone) and its <code>\"purpose\"</code>. \
         Card security codes, PINs and passwords are never stored.</p>",
        name = labelled(
            "new-name",
            "name",
            "Name",
            "Lower-case letters, digits, - and _, starting with a letter; it cannot change later.",
            "input",
            new.map_or("", |r| r.name),
            name_err,
        ),
        schema = labelled(
            "new-schema",
            "schema",
            "Schema (JSON)",
            "Why the collection is kept (\"purpose\"), the residence assumed, and its fields: see the example below.",
            "textarea",
            new.map_or("", |r| r.schema),
            schema_err,
        ),
        example = esc(EXAMPLE),
    )
}

async fn collections_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    match collections(&app, &rc, &who).await {
        Ok(all) => page(
            StatusCode::OK,
            "Collections",
            Some(&who),
            &render(&who, &all, "", None),
        ),
        Err(e) => error_page(&who, &e),
    }
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    schema: String,
}

/// Creates a collection or changes one's schema: the schema file parsed
/// by the core (`Schema::from_json`), then `Vault::create_collection` or
/// `Vault::update_collection` (which checks that no record is lost).
async fn change(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<ChangeForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let create = f.action == "create";
    let (name, text) = (f.name.trim().to_owned(), f.schema.clone());
    let r = app
        .as_user(&rc, who.bearer(), move |v, s| {
            v.authorize_any(s, &[Permission::ManageCollections])?;
            let schema = Schema::from_json(&text)?;
            if create {
                v.create_collection(s, &name, &schema)?;
            } else {
                v.update_collection(s, &name, &schema)?;
            }
            Ok(schema.fields.len())
        })
        .await;
    let name = f.name.trim();
    let (status, top, refused) = match &r {
        Ok(n) => (
            if create {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            format!(
                "<p role=\"status\">Collection <strong>{}</strong> {} with {n} field(s).</p>",
                esc(name),
                if create { "created" } else { "changed" }
            ),
            None,
        ),
        Err(e) if e.code == "permission_denied" => return error_page(&who, e),
        Err(e) => {
            let field =
                if create && (e.code == "already_exists" || e.detail.contains("collection name")) {
                    "name"
                } else {
                    "schema"
                };
            (
                e.status,
                format!(
                    "<div role=\"alert\" class=\"error\"><p>Nothing was changed: {}</p><p>Change what the message beside the {} says, then send the form again.</p></div>",
                    esc(&e.detail),
                    if field == "name" { "name" } else { "schema" }
                ),
                Some(Refused {
                    collection: (!create).then_some(name),
                    field,
                    message: &e.detail,
                    name,
                    schema: &f.schema,
                }),
            )
        }
    };
    match collections(&app, &rc, &who).await {
        Ok(all) => page(
            status,
            "Collections",
            Some(&who),
            &render(&who, &all, &top, refused.as_ref()),
        ),
        Err(e) => error_page(&who, &e),
    }
}
