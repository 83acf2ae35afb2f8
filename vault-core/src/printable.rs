//! Printable pages of the breach notice and the WISP evidence pack:
//! self-contained HTML (inline style, no script, no external resource),
//! rendered from the same JSON documents `--json` prints, every value
//! HTML-escaped. A page is a rendering for people and a file cabinet; the
//! JSON document is the record.

use std::fmt::Write as _;

use serde_json::Value;

use crate::certificate::{CSS, esc, render_value};

const EXTRA_CSS: &str =
    ".met{color:#075e00}.missing{color:#b00000;font-weight:700}.attention{color:#8a5a00}\n";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>\n{CSS}{EXTRA_CSS}</style>\n</head>\n<body>\n",
        esc(title)
    );
}

fn row(out: &mut String, label: &str, v: Option<&Value>) {
    let _ = write!(
        out,
        "<tr><th>{}</th><td>{}</td></tr>",
        esc(label),
        render_value(v.unwrap_or(&Value::Null))
    );
}

/// The notice to the Attorney General and OCABR, from an `incident-notice` document.
pub fn notice_html(doc: &Value) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let id = doc["incident_id"].as_str().unwrap_or("");
    head(&mut out, &format!("Notice of a breach of security {id}"));
    let _ = write!(
        out,
        "<h1>Notice of a breach of security</h1>\n<p class=\"sub\">M.G.L. c. 93H &sect;3(b) &mdash; \
         to the Office of the Attorney General and the Office of Consumer Affairs and Business \
         Regulation. Incident <code>{}</code>, prepared {}.</p>\n",
        esc(id),
        esc(doc["prepared_at"].as_str().unwrap_or(""))
    );
    out.push_str("<section><h2>1. The breach</h2><table>");
    row(&mut out, "Nature of the breach", doc.get("nature"));
    row(&mut out, "Period", doc.get("period"));
    row(
        &mut out,
        "Massachusetts residents affected",
        doc.get("ma_residents_affected"),
    );
    row(
        &mut out,
        "Of them, with personal information (93H \u{a7}1)",
        doc.get("ma_residents_with_personal_information"),
    );
    row(
        &mut out,
        "Data subjects affected (all)",
        doc.get("subjects_affected"),
    );
    row(&mut out, "Records affected", doc.get("records_affected"));
    row(
        &mut out,
        "Types of personal information",
        doc.get("personal_information_types"),
    );
    row(&mut out, "How the records were accessed", doc.get("access"));
    out.push_str("</table></section>\n<section><h2>2. Steps taken or planned</h2>");
    out.push_str(&render_value(
        doc.get("steps_taken").unwrap_or(&Value::Null),
    ));
    out.push_str("<table>");
    row(
        &mut out,
        "Post-incident review",
        doc.get("post_incident_review"),
    );
    row(
        &mut out,
        "Maintains a written information security program",
        doc.get("maintains_wisp"),
    );
    out.push_str("</table></section>\n<section><h2>3. Credit monitoring (93H &sect;3A)</h2>");
    out.push_str(&render_value(
        doc.get("credit_monitoring").unwrap_or(&Value::Null),
    ));
    out.push_str("</section>\n<section><h2>4. FTC Safeguards Rule</h2>");
    out.push_str(&render_value(
        doc.get("ftc_safeguards_notice").unwrap_or(&Value::Null),
    ));
    out.push_str("</section>\n<section><h2>5. To be completed by the business</h2>");
    out.push_str(&render_value(
        doc.get("to_complete").unwrap_or(&Value::Null),
    ));
    let _ = write!(
        out,
        "<p class=\"note\">Affected residents: {}</p></section>\n\
         <p class=\"note\">Drafted by pivault from its audit trail (through event {}). \
         Counts and types only: this page holds no personal information.</p>\n</body>\n</html>\n",
        esc(doc["affected_subjects"].as_str().unwrap_or("")),
        esc(&doc["through_seq"].to_string())
    );
    out
}

/// The WISP evidence pack, from a `wisp-pack` document.
pub fn wisp_html(doc: &Value) -> String {
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, "WISP evidence pack");
    let s = &doc["summary"];
    let _ = write!(
        out,
        "<h1>Written information security program &mdash; evidence</h1>\n<p class=\"sub\">201 CMR 17.03 and 17.04, \
         from the live vault <code>{}</code>, generated {}; period {} to {}.<br>\
         {} met, {} missing, {} need attention.</p>\n",
        esc(doc["vault_id"].as_str().unwrap_or("")),
        esc(doc["generated_at"].as_str().unwrap_or("")),
        esc(doc["period"]["since"].as_str().unwrap_or("")),
        esc(doc["period"]["until"].as_str().unwrap_or("")),
        esc(&s["met"].to_string()),
        esc(&s["missing"].to_string()),
        esc(&s["attention"].to_string()),
    );
    for l in doc["elements"].as_array().into_iter().flatten() {
        let status = l["status"].as_str().unwrap_or("missing");
        let class = match status {
            "met" => "met",
            "attention" => "attention",
            _ => "missing",
        };
        let _ = write!(
            out,
            "<section><h2>{} &mdash; {}</h2><p>Status: <span class=\"status {class}\">{}</span></p><table>",
            esc(l["element"].as_str().unwrap_or("")),
            esc(l["title"].as_str().unwrap_or("")),
            esc(&status.to_uppercase()),
        );
        row(&mut out, "Finding", l.get("finding"));
        row(&mut out, "Doctor checks", l.get("checks"));
        row(&mut out, "Evidence", l.get("evidence"));
        out.push_str("</table></section>\n");
    }
    out.push_str(
        "<p class=\"note\">Reviewed by (name, title, date):</p><div class=\"sig\"></div>\n</body>\n</html>\n",
    );
    out
}
