//! The published output documents (issue 11): the schema files themselves,
//! the OpenAPI document's 2xx answers, and the README's lists of documents,
//! exit codes and problem codes, each checked against the code so that none
//! can go stale. (Each scenario's own documents are checked as they are
//! read: `documents.rs`.)

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::documents::{compiler, schema_files, schema_id};

/// Schema files that are not a document named by `views::DOCUMENTS`: the
/// shared definitions, the `--json` error object on stderr, the two
/// documents that keep a format of their own, and the audit event as
/// exported and streamed to a log system (`vault_core::siem`).
const OTHER_SCHEMAS: [&str; 6] = [
    "defs",
    "error",
    "certificate-file",
    "certificate-credential",
    "openapi-document",
    "audit-event",
];

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every schema file is draft 2020-12 with the `$id` of its name, compiles
/// (its `$ref`s resolve), and is used: a document the front ends write
/// (`views::DOCUMENTS`) or one of [`OTHER_SCHEMAS`]; and every document has
/// its file.
#[test]
fn every_schema_file_is_valid_and_used() {
    let files = schema_files();
    let mut c = compiler();
    let mut schemas = boon::Schemas::new();
    for (name, v) in &files {
        assert_eq!(
            v["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "schemas/{name}.json: $schema"
        );
        assert_eq!(v["$id"], schema_id(name), "schemas/{name}.json: $id");
        c.compile(&schema_id(name), &mut schemas)
            .unwrap_or_else(|e| panic!("schemas/{name}.json does not compile: {e:#}"));
    }
    let on_disk: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = vault_core::views::DOCUMENTS
        .iter()
        .copied()
        .chain(OTHER_SCHEMAS)
        .collect();
    assert_eq!(
        on_disk.difference(&expected).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "schema files no document uses (add the name to views::DOCUMENTS, or remove the file)"
    );
    assert_eq!(
        expected.difference(&on_disk).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "documents without a schema file in schemas/"
    );
    // A document schema names its document and version, so a document of
    // another name (or version) never passes for it.
    for name in vault_core::views::DOCUMENTS {
        let v = &files[*name];
        assert_eq!(
            v["properties"]["document"]["const"], *name,
            "schemas/{name}.json: properties.document.const"
        );
        assert_eq!(
            v["properties"]["version"]["const"],
            vault_core::views::DOCUMENT_VERSION,
            "schemas/{name}.json: properties.version.const"
        );
        let required: Vec<&str> = v["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            required.contains(&"document") && required.contains(&"version"),
            "schemas/{name}.json: document and version are required"
        );
    }
}

/// The checks above can fail: a member no schema lists is refused, and so
/// is a document without its name.
#[test]
fn a_document_with_an_undocumented_member_is_refused() {
    let ok = serde_json::json!({ "document": "review", "version": 1, "reviewed": true });
    crate::documents::validate_as("review", &ok).expect("valid review document");
    let extra = serde_json::json!({ "document": "review", "version": 1, "reviewed": true, "x": 1 });
    assert!(crate::documents::validate_as("review", &extra).is_err());
    let renamed = serde_json::json!({ "document": "user", "version": 1, "reviewed": true });
    assert!(crate::documents::validate_as("review", &renamed).is_err());
    assert!(crate::documents::validate_as("no-such-document", &ok).is_err());
}

/// Every 2xx answer of the OpenAPI document (the checked-in one, which a
/// unit test of vault-server keeps equal to the generated one) has a
/// content schema; a JSON answer's is a `$ref` that resolves to a
/// component, the schema file of that name.
#[test]
fn every_2xx_answer_of_the_openapi_document_has_a_schema() {
    let doc: Value = serde_json::from_str(&read("vault-server/openapi.json")).expect("JSON");
    let components = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let files = schema_files();
    let mut count = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let Some(responses) = op.get("responses").and_then(Value::as_object) else {
                continue;
            };
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path}: no 2xx answer"
            );
            for (status, r) in responses {
                if !status.starts_with('2') {
                    continue;
                }
                count += 1;
                let content = r["content"]
                    .as_object()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no content"));
                for (ty, c) in content {
                    let schema = &c["schema"];
                    if ty != "application/json" {
                        assert!(
                            schema.is_object(),
                            "{method} {path} {status} {ty}: no schema"
                        );
                        continue;
                    }
                    let r = schema["$ref"].as_str().unwrap_or_else(|| {
                        panic!("{method} {path} {status}: the schema is not a $ref: {schema}")
                    });
                    let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| {
                        panic!("{method} {path} {status}: {r} is not a component")
                    });
                    assert!(
                        components.contains_key(name),
                        "{method} {path} {status}: {r} does not resolve"
                    );
                    assert!(
                        files.contains_key(name),
                        "{method} {path} {status}: no schemas/{name}.json"
                    );
                }
            }
        }
    }
    println!("OpenAPI 2xx answers, each with a content schema: {count}");
    assert!(count > 0, "no 2xx answers found");
}

