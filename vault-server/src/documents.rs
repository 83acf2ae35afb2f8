//! The JSON Schemas of the API's answers (`schemas/` at the workspace top,
//! one file per document name) in the OpenAPI document: each file becomes a
//! component of its name, and each JSON answer of an operation a `$ref` to
//! the document that operation writes. The files are the one description;
//! this module only places them, so the OpenAPI document cannot disagree
//! with what `pivault --json` is documented to print.

use serde_json::{Map, Value, json};

/// Every schema file, by name, as checked in.
const SCHEMA_FILES: &[(&str, &str)] = &[
    (
        "audit-event",
        include_str!("../../schemas/audit-event.json"),
    ),
    (
        "audit-export",
        include_str!("../../schemas/audit-export.json"),
    ),
    (
        "audit-export-file",
        include_str!("../../schemas/audit-export-file.json"),
    ),
    (
        "audit-file-verify",
        include_str!("../../schemas/audit-file-verify.json"),
    ),
    (
        "audit-stream",
        include_str!("../../schemas/audit-stream.json"),
    ),
    (
        "service-token",
        include_str!("../../schemas/service-token.json"),
    ),
    (
        "service-revocation",
        include_str!("../../schemas/service-revocation.json"),
    ),
    (
        "service-list",
        include_str!("../../schemas/service-list.json"),
    ),
    (
        "profile-list",
        include_str!("../../schemas/profile-list.json"),
    ),
    (
        "profile-change",
        include_str!("../../schemas/profile-change.json"),
    ),
    (
        "audit-anchor",
        include_str!("../../schemas/audit-anchor.json"),
    ),
    ("audit-head", include_str!("../../schemas/audit-head.json")),
    ("audit-log", include_str!("../../schemas/audit-log.json")),
    (
        "audit-report",
        include_str!("../../schemas/audit-report.json"),
    ),
    (
        "audit-timestamp",
        include_str!("../../schemas/audit-timestamp.json"),
    ),
    (
        "audit-verify",
        include_str!("../../schemas/audit-verify.json"),
    ),
    ("backup", include_str!("../../schemas/backup.json")),
    (
        "backup-list",
        include_str!("../../schemas/backup-list.json"),
    ),
    (
        "backup-restore",
        include_str!("../../schemas/backup-restore.json"),
    ),
    (
        "certificate",
        include_str!("../../schemas/certificate.json"),
    ),
    (
        "certificate-change",
        include_str!("../../schemas/certificate-change.json"),
    ),
    (
        "certificate-file",
        include_str!("../../schemas/certificate-file.json"),
    ),
    (
        "certificate-html",
        include_str!("../../schemas/certificate-html.json"),
    ),
    (
        "certificate-credential",
        include_str!("../../schemas/certificate-credential.json"),
    ),
    (
        "certificate-proof",
        include_str!("../../schemas/certificate-proof.json"),
    ),
    (
        "record-export",
        include_str!("../../schemas/record-export.json"),
    ),
    (
        "certificate-list",
        include_str!("../../schemas/certificate-list.json"),
    ),
    (
        "certificate-payload",
        include_str!("../../schemas/certificate-payload.json"),
    ),
    (
        "certificate-verification",
        include_str!("../../schemas/certificate-verification.json"),
    ),
    (
        "collection-change",
        include_str!("../../schemas/collection-change.json"),
    ),
    (
        "collection-list",
        include_str!("../../schemas/collection-list.json"),
    ),
    (
        "collection-schema",
        include_str!("../../schemas/collection-schema.json"),
    ),
    (
        "contractor-assignment",
        include_str!("../../schemas/contractor-assignment.json"),
    ),
    (
        "contractor-list",
        include_str!("../../schemas/contractor-list.json"),
    ),
    (
        "contractor-revocation",
        include_str!("../../schemas/contractor-revocation.json"),
    ),
    (
        "cosign-keypair",
        include_str!("../../schemas/cosign-keypair.json"),
    ),
    ("defs", include_str!("../../schemas/defs.json")),
    (
        "disposal-list",
        include_str!("../../schemas/disposal-list.json"),
    ),
    (
        "disposal-outcome",
        include_str!("../../schemas/disposal-outcome.json"),
    ),
    (
        "disposal-retry",
        include_str!("../../schemas/disposal-retry.json"),
    ),
    (
        "doctor-report",
        include_str!("../../schemas/doctor-report.json"),
    ),
    ("error", include_str!("../../schemas/error.json")),
    ("health", include_str!("../../schemas/health.json")),
    (
        "hold-change",
        include_str!("../../schemas/hold-change.json"),
    ),
    ("hold-list", include_str!("../../schemas/hold-list.json")),
    (
        "import-report",
        include_str!("../../schemas/import-report.json"),
    ),
    (
        "keys-export",
        include_str!("../../schemas/keys-export.json"),
    ),
    ("login", include_str!("../../schemas/login.json")),
    ("logout", include_str!("../../schemas/logout.json")),
    (
        "maintenance-report",
        include_str!("../../schemas/maintenance-report.json"),
    ),
    (
        "openapi-document",
        include_str!("../../schemas/openapi-document.json"),
    ),
    (
        "passphrase-change",
        include_str!("../../schemas/passphrase-change.json"),
    ),
    (
        "password-change",
        include_str!("../../schemas/password-change.json"),
    ),
    (
        "public-keys",
        include_str!("../../schemas/public-keys.json"),
    ),
    ("record", include_str!("../../schemas/record.json")),
    (
        "record-find",
        include_str!("../../schemas/record-find.json"),
    ),
    (
        "collection-reindex",
        include_str!("../../schemas/collection-reindex.json"),
    ),
    (
        "record-history",
        include_str!("../../schemas/record-history.json"),
    ),
    (
        "record-list",
        include_str!("../../schemas/record-list.json"),
    ),
    (
        "record-stored",
        include_str!("../../schemas/record-stored.json"),
    ),
    (
        "record-version",
        include_str!("../../schemas/record-version.json"),
    ),
    (
        "request-decision",
        include_str!("../../schemas/request-decision.json"),
    ),
    (
        "request-list",
        include_str!("../../schemas/request-list.json"),
    ),
    (
        "retention-list",
        include_str!("../../schemas/retention-list.json"),
    ),
    (
        "retention-policy",
        include_str!("../../schemas/retention-policy.json"),
    ),
    (
        "retention-schedule",
        include_str!("../../schemas/retention-schedule.json"),
    ),
    ("review", include_str!("../../schemas/review.json")),
    ("incident", include_str!("../../schemas/incident.json")),
    (
        "incident-list",
        include_str!("../../schemas/incident-list.json"),
    ),
    (
        "incident-notice",
        include_str!("../../schemas/incident-notice.json"),
    ),
    (
        "incident-scope",
        include_str!("../../schemas/incident-scope.json"),
    ),
    ("wisp-pack", include_str!("../../schemas/wisp-pack.json")),
    ("session", include_str!("../../schemas/session.json")),
    (
        "session-end",
        include_str!("../../schemas/session-end.json"),
    ),
    ("subject", include_str!("../../schemas/subject.json")),
    (
        "two-factor-confirmed",
        include_str!("../../schemas/two-factor-confirmed.json"),
    ),
    (
        "two-factor-enrolment",
        include_str!("../../schemas/two-factor-enrolment.json"),
    ),
    (
        "two-factor-policy",
        include_str!("../../schemas/two-factor-policy.json"),
    ),
    ("user", include_str!("../../schemas/user.json")),
    ("user-added", include_str!("../../schemas/user-added.json")),
    (
        "user-change",
        include_str!("../../schemas/user-change.json"),
    ),
    ("user-list", include_str!("../../schemas/user-list.json")),
    (
        "vault-created",
        include_str!("../../schemas/vault-created.json"),
    ),
];

