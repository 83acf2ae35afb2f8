//! `pivault service …`: service accounts, a script's own credential (a
//! retention runner that may dispose of what is past retention and read
//! certificates, never read a record). The token is shown once: on stdout,
//! or written to `--token-file` (mode 0600) so it never passes a terminal.
//! A script then sets `PIVAULT_SERVICE_TOKEN_FILE` and needs no user,
//! password or terminal.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};
use vault_core::access::Role;
use vault_core::vault::{Session, Vault};
use vault_core::views;

use crate::exit;
use crate::output::{self, Out};
use crate::remote::{Remote, url_part};

#[derive(Subcommand, Debug)]
pub enum ServiceCmd {
    /// Add a service account and print its token once (officer: you must
    /// hold every permission of its role).
    Add {
        /// Its name (e.g. nightly-retention).
        name: String,
        /// Its role: retention-runner (the nightly retention script) or
        /// audit-exporter (a log shipper: reads and exports the audit trail only).
        #[arg(long, default_value = "retention-runner")]
        role: String,
        /// Write the token to this file (created with mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// List service accounts and their last use.
    List,
    /// Replace a service account's token: the old one fails its next call.
    Rotate {
        /// Its name.
        name: String,
        /// Write the new token to this file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Revoke a service account: its token fails the next call.
    Revoke {
        /// Its name.
        name: String,
    },
}

/// Runs a service command on a vault opened directly.
pub fn cmd_local(out: &Out, vault: &Vault, s: &Session, c: &ServiceCmd) -> anyhow::Result<u8> {
    match c {
        ServiceCmd::Add {
            name,
            role,
            token_file,
        } => {
            let role = Role::parse(role)?;
            let (id, token) = vault.add_service_account(s, name, role)?;
            let v = views::service_token(id, name, role.as_str(), token.expose());
            deliver(out, v, token_file.as_deref(), "added")
        }
        ServiceCmd::List => {
            let list = vault.list_service_accounts(s)?;
            let v = Value::Array(list.iter().map(views::service_account).collect());
            out.data("service-list", v.clone(), || output::services_text(&v));
            Ok(exit::OK)
        }
        ServiceCmd::Rotate { name, token_file } => {
            let token = vault.rotate_service_token(s, name)?;
            let a = vault
                .service_accounts()?
                .into_iter()
                .find(|a| a.username.as_str() == name)
                .ok_or(vault_core::Error::NotFound("service account"))?;
            let v = views::service_token(a.id, name, a.role.as_str(), token.expose());
            deliver(out, v, token_file.as_deref(), "rotated")
        }
        ServiceCmd::Revoke { name } => {
            let id = vault.revoke_service_account(s, name)?;
            let v = json!({ "user_id": id.to_string(), "username": name, "state": "revoked" });
            out.data("service-revocation", v, || {
                format!("revoked {name}: its token fails from the next call")
            });
            Ok(exit::OK)
        }
    }
}

/// Runs a service command through pivault-server.
pub fn cmd_remote(out: &Out, r: &Remote, c: &ServiceCmd) -> anyhow::Result<u8> {
    match c {
        ServiceCmd::Add {
            name,
            role,
            token_file,
        } => {
            let v = r.post("/v1/services", json!({ "username": name, "role": role }))?;
            deliver(out, v, token_file.as_deref(), "added")
        }
        ServiceCmd::List => {
            let v = r.get("/v1/services")?;
            out.data("service-list", v.clone(), || output::services_text(&v));
            Ok(exit::OK)
        }
        ServiceCmd::Rotate { name, token_file } => {
            let v = r.post(
                &format!("/v1/services/{}/rotate", url_part(name)),
                json!({}),
            )?;
            deliver(out, v, token_file.as_deref(), "rotated")
        }
        ServiceCmd::Revoke { name } => {
            let v = r.call("DELETE", &format!("/v1/services/{}", url_part(name)), None)?;
            out.data("service-revocation", v, || {
                format!("revoked {name}: its token fails from the next call")
            });
            Ok(exit::OK)
        }
    }
}

/// Prints a new token's document, or writes the token to `file` (0600,
/// replacing it atomically) and prints the document without it.
fn deliver(out: &Out, mut v: Value, file: Option<&Path>, verb: &str) -> anyhow::Result<u8> {
    let token = zeroize::Zeroizing::new(v["token"].as_str().unwrap_or_default().to_owned());
    let name = v["username"].as_str().unwrap_or_default().to_owned();
    let role = v["role"].as_str().unwrap_or_default().to_owned();
    match file {
        Some(path) => {
            write_private(path, token.as_bytes()).with_context(|| {
                format!(
                    "service account {name} is {verb}, but its token could not be kept: \
                     run `pivault service rotate {name} --token-file FILE` for a new one"
                )
            })?;
            v["token"] = Value::Null;
            v["token_file"] = json!(path.display().to_string());
            out.data("service-token", v, || {
                format!(
                    "{verb} service account {name} ({role}); its token is in {} (mode 0600)",
                    path.display()
                )
            });
        }
        None => {
            let text = format!(
                "{verb} service account {name} ({role}); its token, shown this once:\n{}",
                token.as_str()
            );
            out.data("service-token", v, || text);
        }
    }
    Ok(exit::OK)
}

/// Writes a secret file readable only by its owner: a fresh file beside
/// the target, renamed over it, so no reader sees a half-written token.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("pivault-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}
