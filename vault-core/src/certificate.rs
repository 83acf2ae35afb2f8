//! Certificates of destruction: the signed, offline-verifiable record of a
//! disposal batch (DESIGN §6; REQUIREMENTS §C, REQ-DISP-05, REQ-DISP-03,
//! REQ-CE-05, REQ-CE-06).
//!
//! This module owns the certificate format end to end: the body's mandatory
//! fields ([`MANDATORY_FIELDS`], [`check_fields`]), the canonical form that is
//! signed ([`canonical_json`], [`signed_message`]), signing and co-signing
//! ([`Certificate`]), strict parsing of the file, offline verification
//! ([`verify`]), the Merkle commitment to the disposed IDs ([`merkle_root`]),
//! the public key as PEM for OpenSSL ([`public_key_pem`]) and a printable HTML
//! rendering ([`render_html`]). It holds no secret and does no I/O.
//!
//! # What is signed
//!
//! The certificate *body* is a JSON object (layout in [`example_body`]). Every
//! signature is an Ed25519 signature (RFC 8032, checked with `verify_strict`)
//! over the same bytes:
//!
//! ```text
//! message = "pivault-certificate-v1" 0x00 || JCS(body)
//! ```
//!
//! where JCS is the RFC 8785 canonical form. Certificates use only the JSON
//! subset where JCS is simple to reimplement: objects, arrays, strings,
//! booleans, null and integers with |n| <= 2^53-1 (no fractions, no
//! exponents). Object members are sorted by the UTF-16 code units of their
//! names; strings escape `"` `\` and the control characters (`\b \f \n \r \t`,
//! others as `\u00xx` in lower case) and keep every other character as UTF-8;
//! no whitespace is emitted.
//!
//! # File format
//!
//! A certificate file is UTF-8 JSON (pretty-printed by [`Certificate::to_file_json`];
//! whitespace between tokens is not significant) with exactly two members:
//!
//! ```text
//! {
//!   "certificate": { ...the body... },
//!   "signatures": [
//!     { "role": "vault",                    // exactly one; then "contractor",
//!                                           // "operator" or "validator", each at most once
//!       "key_fingerprint": "SHA256:<32 hex>", // "SHA256:" + hex(SHA-256(public key)[..16])
//!       "public_key": "<64 lowercase hex>",   // the raw 32-byte Ed25519 public key
//!       "signature": "<128 lowercase hex>", // the raw 64-byte signature over `message`
//!       "covers": "draft" }                   // optional, co-signatures only: see below
//!   ]
//! }
//! ```
//!
//! [`Certificate::parse`] is strict: unknown or missing members, duplicate
//! object keys, fractional or out-of-range numbers, upper-case hex, a
//! fingerprint that does not match its key, or an unknown or repeated role
//! are errors. The role is not itself signed; it is bound by the vocabulary
//! above and, where the body names a co-signer's key fingerprint
//! (`parties.contractor.key_fingerprint`, `operator.key_fingerprint`,
//! `validator.key_fingerprint`), [`verify`] requires that co-signature.
//!
//! # Co-signatures bound to declared keys (`pivault-certificate/2`)
//!
//! From schema version 2 a co-signature counts only for a role whose key
//! fingerprint the signed body declares, and only with that key: a
//! co-signature in a role the body declares no key for, or by a key whose
//! fingerprint differs, fails [`verify`]. The vault declares the batch
//! contractor's registered key; it declares no operator or validator key
//! (those attest through the vault's signature over their names and user IDs).
//! Version 1 certificates (issued before) still verify; [`VerifyReport::legacy`]
//! says that their co-signatures are not bound to registered keys.
//!
//! Validation (status "draft" → "validated", `validator` filled in) changes
//! the body, so the vault signs it again. A co-signature made on the draft is
//! kept, marked `"covers": "draft"`: it verifies over the message of the
//! *draft form* of the body ([`draft_form`]: `status` set back to "draft" and
//! `validator` to null, nothing else changed), which validation is built to
//! invert exactly ([`Certificate::validated`]).
//!
//! # Verifying without pivault
//!
//! 1. Pin the vault's certificate public key (its fingerprint is in the
//!    contract) and check `certificate.vault.key_fingerprint` against it.
//! 2. Compute `message` as above, write it to `msg.bin`; hex-decode the vault
//!    signature into `sig.bin` (`xxd -r -p`).
//! 3. `openssl pkeyutl -verify -pubin -inkey key.pem -rawin -in msg.bin -sigfile sig.bin`
//!    with the key as SubjectPublicKeyInfo PEM ([`public_key_pem`]).
//! 4. Check the mandatory fields ([`MANDATORY_FIELDS`]).
//!
//! # The ID commitment (REQ-DISP-03)
//!
//! `target.commitment` holds two Merkle roots (algorithm [`MERKLE_ALGORITHM`]),
//! one over the record IDs and one over the data-subject IDs, so that the
//! certificate names its scope without listing anyone: `leaf = SHA-256(0x00 ||
//! id)` for each distinct 16-byte ID, leaves sorted ascending as byte strings,
//! `node = SHA-256(0x01 || left || right)` pairing neighbours left to right, an
//! odd last node promoted unchanged to the next level; the root of no IDs is
//! `SHA-256("")`. [`merkle_proof`] and [`verify_inclusion`] prove that one ID
//! is covered.

use std::fmt::{self, Write as _};

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::de::{self, Deserialize as _};
use serde_json::{Map, Value, json};

use crate::crypto::{fingerprint, sha256};
use crate::error::{Error, Result};

mod document;
mod pdf;

pub use document::{Check, Document, document};

/// The `schema_version` of certificates this module writes and accepts.
pub const SCHEMA_VERSION: &str = "pivault-certificate/2";

/// The schema version of certificates issued before co-signatures were bound
/// to declared keys; still accepted, and reported as legacy by [`verify`].
pub const LEGACY_SCHEMA_VERSION: &str = "pivault-certificate/1";

/// What `outcome_statement` (and `target.classification.after`) must say
/// while a backup still holds the disposed records: the copies are
/// crypto-erased only when the backup's key is destroyed at its expiry.
pub const PENDING_PHRASE: &str = "pending expiry of residual copies";

/// Domain separation prefixed to the canonical body before signing, so that a
/// certificate signature can never be replayed as another kind of signature.
pub const SIGNING_DOMAIN: &[u8] = b"pivault-certificate-v1\0";

/// The value of `target.commitment.algorithm` (see the module documentation).
pub const MERKLE_ALGORITHM: &str = "pivault-merkle-sha256/1";

/// The operator's and the validator's attestation (the wording of NIST SP
/// 800-88 Rev. 1 App. G, which forms still copy; kept by Rev. 2 practice).
pub const ATTESTATION: &str = "I attest that the information provided on this statement is accurate to the best of my knowledge.";

/// The sanitization standard certificates cite (`sanitization.standards`):
/// NIST SP 800-88 Rev. 1 was withdrawn on 2025-09-26 and superseded by Rev. 2.
pub const METHOD_STANDARD: &str =
    "NIST SP 800-88 Rev. 2 (September 2025), Purge: Cryptographic Erase";

/// The technique vocabulary (IEEE 2883-2022 "Standard for Sanitizing
/// Storage": Clear / Purge / Destruct; cryptographic erase is a Purge technique).
pub const TECHNIQUE_VOCABULARY: &str = "IEEE 2883-2022: Purge / Cryptographic Erase";

/// The standard whose sanitization record `sanitization.record` fills in.
pub const RECORD_STANDARD: &str = "ISO/IEC 27040:2024 sanitization record (clause 10; with the documentation fields of NIST SP 800-88 Rev. 2 section 4.6)";

/// What pivault sanitizes, and what it does not, in the standards' words.
pub const SCOPE_STATEMENT: &str = "Method per IEEE 2883-2022 Purge (cryptographic erase) of logical records in the vault datastore; \
     media-level sanitization was not performed (the storage media keep their other contents).";

/// The phrase of M.G.L. c. 93I §2(b) that `outcome_statement` must contain.
pub const OUTCOME_PHRASE: &str = "cannot practicably be read or reconstructed";

/// A suitable `outcome_statement`.
pub const OUTCOME_STATEMENT: &str = "The personal information in the records covered by this certificate \
     was erased by cryptographic erase so that it cannot practicably be read or reconstructed \
     (M.G.L. c. 93I, section 2(b)).";

/// The role of the vault's own signature; every certificate has exactly one.
pub const ROLE_VAULT: &str = "vault";

/// Roles a co-signature may take, each at most once per certificate.
pub const COSIGNER_ROLES: &[&str] = &["contractor", "operator", "validator"];

/// Where the body may name a co-signer's key fingerprint, binding that role.
const DECLARED_COSIGNERS: &[(&str, &str)] = &[
    ("contractor", "parties.contractor.key_fingerprint"),
    ("operator", "operator.key_fingerprint"),
    ("validator", "validator.key_fingerprint"),
];

/// Largest integer magnitude a certificate may hold (I-JSON safe range).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// At most this many signatures in one file (a bound for hostile input).
const MAX_SIGNATURES: usize = 16;

/// Mandatory body fields as dotted paths (REQUIREMENTS §C). `validator` must
/// be present and be an object, or null while the status is "draft"; when the
/// status is "validated" the [`VALIDATOR_FIELDS`] are mandatory as well.
pub const MANDATORY_FIELDS: &[&str] = &[
    "certificate_id",
    "schema_version",
    "issued_at",
    "status",
    "vault.id",
    "vault.key_fingerprint",
    "tool.name",
    "tool.version",
    "parties.data_owner.name",
    "operator.name",
    "operator.user_id",
    "operator.time",
    "operator.attestation",
    "validator",
    "target.description",
    "target.collections",
    "target.record_count",
    "target.subject_count",
    "target.commitment.algorithm",
    "target.commitment.record_root",
    "target.commitment.subject_root",
    "target.classification",
    "target.backups",
    "sanitization.method",
    "sanitization.technique",
    "sanitization.details.cipher",
    "sanitization.details.key_bits",
    "sanitization.details.rng",
    "sanitization.details.key_hierarchy",
    "sanitization.details.keys_destroyed",
    "sanitization.details.epoch_before",
    "sanitization.details.epoch_after",
    "sanitization.details.keystore_purge",
    "sanitization.verification.method",
    "sanitization.verification.result",
    "sanitization.not_covered",
    "sanitization.exclusions",
    "outcome_statement",
    "audit.checkpoint_seq",
    "audit.head_hash",
];

/// Fields mandatory once `status` is "validated" (REQ-CE-06).
pub const VALIDATOR_FIELDS: &[&str] = &[
    "validator.name",
    "validator.user_id",
    "validator.time",
    "validator.attestation",
];

/// Fields mandatory when `parties.contractor` is not null.
pub const CONTRACTOR_FIELDS: &[&str] = &[
    "parties.contractor.name",
    "parties.contractor.contract_reference",
];

// ---------------------------------------------------------------------------
// Canonical JSON (RFC 8785 subset)
// ---------------------------------------------------------------------------

/// RFC 8785 (JCS) canonical form for the JSON subset certificates use:
/// objects (members sorted by the UTF-16 code units of their names), arrays,
/// strings, booleans, null and integers with |n| <= 2^53-1. Any other number
/// is rejected with [`Error::InvalidInput`].
pub fn canonical_json(v: &Value) -> Result<String> {
    let mut out = String::new();
    write_canonical(v, &mut out)?;
    Ok(out)
}

fn write_canonical(v: &Value, out: &mut String) -> Result<()> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            let i = safe_integer(n).ok_or_else(|| {
                Error::invalid(
                    "certificate numbers must be integers with |n| <= 2^53-1 (RFC 8785, I-JSON)",
                )
            })?;
            // Infallible for a String.
            let _ = write!(out, "{i}");
        }
        Value::String(s) => write_canonical_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(Vec<u16>, &String, &Value)> = members
                .iter()
                .map(|(k, v)| (k.encode_utf16().collect(), k, v))
                .collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (_, k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical_string(k, out);
                out.push(':');
                write_canonical(v, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn safe_integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER)
}

fn write_canonical_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The exact bytes every signature covers: [`SIGNING_DOMAIN`] followed by
/// [`canonical_json`] of the body.
pub fn signed_message(body: &Value) -> Result<Vec<u8>> {
    let canonical = canonical_json(body)?;
    let mut msg = Vec::with_capacity(SIGNING_DOMAIN.len() + canonical.len());
    msg.extend_from_slice(SIGNING_DOMAIN);
    msg.extend_from_slice(canonical.as_bytes());
    Ok(msg)
}

