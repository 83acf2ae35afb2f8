//! `crash-writer VAULT_DIR PASSFILE USER PASSWORD_FILE COLLECTION`
//!
//! A helper of the crash test (tests/tests/e2e/crash.rs): opens the vault
//! with the library (`Vault::open`, default options: no fsync, which must
//! still survive a process kill), logs in, then stores synthetic records
//! forever. After each `put_record` returns `Ok` it prints the record ID on
//! one line of stdout and flushes, so every printed ID is an acknowledged
//! write. The test kills it with SIGKILL at a random moment and checks that
//! every acknowledged ID is still readable after reopening.
//!
//! The bodies are synthetic (valid SSN and Luhn-valid card numbers made from
//! a counter); nothing but record IDs is printed.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use vault_core::ids::SubjectId;
use vault_core::secret::SecretString;
use vault_core::vault::{Context, OpenOptions, Vault};

const USAGE: &str = "usage: crash-writer VAULT_DIR PASSFILE USER PASSWORD_FILE COLLECTION";

/// The Luhn check digit that completes `partial`.
fn luhn_check_digit(partial: &str) -> char {
    let mut sum = 0u32;
    for (i, c) in partial.bytes().rev().enumerate() {
        let mut d = u32::from(c - b'0');
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// A valid record body for the `customers` schema, different for each `n`.
fn body(n: u64) -> serde_json::Value {
    let area = 1 + n % 665; // 001-665: never 000, 666 or 9xx
    let group = 1 + (n / 665) % 99; // 01-99
    let serial = 1 + (n / (665 * 99)) % 9999; // 0001-9999
    let partial = format!("4{:014}", n % 100_000_000_000_000);
    serde_json::json!({
        "given_name": "Crash",
        "family_name": "Writer",
        "ssn": format!("{area:03}-{group:02}-{serial:04}"),
        "card": format!("{partial}{}", luhn_check_digit(&partial)),
    })
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("crash-writer: {what}: {e}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let (dir, passfile, user, password_file, collection) =
        (&args[1], &args[2], &args[3], &args[4], &args[5]);
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

    // Different numbers in each run, so runs do not repeat each other's data.
    let mut n = u64::from(std::process::id()) * 1_000_003
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
    let stdout = std::io::stdout();
    loop {
        n = n.wrapping_add(1);
        let id = match vault.put_record(&session, collection, SubjectId::new(), &body(n)) {
            Ok(id) => id,
            Err(e) => return fail("put_record failed", e),
        };
        // Acknowledge only after put_record returned Ok.
        let mut out = stdout.lock();
        if writeln!(out, "{id}").and_then(|()| out.flush()).is_err() {
            // The reader went away: nothing left to acknowledge to.
            return ExitCode::SUCCESS;
        }
    }
}
