-- Set-up of a keystore cluster, run once by its superuser on the primary
-- (scripts/cluster.sh does; `psql -v pw=PASSWORD -v provider_pw=PASSWORD
-- -f keystore-cluster.sql`). Everything here replicates to the standbys.
--
-- Roles:
-- - `pivault_vaults` (no login): what a vault's purge needs, and nothing
--   more: checkpoint, switch WAL, list the WAL segments' names, create its
--   own schema in `pivault_keys`, call the verification scan and see what
--   holds back a purge (`pivault_verify.horizon_blockers`: not every
--   session's statistics, `pg_monitor`, which showed it every other vault's
--   sessions and their statements). It may NOT read
--   the server's files: the byte scan of disposal verification runs in
--   `pivault_verify.scan`, a SECURITY DEFINER function owned by the
--   superuser that answers a file name and whether it holds a needle,
--   never a byte of any file.
-- - one login role per vault, `pvr_<random>`, a member of `pivault_vaults`,
--   made by `pivault vault create`: it owns its vault's schema, the only
--   role that can read, change or drop it.
-- - `pivault_provider`: the provider's operator. Not CREATEROLE (which in
--   PostgreSQL can grant itself any role, a vault's too): it may only call
--   `pivault_provision.create_vault_role`, which makes a `pvr_` role in
--   `pivault_vaults` and nothing else, and read the catalog. It is granted
--   no vault's schema.
-- - `pivault`: one role shared by vaults made with `pivault init
--   --keystore-cluster` (a single business, or the tests); `doctor` warns
--   when it reaches another vault's keystore.

SET search_path = pg_catalog, pg_temp;
CREATE ROLE pivault_vaults NOLOGIN;
GRANT pg_checkpoint TO pivault_vaults;
CREATE ROLE pivault LOGIN PASSWORD :'pw' IN ROLE pivault_vaults;
CREATE ROLE pivault_provider LOGIN PASSWORD :'provider_pw';
-- Owned by the superuser, not a vault's role (a database's owner may set
-- its sessions' defaults and owns its `public` schema), and every
-- session's search path the catalog alone: a vault's role may create
-- schemas, and one named after another role (a vault's, or `postgres`,
-- the superuser's "$user") held functions that the default path
-- (`"$user", public`) preferred to the catalog's own, and ran them as that
-- role. The vault's connections set the same path themselves.
CREATE DATABASE pivault_keys;
ALTER DATABASE pivault_keys SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON DATABASE pivault_keys FROM PUBLIC;
GRANT CONNECT, CREATE ON DATABASE pivault_keys TO pivault_vaults;
GRANT CONNECT ON DATABASE pivault_keys TO pivault_provider;

\connect pivault_keys
-- Function privileges are per database: granted where the vault connects.
GRANT EXECUTE ON FUNCTION pg_switch_wal() TO pivault_vaults;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA pivault_verify;
REVOKE ALL ON SCHEMA pivault_verify FROM PUBLIC;
GRANT USAGE ON SCHEMA pivault_verify TO pivault_vaults;

-- The provider's one power: a new vault's login role, named `pvr_` and 20
-- hex digits, in `pivault_vaults`, with a SCRAM-SHA-256 verifier made by
-- the client (the password never reaches the server).
CREATE SCHEMA pivault_provision;
REVOKE ALL ON SCHEMA pivault_provision FROM PUBLIC;
GRANT USAGE ON SCHEMA pivault_provision TO pivault_provider;
CREATE FUNCTION pivault_provision.create_vault_role(role text, verifier text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF role !~ '^pvr_[0-9a-f]{20}$' THEN
    RAISE EXCEPTION 'not a vault role name';
  END IF;
  IF verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
    RAISE EXCEPTION 'not a SCRAM-SHA-256 verifier';
  END IF;
  -- CONNECTION LIMIT: vault_core::keystore::postgres::ROLE_CONNECTION_LIMIT
  -- (a vault works with 8 per store, keystore and records, plus the
  -- records store's lock; a purge adds one per member): a stolen
  -- credential cannot take the connections every other vault needs.
  EXECUTE format('CREATE ROLE %I LOGIN CONNECTION LIMIT 24 PASSWORD %L IN ROLE pivault_vaults', role, verifier);
END
$$;
REVOKE ALL ON FUNCTION pivault_provision.create_vault_role(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_provision.create_vault_role(text, text) TO pivault_provider;

-- Undoes a creation that failed: only a `pvr_` role that owns nothing (a
-- role that owns a keystore cannot be dropped).
CREATE FUNCTION pivault_provision.drop_vault_role(role text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF role !~ '^pvr_[0-9a-f]{20}$' THEN
    RAISE EXCEPTION 'not a vault role name';
  END IF;
  EXECUTE format('DROP ROLE IF EXISTS %I', role);
END
$$;
REVOKE ALL ON FUNCTION pivault_provision.drop_vault_role(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_provision.drop_vault_role(text) TO pivault_provider;

-- The walk of the data directory that both scans share, and the scan
-- narrowed to one vault's files (a separate file, so that a cluster set up
-- by an earlier build can add them).
\ir verify-scan-vault.sql

-- Every regular file under the data directory, and whether it contains any
-- of `needles`. Files that vanish during the walk (a checkpoint removing a
-- WAL segment) are skipped; `postmaster.pid` and the like hold no row.
-- The superuser's (a provider's own check): granted to no vault role, to
-- which it would answer whether chosen bytes are in any vault's files
-- (vaults scan with `scan_vault`; verify-scan-vault.sql takes back the
-- grant an earlier build gave).
CREATE FUNCTION pivault_verify.scan(needles bytea[], OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.walk(needles, '{}'::jsonb, NULL) $$;
REVOKE ALL ON FUNCTION pivault_verify.scan(bytea[]) FROM PUBLIC;

-- The records database (`pivault init --records-cluster`): each vault's
-- records, users, sessions, disposal batches and certificates in a schema
-- `pr_<vault id>` its role owns. A copy of `pivault_keys` as set up above
-- (same schemas, functions and grants, no vault yet): the beacon purge
-- after a disposal runs the same recipe and the same verification scan.
-- On a records cluster of its own, this script is run there as well.
\connect postgres
CREATE DATABASE pivault_records TEMPLATE pivault_keys;
ALTER DATABASE pivault_records SET search_path = pg_catalog, pg_temp;
REVOKE ALL ON DATABASE pivault_records FROM PUBLIC;
GRANT CONNECT, CREATE ON DATABASE pivault_records TO pivault_vaults;
GRANT CONNECT ON DATABASE pivault_records TO pivault_provider;

-- The records database's append-only audit trails (a separate file, so a
-- cluster set up by an earlier build gets them with
-- `psql -d pivault_records -f scripts/records-audit.sql` as its superuser).
\connect pivault_records
\ir records-audit.sql
