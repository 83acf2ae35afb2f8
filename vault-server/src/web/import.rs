//! The clerk's import of a CSV or JSON Lines file, with a preview before
//! anything is stored: the same `Vault::import_mapped` as `pivault record
//! import` and `POST /v1/collections/{name}/import`, first as its check
//! pass (the preview: rows, how many would be stored, each refused line's
//! field and the core's message, never a value), then, on confirmation,
//! the check again and the import itself (nothing is stored if any row is
//! invalid; the audit events are the core's).
//!
//! Between the preview and its confirmation the file stays on the server,
//! in memory only ([`ImportPreviews`]): never in the page or a URL. A
//! preview is bound to the session that uploaded it (the user's ID and the
//! hash of the session's token), lasts [`PREVIEW_TTL_MS`], is confirmed at
//! most once (two tabs racing: one stores, the other is told), and its
//! bytes are zeroized when it goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use vault_core::access::Permission;
use vault_core::ids::UserId;
use vault_core::vault::{ImportColumns, ImportFormat, ImportReport};
use zeroize::Zeroizing;

use super::{
    Signed, cross_site, csrf_ok, error_page, esc, form_session, page, refused_cross_site, visitor,
};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/import", get(import_page).post(preview))
        .route("/ui/import/confirm", post(confirm))
}

/// How long a preview waits for its confirmation.
const PREVIEW_TTL_MS: i64 = 10 * 60 * 1000;

/// Previews kept per user: a newer one replaces the user's oldest.
const PREVIEWS_PER_USER: usize = 3;

/// The most refused lines a preview lists (the core keeps up to 1,000).
const LINES_SHOWN: usize = 200;

// ----- the previews held between upload and confirmation ---------------------

/// Who may confirm a preview: the user, in the session that uploaded it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Owner {
    user: UserId,
    /// SHA-256 of the session's bearer token.
    token_hash: [u8; 32],
}

impl Owner {
    fn of(who: &Signed) -> Owner {
        Owner {
            user: who.id,
            token_hash: vault_core::crypto::sha256(who.token.expose().as_bytes()),
        }
    }

    fn is(&self, other: &Owner) -> bool {
        use subtle::ConstantTimeEq;
        self.user == other.user && bool::from(self.token_hash.ct_eq(&other.token_hash))
    }
}

/// An uploaded file as its preview checked it, and what to import it as.
struct Upload {
    /// The file's bytes (personal information): zeroized on drop.
    bytes: Zeroizing<Vec<u8>>,
    collection: String,
    format: ImportFormat,
    subject_column: String,
    map: String,
    /// Its share of the server's in-memory body budget, while it is held.
    _budget: Option<OwnedSemaphorePermit>,
}

enum Step {
    /// Waiting for its confirmation.
    Pending(Upload),
    /// Taken by a confirmation that is running.
    Storing,
    /// Stored, this many records: what a second confirmation is told.
    Stored(u64),
}

struct Entry {
    owner: Owner,
    created_ms: i64,
    step: Step,
}

/// What a confirmation finds under a preview ID.
enum Taken {
    /// The file, now out of the store: this confirmation imports it.
    Upload(Box<Upload>),
    /// Another confirmation of the same preview is storing it.
    Storing,
    /// Another confirmation stored it already.
    Stored(u64),
    /// Expired, never made, or another session's.
    Gone,
}

/// The uploaded files waiting for confirmation, by random preview ID.
#[derive(Default)]
pub(crate) struct ImportPreviews {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for ImportPreviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportPreviews").finish_non_exhaustive()
    }
}

impl ImportPreviews {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere leaves a consistent map (each change is one
        // insert or remove): keep serving.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets what is older than [`PREVIEW_TTL_MS`], whatever its step (a
    /// confirmation cut off by the request timeout never finishes its own).
    fn expire(map: &mut HashMap<String, Entry>, now_ms: i64) {
        map.retain(|_, e| now_ms - e.created_ms < PREVIEW_TTL_MS);
    }

    /// Keeps an upload for its owner; returns its new random ID. The
    /// owner's oldest waiting preview goes when they have too many.
    fn insert(&self, owner: Owner, upload: Upload, now_ms: i64) -> String {
        let mut id = [0u8; 16];
        vault_core::crypto::fill_random(&mut id);
        let id = hex::encode(id);
        let mut map = self.lock();
        Self::expire(&mut map, now_ms);
        loop {
            let mine: Vec<(&String, i64)> = map
                .iter()
                .filter(|(_, e)| e.owner.user == owner.user && matches!(e.step, Step::Pending(_)))
                .map(|(k, e)| (k, e.created_ms))
                .collect();
            if mine.len() < PREVIEWS_PER_USER {
                break;
            }
            let oldest = mine
                .iter()
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| (*k).clone())
                .expect("at least one");
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Entry {
                owner,
                created_ms: now_ms,
                step: Step::Pending(upload),
            },
        );
        id
    }

