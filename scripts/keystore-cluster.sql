-- Set-up of a keystore cluster, run once by its superuser on the primary
-- (scripts/cluster.sh does; `psql -v pw=PASSWORD -f keystore-cluster.sql`).
-- Everything here replicates to the standbys.
--
-- The vault's role `pivault` owns its keystore database (so it can
-- VACUUM FULL its own tables) and may checkpoint, switch WAL and read
-- server statistics; it may NOT read the server's files. The byte scan of
-- disposal verification runs in `pivault_verify.scan`, a SECURITY DEFINER
-- function owned by the superuser that answers a file name and whether it
-- holds a needle, never a byte of any file.

CREATE ROLE pivault LOGIN PASSWORD :'pw';
CREATE DATABASE pivault_keys OWNER pivault;
GRANT pg_checkpoint TO pivault;
GRANT pg_monitor TO pivault;

\connect pivault_keys
-- Function privileges are per database: granted where the vault connects.
GRANT EXECUTE ON FUNCTION pg_switch_wal() TO pivault;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA pivault_verify;
REVOKE ALL ON SCHEMA pivault_verify FROM PUBLIC;
GRANT USAGE ON SCHEMA pivault_verify TO pivault;

-- Every regular file under the data directory, and whether it contains any
-- of `needles`. Files that vanish during the walk (a checkpoint removing a
-- WAL segment) are skipped; `postmaster.pid` and the like hold no row.
CREATE FUNCTION pivault_verify.scan(needles bytea[], OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  todo text[] := ARRAY['.'];
  d text;
  e text;
  p text;
  st record;
  content bytea;
  n bytea;
BEGIN
  WHILE coalesce(array_length(todo, 1), 0) > 0 LOOP
    d := todo[1];
    todo := todo[2:];
    FOR e IN SELECT pg_ls_dir(d, true, false) LOOP
      p := CASE WHEN d = '.' THEN e ELSE d || '/' || e END;
      SELECT * INTO st FROM pg_stat_file(p, true);
      IF st.size IS NULL THEN CONTINUE; END IF;
      IF st.isdir THEN
        todo := todo || p;
        CONTINUE;
      END IF;
      content := pg_read_binary_file(p, 0, st.size, true);
      IF content IS NULL THEN CONTINUE; END IF;
      path := p;
      hit := false;
      FOREACH n IN ARRAY needles LOOP
        IF position(n IN content) > 0 THEN
          hit := true;
          EXIT;
        END IF;
      END LOOP;
      RETURN NEXT;
    END LOOP;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.scan(bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.scan(bytea[]) TO pivault;

-- Whether a file (a relation's old file after VACUUM FULL) is still there.
CREATE FUNCTION pivault_verify.file_exists(p text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT (pg_stat_file(p, true)).size IS NOT NULL $$;
REVOKE ALL ON FUNCTION pivault_verify.file_exists(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.file_exists(text) TO pivault;
