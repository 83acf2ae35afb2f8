//! `pivault backup create|list|restore|expire`: glue over the vault's
//! backup operations (vault-core/src/backup.rs holds the format and keys).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use vault_core::Vault;
use vault_core::clock::format_ms;
use vault_core::ids::BackupId;
use vault_core::vault::{BackupInfo, DEFAULT_BACKUP_DAYS, Session};

use crate::exit;
use crate::output::Out;

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Write a backup of the record data (ciphertexts and wrapped keys, never the header).
    Create {
        /// The backup file to create (outside the vault directory).
        #[arg(long)]
        out: PathBuf,
        /// Days until the backup's key is destroyed (the file is then unreadable).
        #[arg(long, default_value_t = DEFAULT_BACKUP_DAYS)]
        days: u32,
    },
    /// List backups with their expiry and state (expired ones are destroyed first).
    List,
    /// Restore the record data from a backup of this vault; disposed records stay disposed.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Do not ask for confirmation (a restore brings back missing or unreadable records; it never removes one).
        #[arg(long)]
        yes: bool,
    },
    /// Destroy a backup's key now (crypto-erases the backup file).
    Expire {
        /// Backup ID.
        id: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

fn confirm(yes: bool, question: &str) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!("pass --yes to confirm (no terminal to ask)");
    }
    crate::output::stderr_prompt(&format!("{question} Type 'yes' to continue: "));
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "yes" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn info_json(b: &BackupInfo) -> Value {
    json!({
        "backup_id": b.id.to_string(),
        "created": format_ms(b.created_ms),
        "expires": format_ms(b.expires_ms),
        "location": b.location,
        "records": b.records,
        "keys": b.keys,
        "bytes": b.bytes,
        "state": b.state,
        "destroyed": b.destroyed_ms.map(format_ms),
    })
}

fn info_text(b: &BackupInfo) -> String {
    format!(
        "{}  {}  expires {}  {} record(s)  {}  {}",
        b.id,
        b.state,
        format_ms(b.expires_ms),
        b.records,
        b.bytes,
        b.location
    )
}

pub fn cmd_backup(out: &Out, vault: &Vault, s: &Session, c: &BackupCmd) -> anyhow::Result<u8> {
    match c {
        BackupCmd::Create { out: file, days } => {
            let b = vault.create_backup(s, file, *days)?;
            out.data("backup", info_json(&b), || {
                format!(
                    "backup {} written to {} ({} record(s)); its key is destroyed at {}",
                    b.id,
                    b.location,
                    b.records,
                    format_ms(b.expires_ms)
                )
            });
        }
        BackupCmd::List => {
            let list = vault.backups(s)?;
            out.data(
                "backup-list",
                Value::Array(list.iter().map(info_json).collect()),
                || {
                    if list.is_empty() {
                        "no backups".into()
                    } else {
                        list.iter().map(info_text).collect::<Vec<_>>().join("\n")
                    }
                },
            );
        }
        BackupCmd::Restore { file, yes } => {
            confirm(
                *yes,
                "Restore missing or unreadable records from this backup? Live records are kept as they are.",
            )?;
            let r = vault.restore_backup(s, file)?;
            out.data("backup-restore", 
                json!({
                    "backup_id": r.backup_id.map(|b| b.to_string()),
                    "restored": r.restored,
                    "disposed_skipped": r.disposed_skipped,
                    "kept": r.kept,
                    "repaired": r.repaired,
                    "held_unrepaired": r.held_unrepaired,
                    "collections_restored": r.collections_restored,
                }),
                || {
                    format!(
                        "restored {} missing record(s); repaired {} unreadable record(s); kept {} live record(s) as they are; {} disposed record(s) kept disposed; {} unreadable record(s) under legal hold left as they are",
                        r.restored, r.repaired, r.kept, r.disposed_skipped, r.held_unrepaired
                    )
                },
            );
        }
        BackupCmd::Expire { id, yes } => {
            let id: BackupId = id.parse()?;
            confirm(*yes, &format!("Destroy the key of backup {id}?"))?;
            let b = vault.expire_backup(s, id)?;
            out.data("backup", info_json(&b), || {
                format!("backup {} destroyed (its key no longer exists)", b.id)
            });
        }
    }
    Ok(exit::OK)
}