    /// Takes a preview for its confirmation: only its owner's session, only
    /// before it expires, only once (under the lock: of two confirmations
    /// racing, one gets the file).
    fn take(&self, id: &str, owner: &Owner, now_ms: i64) -> Taken {
        let mut map = self.lock();
        Self::expire(&mut map, now_ms);
        let Some(e) = map.get_mut(id) else {
            return Taken::Gone;
        };
        if !e.owner.is(owner) {
            // Another session's preview: left as it is, for its owner.
            return Taken::Gone;
        }
        match std::mem::replace(&mut e.step, Step::Storing) {
            Step::Pending(u) => Taken::Upload(Box::new(u)),
            Step::Storing => Taken::Storing,
            Step::Stored(n) => {
                e.step = Step::Stored(n);
                Taken::Stored(n)
            }
        }
    }

    /// The end of a confirmation: stored (kept as a note until the preview
    /// would have expired, to answer a second confirmation) or not (gone).
    fn finish(&self, id: &str, stored: Option<u64>) {
        let mut map = self.lock();
        match stored {
            Some(n) => {
                if let Some(e) = map.get_mut(id) {
                    e.step = Step::Stored(n);
                }
            }
            None => {
                map.remove(id);
            }
        }
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

// ----- multipart/form-data (RFC 7578), as browsers send a file upload -------

/// One part of a `multipart/form-data` body.
pub(super) struct Part<'a> {
    pub(super) name: String,
    filename: Option<String>,
    pub(super) data: &'a [u8],
}

/// The boundary of a `multipart/form-data` content type.
pub(super) fn boundary(content_type: &str) -> Option<String> {
    let mut items = content_type.split(';');
    if !items
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/form-data")
    {
        return None;
    }
    items
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| (1..=70).contains(&b.len()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    (0..=hay.len() - needle.len()).find(|&i| hay[i] == first && hay[i..].starts_with(needle))
}

/// The parts of a `multipart/form-data` body; `None` when it is not one.
pub(super) fn parts<'a>(body: &'a [u8], boundary: &str) -> Option<Vec<Part<'a>>> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let start = find(body, delimiter.as_bytes())?;
    let mut rest = &body[start + delimiter.len()..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Some(out);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let head_end = find(rest, b"\r\n\r\n")?;
        let head = std::str::from_utf8(&rest[..head_end]).ok()?;
        rest = &rest[head_end + 4..];
        let end = find(rest, next_delimiter.as_bytes())?;
        let data = &rest[..end];
        rest = &rest[end + next_delimiter.len()..];
        let disposition = head.split("\r\n").find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(v)
        })?;
        let param = |want: &str| {
            disposition
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(want))
                .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        };
        out.push(Part {
            name: param("name")?,
            filename: param("filename"),
            data,
        });
    }
}

/// Why an upload was not read.
enum Unread {
    /// Past the size the page takes.
    TooLarge,
    /// The connection failed mid-upload.
    Broken,
}

/// Reads an upload's body up to `limit` bytes (zeroized when dropped).
/// Past it the rest is read and dropped, up to the server's import limit,
/// so that the browser hears the answer rather than a reset connection.
async fn read_upload(
    mut body: axum::body::Body,
    limit: usize,
    drain_to: usize,
) -> Result<Zeroizing<Vec<u8>>, Unread> {
    use axum::body::HttpBody;
    let mut buf = Zeroizing::new(Vec::new());
    let mut seen = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(|_| Unread::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            if !buf.is_empty() {
                // Dropped now (zeroized), not at the end of the drain.
                buf = Zeroizing::new(Vec::new());
            }
            if seen > drain_to {
                break;
            }
            continue;
        }
        if buf.capacity() - buf.len() < data.len() {
            // Grow by copying into a zeroizing buffer: a plain `Vec` would
            // leave the old allocation's bytes behind in freed memory.
            let mut bigger = Zeroizing::new(Vec::with_capacity(
                (buf.len() + data.len()).max(buf.capacity() * 2).min(limit),
            ));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&data);
    }
    if seen > limit {
        return Err(Unread::TooLarge);
    }
    Ok(buf)
}