/// The certificate body a [`signed_message`] carries, when `msg` is
/// exactly one: [`SIGNING_DOMAIN`], then the canonical JSON of an object
/// (parsed strictly and written back byte for byte). What a contractor's
/// offline signer checks before signing bytes handed to it, so that the
/// key signs a certificate and nothing else.
pub fn body_of_message(msg: &[u8]) -> Result<Value> {
    let bad = || {
        Error::invalid(
            "not a pivault certificate payload (pivault certificate payload, or the web page's download)",
        )
    };
    let rest = msg.strip_prefix(SIGNING_DOMAIN).ok_or_else(bad)?;
    let text = std::str::from_utf8(rest).map_err(|_| bad())?;
    let body = parse_strict_json(text).map_err(|_| bad())?;
    if !body.is_object() || canonical_json(&body)? != text {
        return Err(bad());
    }
    Ok(body)
}

// ---------------------------------------------------------------------------
// Certificate and signatures
// ---------------------------------------------------------------------------

/// One signature over [`signed_message`] of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSignature {
    /// "vault", or a co-signer role from [`COSIGNER_ROLES`].
    pub role: String,
    /// [`crate::crypto::fingerprint`] of the public key bytes.
    pub key_fingerprint: String,
    /// The 32-byte Ed25519 public key, lowercase hex.
    pub public_key: String,
    /// The 64-byte Ed25519 signature, lowercase hex.
    pub signature: String,
    /// The co-signature was made on the draft, before validation: it covers
    /// the message of [`draft_form`] of the body (member `"covers": "draft"`).
    pub covers_draft: bool,
}

impl CertSignature {
    fn new(role: &str, key: &VerifyingKey, signature: &Signature) -> Self {
        CertSignature {
            role: role.to_owned(),
            key_fingerprint: fingerprint(key.as_bytes()),
            public_key: hex::encode(key.as_bytes()),
            signature: hex::encode(signature.to_bytes()),
            covers_draft: false,
        }
    }

    /// The public key, if it is well-formed lowercase hex of a valid, non-weak point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        let bytes = strict_hex::<32>(&self.public_key)?;
        VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|k| !k.is_weak())
    }

    /// The raw 64 signature bytes (what OpenSSL's `-sigfile` wants).
    pub fn signature_bytes(&self) -> Option<[u8; 64]> {
        strict_hex::<64>(&self.signature)
    }

    /// Whether this signature is internally consistent and valid over `msg`.
    fn valid_over(&self, msg: &[u8]) -> bool {
        let (Some(key), Some(sig)) = (self.verifying_key(), self.signature_bytes()) else {
            return false;
        };
        self.key_fingerprint == fingerprint(key.as_bytes())
            && key.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok()
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "role": self.role,
            "key_fingerprint": self.key_fingerprint,
            "public_key": self.public_key,
            "signature": self.signature,
        });
        if self.covers_draft {
            v["covers"] = json!("draft");
        }
        v
    }
}

/// A certificate of destruction: the body and its signatures.
#[derive(Debug, Clone, PartialEq)]
pub struct Certificate {
    /// The signed body (layout in [`example_body`]).
    pub body: Value,
    /// The vault's signature first, then any co-signatures.
    pub signatures: Vec<CertSignature>,
}

impl Certificate {
    /// Signs `body` with the vault certificate key (role "vault").
    ///
    /// `vault.key_fingerprint` is set to the fingerprint of `vault_key` (the
    /// only value that can verify); then the mandatory fields are checked
    /// ([`check_fields`]) and any problem is an [`Error::InvalidInput`]
    /// naming the fields. A body whose verification result is not "PASS"
    /// is refused (REQ-CE-05), as is one whose validator is the operator
    /// (REQ-CE-06).
    pub fn sign(mut body: Value, vault_key: &SigningKey) -> Result<Certificate> {
        let public = vault_key.verifying_key();
        let fp = Value::String(fingerprint(public.as_bytes()));
        let Some(top) = body.as_object_mut() else {
            return Err(Error::invalid("certificate body must be a JSON object"));
        };
        match top.get_mut("vault") {
            Some(Value::Object(vault)) => {
                vault.insert("key_fingerprint".into(), fp);
            }
            None | Some(Value::Null) => {
                top.insert("vault".into(), json!({ "key_fingerprint": fp }));
            }
            Some(_) => {} // reported by check_fields
        }
        let problems = check_fields(&body);
        if !problems.is_empty() {
            return Err(Error::invalid(format!(
                "certificate has missing or invalid mandatory fields: {}",
                problems.join(", ")
            )));
        }
        let msg = signed_message(&body)?;
        let sig = vault_key.sign(&msg);
        Ok(Certificate {
            body,
            signatures: vec![CertSignature::new(ROLE_VAULT, &public, &sig)],
        })
    }

    /// Adds a co-signature by `key` (e.g. the disposal contractor's own key)
    /// over the same message. `role` must be one of [`COSIGNER_ROLES`] and not
    /// already present; if the body names a key fingerprint for the role,
    /// `key` must match it.
    pub fn cosign(&mut self, role: &str, key: &SigningKey) -> Result<()> {
        let public = key.verifying_key();
        self.check_new_cosigner(role, &public)?;
        let msg = self.message()?;
        let sig = key.sign(&msg);
        self.signatures
            .push(CertSignature::new(role, &public, &sig));
        Ok(())
    }

    /// Adds a co-signature computed elsewhere (for example on the
    /// contractor's own machine, over [`Certificate::message`]), after
    /// verifying it. Same role rules as [`Certificate::cosign`].
    pub fn add_detached(
        &mut self,
        role: &str,
        public_key: &VerifyingKey,
        signature: &[u8; 64],
    ) -> Result<()> {
        self.check_new_cosigner(role, public_key)?;
        let msg = self.message()?;
        public_key
            .verify_strict(&msg, &Signature::from_bytes(signature))
            .map_err(|_| {
                Error::invalid("the detached co-signature does not verify over this certificate")
            })?;
        self.signatures.push(CertSignature::new(
            role,
            public_key,
            &Signature::from_bytes(signature),
        ));
        Ok(())
    }

    fn check_new_cosigner(&self, role: &str, key: &VerifyingKey) -> Result<()> {
        if !COSIGNER_ROLES.contains(&role) {
            return Err(Error::invalid(
                "co-signature role must be contractor, operator or validator",
            ));
        }
        if self.signatures.iter().any(|s| s.role == role) {
            return Err(Error::invalid(
                "the certificate already has a co-signature in this role",
            ));
        }
        if key.is_weak() {
            return Err(Error::invalid(
                "co-signature public key is weak (small order)",
            ));
        }
        match declared_fingerprint(&self.body, role) {
            Some(declared) if declared != fingerprint(key.as_bytes()) => Err(Error::invalid(
                "co-signing key does not match the key fingerprint the certificate names for this role",
            )),
            None if binds_cosigners(&self.body) => Err(Error::invalid(
                "the certificate names no key for this role, so no co-signature in it can count \
                 (only a key registered before the disposal and declared in the certificate may co-sign)",
            )),
            _ => Ok(()),
        }
    }

    /// The validated certificate: `status` "validated", `validator` set,
    /// signed again by the vault, with every co-signature made on the draft
    /// kept (marked as covering the draft form, under which it still
    /// verifies). Refused unless this is a draft with a null validator, so
    /// that [`draft_form`] of the result is exactly this body.
    pub fn validated(&self, validator: Value, vault_key: &SigningKey) -> Result<Certificate> {
        if self.status() != Some("draft")
            || !at(&self.body, "validator").is_some_and(Value::is_null)
        {
            return Err(Error::AlreadyExists("validation"));
        }
        if !validator.is_object() {
            return Err(Error::invalid("the validator must be an object"));
        }
        let msg = self.message()?;
        let mut body = self.body.clone();
        body["status"] = json!("validated");
        body["validator"] = validator;
        let mut out = Certificate::sign(body, vault_key)?;
        debug_assert_eq!(draft_form(&out.body).as_ref(), Some(&self.body));
        for s in self.signatures.iter().filter(|s| s.role != ROLE_VAULT) {
            if s.covers_draft || !s.valid_over(&msg) {
                return Err(Error::Integrity("certificate co-signature"));
            }
            out.signatures.push(CertSignature {
                covers_draft: true,
                ..s.clone()
            });
        }
        Ok(out)
    }

    /// The bytes every signature covers ([`signed_message`] of the body).
    pub fn message(&self) -> Result<Vec<u8>> {
        signed_message(&self.body)
    }

    /// The signature in `role`, if any.
    pub fn signature(&self, role: &str) -> Option<&CertSignature> {
        self.signatures.iter().find(|s| s.role == role)
    }

    /// `certificate_id` of the body.
    pub fn id(&self) -> Option<&str> {
        self.body.get("certificate_id").and_then(Value::as_str)
    }

    /// `status` of the body ("draft" or "validated").
    pub fn status(&self) -> Option<&str> {
        self.body.get("status").and_then(Value::as_str)
    }

    /// The file form: pretty JSON `{"certificate": body, "signatures": [...]}`
    /// with a final newline (see the module documentation).
    pub fn to_file_json(&self) -> String {
        let doc = json!({
            "certificate": self.body,
            "signatures": self.signatures.iter().map(CertSignature::to_json).collect::<Vec<_>>(),
        });
        let mut text =
            serde_json::to_string_pretty(&doc).expect("a serde_json::Value always serializes");
        text.push('\n');
        text
    }

    /// Parses the file form strictly (see the module documentation). Never
    /// panics; every malformed input is an [`Error::InvalidInput`]. Parsing
    /// does not verify signatures: use [`verify`].
    pub fn parse(text: &str) -> Result<Certificate> {
        let bad = |what: &str| Error::invalid(format!("certificate file: {what}"));
        let Value::Object(mut top) = parse_strict_json(text)? else {
            return Err(bad("not a JSON object"));
        };
        if top.keys().any(|k| k != "certificate" && k != "signatures") {
            return Err(bad(
                "unknown top-level member (expected only \"certificate\" and \"signatures\")",
            ));
        }
        let body = match top.remove("certificate") {
            Some(b @ Value::Object(_)) => b,
            Some(_) => return Err(bad("\"certificate\" is not an object")),
            None => return Err(bad("\"certificate\" is missing")),
        };
        let raw_sigs = match top.remove("signatures") {
            Some(Value::Array(a)) => a,
            Some(_) => return Err(bad("\"signatures\" is not an array")),
            None => return Err(bad("\"signatures\" is missing")),
        };
        if raw_sigs.is_empty() || raw_sigs.len() > MAX_SIGNATURES {
            return Err(bad("\"signatures\" must hold between 1 and 16 signatures"));
        }
        let mut signatures = Vec::with_capacity(raw_sigs.len());
        for raw in raw_sigs {
            let sig = parse_signature(raw).map_err(bad)?;
            if signatures
                .iter()
                .any(|s: &CertSignature| s.role == sig.role)
            {
                return Err(bad("a signature role appears twice"));
            }
            signatures.push(sig);
        }
        if !signatures.iter().any(|s| s.role == ROLE_VAULT) {
            return Err(bad("no vault signature"));
        }
        // The body must be signable (it is, given the strict parser, but the
        // check keeps this function the single gate).
        canonical_json(&body)?;
        Ok(Certificate { body, signatures })
    }
}

fn parse_signature(raw: Value) -> std::result::Result<CertSignature, &'static str> {
    let Value::Object(mut m) = raw else {
        return Err("a signature is not an object");
    };
    let mut take = |k: &str| match m.remove(k) {
        Some(Value::String(s)) => Ok(s),
        _ => Err("a signature lacks one of role, key_fingerprint, public_key, signature (strings)"),
    };
    let mut sig = CertSignature {
        role: take("role")?,
        key_fingerprint: take("key_fingerprint")?,
        public_key: take("public_key")?,
        signature: take("signature")?,
        covers_draft: false,
    };
    match m.remove("covers") {
        None => {}
        Some(Value::String(c)) if c == "draft" && sig.role != ROLE_VAULT => sig.covers_draft = true,
        Some(_) => return Err("a signature's \"covers\" is not \"draft\" on a co-signature"),
    }
    if !m.is_empty() {
        return Err("a signature has an unknown member");
    }
    if sig.role != ROLE_VAULT && !COSIGNER_ROLES.contains(&sig.role.as_str()) {
        return Err("a signature has an unknown role");
    }
    let Some(key) = strict_hex::<32>(&sig.public_key) else {
        return Err("a public key is not 64 lowercase hex digits");
    };
    match VerifyingKey::from_bytes(&key) {
        Ok(k) if !k.is_weak() => {}
        _ => return Err("a public key is not a valid Ed25519 key"),
    }
    if sig.key_fingerprint != fingerprint(&key) {
        return Err("a key fingerprint does not match its public key");
    }
    if sig.signature_bytes().is_none() {
        return Err("a signature is not 128 lowercase hex digits");
    }
    Ok(sig)
}

/// Lowercase hex of exactly N bytes; anything else (upper case included, so
/// that each signature has one spelling) is None.
fn strict_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

fn declared_fingerprint<'a>(body: &'a Value, role: &str) -> Option<&'a str> {
    DECLARED_COSIGNERS
        .iter()
        .find(|(r, _)| *r == role)
        .and_then(|(_, path)| at(body, path))
        .and_then(Value::as_str)
}

