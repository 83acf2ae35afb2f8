//! Two-factor sign-in (REQ-AUTH-07): the default policy, enrolment with
//! recovery codes, replay and lock-out, racing logins, an admin's reset, a
//! disabled user's factor, the policy against an insider with the files,
//! and the real binary locally and through the real server.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use vault_core::Error;
use vault_core::access::{Role, TwoFactorPolicy};
use vault_core::clock::{Clock as _, ManualClock};
use vault_core::crypto::KdfParams;
use vault_core::ids::Username;
use vault_core::secret::SecretString;
use vault_core::totp;
use vault_core::vault::{Context, InitOptions, Session, Vault};

use crate::cli::{self, CliVault};
use crate::common::{self, PASSPHRASE, T0, USERS, fresh_source, password_of};

/// RFC 4648 base32 (no padding), decoded here rather than by the vault's
/// own code, so that a wrong encoding of the secret fails the test.
fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut n, mut out) = (0u64, 0u32, Vec::new());
    for c in s.bytes() {
        let v = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base32: {c}")) as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            out.push((bits >> (n - 8)) as u8);
            n -= 8;
        }
    }
    out
}

/// The secret from an `otpauth://` URI, checking its other parameters.
fn secret_of_uri(uri: &str) -> Vec<u8> {
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    for p in ["algorithm=SHA1", "digits=6", "period=30", "issuer=pivault"] {
        assert!(uri.contains(p), "{p} missing from the URI");
    }
    let secret = uri
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("secret="))
        .expect("secret in the URI");
    let bytes = base32_decode(secret);
    assert_eq!(bytes.len(), 20, "a 160-bit secret");
    bytes
}

fn code_now(secret: &[u8], clock: &ManualClock) -> SecretString {
    SecretString::new(totp::code_at(secret, totp::step_at(clock.now_ms())))
}

/// Adds the fixture auditor (no second factor required) and signs them in:
/// the reader of the audit trail in these tests.
fn auditor(vault: &Vault, admin: &Session) -> Session {
    vault
        .add_user(
            admin,
            "auditor",
            &password_of("auditor"),
            Role::Auditor,
            false,
        )
        .expect("add auditor");
    vault
        .login("auditor", &password_of("auditor"), Context::cli())
        .expect("auditor login")
}

/// A vault created with the default two-factor policy and only its admin.
fn default_policy_vault(dir: &Path) -> (Vault, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let (admin, _, pw) = USERS[0];
    let vault = Vault::create(
        dir,
        &SecretString::from(PASSPHRASE),
        InitOptions {
            kdf: KdfParams::INSECURE_FAST,
            buckets: common::BUCKETS,
            admin: Username::parse(admin).unwrap(),
            admin_password: SecretString::from(pw),
            two_factor: TwoFactorPolicy::default(),
        },
        common::open_options(&clock),
    )
    .expect("create");
    (vault, clock)
}

/// Enrols `user` (signed in with the password only): returns the secret,
/// the full session and the recovery codes.
fn enrol(vault: &Vault, clock: &ManualClock, s: &Session) -> (Vec<u8>, Session, Vec<SecretString>) {
    let e = vault
        .begin_two_factor_enrolment(s)
        .expect("begin enrolment");
    let secret = secret_of_uri(e.uri.expose());
    assert_eq!(secret, base32_decode(e.secret_base32.expose()));
    let done = vault
        .confirm_two_factor_enrolment(s, &code_now(&secret, clock))
        .expect("confirm enrolment");
    (secret, done.session, done.recovery_codes)
}