// ----- the pages ------------------------------------------------------------------

/// What the upload form asked for, kept when it comes back with a message
/// (never the file: a browser cannot be given it back).
#[derive(Default)]
struct Choice {
    collection: String,
    format: String,
    subject_column: String,
    map: String,
}

/// A problem of the upload form: the field it concerns (its element's ID)
/// and the message.
struct Problem<'a> {
    field: Option<&'static str>,
    message: &'a str,
}

fn upload_form(
    who: &Signed,
    collections: &[String],
    c: &Choice,
    limit: usize,
    problem: Option<Problem<'_>>,
) -> String {
    let (bad_field, message) = match &problem {
        Some(p) => (p.field, Some(p.message)),
        None => (None, None),
    };
    let alert = message
        .map(|m| {
            format!(
                "<div role=\"alert\" class=\"error\"><p>{}</p><p>Nothing was stored.</p></div>",
                esc(m)
            )
        })
        .unwrap_or_default();
    // The hint of a field, plus the message beside it when it is the one.
    let described = |id: &str, hint: bool| {
        let mut ids = Vec::new();
        if hint {
            ids.push(format!("h-{id}"));
        }
        if bad_field == Some(id) {
            ids.push(format!("e-{id}"));
        }
        let mut a = String::new();
        if !ids.is_empty() {
            a.push_str(&format!(" aria-describedby=\"{}\"", ids.join(" ")));
        }
        if bad_field == Some(id) {
            a.push_str(" aria-invalid=\"true\"");
        }
        a
    };
    let note = |id: &str| match (bad_field, message) {
        (Some(f), Some(m)) if f == id => {
            format!("<p class=\"field-error\" id=\"e-{id}\">{}</p>", esc(m))
        }
        _ => String::new(),
    };
    let options: String = collections
        .iter()
        .map(|n| {
            format!(
                "<option value=\"{0}\"{s}>{0}</option>",
                esc(n),
                s = if *n == c.collection { " selected" } else { "" }
            )
        })
        .collect();
    let format_opt = |v: &str, label: &str| {
        format!(
            "<option value=\"{v}\"{s}>{label}</option>",
            s = if c.format == v { " selected" } else { "" }
        )
    };
    let subject = if c.subject_column.is_empty() {
        "subject"
    } else {
        &c.subject_column
    };
    format!(
        "{alert}<form method=\"post\" action=\"/ui/import\" enctype=\"multipart/form-data\" autocomplete=\"off\" novalidate>\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <div class=\"field\"><label for=\"import-file\">File to import</label>\
         <p class=\"hint\" id=\"h-import-file\">CSV with a header row of field names, or JSON Lines (one JSON object a line). \
         At most {size}; a larger file is imported with <code>pivault record import</code>.</p>{nf}\
         <input id=\"import-file\" name=\"file\" type=\"file\" accept=\".csv,.jsonl,.ndjson,.json,.txt,text/csv\"{df}></div>\
         <div class=\"field\"><label for=\"import-collection\">Collection</label>{nc}\
         <select id=\"import-collection\" name=\"collection\"{dc}>{options}</select></div>\
         <div class=\"field\"><label for=\"import-format\">Format</label>\
         <p class=\"hint\" id=\"h-import-format\">From the file's name unless chosen: a name ending in .csv is CSV, any other JSON Lines.</p>\
         <select id=\"import-format\" name=\"format\"{dfmt}>{fmts}</select></div>\
         <div class=\"field\"><label for=\"import-subject\">Column naming the customer</label>\
         <p class=\"hint\" id=\"h-import-subject\">Your reference for the customer, or a subject ID: records with the same one are kept (and disposed of) together.</p>{ns}\
         <input id=\"import-subject\" name=\"subject_column\" spellcheck=\"false\" value=\"{subject}\"{ds}></div>\
         <div class=\"field\"><label for=\"import-map\">Column headers to fields (optional, CSV)</label>\
         <p class=\"hint\" id=\"h-import-map\">Header=field pairs separated by commas, e.g. <code>SSN=ssn, Date of Birth=born</code>; <code>Notes=</code> leaves a column out. Other headers are taken as field names.</p>{nm}\
         <input id=\"import-map\" name=\"map\" spellcheck=\"false\" value=\"{map}\"{dm}></div>\
         <button type=\"submit\">Preview</button></form>\
         <p class=\"hint\">The preview stores nothing: it checks every row and lists the lines to fix. \
         Records are stored only when you confirm, and only if every row is valid.</p>",
        csrf = esc(&who.csrf),
        size = size_text(limit),
        nf = note("import-file"),
        df = described("import-file", true),
        nc = note("import-collection"),
        dc = described("import-collection", false),
        dfmt = described("import-format", true),
        fmts = [
            format_opt("auto", "From the file's name"),
            format_opt("csv", "CSV"),
            format_opt("jsonl", "JSON Lines"),
        ]
        .join(""),
        ns = note("import-subject"),
        ds = described("import-subject", true),
        subject = esc(subject),
        nm = note("import-map"),
        dm = described("import-map", true),
        map = esc(&c.map),
    )
}

