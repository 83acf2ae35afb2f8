//! Certificates on current standards (issue 15, parts 4 and 5): the proof
//! that a record was in a batch (`certificate prove`, `certificate verify
//! --record --proof`), the SP 800-88 Rev. 2 / IEEE 2883-2022 / ISO/IEC
//! 27040:2024 fields and the contractor's certification, and the W3C
//! Verifiable Credential form checked by an eddsa-jcs-2022 verifier written
//! here from the specification (its own JCS, base58btc and did:key; only
//! SHA-256 and Ed25519 come from libraries).

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vault_core::ed25519_dalek::{Signature, VerifyingKey};

use crate::cli::{CUSTOMERS, CliVault, EXIT_INVALID_INPUT, EXIT_NOT_FOUND, examples};

const EXIT_INTEGRITY: i32 = 8;

// ----- an independent eddsa-jcs-2022 verifier (W3C vc-di-eddsa 1.0) ------------

/// RFC 8785 for the JSON a certificate holds: members sorted by UTF-16 code
/// units, ECMAScript string escaping, integers only.
fn jcs(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let i = n.as_i64().expect("integers only in a certificate");
            write!(out, "{i}").unwrap();
        }
        Value::String(s) => {
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
                    c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs(&Value::String((*k).clone()), out);
                out.push(':');
                jcs(&m[*k], out);
            }
            out.push('}');
        }
    }
}

fn sha256_jcs(v: &Value) -> Vec<u8> {
    let mut s = String::new();
    jcs(v, &mut s);
    Sha256::digest(s.as_bytes()).to_vec()
}

