//! `pivault vault …`: a service provider's vaults on one keystore cluster
//! (issue 16). The provider's operator creates each business's vault with
//! a database role of its own and lists them; the operator's own role
//! (in `--provider FILE`, a `keystore.json`) can create roles and reads no
//! vault's keys, and these commands show no record and no key.

use std::path::{Path, PathBuf};

use std::io::IsTerminal as _;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use vault_core::keystore::postgres::PgConfig;

use crate::output::Out;
use crate::{Cli, InitArgs, exit};

#[derive(Subcommand, Debug)]
pub(crate) enum VaultCmd {
    /// Create a vault (in --vault DIR) on the provider's cluster, with a
    /// database role of its own whose password is written beside the vault
    /// (keystore.password, mode 0600); otherwise as `pivault init`.
    Create {
        /// The provider's keystore.json: members, database, the provider's
        /// role and its password file.
        #[arg(long, value_name = "FILE")]
        provider: PathBuf,
        #[command(flatten)]
        init: InitArgs,
    },
    /// Delete the whole vault (in --vault DIR) and hand over its
    /// certificate: the custodian's passphrase opens it, an officer (--user)
    /// deletes and a second user (--validator) validates, both signing in
    /// now. Its keys are dropped from the keystore cluster and purged from
    /// every member, whose files are searched for them (embedded: the root-key
    /// slots overwritten, the keystore emptied and compacted, every file of
    /// the directory searched); the certificate and
    /// the whole audit trail are written outside the vault, then its
    /// directory is removed and, with --provider, its database role
    /// dropped. Refused with nothing destroyed under a legal hold or while a
    /// cluster member is down or lagging. With --resume, finishes a deletion
    /// whose process was stopped (the custodian's passphrase alone).
    Delete {
        /// The provider's keystore.json: the vault's database role is
        /// dropped once the vault is gone.
        #[arg(long, value_name = "FILE")]
        provider: Option<PathBuf>,
        /// The second person: a user who may validate certificates.
        #[arg(long, value_name = "NAME", required_unless_present = "resume")]
        validator: Option<String>,
        /// File holding the validator's password.
        #[arg(long, env = "PIVAULT_VALIDATOR_PASSWORD_FILE", value_name = "FILE")]
        validator_password_file: Option<PathBuf>,
        /// File holding the validator's second-factor code.
        #[arg(long, env = "PIVAULT_VALIDATOR_CODE_FILE", value_name = "FILE")]
        validator_code_file: Option<PathBuf>,
        /// Where to write the certificate (outside the vault directory; not overwritten).
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// Where to write the whole audit trail (JSON lines, `pivault audit
        /// verify --file`; outside the vault directory; not overwritten).
        #[arg(long, value_name = "FILE")]
        audit_out: PathBuf,
        /// The business whose vault it is (named on the certificate).
        #[arg(long, value_name = "NAME", default_value = "")]
        data_owner: String,
        /// Its address.
        #[arg(long, value_name = "TEXT")]
        data_owner_address: Option<String>,
        /// Why the vault is deleted (no personal information).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// The vault's ID, confirming which vault is deleted (else asked for
        /// on a terminal).
        #[arg(long, value_name = "VAULT_ID")]
        confirm: Option<String>,
        /// Show what would be destroyed and what stops it; change nothing.
        #[arg(long, conflicts_with = "resume")]
        dry_run: bool,
        /// Finish a deletion that was stopped (killed, or its cluster's
        /// primary lost) after the vault's directory was marked deleted:
        /// nothing was destroyed (the vault opens again), or the purge's
        /// checks run now and the certificate is issued. The deletion's own
        /// signers authorised it; this takes the custodian's passphrase.
        #[arg(long)]
        resume: bool,
    },
    /// List the vaults on the provider's cluster: vault ID, database role,
    /// keystore size, whether the role is shared. Never a key or a record.
    List {
        /// The provider's keystore.json.
        #[arg(long, value_name = "FILE")]
        provider: PathBuf,
    },
}

/// A keystore cluster file (`keystore.json` form).
pub(crate) fn read_cluster_file(f: &Path) -> anyhow::Result<PgConfig> {
    let bytes = std::fs::read(f)
        .with_context(|| format!("reading the keystore cluster file {}", f.display()))?;
    let cfg: PgConfig = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a keystore cluster file", f.display()))?;
    cfg.validate()?;
    Ok(cfg)
}

