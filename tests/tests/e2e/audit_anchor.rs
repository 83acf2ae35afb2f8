//! Issue 10, "Insiders": the audit trail is anchored outside its own
//! directory. Each attack on `<vault>/audit` alone — a truncated segment,
//! events edited and re-chained, a deleted segment, checkpoints re-signed
//! with another key — is detected and named by `audit verify` and by
//! `doctor`, though `checkpoints.log` is deleted or rewritten too; each has
//! a control showing the untampered vault verifies. A time-stamp response
//! made for a different head is refused, and one whose head left the chain
//! fails verification.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use vault_core::Vault;
use vault_core::doctor::{self, Level};
use vault_core::ed25519_dalek::{Signer, SigningKey};
use vault_core::timestamp;

use crate::common::{Fixture, fast_vault, lines, login, open_vault, segments};

/// Events beyond the fixture's: more than two checkpoint intervals, so the
/// trail has automatic checkpoints (256, 512) and a clean-close one.
const EXTRA_EVENTS: usize = 700;

/// A fixture vault with [`EXTRA_EVENTS`] more events.
fn busy_vault(dir: &Path, extra: usize) -> Fixture {
    let fx = fast_vault(dir);
    for _ in 0..extra {
        fx.vault.list_users(&fx.admin).expect("list users");
    }
    fx
}

fn audit_dir(dir: &Path) -> PathBuf {
    dir.join("audit")
}

fn write_lines(path: &Path, l: &[String]) {
    let mut text = l.join("\n");
    if !l.is_empty() {
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

/// Recomputes every chain hash, as an insider with the format spec would.
fn rechain(l: &[String]) -> Vec<String> {
    let mut prev = [0u8; 32];
    l.iter()
        .map(|line| {
            let body = &line[..line.len() - 65];
            let mut h = Sha256::new();
            h.update(b"pivault-audit-v1");
            h.update(prev);
            h.update(body.as_bytes());
            prev = h.finalize().into();
            format!("{body} {}", hex::encode(prev))
        })
        .collect()
}

/// `audit verify` (as the auditor) and `doctor`'s `audit-trail` check, on a
/// freshly opened vault: (ok, problem, doctor detail).
fn check(
    dir: &Path,
    fx_clock: &std::sync::Arc<vault_core::clock::ManualClock>,
) -> (bool, String, Level, String) {
    let vault = open_vault(dir, fx_clock);
    let (ok, problem) = verify(&vault);
    let d = doctor::checks(&vault, crate::common::T0).expect("doctor");
    let trail = d
        .iter()
        .find(|c| c.name == "audit-trail")
        .expect("audit-trail check");
    let out = (ok, problem, trail.level, trail.detail.clone());
    vault.close().expect("close");
    out
}

fn verify(vault: &Vault) -> (bool, String) {
    let auditor = login(vault, "auditor");
    let r = vault.audit_verify(&auditor).expect("verify runs");
    (r.ok(), r.problem.unwrap_or_default())
}

/// A closed busy vault that verifies (the control), and its clock.
fn verified_closed_vault(
    dir: &Path,
    extra: usize,
) -> std::sync::Arc<vault_core::clock::ManualClock> {
    let fx = busy_vault(dir, extra);
    let clock = fx.clock.clone();
    let r = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(r.ok(), "control: {r:?}");
    fx.vault.close().unwrap();
    let (ok, problem, level, detail) = check(dir, &clock);
    assert!(ok, "control: {problem}");
    assert_eq!(level, Level::Ok, "control: {detail}");
    assert!(
        detail.contains("records-database checkpoint at seq"),
        "{detail}"
    );
    clock
}

fn assert_detected(
    dir: &Path,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    needles: &[&str],
) {
    let (ok, problem, level, detail) = check(dir, clock);
    assert!(!ok, "tampering not detected by audit verify");
    assert_eq!(
        level,
        Level::Fail,
        "tampering not detected by doctor: {detail}"
    );
    for n in needles {
        assert!(
            problem.contains(n),
            "audit verify does not name {n:?}: {problem}"
        );
        assert!(detail.contains(n), "doctor does not name {n:?}: {detail}");
    }
}

#[test]
fn a_truncated_segment_with_checkpoints_log_deleted_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let clock = verified_closed_vault(&dir, EXTRA_EVENTS);
    let seg = segments(&dir).pop().unwrap();
    let l = lines(&seg);
    write_lines(&seg, &l[..300]);
    fs::remove_file(audit_dir(&dir).join("checkpoints.log")).unwrap();
    assert_detected(
        &dir,
        &clock,
        &[
            "segment truncated",
            "the records database holds a checkpoint at seq",
        ],
    );
}

#[test]
fn an_edited_and_rechained_event_with_checkpoints_log_deleted_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let clock = verified_closed_vault(&dir, EXTRA_EVENTS);
    let seg = segments(&dir).pop().unwrap();
    let mut l = lines(&seg);
    assert!(l[400].contains("\"action\":\"user.list\""));
    l[400] = l[400].replace("\"action\":\"user.list\"", "\"action\":\"auth.login\"");
    write_lines(&seg, &rechain(&l));
    fs::remove_file(audit_dir(&dir).join("checkpoints.log")).unwrap();
    assert_detected(
        &dir,
        &clock,
        &[
            "events altered and the hashes recomputed",
            // Here the open after the tampering signed a new checkpoint at
            // the same seq, so the file has one, but not the one held.
            "checkpoints.log deleted or",
        ],
    );
}