/// The document each operation (utoipa's operation ID, the handler's name)
/// answers with. `certificate_html` answers HTML and is not listed.
const OPERATION_DOCUMENTS: &[(&str, &str)] = &[
    ("add_service", "service-token"),
    ("list_services", "service-list"),
    ("rotate_service", "service-token"),
    ("revoke_service", "service-revocation"),
    ("login", "session"),
    ("logout", "session-end"),
    ("whoami", "user"),
    ("begin_enrolment", "two-factor-enrolment"),
    ("confirm_enrolment", "two-factor-confirmed"),
    ("reset_two_factor", "user-change"),
    ("show_two_factor_policy", "two-factor-policy"),
    ("set_two_factor_policy", "two-factor-policy"),
    ("list_users", "user-list"),
    ("add_user", "user-added"),
    ("disable_user", "user-change"),
    ("enable_user", "user-change"),
    ("unlock_user", "user-change"),
    ("set_role", "user-change"),
    ("set_reveal_grant", "user-change"),
    ("set_full_name", "user-change"),
    ("set_password", "password-change"),
    ("list_approvals", "request-list"),
    ("approve_request", "request-decision"),
    ("reject_request", "request-decision"),
    ("list_collections", "collection-list"),
    ("create_collection", "collection-change"),
    ("update_collection", "collection-change"),
    ("show_collection", "collection-schema"),
    ("put_record", "record-stored"),
    ("list_records", "record-list"),
    ("get_record", "record"),
    ("reveal_record", "record"),
    ("find_records", "record-find"),
    ("reindex_collection", "collection-reindex"),
    ("update_record", "record-version"),
    ("patch_record", "record-version"),
    ("record_history", "record-history"),
    ("import", "import-report"),
    ("resolve_subject", "subject"),
    ("export_records", "record-export"),
    ("dispose", "disposal-outcome"),
    ("list_disposals", "disposal-list"),
    ("retry_disposal", "disposal-retry"),
    ("show_retention", "retention-list"),
    ("set_retention", "retention-policy"),
    ("show_retention_schedule", "retention-schedule"),
    ("set_retention_schedule", "retention-schedule"),
    ("retention_due", "disposal-outcome"),
    ("retention_run", "disposal-outcome"),
    ("list_holds", "hold-list"),
    ("add_hold", "hold-change"),
    ("remove_hold", "hold-change"),
    ("list_certificates", "certificate-list"),
    ("show_certificate", "certificate"),
    ("certificate_file", "certificate-file"),
    ("certificate_proof", "certificate-proof"),
    ("certificate_vc", "certificate-credential"),
    ("validate_certificate", "certificate-change"),
    ("cosign_certificate", "certificate-change"),
    ("keys", "public-keys"),
    ("list_contractors", "contractor-list"),
    ("assign_contractor", "contractor-assignment"),
    ("revoke_contractor", "contractor-revocation"),
    ("audit_events", "audit-log"),
    ("audit_verify", "audit-verify"),
    ("audit_export", "audit-export"),
    ("audit_stream", "audit-stream"),
    ("audit_anchor", "audit-head"),
    ("audit_timestamp", "audit-timestamp"),
    ("audit_report", "audit-report"),
    ("review", "review"),
    ("incident_scope", "incident-scope"),
    ("open_incident", "incident"),
    ("list_incidents", "incident-list"),
    ("show_incident", "incident"),
    ("incident_action", "incident"),
    ("review_incident", "incident"),
    ("incident_notice", "incident-notice"),
    ("wisp", "wisp-pack"),
    ("maintenance", "maintenance-report"),
    ("healthz", "health"),
    ("readyz", "health"),
    ("openapi_doc", "openapi-document"),
];