pub(crate) fn cmd_vault(cli: &Cli, out: &Out, c: &VaultCmd) -> anyhow::Result<u8> {
    match c {
        VaultCmd::Create { provider, init } => {
            if init.keystore_cluster.is_some() {
                bail!(
                    "vault create makes the vault's own role on --provider's cluster; --keystore-cluster is for `pivault init`"
                );
            }
            let provider = read_cluster_file(provider)?;
            crate::cmd_init(cli, out, init, Some(&provider))
        }
        VaultCmd::Delete { .. } => delete(cli, out, c),
        VaultCmd::List { provider } => {
            let provider = read_cluster_file(provider)?;
            let vaults = vault_core::keystore::provider::list(&provider)?;
            let items: Vec<Value> = vaults
                .iter()
                .map(|v| {
                    json!({
                        "vault_id": v.vault_id.to_string(),
                        "role": v.role,
                        "keystore_bytes": v.keystore_bytes,
                        "shared_role": v.shared_role,
                    })
                })
                .collect();
            out.data("vault-list", json!({ "items": items }), || {
                let mut s = format!("{} vault(s) on the cluster\n", vaults.len());
                for v in &vaults {
                    s.push_str(&format!(
                        "{}  role {}  keystore {} bytes{}\n",
                        v.vault_id,
                        v.role,
                        v.keystore_bytes,
                        if v.shared_role {
                            "  (role shared with other vaults)"
                        } else {
                            ""
                        }
                    ));
                }
                s.trim_end().to_owned()
            });
            Ok(exit::OK)
        }
    }
}

