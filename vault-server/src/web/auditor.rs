//! The auditor's pages (and the officer's): the audit trail with filters
//! (who, what, when), the trail's verification and the activity report.
//! Each is the API's `Vault` call, audited by the core.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use vault_core::audit::EventFilter;
use vault_core::clock::{format_ms, parse_time};

use super::{error_page, esc, page, visitor};
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/audit", get(trail))
        .route("/ui/audit/verify", get(verify))
        .route("/ui/audit/report", get(report))
}

/// The most events one page shows (the latest that match).
const PAGE: usize = 100;

/// The trail's filters: user names, action names and dates only, none of
/// them personal information, so a GET (bookmarkable) is fine.
#[derive(Default, Deserialize)]
struct TrailQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

fn filter_form(q: &TrailQuery) -> String {
    format!(
        "<form method=\"get\" action=\"/ui/audit\" class=\"filters\">\
         <label for=\"actor\">User</label><input id=\"actor\" name=\"actor\" value=\"{}\" spellcheck=\"false\">\
         <label for=\"action\">Action (or its start, e.g. <code>record.</code>)</label><input id=\"action\" name=\"action\" value=\"{}\" spellcheck=\"false\">\
         <label for=\"since\">From (YYYY-MM-DD or RFC 3339)</label><input id=\"since\" name=\"since\" value=\"{}\">\
         <label for=\"until\">Until, not included</label><input id=\"until\" name=\"until\" value=\"{}\">\
         <button type=\"submit\">Show</button></form>\
         <p><a href=\"/ui/audit/verify\">Verify the whole trail</a> · <a href=\"/ui/audit/report\">Activity report</a></p>",
        esc(&q.actor),
        esc(&q.action),
        esc(&q.since),
        esc(&q.until)
    )
}