#[test]
fn an_edited_and_rechained_event_alone_is_detected_by_the_files() {
    // Without deleting checkpoints.log the signed checkpoints already catch
    // it: the vault refuses to open, and the offline verifier names it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let clock = verified_closed_vault(&dir, EXTRA_EVENTS);
    let key = {
        let v = open_vault(&dir, &clock);
        let k = v.audit_public_key();
        v.close().unwrap();
        k
    };
    let seg = segments(&dir).pop().unwrap();
    let mut l = lines(&seg);
    l[400] = l[400].replace("\"action\":\"user.list\"", "\"action\":\"auth.login\"");
    write_lines(&seg, &rechain(&l));
    let e = Vault::open(
        &dir,
        &vault_core::secret::SecretString::from(crate::common::PASSPHRASE),
        crate::common::open_options(&clock),
    )
    .unwrap_err();
    assert!(matches!(e, vault_core::Error::Integrity(_)), "{e}");
    let r = vault_core::audit::verify(&audit_dir(&dir), &key).unwrap();
    assert!(!r.ok());
    assert!(
        r.problem.unwrap().contains("does not match the chain"),
        "offline verify"
    );
}

#[test]
fn a_deleted_last_segment_is_detected() {
    // Enough events for a second segment (8 MiB each).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let mut extra = 0;
    let fx = busy_vault(&dir, 0);
    while segments(&dir).len() < 2 {
        for _ in 0..1000 {
            fx.vault.list_users(&fx.admin).unwrap();
        }
        extra += 1000;
        assert!(extra < 100_000, "no second segment");
    }
    for _ in 0..300 {
        fx.vault.list_users(&fx.admin).unwrap();
    }
    let clock = fx.clock.clone();
    assert!(fx.vault.audit_verify(&fx.auditor).unwrap().ok(), "control");
    fx.vault.close().unwrap();
    let (ok, problem, level, _) = check(&dir, &clock);
    assert!(ok && level == Level::Ok, "control: {problem}");

    let last = segments(&dir).pop().unwrap();
    fs::remove_file(&last).unwrap();
    fs::remove_file(audit_dir(&dir).join("checkpoints.log")).unwrap();
    assert_detected(
        &dir,
        &clock,
        &[
            "segment truncated",
            "the records database holds a checkpoint at seq",
        ],
    );
}