/// The README lists every output document, every exit code of
/// `vault-cli/src/exit.rs`, and every stable error code: the engine's
/// (`Error::code`), those the CLI maps (`exit::for_code`) and those the
/// server answers (`problem.rs`).
#[test]
fn the_readme_lists_every_document_exit_code_and_problem_code() {
    let readme = read("README.md");
    for name in vault_core::views::DOCUMENTS {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README: document `{name}` is not listed"
        );
    }
    let exit = read("vault-cli/src/exit.rs");
    let mut exits = 0;
    for line in exit.lines() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let n = rest
            .split('=')
            .nth(1)
            .and_then(|x| x.trim().trim_end_matches(';').parse::<u8>().ok())
            .unwrap_or_else(|| panic!("exit.rs: {line}"));
        exits += 1;
        assert!(
            readme.contains(&format!("\n| {n} | ")),
            "README: exit code {n} is not in the exit-code table"
        );
    }
    assert!(exits >= 18, "exit codes found in exit.rs: {exits}");
    let mut codes = BTreeSet::new();
    let for_code = exit
        .split("pub fn for_code")
        .nth(1)
        .expect("exit::for_code");
    let for_code = &for_code[..for_code.find("\n}\n").expect("end of for_code")];
    codes.extend(quoted_codes(for_code));
    codes.extend(["unreachable", "usage", "internal"].map(String::from));
    let error = read("vault-core/src/error.rs");
    let code_fn = error.split("pub fn code").nth(1).expect("Error::code");
    let code_fn = &code_fn[..code_fn.find("\n    }\n").expect("end of Error::code")];
    codes.extend(quoted_codes(code_fn));
    let problem = read("vault-server/src/problem.rs");
    codes.extend(quoted_codes(&problem).into_iter().filter(|c| c != "type"));
    assert!(codes.len() >= 30, "codes found: {codes:?}");
    for c in &codes {
        assert!(
            readme.contains(&format!("`{c}`")),
            "README: error code `{c}` is not in the code table"
        );
    }
}

/// The snake_case string literals of some Rust source.
fn quoted_codes(src: &str) -> Vec<String> {
    src.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            !s.is_empty() && s.len() < 32 && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .map(String::from)
        .collect()
}

/// The commands whose documents no other scenario prints, each run once
/// with `--json` (and checked against its schema as every run is), so that
/// every document the CLI writes is checked by some test; and the server's
/// answers that no other scenario reads. `disposal-retry` needs a batch
/// that failed part-way (exercised only through the library).
#[test]
fn a_tour_of_the_commands_prints_every_document_as_documented() {
    use crate::cli::{CliVault, examples};
    let v = CliVault::standard();
    crate::cli::write_private(&v.password_file("tourer"), b"Tour-Contractor-Ibis-0515\n");
    v.add_user("tourer", "contractor");
    let mut seen = BTreeSet::new();
    let mut run = |user: &str, args: &[&str]| -> Value {
        let r = v.run(Some(user), args);
        r.ok();
        let d = r.json();
        seen.insert(d["document"].as_str().unwrap_or_default().to_owned());
        d
    };
    v.import(&examples().join("customers.jsonl")).ok();
    let ids = v.record_ids();
    assert!(ids.len() >= 2, "{ids:?}");
    run("admin", &["--json", "collection", "show", "customers"]);
    run("officer", &["--json", "review"]);
    run("officer", &["--json", "maintenance", "run"]);
    run(
        "officer",
        &["--json", "retention", "set", "customers", "--days", "3650"],
    );
    run("officer", &["--json", "retention", "show"]);
    run(
        "officer",
        &[
            "--json", "hold", "add", "--record", &ids[0], "--reason", "a claim",
        ],
    );
    run("officer", &["--json", "hold", "list"]);
    run(
        "officer",
        &["--json", "hold", "remove", "--record", &ids[0]],
    );
    let out = run(
        "officer",
        &[
            "--json",
            "dispose",
            "record",
            &ids[1],
            "--yes",
            "--data-owner",
            "Tour Hardware LLC",
        ],
    );
    let cert = out["certificate_id"]
        .as_str()
        .expect("certificate")
        .to_owned();
    run("officer", &["--json", "certificate", "list"]);
    let file = v.input.join("certificate.json");
    v.run(
        Some("officer"),
        &[
            "certificate",
            "export",
            &cert,
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .ok();
    let html = v.input.join("certificate.html");
    run(
        "officer",
        &[
            "--json",
            "certificate",
            "render",
            file.to_str().unwrap(),
            "--out",
            html.to_str().unwrap(),
        ],
    );
    let (msg, sig) = (v.input.join("message.bin"), v.input.join("signature.bin"));
    run(
        "officer",
        &[
            "--json",
            "certificate",
            "payload",
            file.to_str().unwrap(),
            "--out",
            msg.to_str().unwrap(),
            "--sig-out",
            sig.to_str().unwrap(),
        ],
    );
    run(
        "admin",
        &[
            "--json",
            "contractor",
            "assign",
            "tourer",
            "--collection",
            "customers",
        ],
    );
    run("admin", &["--json", "contractor", "list"]);
    run("admin", &["--json", "contractor", "revoke", "tourer"]);
    // Last: the clerk's password changes.
    let args = ["--json", "user", "passwd", "clerk"];
    let mut c = v.user_command(Some("admin"), &args);
    c.env(
        "PIVAULT_NEW_PASSWORD_FILE",
        v.input_file("new-pw", "Tour-Granite-Pelican-7731\n"),
    );
    let r = v.exec(c, &args.join(" "));
    r.ok();
    seen.insert(r.json()["document"].as_str().unwrap_or_default().to_owned());
    for name in [
        "collection-schema",
        "review",
        "maintenance-report",
        "retention-policy",
        "retention-list",
        "hold-change",
        "hold-list",
        "disposal-outcome",
        "certificate-list",
        "certificate-html",
        "certificate-payload",
        "contractor-assignment",
        "contractor-list",
        "contractor-revocation",
        "password-change",
    ] {
        assert!(seen.contains(name), "{name} not printed: {seen:?}");
    }

    // The server's answers no other scenario reads (each checked as every
    // answer is).
    let srv = crate::server::start(&[]);
    assert_eq!(srv.call("GET", "/v1/keys", None, None).status, 200);
    assert_eq!(srv.call("GET", "/v1/openapi.json", None, None).status, 200);
    let token = srv.token("auditor");
    let a = srv.call("DELETE", "/v1/sessions/current", Some(&token), None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["document"], "session-end");
}