/// `pivault vault delete`.
fn delete(cli: &Cli, out: &Out, c: &VaultCmd) -> anyhow::Result<u8> {
    let VaultCmd::Delete {
        provider,
        validator,
        validator_password_file,
        validator_code_file,
        certificate,
        audit_out,
        data_owner,
        data_owner_address,
        reason,
        confirm,
        dry_run,
        resume,
    } = c
    else {
        unreachable!()
    };
    crate::custodian_only(cli, "vault delete")?;
    let dir = crate::vault_dir(cli)?;
    let provider = provider.as_deref().map(read_cluster_file).transpose()?;
    let canon_dir = std::fs::canonicalize(dir)
        .with_context(|| format!("no vault directory at {}", dir.display()))?;
    for f in [certificate, audit_out] {
        if f.exists() {
            bail!("{} exists already: give a new file", f.display());
        }
        let parent = match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent = std::fs::canonicalize(parent)
            .with_context(|| format!("no directory for {}", f.display()))?;
        if parent.starts_with(&canon_dir) {
            bail!(
                "{} is inside the vault directory, which is removed: keep the certificate and the trail outside it",
                f.display()
            );
        }
    }
    let keystore = vault_core::keystore::postgres::PgConfig::read(dir)?;
    if *resume {
        let pass = crate::secret(
            cli.passphrase_file.as_deref(),
            "Vault passphrase: ",
            "vault passphrase",
            "PIVAULT_PASSPHRASE_FILE",
        )?;
        return match vault_core::vault::decommission::resume_deletion(dir, &pass)? {
            vault_core::vault::decommission::Resumed::NothingDeleted { vault_id } => {
                let v = json!({ "vault_id": vault_id, "deleted": false });
                out.data("vault-delete-resumed", v, || {
                    "nothing was deleted: the deletion stopped before the vault's keys were dropped; the vault opens again\n".to_owned()
                });
                Ok(exit::OK)
            }
            vault_core::vault::decommission::Resumed::Deleted(done) => hand_over(
                out,
                &done,
                certificate,
                audit_out,
                provider.as_ref(),
                keystore.as_ref(),
            ),
        };
    }
    let validator = validator
        .as_deref()
        .expect("clap: --validator without --resume");
    let vault = crate::open_vault(cli)?;
    let session = crate::login(cli, &vault)?;
    let id = vault.id();
    if *dry_run {
        let plan = vault.plan_deletion(&session)?;
        let v = plan_json(&plan);
        out.data("vault-delete-plan", v, || plan_text(&plan));
        let code = if plan.problems.is_empty() {
            exit::OK
        } else {
            exit::POLICY
        };
        return Ok(crate::after_close(out, code, vault.close()));
    }
    let pw = crate::secret(
        validator_password_file.as_deref(),
        &format!("Password for {validator}: "),
        "validator's password",
        "PIVAULT_VALIDATOR_PASSWORD_FILE",
    )?;
    let second = crate::two_factor::login(
        &vault,
        validator,
        &pw,
        validator_code_file.as_deref(),
        vault_core::vault::Context::cli(),
    )?;
    let typed = match confirm {
        Some(t) => t.trim().to_owned(),
        None if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() => {
            eprint!(
                "This destroys vault {id} and every record in it, for good.\nType the vault's ID to go on: "
            );
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
        None => bail!("give --confirm VAULT_ID (this vault's ID) to delete it"),
    };
    let confirm_id: vault_core::ids::VaultId = typed
        .parse()
        .map_err(|_| anyhow::anyhow!("the confirmation is not a vault ID"))?;
    let parties = vault_core::vault::DeletionParties {
        data_owner: data_owner.clone(),
        data_owner_address: data_owner_address.clone(),
        reason: reason.clone(),
    };
    let done = vault.delete_vault(&session, &second, confirm_id, &parties)?;
    hand_over(
        out,
        &done,
        certificate,
        audit_out,
        provider.as_ref(),
        keystore.as_ref(),
    )
}

/// A deleted vault's certificate and trail written (new files), then its
/// directory removed and its role dropped.
fn hand_over(
    out: &Out,
    done: &vault_core::vault::VaultDeleted,
    certificate: &Path,
    audit_out: &Path,
    provider: Option<&PgConfig>,
    keystore: Option<&PgConfig>,
) -> anyhow::Result<u8> {
    let id = done.certificate.body["vault"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // The certificate and the trail first: the directory goes only once
    // they are on disk.
    write_new(certificate, done.certificate.to_file_json().as_bytes())?;
    write_new(audit_out, done.audit_trail.as_bytes())?;
    done.remove_directory()?;
    let mut role_dropped = Value::Null;
    if let (Some(p), Some(k)) = (provider, keystore) {
        role_dropped = match vault_core::keystore::provider::drop_role(p, &k.user) {
            Ok(()) => json!(k.user),
            Err(e) => {
                out.warn(
                    "role_not_dropped",
                    &format!(
                        "the vault is deleted, but its database role {} was not dropped ({e}): drop it with pivault_provision.drop_vault_role",
                        k.user
                    ),
                );
                Value::Null
            }
        };
    }
    let cert_key = vault_core::certificate::public_key_pem(&done.certificate_key);
    let audit_key = vault_core::certificate::public_key_pem(&done.audit_key);
    let v = json!({
        "vault_id": id,
        "certificate_id": done.certificate.body["certificate_id"],
        "certificate": certificate.display().to_string(),
        "audit_trail": audit_out.display().to_string(),
        "audit_to_seq": done.audit_to_seq,
        "certificate_public_key": cert_key,
        "audit_public_key": audit_key,
        "records": done.certificate.body["target"]["record_count"],
        "role_dropped": role_dropped,
        "directory_removed": done.dir.display().to_string(),
    });
    out.data("vault-deleted", v, || {
        format!(
            "deleted vault {id}: {} record(s); certificate {} in {}, audit trail in {}\n\
             verify offline: pivault certificate verify {} --key KEY (the vault's certificate key:)\n{cert_key}",
            done.certificate.body["target"]["record_count"],
            done.certificate.body["certificate_id"].as_str().unwrap_or_default(),
            certificate.display(),
            audit_out.display(),
            certificate.display(),
        )
    });
    Ok(exit::OK)
}

/// Writes a file that must not exist yet, mode 0600, synced.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn plan_json(p: &vault_core::vault::DeletionPlan) -> Value {
    json!({
        "vault_id": p.vault_id, "records": p.records, "subjects": p.subjects,
        "disposed": p.disposed, "collections": p.collections, "holds": p.holds,
        "backups": p.backups, "keystore_engine": p.keystore_engine,
        "records_engine": p.records_engine, "problems": p.problems,
        "can_delete": p.problems.is_empty(),
    })
}

fn plan_text(p: &vault_core::vault::DeletionPlan) -> String {
    let mut s = format!(
        "vault {}: {} record(s) of {} subject(s) in {} collection(s), {} already disposed of, {} backup(s) (crypto-erased with it); keystore on {}, records on {}\n",
        p.vault_id,
        p.records,
        p.subjects,
        p.collections.len(),
        p.disposed,
        p.backups,
        p.keystore_engine,
        p.records_engine
    );
    if p.problems.is_empty() {
        s.push_str("nothing stops its deletion");
    } else {
        s.push_str("cannot be deleted now:\n");
        for m in &p.problems {
            s.push_str(&format!("  - {m}\n"));
        }
    }
    s.trim_end().to_owned()
}