/// Whether the body binds co-signatures to declared keys (schema version 2
/// on): a co-signature in a role with no declared key does not count.
pub fn binds_cosigners(body: &Value) -> bool {
    str_at(body, "schema_version") != Some(LEGACY_SCHEMA_VERSION)
}

/// The body as it was before validation: `status` "draft" and `validator`
/// null, nothing else changed. `None` unless the body is validated. A
/// co-signature marked `"covers": "draft"` is checked over this body's
/// message; validation ([`Certificate::validated`]) changes only these two
/// members, so the draft form of a validated certificate is its draft.
pub fn draft_form(body: &Value) -> Option<Value> {
    if str_at(body, "status") != Some("validated") {
        return None;
    }
    let mut draft = body.clone();
    draft["status"] = json!("draft");
    draft["validator"] = Value::Null;
    Some(draft)
}

// ---------------------------------------------------------------------------
// Strict JSON reading: duplicate keys and non-integers are errors
// ---------------------------------------------------------------------------

/// A JSON value read strictly: serde_json's own `Value` silently keeps the
/// last of duplicate keys, which would let a file show one thing and verify
/// another.
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(E::custom("integer outside the range |n| <= 2^53-1"));
        }
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(E::custom("integer outside the range |n| <= 2^53-1"));
        }
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<Value, E> {
        Err(E::custom(
            "numbers must be integers (no fraction, exponent or -0)",
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(de::Error::custom("duplicate object member name"));
            }
            let Strict(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

fn parse_strict_json(text: &str) -> Result<Value> {
    // serde_json bounds nesting (128 levels), so hostile input cannot
    // exhaust the stack; its messages give positions, never values.
    let mut de = serde_json::Deserializer::from_str(text);
    let Strict(value) = Strict::deserialize(&mut de)
        .map_err(|e| Error::invalid(format!("certificate file is not acceptable JSON: {e}")))?;
    de.end()
        .map_err(|e| Error::invalid(format!("certificate file has trailing data: {e}")))?;
    Ok(value)
}

// ---------------------------------------------------------------------------
// Mandatory fields
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Kind {
    /// A non-empty string.
    Str,
    /// A non-negative integer.
    Int,
    /// An array (may be empty).
    Arr,
    /// An object.
    Obj,
    /// An RFC 3339 time.
    Time,
    /// 32 bytes as 64 lowercase hex digits.
    Hash,
    /// An object or null.
    ObjOrNull,
}

fn kind_of(path: &str) -> Kind {
    match path {
        "issued_at" | "operator.time" | "validator.time" => Kind::Time,
        "target.record_count"
        | "target.subject_count"
        | "sanitization.details.key_bits"
        | "sanitization.details.epoch_before"
        | "sanitization.details.epoch_after"
        | "audit.checkpoint_seq" => Kind::Int,
        "target.collections"
        | "sanitization.details.keys_destroyed"
        | "sanitization.not_covered"
        | "sanitization.exclusions" => Kind::Arr,
        "target.classification" | "target.backups" | "sanitization.details.keystore_purge" => {
            Kind::Obj
        }
        "target.commitment.record_root" | "target.commitment.subject_root" | "audit.head_hash" => {
            Kind::Hash
        }
        "validator" | "parties.contractor" => Kind::ObjOrNull,
        _ => Kind::Str,
    }
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.as_str().is_some_and(|s| !s.trim().is_empty()),
        Kind::Int => v.as_u64().is_some_and(|n| n <= MAX_SAFE_INTEGER),
        Kind::Arr => v.is_array(),
        Kind::Obj => v.is_object(),
        Kind::Time => v
            .as_str()
            .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok()),
        Kind::Hash => v.as_str().is_some_and(|s| strict_hex::<32>(s).is_some()),
        Kind::ObjOrNull => v.is_object() || v.is_null(),
    }
}

/// The value at a dotted path.
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, key| cur.get(key))
}

fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

/// The mandatory fields of `body` that are missing or invalid. A missing or
/// ill-typed field is reported as its dotted path (e.g. `"operator.user_id"`);
/// a present field with a wrong value as the path and the rule, e.g.
/// `"validator.user_id (must differ from operator)"` or
/// `"sanitization.verification.result (must be \"PASS\")"`. Empty means the
/// body is complete.
pub fn check_fields(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let require = |path: &str, out: &mut Vec<String>| {
        if !at(body, path).is_some_and(|v| kind_ok(kind_of(path), v)) {
            out.push(path.to_owned());
        }
    };
    for path in MANDATORY_FIELDS {
        require(path, &mut out);
    }
    let validated = str_at(body, "status") == Some("validated");
    if validated {
        if !at(body, "validator").is_some_and(Value::is_object)
            && !out.iter().any(|p| p == "validator")
        {
            out.push("validator".into());
        }
        for path in VALIDATOR_FIELDS {
            require(path, &mut out);
        }
    }
    match at(body, "parties.contractor") {
        None | Some(Value::Null) => {}
        Some(Value::Object(_)) => {
            for path in CONTRACTOR_FIELDS {
                require(path, &mut out);
            }
        }
        Some(_) => out.push("parties.contractor".into()),
    }

    let mut rule = |path: &str, ok: bool, why: &str| {
        if !ok {
            out.push(format!("{path} ({why})"));
        }
    };
    let value_is = |path: &str, want: &str| str_at(body, path).is_none_or(|s| s == want);
    rule(
        "schema_version",
        value_is("schema_version", SCHEMA_VERSION)
            || value_is("schema_version", LEGACY_SCHEMA_VERSION),
        "must be \"pivault-certificate/2\" (or /1 for certificates issued before co-signatures were bound)",
    );
    rule(
        "status",
        str_at(body, "status").is_none_or(|s| s == "draft" || s == "validated"),
        "must be \"draft\" or \"validated\"",
    );
    rule(
        "sanitization.method",
        value_is("sanitization.method", "Purge"),
        "must be \"Purge\"",
    );
    rule(
        "sanitization.technique",
        value_is("sanitization.technique", "Cryptographic Erase"),
        "must be \"Cryptographic Erase\"",
    );
    rule(
        "sanitization.verification.result",
        value_is("sanitization.verification.result", "PASS"),
        "must be \"PASS\"",
    );
    rule(
        "target.commitment.algorithm",
        value_is("target.commitment.algorithm", MERKLE_ALGORITHM),
        "must be \"pivault-merkle-sha256/1\"",
    );
    rule(
        "outcome_statement",
        str_at(body, "outcome_statement").is_none_or(|s| s.contains(OUTCOME_PHRASE)),
        "must state that the information cannot practicably be read or reconstructed",
    );
    // A backup still holding the records makes the outcome pending: the
    // certificate may not claim more than the vault did.
    let holding = at(body, "target.backups.copies")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|b| b.get("holds_records") == Some(&Value::Bool(true)))
        });
    if holding {
        rule(
            "outcome_statement",
            str_at(body, "outcome_statement").is_some_and(|s| s.contains(PENDING_PHRASE)),
            "must say \"pending expiry of residual copies\" while a backup holds the records",
        );
        rule(
            "target.classification.after",
            str_at(body, "target.classification.after").is_none_or(|s| s.contains(PENDING_PHRASE)),
            "must say \"pending expiry of residual copies\" while a backup holds the records",
        );
    }
    let epochs = (
        at(body, "sanitization.details.epoch_before").and_then(Value::as_u64),
        at(body, "sanitization.details.epoch_after").and_then(Value::as_u64),
    );
    if let (Some(before), Some(after)) = epochs {
        rule(
            "sanitization.details.epoch_after",
            after > before,
            "must exceed epoch_before",
        );
    }
    if let (Some(op), Some(val)) = (
        str_at(body, "operator.user_id"),
        str_at(body, "validator.user_id"),
    ) {
        rule("validator.user_id", op != val, "must differ from operator");
    }
    for (_, path) in DECLARED_COSIGNERS {
        if let Some(v) = at(body, path) {
            rule(
                path,
                v.as_str().is_some_and(|s| s.starts_with("SHA256:")),
                "must be a key fingerprint",
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Exactly one vault signature, by the given key, valid over the body.
    pub vault_signature_ok: bool,
    /// Each co-signature as (role, key fingerprint, valid). A co-signer whose
    /// key fingerprint the body names but who did not sign appears as invalid.
    pub cosignatures: Vec<(String, String, bool)>,
    /// No mandatory field missing or invalid.
    pub fields_ok: bool,
    /// What [`check_fields`] reports, plus `vault.key_fingerprint` when it
    /// is not the fingerprint of the verifying key.
    pub missing_fields: Vec<String>,
    /// The body's `status` ("draft" or "validated"; empty if absent).
    pub status: String,
    /// Fingerprint of the key the certificate was checked against.
    pub vault_key_fingerprint: String,
    /// A `pivault-certificate/1` body: its co-signatures are checked but are
    /// not bound to registered keys unless the body names one.
    pub legacy: bool,
    /// Why each failing co-signature fails, and how each passing one was
    /// checked when that is worth saying (e.g. made on the draft), as
    /// `"<role>: <reason>"`; never a value from outside the certificate.
    pub cosignature_notes: Vec<String>,
}

impl VerifyReport {
    /// The vault signature verifies, every co-signature verifies, and every
    /// mandatory field is present. A valid draft is `ok`: show its status.
    pub fn ok(&self) -> bool {
        self.vault_signature_ok && self.cosignatures.iter().all(|c| c.2) && self.fields_ok
    }
}

/// Offline verification with only the vault's certificate public key. Any
/// change to the body's content, a signature or a key makes it fail.
pub fn verify(cert: &Certificate, vault_key: &VerifyingKey) -> VerifyReport {
    let msg = cert.message().ok();
    let vault_fp = fingerprint(vault_key.as_bytes());
    let valid = |s: &CertSignature| msg.as_deref().is_some_and(|m| s.valid_over(m));

    let vault_sigs: Vec<&CertSignature> = cert
        .signatures
        .iter()
        .filter(|s| s.role == ROLE_VAULT)
        .collect();
    let vault_signature_ok = matches!(vault_sigs.as_slice(), [s]
        if !vault_key.is_weak() && s.public_key == hex::encode(vault_key.as_bytes()) && valid(s));

    let draft_msg = draft_form(&cert.body).and_then(|d| signed_message(&d).ok());
    let bound = binds_cosigners(&cert.body);
    let mut cosignatures = Vec::new();
    let mut notes = Vec::new();
    for (i, s) in cert.signatures.iter().enumerate() {
        if s.role == ROLE_VAULT {
            continue;
        }
        let known_role = COSIGNER_ROLES.contains(&s.role.as_str());
        let first_of_role = cert.signatures.iter().position(|o| o.role == s.role) == Some(i);
        let declared = declared_fingerprint(&cert.body, &s.role);
        let signed = if s.covers_draft {
            draft_msg.as_deref().is_some_and(|m| s.valid_over(m))
        } else {
            valid(s)
        };
        let problem = if !known_role || !first_of_role {
            Some("unknown or repeated role")
        } else if declared.is_none() && bound {
            Some(
                "the certificate declares no key for this role: the co-signing key is not a registered one",
            )
        } else if declared.is_some_and(|d| d != s.key_fingerprint) {
            Some("the co-signing key differs from the key the certificate declares for this role")
        } else if !signed {
            Some(if s.covers_draft && draft_msg.is_none() {
                "marked as made on the draft, but the certificate is not validated"
            } else {
                "the signature does not verify"
            })
        } else {
            None
        };
        match problem {
            Some(why) => notes.push(format!("{}: {why}", s.role)),
            None if s.covers_draft => notes.push(format!(
                "{}: made on the draft, before validation (verified over the draft form of the body)",
                s.role
            )),
            None => {}
        }
        cosignatures.push((s.role.clone(), s.key_fingerprint.clone(), problem.is_none()));
    }
    for (role, path) in DECLARED_COSIGNERS {
        if let Some(declared) = str_at(&cert.body, path)
            && !cert.signatures.iter().any(|s| s.role == *role)
        {
            notes.push(format!(
                "{role}: declared in the certificate but not signed yet"
            ));
            cosignatures.push(((*role).to_owned(), declared.to_owned(), false));
        }
    }

    let mut missing_fields = check_fields(&cert.body);
    if str_at(&cert.body, "vault.key_fingerprint").is_some_and(|f| f != vault_fp) {
        missing_fields.push("vault.key_fingerprint (does not match the verifying key)".into());
    }
    VerifyReport {
        vault_signature_ok,
        cosignatures,
        fields_ok: missing_fields.is_empty(),
        missing_fields,
        status: str_at(&cert.body, "status").unwrap_or_default().to_owned(),
        vault_key_fingerprint: vault_fp,
        legacy: !bound,
        cosignature_notes: notes,
    }
}

// ---------------------------------------------------------------------------
// Example body
// ---------------------------------------------------------------------------

/// Record IDs the [`example_body`] commits to.
fn example_record_ids() -> Vec<[u8; 16]> {
    (1u8..=3).map(|i| example_id(0x10 + i)).collect()
}

/// Subject IDs the [`example_body`] commits to.
fn example_subject_ids() -> Vec<[u8; 16]> {
    (1u8..=2).map(|i| example_id(0x20 + i)).collect()
}

fn example_id(tag: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..6].copy_from_slice(&[0x01, 0x9b, 0x8f, 0x2a, 0x40, 0x00]);
    id[6] = 0x70; // UUID version 7
    id[8] = 0x80; // RFC 4122 variant
    id[15] = tag;
    id
}

fn uuid_text(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).to_string()
}

