//! A service provider's keystore cluster (issue 16): many businesses'
//! vaults on one cluster, each with a database role of its own.
//!
//! The provider's operator holds a role (`pivault_provider`,
//! `scripts/keystore-cluster.sql`) that may call one function,
//! `pivault_provision.create_vault_role`, and read the catalog: not
//! `CREATEROLE`, which in PostgreSQL can grant itself any other role, a
//! vault's too. [`provision`] has it create a login role
//! `pvr_<random>` for a new vault, a member of the group `pivault_vaults`
//! (which may checkpoint, switch WAL, read statistics and call the
//! verification scan: what a purge needs), with a random password sent to
//! the server only as a SCRAM-SHA-256 verifier (computed here, as `psql`'s
//! `\password` does, so no log or statement ever carries it). The vault's
//! role then creates its own schema: the owner, and the only role that can
//! read, change or drop it. One vault's credentials reach no other vault,
//! and the operator's reach none.

use std::path::Path;

use postgres::Client;

use super::postgres::{PgConfig, pg, primary_of};
use crate::error::Result;
use crate::fsutil;
use crate::ids::VaultId;
use crate::secret::SecretString;

/// The group every vault's role joins.
pub const VAULT_GROUP: &str = "pivault_vaults";

/// The vault role's password file, in the vault directory (mode 0600).
pub const PASSWORD_FILE: &str = "keystore.password";

/// A vault role made by [`provision`], not yet holding a schema.
pub(crate) struct Provisioned {
    /// The vault's `keystore.json`: the provider's cluster, the new role.
    pub cfg: PgConfig,
}

/// Creates a login role for a new vault whose directory is `dir` (which
/// exists and is empty) and writes its password to `dir/keystore.password`.
pub(crate) fn provision(provider: &PgConfig, dir: &Path) -> Result<Provisioned> {
    provider.validate()?;
    let provider_pw = provider.password()?;
    let mut id = [0u8; 10];
    crate::crypto::fill_random(&mut id);
    let role = format!("pvr_{}", hex::encode(id));
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    crate::crypto::fill_random(&mut raw[..]);
    let password = SecretString::new(hex::encode(&raw[..]));
    let verifier = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    let path = dir.join(PASSWORD_FILE);
    {
        let mut f = fsutil::create_private_file(&path)?;
        std::io::Write::write_all(&mut f, password.expose().as_bytes())?;
        f.sync_all()?;
    }
    // Parameters: the server's logs never carry them (log_parameter_max_length=0).
    let made = primary_of(provider, &provider_pw).and_then(|mut c| {
        c.execute(
            "SELECT pivault_provision.create_vault_role($1, $2)",
            &[&role, &verifier],
        )
        .map_err(pg)
    });
    if let Err(e) = made {
        // No role: the directory is left as empty as it was found.
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(Provisioned {
        cfg: PgConfig {
            engine: "postgresql".into(),
            members: provider.members.clone(),
            database: provider.database.clone(),
            user: role,
            password_file: path,
            ca_file: provider.ca_file.clone(),
        },
    })
}

/// Undoes [`provision`] after a vault creation that failed: the role's
/// objects (a half-made schema) and the role itself. Best effort; what is
/// left shows in [`list`].
pub(crate) fn withdraw(provider: &PgConfig, p: &Provisioned, records: Option<&PgConfig>) {
    // What the role made in each database it reached (its records schema
    // too), then the role.
    for cfg in std::iter::once(&p.cfg).chain(records) {
        if let Ok(pw) = cfg.password()
            && let Ok(mut c) = primary_of(cfg, &pw)
        {
            let _ = c.batch_execute("DROP OWNED BY CURRENT_USER");
        }
    }
    if let Ok(pw) = provider.password()
        && let Ok(mut c) = primary_of(provider, &pw)
    {
        let _ = c.execute(
            "SELECT pivault_provision.drop_vault_role($1)",
            &[&p.cfg.user],
        );
    }
    let _ = std::fs::remove_file(&p.cfg.password_file);
}

/// Drops a deleted vault's role (`pivault vault delete --provider`): the
/// cluster refuses while the role still owns a schema, so only a vault
/// whose keystore and records are gone loses its role.
pub fn drop_role(provider: &PgConfig, role: &str) -> Result<()> {
    provider.validate()?;
    let pw = provider.password()?;
    let mut c = primary_of(provider, &pw)?;
    c.execute("SELECT pivault_provision.drop_vault_role($1)", &[&role])
        .map_err(pg)?;
    Ok(())
}

/// One vault on the cluster, as the operator sees it: no key, no record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostedVault {
    pub vault_id: VaultId,
    /// The database role that owns the vault's keystore.
    pub role: String,
    /// Bytes of its keystore tables and their indexes on the primary.
    pub keystore_bytes: i64,
    /// Whether that role owns other vaults' keystores too (a vault made
    /// with `pivault init --keystore-cluster` and a shared role).
    pub shared_role: bool,
}