async fn trail(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Query(q): Query<TrailQuery>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let time = |s: &str| {
        let s = s.trim();
        (!s.is_empty()).then(|| parse_time(s)).transpose()
    };
    let (since, until) = match (time(&q.since), time(&q.until)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Audit trail",
                Some(&who),
                &format!(
                    "<p role=\"alert\" class=\"error\">{}: write a date as YYYY-MM-DD.</p>{}",
                    esc(&e.to_string()),
                    filter_form(&q)
                ),
            );
        }
    };
    let (actor, action) = (
        q.actor.trim().to_ascii_lowercase(),
        q.action.trim().to_owned(),
    );
    let r = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            let users = v.list_users(s)?;
            let names: HashMap<_, _> = users
                .iter()
                .map(|u| (u.id, u.username.as_str().to_owned()))
                .collect();
            let actor = if actor.is_empty() {
                None
            } else {
                Some(
                    users
                        .iter()
                        .find(|u| u.username.as_str() == actor)
                        .ok_or(vault_core::Error::NotFound("user"))?
                        .id,
                )
            };
            let evs = v.audit_events(
                s,
                &EventFilter {
                    actor,
                    from_ms: since,
                    to_ms: until,
                    action_prefix: (!action.is_empty()).then_some(action),
                    ..EventFilter::default()
                },
            )?;
            Ok((evs, names))
        })
        .await;
    let (evs, names) = match r {
        Ok(x) => x,
        Err(e) if e.code == "not_found" => {
            return page(
                StatusCode::NOT_FOUND,
                "Audit trail",
                Some(&who),
                &format!(
                    "<p role=\"alert\" class=\"error\">There is no user of that name: check the spelling, or leave User empty.</p>{}",
                    filter_form(&q)
                ),
            );
        }
        Err(e) => return error_page(&who, &e),
    };
    let total = evs.len();
    let items: String = evs
        .iter()
        .rev()
        .take(PAGE)
        .map(|e| {
            let actor = e
                .actor
                .map(|a| names.get(&a).cloned().unwrap_or_else(|| a.to_string()))
                .unwrap_or_else(|| "(nobody signed in)".into());
            format!(
                "<li><p><strong>{action}</strong> · {outcome}{code} · #{seq}</p><dl><dt>When</dt><dd>{time}</dd>\
                 <dt>Who</dt><dd>{actor}</dd><dt>Via</dt><dd>{channel}</dd>{targets}{reason}</dl></li>",
                action = esc(&e.action),
                outcome = esc(e.outcome.as_str()),
                code = e
                    .code
                    .as_deref()
                    .map(|c| format!(" ({})", esc(c)))
                    .unwrap_or_default(),
                seq = e.seq,
                time = esc(&format_ms(e.time_ms)),
                actor = esc(&actor),
                channel = esc(e.channel.as_str()),
                targets = if e.targets.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<dt>On</dt><dd>{}</dd>",
                        e.targets
                            .iter()
                            .map(|t| format!("<code>{}</code>", esc(t)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                },
                reason = e
                    .reason
                    .as_deref()
                    .map(|r| format!("<dt>Reason</dt><dd class=\"reason\">{}</dd>", esc(r)))
                    .unwrap_or_default(),
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Audit trail",
        Some(&who),
        &format!(
            "{}<p role=\"status\">{total} event(s) match; the latest {} shown, newest first.</p><ul class=\"cards events\">{items}</ul>",
            filter_form(&q),
            total.min(PAGE)
        ),
    )
}

async fn verify(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    match app
        .as_user_long(&rc, who.bearer(), |v, s| v.audit_verify(s))
        .await
    {
        Ok(r) => {
            let verdict = if r.ok() {
                format!(
                    "<p role=\"status\" class=\"valid\">INTACT: {} event(s), {} signed checkpoint(s); the hash chain and the signatures check.</p>",
                    r.events, r.checkpoints
                )
            } else {
                format!(
                    "<p role=\"alert\" class=\"error\">BROKEN at event {}: {}. Keep the vault as it is and report it to the security officer.</p>",
                    r.first_bad_seq
                        .map_or_else(|| "?".into(), |s| s.to_string()),
                    esc(r.problem.as_deref().unwrap_or("see pivault audit verify"))
                )
            };
            page(
                StatusCode::OK,
                "Audit verification",
                Some(&who),
                &format!("{verdict}<p><a href=\"/ui/audit\">The audit trail</a></p>"),
            )
        }
        Err(e) => error_page(&who, &e),
    }
}

#[derive(Default, Deserialize)]
struct ReportQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

/// Per-user activity over a period (`Vault::activity_report`, as
/// `GET /v1/audit/report`): the last 30 days unless dates are given.
async fn report(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let form = format!(
        "<form method=\"get\" action=\"/ui/audit/report\" class=\"filters\">\
         <label for=\"since\">From (YYYY-MM-DD; empty: 30 days ago)</label><input id=\"since\" name=\"since\" value=\"{}\">\
         <label for=\"until\">Until, not included (empty: now)</label><input id=\"until\" name=\"until\" value=\"{}\">\
         <button type=\"submit\">Show</button></form>",
        esc(&q.since),
        esc(&q.until)
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let time = |s: &str, default: i64| {
        let s = s.trim();
        if s.is_empty() {
            Ok(default)
        } else {
            parse_time(s)
        }
    };
    let (from, to) = match (
        time(&q.since, now - 30 * 86_400_000),
        time(&q.until, now + 1),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Activity report",
                Some(&who),
                &format!(
                    "<p role=\"alert\" class=\"error\">{}: write a date as YYYY-MM-DD.</p>{form}",
                    esc(&e.to_string())
                ),
            );
        }
    };
    let r = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            let users = v.list_users(s).unwrap_or_default();
            Ok((users, v.activity_report(s, from, to)?))
        })
        .await;
    let (users, rows) = match r {
        Ok(x) => x,
        Err(e) => return error_page(&who, &e),
    };
    let items: String = rows
        .iter()
        .map(|a| {
            let name = users
                .iter()
                .find(|u| u.id == a.user)
                .map_or_else(|| a.user.to_string(), |u| u.username.as_str().to_owned());
            format!(
                "<li><h2 class=\"user\">{}</h2><dl><dt>Reads</dt><dd>{}</dd><dt>Reveals</dt><dd>{}</dd>\
                 <dt>Exports</dt><dd>{}</dd><dt>Writes</dt><dd>{}</dd><dt>Refused</dt><dd>{}</dd>\
                 <dt>Sign-ins</dt><dd>{}</dd><dt>Failed sign-ins</dt><dd>{}</dd><dt>Lock-outs</dt><dd>{}</dd>\
                 <dt>Not vouched for</dt><dd>{}</dd></dl></li>",
                esc(&name),
                a.reads,
                a.reveals,
                a.exports,
                a.writes,
                a.denials,
                a.logins,
                a.failed_logins,
                a.lockouts,
                a.unvouched
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Activity report",
        Some(&who),
        &format!(
            "{form}<p role=\"status\">From {} until {}: {} user(s) active.</p><ul class=\"cards\">{items}</ul>",
            esc(&format_ms(from)),
            esc(&format_ms(to)),
            rows.len()
        ),
    )
}