fn audit_actions(vault: &Vault, s: &Session, prefix: &str) -> Vec<(String, Vec<String>, String)> {
    vault
        .audit_events(
            s,
            &vault_core::audit::EventFilter {
                action_prefix: Some(prefix.into()),
                ..Default::default()
            },
        )
        .expect("audit events")
        .into_iter()
        .map(|e| {
            (
                e.action.clone(),
                e.targets.clone(),
                e.code.clone().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn the_default_policy_makes_admins_officers_and_contractors_enrol_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, clock) = default_policy_vault(&dir.path().join("vault"));
    // The admin's password alone opens a session that may only enrol.
    let first = vault
        .login("admin", &password_of("admin"), Context::cli())
        .expect("password login");
    assert!(first.enrol_only());
    let refused = vault.add_user(&first, "clerk", &password_of("clerk"), Role::Clerk, false);
    assert!(
        matches!(refused, Err(Error::EnrolmentRequired)),
        "an enrol-only session added a user: {refused:?}"
    );
    assert!(matches!(
        vault.audit_events(&first, &Default::default()),
        Err(Error::EnrolmentRequired)
    ));
    let me = vault.whoami(&first).expect("whoami works while enrolling");
    assert_eq!(me.two_factor.as_str(), "none");

    // A wrong code does not confirm; the right one does, with ten codes.
    let e = vault.begin_two_factor_enrolment(&first).unwrap();
    let secret = secret_of_uri(e.uri.expose());
    let wrong = SecretString::new(format!(
        "{:06}",
        (totp::code_at(&secret, totp::step_at(clock.now_ms()))
            .parse::<u32>()
            .unwrap()
            + 1)
            % 1_000_000
    ));
    assert!(matches!(
        vault.confirm_two_factor_enrolment(&first, &wrong),
        Err(Error::SecondFactorFailed)
    ));
    let done = vault
        .confirm_two_factor_enrolment(&first, &code_now(&secret, &clock))
        .expect("confirm");
    assert_eq!(done.recovery_codes.len(), 10);
    let admin = done.session;
    assert!(!admin.enrol_only());
    assert!(first.enrol_only(), "the enrolling session stays enrol-only");
    for (name, role, pw) in &USERS[1..] {
        vault
            .add_user(&admin, name, &SecretString::from(*pw), *role, false)
            .expect("add user");
    }

    // Now the password alone is not enough; a second enrolment is refused.
    assert!(matches!(
        vault.login("admin", &password_of("admin"), Context::cli()),
        Err(Error::SecondFactorRequired)
    ));
    assert!(matches!(
        vault.begin_two_factor_enrolment(&admin),
        Err(Error::AlreadyExists(_))
    ));
    // Officer and contractor must enrol; clerk and auditor need not.
    for (name, enrol_only) in [
        ("officer", true),
        ("contractor", true),
        ("clerk", false),
        ("auditor", false),
    ] {
        let s = vault
            .login(name, &password_of(name), Context::cli())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(s.enrol_only(), enrol_only, "{name}");
    }
    // doctor names the two who have not enrolled, and not the others.
    let checks = vault_core::doctor::checks(&vault, clock.now_ms()).expect("doctor");
    let enrolment = checks
        .iter()
        .find(|c| c.name == "two-factor-enrolment")
        .expect("two-factor-enrolment check");
    assert_eq!(enrolment.level, vault_core::doctor::Level::Warn);
    assert!(
        enrolment.detail.contains("officer (officer)"),
        "{}",
        enrolment.detail
    );
    assert!(enrolment.detail.contains("contractor (contractor)"));
    assert!(!enrolment.detail.contains("clerk"));
    let policy = checks
        .iter()
        .find(|c| c.name == "two-factor-policy")
        .unwrap();
    assert_eq!(
        policy.level,
        vault_core::doctor::Level::Ok,
        "{}",
        policy.detail
    );

    // The secret and the recovery codes are in no file of the vault.
    let b32 = e.secret_base32.expose().to_owned();
    let mut needles: Vec<Vec<u8>> = vec![secret.clone(), b32.into_bytes()];
    for c in &done.recovery_codes {
        needles.push(c.expose().as_bytes().to_vec());
        needles.push(c.expose().replace('-', "").into_bytes());
    }
    vault.close().expect("close");
    for n in &needles {
        let hits = common::files_containing(&dir.path().join("vault"), n);
        assert!(
            hits.is_empty(),
            "a second-factor secret is stored in the clear: {hits:?}"
        );
    }
}

#[test]
fn a_code_signs_in_once_replays_and_wrong_codes_are_refused_audited_and_lock_the_account() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, clock) = default_policy_vault(&dir.path().join("vault"));
    let first = vault
        .login("admin", &password_of("admin"), Context::cli())
        .unwrap();
    let (secret, admin, codes) = enrol(&vault, &clock, &first);
    let reader = auditor(&vault, &admin);
    clock.advance(30_000);
    let code = code_now(&secret, &clock);
    vault
        .login_with_code("admin", &password_of("admin"), Some(&code), Context::cli())
        .expect("a fresh code signs in");
    // The same code again, in the same 30 s: a replay.
    let replay = vault.login_with_code("admin", &password_of("admin"), Some(&code), fresh_source());
    assert!(
        matches!(replay, Err(Error::SecondFactorFailed)),
        "{replay:?}"
    );
    // The code of the previous step is inside the window but older than
    // the one used: also a replay.
    let older = SecretString::new(totp::code_at(&secret, totp::step_at(clock.now_ms()) - 1));
    assert!(matches!(
        vault.login_with_code("admin", &password_of("admin"), Some(&older), fresh_source()),
        Err(Error::SecondFactorFailed)
    ));
    let events = audit_actions(&vault, &reader, "auth.login");
    assert!(
        events
            .iter()
            .any(|(_, t, code)| t.iter().any(|x| x == "factor:replayed")
                && code == "second_factor_failed"),
        "the replay is audited: {events:?}"
    );
    // A recovery code signs in once.
    let rc = &codes[3];
    vault
        .login_with_code("admin", &password_of("admin"), Some(rc), fresh_source())
        .expect("recovery code");
    assert!(matches!(
        vault.login_with_code("admin", &password_of("admin"), Some(rc), fresh_source()),
        Err(Error::SecondFactorFailed)
    ));
    let events = audit_actions(&vault, &reader, "auth.login");
    assert!(
        events
            .iter()
            .any(|(_, t, _)| t.iter().any(|x| x == "recovery_codes_left:9")),
        "{events:?}"
    );
    // No event names a code or a recovery code.
    let all = serde_json::to_string(
        &vault
            .audit_events(&reader, &Default::default())
            .unwrap()
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!all.contains(rc.expose()) && !all.contains(&rc.expose().replace('-', "")));

    // Wrong codes from five sources lock the account, like wrong
    // passwords; then even the right code is refused until the lock ends.
    // (A success first: it ends the run of failures counted so far.)
    clock.advance(60_000);
    vault
        .login_with_code(
            "admin",
            &password_of("admin"),
            Some(&code_now(&secret, &clock)),
            fresh_source(),
        )
        .expect("a fresh code");
    clock.advance(30_000);
    for _ in 0..5 {
        let c = code_now(&secret, &clock);
        let wrong = SecretString::new(format!(
            "{:06}",
            (c.expose().parse::<u32>().unwrap() + 500_000) % 1_000_000
        ));
        assert!(matches!(
            vault.login_with_code("admin", &password_of("admin"), Some(&wrong), fresh_source()),
            Err(Error::SecondFactorFailed)
        ));
    }
    let locked = vault.login_with_code(
        "admin",
        &password_of("admin"),
        Some(&code_now(&secret, &clock)),
        fresh_source(),
    );
    assert!(
        matches!(locked, Err(Error::AccountLocked { .. })),
        "{locked:?}"
    );
    assert!(
        !audit_actions(&vault, &reader, "auth.lockout").is_empty(),
        "the lock-out is audited"
    );
}

