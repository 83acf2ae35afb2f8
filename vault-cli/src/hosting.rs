//! `pivault vault …`: a service provider's vaults on one keystore cluster
//! (issue 16). The provider's operator creates each business's vault with
//! a database role of its own and lists them; the operator's own role
//! (in `--provider FILE`, a `keystore.json`) can create roles and reads no
//! vault's keys, and these commands show no record and no key.

use std::path::{Path, PathBuf};

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
