//! `disposal-crash VAULT_DIR PASSFILE USER PASSWORD_FILE RECORD_ID STEP`
//!
//! A helper of the disposal crash test (tests/tests/e2e/disposal.rs): opens
//! the vault with the library (default options), logs in, installs a crash
//! hook that aborts the process when the disposal batch reaches `STEP`
//! (one of the step names of vault-core's disposal batch, DESIGN §4.2), and
//! disposes of the record. It is expected to die at that step; if the hook
//! never fires it exits with code 3 (so the test can tell "ran to the end"
//! from "crashed"), and with code 1 on any error.

use std::path::Path;
use std::process::ExitCode;

use vault_core::ids::RecordId;
use vault_core::secret::SecretString;
use vault_core::vault::{
    Context, DisposalParties, DisposalRequest, DisposalScope, OpenOptions, Vault,
};

const USAGE: &str = "usage: disposal-crash VAULT_DIR PASSFILE USER PASSWORD_FILE RECORD_ID STEP";

/// Exit code when the batch completed without the hook firing.
const NOT_CRASHED: u8 = 3;

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("disposal-crash: {what}: {e}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let (dir, passfile, user, password_file, record, step) =
        (&args[1], &args[2], &args[3], &args[4], &args[5], &args[6]);
    let record: RecordId = match record.parse() {
        Ok(r) => r,
        Err(e) => return fail("not a record ID", e),
    };
    let pass = match SecretString::from_file(Path::new(passfile)) {
        Ok(p) => p,
        Err(e) => return fail("cannot read the passphrase file", e),
    };
    let password = match SecretString::from_file(Path::new(password_file)) {
        Ok(p) => p,
        Err(e) => return fail("cannot read the password file", e),
    };
    let vault = match Vault::open(Path::new(dir), &pass, OpenOptions::default()) {
        Ok(v) => v,
        Err(e) => return fail("cannot open the vault", e),
    };
    drop(pass);
    let session = match vault.login(user, &password, Context::cli()) {
        Ok(s) => s,
        Err(e) => return fail("cannot log in", e),
    };
    drop(password);

    let target = step.clone();
    vault.set_crash_hook(Some(Box::new(move |s: &str| {
        if s == target {
            // No unwinding, no destructors, no flush: as close to a power
            // cut of the process as a test can get.
            std::process::abort();
        }
    })));
    let req = DisposalRequest {
        scope: DisposalScope::Record(record),
        parties: DisposalParties {
            data_owner: "Crash Test Retail LLC".into(),
            ..DisposalParties::default()
        },
        dry_run: false,
    };
    match vault.dispose(&session, &req) {
        Ok(o) => {
            eprintln!(
                "disposal-crash: the batch completed (certificate {:?}) without reaching step {step}",
                o.certificate_id.map(|c| c.to_string())
            );
            ExitCode::from(NOT_CRASHED)
        }
        Err(e) => fail("dispose failed", e),
    }
}