#[test]
fn logins_racing_with_one_code_or_one_recovery_code_let_exactly_one_in() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, clock) = default_policy_vault(&dir.path().join("vault"));
    let first = vault
        .login("admin", &password_of("admin"), Context::cli())
        .unwrap();
    let (_, admin, _) = enrol(&vault, &clock, &first);
    vault
        .add_user(
            &admin,
            "officer",
            &password_of("officer"),
            Role::Officer,
            false,
        )
        .unwrap();
    let officer_first = vault
        .login("officer", &password_of("officer"), Context::cli())
        .unwrap();
    let (secret, _officer, codes) = enrol(&vault, &clock, &officer_first);
    let vault = Arc::new(vault);
    for round in 0..3 {
        clock.advance(30_000);
        let code = if round < 2 {
            code_now(&secret, &clock).expose().to_owned()
        } else {
            codes[0].expose().to_owned()
        };
        let barrier = Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (vault, barrier, code) = (vault.clone(), barrier.clone(), code.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    vault.login_with_code(
                        "officer",
                        &password_of("officer"),
                        Some(&SecretString::new(code)),
                        fresh_source(),
                    )
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: {ok} logins used one code");
        assert!(
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .all(|e| matches!(e, Error::SecondFactorFailed)),
            "round {round}: {:?}",
            results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .collect::<Vec<_>>()
        );
        // Seven refusals from seven sources locked the account; the admin
        // lifts the lock for the next round.
        vault.unlock_user(&admin, "officer").expect("unlock");
    }
}

