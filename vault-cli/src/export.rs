//! `subject export` and `collection export` (REQ-WISP-05): records out of
//! the vault, encrypted with age to a recipient's key (`--to age1…`,
//! `--to-file`) or a passphrase (`--passphrase` prompts, `--export-passphrase-file`
//! reads a file or stdin: never a flag's value), or in clear with
//! `--plaintext` (a permission of its own). The engine checks the
//! permissions, audits, and keeps the ledger later certificates read.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};
use vault_core::Vault;
use vault_core::secret::SecretString;
use vault_core::vault::{ExportOutcome, ExportRecipient, ExportRequest, ExportScope, Session};

use crate::exit;
use crate::output::Out;

/// How an export is encrypted, why, and where it goes.
#[derive(Args, Debug)]
pub struct ExportOpts {
    /// An age recipient (X25519 public key, `age1…` from `age-keygen`);
    /// repeat for several.
    #[arg(long = "to", value_name = "RECIPIENT")]
    pub to: Vec<String>,
    /// A file of age recipients, one a line (`#` comments), as `age -R` reads.
    #[arg(long, value_name = "FILE")]
    pub to_file: Option<PathBuf>,
    /// Encrypt with a passphrase typed at a prompt (the receiver runs `age -d`).
    #[arg(long)]
    pub passphrase: bool,
    /// Encrypt with the passphrase in this file (`-`: the first line of
    /// stdin). Not the vault's own `--passphrase-file`.
    #[arg(long, value_name = "FILE", env = "PIVAULT_EXPORT_PASSPHRASE_FILE")]
    pub export_passphrase_file: Option<PathBuf>,
    /// No encryption: needs the export-plaintext permission; later
    /// disposal certificates list the copy.
    #[arg(long)]
    pub plaintext: bool,
    /// Why (audited; no personal information, no numbers of 4+ digits).
    #[arg(long)]
    pub reason: String,
    /// Output file (default stdout, refused on a terminal unless --plaintext).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Recipients from `--to` and `--to-file`.
fn recipients(o: &ExportOpts) -> anyhow::Result<Vec<String>> {
    let mut keys = o.to.clone();
    if let Some(f) = &o.to_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    Ok(keys)
}

/// The recipient the options ask for: exactly one kind.
pub(crate) fn recipient(o: &ExportOpts) -> anyhow::Result<ExportRecipient> {
    let keys = recipients(o)?;
    let passphrase = o.passphrase || o.export_passphrase_file.is_some();
    match (!keys.is_empty(), passphrase, o.plaintext) {
        (true, false, false) => Ok(ExportRecipient::Keys(keys)),
        (false, true, false) => Ok(ExportRecipient::Passphrase(read_passphrase(o)?)),
        (false, false, true) => Ok(ExportRecipient::Plaintext),
        (false, false, false) => bail!(
            "say who can read the export: --to age1… (or --to-file), --passphrase / --export-passphrase-file, or --plaintext"
        ),
        _ => {
            bail!("give one of --to/--to-file, --passphrase/--export-passphrase-file, --plaintext")
        }
    }
}

fn read_passphrase(o: &ExportOpts) -> anyhow::Result<SecretString> {
    let text = match &o.export_passphrase_file {
        Some(p) if p == Path::new("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the export passphrase from stdin")?;
            SecretString::new(line.trim_end_matches(['\n', '\r']).to_owned())
        }
        Some(p) => SecretString::from_private_file(p)
            .with_context(|| format!("cannot use the export passphrase file {}", p.display()))?,
        None => {
            if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
                bail!(
                    "--passphrase asks on a terminal; use --export-passphrase-file FILE (or - for stdin)"
                );
            }
            let first = rpassword::prompt_password("Export passphrase: ")?;
            let again = rpassword::prompt_password("Export passphrase (again): ")?;
            if first != again {
                bail!("the two passphrases differ");
            }
            SecretString::new(first)
        }
    };
    if text.expose().is_empty() {
        bail!("the export passphrase is empty");
    }
    Ok(text)
}

