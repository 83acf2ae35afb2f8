//! The contractor's co-signature, made offline: the private key never
//! reaches the vault, not even the page. For each certificate of a
//! disposal the contractor carried out (`Vault::disposals`, their own
//! batches), the page offers the exact bytes to sign (the certificate's
//! signed message, as `pivault certificate payload` writes it) as a
//! download, the command that signs them on the contractor's machine
//! (`pivault certificate sign-payload`), and two forms for the signature
//! (pasted, or its file uploaded: the text `sign-payload` prints, or the
//! 64 raw bytes `openssl pkeyutl -sign` writes), which
//! `Vault::cosign_certificate` checks against the key registered for the
//! contractor (as `POST /v1/certificates/{id}/cosign`). Then the PDF.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use vault_core::certificate::Certificate;
use vault_core::ids::CertificateId;

use super::{Signed, error_page, esc, form_session, page, secure_headers, visitor};
use crate::problem::ApiError;
use crate::{App, RequestContext};

pub(super) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/ui/cosign", get(list))
        .route("/ui/cosign/{id}", get(one).post(upload))
        .route("/ui/cosign/{id}/file", axum::routing::post(upload_file))
        .route("/ui/cosign/{id}/payload", get(payload))
}

/// The certificates of the user's own completed batches, newest first:
/// `(certificate, co-signed by the contractor)`.
async fn mine(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
) -> Result<Vec<(vault_core::vault::CertificateSummary, bool)>, ApiError> {
    let me = who.user_id;
    app.as_user_long(rc, who.bearer(), move |v, s| {
        let batches: Vec<String> = v
            .disposals(s)?
            .into_iter()
            .filter(|d| d.operator == me && d.step == "complete")
            .map(|d| d.certificate_id.to_string())
            .collect();
        let mut out: Vec<_> = v
            .list_certificates(s, false)?
            .into_iter()
            .filter(|c| batches.contains(&c.id))
            .map(|c| {
                let signed = c.cosigned_by.iter().any(|r| r == "contractor");
                (c, signed)
            })
            .collect();
        out.reverse();
        Ok(out)
    })
    .await
}

async fn list(State(app): State<Arc<App>>, rc: RequestContext, headers: HeaderMap) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let certs = match mine(&app, &rc, &who).await {
        Ok(c) => c,
        Err(e) => return error_page(&who, &e),
    };
    let items: String = certs
        .iter()
        .map(|(c, signed)| {
            let id = esc(&c.id);
            format!(
                "<li id=\"cert-{id}\"><h3>Certificate {id}</h3><dl><dt>Issued</dt><dd>{}</dd><dt>Status</dt><dd>{}</dd>\
                 <dt>Records</dt><dd>{}</dd><dt>Your co-signature</dt><dd class=\"cosigned\">{}</dd></dl>\
                 <p class=\"actions\"><a href=\"/ui/cosign/{id}\">{}</a>\
                 <a href=\"/ui/certificates/{id}/pdf\" download>PDF of {id}</a></p></li>",
                esc(&c.issued_at),
                esc(&c.status),
                c.record_count,
                if *signed { "yes" } else { "not yet" },
                if *signed {
                    format!("Details of {id}")
                } else {
                    format!("Co-sign {id}")
                },
            )
        })
        .collect();
    let body = if certs.is_empty() {
        "<p role=\"status\">You have carried out no disposal yet: there is nothing to co-sign.</p>"
            .to_owned()
    } else {
        format!(
            "<p role=\"status\">{} certificate(s) of disposals you carried out.</p><h2>Your certificates</h2><ul class=\"cards\">{items}</ul>",
            certs.len()
        )
    };
    page(
        StatusCode::OK,
        "Co-sign certificates",
        Some(&who),
        &format!(
            "<p>Your signature on a certificate says that you, the contractor, carried out this destruction. \
             You sign on your own machine with the key registered for you: the key is never sent here.</p>{body}"
        ),
    )
}

/// The certificate, if it is of one of the user's own batches (the core
/// decides again when the signature comes).
async fn own_certificate(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    id: CertificateId,
) -> Result<(Certificate, bool), ApiError> {
    let me = who.user_id;
    app.as_user(rc, who.bearer(), move |v, s| {
        let ours = v
            .disposals(s)?
            .iter()
            .any(|d| d.certificate_id == id && d.operator == me);
        Ok((v.certificate(s, id)?, ours))
    })
    .await
}

/// The answer to a path that names no certificate.
fn not_an_id(who: &Signed) -> Response {
    error_page(who, &ApiError::invalid("that is not a certificate ID"))
}