#[test]
fn an_admin_resets_a_lost_factor_and_a_disabled_user_loses_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let (vault, clock) = default_policy_vault(&dir.path().join("vault"));
    let first = vault
        .login("admin", &password_of("admin"), Context::cli())
        .unwrap();
    let (_, admin, _) = enrol(&vault, &clock, &first);
    for (name, role, pw) in &USERS[1..] {
        vault
            .add_user(&admin, name, &SecretString::from(*pw), *role, false)
            .unwrap();
    }
    let officer_first = vault
        .login("officer", &password_of("officer"), Context::cli())
        .unwrap();
    let (officer_secret, officer, _) = enrol(&vault, &clock, &officer_first);
    let clerk = vault
        .login("clerk", &password_of("clerk"), Context::cli())
        .unwrap();

    // Nobody resets their own; a clerk resets nobody's.
    assert!(matches!(
        vault.reset_two_factor(&admin, "admin"),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        vault.reset_two_factor(&clerk, "officer"),
        Err(Error::PermissionDenied(_))
    ));
    // The admin's reset ends the officer's sessions; their next password
    // login may only enrol, and the old phone's codes sign no one in.
    vault.reset_two_factor(&admin, "officer").expect("reset");
    assert!(matches!(vault.whoami(&officer), Err(Error::SessionInvalid)));
    clock.advance(30_000);
    let s = vault
        .login_with_code(
            "officer",
            &password_of("officer"),
            Some(&code_now(&officer_secret, &clock)),
            Context::cli(),
        )
        .expect("password login after the reset");
    assert!(s.enrol_only());
    let (_, officer, _) = enrol(&vault, &clock, &s);
    vault.whoami(&officer).expect("enrolled again");
    let reader = vault
        .login("auditor", &password_of("auditor"), Context::cli())
        .unwrap();
    assert!(
        audit_actions(&vault, &reader, "user.two_factor.reset")
            .iter()
            .any(|(_, _, code)| code.is_empty()),
        "the reset is audited"
    );

    // Disabling removes the factor: enabled again, the contractor enrols
    // afresh (the factor left with the person).
    let c = vault
        .login("contractor", &password_of("contractor"), Context::cli())
        .unwrap();
    enrol(&vault, &clock, &c);
    let state = |name: &str| {
        vault
            .list_users(&admin)
            .unwrap()
            .into_iter()
            .find(|u| u.username.as_str() == name)
            .unwrap()
            .two_factor
            .as_str()
    };
    assert_eq!(state("contractor"), "enrolled");
    vault.disable_user(&admin, "contractor").expect("disable");
    assert_eq!(state("contractor"), "none");
    vault.enable_user(&admin, "contractor").expect("enable");
    let again = vault
        .login("contractor", &password_of("contractor"), Context::cli())
        .expect("password login");
    assert!(again.enrol_only());
    // A disable between the start and the confirmation of an enrolment
    // leaves the disabled user with no factor.
    let e = vault.begin_two_factor_enrolment(&again).unwrap();
    let secret = secret_of_uri(e.uri.expose());
    vault.disable_user(&admin, "contractor").expect("disable");
    let late = vault.confirm_two_factor_enrolment(&again, &code_now(&secret, &clock));
    assert!(matches!(late, Err(Error::SessionInvalid)), "{late:?}");
    assert_eq!(state("contractor"), "none");
}

