//! The record list: IDs, counts and dates, never contents. For a
//! contractor it is the assigned scope (the core filters `list_records` to
//! it); a disposed record links its certificate's signed file.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use vault_core::access::Role;
use vault_core::clock::format_ms;
use vault_core::vault::{RecordFilter, RecordState};

use super::{error_page, esc, page, visitor};
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new().route("/ui/scope", get(scope))
}

/// The most records one page lists (the counts cover all).
const SHOWN: usize = 200;

async fn scope(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let metas = match app
        .as_user_long(&rc, who.bearer(), |v, s| {
            v.list_records(s, &RecordFilter::default())
        })
        .await
    {
        Ok(m) => m,
        Err(e) => return error_page(&who, &e),
    };
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for m in &metas {
        let c = counts.entry(m.collection.as_str()).or_default();
        match m.state {
            RecordState::Live => c.0 += 1,
            RecordState::Disposed { .. } => c.1 += 1,
        }
    }
    let summary: String = counts
        .iter()
        .map(|(c, (live, gone))| {
            format!(
                "<li><strong>{}</strong>: <span class=\"live\">{live}</span> live, {gone} disposed of</li>",
                esc(c)
            )
        })
        .collect();
    let items: String = metas
        .iter()
        .take(SHOWN)
        .map(|m| {
            let id = m.id.to_string();
            let state = match &m.state {
                RecordState::Live => "live".to_owned(),
                RecordState::Disposed {
                    certificate: Some(c),
                } => format!(
                    "disposed of: <a href=\"/ui/disposals/certificate/{c}\" download>certificate {c}</a>",
                    c = esc(c)
                ),
                RecordState::Disposed { certificate: None } => "disposed of".to_owned(),
            };
            format!(
                "<li><dl><dt>Record</dt><dd><code>{}</code></dd><dt>Collection</dt><dd>{}</dd>\
                 <dt>Version</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd><dt>State</dt><dd>{state}</dd></dl></li>",
                esc(&id),
                esc(m.collection.as_str()),
                m.version,
                esc(&format_ms(m.created_ms)),
            )
        })
        .collect();
    let (title, intro) = if who.role == Role::Contractor {
        (
            "Your scope",
            "The records you are assigned, by ID: you may dispose of these and no others. Their contents are not shown to you.",
        )
    } else {
        (
            "Records",
            "Every record by ID, collection and dates; no contents (find a customer to see one, masked).",
        )
    };
    page(
        StatusCode::OK,
        title,
        Some(&who),
        &format!(
            "<p>{intro}</p><h2>Counts</h2><ul>{}</ul><h2>Records</h2>\
             <p role=\"status\">{} record(s){}.</p><ul class=\"cards\">{items}</ul>",
            if summary.is_empty() {
                "<li>none</li>".to_owned()
            } else {
                summary
            },
            metas.len(),
            if metas.len() > SHOWN {
                format!(", the first {SHOWN} listed")
            } else {
                String::new()
            },
        ),
    )
}