/// A complete, valid certificate body with placeholder values: the reference
/// layout of the body, used by tests and documentation. Fields beyond
/// [`MANDATORY_FIELDS`] (titles, organisations, addresses, `tool.build`,
/// `sanitization.post_classification`, `sanitization.notes`) are optional.
pub fn example_body() -> Value {
    let records = example_record_ids();
    let subjects = example_subject_ids();
    let keys_destroyed: Vec<Value> = records
        .iter()
        .map(|r| json!({ "key": "record data key", "record_id": uuid_text(r), "key_version": 1 }))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "certificate_id": uuid_text(&example_id(0x01)),
        "issued_at": "2026-03-02T15:04:05Z",
        "status": "validated",
        "vault": {
            "id": uuid_text(&example_id(0x02)),
            "key_fingerprint": "SHA256:00000000000000000000000000000000",
        },
        "tool": { "name": "pivault", "version": env!("CARGO_PKG_VERSION"), "build": "example" },
        "parties": {
            "data_owner": { "name": "Example Retail LLC", "address": "1 Example Street, Boston, MA 02108" },
            "contractor": null,
        },
        "operator": {
            "name": "Alex Operator",
            "title": "Records Manager",
            "organization": "Example Retail LLC",
            "user_id": uuid_text(&example_id(0x31)),
            "time": "2026-03-02T15:00:00Z",
            "attestation": ATTESTATION,
        },
        "validator": {
            "name": "Sam Validator",
            "title": "Information Security Officer",
            "organization": "Example Retail LLC",
            "user_id": uuid_text(&example_id(0x32)),
            "time": "2026-03-02T15:04:00Z",
            "attestation": ATTESTATION,
        },
        "target": {
            "description": "encrypted logical records in the vault datastore",
            "collections": ["customers"],
            "record_count": records.len(),
            "subject_count": subjects.len(),
            "commitment": {
                "algorithm": MERKLE_ALGORITHM,
                "record_root": hex::encode(merkle_root(&records)),
                "subject_root": hex::encode(merkle_root(&subjects)),
            },
            "classification": {
                "ma_personal_information": true,
                "element_types": ["name", "ssn", "card_number"],
            },
            "backups": {
                "exist": true,
                "where": ["offsite backup set (record ciphertexts and wrapped keys, never the header)"],
                "expiry": "2026-04-01T00:00:00Z",
            },
        },
        "sanitization": {
            "method": "Purge",
            "technique": "Cryptographic Erase",
            "details": {
                "cipher": "AES-256-GCM",
                "key_bits": 256,
                "rng": "operating-system CSPRNG (getrandom)",
                "key_hierarchy": "passphrase -Argon2id-> unlock key > epoch root key > bucket key > per-record data key",
                "keys_destroyed": keys_destroyed,
                "epoch_before": 7,
                "epoch_after": 8,
                "keystore_purge": {
                    "buckets_rotated": 2,
                    "column_families_flushed": true,
                    "bottommost_compaction": "force",
                    "tombstones_left": 0,
                    "files_outside_live_set": 0,
                    "files_scanned": 6,
                    "wrapped_key_matches": 0,
                },
            },
            "verification": {
                "method": "each record reads as disposed; no key path from the live header reaches its data key; \
                           byte scan of every keystore file for the pre-disposal wrapped key bytes",
                "result": "PASS",
            },
            "post_classification": "ciphertext without any reachable key; no personal information readable",
            "not_covered": [
                "copies of the vault header made before the disposal",
                "storage media that retain overwritten blocks (SSD, copy-on-write file systems)",
                "exports already delivered",
            ],
            "exclusions": [
                { "record_id": uuid_text(&example_id(0x19)), "reason": "legal hold" },
            ],
            "notes": "",
        },
        "outcome_statement": OUTCOME_STATEMENT,
        "audit": {
            "checkpoint_seq": 1024,
            "head_hash": hex::encode(sha256(b"example audit head")),
        },
    })
}

// ---------------------------------------------------------------------------
// Public key as PEM
// ---------------------------------------------------------------------------

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) }, then 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PEM_BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
const PEM_END: &str = "-----END PUBLIC KEY-----";

/// The key as SubjectPublicKeyInfo PEM, as OpenSSL reads it with `-pubin`.
pub fn public_key_pem(k: &VerifyingKey) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(k.as_bytes());
    format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", base64_encode(&der))
}

/// Reads a certificate public key: the PEM of [`public_key_pem`], or 64 hex
/// digits. Invalid and weak (small-order) keys are refused.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey> {
    let bad = || {
        Error::invalid("not an Ed25519 public key (expected PEM \"PUBLIC KEY\" or 64 hex digits)")
    };
    let text = text.trim();
    let bytes: [u8; 32] = if let Some(rest) = text.strip_prefix(PEM_BEGIN) {
        let rest = rest.strip_suffix(PEM_END).ok_or_else(bad)?;
        let b64: String = rest.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = base64_decode(&b64).ok_or_else(bad)?;
        let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..]).ok_or_else(bad)?;
        key.try_into().map_err(|_| bad())?
    } else {
        let mut out = [0u8; 32];
        if text.len() != 64 {
            return Err(bad());
        }
        hex::decode_to_slice(text, &mut out).map_err(|_| bad())?;
        out
    };
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
    if key.is_weak() {
        return Err(Error::invalid(
            "the public key is weak (small order) and cannot be trusted",
        ));
    }
    Ok(key)
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Strict standard base64 with padding: anything that does not re-encode to
/// the same text is refused.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64.iter().position(|&x| x == c)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    (base64_encode(&out) == text).then_some(out)
}

// ---------------------------------------------------------------------------
// HTML rendering
// ---------------------------------------------------------------------------

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A member name as a label: "record_count" -> "Record count".
fn label(key: &str) -> String {
    let spaced = key.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => esc(&(first.to_uppercase().collect::<String>() + chars.as_str())),
        None => String::new(),
    }
}

pub(crate) fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "<em>none</em>".into(),
        Value::Bool(b) => (if *b { "yes" } else { "no" }).into(),
        Value::Number(n) => esc(&n.to_string()),
        Value::String(s) if s.is_empty() => "<em>none</em>".into(),
        Value::String(s) => esc(s),
        Value::Array(items) if items.is_empty() => "<em>none</em>".into(),
        Value::Array(items) => {
            let mut out = String::from("<ul>");
            for item in items {
                let _ = write!(out, "<li>{}</li>", render_value(item));
            }
            out.push_str("</ul>");
            out
        }
        Value::Object(m) if m.is_empty() => "<em>none</em>".into(),
        Value::Object(m) => {
            let mut out = String::from("<table>");
            for (k, v) in m {
                let _ = write!(
                    out,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    label(k),
                    render_value(v)
                );
            }
            out.push_str("</table>");
            out
        }
    }
}