/// The co-sign page of one certificate: the payload, the command, the form.
fn cosign_body(
    who: &Signed,
    id: CertificateId,
    cert: &Certificate,
    ours: bool,
    top: &str,
) -> String {
    let b = &cert.body;
    let facts = format!(
        "<dl><dt>Certificate</dt><dd><code id=\"certificate-id\">{id}</code></dd><dt>Status</dt><dd>{}</dd>\
         <dt>Records</dt><dd>{}</dd><dt>Your key (as the certificate names it)</dt><dd><code>{}</code></dd></dl>",
        esc(b["status"].as_str().unwrap_or("?")),
        b["target"]["record_count"].as_u64().unwrap_or(0),
        esc(b["parties"]["contractor"]["key_fingerprint"]
            .as_str()
            .unwrap_or("none registered")),
    );
    let files = format!(
        "<ul><li><a href=\"/ui/certificates/{id}/pdf\" download>Download the certificate as a PDF</a></li>\
         <li><a href=\"/ui/disposals/certificate/{id}\" download>Download the signed JSON</a></li></ul>"
    );
    if cert.signature("contractor").is_some() {
        return format!(
            "{top}<p role=\"status\" id=\"cosigned\">Co-signed: the certificate carries your signature.</p>{facts}{files}"
        );
    }
    if !ours {
        return format!(
            "{top}<p role=\"alert\" class=\"error\">This certificate is of a disposal another user carried out: \
             only the contractor who carried it out co-signs it.</p>{facts}"
        );
    }
    format!(
        "{top}{facts}<h2>1. Download what you sign</h2>\
         <p><a id=\"payload\" href=\"/ui/cosign/{id}/payload\" download>certificate-{id}.payload</a>: \
         the exact bytes of the certificate that every signature covers.</p>\
         <h2>2. Sign it on your own machine</h2>\
         <p><code id=\"command\">pivault certificate sign-payload --key-file YOUR-KEY-FILE certificate-{id}.payload</code></p>\
         <p class=\"hint\">It needs no vault and no network. It checks that the file is a certificate, says which one, \
         and prints the signature (128 hexadecimal digits). If an officer validates the certificate before you send \
         the signature, download the payload again.</p>\
         <h2>3. Send the signature</h2>\
         <form method=\"post\" action=\"/ui/cosign/{id}\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"signature\">Signature (hexadecimal, or base64)</label>\
         <textarea id=\"signature\" name=\"signature\" rows=\"3\" spellcheck=\"false\" aria-describedby=\"h-signature\"></textarea>\
         <p class=\"hint\" id=\"h-signature\">The vault checks it against the key registered for you before it adds it.</p>\
         <button type=\"submit\">Add my co-signature</button></form>\
         <form id=\"signature-upload\" method=\"post\" action=\"/ui/cosign/{id}/file\" enctype=\"multipart/form-data\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"signature_file\">Or the signature's file</label>\
         <input id=\"signature_file\" name=\"signature_file\" type=\"file\" aria-describedby=\"h-signature-file\">\
         <p class=\"hint\" id=\"h-signature-file\">What <code>sign-payload</code> printed, saved to a file, or the 64 bytes \
         <code>openssl pkeyutl -sign</code> writes.</p>\
         <button type=\"submit\">Add my co-signature from the file</button></form>{files}",
        csrf = esc(&who.csrf),
    )
}

async fn one(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let Ok(id) = id.parse::<CertificateId>() else {
        return not_an_id(&who);
    };
    match own_certificate(&app, &rc, &who, id).await {
        Ok((cert, ours)) => page(
            StatusCode::OK,
            "Co-sign a certificate",
            Some(&who),
            &cosign_body(&who, id, &cert, ours, ""),
        ),
        Err(e) => error_page(&who, &e),
    }
}

/// The bytes to sign: the certificate's signed message, as a file.
async fn payload(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let who = match visitor(&app, &rc, &headers).await {
        Ok(who) => who,
        Err(elsewhere) => return elsewhere,
    };
    let Ok(id) = id.parse::<CertificateId>() else {
        return not_an_id(&who);
    };
    let msg = app
        .as_user(&rc, who.bearer(), move |v, s| {
            v.certificate(s, id)?.message()
        })
        .await;
    match msg {
        Ok(bytes) => {
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            secure_headers(h);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"certificate-{id}.payload\""
            )) {
                h.insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => error_page(&who, &e),
    }
}

/// A signature as pasted: 128 hex digits, or 64 bytes in base64; spaces
/// and line breaks ignored.
fn parse_signature(text: &str) -> Option<[u8; 64]> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = if t.len() == 128 {
        hex::decode(&t).ok()?
    } else {
        data_encoding::BASE64.decode(t.as_bytes()).ok()?
    };
    bytes.try_into().ok()
}