#[test]
fn the_policy_is_the_admins_and_an_insider_with_the_files_cannot_lower_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault_dir = dir.path().join("vault");
    let (vault, clock) = default_policy_vault(&vault_dir);
    let first = vault
        .login("admin", &password_of("admin"), Context::cli())
        .unwrap();
    let (_, admin, _) = enrol(&vault, &clock, &first);
    let reader = auditor(&vault, &admin);
    vault
        .add_user(&admin, "clerk", &password_of("clerk"), Role::Clerk, false)
        .unwrap();
    let clerk = vault
        .login("clerk", &password_of("clerk"), Context::cli())
        .unwrap();
    assert!(matches!(
        vault.set_two_factor_policy(&clerk, &TwoFactorPolicy::none()),
        Err(Error::PermissionDenied(_))
    ));
    let with_clerks = TwoFactorPolicy::parse("admin,officer,contractor,clerk").unwrap();
    vault
        .set_two_factor_policy(&admin, &with_clerks)
        .expect("admin sets the policy");
    assert!(
        vault
            .login("clerk", &password_of("clerk"), Context::cli())
            .unwrap()
            .enrol_only(),
        "a clerk must enrol once the policy covers clerks"
    );
    assert!(
        audit_actions(&vault, &reader, "policy.two_factor")
            .iter()
            .any(|(_, t, _)| t.iter().any(|x| x == "role:clerk"))
    );
    vault.close().unwrap();

    // The insider: rewrite the policy row to "none" in the records
    // database, keeping its old MAC, or delete it.
    let with_db = |edit: &dyn Fn(&rocksdb::DB)| {
        let path = vault_dir.join("records");
        let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, cfs).unwrap();
        edit(&db);
        db.flush().unwrap();
    };
    let key = b"sealed/two_factor_policy";
    with_db(&|db| {
        let meta = db.cf_handle("meta").unwrap();
        let row = db.get_cf(&meta, key).unwrap().expect("the policy row");
        // The JSON value, then its old MAC (32 bytes) kept as it was.
        let (value, tag) = row.split_at(row.len() - 32);
        let text = String::from_utf8(value.to_vec()).expect("a JSON row");
        assert!(
            text.contains("\"clerk\""),
            "the roles are in the row: {text}"
        );
        let mut forged = br#"{"required":[]}"#.to_vec();
        forged.extend_from_slice(tag);
        db.put_cf(&meta, key, forged).unwrap();
    });
    let reopen = || {
        vault_core::vault::Vault::open(
            &vault_dir,
            &SecretString::from(common::PASSPHRASE),
            common::open_options(&clock),
        )
    };
    // A forged policy: the vault does not open (the row fails its MAC),
    // so no clerk signs in without a factor.
    let forged = reopen();
    assert!(
        matches!(&forged, Err(Error::Integrity(m)) if m.contains("fails its MAC")),
        "a forged policy: {:?}",
        forged.as_ref().err()
    );
    // A deleted policy: nor does it (the sealed rows no longer add up to
    // the state digest), so it is never read as the default either.
    with_db(&|db| {
        let meta = db.cf_handle("meta").unwrap();
        db.delete_cf(&meta, key).unwrap();
    });
    let deleted = reopen();
    assert!(
        matches!(&deleted, Err(Error::Integrity(m)) if m.contains("no longer adds up")),
        "a deleted policy: {:?}",
        deleted.as_ref().err()
    );
}

/// Writes `code` to a private file and returns its path.
fn code_file(v: &CliVault, name: &str, code: &SecretString) -> std::path::PathBuf {
    let p = v.input_file(name, code.expose());
    cli::write_private(&p, code.expose().as_bytes());
    p
}

#[test]
fn the_real_binary_enrols_signs_in_with_a_code_and_refuses_a_replay() {
    let v = CliVault::empty();
    v.init_with(&[]);
    // The admin's first command: the password alone may only enrol.
    let r = v.run(Some("admin"), &["--json", "collection", "list"]);
    r.code(4);
    assert_eq!(r.error_code(), "two_factor_enrolment_required");
    let r = v.run(Some("admin"), &["--json", "two-factor", "enrol"]);
    r.ok();
    let e = r.json();
    let secret = secret_of_uri(e["otpauth_uri"].as_str().unwrap());
    // Confirm with a code from an independent authenticator (Debian's
    // oathtool, installed by scripts/setup.sh), on the real clock.
    let b32 = e["secret"].as_str().unwrap();
    assert_eq!(base32_decode(b32), secret);
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", b32])
        .output()
        .expect("oathtool (scripts/setup.sh installs it)");
    assert!(out.status.success());
    let code = SecretString::new(String::from_utf8(out.stdout).unwrap().trim().to_owned());
    let f = code_file(&v, "code1", &code);
    let mut c = v.user_command(Some("admin"), &["--json", "two-factor", "confirm"]);
    c.env("PIVAULT_CODE_FILE", &f);
    let r = v.exec(c, "two-factor confirm");
    r.ok();
    let codes = r.json()["recovery_codes"].as_array().unwrap().clone();
    assert_eq!(codes.len(), 10);
    // Without a code (and no terminal), a command says how to give one.
    let r = v.run(Some("admin"), &["--json", "collection", "list"]);
    assert_ne!(r.code, 0);
    assert!(r.all_output().contains("--code-file"), "{}", r.all_output());
    // The confirmation's code was used: the same code is a replay.
    let mut c = v.user_command(Some("admin"), &["--json", "collection", "list"]);
    c.env("PIVAULT_CODE_FILE", &f);
    let r = v.exec(c, "collection list (replayed code)");
    r.code(4);
    assert_eq!(r.error_code(), "second_factor_failed");
    // A recovery code from stdin signs in once.
    let rc = codes[0].as_str().unwrap();
    let run_with_stdin = |input: &str| {
        use std::io::Write as _;
        let mut c = v.user_command(Some("admin"), &["--json", "--code-file", "-", "whoami"]);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{input}\n").as_bytes())
            .unwrap();
        cli::Run::from_output("whoami", &child.wait_with_output().unwrap())
    };
    let r = run_with_stdin(rc);
    r.ok();
    assert_eq!(r.json()["two_factor"], "enrolled");
    run_with_stdin(rc).code(4);
    // doctor reports the policy as the default.
    let r = v.run(None, &["--json", "doctor"]);
    let checks = r.json()["checks"].clone();
    let policy = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "two-factor-policy")
        .cloned()
        .expect("policy check");
    assert_eq!(policy["level"], "ok", "{policy}");
    // No file of the vault holds the secret in base32.
    assert!(common::files_containing(&v.dir, b32.as_bytes()).is_empty());
}

