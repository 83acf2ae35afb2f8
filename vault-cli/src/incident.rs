//! `pivault incident …` (the incident register, 201 CMR 17.03(2)(j);
//! breach notice, M.G.L. c. 93H §3) and `pivault wisp` (the WISP evidence
//! pack, 201 CMR 17.03 and 17.04). Officers scope and document incidents;
//! officers and auditors read the register and the pack.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use vault_core::ids::IncidentId;
use vault_core::vault::{SelectorInput, Session, Vault};

use crate::exit;
use crate::output::Out;

/// Whom an incident is about: exactly one of these, and the window.
#[derive(Args, Debug, Clone)]
pub struct ScopeArgs {
    /// A user (name or ID) whose events to scope.
    #[arg(long, value_name = "USER")]
    actor: Option<String>,
    /// A service account (name or ID): the events of its tokens.
    #[arg(long, value_name = "ID")]
    token: Option<String>,
    /// A client address, as the audit trail records it.
    #[arg(long, value_name = "ADDR")]
    source: Option<String>,
    /// Window start (RFC 3339 or YYYY-MM-DD, inclusive).
    #[arg(long)]
    since: String,
    /// Window end (exclusive) [default: now].
    #[arg(long)]
    until: Option<String>,
}

/// `pivault incident …`.
#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// The records and distinct subjects one user, token or address
    /// touched in a window: how, the element types, the Massachusetts
    /// residents (officer). Changes nothing but the audit trail.
    Scope(ScopeArgs),
    /// Open an incident: its scope is run and kept with it (officer).
    Open {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The nature of the breach, for the notice (no personal information,
        /// no number of 4 or more digits).
        #[arg(long)]
        nature: String,
        /// Free credit monitoring is offered (M.G.L. c. 93H §3A).
        #[arg(long)]
        credit_monitoring: bool,
    },
    /// Record a responsive action taken or planned (officer).
    Action {
        /// Incident ID.
        id: String,
        /// What was done or is planned.
        #[arg(long)]
        text: String,
        /// Free credit monitoring is now offered.
        #[arg(long)]
        credit_monitoring: bool,
    },
    /// Record the mandatory post-incident review, once (officer).
    Review {
        /// Incident ID.
        id: String,
        /// The review of events and actions taken.
        #[arg(long)]
        notes: String,
        /// Changes to business practices or the WISP (say `none` if none).
        #[arg(long)]
        wisp_changes: String,
    },
    /// List the register (officer, auditor).
    List,
    /// Show one incident (officer, auditor).
    Show {
        /// Incident ID.
        id: String,
    },
    /// Export every record of the incident's affected data subjects (the
    /// list a business needs to notify them), encrypted with age like
    /// `subject export` (officer; audited with count and reason).
    Export {
        /// Incident ID.
        id: String,
        #[command(flatten)]
        opts: crate::export::ExportOpts,
    },
    /// Draft the notice to the Attorney General and OCABR from the incident
    /// and its scope run now (officer).
    Notice {
        /// Incident ID.
        id: String,
        /// Also write the printable page (HTML) to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
}

/// `pivault wisp`: the evidence pack.
#[derive(Args, Debug)]
pub struct WispArgs {
    /// Period start [default: a year before --until].
    #[arg(long)]
    since: Option<String>,
    /// Period end (exclusive) [default: now].
    #[arg(long)]
    until: Option<String>,
    /// Also write the printable page (HTML) to this file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

fn time(s: &str) -> anyhow::Result<i64> {
    Ok(vault_core::clock::parse_time(s)?)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn window(a: &ScopeArgs) -> anyhow::Result<(SelectorInput, i64, i64)> {
    let since = time(&a.since)?;
    let until = a
        .until
        .as_deref()
        .map(time)
        .transpose()?
        .unwrap_or(now_ms() + 1);
    Ok((
        SelectorInput {
            actor: a.actor.clone(),
            token: a.token.clone(),
            source: a.source.clone(),
        },
        since,
        until,
    ))
}

fn id(s: &str) -> anyhow::Result<IncidentId> {
    Ok(s.parse()?)
}

/// Writes a printable page 0600 (it names staff and figures of an incident).
fn write_page(path: &Path, html: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(html.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn incident_text(v: &Value) -> String {
    let mut t = format!(
        "incident {} ({})\n  opened {}; window {} to {}\n  nature: {}\n  credit monitoring offered: {}",
        v["incident_id"].as_str().unwrap_or(""),
        v["status"].as_str().unwrap_or(""),
        v["opened_at"].as_str().unwrap_or(""),
        v["since"].as_str().unwrap_or(""),
        v["until"].as_str().unwrap_or(""),
        v["nature"].as_str().unwrap_or(""),
        v["credit_monitoring"],
    );
    if let Some(s) = v["scope"].as_object() {
        t.push_str(&format!(
            "\n  scope: {} record(s), {} subject(s), {} Massachusetts resident(s); elements {}",
            s["record_count"], s["subject_count"], s["ma_resident_count"], s["element_types"]
        ));
    }
    for a in v["actions"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  action {}: {}",
            a["at"].as_str().unwrap_or(""),
            a["text"].as_str().unwrap_or("")
        ));
    }
    match v["review"].as_object() {
        Some(r) => t.push_str(&format!(
            "\n  reviewed {}: {} (WISP changes: {})",
            r["at"].as_str().unwrap_or(""),
            r["notes"].as_str().unwrap_or(""),
            r["wisp_changes"].as_str().unwrap_or("")
        )),
        None => t.push_str("\n  post-incident review: not yet (pivault incident review)"),
    }
    t
}

fn scope_text(v: &Value) -> String {
    let mut t = format!(
        "{} {}: {} event(s) from {} to {} ({} denied)\n{} record(s) of {} subject(s); {} Massachusetts resident(s), \
         {} with personal information\nelement types: {}\nrevealed: {}\nby kind: {}",
        v["selector"]["kind"].as_str().unwrap_or(""),
        v["selector"]["value"].as_str().unwrap_or(""),
        v["events"],
        v["since"].as_str().unwrap_or(""),
        v["until"].as_str().unwrap_or(""),
        v["denied"],
        v["record_count"],
        v["subject_count"],
        v["ma_resident_count"],
        v["ma_personal_information_count"],
        v["element_types"],
        v["revealed_types"],
        v["by_kind"],
    );
    for r in v["records"].as_array().into_iter().flatten() {
        t.push_str(&format!(
            "\n  {} subject {} {} {}{}",
            r["record_id"].as_str().unwrap_or(""),
            r["subject"].as_str().unwrap_or(""),
            r["how"],
            r["elements"],
            if r["ma_resident"] == true { " MA" } else { "" }
        ));
    }
    t
}

/// `pivault incident …` on an open vault.
pub fn cmd_incident(out: &Out, vault: &Vault, s: &Session, c: &IncidentCmd) -> anyhow::Result<u8> {
    use vault_core::views;
    match c {
        IncidentCmd::Scope(a) => {
            let (sel, since, until) = window(a)?;
            let v = views::incident_scope(&vault.incident_scope(s, &sel, since, until)?);
            out.data("incident-scope", v.clone(), || scope_text(&v));
        }
        IncidentCmd::Open {
            scope,
            nature,
            credit_monitoring,
        } => {
            let (sel, since, until) = window(scope)?;
            let inc = vault.open_incident(s, &sel, since, until, nature, *credit_monitoring)?;
            let v = views::incident(&inc);
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Action {
            id: i,
            text,
            credit_monitoring,
        } => {
            let v = views::incident(&vault.incident_action(s, id(i)?, text, *credit_monitoring)?);
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Review {
            id: i,
            notes,
            wisp_changes,
        } => {
            let v = views::incident(&vault.review_incident(s, id(i)?, notes, wisp_changes)?);
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::List => {
            let list: Vec<Value> = vault.incidents(s)?.iter().map(views::incident).collect();
            let text = list
                .iter()
                .map(|v| {
                    format!(
                        "{}  {:<8}  opened {}  {} action(s)",
                        v["incident_id"].as_str().unwrap_or(""),
                        v["status"].as_str().unwrap_or(""),
                        v["opened_at"].as_str().unwrap_or(""),
                        v["actions"].as_array().map_or(0, Vec::len)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.data("incident-list", Value::Array(list), || text);
        }
        IncidentCmd::Show { id: i } => {
            let v = views::incident(&vault.incident(s, id(i)?)?);
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Export { id: i, opts } => {
            return crate::export::run_local(
                out,
                vault,
                s,
                vault_core::vault::ExportScope::Incident(id(i)?),
                opts,
            );
        }
        IncidentCmd::Notice { id: i, html } => {
            let (inc, sc) = vault.incident_notice(s, id(i)?)?;
            let mut v = views::incident_notice(&inc, &sc, vault.now_ms());
            if let Some(path) = html {
                write_page(path, &vault_core::printable::notice_html(&v))?;
                v["html"] = json!(path.display().to_string());
            }
            out.data("incident-notice", v.clone(), || notice_text(&v));
        }
    }
    Ok(exit::OK)
}

fn notice_text(v: &Value) -> String {
    let mut t = format!(
        "Notice of a breach of security (M.G.L. c. 93H §3(b)), incident {}\n\
         Massachusetts residents affected: {} ({} with personal information); all subjects: {}; records: {}\n\
         types: {}\nnature: {}\ncredit monitoring: required {}, offered {}\nFTC Safeguards Rule notice: {}",
        v["incident_id"].as_str().unwrap_or(""),
        v["ma_residents_affected"],
        v["ma_residents_with_personal_information"],
        v["subjects_affected"],
        v["records_affected"],
        v["personal_information_types"],
        v["nature"].as_str().unwrap_or(""),
        v["credit_monitoring"]["required"],
        v["credit_monitoring"]["offered"],
        if v["ftc_safeguards_notice"]["required"] == true {
            "REQUIRED (500 or more consumers)"
        } else {
            "not required (fewer than 500 consumers)"
        },
    );
    if let Some(p) = v["html"].as_str() {
        t.push_str(&format!("\nprintable page written to {p}"));
    }
    t
}

/// `pivault wisp` on an open vault. Exit 0 whatever the pack says: it is
/// a report (use `doctor` for a gate).
pub fn cmd_wisp(out: &Out, vault: &Vault, s: &Session, a: &WispArgs) -> anyhow::Result<u8> {
    let until = a
        .until
        .as_deref()
        .map(time)
        .transpose()?
        .unwrap_or(now_ms() + 1);
    let since = a
        .since
        .as_deref()
        .map(time)
        .transpose()?
        .unwrap_or(until - 365 * 86_400_000);
    if until <= since {
        return Err(vault_core::Error::InvalidInput("--until must be after --since".into()).into());
    }
    let pack = vault.wisp_pack(s, since, until)?;
    let mut v = vault_core::views::wisp_pack(&pack);
    if let Some(path) = &a.html {
        write_page(path, &vault_core::printable::wisp_html(&v))?;
        v["html"] = json!(path.display().to_string());
    }
    let text = wisp_text(&v);
    out.data("wisp-pack", v, || text);
    Ok(exit::OK)
}

fn wisp_text(v: &Value) -> String {
    {
        let mut t = format!(
            "WISP evidence pack: {} met, {} missing, {} need attention",
            v["summary"]["met"], v["summary"]["missing"], v["summary"]["attention"]
        );
        for l in v["elements"].as_array().into_iter().flatten() {
            t.push_str(&format!(
                "\n{:<9} {:<13} {}\n          {}",
                l["status"].as_str().unwrap_or(""),
                l["element"].as_str().unwrap_or(""),
                l["title"].as_str().unwrap_or(""),
                l["finding"].as_str().unwrap_or("")
            ));
        }
        if let Some(p) = v["html"].as_str() {
            t.push_str(&format!("\nprintable page written to {p}"));
        }
        t
    }
}

fn scope_query(a: &ScopeArgs) -> String {
    crate::remote::query(&[
        ("actor", a.actor.clone()),
        ("token", a.token.clone()),
        ("source", a.source.clone()),
        ("since", Some(a.since.clone())),
        ("until", a.until.clone()),
    ])
}

fn incident_path(i: &str) -> anyhow::Result<String> {
    Ok(format!("/v1/incidents/{}", id(i)?))
}

/// `pivault incident …` through pivault-server (`--server` or the socket).
pub fn cmd_remote(out: &Out, r: &crate::remote::Remote, c: &IncidentCmd) -> anyhow::Result<u8> {
    match c {
        IncidentCmd::Scope(a) => {
            let v = r.get(&format!("/v1/incidents/scope{}", scope_query(a)))?;
            out.data("incident-scope", v.clone(), || scope_text(&v));
        }
        IncidentCmd::Open {
            scope,
            nature,
            credit_monitoring,
        } => {
            let v = r.post(
                "/v1/incidents",
                json!({
                    "actor": scope.actor, "token": scope.token, "source": scope.source,
                    "since": scope.since, "until": scope.until,
                    "nature": nature, "credit_monitoring": credit_monitoring,
                }),
            )?;
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Action {
            id: i,
            text,
            credit_monitoring,
        } => {
            let v = r.post(
                &format!("{}/actions", incident_path(i)?),
                json!({ "text": text, "credit_monitoring": credit_monitoring }),
            )?;
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Review {
            id: i,
            notes,
            wisp_changes,
        } => {
            let v = r.post(
                &format!("{}/review", incident_path(i)?),
                json!({ "notes": notes, "wisp_changes": wisp_changes }),
            )?;
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::List => {
            let v = r.get("/v1/incidents")?;
            let text = vault_core::views::items(&v)
                .iter()
                .map(|x| {
                    format!(
                        "{}  {:<8}  opened {}",
                        x["incident_id"].as_str().unwrap_or(""),
                        x["status"].as_str().unwrap_or(""),
                        x["opened_at"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.data("incident-list", v, || text);
        }
        IncidentCmd::Show { id: i } => {
            let v = r.get(&incident_path(i)?)?;
            out.data("incident", v.clone(), || incident_text(&v));
        }
        IncidentCmd::Export { id: i, opts } => {
            crate::export::run_remote(out, r, json!({ "incident": i }), opts)?;
        }
        IncidentCmd::Notice { id: i, html } => {
            let mut v = r.get(&format!("{}/notice", incident_path(i)?))?;
            if let Some(path) = html {
                write_page(path, &vault_core::printable::notice_html(&v))?;
                v["html"] = json!(path.display().to_string());
            }
            out.data("incident-notice", v.clone(), || notice_text(&v));
        }
    }
    Ok(exit::OK)
}

/// `pivault wisp` through pivault-server.
pub fn wisp_remote(out: &Out, r: &crate::remote::Remote, a: &WispArgs) -> anyhow::Result<u8> {
    let mut v = r.get(&format!(
        "/v1/wisp{}",
        crate::remote::query(&[("since", a.since.clone()), ("until", a.until.clone())])
    ))?;
    if let Some(path) = &a.html {
        write_page(path, &vault_core::printable::wisp_html(&v))?;
        v["html"] = json!(path.display().to_string());
    }
    let text = wisp_text(&v);
    out.data("wisp-pack", v, || text);
    Ok(exit::OK)
}