pub(crate) const CSS: &str = "\
body{font-family:Georgia,'Times New Roman',serif;color:#000;background:#fff;max-width:52rem;margin:2rem auto;padding:0 1rem;line-height:1.35}
h1{font-size:1.6rem;margin:0 0 .2rem}h2{font-size:1.1rem;border-bottom:2px solid #000;margin:1.4rem 0 .5rem;break-after:avoid}
.sub{margin:0 0 1rem;color:#333}section{break-inside:avoid}
table{border-collapse:collapse;width:100%;margin:.2rem 0}th,td{border:1px solid #888;padding:.25rem .45rem;text-align:left;vertical-align:top}
th{width:28%;background:#f0f0f0;font-weight:600}td table th{width:35%}ul{margin:0;padding-left:1.1rem}
code,.mono{font-family:'DejaVu Sans Mono',Consolas,monospace;font-size:.85em;word-break:break-all}
.status{display:inline-block;padding:.15rem .6rem;border:2px solid #000;font-weight:700;letter-spacing:.05em}
.draft{border-color:#b00000;color:#b00000}.statement{font-size:1.05rem;border:2px solid #000;padding:.6rem .8rem}
.sig{height:2.2rem;border-bottom:1px solid #000;width:60%}.note{font-size:.9rem}
@media print{body{margin:0;max-width:none}a{color:#000;text-decoration:none}}
";

/// The certificate as the printable page a business files: page 1 the
/// verdict (checked here with `check`), who, what, when, how, the
/// signatures and how to check them; the per-record list and the storage
/// details in an appendix on the following pages ([`document`]). Self-
/// contained (no script, no external resource); every value HTML-escaped.
/// The page is a rendering, not a proof: it says so.
pub fn render_html(cert: &Certificate, check: Check<'_>) -> String {
    document::html(&document(cert, check))
}

/// The same document as a PDF ([`pdf`]), with the certificate file
/// ([`Certificate::to_file_json`]) attached inside it as
/// `certificate-<id>.json`, so that the one file carries its own proof.
pub fn render_pdf(cert: &Certificate, check: Check<'_>) -> Vec<u8> {
    let doc = document(cert, check);
    pdf::write(
        &doc,
        cert.to_file_json().as_bytes(),
        str_at(&cert.body, "issued_at").unwrap_or_default(),
    )
}

// ---------------------------------------------------------------------------
// Merkle commitment to IDs (REQ-DISP-03)
// ---------------------------------------------------------------------------

fn leaf_hash(id: &[u8; 16]) -> [u8; 32] {
    let mut buf = [0u8; 17];
    buf[1..].copy_from_slice(id);
    sha256(&buf)
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

fn sorted_leaves(ids: &[[u8; 16]]) -> Vec<[u8; 32]> {
    let mut leaves: Vec<[u8; 32]> = ids.iter().map(leaf_hash).collect();
    leaves.sort_unstable();
    leaves.dedup();
    leaves
}

fn next_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node_hash(l, r),
            [odd] => *odd,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// Merkle root over the distinct IDs (see the module documentation). Order
/// and repetition of `ids` do not matter.
pub fn merkle_root(ids: &[[u8; 16]]) -> [u8; 32] {
    let mut level = sorted_leaves(ids);
    if level.is_empty() {
        return sha256(b"");
    }
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// A proof that one ID is under a [`merkle_root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Position of the ID's leaf among the sorted leaves (informational).
    pub leaf_index: usize,
    /// From the leaf up: (the sibling is on the left, sibling hash). Levels
    /// where the node was promoted have no entry.
    pub siblings: Vec<(bool, [u8; 32])>,
}

impl InclusionProof {
    /// JSON form: `{"leaf_index": n, "siblings": [{"side": "left"|"right", "hash": hex}]}`.
    pub fn to_json(&self) -> Value {
        let siblings: Vec<Value> = self
            .siblings
            .iter()
            .map(|(left, h)| json!({ "side": if *left { "left" } else { "right" }, "hash": hex::encode(h) }))
            .collect();
        json!({ "leaf_index": self.leaf_index, "siblings": siblings })
    }

    /// Reads the form of [`InclusionProof::to_json`].
    pub fn from_json(v: &Value) -> Result<InclusionProof> {
        let bad = || Error::invalid("not an inclusion proof");
        let leaf_index = v
            .get("leaf_index")
            .and_then(Value::as_u64)
            .ok_or_else(bad)?;
        let mut siblings = Vec::new();
        for s in v
            .get("siblings")
            .and_then(Value::as_array)
            .ok_or_else(bad)?
        {
            let left = match s.get("side").and_then(Value::as_str) {
                Some("left") => true,
                Some("right") => false,
                _ => return Err(bad()),
            };
            let hash = s
                .get("hash")
                .and_then(Value::as_str)
                .and_then(strict_hex::<32>)
                .ok_or_else(bad)?;
            siblings.push((left, hash));
        }
        Ok(InclusionProof {
            leaf_index: usize::try_from(leaf_index).map_err(|_| bad())?,
            siblings,
        })
    }
}

/// The inclusion proof of `id` among `ids`, or None if `id` is not one of them.
pub fn merkle_proof(ids: &[[u8; 16]], id: &[u8; 16]) -> Option<InclusionProof> {
    let mut level = sorted_leaves(ids);
    let leaf_index = level.binary_search(&leaf_hash(id)).ok()?;
    let mut index = leaf_index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        if index % 2 == 1 {
            siblings.push((true, level[index - 1]));
        } else if index + 1 < level.len() {
            siblings.push((false, level[index + 1]));
        }
        level = next_level(&level);
        index /= 2;
    }
    Some(InclusionProof {
        leaf_index,
        siblings,
    })
}

/// Whether `proof` shows `id` under `root`.
pub fn verify_inclusion(root: &[u8; 32], id: &[u8; 16], proof: &InclusionProof) -> bool {
    // A tree of at most 2^64 leaves is at most 64 levels deep.
    if proof.siblings.len() > 64 {
        return false;
    }
    let top = proof
        .siblings
        .iter()
        .fold(leaf_hash(id), |node, (left, sibling)| {
            if *left {
                node_hash(sibling, &node)
            } else {
                node_hash(&node, sibling)
            }
        });
    top == *root
}

// ---------------------------------------------------------------------------
// W3C Verifiable Credential form (Data Integrity, eddsa-jcs-2022)
// ---------------------------------------------------------------------------

/// The VC Data Model 2.0 base context.
pub const VC_CONTEXT: &str = "https://www.w3.org/ns/credentials/v2";

/// The Data Integrity cryptosuite of the VC form (W3C vc-di-eddsa, 2025).
pub const VC_CRYPTOSUITE: &str = "eddsa-jcs-2022";

/// Multicodec prefix of an Ed25519 public key (`ed25519-pub`, 0xed varint).
const ED25519_MULTICODEC: [u8; 2] = [0xed, 0x01];

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Base58 (Bitcoin alphabet), as multibase `z` uses it.
fn base58_encode(data: &[u8]) -> String {
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    // Little-endian base-58 digits of the number.
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in &data[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| BASE58_ALPHABET[d as usize] as char),
    );
    out
}

fn base58_decode(text: &str) -> Option<Vec<u8>> {
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut bytes: Vec<u8> = Vec::new(); // little-endian
    for c in text.bytes().skip(zeros) {
        let mut carry = BASE58_ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

/// The `did:key` of an Ed25519 public key: `did:key:z` + base58btc(0xed01 || key).
pub fn did_key(k: &VerifyingKey) -> String {
    let mut b = ED25519_MULTICODEC.to_vec();
    b.extend_from_slice(k.as_bytes());
    format!("did:key:z{}", base58_encode(&b))
}

/// The Ed25519 key a `did:key` (or a verification method `did:key:…#…`) names.
pub fn key_of_did(did: &str) -> Option<VerifyingKey> {
    let did = did.split('#').next()?;
    let b = base58_decode(did.strip_prefix("did:key:z")?)?;
    let key: [u8; 32] = b.strip_prefix(&ED25519_MULTICODEC[..])?.try_into().ok()?;
    VerifyingKey::from_bytes(&key).ok()
}

/// The bytes an eddsa-jcs-2022 proof signs: SHA-256(JCS(proof config)) ||
/// SHA-256(JCS(document)), where the proof config is the proof without
/// `proofValue`, with the document's `@context`, and the document is the
/// credential without `proof`.
fn vc_hash_data(doc: &Value, proof: &Value) -> Result<Vec<u8>> {
    let mut config = proof.clone();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::invalid("the proof is not an object"))?;
    obj.remove("proofValue");
    if let Some(ctx) = doc.get("@context") {
        obj.insert("@context".into(), ctx.clone());
    }
    let mut unsecured = doc.clone();
    if let Some(m) = unsecured.as_object_mut() {
        m.remove("proof");
    }
    let mut data = sha256(canonical_json(&config)?.as_bytes()).to_vec();
    data.extend_from_slice(&sha256(canonical_json(&unsecured)?.as_bytes()));
    Ok(data)
}

/// The certificate as a W3C Verifiable Credential (VC Data Model 2.0)
/// secured with a Data Integrity proof, cryptosuite `eddsa-jcs-2022`,
/// signed by the vault's certificate key (issuer: its `did:key`), so a
/// generic verifier checks it without pivault. The credential subject
/// carries the certificate body and its signatures unchanged, so the
/// `pivault-certificate` form inside still verifies on its own.
pub fn verifiable_credential(cert: &Certificate, key: &SigningKey, created: &str) -> Result<Value> {
    let did = did_key(&key.verifying_key());
    let id = cert
        .id()
        .ok_or(Error::Integrity("certificate without an ID"))?;
    let file: Value = serde_json::from_str(&cert.to_file_json())
        .map_err(|_| Error::Integrity("certificate file"))?;
    let mut subject = json!({
        "type": "CertificateOfDestruction",
        "certificate": file["certificate"],
        "signatures": file["signatures"],
    });
    if let Some(d) = str_at(&cert.body, "disposal_id") {
        subject["id"] = json!(format!("urn:uuid:{d}"));
    }
    let mut vc = json!({
        "@context": [VC_CONTEXT],
        "id": format!("urn:uuid:{id}"),
        "type": ["VerifiableCredential", "CertificateOfDestructionCredential"],
        "name": "Certificate of destruction",
        "issuer": did,
        "validFrom": str_at(&cert.body, "issued_at").unwrap_or(created),
        "credentialSubject": subject,
    });
    let did_fragment = did.trim_start_matches("did:key:");
    let mut proof = json!({
        "type": "DataIntegrityProof",
        "cryptosuite": VC_CRYPTOSUITE,
        "created": created,
        "verificationMethod": format!("{did}#{did_fragment}"),
        "proofPurpose": "assertionMethod",
    });
    let sig = key.sign(&vc_hash_data(&vc, &proof)?);
    proof["proofValue"] = json!(format!("z{}", base58_encode(&sig.to_bytes())));
    vc["proof"] = proof;
    Ok(vc)
}

/// What [`verify_credential`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialReport {
    /// The eddsa-jcs-2022 proof verifies under the key its verification method names.
    pub proof_ok: bool,
    /// That key is the expected vault key.
    pub key_matches: bool,
    /// The certificate inside, verified as [`verify`] does.
    pub certificate: VerifyReport,
}

impl CredentialReport {
    /// Both the credential's proof and the certificate inside verify, with the vault's key.
    pub fn ok(&self) -> bool {
        self.proof_ok && self.key_matches && self.certificate.ok()
    }
}

/// Whether `text` is the VC form (a JSON object with a `proof`).
pub fn is_credential(v: &Value) -> bool {
    v.get("proof").is_some() && v.get("credentialSubject").is_some()
}

/// Verifies the VC form with the vault's public key: the eddsa-jcs-2022
/// proof (its verification method must be the vault key's `did:key`) and
/// the certificate inside. The parsing is as strict as [`Certificate::parse`]'s.
pub fn verify_credential(text: &str, vault_key: &VerifyingKey) -> Result<CredentialReport> {
    let vc = parse_strict_json(text)?;
    let bad = || Error::invalid("not a pivault certificate credential");
    let proof = vc.get("proof").ok_or_else(bad)?;
    let str_of = |k: &str| proof.get(k).and_then(Value::as_str);
    let method_key = str_of("verificationMethod").and_then(key_of_did);
    let proof_ok = str_of("type") == Some("DataIntegrityProof")
        && str_of("cryptosuite") == Some(VC_CRYPTOSUITE)
        && str_of("proofPurpose") == Some("assertionMethod")
        && vc.get("issuer").and_then(Value::as_str)
            == str_of("verificationMethod").and_then(|m| m.split('#').next())
        && match (
            method_key,
            str_of("proofValue")
                .and_then(|p| p.strip_prefix('z'))
                .and_then(base58_decode)
                .and_then(|b| <[u8; 64]>::try_from(b).ok()),
        ) {
            (Some(k), Some(sig)) => vc_hash_data(&vc, proof)
                .map(|data| k.verify_strict(&data, &Signature::from_bytes(&sig)).is_ok())
                .unwrap_or(false),
            _ => false,
        };
    let key_matches = method_key.is_some_and(|k| k == *vault_key);
    let subject = vc.get("credentialSubject").ok_or_else(bad)?;
    let inner = json!({
        "certificate": subject.get("certificate").ok_or_else(bad)?,
        "signatures": subject.get("signatures").ok_or_else(bad)?,
    });
    let cert = Certificate::parse(&inner.to_string())?;
    Ok(CredentialReport {
        proof_ok,
        key_matches,
        certificate: verify(&cert, vault_key),
    })
}

/// The `proof_format` of a [`RecordProof`] file.
pub const RECORD_PROOF_FORMAT: &str = "pivault-record-proof/1";

/// A certificate's `target.commitment.record_root`, if well formed.
pub fn record_root(body: &Value) -> Option<[u8; 32]> {
    if str_at(body, "target.commitment.algorithm") != Some(MERKLE_ALGORITHM) {
        return None;
    }
    str_at(body, "target.commitment.record_root").and_then(strict_hex::<32>)
}

/// The proof that one record is among a certificate's disposed records
/// (`pivault certificate prove`): the record ID, the root it is proven
/// against and the Merkle path. It names no one and holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordProof {
    /// The certificate the proof is for.
    pub certificate_id: String,
    /// The record (16 bytes of its UUID).
    pub record_id: [u8; 16],
    /// The root the path leads to (the certificate's record root).
    pub record_root: [u8; 32],
    /// The path.
    pub proof: InclusionProof,
}

impl RecordProof {
    /// The `certificate-proof` document.
    pub fn to_json(&self) -> Value {
        let mut v = self.proof.to_json();
        v["proof_format"] = json!(RECORD_PROOF_FORMAT);
        v["certificate_id"] = json!(self.certificate_id);
        v["record_id"] = json!(uuid_text(&self.record_id));
        v["algorithm"] = json!(MERKLE_ALGORITHM);
        v["record_root"] = json!(hex::encode(self.record_root));
        v
    }

    /// Reads the form of [`RecordProof::to_json`].
    pub fn from_json(v: &Value) -> Result<RecordProof> {
        let bad = || Error::invalid("not a pivault record proof (pivault certificate prove)");
        if v.get("proof_format").and_then(Value::as_str) != Some(RECORD_PROOF_FORMAT)
            || v.get("algorithm").and_then(Value::as_str) != Some(MERKLE_ALGORITHM)
        {
            return Err(bad());
        }
        let record_id = v
            .get("record_id")
            .and_then(Value::as_str)
            .and_then(|t| uuid::Uuid::parse_str(t).ok())
            .ok_or_else(bad)?;
        Ok(RecordProof {
            certificate_id: v
                .get("certificate_id")
                .and_then(Value::as_str)
                .ok_or_else(bad)?
                .to_owned(),
            record_id: *record_id.as_bytes(),
            record_root: v
                .get("record_root")
                .and_then(Value::as_str)
                .and_then(strict_hex::<32>)
                .ok_or_else(bad)?,
            proof: InclusionProof::from_json(v)?,
        })
    }
}

/// Whether `proof` shows `record` among the records the certificate body
/// `body` commits to: the proof must be for this certificate and this
/// record, against this body's record root, and its path must lead there.
/// Check the certificate's signature ([`verify`]) as well: a proof against
/// an unsigned body proves nothing.
pub fn verify_record_proof(body: &Value, record: &[u8; 16], proof: &RecordProof) -> bool {
    let Some(root) = record_root(body) else {
        return false;
    };
    str_at(body, "certificate_id") == Some(proof.certificate_id.as_str())
        && proof.record_id == *record
        && proof.record_root == root
        && verify_inclusion(&root, record, &proof.proof)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn jcs(v: Value) -> String {
        canonical_json(&v).unwrap()
    }

    // ---- payloads signed offline ---------------------------------------

    #[test]
    fn a_payload_is_exactly_a_certificate_message_or_refused() {
        let body = json!({"certificate_id": "c1", "status": "draft", "n": 3});
        let msg = signed_message(&body).unwrap();
        assert_eq!(body_of_message(&msg).unwrap(), body);
        let (sig, signed) = crate::cosign::sign_payload(&msg, &key(7)).unwrap();
        assert_eq!(signed, body);
        assert!(
            key(7)
                .verifying_key()
                .verify_strict(&msg, &Signature::from_bytes(&sig))
                .is_ok()
        );
        // Anything else: no domain, a space, another order, not an object.
        let mut spaced = SIGNING_DOMAIN.to_vec();
        spaced.extend_from_slice(br#"{"certificate_id": "c1","n":3,"status":"draft"}"#);
        let mut unsorted = SIGNING_DOMAIN.to_vec();
        unsorted.extend_from_slice(br#"{"status":"draft","certificate_id":"c1","n":3}"#);
        let mut array = SIGNING_DOMAIN.to_vec();
        array.extend_from_slice(b"[1]");
        for bad in [
            &msg[SIGNING_DOMAIN.len()..],
            &spaced,
            &unsorted,
            &array,
            b"".as_slice(),
        ] {
            assert!(
                body_of_message(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(crate::cosign::sign_payload(bad, &key(7)).is_err());
        }
    }

    // ---- canonical JSON ------------------------------------------------

    #[test]
    fn jcs_sorts_keys_and_emits_no_whitespace() {
        assert_eq!(
            jcs(json!({"b": 1, "a": [true, null, "x"], "c": {}})),
            r#"{"a":[true,null,"x"],"b":1,"c":{}}"#
        );
        assert_eq!(
            jcs(json!({"z": {"y": 1, "x": [2, {"b": 0, "a": -3}]}})),
            r#"{"z":{"x":[2,{"a":-3,"b":0}],"y":1}}"#
        );
        assert_eq!(
            jcs(json!([[], [[]], [1, [2, [3]]]])),
            "[[],[[]],[1,[2,[3]]]]"
        );
        assert_eq!(jcs(json!({})), "{}");
        assert_eq!(jcs(json!([])), "[]");
        assert_eq!(jcs(json!("")), "\"\"");
        assert_eq!(jcs(json!(0)), "0");
        assert_eq!(jcs(json!(false)), "false");
    }

    /// RFC 8785 §3.2.3 sorting example (values shortened to strings).
    #[test]
    fn jcs_rfc8785_sort_vector_utf16_order() {
        let v = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis",
        });
        let want = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
                    \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
                    \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(jcs(v), want);
        // UTF-16 order differs from code-point order here: U+10000 (D800 DC00) < U+E000.
        assert_eq!(
            jcs(json!({"\u{e000}": 1, "\u{10000}": 2})),
            "{\"\u{10000}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn jcs_string_escapes() {
        let s: String = (0u8..0x20).map(char::from).collect::<String>() + "\"\\/\u{7f}";
        let want = "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f\
                    \\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c\\u001d\
                    \\u001e\\u001f\\\"\\\\/\u{7f}\"";
        assert_eq!(jcs(Value::String(s)), want);
        // Unicode passes through as UTF-8, including U+2028 and astral characters.
        assert_eq!(jcs(json!("é€😀\u{2028}דּ")), "\"é€😀\u{2028}דּ\"");
        assert_eq!(jcs(json!({"k\n": "v\t"})), "{\"k\\n\":\"v\\t\"}");
    }

    #[test]
    fn jcs_integers_and_rejected_numbers() {
        let max = (1i64 << 53) - 1;
        assert_eq!(jcs(json!(max)), "9007199254740991");
        assert_eq!(jcs(json!(-max)), "-9007199254740991");
        assert_eq!(jcs(json!(-1)), "-1");
        for bad in [
            json!(1.5),
            json!(1.0),
            json!(-0.0),
            json!(1i64 << 53),
            json!(-(1i64 << 53)),
            json!(u64::MAX),
        ] {
            let err = canonical_json(&bad).unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}");
            assert!(canonical_json(&json!({"a": [bad]})).is_err());
        }
        assert!(signed_message(&json!({"n": 1.5})).is_err());
    }

    #[test]
    fn signed_message_is_domain_then_canonical() {
        let msg = signed_message(&json!({"b": 2, "a": 1})).unwrap();
        assert_eq!(msg, b"pivault-certificate-v1\0{\"a\":1,\"b\":2}");
        assert_eq!(SIGNING_DOMAIN.len(), 23);
    }

    // ---- sign / verify -------------------------------------------------

    #[test]
    fn sign_verify_round_trip() {
        let k = key(7);
        let cert = Certificate::sign(example_body(), &k).unwrap();
        assert_eq!(cert.signatures.len(), 1);
        assert_eq!(cert.signatures[0].role, "vault");
        assert_eq!(
            cert.signatures[0].key_fingerprint,
            fingerprint(k.verifying_key().as_bytes())
        );
        assert_eq!(
            str_at(&cert.body, "vault.key_fingerprint").unwrap(),
            cert.signatures[0].key_fingerprint
        );
        assert_eq!(cert.id(), Some("019b8f2a-4000-7000-8000-000000000001"));

        let report = verify(&cert, &k.verifying_key());
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.status, "validated");
        assert!(report.cosignatures.is_empty());

        let text = cert.to_file_json();
        assert!(text.starts_with("{\n  \"certificate\": {"));
        let parsed = Certificate::parse(&text).unwrap();
        assert_eq!(parsed, cert);
        assert!(verify(&parsed, &k.verifying_key()).ok());
        assert_eq!(parsed.to_file_json(), text);
    }

    #[test]
    fn wrong_key_fails() {
        let cert = Certificate::sign(example_body(), &key(7)).unwrap();
        let report = verify(&cert, &key(8).verifying_key());
        assert!(!report.vault_signature_ok);
        assert!(!report.ok());
        assert!(
            report
                .missing_fields
                .iter()
                .any(|f| f.starts_with("vault.key_fingerprint"))
        );

        // A certificate re-signed by another key, presented as the vault's: still fails.
        let mut forged = cert.clone();
        let other = Certificate::sign(example_body(), &key(8)).unwrap();
        forged.signatures = other.signatures;
        assert!(!verify(&forged, &key(7).verifying_key()).ok());
    }

    #[test]
    fn body_change_fails() {
        let k = key(7);
        let mut cert = Certificate::sign(example_body(), &k).unwrap();
        cert.body["target"]["record_count"] = json!(4);
        let r = verify(&cert, &k.verifying_key());
        assert!(!r.vault_signature_ok && !r.ok());
    }

    #[test]
    fn sign_refuses_incomplete_or_failed_bodies() {
        let k = key(7);
        let mut body = example_body();
        body["operator"].as_object_mut().unwrap().remove("user_id");
        let err = Certificate::sign(body, &k).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput(m) if m.contains("operator.user_id")),
            "{err}"
        );

        // REQ-CE-05: a failed verification blocks the certificate.
        let mut body = example_body();
        body["sanitization"]["verification"]["result"] = json!("FAIL");
        assert!(Certificate::sign(body, &k).is_err());

        // REQ-CE-06: operator and validator must differ.
        let mut body = example_body();
        body["validator"]["user_id"] = body["operator"]["user_id"].clone();
        assert!(Certificate::sign(body, &k).is_err());

        assert!(Certificate::sign(json!([1]), &k).is_err());
    }

    #[test]
    fn draft_with_null_validator_signs_and_verifies() {
        let k = key(7);
        let mut body = example_body();
        body["status"] = json!("draft");
        body["validator"] = Value::Null;
        let cert = Certificate::sign(body, &k).unwrap();
        let r = verify(&cert, &k.verifying_key());
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.status, "draft");
        assert!(render_html(&cert, Check::Carried).contains("VERIFIED DRAFT"));
    }

    fn contractor_body(contractor: &SigningKey) -> Value {
        let mut body = example_body();
        body["parties"]["contractor"] = json!({
            "name": "Shred-It-Right Inc.",
            "contract_reference": "CT-2026-0042",
            "key_fingerprint": fingerprint(contractor.verifying_key().as_bytes()),
        });
        body
    }

    #[test]
    fn cosign_and_detached() {
        let (vault, contractor, validator) = (key(7), key(9), key(10));
        let mut cert = Certificate::sign(contractor_body(&contractor), &vault).unwrap();

        // Declared but not yet signed: the report shows it missing.
        let r = verify(&cert, &vault.verifying_key());
        assert!(r.vault_signature_ok && !r.ok());
        assert_eq!(
            r.cosignatures,
            vec![(
                "contractor".into(),
                fingerprint(contractor.verifying_key().as_bytes()),
                false
            )]
        );

        // Wrong key for the declared role, unknown role, vault role: refused.
        assert!(cert.cosign("contractor", &key(11)).is_err());
        assert!(cert.cosign("vault", &contractor).is_err());
        assert!(cert.cosign("auditor", &contractor).is_err());

        cert.cosign("contractor", &contractor).unwrap();
        assert!(
            cert.cosign("contractor", &contractor).is_err(),
            "a role signs once"
        );
        let r = verify(&cert, &vault.verifying_key());
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.cosignatures.len(), 1);

        // Detached co-signature computed elsewhere over the message.
        let msg = cert.message().unwrap();
        let bad_sig = validator.sign(b"something else").to_bytes();
        assert!(
            cert.add_detached("validator", &validator.verifying_key(), &bad_sig)
                .is_err()
        );
        let sig = validator.sign(&msg).to_bytes();
        assert!(
            cert.add_detached("validator", &key(12).verifying_key(), &sig)
                .is_err()
        );
        // A validator co-signature with a key the body never declared (a
        // fresh key the vault never saw): refused when added...
        let e = cert
            .add_detached("validator", &validator.verifying_key(), &sig)
            .unwrap_err();
        assert!(e.to_string().contains("names no key for this role"), "{e}");
        // ...and failing verification when slipped into the file.
        let mut forged = cert.clone();
        forged.signatures.push(CertSignature::new(
            "validator",
            &validator.verifying_key(),
            &Signature::from_bytes(&sig),
        ));
        let r = verify(&forged, &vault.verifying_key());
        assert!(r.vault_signature_ok && !r.ok(), "{r:?}");
        assert!(
            r.cosignature_notes
                .iter()
                .any(|n| n.starts_with("validator: the certificate declares no key")),
            "{r:?}"
        );
        let r = verify(&cert, &vault.verifying_key());
        assert!(r.ok(), "{r:?}");
        assert!(!r.legacy);

        let parsed = Certificate::parse(&cert.to_file_json()).unwrap();
        assert_eq!(parsed, cert);
        assert!(verify(&parsed, &vault.verifying_key()).ok());

        // A broken co-signature fails the whole certificate.
        let mut broken = cert.clone();
        let mut s = broken.signatures[1].signature.clone().into_bytes();
        s[0] = if s[0] == b'0' { b'1' } else { b'0' };
        broken.signatures[1].signature = String::from_utf8(s).unwrap();
        let r = verify(&broken, &vault.verifying_key());
        assert!(r.vault_signature_ok && !r.ok());
        assert_eq!(r.cosignatures.iter().filter(|c| !c.2).count(), 1);

        // Dropping the declared contractor's signature is noticed.
        let mut dropped = cert.clone();
        dropped.signatures.retain(|s| s.role != "contractor");
        assert!(!verify(&dropped, &vault.verifying_key()).ok());
    }

    #[test]
    fn legacy_certificates_verify_and_say_so() {
        let (vault, validator) = (key(7), key(10));
        let mut body = example_body();
        body["schema_version"] = json!(LEGACY_SCHEMA_VERSION);
        let mut cert = Certificate::sign(body, &vault).unwrap();
        let sig = validator.sign(&cert.message().unwrap()).to_bytes();
        cert.add_detached("validator", &validator.verifying_key(), &sig)
            .unwrap();
        let r = verify(&cert, &vault.verifying_key());
        assert!(r.ok() && r.legacy, "{r:?}");
        // The same body as version 2 does not take the unbound co-signature.
        let v2 = Certificate::sign(example_body(), &vault).unwrap();
        assert!(!verify(&v2, &vault.verifying_key()).legacy);
    }

    #[test]
    fn validation_keeps_a_draft_cosignature() {
        let (vault, contractor) = (key(7), key(9));
        let mut body = contractor_body(&contractor);
        body["status"] = json!("draft");
        body["validator"] = Value::Null;
        let mut draft = Certificate::sign(body, &vault).unwrap();
        draft.cosign("contractor", &contractor).unwrap();
        assert!(verify(&draft, &vault.verifying_key()).ok());
        let validator = example_body()["validator"].clone();
        let done = draft.validated(validator.clone(), &vault).unwrap();
        assert_eq!(done.status(), Some("validated"));
        assert_eq!(done.signatures.len(), 2);
        assert!(done.signatures[1].covers_draft);
        let r = verify(&done, &vault.verifying_key());
        assert!(r.ok(), "{r:?}");
        assert!(
            r.cosignature_notes[0].contains("made on the draft"),
            "{r:?}"
        );
        // Through the file form too.
        let parsed = Certificate::parse(&done.to_file_json()).unwrap();
        assert_eq!(parsed, done);
        assert!(verify(&parsed, &vault.verifying_key()).ok());
        // The mark does not let a draft signature pass on another body.
        let mut other = done.clone();
        other.body["target"]["record_count"] = json!(4);
        assert!(!verify(&other, &vault.verifying_key()).cosignatures[0].2);
        // Unmarked, the draft co-signature does not verify over the validated body.
        let mut unmarked = done.clone();
        unmarked.signatures[1].covers_draft = false;
        assert!(!verify(&unmarked, &vault.verifying_key()).ok());
        // A validated certificate is not validated again.
        assert!(done.validated(validator, &vault).is_err());
        // After validation the contractor co-signature is still one per role.
        let mut again = done.clone();
        assert!(again.cosign("contractor", &contractor).is_err());
    }

    #[test]
    fn a_backup_holding_the_records_makes_the_outcome_pending() {
        let mut body = example_body();
        body["target"]["backups"]["copies"] =
            json!([{ "backup_id": "b", "expiry": "2026-04-01T00:00:00Z", "holds_records": true }]);
        body["target"]["classification"]["after"] = json!("no personal information recoverable");
        let problems = check_fields(&body);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("outcome_statement (")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("target.classification.after (")),
            "{problems:?}"
        );
        body["target"]["classification"]["after"] =
            json!(format!("{PENDING_PHRASE} until 2026-04-01T00:00:00Z"));
        body["outcome_statement"] =
            json!(format!("{OUTCOME_STATEMENT} Disposal is {PENDING_PHRASE}."));
        assert!(check_fields(&body).is_empty(), "{:?}", check_fields(&body));
        body["target"]["backups"]["copies"][0]["holds_records"] = json!(false);
        body["outcome_statement"] = json!(OUTCOME_STATEMENT);
        assert!(check_fields(&body).is_empty());
    }

    // ---- tamper tests --------------------------------------------------

    /// Byte offsets of the characters of the file that lie inside a JSON
    /// string (names and values, without the quotes) or a number.
    fn value_positions(text: &str) -> Vec<(usize, char, bool)> {
        let mut out = Vec::new();
        let (mut in_str, mut escaped) = (false, false);
        for (i, c) in text.char_indices() {
            if in_str {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    in_str = false;
                    continue;
                }
                out.push((i, c, false));
            } else if c == '"' {
                in_str = true;
            } else if c.is_ascii_digit() || c == '-' {
                out.push((i, c, true));
            }
        }
        out
    }

    fn cosigned_cert() -> (Certificate, VerifyingKey) {
        let (vault, contractor) = (key(7), key(9));
        let mut cert = Certificate::sign(contractor_body(&contractor), &vault).unwrap();
        cert.cosign("contractor", &contractor).unwrap();
        (cert, vault.verifying_key())
    }

    #[test]
    fn every_changed_value_character_fails() {
        let (cert, vk) = cosigned_cert();
        let text = cert.to_file_json();
        assert!(verify(&Certificate::parse(&text).unwrap(), &vk).ok());
        let positions = value_positions(&text);
        assert!(positions.len() > 2000, "{}", positions.len());
        for (i, c, in_number) in positions {
            let repl = match (in_number, c) {
                (true, '1') => '2',
                (true, _) => '1',
                (false, 'x') => 'y',
                (false, _) => 'x',
            };
            let tampered = format!("{}{repl}{}", &text[..i], &text[i + c.len_utf8()..]);
            if let Ok(parsed) = Certificate::parse(&tampered) {
                assert!(
                    !verify(&parsed, &vk).ok(),
                    "changing {c:?} at byte {i} to {repl:?} still verifies"
                );
            }
        }
    }

    /// Every byte, replaced by each of a few bytes: parsing either fails, or
    /// verification fails, or the change was only insignificant whitespace.
    #[test]
    fn every_changed_byte_is_an_error_or_harmless_never_a_panic() {
        let (cert, vk) = cosigned_cert();
        let text = cert.to_file_json();
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            for repl in [b' ', b'0', b'a', b'"', b'\\'] {
                if bytes[i] == repl {
                    continue;
                }
                let mut t = bytes.to_vec();
                t[i] = repl;
                let Ok(t) = String::from_utf8(t) else {
                    continue;
                };
                if let Ok(parsed) = Certificate::parse(&t)
                    && verify(&parsed, &vk).ok()
                {
                    assert_eq!(
                        parsed, cert,
                        "byte {i} -> {repl:?} verified with different content"
                    );
                }
            }
        }
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let (cert, vk) = cosigned_cert();
        let text = cert.to_file_json();
        for end in 0..text.len() {
            if !text.is_char_boundary(end) {
                continue;
            }
            let prefix = &text[..end];
            match Certificate::parse(prefix) {
                Ok(p) => {
                    assert_eq!(prefix.trim_end(), text.trim_end());
                    assert!(verify(&p, &vk).ok());
                }
                Err(e) => assert!(matches!(e, Error::InvalidInput(_))),
            }
        }
        let deep = "[".repeat(100_000);
        assert!(Certificate::parse(&deep).is_err());
        let deep_obj = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        assert!(Certificate::parse(&deep_obj).is_err());
        for junk in [
            "",
            "null",
            "[]",
            "{}",
            "\u{feff}{}",
            "{\"certificate\":{},\"signatures\":[]}",
            "\0",
            "{\"a\":1e400}",
        ] {
            assert!(Certificate::parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn parse_is_strict() {
        let (cert, _) = cosigned_cert();
        let text = cert.to_file_json();
        let doc: Value = serde_json::from_str(&text).unwrap();

        let with = |f: &dyn Fn(&mut Value)| {
            let mut d = doc.clone();
            f(&mut d);
            serde_json::to_string(&d).unwrap()
        };
        assert!(Certificate::parse(&with(&|_| {})).is_ok());
        assert!(
            Certificate::parse(&with(&|d| {
                d["extra"] = json!(1);
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d.as_object_mut().unwrap().remove("signatures");
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["signatures"][0]["note"] = json!("x");
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["signatures"][1]["role"] = json!("auditor");
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["signatures"][1]["role"] = json!("vault");
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["signatures"].as_array_mut().unwrap().remove(0);
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                let s = d["signatures"][0]["signature"]
                    .as_str()
                    .unwrap()
                    .to_uppercase();
                d["signatures"][0]["signature"] = json!(s);
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["signatures"][0]["key_fingerprint"] =
                    json!("SHA256:00000000000000000000000000000000");
            }))
            .is_err()
        );
        assert!(
            Certificate::parse(&with(&|d| {
                d["certificate"]["target"]["record_count"] = json!(1.5);
            }))
            .is_err()
        );
        // Duplicate keys, which serde_json would silently resolve, are refused.
        let dup = text.replacen(
            "\"status\": \"validated\"",
            "\"status\": \"draft\",\n    \"status\": \"validated\"",
            1,
        );
        assert_ne!(dup, text);
        assert!(Certificate::parse(&dup).is_err());
        // Unsafe integers in the file.
        let big = text.replacen(
            "\"checkpoint_seq\": 1024",
            "\"checkpoint_seq\": 9007199254740992",
            1,
        );
        assert_ne!(big, text);
        assert!(Certificate::parse(&big).is_err());
        // Whitespace is not significant.
        assert_eq!(
            Certificate::parse(&serde_json::to_string(&doc).unwrap()).unwrap(),
            cert
        );
    }

    // ---- mandatory fields ----------------------------------------------

    fn remove_path(body: &mut Value, path: &str) {
        let (parent, last) = match path.rsplit_once('.') {
            Some((p, l)) => (p.split('.').fold(&mut *body, |v, k| &mut v[k]), l),
            None => (&mut *body, path),
        };
        assert!(
            parent.as_object_mut().unwrap().remove(last).is_some(),
            "{path} not in example"
        );
    }

    #[test]
    fn example_body_is_complete() {
        assert_eq!(check_fields(&example_body()), Vec::<String>::new());
        for p in MANDATORY_FIELDS.iter().chain(VALIDATOR_FIELDS) {
            assert!(at(&example_body(), p).is_some(), "{p}");
        }
    }

    #[test]
    fn every_missing_mandatory_field_is_reported() {
        for path in MANDATORY_FIELDS.iter().chain(VALIDATOR_FIELDS) {
            let mut body = example_body();
            remove_path(&mut body, path);
            let missing = check_fields(&body);
            assert!(missing.iter().any(|m| m == path), "{path}: {missing:?}");
            // Empty strings and wrong types count as missing too.
            let mut body = example_body();
            let parent_and_last = path.rsplit_once('.');
            let slot = match parent_and_last {
                Some((p, l)) => &mut p.split('.').fold(&mut body, |v, k| &mut v[k])[l],
                None => &mut body[*path],
            };
            *slot = if slot.is_string() {
                json!("")
            } else {
                json!(true)
            };
            assert!(
                check_fields(&body).iter().any(|m| m == path),
                "{path} blank"
            );
        }
        assert!(check_fields(&json!(null)).len() >= MANDATORY_FIELDS.len());
    }

    #[test]
    fn value_rules_are_reported() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "sanitization.method",
                json!("Clear"),
                "sanitization.method (must be \"Purge\")",
            ),
            (
                "sanitization.technique",
                json!("Overwrite"),
                "sanitization.technique (must be \"Cryptographic Erase\")",
            ),
            (
                "sanitization.verification.result",
                json!("FAIL"),
                "sanitization.verification.result (must be \"PASS\")",
            ),
            (
                "status",
                json!("final"),
                "status (must be \"draft\" or \"validated\")",
            ),
            (
                "schema_version",
                json!("pivault-certificate/3"),
                "schema_version (must be \"pivault-certificate/2\" (or /1 for certificates issued before co-signatures were bound))",
            ),
            (
                "sanitization.details.epoch_after",
                json!(7),
                "sanitization.details.epoch_after (must exceed epoch_before)",
            ),
            ("issued_at", json!("yesterday"), "issued_at"),
            (
                "target.commitment.record_root",
                json!("ABCD"),
                "target.commitment.record_root",
            ),
            ("target.record_count", json!(-1), "target.record_count"),
        ];
        for (path, value, want) in cases {
            let path: &str = path;
            let mut body = example_body();
            let (p, l) = path.rsplit_once('.').unwrap_or(("", path));
            let parent = if p.is_empty() {
                &mut body
            } else {
                p.split('.').fold(&mut body, |v, k| &mut v[k])
            };
            parent[l] = value.clone();
            let got = check_fields(&body);
            assert!(got.iter().any(|g| g == want), "{path}: {got:?}");
        }
        let mut body = example_body();
        body["outcome_statement"] = json!("The data was deleted.");
        assert!(
            check_fields(&body)
                .iter()
                .any(|g| g.starts_with("outcome_statement ("))
        );
    }

    #[test]
    fn validator_rules() {
        // Same user as operator: reported (REQ-CE-06).
        let mut body = example_body();
        body["validator"]["user_id"] = body["operator"]["user_id"].clone();
        assert_eq!(
            check_fields(&body),
            vec!["validator.user_id (must differ from operator)".to_string()]
        );

        // Validated needs a validator object.
        let mut body = example_body();
        body["validator"] = Value::Null;
        let got = check_fields(&body);
        assert!(
            got.contains(&"validator".to_string())
                && got.contains(&"validator.user_id".to_string()),
            "{got:?}"
        );

        // Draft: null is fine, absence is not.
        body["status"] = json!("draft");
        assert!(check_fields(&body).is_empty());
        body.as_object_mut().unwrap().remove("validator");
        assert_eq!(check_fields(&body), vec!["validator".to_string()]);

        // A named contractor needs a contract reference.
        let mut body = example_body();
        body["parties"]["contractor"] = json!({ "name": "Shredder" });
        assert_eq!(
            check_fields(&body),
            vec!["parties.contractor.contract_reference".to_string()]
        );
    }

    // ---- Merkle --------------------------------------------------------

    fn ids(n: usize) -> Vec<[u8; 16]> {
        (0..n)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&((i as u64) * 7919 + 13).to_be_bytes());
                id[15] = 0xa5;
                id
            })
            .collect()
    }

    #[test]
    fn merkle_known_shapes() {
        assert_eq!(merkle_root(&[]), sha256(b""));
        let a = ids(3);
        assert_eq!(merkle_root(&a[..1]), leaf_hash(&a[0]));
        let mut l: Vec<[u8; 32]> = a.iter().map(leaf_hash).collect();
        l.sort();
        let mut two = [leaf_hash(&a[0]), leaf_hash(&a[1])];
        two.sort();
        assert_eq!(merkle_root(&a[..2]), node_hash(&two[0], &two[1]));
        assert_eq!(merkle_root(&a), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        // Order and repetition do not matter.
        let mut shuffled = a.clone();
        shuffled.reverse();
        shuffled.push(a[1]);
        assert_eq!(merkle_root(&shuffled), merkle_root(&a));
        assert!(merkle_proof(&[], &a[0]).is_none());
    }

    #[test]
    fn merkle_proofs_for_1_to_50_ids() {
        let outsider = [0xeeu8; 16];
        for n in 1..=50 {
            let set = ids(n);
            let root = merkle_root(&set);
            for id in &set {
                let proof = merkle_proof(&set, id).unwrap();
                assert!(verify_inclusion(&root, id, &proof), "n={n}");
                assert!(proof.siblings.len() <= 6);
                assert_eq!(InclusionProof::from_json(&proof.to_json()).unwrap(), proof);
                // The proof is for this ID and this root only.
                assert!(!verify_inclusion(&root, &outsider, &proof));
                assert!(!verify_inclusion(&merkle_root(&ids(n + 1)), id, &proof));
                // Forged proofs fail: a changed sibling, a swapped side, a dropped or added level.
                for j in 0..proof.siblings.len() {
                    let mut f = proof.clone();
                    f.siblings[j].1[31] ^= 1;
                    assert!(!verify_inclusion(&root, id, &f));
                    let mut f = proof.clone();
                    f.siblings[j].0 = !f.siblings[j].0;
                    assert!(!verify_inclusion(&root, id, &f));
                }
                if !proof.siblings.is_empty() {
                    let mut f = proof.clone();
                    f.siblings.pop();
                    assert!(!verify_inclusion(&root, id, &f));
                }
                let mut f = proof.clone();
                f.siblings.push((false, root));
                assert!(!verify_inclusion(&root, id, &f));
            }
            assert!(merkle_proof(&set, &outsider).is_none(), "n={n}");
            // An outsider cannot borrow a member's proof.
            let p = merkle_proof(&set, &set[0]).unwrap();
            assert!(!verify_inclusion(&root, &outsider, &p));
        }
    }

    #[test]
    fn example_commitment_proves_its_ids() {
        let body = example_body();
        let root: [u8; 32] =
            strict_hex(str_at(&body, "target.commitment.record_root").unwrap()).unwrap();
        let recs = example_record_ids();
        for id in &recs {
            assert!(verify_inclusion(
                &root,
                id,
                &merkle_proof(&recs, id).unwrap()
            ));
        }
        assert_eq!(at(&body, "target.record_count"), Some(&json!(3)));
        assert_eq!(at(&body, "target.subject_count"), Some(&json!(2)));
    }

    // ---- keys ----------------------------------------------------------

    #[test]
    fn base64_round_trip_and_strictness() {
        for n in 0..50usize {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)).unwrap(), data);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"f"), "Zg==");
        for bad in ["Zg=", "Zh==", "Z===", "Zm9v!mFy", "=Zg="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn pem_round_trip() {
        let vk = key(7).verifying_key();
        let pem = public_key_pem(&vk);
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        let der = base64_decode(pem.lines().nth(1).unwrap()).unwrap();
        assert_eq!(hex::encode(&der[..12]), "302a300506032b6570032100");
        assert_eq!(&der[12..], vk.as_bytes());
        assert_eq!(parse_public_key(&pem).unwrap(), vk);
        assert_eq!(parse_public_key(&format!("\n  {pem}\n")).unwrap(), vk);
        assert_eq!(parse_public_key(&hex::encode(vk.as_bytes())).unwrap(), vk);
        assert_eq!(
            parse_public_key(&format!("{}\n", hex::encode(vk.as_bytes()))).unwrap(),
            vk
        );

        for bad in [
            String::new(),
            "zz".repeat(32),
            hex::encode([0u8; 31]),
            pem.replace("MCow", "MCox"),
            pem.replace("-----END PUBLIC KEY-----", ""),
            format!("{pem}trailing"),
            "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----".into(),
        ] {
            assert!(parse_public_key(&bad).is_err(), "{bad:?}");
        }
        // The identity point is a weak key.
        let mut ident = [0u8; 32];
        ident[0] = 1;
        assert!(parse_public_key(&hex::encode(ident)).is_err());
    }

    /// Third-party verifiability: the real OpenSSL CLI verifies the vault's
    /// signature over `signed_message` with the PEM key. Fails loudly when
    /// openssl is not installed.
    #[test]
    fn openssl_cli_verifies_the_signature() {
        let version = Command::new("openssl").arg("version").output().expect(
            "the openssl CLI must be installed: this test proves third-party verifiability",
        );
        assert!(version.status.success(), "openssl version failed");

        let k = key(7);
        let cert = Certificate::sign(example_body(), &k).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (pem, msg, sig) = (
            dir.path().join("key.pem"),
            dir.path().join("msg.bin"),
            dir.path().join("sig.bin"),
        );
        std::fs::write(&pem, public_key_pem(&k.verifying_key())).unwrap();
        let message = cert.message().unwrap();
        std::fs::write(&msg, &message).unwrap();
        std::fs::write(
            &sig,
            cert.signature("vault").unwrap().signature_bytes().unwrap(),
        )
        .unwrap();

        let run = || {
            Command::new("openssl")
                .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
                .arg(&pem)
                .args(["-rawin", "-in"])
                .arg(&msg)
                .arg("-sigfile")
                .arg(&sig)
                .output()
                .unwrap()
        };
        let ok = run();
        assert!(
            ok.status.success(),
            "openssl rejected a good signature: {}{}",
            String::from_utf8_lossy(&ok.stdout),
            String::from_utf8_lossy(&ok.stderr)
        );

        let mut tampered = message.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 0x01;
        std::fs::write(&msg, &tampered).unwrap();
        assert!(
            !run().status.success(),
            "openssl accepted a tampered message"
        );
    }

    // ---- HTML ----------------------------------------------------------

    #[test]
    fn html_escapes_and_has_all_sections() {
        let k = key(7);
        let mut body = contractor_body(&key(9));
        body["operator"]["name"] = json!("<script>alert('x')</script> & \"co\"");
        body["custom_note"] = json!("<img src=x onerror=alert(1)>");
        let mut cert = Certificate::sign(body, &k).unwrap();
        cert.cosign("contractor", &key(9)).unwrap();
        let html = render_html(&cert, Check::Issuer(&k.verifying_key()));
        assert!(!html.contains("<script"), "unescaped script");
        assert!(!html.contains("<img"), "unescaped img");
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;")
        );
        assert!(
            html.starts_with("<!DOCTYPE html>")
                && html.contains("<style>")
                && html.ends_with("</html>\n")
        );
        for needle in [
            "VERIFIED - signatures valid; validated by a second person",
            "<h2>Who</h2>",
            "<h2>What</h2>",
            "<h2>When</h2>",
            "<h2>How</h2>",
            "<h2>Signatures</h2>",
            "How to check this certificate",
            "pivault certificate verify certificate-",
            "Appendix A. Records destroyed",
            "Appendix E. Storage, purge and every other signed field",
            "custom_note",
            "openssl pkeyutl -verify",
            "cannot practicably be read or reconstructed",
            "Shred-It-Right Inc.",
            "CT-2026-0042",
            "Cryptographic erase",
            "PASS",
            "page-break-before:always",
            cert.id().unwrap(),
        ] {
            assert!(html.contains(needle), "missing {needle:?}");
        }
        for s in &cert.signatures {
            assert!(html.contains(&s.key_fingerprint) && html.contains(&s.signature));
        }
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("<script"),
            "self-contained"
        );
    }

    /// A body like a real disposal's with `n` records (key versions,
    /// organisation spelled as the vault spells it, a backup holding copies).
    fn big_body(n: u8) -> Value {
        let mut body = contractor_body(&key(9));
        let ids: Vec<[u8; 16]> = (0..n).map(|i| example_id(i.wrapping_add(0x40))).collect();
        body["target"]["record_count"] = json!(ids.len());
        body["target"]["subject_count"] = json!(ids.len());
        body["target"]["commitment"]["record_root"] = json!(hex::encode(merkle_root(&ids)));
        body["sanitization"]["details"]["keys_destroyed"] = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({ "record_id": format!("{}-{i:03}", uuid_text(id)), "key_version": 2, "key_versions": [1, 2] }))
            .collect();
        body["parties"]["contractor"]["organisation"] =
            json!("Shred-It-Right Incorporated, Electronic Media Division");
        body["parties"]["contractor"]["certification"] =
            json!("NAID AAA certificate 12345, endorsement for electronic media");
        body["parties"]["contractor"]["user_id"] = json!(uuid_text(&example_id(0x33)));
        body["sanitization"]["standards"] = json!({
            "method": METHOD_STANDARD, "technique_vocabulary": TECHNIQUE_VOCABULARY,
            "scope_statement": SCOPE_STATEMENT, "record": RECORD_STANDARD,
        });
        body["target"]["backups"]["copies"] = json!([{ "backup_id": "b1", "holds_records": true }]);
        body["outcome"] = json!({ "state": PENDING_PHRASE, "complete_at": "2026-04-01T00:00:00Z" });
        body["outcome_statement"] =
            json!(format!("{OUTCOME_STATEMENT} Disposal is {PENDING_PHRASE}."));
        body["target"]["classification"]["after"] =
            json!(format!("{PENDING_PHRASE} until 2026-04-01T00:00:00Z"));
        body
    }

    fn summary_and_appendix(html: &str) -> (&str, &str) {
        let split = html
            .find("<section class=\"appendix\">")
            .expect("an appendix");
        html.split_at(split)
    }

    /// Issue 14: a 199-record certificate's summary is one page, before the
    /// appendix, with no per-record row and no user ID; people by name.
    #[test]
    fn a_199_record_certificate_summary_fits_page_one_and_names_people() {
        let k = key(7);
        let mut cert = Certificate::sign(big_body(199), &k).unwrap();
        cert.cosign("contractor", &key(9)).unwrap();
        let doc = document(&cert, Check::Issuer(&k.verifying_key()));
        assert!(doc.verified());
        // One page, with room to spare for a longer name or address.
        let (pages, room) = pdf::summary_pages(&doc);
        assert_eq!(pages, 1, "the summary must fit page 1");
        assert!(room >= 40.0, "only {room} points free below the summary");
        let html = render_html(&cert, Check::Issuer(&k.verifying_key()));
        let (summary, appendix) = summary_and_appendix(&html);
        let first = cert.body["sanitization"]["details"]["keys_destroyed"][0]["record_id"]
            .as_str()
            .unwrap();
        assert!(!summary.contains(first) && appendix.contains(first));
        assert_eq!(appendix.matches("<tr><td class=\"mono\">").count(), 199 + 1); // + 1 exclusion
        for uid in [
            "operator.user_id",
            "validator.user_id",
            "parties.contractor.user_id",
            "vault.id",
        ] {
            let v = str_at(&cert.body, uid).unwrap();
            assert!(!summary.contains(v), "{uid} on page 1");
            assert!(appendix.contains(v), "{uid} not in the appendix");
        }
        for name in [
            "Alex Operator, Records Manager, Example Retail LLC",
            "Sam Validator, Information Security Officer, Example Retail LLC",
            "Shred-It-Right Inc., Shred-It-Right Incorporated, Electronic Media Division; contract CT-2026-0042; certification: NAID AAA",
            "Example Retail LLC, 1 Example Street",
            "<td>199</td>",
            "name, ssn, card_number",
            "pending expiry of residual copies; complete at 2026-04-01T00:00:00Z",
            "1 backup(s) hold encrypted copies",
        ] {
            assert!(summary.contains(name), "summary lacks {name:?}");
        }
        // The verdict comes before everything else on the page.
        let verdict = summary.find("VERIFIED").unwrap();
        assert!(verdict < summary.find("<h2>Who</h2>").unwrap());
    }

    /// A changed byte in the body: every rendering says FAILED, never a clean page.
    #[test]
    fn a_changed_certificate_renders_as_failed() {
        let k = key(7);
        let mut cert = Certificate::sign(example_body(), &k).unwrap();
        cert.body["target"]["record_count"] = json!(4);
        for check in [
            Check::Carried,
            Check::Issuer(&k.verifying_key()),
            Check::Pinned(&k.verifying_key()),
        ] {
            let doc = document(&cert, check);
            assert!(!doc.verified());
            let html = render_html(&cert, check);
            assert!(html.contains("FAILED VERIFICATION") && !html.contains(">VERIFIED"));
            assert!(html.contains("The vault signature does not verify"));
            let pdf = render_pdf(&cert, check);
            assert!(String::from_utf8_lossy(&pdf).contains("FAILED VERIFICATION"));
        }
        // A genuine certificate checked against another key fails too.
        let good = Certificate::sign(example_body(), &k).unwrap();
        assert!(!document(&good, Check::Pinned(&key(8).verifying_key())).verified());
        assert!(document(&good, Check::Carried).verified());
    }

    /// The PDF's structure: header, every xref offset pointing at its
    /// object, the trailer, and the certificate file attached byte for byte.
    #[test]
    fn pdf_has_a_correct_xref_and_attaches_the_file() {
        let k = key(7);
        let mut body = big_body(60);
        body["operator"]["name"] = json!("Zo\u{eb} (O'Brien) \\ \u{4e2d}\u{6587} \u{2014} ) Tj ET");
        let mut cert = Certificate::sign(body, &k).unwrap();
        cert.cosign("contractor", &key(9)).unwrap();
        let pdf = render_pdf(&cert, Check::Issuer(&k.verifying_key()));
        assert_eq!(
            pdf,
            render_pdf(&cert, Check::Issuer(&k.verifying_key())),
            "deterministic"
        );
        assert!(pdf.starts_with(b"%PDF-1.7\n") && pdf.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&pdf);
        let startxref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(pdf[startxref..].starts_with(b"xref\n0 "));
        let table = String::from_utf8_lossy(&pdf[startxref..]).into_owned();
        let count: usize = table.lines().nth(1).unwrap()[2..].parse().unwrap();
        for (n, line) in table.lines().skip(3).take(count - 1).enumerate() {
            assert_eq!(line.len(), 19, "entry {line:?}");
            let off: usize = line[..10].parse().unwrap();
            assert!(
                pdf[off..].starts_with(format!("{} 0 obj\n", n + 1).as_bytes()),
                "object {} not at {off}",
                n + 1
            );
        }
        let file = cert.to_file_json();
        assert!(text.contains(&format!(
            "/Subtype /application#2Fjson /Params << /Size {} ",
            file.len()
        )));
        assert!(text.contains(&format!("stream\n{file}\nendstream")));
        assert!(text.contains("/AFRelationship /Source") && text.contains("/EmbeddedFiles"));
        // The hostile name is escaped: no unbalanced parenthesis ends a string.
        assert!(text.contains("Zo\\353 \\(O'Brien\\) \\\\ ?? \\227 \\) Tj ET"));
        assert!(pdf.len() < 200_000, "{} bytes", pdf.len());
    }
}
