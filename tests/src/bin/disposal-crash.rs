//! `disposal-crash VAULT_DIR PASSFILE USER PASSWORD_FILE RECORD_ID STEP [WRITERS CLERK_PASSWORD_FILE]`
//! `disposal-crash VAULT_DIR PASSFILE USER PASSWORD_FILE BACKUP_FILE backup_STEP`
//!
//! With a `STEP` that begins `backup_` (a step of a backup's creation), the
//! fifth argument is where the user writes a backup, and the child aborts
//! at that step of it instead.
//!
//! With `WRITERS`, that many threads log in as `clerk` and put and update
//! records in the `customers` collection while the batch runs, printing one
//! line per operation on stdout: `try update ID FAMILY` before an update,
//! `ok put ID SUBJECT FAMILY` / `ok update ID FAMILY` once acknowledged, so
//! the test can check after the crash that nothing acknowledged was lost.
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

use vault_core::ids::{RecordId, SubjectId};
use vault_core::secret::SecretString;
use vault_core::vault::{
    Context, DisposalParties, DisposalRequest, DisposalScope, OpenOptions, Vault,
};

const USAGE: &str = "usage: disposal-crash VAULT_DIR PASSFILE USER PASSWORD_FILE RECORD_ID STEP [WRITERS CLERK_PASSWORD_FILE]";

/// Exit code when the batch completed without the hook firing.
const NOT_CRASHED: u8 = 3;

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("disposal-crash: {what}: {e}");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 7 && args.len() != 9 {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let (dir, passfile, user, password_file, record, step) =
        (&args[1], &args[2], &args[3], &args[4], &args[5], &args[6]);
    let backup_to = step.starts_with("backup_").then(|| record.clone());
    let record: RecordId = match (&backup_to, record.parse()) {
        (Some(_), _) => RecordId::new(),
        (None, Ok(r)) => r,
        (None, Err(e)) => return fail("not a record ID", e),
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
    let writers = if args.len() == 9 {
        let n: usize = match args[7].parse() {
            Ok(n) => n,
            Err(e) => return fail("WRITERS is not a number", e),
        };
        let clerk_pw = match SecretString::from_file(Path::new(&args[8])) {
            Ok(p) => p,
            Err(e) => return fail("cannot read the clerk password file", e),
        };
        match vault.login("clerk", &clerk_pw, Context::cli()) {
            Ok(s) => Some((n, s)),
            Err(e) => return fail("cannot log in the clerk", e),
        }
    } else {
        None
    };
    let vault = std::sync::Arc::new(vault);
    if let Some((n, clerk)) = writers {
        for w in 0..n {
            let (vault, clerk) = (vault.clone(), clerk.clone());
            std::thread::spawn(move || write_forever(&vault, &clerk, w as u64));
        }
        // Let the writers get going before the batch starts: until one
        // write is acknowledged (a fixed pause was too short on a loaded
        // machine with the stores on a cluster), at most 10 s.
        let start = std::time::Instant::now();
        while ACKED.load(std::sync::atomic::Ordering::SeqCst) == 0
            && start.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    let target = step.clone();
    vault.set_crash_hook(Some(Box::new(move |s: &str| {
        if s == target {
            // No unwinding, no destructors, no flush: as close to a power
            // cut of the process as a test can get.
            std::process::abort();
        }
    })));
    if let Some(out) = backup_to {
        return match vault.create_backup(&session, Path::new(&out), 30) {
            Ok(_) => {
                eprintln!("disposal-crash: the backup completed without reaching step {step}");
                ExitCode::from(NOT_CRASHED)
            }
            Err(e) => fail("backup failed", e),
        };
    }
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

/// A family name for counter `n` (letters only, as the schema wants).
fn family(n: u64) -> String {
    let a = |k: u64| char::from(b'a' + (k % 26) as u8);
    format!("Writer{}{}{}{}", a(n / 17_576), a(n / 676), a(n / 26), a(n))
}

/// Writes acknowledged so far, by every writer.
static ACKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Puts a record, then updates it, over and over, printing each step.
fn write_forever(vault: &Vault, clerk: &vault_core::vault::Session, w: u64) {
    use std::io::Write;
    let subjects: Vec<SubjectId> = (0..8).map(|_| SubjectId::new()).collect();
    let mut n = w * 100_000;
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    };
    loop {
        n += 1;
        let subject = subjects[(n % 8) as usize];
        let body = serde_json::json!({ "given_name": "Crash", "family_name": family(n) });
        let Ok(id) = vault.put_record(clerk, "customers", subject, &body) else {
            continue;
        };
        say(format!("ok put {id} {subject} {}", family(n)));
        ACKED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        n += 1;
        let body = serde_json::json!({ "given_name": "Crash", "family_name": family(n) });
        say(format!("try update {id} {}", family(n)));
        if vault.update_record(clerk, id, &body).is_ok() {
            say(format!("ok update {id} {}", family(n)));
        }
    }
}