#[derive(Deserialize)]
struct SignatureForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    signature: String,
}

/// A signature's file: 64 raw bytes (`openssl pkeyutl -sign`), or text as
/// pasted (a text signature is never 64 bytes long: 128 hex digits, 88
/// base64 characters).
fn signature_of_file(data: &[u8]) -> Option<[u8; 64]> {
    <[u8; 64]>::try_from(data)
        .ok()
        .or_else(|| parse_signature(std::str::from_utf8(data).ok()?))
}

/// Adds the pasted co-signature (`Vault::cosign_certificate`, which checks
/// it over the certificate with the contractor's registered key).
async fn upload(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<SignatureForm>,
) -> Response {
    let who = match form_session(&app, &rc, &headers, &f.csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    add_signature(&app, &rc, &who, id, parse_signature(&f.signature)).await
}

/// Adds the co-signature from an uploaded file (`multipart/form-data`,
/// the session's CSRF token as a field), as [`upload`] does a pasted one.
async fn upload_file(
    State(app): State<Arc<App>>,
    rc: RequestContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let parts = super::import::boundary(content_type)
        .and_then(|b| super::import::parts(&body, &b))
        .unwrap_or_default();
    let field = |name: &str| parts.iter().find(|p| p.name == name).map(|p| p.data);
    let csrf = field("csrf")
        .and_then(|d| std::str::from_utf8(d).ok())
        .unwrap_or_default();
    let who = match form_session(&app, &rc, &headers, csrf).await {
        Ok(who) => who,
        Err(refused) => return refused,
    };
    let sig = field("signature_file").and_then(signature_of_file);
    add_signature(&app, &rc, &who, id, sig).await
}

/// Checks and adds a co-signature, then shows the certificate's page with
/// the outcome on top.
async fn add_signature(
    app: &Arc<App>,
    rc: &RequestContext,
    who: &Signed,
    id: String,
    sig: Option<[u8; 64]>,
) -> Response {
    let Ok(id) = id.parse::<CertificateId>() else {
        return not_an_id(who);
    };
    let (status, top) = match sig {
        None => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "<p role=\"alert\" class=\"error\">Not added: a signature is 128 hexadecimal digits (what \
             <code>pivault certificate sign-payload</code> prints), 64 bytes in base64, or a file of 64 raw \
             bytes. Paste it or choose the file again.</p>"
                .to_owned(),
        ),
        Some(sig) => match app
            .as_user(rc, who.bearer(), move |v, s| {
                v.cosign_certificate(s, id, &sig).map(|_| ())
            })
            .await
        {
            Ok(()) => (
                StatusCode::OK,
                "<p role=\"status\" id=\"outcome\">Your co-signature is added and checked.</p>".to_owned(),
            ),
            Err(e) => (
                e.status,
                format!(
                    "<p role=\"alert\" class=\"error\" id=\"outcome\">Not added: {} Sign the payload downloaded \
                     from this page with the key registered for you, then paste the signature again.</p>",
                    esc(&e.detail)
                ),
            ),
        },
    };
    match own_certificate(app, rc, who, id).await {
        Ok((cert, ours)) => page(
            status,
            "Co-sign a certificate",
            Some(who),
            &cosign_body(who, id, &cert, ours, &top),
        ),
        Err(e) => error_page(who, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_signature, signature_of_file};

    #[test]
    fn a_signature_file_is_raw_bytes_or_text() {
        let sig = [0xa5u8; 64];
        assert_eq!(signature_of_file(&sig), Some(sig));
        let text = format!("{}\n", hex::encode(sig));
        assert_eq!(signature_of_file(text.as_bytes()), Some(sig));
        // 64 bytes are taken raw, even printable ones.
        let printable = [b'a'; 64];
        assert_eq!(signature_of_file(&printable), Some(printable));
        assert_eq!(signature_of_file(&sig[..63]), None);
        assert_eq!(signature_of_file(b""), None);
    }

    #[test]
    fn a_signature_is_pasted_as_hex_or_base64() {
        let sig = [7u8; 64];
        let hex = hex::encode(sig);
        assert_eq!(parse_signature(&hex), Some(sig));
        assert_eq!(
            parse_signature(&format!(" {}\n{} ", &hex[..64], &hex[64..])),
            Some(sig)
        );
        let b64 = data_encoding::BASE64.encode(&sig);
        assert_eq!(parse_signature(&b64), Some(sig));
        assert_eq!(parse_signature(&hex[..126]), None);
        assert_eq!(
            parse_signature(&data_encoding::BASE64.encode(&[7u8; 63])),
            None
        );
        assert_eq!(parse_signature(""), None);
    }
}
