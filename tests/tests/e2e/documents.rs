//! Every JSON document the tests read from `pivault --json` or the HTTP API
//! is checked here against `schemas/<document>.json` (issue 11): a document
//! without its `document` name and `version`, without a schema file, or
//! with a member its schema does not list fails the test that read it. So
//! every CLI and server scenario is also a check that the published
//! schemas describe what is printed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where the schemas are checked in: `schemas/` at the workspace top.
pub(crate) fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("schemas")
}

/// The `$id` every schema file carries, from its name.
pub(crate) fn schema_id(name: &str) -> String {
    format!("https://schemas.pivault.invalid/{name}.json")
}

/// The schema files by name (`defs`, `record`, …), parsed.
pub(crate) fn schema_files() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(schema_dir()).expect("schemas/ is checked in") {
        let p = e.expect("dir entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let name = p
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("file name")
            .to_owned();
        let text = std::fs::read_to_string(&p).expect("read schema");
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
        out.insert(name, v);
    }
    out
}

/// Compiled schemas, per test thread (compiling takes a millisecond; a
/// `boon::Schemas` is not shared between threads).
struct Cache {
    schemas: boon::Schemas,
    compiler: boon::Compiler,
    index: BTreeMap<String, boon::SchemaIndex>,
}

thread_local! {
    static CACHE: RefCell<Option<Cache>> = const { RefCell::new(None) };
}

/// A compiler that knows every schema file by its `$id`, so `$ref`s between
/// files resolve without any loader (nothing is fetched).
pub(crate) fn compiler() -> boon::Compiler {
    let mut c = boon::Compiler::new();
    c.set_default_draft(boon::Draft::V2020_12);
    for (name, v) in schema_files() {
        c.add_resource(&schema_id(&name), v)
            .unwrap_or_else(|e| panic!("schemas/{name}.json: {e}"));
    }
    c
}

/// Validates `doc` against the schema `name`; the error text on failure.
pub(crate) fn validate_as(name: &str, doc: &Value) -> Result<(), String> {
    if !schema_dir().join(format!("{name}.json")).is_file() {
        return Err(format!("no schema file schemas/{name}.json"));
    }
    CACHE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let cache = cell.get_or_insert_with(|| Cache {
            schemas: boon::Schemas::new(),
            compiler: compiler(),
            index: BTreeMap::new(),
        });
        let idx = match cache.index.get(name) {
            Some(i) => *i,
            None => {
                let i = cache
                    .compiler
                    .compile(&schema_id(name), &mut cache.schemas)
                    .map_err(|e| format!("schemas/{name}.json does not compile: {e:#}"))?;
                cache.index.insert(name.to_owned(), i);
                i
            }
        };
        cache
            .schemas
            .validate(doc, idx)
            .map_err(|e| format!("{e:#}"))
    })
}

/// Checks a top-level document: named, versioned, and valid against the
/// schema its name gives.
#[track_caller]
pub(crate) fn check(doc: &Value, what: &str) {
    let name = doc.get("document").and_then(Value::as_str);
    if dump(name.unwrap_or("_unnamed"), doc) {
        return;
    }
    let Some(name) = doc.get("document").and_then(Value::as_str) else {
        panic!("{what}: the document has no `document` name:\n{doc}");
    };
    assert_eq!(
        doc.get("version"),
        Some(&Value::from(vault_core::views::DOCUMENT_VERSION)),
        "{what}: document {name} has no `version` {}:\n{doc}",
        vault_core::views::DOCUMENT_VERSION
    );
    if let Err(e) = validate_as(name, doc) {
        panic!("{what}: document {name} does not match schemas/{name}.json: {e}\n{doc}");
    }
}

/// Checks whatever a test read as a document: ours by its name; the two
/// that keep a format of their own by their shape (a signed certificate
/// file, `certificate export` or `GET /v1/certificates/{id}/file`; the
/// OpenAPI document).
#[track_caller]
pub(crate) fn check_any(doc: &Value, what: &str) {
    let has = |k: &str| doc.get(k).is_some();
    if !has("document") && has("certificate") && has("signatures") {
        check_as("certificate-file", doc, what);
    } else if !has("document") && has("proof") && has("credentialSubject") {
        check_as("certificate-credential", doc, what);
    } else if !has("document") && has("openapi") {
        check_as("openapi-document", doc, what);
    } else {
        check(doc, what);
    }
}

/// Checks a document that is not ours to name (the `--json` error object
/// on stderr, a signed certificate file) against a schema chosen by the
/// caller.
#[track_caller]
pub(crate) fn check_as(name: &str, doc: &Value, what: &str) {
    if dump(name, doc) {
        return;
    }
    if let Err(e) = validate_as(name, doc) {
        panic!("{what}: does not match schemas/{name}.json: {e}\n{doc}");
    }
}

/// With `PIVAULT_DOCUMENT_DUMP=DIR`, each document read is written to
/// `DIR/<name>/` instead of being checked: the material for writing or
/// reviewing a schema against what the scenarios really print. True when
/// it dumped.
fn dump(name: &str, doc: &Value) -> bool {
    let Some(dir) = std::env::var_os("PIVAULT_DOCUMENT_DUMP") else {
        return false;
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = Path::new(&dir).join(name);
    let _ = std::fs::create_dir_all(&d);
    let _ = std::fs::write(
        d.join(format!(
            "{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )),
        doc.to_string(),
    );
    true
}