/// What to do with a file over the page's size.
fn too_large(cap: usize) -> String {
    format!(
        "The file is larger than this page takes ({}). Split it into smaller files, or import it with pivault record import, which takes any size.",
        size_text(cap)
    )
}

fn size_text(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// The collections the user may import into, asked of the core with the
/// permission an import needs (refused, and audited, for other roles).
async fn import_collections(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
) -> Result<Vec<String>, ApiError> {
    app.as_user(rc, who.bearer(), |v, s| {
        v.authorize_any(s, &[Permission::CreateRecord])?;
        Ok(v.collections(s)?
            .into_iter()
            .map(|(n, _)| n.as_str().to_owned())
            .collect())
    })
    .await
}

fn limit(app: &App) -> usize {
    app.limits().body_bytes
}

async fn import_page(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    match import_collections(&app, &rc, &who).await {
        Ok(all) => page(
            StatusCode::OK,
            "Import records",
            Some(&who),
            &upload_form(&who, &all, &Choice::default(), limit(&app), None),
        ),
        Err(e) => error_page(&who, &e),
    }
}

/// The form's page again, with a problem.
fn form_again(
    app: &App,
    who: &Signed,
    all: &[String],
    c: &Choice,
    status: StatusCode,
    problem: Problem<'_>,
) -> Response {
    page(
        status,
        "Import records",
        Some(who),
        &upload_form(who, all, c, limit(app), Some(problem)),
    )
}

/// The format of a file: as chosen, else from its name (as the CLI does).
fn format_of(choice: &str, filename: &str) -> ImportFormat {
    match choice {
        "csv" => ImportFormat::Csv,
        "jsonl" => ImportFormat::JsonLines,
        _ if std::path::Path::new(filename)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")) =>
        {
            ImportFormat::Csv
        }
        _ => ImportFormat::JsonLines,
    }
}

fn format_name(f: ImportFormat) -> &'static str {
    match f {
        ImportFormat::Csv => "CSV",
        ImportFormat::JsonLines => "JSON Lines",
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The refused lines: line number, field, the core's message (which never
/// quotes a value).
fn lines_to_fix(r: &ImportReport) -> String {
    let rows: String = r
        .rejected
        .iter()
        .take(LINES_SHOWN)
        .map(|x| {
            format!(
                "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
                x.line,
                x.field.as_deref().map_or_else(
                    || "(the line)".to_owned(),
                    |f| format!("<code>{}</code>", esc(f))
                ),
                esc(&x.error)
            )
        })
        .collect();
    let more = if r.rejected_count > LINES_SHOWN.min(r.rejected.len()) as u64 {
        format!(
            "<p>Only the first {} of the {} lines are listed: fix them and preview again to see the rest.</p>",
            LINES_SHOWN.min(r.rejected.len()),
            r.rejected_count
        )
    } else {
        String::new()
    };
    format!(
        "<h2>Lines to fix</h2><table class=\"lines\"><caption>Each refused line of the file, the field concerned, and what is wrong</caption>\
         <thead><tr><th scope=\"col\">Line</th><th scope=\"col\">Field</th><th scope=\"col\">What to change</th></tr></thead>\
         <tbody>{rows}</tbody></table>{more}"
    )
}

fn counts(collection: &str, format: ImportFormat, r: &ImportReport) -> String {
    format!(
        "<dl class=\"counts\"><dt>Collection</dt><dd>{}</dd><dt>Format</dt><dd>{}</dd>\
         <dt>Rows read</dt><dd id=\"count-rows\">{}</dd><dt>Would be stored</dt><dd id=\"count-valid\">{}</dd>\
         <dt>With an error</dt><dd id=\"count-rejected\">{}</dd></dl>",
        esc(collection),
        format_name(format),
        r.valid + r.rejected_count,
        if r.rejected_count == 0 { r.valid } else { 0 },
        r.rejected_count
    )
}

/// The upload: checked by the core (`import_mapped` in check mode),
/// nothing stored. A file with no error is kept for its confirmation; the
/// page lists the refused lines otherwise.
async fn preview(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if cross_site(&headers) {
        return refused_cross_site();
    }
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    // The core decides who may import before the file is read (as the
    // API's framing does for its import route).
    let all = match import_collections(&app, &rc, &who).await {
        Ok(a) => a,
        Err(e) => return error_page(&who, &e),
    };
    // The page's form is always sent as multipart/form-data, with the
    // session's CSRF token inside: anything else was not sent by it.
    let Some(b) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(boundary)
    else {
        return refused_cross_site();
    };
    let cap = limit(&app);
    let body = match read_upload(body, cap + 64 * 1024, app.limits().import_bytes).await {
        Ok(b) => b,
        Err(Unread::TooLarge) => {
            let m = too_large(cap);
            return form_again(
                &app,
                &who,
                &all,
                &Choice::default(),
                StatusCode::PAYLOAD_TOO_LARGE,
                Problem {
                    field: Some("import-file"),
                    message: &m,
                },
            );
        }
        Err(Unread::Broken) => {
            return form_again(
                &app,
                &who,
                &all,
                &Choice::default(),
                StatusCode::BAD_REQUEST,
                Problem {
                    field: Some("import-file"),
                    message: "The upload was cut off. Choose the file again, then press Preview.",
                },
            );
        }
    };
    let Some(parts) = parts(&body, &b) else {
        return form_again(
            &app,
            &who,
            &all,
            &Choice::default(),
            StatusCode::BAD_REQUEST,
            Problem {
                field: Some("import-file"),
                message: "The upload could not be read. Choose the file again, then press Preview.",
            },
        );
    };
    let text = |name: &str| {
        parts
            .iter()
            .find(|p| p.name == name && p.filename.is_none())
            .and_then(|p| std::str::from_utf8(p.data).ok())
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    if !csrf_ok(&who, &text("csrf")) {
        return refused_cross_site();
    }
    let choice = Choice {
        collection: text("collection"),
        format: text("format"),
        subject_column: text("subject_column"),
        map: text("map"),
    };
    let file = parts
        .iter()
        .find(|p| p.name == "file" && p.filename.is_some());
    let Some(file) = file.filter(|f| !f.data.is_empty()) else {
        return form_again(
            &app,
            &who,
            &all,
            &choice,
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem {
                field: Some("import-file"),
                message: "No file was chosen, or the file is empty. Choose the file to import, then press Preview.",
            },
        );
    };
    if file.data.len() > cap {
        let m = too_large(cap);
        return form_again(
            &app,
            &who,
            &all,
            &choice,
            StatusCode::PAYLOAD_TOO_LARGE,
            Problem {
                field: Some("import-file"),
                message: &m,
            },
        );
    }
    let format = format_of(&choice.format, file.filename.as_deref().unwrap_or(""));
    let bytes = Zeroizing::new(file.data.to_vec());
    drop(parts);
    drop(body);
    let subject_column = if choice.subject_column.is_empty() {
        "subject".to_owned()
    } else {
        choice.subject_column.clone()
    };
    // The core's check pass: every row validated, nothing stored.
    let (coll, column, map) = (
        choice.collection.clone(),
        subject_column.clone(),
        choice.map.clone(),
    );
    let checked = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            let columns = ImportColumns::parse(&map)?;
            let r = v.import_mapped(
                s,
                &coll,
                std::io::Cursor::new(bytes.as_slice()),
                format,
                &column,
                &columns,
                true,
                &mut |_| {},
            );
            r.map(|r| (r, bytes))
        })
        .await;
    let (report, bytes) = match checked {
        Ok(x) => x,
        Err(e) => {
            let field = match e.code {
                "not_found" => Some("import-collection"),
                _ if e.detail.contains("column mapping") || e.detail.contains("mapped field") => {
                    Some("import-map")
                }
                _ => Some("import-file"),
            };
            let m = format!(
                "The file was not checked: {} Change the file or the choices, then press Preview again.",
                end_sentence(&e.detail)
            );
            return form_again(
                &app,
                &who,
                &all,
                &choice,
                e.status,
                Problem { field, message: &m },
            );
        }
    };
    let counts = counts(&choice.collection, format, &report);
    if report.rejected_count > 0 {
        let body = format!(
            "<div role=\"alert\" class=\"error\"><p>Nothing was stored: {} of the file need a change.</p>\
             <p>Fix each line listed below in the file (the values are not shown here), then upload it again.</p></div>\
             {counts}{}<h2>Upload the corrected file</h2>{}",
            plural(report.rejected_count, "line", "lines"),
            lines_to_fix(&report),
            upload_form(&who, &all, &choice, cap, None),
        );
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Import records: lines to fix",
            Some(&who),
            &body,
        );
    }
    if report.valid == 0 {
        return form_again(
            &app,
            &who,
            &all,
            &choice,
            StatusCode::UNPROCESSABLE_ENTITY,
            Problem {
                field: Some("import-file"),
                message: "The file has no rows to import. Choose the file that holds the records, then press Preview.",
            },
        );
    }
    // Held in memory, counted against the server's body budget.
    let permit = u32::try_from(bytes.len()).ok().and_then(|n| {
        app.capacity
            .body_budget
            .clone()
            .try_acquire_many_owned(n)
            .ok()
    });
    let Some(permit) = permit else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Import records",
            Some(&who),
            "<p role=\"alert\" class=\"error\">The server is busy and cannot hold the file for its confirmation now. Nothing was stored. Wait a minute, then upload the file again.</p>",
        );
    };
    let n = report.valid;
    let id = app.import_previews.insert(
        Owner::of(&who),
        Upload {
            bytes,
            collection: choice.collection.clone(),
            format,
            subject_column,
            map: choice.map.clone(),
            _budget: Some(permit),
        },
        now_ms(),
    );
    let body = format!(
        "<p role=\"status\">Preview only: nothing is stored yet. Every row is valid.</p>{counts}\
         <form method=\"post\" action=\"/ui/import/confirm\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"preview\" value=\"{id}\">\
         <button type=\"submit\">Store {what}</button></form>\
         <p class=\"hint\">The file is kept on the server for 10 minutes, for this sign-in only, then forgotten. \
         Storing checks every row again; each record is stored under its own key and audited.</p>\
         <p><a href=\"/ui/import\">Upload another file instead</a></p>",
        csrf = esc(&who.csrf),
        what = plural(n, "record", "records"),
    );
    page(StatusCode::OK, "Import records: preview", Some(&who), &body)
}

