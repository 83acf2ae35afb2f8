//! `passphrase-crash VAULT_DIR OLD_PASSFILE NEW_PASSFILE STEP`
//!
//! A helper of the passphrase-change crash test (tests/tests/e2e/custodian.rs):
//! opens the vault with the old passphrase, installs a crash hook that
//! aborts the process when the change reaches `STEP` (one of the
//! `passphrase.*` step names of vault-core's `custodian.rs`), and changes
//! the passphrase. It is expected to die at that step; if the hook never
//! fires it exits with code 3, and with code 1 on any error.

use std::path::Path;
use std::process::ExitCode;

use vault_core::secret::SecretString;
use vault_core::vault::{OpenOptions, Vault, custodian_context};

const NOT_CRASHED: u8 = 3;

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("passphrase-crash: {what}: {e}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: passphrase-crash VAULT_DIR OLD_PASSFILE NEW_PASSFILE STEP");
        return ExitCode::from(2);
    }
    let read = |p: &str| SecretString::from_file(Path::new(p));
    let (old, new) = match (read(&args[2]), read(&args[3])) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => return fail("cannot read a passphrase file", e),
    };
    let vault = match Vault::open(Path::new(&args[1]), &old, OpenOptions::default()) {
        Ok(v) => v,
        Err(e) => return fail("cannot open the vault", e),
    };
    let step = args[4].clone();
    vault.set_crash_hook(Some(Box::new(move |at: &str| {
        if at == step {
            std::process::abort();
        }
    })));
    match vault.change_passphrase(&old, &new, &custodian_context(Some(0))) {
        Ok(_) => ExitCode::from(NOT_CRASHED),
        Err(e) => fail("the change failed", e),
    }
}