/// Every vault keystore on the provider's cluster.
pub fn list(provider: &PgConfig) -> Result<Vec<HostedVault>> {
    provider.validate()?;
    let pw = provider.password()?;
    let mut c = primary_of(provider, &pw)?;
    list_on(&mut c)
}

fn list_on(c: &mut Client) -> Result<Vec<HostedVault>> {
    // Sizes come from the catalog: no privilege on the tables is needed,
    // and none is held.
    let rows = c
        .query(
            "SELECT n.nspname, r.rolname,
                    coalesce((SELECT sum(pg_total_relation_size(t.oid)) FROM pg_class t
                               WHERE t.relnamespace = n.oid AND t.relkind = 'r'), 0)::bigint,
                    (SELECT count(*) FROM pg_namespace o WHERE o.nspowner = n.nspowner
                        AND o.nspname LIKE 'pv\\_%') > 1
               FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
              WHERE n.nspname LIKE 'pv\\_%'
              ORDER BY n.nspname",
            &[],
        )
        .map_err(pg)?;
    let mut out = Vec::new();
    for r in rows {
        let schema: String = r.get(0);
        let Some(vault_id) = vault_of_schema(&schema) else {
            continue;
        };
        out.push(HostedVault {
            vault_id,
            role: r.get(1),
            keystore_bytes: r.get(2),
            shared_role: r.get(3),
        });
    }
    Ok(out)
}

/// `pv_<32 hex digits>` → the vault's ID.
fn vault_of_schema(schema: &str) -> Option<VaultId> {
    let hex = schema.strip_prefix("pv_")?;
    let bytes: [u8; 16] = hex::decode(hex).ok()?.try_into().ok()?;
    Some(VaultId::from_bytes(bytes))
}

/// The other vaults' keystores this role could read or change: none, for a
/// role made by [`provision`] (doctor's `keystore-cluster-isolation`).
pub(crate) fn reachable_others(c: &mut Client, own_schema: &str) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT nspname FROM pg_namespace
              WHERE nspname LIKE 'pv\\_%' AND nspname <> $1
                AND (has_schema_privilege(current_user, oid, 'USAGE')
                     OR has_schema_privilege(current_user, oid, 'CREATE'))
              ORDER BY nspname",
            &[&own_schema],
        )
        .map_err(pg)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A vault directory's role, for a test or an operator's check: connects as
/// the vault's own role and reports the other keystores it could reach.
pub fn reachable_from(vault_cfg: &PgConfig, vault: VaultId) -> Result<Vec<String>> {
    let pw = vault_cfg.password()?;
    let mut c = primary_of(vault_cfg, &pw)?;
    reachable_others(&mut c, &format!("pv_{}", hex::encode(vault.as_bytes())))
}

/// A connection as the given role to the cluster's primary (tests that try
/// what a stolen vault or operator credential can do).
pub fn connect_primary(cfg: &PgConfig) -> Result<Client> {
    let pw = cfg.password()?;
    primary_of(cfg, &pw)
}
