//! The WISP evidence pack (issue 15, 201 CMR 17.03 and 17.04): on a healthy
//! vault the lines the vault can prove are met; each injected gap (no
//! officer, a review over a year old, a disabled user with a live session
//! row, a contractor without a key, lock-out off) turns its own line to
//! missing. The pack is for officers and auditors only.

use std::sync::Arc;

use vault_core::Error;
use vault_core::access::LockoutPolicy;
use vault_core::clock::{Clock as _, ManualClock};
use vault_core::secret::SecretString;
use vault_core::vault::{ContractorScope, OpenOptions, Vault, WispPack, WispStatus};

use crate::common::{self, CUSTOMERS, Fixture, T0};

const DAY: i64 = 86_400_000;

/// A vault whose provable elements are in order: an officer, a review
/// today, the contractor's key registered.
fn healthy(dir: &std::path::Path) -> Fixture {
    let fx = common::fast_vault(dir);
    fx.vault
        .record_security_review(&fx.officer)
        .expect("review");
    let key = ed25519_dalek_key(7);
    fx.vault
        .assign_contractor(
            &fx.admin,
            "contractor",
            ContractorScope {
                collections: vec![CUSTOMERS.into()],
                records: vec![],
                public_key: Some(key),
            },
        )
        .expect("assign");
    fx
}

fn ed25519_dalek_key(seed: u8) -> String {
    let k = vault_core::ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    hex::encode(k.verifying_key().as_bytes())
}

fn pack(fx: &Fixture) -> WispPack {
    fx.vault
        .wisp_pack(&fx.officer, T0 - DAY, fx.clock.now_ms() + 1)
        .expect("pack")
}

#[track_caller]
fn status(p: &WispPack, element: &str) -> WispStatus {
    p.line(element)
        .unwrap_or_else(|| panic!("no line {element}"))
        .status
}

const PROVABLE: [&str; 5] = [
    "17.03(2)(a)",
    "17.03(2)(e)",
    "17.03(2)(f)",
    "17.03(2)(i)",
    "17.04(1)",
];

#[test]
fn a_healthy_vault_meets_what_it_can_prove_and_the_document_validates() {
    let dir = tempfile::tempdir().unwrap();
    let fx = healthy(&dir.path().join("vault"));
    let p = pack(&fx);
    for e in PROVABLE.iter().chain(&["17.04(2)", "17.03(2)(j)"]) {
        assert_eq!(
            status(&p, e),
            WispStatus::Met,
            "{e}: {}",
            p.line(e).unwrap().finding
        );
    }
    // Test vaults use the insecure fast unlock KDF, which `doctor` fails:
    // the line of stored-data encryption says so.
    assert_eq!(status(&p, "17.04(5)"), WispStatus::Missing);
    assert!(p.line("17.04(5)").unwrap().finding.contains("unlock-kdf"));
    // What the vault cannot see is never "met".
    assert_eq!(status(&p, "17.04(8)"), WispStatus::Attention);
    assert_eq!(status(&p, "17.04(6)-(7)"), WispStatus::Attention);
    let a = p.line("17.03(2)(a)").unwrap();
    assert_eq!(a.evidence["officers"], serde_json::json!(["officer"]));
    assert_eq!(a.checks, ["security-officer"]);
    let roles = &p.line("17.04(2)").unwrap().evidence["roles"];
    let clerk = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "clerk")
        .unwrap();
    assert_eq!(clerk["holders"], serde_json::json!(["clerk"]));
    assert!(
        !clerk["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "reveal sensitive fields")
    );
    let doc = vault_core::views::document("wisp-pack", vault_core::views::wisp_pack(&p));
    crate::documents::check(&doc, "wisp pack");
    let html = vault_core::printable::wisp_html(&doc);
    assert!(
        html.starts_with("<!DOCTYPE html>") && !html.contains("<script") && !html.contains("src=")
    );
    assert!(html.contains("17.03(2)(a)"));
}