/// Re-signs every checkpoint line with `key`, chained like the real ones.
fn forge_checkpoints(path: &Path, key: &SigningKey) {
    let mut prev = [0u8; 32];
    let forged: Vec<String> = lines(path)
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let seq = v["seq"].as_u64().unwrap();
            let head = hex::decode(v["head"].as_str().unwrap()).unwrap();
            let time_ms = v["time_ms"].as_i64().unwrap();
            let mut msg = b"pivault-audit-checkpoint-v2".to_vec();
            msg.extend_from_slice(&seq.to_be_bytes());
            msg.extend_from_slice(&head);
            msg.extend_from_slice(&time_ms.to_be_bytes());
            msg.extend_from_slice(&prev);
            let sig = key.sign(&msg);
            let out = format!(
                r#"{{"v":2,"seq":{seq},"head":"{}","prev":"{}","time_ms":{time_ms},"sig":"{}"}}"#,
                hex::encode(head),
                hex::encode(prev),
                hex::encode(sig.to_bytes())
            );
            let mut h = Sha256::new();
            h.update(b"pivault-audit-checkpoint-hash-v1");
            h.update(out.as_bytes());
            prev = h.finalize().into();
            out
        })
        .collect();
    write_lines(path, &forged);
}

/// Checkpoints the vault's key did not sign: its open refuses (it would
/// otherwise take the last one's word for what it covers, and chain its
/// next checkpoint to it), and the offline verifier names the signature.
fn refused_as_not_signed(
    dir: &Path,
    clock: &std::sync::Arc<vault_core::clock::ManualClock>,
    key: &vault_core::ed25519_dalek::VerifyingKey,
) {
    match vault_core::vault::Vault::open(
        dir,
        &vault_core::secret::SecretString::from(crate::common::PASSPHRASE),
        crate::common::open_options(clock),
    ) {
        Err(vault_core::Error::Integrity(m)) => {
            assert!(m.contains("not signed with the vault's audit key"), "{m}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the vault opened on checkpoints another key signed"),
    }
    let r = vault_core::audit::verify(&audit_dir(dir), key).unwrap();
    assert!(
        !r.ok()
            && r.problem
                .as_deref()
                .is_some_and(|p| p.contains("signature does not verify with this key")),
        "{r:?}"
    );
}

#[test]
fn checkpoints_resigned_with_another_key_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let clock = verified_closed_vault(&dir, EXTRA_EVENTS);
    let key = open_vault(&dir, &clock).audit_public_key();
    // The insider truncates, then re-signs checkpoints for the shorter trail.
    let seg = segments(&dir).pop().unwrap();
    let l = lines(&seg);
    write_lines(&seg, &l[..300]);
    let cp = audit_dir(&dir).join("checkpoints.log");
    let kept: Vec<String> = lines(&cp)
        .into_iter()
        .filter(|c| {
            serde_json::from_str::<serde_json::Value>(c).unwrap()["seq"]
                .as_u64()
                .unwrap()
                <= 256
        })
        .collect();
    write_lines(&cp, &kept);
    forge_checkpoints(&cp, &SigningKey::from_bytes(&[42u8; 32]));
    refused_as_not_signed(&dir, &clock, &key);

    // The same forgery of the whole, untruncated trail: the signatures alone.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let clock = verified_closed_vault(&dir, EXTRA_EVENTS);
    let key = open_vault(&dir, &clock).audit_public_key();
    forge_checkpoints(
        &audit_dir(&dir).join("checkpoints.log"),
        &SigningKey::from_bytes(&[42u8; 32]),
    );
    refused_as_not_signed(&dir, &clock, &key);
}

/// A throw-away RFC 3161 time-stamp authority: an RSA key and a certificate
/// with extendedKeyUsage critical timeStamping, and an `openssl ts` config.
struct Tsa {
    dir: PathBuf,
}