/// The `$ref` of a schema file as a component.
fn component_ref(name: &str) -> String {
    format!("#/components/schemas/{name}")
}

/// A schema file made a component: `$id` and `$schema` dropped (the
/// component lives in the OpenAPI document's own base), and references to
/// another file (`defs.json#/$defs/user`) pointed at that file's component.
fn as_component(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| k != "$id" && k != "$schema")
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        let r = match r.split_once(".json#") {
                            Some((file, pointer)) => format!("{}{pointer}", component_ref(file)),
                            None => r,
                        };
                        (k, Value::String(r))
                    }
                    (_, v) => (k, as_component(v)),
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(as_component).collect()),
        other => other,
    }
}

/// Adds the schema files as components and points every JSON answer of
/// the listed operations (their 2xx answers, and the 422 report of a
/// refused import) at its document's schema.
pub fn describe_answers(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    for (name, text) in SCHEMA_FILES {
        let v: Value = serde_json::from_str(text).expect("schemas/*.json are JSON (tested)");
        schemas[*name] = as_component(v);
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(document) = op["operationId"]
                .as_str()
                .and_then(|id| OPERATION_DOCUMENTS.iter().find(|(o, _)| *o == id))
                .map(|(_, d)| *d)
            else {
                continue;
            };
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            for (status, r) in responses.iter_mut() {
                let answers_document =
                    status.starts_with('2') || (document == "import-report" && status == "422");
                if !answers_document {
                    continue;
                }
                if let Some(c) = r
                    .get_mut("content")
                    .and_then(|c| c.get_mut("application/json"))
                {
                    c["schema"] = json!({ "$ref": component_ref(document) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reference into another file becomes a reference into its component.
    #[test]
    fn references_between_files_become_component_references() {
        let v = as_component(json!({
            "$id": "https://schemas.pivault.invalid/user-list.json",
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "properties": { "items": { "items": { "$ref": "defs.json#/$defs/user" } } }
        }));
        assert_eq!(
            v,
            json!({ "properties": { "items": { "items": { "$ref": "#/components/schemas/defs/$defs/user" } } } })
        );
    }
}