#[test]
fn each_injected_gap_turns_its_line_to_missing() {
    let dir = tempfile::tempdir().unwrap();
    // A disabled user with a live session row: the negative control makes
    // `user disable` leave the generation, so the token's row stays bound
    // to the account (refused by the disabled flag alone).
    {
        let fx = healthy(&dir.path().join("sessions"));
        fx.vault.issue_token(&fx.clerk, 3_600_000).expect("token");
        fx.vault.set_disable_keeps_generation(true);
        fx.vault.disable_user(&fx.admin, "clerk").expect("disable");
        let p = pack(&fx);
        assert_eq!(status(&p, "17.03(2)(e)"), WispStatus::Missing);
        let e = &p.line("17.03(2)(e)").unwrap().evidence;
        assert_eq!(e["with_live_session_rows"], serde_json::json!(["clerk"]));
        assert!(e["disabled_users"][0]["disabled_at"].is_string(), "{e}");
        for other in PROVABLE.iter().filter(|x| **x != "17.03(2)(e)") {
            assert_eq!(status(&p, other), WispStatus::Met, "{other}");
        }
        // The sweep removes the row: met again.
        fx.vault.sweep_sessions().unwrap();
        assert_eq!(status(&pack(&fx), "17.03(2)(e)"), WispStatus::Met);
        // Without the control, the disable retires the token at once (its
        // row stays until the sweep, bound to an old generation).
        fx.vault.set_disable_keeps_generation(false);
        fx.vault.issue_token(&fx.auditor, 3_600_000).expect("token");
        let before = fx.vault.stored_sessions().unwrap();
        fx.vault
            .disable_user(&fx.admin, "auditor")
            .expect("disable");
        assert_eq!(fx.vault.stored_sessions().unwrap(), before, "the row stays");
        assert_eq!(status(&pack(&fx), "17.03(2)(e)"), WispStatus::Met);
    }
    // A contractor without a key.
    {
        let fx = healthy(&dir.path().join("contractor"));
        fx.vault
            .add_user(
                &fx.admin,
                "tourer",
                &SecretString::from("Tour-Contractor-Ibis-0515"),
                vault_core::access::Role::Contractor,
                false,
            )
            .expect("add contractor");
        let p = pack(&fx);
        assert_eq!(status(&p, "17.03(2)(f)"), WispStatus::Missing);
        assert!(p.line("17.03(2)(f)").unwrap().finding.contains("tourer"));
        for other in PROVABLE.iter().filter(|x| **x != "17.03(2)(f)") {
            assert_eq!(status(&p, other), WispStatus::Met, "{other}");
        }
    }
    // The review over a year old.
    {
        let fx = healthy(&dir.path().join("review"));
        assert_eq!(status(&pack(&fx), "17.03(2)(i)"), WispStatus::Met);
        fx.clock.advance(367 * DAY);
        let p = pack(&fx);
        assert_eq!(status(&p, "17.03(2)(i)"), WispStatus::Missing);
        assert_eq!(status(&p, "17.03(2)(a)"), WispStatus::Met);
    }
    // Lock-out off.
    {
        let fx = healthy(&dir.path().join("lockout"));
        let vault_dir = fx.dir.clone();
        let clock = fx.clock.clone();
        fx.vault.close().unwrap();
        let opts = OpenOptions {
            clock: clock.clone(),
            lockout: LockoutPolicy {
                max_failures: 0,
                ..LockoutPolicy::default()
            },
            ..OpenOptions::default()
        };
        let v = Vault::open(&vault_dir, &SecretString::from(common::PASSPHRASE), opts).unwrap();
        let officer = common::login(&v, "officer");
        let p = v.wisp_pack(&officer, T0, clock.now_ms() + 1).unwrap();
        assert_eq!(status(&p, "17.04(1)"), WispStatus::Missing);
        assert_eq!(status(&p, "17.03(2)(f)"), WispStatus::Met);
        v.close().unwrap();
    }
    // No officer: a vault with its first admin only.
    {
        let clock = Arc::new(ManualClock::new(T0));
        let v = common::create_vault(
            &dir.path().join("no-officer"),
            &clock,
            "admin",
            common::USERS[0].2,
        );
        let admin = common::login(&v, "admin");
        v.add_user(
            &admin,
            "auditor",
            &common::password_of("auditor"),
            vault_core::access::Role::Auditor,
            false,
        )
        .unwrap();
        let auditor = common::login(&v, "auditor");
        let p = v.wisp_pack(&auditor, T0, T0 + 1).unwrap();
        assert_eq!(status(&p, "17.03(2)(a)"), WispStatus::Missing);
        assert_eq!(
            p.line("17.03(2)(a)").unwrap().evidence["officers"],
            serde_json::json!([])
        );
        v.close().unwrap();
    }
}

#[test]
fn the_pack_is_for_officers_and_auditors_only_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let fx = healthy(&dir.path().join("vault"));
    for who in [&fx.clerk, &fx.admin, &fx.contractor] {
        let r = fx.vault.wisp_pack(who, T0, T0 + DAY);
        assert!(matches!(r, Err(Error::PermissionDenied(_))), "{r:?}");
    }
    let p = fx
        .vault
        .wisp_pack(&fx.auditor, T0, T0 + DAY)
        .expect("auditor");
    let r = fx.vault.wisp_pack(&fx.auditor, T0 + DAY, T0);
    assert!(matches!(r, Err(Error::InvalidInput(_))), "{r:?}");
    let events = fx
        .vault
        .audit_events(
            &fx.auditor,
            &vault_core::audit::EventFilter {
                action_prefix: Some("wisp.pack".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome == vault_core::audit::Outcome::Success)
            .count(),
        1
    );
    assert_eq!(
        events[0].targets,
        [
            format!("met:{}", p.count(WispStatus::Met)),
            format!("missing:{}", p.count(WispStatus::Missing)),
            format!("attention:{}", p.count(WispStatus::Attention)),
        ]
    );
}

/// `pivault wisp --json --html FILE`: the document validates and the page
/// is written 0600; a clerk is refused.
#[test]
fn the_cli_prints_the_pack_and_its_page() {
    use std::os::unix::fs::PermissionsExt as _;
    let v = crate::cli::CliVault::standard();
    v.run(Some("officer"), &["--json", "review"]).ok();
    let r = v.run(Some("clerk"), &["--json", "wisp"]);
    assert_eq!(r.error_code(), "permission_denied");
    let page = v.input.join("wisp.html");
    let doc = v
        .run(
            Some("auditor"),
            &["--json", "wisp", "--html", page.to_str().unwrap()],
        )
        .json();
    let line = |e: &str| {
        doc["elements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["element"] == e)
            .unwrap()
            .clone()
    };
    assert_eq!(line("17.03(2)(i)")["status"], "met");
    assert_eq!(line("17.03(2)(a)")["status"], "met");
    let meta = std::fs::metadata(&page).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("Written information security program"));
}