#[test]
fn over_https_a_login_needs_the_code_and_an_enrol_only_token_does_nothing_else() {
    let srv = crate::server::start(&[]);
    let admin = srv.token("admin");
    // Require a second factor of clerks too, through the API.
    let a = srv.call(
        "PUT",
        "/v1/policy/two-factor",
        Some(&admin),
        Some(&json!({ "required": ["admin", "officer", "contractor", "clerk"] })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["required"].as_array().unwrap().len(), 4);
    let clerk_pw = password_of("clerk");
    let login = |code: Option<&str>| {
        srv.call(
            "POST",
            "/v1/sessions",
            None,
            Some(&json!({ "username": "clerk", "password": clerk_pw.expose(), "code": code })),
        )
    };
    let a = login(None);
    assert_eq!(a.status, 201, "{a:?}");
    let v: Value = a.json();
    assert_eq!(v["enrol_only"], true);
    let enrolling = v["token"].as_str().unwrap().to_owned();
    let a = srv.call("GET", "/v1/records", Some(&enrolling), None);
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(a.json()["code"], "two_factor_enrolment_required");
    let a = srv.call("POST", "/v1/two-factor/enrolment", Some(&enrolling), None);
    assert_eq!(a.status, 200, "{a:?}");
    let secret = secret_of_uri(a.json()["otpauth_uri"].as_str().unwrap());
    let code = totp::code_at(
        &secret,
        totp::step_at(jiff::Timestamp::now().as_millisecond()),
    );
    let a = srv.call(
        "POST",
        "/v1/two-factor/enrolment/confirm",
        Some(&enrolling),
        Some(&json!({ "code": code })),
    );
    assert_eq!(a.status, 200, "{a:?}");
    let confirmed = a.json();
    assert_eq!(confirmed["recovery_codes"].as_array().unwrap().len(), 10);
    let full = confirmed["token"].as_str().unwrap().to_owned();
    assert_eq!(
        srv.call("GET", "/v1/records", Some(&full), None).status,
        200
    );
    // The enrolling token was revoked.
    assert_eq!(
        srv.call("GET", "/v1/whoami", Some(&enrolling), None).status,
        401
    );
    // Now a login without the code is refused, and the used code replays.
    let a = login(None);
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["code"], "second_factor_required");
    let a = login(Some(&code));
    assert_eq!(a.status, 401, "{a:?}");
    assert_eq!(a.json()["code"], "second_factor_failed");
    let rc = confirmed["recovery_codes"][1].as_str().unwrap();
    let a = login(Some(rc));
    assert_eq!(a.status, 201, "{a:?}");
    assert_eq!(a.json()["enrol_only"], false);
    // The admin resets the clerk's factor: their token dies.
    let a = srv.call("DELETE", "/v1/users/clerk/two-factor", Some(&admin), None);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["two_factor"], "none");
    assert_eq!(
        srv.call("GET", "/v1/records", Some(&full), None).status,
        401
    );
    // No code, secret or recovery code reached the server's log.
    let log = srv.stderr_lines().join("\n");
    for needle in [
        code.as_str(),
        rc,
        confirmed["recovery_codes"][0].as_str().unwrap(),
    ] {
        assert!(!log.contains(needle), "the server logged a second factor");
    }
}