/// Base58 (Bitcoin alphabet) decoding by big-number arithmetic.
fn base58btc_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut num: Vec<u8> = Vec::new(); // big-endian
    for c in s.chars() {
        let mut carry = ALPHABET.find(c)? as u32;
        for byte in num.iter_mut().rev() {
            let x = u32::from(*byte) * 58 + carry;
            *byte = (x & 0xff) as u8;
            carry = x >> 8;
        }
        while carry > 0 {
            num.insert(0, (carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = s.chars().take_while(|&c| c == '1').count();
    let mut out = vec![0u8; zeros];
    out.extend(num);
    Some(out)
}

/// The Ed25519 key of a `did:key` verification method (multibase `z`,
/// multicodec ed25519-pub 0xed 0x01).
fn did_key_ed25519(method: &str) -> Option<[u8; 32]> {
    let did = method.split('#').next()?;
    let mb = did.strip_prefix("did:key:")?;
    let bytes = base58btc_decode(mb.strip_prefix('z')?)?;
    if bytes.len() != 34 || bytes[0] != 0xed || bytes[1] != 0x01 {
        return None;
    }
    bytes[2..].try_into().ok()
}

/// Verifies a Data Integrity proof of cryptosuite eddsa-jcs-2022 (vc-di-eddsa
/// §3.3: transformation JCS, hashing SHA-256 of proof config and of the
/// document, concatenated; Ed25519 over that). Returns the signer's key.
fn verify_eddsa_jcs_2022(secured: &Value) -> Result<[u8; 32], String> {
    let proof = secured.get("proof").ok_or("no proof")?;
    if proof["type"] != "DataIntegrityProof" || proof["cryptosuite"] != "eddsa-jcs-2022" {
        return Err("not an eddsa-jcs-2022 DataIntegrityProof".into());
    }
    let mut unsecured = secured.clone();
    unsecured.as_object_mut().unwrap().remove("proof");
    let mut options = proof.clone();
    let proof_value = options
        .as_object_mut()
        .unwrap()
        .remove("proofValue")
        .ok_or("no proofValue")?;
    // The proof configuration carries the document's @context.
    if let Some(ctx) = options.get("@context") {
        if Some(ctx) != unsecured.get("@context") {
            return Err("proof @context differs".into());
        }
    } else if let Some(ctx) = unsecured.get("@context") {
        options["@context"] = ctx.clone();
    }
    let mut hash_data = sha256_jcs(&options);
    hash_data.extend(sha256_jcs(&unsecured));
    let sig = base58btc_decode(
        proof_value
            .as_str()
            .and_then(|p| p.strip_prefix('z'))
            .ok_or("proofValue is not multibase base58btc")?,
    )
    .ok_or("bad base58")?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| "signature length")?;
    let key = did_key_ed25519(proof["verificationMethod"].as_str().ok_or("no method")?)
        .ok_or("verificationMethod is not an Ed25519 did:key")?;
    VerifyingKey::from_bytes(&key)
        .map_err(|e| e.to_string())?
        .verify_strict(&hash_data, &Signature::from_bytes(&sig))
        .map_err(|_| "signature does not verify".to_string())?;
    Ok(key)
}

// ----- scenario -------------------------------------------------------------------

/// A vault with the example customers, C-1002's records disposed of by the
/// officer (contractor named with a NAID AAA number); returns the vault,
/// the disposal outcome and the certificate file path and key path.
fn disposed() -> (CliVault, Value, std::path::PathBuf, std::path::PathBuf) {
    let v = CliVault::standard();
    v.import(&examples().join("customers.jsonl")).ok();
    // Two more records of C-1002: a batch of three.
    for (i, name) in ["Hopper", "Murray"].iter().enumerate() {
        let data = v.input_file(
            &format!("more-{i}.json"),
            &format!(r#"{{"given_name": "Grace", "family_name": "{name}"}}"#),
        );
        v.run(
            Some("clerk"),
            &[
                "record",
                "put",
                CUSTOMERS,
                "--subject",
                "C-1002",
                "--data",
                data.to_str().unwrap(),
            ],
        )
        .ok();
    }
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "subject",
            "C-1002",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--contractor-org",
            "Shred Right Inc.",
            "--contract-ref",
            "PO-77",
            "--contractor-cert",
            "NAID AAA certificate 12345, electronic media endorsement",
        ],
    );
    r.ok();
    let out = r.json();
    let cert_id = out["certificate_id"].as_str().unwrap();
    let file = v.input.join("cert.json");
    v.run(
        Some("officer"),
        &[
            "certificate",
            "export",
            cert_id,
            "--out",
            file.to_str().unwrap(),
        ],
    )
    .ok();
    let keys = v.input.join("keys");
    v.run(
        Some("officer"),
        &["keys", "export", "--out", keys.to_str().unwrap()],
    )
    .ok();
    (v, out, file, keys.join("certificate.pem"))
}

/// Acceptance: the VC form verifies with the independent eddsa-jcs-2022
/// verifier above, under the vault's certificate key; a changed byte fails
/// (here and in `pivault certificate verify`); the pivault certificate
/// inside still verifies on its own.
#[test]
fn the_vc_form_verifies_with_an_independent_eddsa_jcs_2022_verifier() {
    let (v, out, file, key) = disposed();
    let cert_id = out["certificate_id"].as_str().unwrap();
    let vc_path = v.input.join("cert.vc.json");
    v.run(
        Some("auditor"),
        &[
            "certificate",
            "export",
            cert_id,
            "--format",
            "vc",
            "--out",
            vc_path.to_str().unwrap(),
        ],
    )
    .ok();
    let text = std::fs::read_to_string(&vc_path).unwrap();
    let vc: Value = serde_json::from_str(&text).unwrap();
    crate::documents::check_any(&vc, "certificate export --format vc");
    assert_eq!(vc["@context"][0], "https://www.w3.org/ns/credentials/v2");
    assert_eq!(vc["id"], format!("urn:uuid:{cert_id}"));
    let signer = verify_eddsa_jcs_2022(&vc).expect("the credential verifies");
    // The signer is the vault's certificate key (the PEM's last 32 bytes of DER).
    let pem = std::fs::read_to_string(&key).unwrap();
    let der = base64_decode(
        &pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    );
    assert_eq!(&der[der.len() - 32..], &signer, "not the vault's key");
    assert_eq!(
        vc["issuer"],
        vc["proof"]["verificationMethod"]
            .as_str()
            .unwrap()
            .split('#')
            .next()
            .unwrap()
    );
    // The certificate inside is the exported one, unchanged.
    let native: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        vc["credentialSubject"]["certificate"],
        native["certificate"]
    );
    assert_eq!(vc["credentialSubject"]["signatures"], native["signatures"]);
    let r = v.run(
        None,
        &[
            "--json",
            "certificate",
            "verify",
            vc_path.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["credential"]["proof_ok"], true);

    // A changed byte anywhere in the signed parts fails both verifiers.
    let mut tampered = vc.clone();
    tampered["credentialSubject"]["certificate"]["target"]["record_count"] = Value::from(4);
    assert!(verify_eddsa_jcs_2022(&tampered).is_err());
    let mut tampered = vc.clone();
    tampered["validFrom"] = Value::from("2020-01-01T00:00:00Z");
    assert!(verify_eddsa_jcs_2022(&tampered).is_err());
    let mut tampered = vc.clone();
    tampered["proof"]["created"] = Value::from("2020-01-01T00:00:00Z");
    assert!(verify_eddsa_jcs_2022(&tampered).is_err());
    // Byte by byte in the file text: flip one letter of the data owner's name.
    let changed = text.replacen("Example Retail LLC", "Example Retail LLD", 1);
    assert_ne!(changed, text);
    assert!(verify_eddsa_jcs_2022(&serde_json::from_str(&changed).unwrap()).is_err());
    let bad = v.input.join("bad.vc.json");
    std::fs::write(&bad, &changed).unwrap();
    let r = v.run(
        None,
        &[
            "--json",
            "certificate",
            "verify",
            bad.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INTEGRITY);
    assert_eq!(r.json()["ok"], false);
    // The native certificate still verifies (pivault-certificate form kept).
    v.run(
        None,
        &[
            "certificate",
            "verify",
            file.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .ok();
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.chars().filter(|c| *c != '=') {
        bits = (bits << 6) | A.find(c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// The standards fields: SP 800-88 Rev. 2 for the method, IEEE 2883-2022
/// for the technique, the ISO/IEC 27040:2024 record, the contractor's
/// certification; a certification with no contractor is refused.
#[test]
fn certificates_cite_current_standards_and_the_contractor_certification() {
    let (v, _, file, _) = disposed();
    let cert: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let b = &cert["certificate"];
    let san = &b["sanitization"];
    assert!(
        san["standards"]["method"]
            .as_str()
            .unwrap()
            .contains("NIST SP 800-88 Rev. 2")
    );
    assert!(
        san["standards"]["technique_vocabulary"]
            .as_str()
            .unwrap()
            .contains("IEEE 2883-2022")
    );
    assert!(
        san["standards"]["record"]
            .as_str()
            .unwrap()
            .contains("ISO/IEC 27040:2024")
    );
    assert!(
        san["standards"]["superseded"]
            .as_str()
            .unwrap()
            .contains("withdrawn")
    );
    for f in [
        "media_type",
        "media_source",
        "pre_sanitization_categorization",
        "method",
        "technique",
        "tool",
        "verification",
        "post_sanitization_categorization",
        "post_sanitization_destination",
    ] {
        assert!(
            san["record"][f].is_string(),
            "sanitization.record.{f} missing"
        );
    }
    assert_eq!(san["method"], "Purge");
    assert_eq!(san["technique"], "Cryptographic Erase");
    assert!(san["key_zeroization"].is_string());
    assert_eq!(
        b["parties"]["contractor"]["certification"],
        "NAID AAA certificate 12345, electronic media endorsement"
    );
    // The printable page names Rev. 2, not the withdrawn revision alone.
    let html = v.run(
        Some("officer"),
        &["certificate", "render", file.to_str().unwrap()],
    );
    html.ok();
    assert!(html.stdout.contains("NIST SP 800-88 Rev. 2"));
    // A certification with no contractor named is refused.
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "dispose",
            "subject",
            "C-1001",
            "--yes",
            "--data-owner",
            "Example Retail LLC",
            "--contractor-cert",
            "NAID AAA 999",
        ],
    );
    r.code(EXIT_INVALID_INPUT);
}

/// Acceptance: `certificate prove CERT RECORD` prints the inclusion proof;
/// `certificate verify --record ID --proof FILE` checks it offline; a record
/// not in the batch has no proof, and a proof for one record does not pass
/// for another, nor after a changed byte.
#[test]
fn a_record_is_proven_in_its_batch_and_a_record_outside_it_is_not() {
    let (v, out, file, key) = disposed();
    let cert_id = out["certificate_id"].as_str().unwrap();
    let disposed: Vec<String> = out["record_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(disposed.len(), 3);
    let all = v.record_ids();
    let outside: Vec<&String> = all.iter().filter(|id| !disposed.contains(id)).collect();
    assert!(!outside.is_empty());
    let verify = |record: &str, proof: &std::path::Path| {
        v.run(
            None,
            &[
                "--json",
                "certificate",
                "verify",
                file.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--record",
                record,
                "--proof",
                proof.to_str().unwrap(),
            ],
        )
    };
    let mut first_proof = None;
    for (i, id) in disposed.iter().enumerate() {
        let p = v.input.join(format!("proof-{i}.json"));
        let r = v.run(
            Some("auditor"),
            &[
                "--json",
                "certificate",
                "prove",
                cert_id,
                id,
                "--out",
                p.to_str().unwrap(),
            ],
        );
        r.ok();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        crate::documents::check(&doc, "certificate prove --out");
        let r = verify(id, &p);
        r.ok();
        assert_eq!(r.json()["record"]["included"], true);
        first_proof.get_or_insert(p);
    }
    let proof = first_proof.unwrap();
    // The same proof claimed for records outside the batch fails.
    for id in &outside {
        let r = verify(id, &proof);
        r.code(EXIT_INTEGRITY);
        assert_eq!(r.json()["record"]["included"], false);
        assert_eq!(r.json()["ok"], false);
        // And the vault has no proof for it.
        let r = v.run(
            Some("auditor"),
            &["--json", "certificate", "prove", cert_id, id],
        );
        r.code(EXIT_NOT_FOUND);
    }
    // A changed byte in the proof fails.
    let text = std::fs::read_to_string(&proof).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let sibling = doc["siblings"][0]["hash"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        if sibling.starts_with('0') { "1" } else { "0" },
        &sibling[1..]
    );
    let bad = v.input.join("bad-proof.json");
    std::fs::write(&bad, text.replace(&sibling, &flipped)).unwrap();
    verify(&disposed[0], &bad).code(EXIT_INTEGRITY);
    // Printed to stdout with --json, the same proof document.
    let r = v.run(
        Some("officer"),
        &["--json", "certificate", "prove", cert_id, &disposed[1]],
    );
    r.ok();
    assert_eq!(r.json()["record_id"], disposed[1].as_str());
}