/// The core's message as a sentence.
fn end_sentence(s: &str) -> String {
    let s = s.trim();
    if s.ends_with('.') {
        s.to_owned()
    } else {
        format!("{s}.")
    }
}

#[derive(Deserialize)]
struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    preview: String,
}

fn not_stored(who: &Signed, status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Import records",
        Some(who),
        &format!(
            "<p role=\"alert\" class=\"error\">{}</p><p><a href=\"/ui/import\">Import a file</a></p>",
            esc(message)
        ),
    )
}

/// The confirmation of a preview: the file is taken from the store (once),
/// checked again and imported by the core, as `pivault record import` does.
async fn confirm(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let id = f.preview.trim().to_owned();
    let upload = match app.import_previews.take(&id, &Owner::of(&who), now_ms()) {
        Taken::Upload(u) => u,
        Taken::Storing => {
            return not_stored(
                &who,
                StatusCode::CONFLICT,
                "This preview is being stored by another tab or click right now. Nothing more will be stored: look for the records in a moment.",
            );
        }
        Taken::Stored(n) => {
            return not_stored(
                &who,
                StatusCode::CONFLICT,
                &format!(
                    "This preview was already stored ({}), from another tab or click. Nothing more was stored.",
                    plural(n, "record", "records")
                ),
            );
        }
        Taken::Gone => {
            return not_stored(
                &who,
                StatusCode::GONE,
                "This preview is no longer available: a preview lasts 10 minutes and only for the sign-in that uploaded the file. Nothing was stored. Upload the file again to preview it.",
            );
        }
    };
    let (collection, format) = (upload.collection.clone(), upload.format);
    let owner = who.id;
    let r = app
        .as_user_long(&rc, who.bearer(), move |v, s| {
            if s.user() != owner {
                return Err(vault_core::Error::PermissionDenied(
                    "confirm another user's import",
                ));
            }
            let u = upload;
            let columns = ImportColumns::parse(&u.map)?;
            let run = |check_only: bool| {
                v.import_mapped(
                    s,
                    &u.collection,
                    std::io::Cursor::new(u.bytes.as_slice()),
                    u.format,
                    &u.subject_column,
                    &columns,
                    check_only,
                    &mut |_| {},
                )
            };
            // The preview is advice: the core checks every row again, and
            // stores nothing if one is now refused.
            let check = run(true)?;
            if check.rejected_count > 0 {
                return Ok(Err(check));
            }
            Ok(Ok(run(false)?))
        })
        .await;
    match r {
        Ok(Ok(done)) => {
            app.import_previews.finish(&id, Some(done.imported));
            let ids: String = done
                .records
                .iter()
                .take(100)
                .map(|r| format!("<li><code>{r}</code></li>"))
                .collect();
            let more = if done.records.len() > 100 {
                format!("<p>and {} more.</p>", done.records.len() - 100)
            } else {
                String::new()
            };
            page(
                StatusCode::OK,
                "Records imported",
                Some(&who),
                &format!(
                    "<p role=\"status\">Stored {what} into {coll}, each under its own key; the import is in the audit trail.</p>\
                     <dl><dt>Records stored</dt><dd id=\"count-imported\">{n}</dd></dl>\
                     <h2>Their record IDs</h2><ul class=\"ids\">{ids}</ul>{more}\
                     <ul><li><a href=\"/ui/find\">Find a customer</a></li><li><a href=\"/ui/import\">Import another file</a></li></ul>",
                    what = plural(done.imported, "record", "records"),
                    coll = esc(&collection),
                    n = done.imported,
                ),
            )
        }
        Ok(Err(check)) => {
            app.import_previews.finish(&id, None);
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Import records: lines to fix",
                Some(&who),
                &format!(
                    "<div role=\"alert\" class=\"error\"><p>Nothing was stored: since the preview, {} of the file became invalid (the collection's schema may have changed).</p>\
                     <p>Fix each line listed below in the file, then upload it again.</p></div>{}{}\
                     <p><a href=\"/ui/import\">Import a file</a></p>",
                    plural(check.rejected_count, "line", "lines"),
                    counts(&collection, format, &check),
                    lines_to_fix(&check),
                ),
            )
        }
        Err(e) => {
            app.import_previews.finish(&id, None);
            let next = if e.code == "import_incomplete" {
                " Find the records stored so far before importing the rest of the file."
            } else {
                " Upload the file again to preview it."
            };
            not_stored(
                &who,
                e.status,
                &format!("Not done: {}{next}", end_sentence(&e.detail)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user: UserId, token: &str) -> Owner {
        Owner {
            user,
            token_hash: vault_core::crypto::sha256(token.as_bytes()),
        }
    }

    fn upload(text: &str) -> Upload {
        Upload {
            bytes: Zeroizing::new(text.as_bytes().to_vec()),
            collection: "customers".into(),
            format: ImportFormat::Csv,
            subject_column: "subject".into(),
            map: String::new(),
            _budget: None,
        }
    }

    #[test]
    fn a_preview_is_taken_once_by_its_own_session_before_it_expires() {
        let store = ImportPreviews::default();
        let (ada, eve) = (UserId::new(), UserId::new());
        let mine = owner(ada, "token-a");
        let id = store.insert(mine, upload("x"), 1_000);
        assert_eq!(id.len(), 32, "128 random bits");
        // Another user, or the same user's other session: nothing, and the
        // preview stays for its owner.
        assert!(matches!(
            store.take(&id, &owner(eve, "token-a"), 1_001),
            Taken::Gone
        ));
        assert!(matches!(
            store.take(&id, &owner(ada, "token-b"), 1_001),
            Taken::Gone
        ));
        assert!(matches!(store.take("0000", &mine, 1_001), Taken::Gone));
        let Taken::Upload(u) = store.take(&id, &mine, 1_002) else {
            panic!("the owner's confirmation gets the file");
        };
        assert_eq!(u.bytes.as_slice(), b"x");
        // A second confirmation while the first runs, then after it stored.
        assert!(matches!(store.take(&id, &mine, 1_003), Taken::Storing));
        store.finish(&id, Some(7));
        assert!(matches!(store.take(&id, &mine, 1_004), Taken::Stored(7)));
        // Expired: gone, whatever its step.
        let id2 = store.insert(mine, upload("y"), 2_000);
        assert!(matches!(
            store.take(&id2, &mine, 2_000 + PREVIEW_TTL_MS),
            Taken::Gone
        ));
        assert!(matches!(
            store.take(&id, &mine, 1_000 + PREVIEW_TTL_MS),
            Taken::Gone
        ));
        // A failed confirmation forgets the preview.
        let id3 = store.insert(mine, upload("z"), 3_000);
        assert!(matches!(store.take(&id3, &mine, 3_001), Taken::Upload(_)));
        store.finish(&id3, None);
        assert!(matches!(store.take(&id3, &mine, 3_002), Taken::Gone));
        // A confirmation that never finished (cut off) is forgotten too.
        let id4 = store.insert(mine, upload("w"), 4_000);
        assert!(matches!(store.take(&id4, &mine, 4_001), Taken::Upload(_)));
        assert!(matches!(store.take(&id4, &mine, 4_002), Taken::Storing));
        assert!(matches!(
            store.take(&id4, &mine, 4_000 + PREVIEW_TTL_MS),
            Taken::Gone
        ));
        assert!(store.lock().is_empty(), "expired entries are dropped");
    }

    #[test]
    fn a_user_keeps_a_few_previews_and_a_newer_one_replaces_the_oldest() {
        let store = ImportPreviews::default();
        let ada = owner(UserId::new(), "t");
        let other = owner(UserId::new(), "u");
        let ids: Vec<String> = (0..PREVIEWS_PER_USER + 1)
            .map(|i| store.insert(ada, upload("x"), 10 + i as i64))
            .collect();
        let theirs = store.insert(other, upload("y"), 5);
        assert!(
            matches!(store.take(&ids[0], &ada, 20), Taken::Gone),
            "the oldest went"
        );
        for id in &ids[1..] {
            assert!(matches!(store.take(id, &ada, 20), Taken::Upload(_)));
        }
        assert!(
            matches!(store.take(&theirs, &other, 20), Taken::Upload(_)),
            "another user's preview is not counted against her"
        );
    }

    #[test]
    fn two_confirmations_racing_get_the_file_once() {
        let store = Arc::new(ImportPreviews::default());
        let me = owner(UserId::new(), "t");
        let id = store.insert(me, upload("x"), 1);
        let got: usize = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..8)
                .map(|_| sc.spawn(|| matches!(store.take(&id, &me, 2), Taken::Upload(_))))
                .collect();
            hs.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
        });
        assert_eq!(got, 1);
    }

    #[test]
    fn a_browsers_multipart_upload_is_read_part_by_part() {
        let b = "----WebKitFormBoundaryAbC123";
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={b}")).as_deref(),
            Some(b)
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=\"q r\"").as_deref(),
            Some("q r")
        );
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
        assert_eq!(boundary("multipart/form-data"), None);
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"people.csv\"\r\n\
             Content-Type: text/csv\r\n\r\nsubject,given_name\r\nC-1,Ada\r\n\r\n\
             --{b}\r\ncontent-disposition: form-data; name=\"empty\"\r\n\r\n\r\n--{b}--\r\n"
        );
        let p = parts(body.as_bytes(), b).expect("parts");
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].name.as_str(), p[0].data), ("csrf", &b"abc"[..]));
        assert_eq!(p[1].filename.as_deref(), Some("people.csv"));
        assert_eq!(p[1].data, b"subject,given_name\r\nC-1,Ada\r\n");
        assert_eq!((p[2].name.as_str(), p[2].data), ("empty", &b""[..]));
        // Cut off, or not multipart at all: refused.
        assert!(parts(&body.as_bytes()[..body.len() / 2], b).is_none());
        assert!(parts(b"subject,given_name", b).is_none());
    }

    #[test]
    fn the_format_comes_from_the_name_unless_chosen() {
        assert!(matches!(format_of("auto", "People.CSV"), ImportFormat::Csv));
        assert!(matches!(
            format_of("auto", "people.jsonl"),
            ImportFormat::JsonLines
        ));
        assert!(matches!(format_of("", "people"), ImportFormat::JsonLines));
        assert!(matches!(
            format_of("csv", "people.jsonl"),
            ImportFormat::Csv
        ));
        assert!(matches!(
            format_of("jsonl", "people.csv"),
            ImportFormat::JsonLines
        ));
    }
}