/// Where the export goes: a new file next to the destination, renamed
/// into place only when the export completed (a failed export leaves no
/// file), or stdout.
fn check_destination(o: &ExportOpts) -> anyhow::Result<()> {
    if o.out.is_none() && !o.plaintext && std::io::stdout().is_terminal() {
        bail!("the export is binary (age): give --out FILE or redirect stdout");
    }
    Ok(())
}

pub(crate) fn outcome_json(o: &ExportOutcome) -> Value {
    json!({ "export_id": o.export_id, "records": o.records, "subjects": o.subjects, "encryption": o.encryption })
}

fn report(out: &Out, v: Value, dest: Option<&Path>) {
    let text = format!(
        "exported {} record(s) of {} subject(s) ({}), export {}{}",
        v["records"],
        v["subjects"],
        v["encryption"].as_str().unwrap_or_default(),
        v["export_id"].as_str().unwrap_or_default(),
        dest.map(|d| format!(" to {}", d.display()))
            .unwrap_or_default()
    );
    if dest.is_some() {
        out.data("record-export", v, || text);
    } else {
        // Stdout holds the export itself: the report goes to stderr.
        eprintln!("{text}");
    }
}

/// Writes `write`'s bytes to `dest` atomically (a temp file renamed on
/// success, removed on failure), or to stdout.
pub(crate) fn to_destination<T>(
    dest: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match dest {
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            let r = write(&mut lock)?;
            lock.flush()?;
            Ok(r)
        }
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile_in(dir)?;
            match write(&mut tmp.1) {
                Ok(r) => {
                    tmp.1.sync_all()?;
                    std::fs::rename(&tmp.0, path)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    Ok(r)
                }
                Err(e) => {
                    drop(tmp.1);
                    let _ = std::fs::remove_file(&tmp.0);
                    Err(e)
                }
            }
        }
    }
}

/// A new file (0600) beside the destination.
fn tempfile_in(dir: &Path) -> anyhow::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..16 {
        let p = dir.join(format!(
            ".pivault-export-{}.part",
            uuid::Uuid::now_v7().simple()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot write in {}", dir.display())),
        }
    }
    bail!("cannot create a file in {}", dir.display())
}

/// `subject export` / `collection export` on an open vault.
pub fn run_local(
    out: &Out,
    vault: &Vault,
    s: &Session,
    scope: ExportScope,
    o: &ExportOpts,
) -> anyhow::Result<u8> {
    let req = ExportRequest {
        scope,
        recipient: recipient(o)?,
        reason: o.reason.clone(),
        armor: false,
    };
    check_destination(o)?;
    let outcome = to_destination(o.out.as_deref(), |w| Ok(vault.export_records(s, &req, w)?))?;
    report(out, outcome_json(&outcome), o.out.as_deref());
    Ok(exit::OK)
}

/// `subject export` / `collection export` through pivault-server: the
/// server encrypts (age, ASCII armor) and answers the text; a passphrase
/// travels in the request body, never in a URL.
pub fn run_remote(
    out: &Out,
    r: &crate::remote::Remote,
    mut body: Value,
    o: &ExportOpts,
) -> anyhow::Result<()> {
    match recipient(o)? {
        ExportRecipient::Keys(k) => body["to"] = json!(k),
        ExportRecipient::Passphrase(p) => body["passphrase"] = json!(p.expose()),
        ExportRecipient::Plaintext => body["plaintext"] = json!(true),
    }
    body["reason"] = json!(o.reason);
    let mut v = r.post("/v1/exports", body)?;
    let data = v
        .as_object_mut()
        .and_then(|m| {
            m.remove("document");
            m.remove("version");
            m.remove("data")
        })
        .and_then(|d| d.as_str().map(str::to_owned))
        .unwrap_or_default();
    to_destination(o.out.as_deref(), |w| Ok(w.write_all(data.as_bytes())?))?;
    report(out, v, o.out.as_deref());
    Ok(())
}