impl Tsa {
    fn new(dir: &Path) -> Tsa {
        fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tsa.key",
            "-out",
            "tsa.crt",
            "-days",
            "2",
            "-subj",
            "/CN=pivault test TSA",
            "-addext",
            "extendedKeyUsage=critical,timeStamping",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ]);
        fs::write(dir.join("serial"), "01\n").unwrap();
        let cnf = format!(
            "[ tsa ]\ndefault_tsa = tsa_config1\n\n[ tsa_config1 ]\ndir = {d}\nserial = {d}/serial\n\
             crypto_device = builtin\nsigner_cert = {d}/tsa.crt\nsigner_key = {d}/tsa.key\n\
             signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256\n\
             accuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
            d = dir.display()
        );
        fs::write(dir.join("tsa.cnf"), cnf).unwrap();
        Tsa {
            dir: dir.to_path_buf(),
        }
    }

    /// `openssl ts -reply` to a request.
    fn reply(&self, tsq: &[u8]) -> Vec<u8> {
        let q = self.dir.join("req.tsq");
        let r = self.dir.join("resp.tsr");
        fs::write(&q, tsq).unwrap();
        let out = Command::new("openssl")
            .args(["ts", "-reply", "-config"])
            .arg(self.dir.join("tsa.cnf"))
            .arg("-queryfile")
            .arg(&q)
            .arg("-out")
            .arg(&r)
            .output()
            .expect("openssl ts runs");
        assert!(
            out.status.success(),
            "openssl ts -reply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::read(&r).unwrap()
    }

    /// `openssl ts -verify`: the TSA's CMS signature and certificate, which
    /// the vault does not check itself.
    fn openssl_verifies(&self, data: &[u8], tsr: &[u8]) -> bool {
        let d = self.dir.join("data.json");
        let r = self.dir.join("check.tsr");
        fs::write(&d, data).unwrap();
        fs::write(&r, tsr).unwrap();
        Command::new("openssl")
            .args(["ts", "-verify", "-in"])
            .arg(&r)
            .arg("-data")
            .arg(&d)
            .arg("-CAfile")
            .arg(self.dir.join("tsa.crt"))
            .output()
            .expect("openssl ts runs")
            .status
            .success()
    }
}

#[test]
fn a_time_stamp_response_for_a_different_head_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let tsa = Tsa::new(&tmp.path().join("tsa"));
    let fx = busy_vault(&dir, 300);
    let a = fx.vault.audit_anchor(&fx.officer).unwrap();
    let head: serde_json::Value = serde_json::from_str(&a.head_json).unwrap();
    assert_eq!(head["seq"].as_u64(), Some(a.seq));
    assert_eq!(head["vault_id"], fx.vault.id().to_string());
    let tsr_a = tsa.reply(&a.request);
    assert!(tsa.openssl_verifies(a.head_json.as_bytes(), &tsr_a));
    timestamp::check_response(a.head_json.as_bytes(), &tsr_a).expect("matches its head");

    // A second head, later on the chain, and its response.
    for _ in 0..50 {
        fx.vault.list_users(&fx.admin).unwrap();
    }
    let b = fx.vault.audit_anchor(&fx.officer).unwrap();
    assert!(b.seq > a.seq);
    let tsr_b = tsa.reply(&b.request);

    // Control: the responses are stored and verify.
    let stored = fx.vault.audit_timestamp(&fx.officer, &tsr_a).unwrap();
    assert_eq!(stored.seq, a.seq);
    assert_eq!(stored.info.status, 0);
    fx.vault.audit_timestamp(&fx.officer, &tsr_b).unwrap();
    let r = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.heads_confirmed, 2);

    // A response for a different head: the imprint check fails, and the
    // vault refuses one that stamps no head it exported.
    let why = timestamp::check_response(b.head_json.as_bytes(), &tsr_a).unwrap_err();
    assert!(why.contains("different head"), "{why}");
    assert!(!tsa.openssl_verifies(b.head_json.as_bytes(), &tsr_a));
    let other = tsa.reply(&timestamp::request(
        &Sha256::digest(b"another head").into(),
        7,
    ));
    let e = fx.vault.audit_timestamp(&fx.officer, &other).unwrap_err();
    assert!(e.to_string().contains("stamps no head exported"), "{e}");
    // A refusal from the TSA is not stored either.
    assert!(
        fx.vault
            .audit_timestamp(&fx.officer, b"\x30\x03\x02\x01\x02")
            .is_err()
    );
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();

    // The stamped head leaves the chain: events before it edited and
    // re-chained, checkpoints.log deleted and the records database's own
    // checkpoint… still there, but the time-stamped heads fail regardless.
    let seg = segments(&dir).pop().unwrap();
    let mut l = lines(&seg);
    l[100] = l[100].replace("\"action\":\"user.list\"", "\"action\":\"auth.login\"");
    write_lines(&seg, &rechain(&l));
    fs::remove_file(audit_dir(&dir).join("checkpoints.log")).unwrap();
    assert_detected(
        &dir,
        &clock,
        &[&format!(
            "a time-stamped head names a head at seq {} that the chain does not have",
            a.seq
        )],
    );
}

#[test]
fn chained_checkpoints_and_the_records_database_copy_advance_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let fx = busy_vault(&dir, EXTRA_EVENTS);
    let r = fx.vault.audit_verify(&fx.auditor).unwrap();
    assert!(r.ok(), "{r:?}");
    assert!(r.anchored_seq >= 512, "{r:?}");
    let cp = lines(&audit_dir(&dir).join("checkpoints.log"));
    assert!(cp.iter().all(|l| l.starts_with("{\"v\":2,")), "{cp:?}");
    // A checkpoint line removed from the middle breaks the chain.
    let clock = fx.clock.clone();
    fx.vault.close().unwrap();
    let path = audit_dir(&dir).join("checkpoints.log");
    let mut l = lines(&path);
    l.remove(1);
    write_lines(&path, &l);
    assert_detected(&dir, &clock, &["does not chain to the one before it"]);
}

#[test]
fn the_cli_exports_a_head_stores_its_response_and_names_a_truncation() {
    use crate::cli::{CliVault, EXIT_INVALID_INPUT, EXIT_UNSAFE_CONFIG};
    let tmp = tempfile::tempdir().unwrap();
    let tsa = Tsa::new(&tmp.path().join("tsa"));
    let v = CliVault::standard();
    let head = v.input.join("head.json");
    let r = v.run(
        Some("officer"),
        &["--json", "audit", "anchor", "--out", head.to_str().unwrap()],
    );
    r.ok();
    let out = r.json();
    assert_eq!(out["head"], head.display().to_string());
    let head_json = fs::read(&head).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&head_json).unwrap();
    assert_eq!(doc["seq"], out["seq"]);
    for field in [
        "vault_id",
        "head_hash",
        "checkpoint_hash",
        "time",
        "signature",
        "audit_public_key",
    ] {
        assert!(doc[field].is_string(), "{field} in {doc}");
    }
    let tsq = fs::read(head.with_extension("tsq")).unwrap();
    let tsr = tsa.reply(&tsq);
    assert!(tsa.openssl_verifies(&head_json, &tsr));
    let tsr_path = v.input.join("head.tsr");
    fs::write(&tsr_path, tsr).unwrap();
    let r = v.run(
        Some("officer"),
        &[
            "--json",
            "audit",
            "anchor",
            "--response",
            tsr_path.to_str().unwrap(),
        ],
    );
    r.ok();
    assert_eq!(r.json()["seq"], out["seq"]);
    v.assert_audit_ok();

    // A response for a different head is refused.
    let other = tsa.reply(&timestamp::request(&[1u8; 32], 5));
    let other_path = v.input.join("other.tsr");
    fs::write(&other_path, other).unwrap();
    let r = v.run(
        Some("officer"),
        &[
            "audit",
            "anchor",
            "--response",
            other_path.to_str().unwrap(),
        ],
    );
    r.code(EXIT_INVALID_INPUT);

    // Truncation plus a deleted checkpoints.log: exit 8 and doctor fails.
    let seg = segments(&v.dir).pop().unwrap();
    let l = lines(&seg);
    write_lines(&seg, &l[..5]);
    fs::remove_file(audit_dir(&v.dir).join("checkpoints.log")).unwrap();
    let r = v.run(Some("auditor"), &["audit", "verify"]);
    r.code(8);
    assert!(r.stdout.contains("segment truncated"), "{}", r.stdout);
    let r = v.run(None, &["doctor"]);
    r.code(EXIT_UNSAFE_CONFIG);
    assert!(r.stdout.contains("segment truncated"), "{}", r.stdout);
}
