-- The verification scan narrowed to one vault, and the purge's last resort
-- against another vault's old transaction (run by the superuser in
-- `pivault_keys` by keystore-cluster.sql, before `pivault_records` is
-- copied from it; on a cluster set up by an earlier build, run it in both
-- databases: `psql -d pivault_keys -f scripts/verify-scan-vault.sql`, then
-- `-d pivault_records`; until then the vault falls back to `scan`). The
-- functions are replaced if there: run again, the file brings an earlier
-- build's functions up to date.
--
-- A cluster set up by an earlier build: its databases owned by the
-- superuser, their sessions' search path the catalog alone (keystore-
-- cluster.sql says why), and this script's own too.
SET search_path = pg_catalog, pg_temp;
DO $$
BEGIN
  EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), current_user);
  EXECUTE format('ALTER DATABASE %I SET search_path = pg_catalog, pg_temp', current_database());
END
$$;

-- Every regular file under the data directory and whether it contains any
-- of `needles`, but for the relation files named in `others`, with `here`
-- the directories of databases other than `here`, and with `wal_after`
-- (a WAL segment's name) the WAL segments past its position (answered
-- with `hit` NULL, unread). Files that vanish during the walk (a
-- checkpoint removing a WAL segment) are skipped.
--
-- `wal_after` is the segment that held a purge's last write: a later
-- segment was written after the purged relation files were unlinked and
-- their pages dropped from shared buffers, so no page of them, and no
-- deleted row, can be in it (a session would have to write the bytes
-- again from its own memory). The segments at or before it are read,
-- whatever their timeline (a new timeline's first segment copies the old
-- one's): a purge that skipped its WAL rounds leaves them, and the scan
-- finds the key there. Only names of exactly 24 hex digits are skipped
-- (`.partial`, `.history` and `archive_status` are read). With `wal_after`
-- empty the whole `pg_wal` directory is skipped (one row, unread).
--
-- A file is read in pieces of `piece` bytes, each overlapping the next by
-- the longest needle less one byte: a relation's file segment is up to
-- 1 GiB, and one value holds less (read whole, such a file failed every
-- scan, a vault's own big table's or another role's table's alike).
--
-- Only the files (and skipped entries) whose path hashes to `part` of
-- `parts` (a power of two, up to 64) are read or answered; directories
-- are walked in every part, so the parts together answer each file once.
-- A standby cancels a statement whose snapshot conflicts with the WAL it
-- replays once replay has waited `max_standby_streaming_delay`, and at
-- once while it lags that far: the vault runs a canceled scan again in
-- shorter parts, down to one walk of the directories each. (Up to 64: a
-- role's probe of one file it may read costs a 64th of a scan, no less.)
CREATE OR REPLACE FUNCTION pivault_verify.walk(needles bytea[], others jsonb, here text,
                                    wal_after text, piece integer,
                                    part integer, parts integer,
                                    OUT path text, OUT hit boolean)
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
  overlap bigint := coalesce((SELECT max(length(x)) FROM unnest(needles) x), 1) - 1;
  at_byte bigint;
  gone boolean;
BEGIN
  IF piece IS NULL OR piece <= overlap OR piece > 268435456 THEN
    RAISE EXCEPTION 'a piece of % bytes for needles of up to % bytes', piece, overlap + 1
      USING ERRCODE = '22023';
  END IF;
  IF parts IS NULL OR parts < 1 OR parts > 64 OR (parts & (parts - 1)) <> 0
     OR part IS NULL OR part < 0 OR part >= parts THEN
    RAISE EXCEPTION 'part % of % parts (parts: a power of two up to 64)', part, parts
      USING ERRCODE = '22023';
  END IF;
  WHILE coalesce(array_length(todo, 1), 0) > 0 LOOP
    d := todo[1];
    todo := todo[2:];
    FOR e IN SELECT pg_ls_dir(d, true, false) LOOP
      p := CASE WHEN d = '.' THEN e ELSE d || '/' || e END;
      IF (here IS NOT NULL AND d = 'base' AND e ~ '^[0-9]+$' AND e <> here)
         OR (wal_after = '' AND p = 'pg_wal')
         OR (wal_after IS NOT NULL AND d = 'pg_wal' AND e ~ '^[0-9A-F]{24}$'
             AND substr(e, 9) > substr(wal_after, 9))
         OR others ? regexp_replace(p, '[._][^/]*$', '') THEN
        CONTINUE WHEN (hashtext(p) & (parts - 1)) <> part;
        path := p;
        hit := NULL;
        RETURN NEXT;
        CONTINUE;
      END IF;
      SELECT * INTO st FROM pg_stat_file(p, true);
      IF st.size IS NULL THEN CONTINUE; END IF;
      IF st.isdir THEN
        todo := todo || p;
        CONTINUE;
      END IF;
      CONTINUE WHEN (hashtext(p) & (parts - 1)) <> part;
      path := p;
      hit := false;
      gone := false;
      at_byte := 0;
      WHILE NOT hit LOOP
        content := pg_read_binary_file(p, at_byte, piece, true);
        IF content IS NULL THEN
          gone := true;
          EXIT;
        END IF;
        FOREACH n IN ARRAY needles LOOP
          IF position(n IN content) > 0 THEN
            hit := true;
            EXIT;
          END IF;
        END LOOP;
        -- The file's end (a file grown since its size was read is read on).
        EXIT WHEN length(content) < piece;
        at_byte := at_byte + piece - overlap;
      END LOOP;
      IF gone AND NOT hit THEN CONTINUE; END IF;
      RETURN NEXT;
    END LOOP;
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.walk(bytea[], jsonb, text, text, integer, integer, integer) FROM PUBLIC;

-- Whole (the earlier builds' signature).
CREATE OR REPLACE FUNCTION pivault_verify.walk(needles bytea[], others jsonb, here text,
                                    wal_after text, piece integer,
                                    OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.walk(needles, others, here, wal_after, piece, 0, 1) $$;
REVOKE ALL ON FUNCTION pivault_verify.walk(bytea[], jsonb, text, text, integer) FROM PUBLIC;

-- In pieces of 64 MiB.
CREATE OR REPLACE FUNCTION pivault_verify.walk(needles bytea[], others jsonb, here text,
                                    wal_after text,
                                    OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.walk(needles, others, here, wal_after, 67108864) $$;
REVOKE ALL ON FUNCTION pivault_verify.walk(bytea[], jsonb, text, text) FROM PUBLIC;

-- Whether a relation's file from before a purge (`pg_relation_filepath`)
-- is still there. Any other path is refused: the function runs as the
-- superuser, and answered any vault's role whether any file on the host
-- existed.
CREATE OR REPLACE FUNCTION pivault_verify.file_exists(p text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p !~ '^(base/[0-9]+|pg_tblspc/[0-9]+/PG_[0-9A-Za-z_.]+/[0-9]+)/[0-9]+$' THEN
    RAISE EXCEPTION 'not a relation''s file' USING ERRCODE = '22023';
  END IF;
  RETURN (pg_stat_file(p, true)).size IS NOT NULL;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.file_exists(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.file_exists(text) TO pivault_vaults;

-- Which of `paths` (files under the data directory a disposal's byte scan
-- found a needle in, as `walk` answered them) are still there: what a
-- retry whose needles went with an ended process can check. Only paths
-- relative to the data directory that do not climb out of it (no leading
-- `/`, no `..` component) are answered, at most 1,000 a call: the function
-- runs as the superuser, and is no oracle for files elsewhere (the vault's
-- role already learns the data directory's names from `walk`).
CREATE OR REPLACE FUNCTION pivault_verify.present(paths text[]) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p text;
  there text[] := '{}';
BEGIN
  IF cardinality(paths) > 1000 THEN
    RAISE EXCEPTION 'more than 1000 paths' USING ERRCODE = '22023';
  END IF;
  FOREACH p IN ARRAY coalesce(paths, '{}') LOOP
    IF p IS NULL OR p = '' OR p ~ '^/' OR p ~ '(^|/)[.][.](/|$)' THEN
      RAISE EXCEPTION 'not a path under the data directory' USING ERRCODE = '22023';
    END IF;
    IF (pg_stat_file(p, true)).size IS NOT NULL THEN
      there := there || p;
    END IF;
  END LOOP;
  RETURN there;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.present(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.present(text[]) TO pivault_vaults;

-- The earlier builds' signature (`scan` calls it): every WAL segment read.
CREATE OR REPLACE FUNCTION pivault_verify.walk(needles bytea[], others jsonb, here text,
                                    OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.walk(needles, others, here, NULL) $$;
REVOKE ALL ON FUNCTION pivault_verify.walk(bytea[], jsonb, text) FROM PUBLIC;

-- As `pivault_verify.scan`, but the files of other databases and of other
-- vaults' relations (the schemas `pv_`/`pr_` and 32 hex digits owned by
-- another role than the caller's, with their TOAST tables and TOAST
-- indexes) are not read: a row of `vault` never reaches them (no other
-- role can read it), and reading them made every vault's disposal pay for
-- the bytes of every vault on the cluster; another role's schema is
-- skipped even when named as `vault` (but by the superuser). Nor are the
-- audit trails' (`pivault_audit`, every vault's lines in one table): a vault's events
-- are IDs, never a value, a tag or a key, and a scan that read them
-- answered any vault's role whether chosen bytes were in another vault's
-- trail (its event count, a line grown byte by byte); the table also grew
-- with every operation of every vault (43 MB a member at 10^5 records, a
-- third of a one-record disposal's search-index scan, benches/README run
-- 14). A schema of the caller's own
-- role is read, whatever its name: a vault's role could copy its own rows
-- there, and vaults sharing one role (`pivault`) are not told apart. Each is
-- answered with `hit` NULL (another database: one row for its directory),
-- so the caller counts and reports what it skipped. Nor is the WAL, but
-- by the superuser: it holds every vault's recent writes, trail lines
-- too, and read it answered any vault's role whether chosen bytes were in
-- another vault's recent writes, over every segment a member keeps. A
-- purge needs none of it read: its rounds leave no segment at or before
-- the one of its last write on a verified member (checked by name,
-- `.partial` files too, which no role's guess can probe), and no later
-- segment can hold a purged byte (`walk`). Nor, whatever their schema's
-- name, relations of another role (but the superuser's) that the caller
-- may not write. Everything else is read: this vault's relations, the
-- catalogs, relations the caller may write, temporary files, logs, and any
-- file no relation names (an old relation file the purge did not remove).
--
-- `tables` (NULL: all) narrows further, as the embedded engine's scan
-- skips the live table files of other column families and of ranges that
-- held no deleted row: of the vault's own relations only those named in
-- `tables`, or named after one of them and `_` (its partitions, its
-- indexes), are read (the search index's partitions that held the deleted
-- tags, which no other table holds).
--
-- `wal_after` (NULL: every segment) as in `walk`, for the superuser: the
-- segment holding the last write of the purge whose bytes the scan looks
-- for. A vault's role reads no segment, whatever it passes.
--
-- `part` of `parts` as in `walk`: the vault runs a scan a standby
-- canceled again in shorter parts.
CREATE OR REPLACE FUNCTION pivault_verify.scan_vault(needles bytea[], vault text, tables text[],
                                          wal_after text, part integer, parts integer,
                                          OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  others jsonb;
BEGIN
  IF vault !~ '^p[vr]_[0-9a-f]{32}$' THEN
    RAISE EXCEPTION 'not a vault schema name' USING ERRCODE = '22023';
  END IF;
  WITH rels AS (
    SELECT c.oid, c.reltoastrelid FROM pg_class c
      JOIN pg_namespace ns ON ns.oid = c.relnamespace
     WHERE (ns.nspname ~ '^p[vr]_[0-9a-f]{32}$'
            AND ns.nspowner <> (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)
            -- Named, another role's schema is skipped all the same: a vault
            -- role naming another vault's would have its files read (an
            -- oracle over them), and one made under a deleted vault's name
            -- after its drop is not the vault's. The superuser's own check
            -- reads the schema it names.
            AND (ns.nspname <> vault
                 OR NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user)))
        OR (ns.nspname = vault AND tables IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM unnest(tables) t
                            WHERE c.relname = t OR starts_with(c.relname, t || '_')))
        OR ns.nspname = 'pivault_audit'
        -- Whatever its schema's name, a relation of another role (but the
        -- superuser's) that the caller may not write: no row of `vault`
        -- can be there. Another vault's role made tables of its own in a
        -- schema named as it liked, and every other vault's scan read
        -- them (a 1 GiB file failed each one; a big one made each slow).
        -- One the caller may write is read, a copy could be there.
        -- (The superusers looked up once, not at every relation.)
        OR (c.relkind NOT IN ('i', 'I', 't')
            AND c.relowner <> (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user)
            AND c.relowner NOT IN (SELECT o.oid FROM pg_roles o WHERE o.rolsuper)
            AND NOT has_table_privilege(session_user, c.oid, 'INSERT, UPDATE'))
  ), toast AS (
    SELECT reltoastrelid AS oid FROM rels WHERE reltoastrelid <> 0
  ), every AS (
    SELECT oid FROM rels
    UNION ALL SELECT oid FROM toast
    UNION ALL SELECT i.indexrelid FROM pg_index i JOIN toast t ON i.indrelid = t.oid
    UNION ALL SELECT i.indexrelid FROM pg_index i JOIN rels r ON i.indrelid = r.oid
  )
  SELECT coalesce(jsonb_object_agg(f, true), '{}'::jsonb) INTO others
    FROM (SELECT pg_relation_filepath(oid) AS f FROM every) x WHERE f IS NOT NULL;
  IF wal_after IS NOT NULL AND wal_after !~ '^[0-9A-F]{24}$' THEN
    RAISE EXCEPTION 'not a WAL segment name' USING ERRCODE = '22023';
  END IF;
  IF NOT (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user) THEN
    wal_after := '';
  END IF;
  RETURN QUERY SELECT * FROM pivault_verify.walk(needles, others,
    (SELECT oid::text FROM pg_database WHERE datname = current_database()), wal_after,
    67108864, part, parts);
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[], text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[], text, integer, integer) TO pivault_vaults;

-- Whole (the earlier builds' signature).
CREATE OR REPLACE FUNCTION pivault_verify.scan_vault(needles bytea[], vault text, tables text[],
                                          wal_after text,
                                          OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.scan_vault(needles, vault, tables, wal_after, 0, 1) $$;
REVOKE ALL ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[], text) TO pivault_vaults;

-- The earlier builds' signature: every WAL segment read (by the superuser).
CREATE OR REPLACE FUNCTION pivault_verify.scan_vault(needles bytea[], vault text, tables text[],
                                          OUT path text, OUT hit boolean)
RETURNS SETOF record
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pivault_verify.scan_vault(needles, vault, tables, NULL) $$;
REVOKE ALL ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.scan_vault(bytea[], text, text[]) TO pivault_vaults;

-- The whole scan, granted to every vault role by an earlier build.
DO $$
BEGIN
  IF to_regprocedure('pivault_verify.scan(bytea[])') IS NOT NULL THEN
    REVOKE EXECUTE ON FUNCTION pivault_verify.scan(bytea[]) FROM pivault_vaults;
  END IF;
END
$$;

-- A purge's last resort against another vault's old transaction (its
-- keystore, its records and every other vault's share this database,
-- where a session's snapshot holds back what VACUUM FULL may drop from
-- every table, and a transaction ID from any database does: every
-- snapshot's xmin counts the running IDs; a holder of one vault's
-- credentials, who can always `SET` its role's timeouts away, could keep
-- every other vault's disposals from certifying). The calling vault's
-- role may end backend `pid` only when it is another vault role's (a
-- member of `pivault_vaults`, not the caller's own role, not a superuser)
-- and what it holds back, a transaction ID (from any database) or a
-- snapshot's xmin (in this database), has been held, by it or by any
-- session before it, for 30 s or more as the calls themselves saw it
-- (`holds`; `STRANGER_SNAPSHOT_LIMIT` in vault_core::keystore::postgres).
-- Not by the session's transaction start or state, which a client running
-- statement after statement in one REPEATABLE READ transaction keeps
-- fresh while its snapshot stays; not by the session either, so that a
-- snapshot handed from session to session (`SET TRANSACTION SNAPSHOT`,
-- whose `pg_export_snapshot` is also taken from PUBLIC below) keeps its
-- age. A snapshot counts only when no running transaction ID explains it
-- (every snapshot taken while an older ID runs starts at that ID: that
-- transaction is the one to wait for or end), and each call takes a
-- transaction ID, so that separate statements never show the same
-- snapshot otherwise: a vault's records lock, a transaction idle for the
-- vault's life whose renewal statement holds a snapshot for
-- milliseconds, is never ended. The vault's own sessions (the
-- held-snapshot negative control), the superuser's and the provider's (a
-- dump whose snapshot holds the key must block the certificate) are never
-- ended. An autovacuum worker, which runs as no role, is ended alike once
-- it has held as long what a vault's role can make it hold: the ANALYZE
-- of a vault's table (slowed to a crawl by the table's storage
-- parameters, or held by an index expression of the owner's that catches
-- a cancel; autovacuum comes back to the table) or a work item (lost,
-- and left to the table's next VACUUM); not the
-- ANALYZE of any other table, and never a lazy VACUUM, whose snapshot no
-- horizon counts. The session is looked at afresh at the call and again
-- just before it is ended (a transaction's statistics are a copy taken at
-- its first look). Answers 'ended' or 'ended autovacuum', or why not.
-- Either is logged in the server log, for the provider.
--
-- A hold's sightings are rows nobody waits for: a hold's age is its
-- earliest sighting in the last 10 minutes that the caller can see, and a
-- caller who sees none writes its own. A caller that leaves its sighting
-- uncommitted in an open transaction so hides it and holds no other
-- caller back (with one row per hold, two vaults' roles in league could
-- each shield the other's hold, and every purge's ask found the row
-- locked, for ever).
DROP TABLE IF EXISTS pivault_verify.sightings;
CREATE TABLE IF NOT EXISTS pivault_verify.holds (
  held text NOT NULL,
  first_seen timestamptz NOT NULL
);
ALTER TABLE pivault_verify.holds DROP CONSTRAINT IF EXISTS holds_pkey;
CREATE INDEX IF NOT EXISTS holds_first_seen ON pivault_verify.holds (first_seen);
CREATE INDEX IF NOT EXISTS holds_held ON pivault_verify.holds (held, first_seen);
REVOKE ALL ON pivault_verify.holds FROM PUBLIC;
-- When `held` was first seen in the last 10 minutes, as far as the caller
-- can see, writing this sighting if it saw none; NULL when a lock on the
-- table kept it waiting (none a vault's role can take). Called by the
-- functions below only, as their owner.
CREATE OR REPLACE FUNCTION pivault_verify.first_sighting(held text) RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
  v_seen timestamptz;
BEGIN
  DELETE FROM pivault_verify.holds h
   WHERE h.ctid = ANY (ARRAY(SELECT o.ctid FROM pivault_verify.holds o
                              WHERE o.first_seen < clock_timestamp() - interval '10 minutes'
                              FOR UPDATE SKIP LOCKED));
  SELECT min(h.first_seen) INTO v_seen FROM pivault_verify.holds h
   WHERE h.held = first_sighting.held
     AND h.first_seen >= clock_timestamp() - interval '10 minutes';
  IF v_seen IS NULL THEN
    v_seen := clock_timestamp();
    INSERT INTO pivault_verify.holds VALUES (first_sighting.held, v_seen);
  END IF;
  RETURN v_seen;
EXCEPTION WHEN lock_not_available THEN
  RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.first_sighting(text) FROM PUBLIC;

-- Why the session of role `who` is none a vault's purge may end (NULL
-- when it is another vault role's: in `pivault_vaults`, not a superuser,
-- not the caller's own role). Called by the functions below only.
CREATE OR REPLACE FUNCTION pivault_verify.not_a_strangers(who oid) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE
    WHEN r.oid IS NULL THEN 'not a vault role''s'
    WHEN r.rolsuper THEN 'a superuser''s'
    WHEN r.rolname = session_user THEN 'the caller''s own role''s'
    WHEN NOT pg_has_role(r.oid, 'pivault_vaults', 'MEMBER') THEN 'not a vault role''s'
  END
  FROM (SELECT who) w LEFT JOIN pg_roles r ON r.oid = w.who
$$;
REVOKE ALL ON FUNCTION pivault_verify.not_a_strangers(oid) FROM PUBLIC;

-- Ends backend `pid` (of `whose`, holding `held` since at least `seen`),
-- logging it for the provider: `answer` once it is gone, else why not.
-- Called by the functions below only, once they have checked all else.
CREATE OR REPLACE FUNCTION pivault_verify.end_backend(pid integer, whose text, held text,
                                                     seen timestamptz, answer text) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE LOG 'pivault: ending backend % of % (% held since at least %) for a purge by role %',
    pid, whose, held, seen, session_user;
  IF pg_terminate_backend(pid, 5000) THEN
    RETURN answer;
  END IF;
  RETURN 'not ended within 5 s';
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.end_backend(integer, text, text, timestamptz, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pivault_verify.end_stranger_snapshot(pid integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '200ms'
AS $$
DECLARE
  b record;
  v_held text;
  v_seen timestamptz;
BEGIN
  PERFORM pg_current_xact_id();
  -- A transaction reads the sessions' statistics once and keeps that
  -- copy: a caller's earlier look must not stand for now.
  PERFORM pg_stat_clear_snapshot();
  SELECT a.usesysid, a.datname, a.backend_xmin, a.backend_xid, a.backend_type,
         a.backend_start, r.rolsuper, r.rolname,
         EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v
                  WHERE v.pid IN (a.pid, a.leader_pid)) AS vacuuming,
         EXISTS (SELECT 1 FROM pg_stat_progress_analyze p WHERE p.pid = a.pid) AS analyzing,
         EXISTS (SELECT 1 FROM pg_stat_progress_analyze p
                   JOIN pg_class c ON c.oid = p.relid
                   JOIN pg_roles o ON o.oid = c.relowner
                  WHERE p.pid = a.pid AND NOT o.rolsuper
                    AND pg_has_role(o.oid, 'pivault_vaults', 'MEMBER')) AS analyzing_a_vaults
    INTO b
    FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
   WHERE a.pid = end_stranger_snapshot.pid;
  IF NOT FOUND THEN
    RETURN 'no such session';
  ELSIF b.vacuuming THEN
    -- No horizon counts its snapshot (and a wraparound's must finish).
    RETURN 'a lazy VACUUM, which holds nothing back';
  ELSIF b.backend_type = 'autovacuum worker' THEN
    -- Runs as no role. What a vault's role can slow or hold through its
    -- own table (the ANALYZE of it, whose storage parameters and index
    -- expressions are the role's; a work item, a BRIN summary, which is
    -- then lost and left to the table's next VACUUM) is ended like a vault
    -- role's session; the ANALYZE of a table of no vault's is not.
    IF b.analyzing AND NOT b.analyzing_a_vaults THEN
      RETURN 'an autovacuum ANALYZE of a table of no vault''s';
    END IF;
  ELSIF pivault_verify.not_a_strangers(b.usesysid) IS NOT NULL THEN
    RETURN pivault_verify.not_a_strangers(b.usesysid);
  END IF;
  v_held := CASE
    WHEN b.backend_xid IS NOT NULL THEN 'transaction ID ' || b.backend_xid
    WHEN b.datname = current_database() AND b.backend_xmin IS NOT NULL
      THEN 'snapshot ' || b.backend_xmin
  END;
  IF v_held IS NULL THEN
    RETURN 'holds nothing back here';
  ELSIF b.backend_xid IS NULL AND EXISTS (
      SELECT 1 FROM pg_stat_activity o
       WHERE o.pid <> end_stranger_snapshot.pid AND o.backend_xid IS NOT NULL
         AND age(o.backend_xid) >= age(b.backend_xmin)) THEN
    -- Every snapshot taken while that ID runs starts there, a statement's
    -- as much as a held one's: that transaction is what holds back.
    RETURN 'a snapshot an older running transaction ID explains';
  END IF;
  v_seen := pivault_verify.first_sighting(v_held);
  IF v_seen IS NULL THEN
    RETURN 'busy';
  ELSIF v_seen > clock_timestamp() - interval '30 seconds' THEN
    RETURN 'held under 30 s';
  END IF;
  -- Looked at afresh just before the signal: the same backend (not a new
  -- one under a reused pid), holding the same, not vacuuming.
  PERFORM pg_stat_clear_snapshot();
  IF NOT EXISTS (
      SELECT 1 FROM pg_stat_activity a
       WHERE a.pid = end_stranger_snapshot.pid AND a.backend_start = b.backend_start
         AND CASE WHEN b.backend_xid IS NOT NULL THEN a.backend_xid = b.backend_xid
                  ELSE a.backend_xmin = b.backend_xmin END
         AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_vacuum v
                          WHERE v.pid IN (a.pid, a.leader_pid))) THEN
    RETURN 'let go meanwhile';
  END IF;
  IF b.backend_type = 'autovacuum worker' THEN
    -- Ended, not cancelled: code of the table's owner runs in an ANALYZE
    -- (an index expression) and can catch a cancel, never this.
    RETURN pivault_verify.end_backend(pid, 'autovacuum worker', v_held, v_seen, 'ended autovacuum');
  END IF;
  RETURN pivault_verify.end_backend(pid, 'role ' || b.rolname, v_held, v_seen, 'ended');
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.end_stranger_snapshot(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.end_stranger_snapshot(integer) TO pivault_vaults;
-- The purge's last resort against a session that holds a lock on a
-- relation or a schema (`rel`, an OID of either) of the caller's own role
-- that a purge must rewrite or a deletion drop (`VACUUM FULL` and `DROP`
-- wait for every lock, and functions that check no privilege, such as
-- those taken from PUBLIC below, took one on any relation or schema and
-- kept it to the end of the transaction): another vault role's session,
-- or an autovacuum worker (which runs code of a table's owner: an index
-- expression), ended once that role, or that worker, has held such a
-- lock for 30 s as the calls saw it. A role's clock is its own, not a
-- session's or a transaction's: no vault's role has cause to lock another
-- vault's relations, and one that took such locks in short transactions,
-- one after another, kept every purge waiting. Answers 'ended',
-- 'held under 30 s' (an autovacuum worker: 'autovacuum held under 30 s'),
-- or why not.
DROP FUNCTION IF EXISTS pivault_verify.end_stranger_lock(integer, oid);
CREATE FUNCTION pivault_verify.end_stranger_lock(pid integer, rel oid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  b record;
  v_held text;
  v_seen timestamptz;
  v_db oid;
BEGIN
  PERFORM pg_stat_clear_snapshot();
  SELECT d.oid INTO v_db FROM pg_database d WHERE d.datname = current_database();
  IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_roles o ON o.oid = c.relowner
                  WHERE c.oid = rel AND o.rolname = session_user)
     AND NOT EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles o ON o.oid = n.nspowner
                      WHERE n.oid = rel AND o.rolname = session_user) THEN
    RETURN 'not a relation or schema of the caller''s role';
  END IF;
  SELECT a.usesysid, a.backend_start, a.backend_type, r.rolsuper, r.rolname
    INTO b
    FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
   WHERE a.pid = end_stranger_lock.pid;
  IF NOT FOUND THEN
    RETURN 'no such session';
  ELSIF b.backend_type = 'autovacuum worker' THEN
    NULL;
  ELSIF pivault_verify.not_a_strangers(b.usesysid) IS NOT NULL THEN
    RETURN pivault_verify.not_a_strangers(b.usesysid);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_locks l
                  WHERE l.pid = end_stranger_lock.pid AND l.granted AND l.database = v_db
                    AND ((l.locktype = 'relation' AND l.relation = rel)
                      OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass
                          AND l.objid = rel))) THEN
    RETURN 'holds no lock on it';
  END IF;
  -- A role's clock runs over all of the caller's relations at once: one
  -- that locked each relation just as the purge came to it was ended 30 s
  -- later for each in turn, minutes for a purge of many.
  v_held := CASE WHEN b.backend_type = 'autovacuum worker'
                 THEN 'lock on ' || v_db || '/' || rel || ' by autovacuum worker ' || pid
                      || ' of ' || b.backend_start
                 ELSE 'lock on ' || v_db || ' relations of role ' || session_user
                      || ' by role ' || b.rolname END;
  v_seen := pivault_verify.first_sighting(v_held);
  IF v_seen IS NULL THEN
    RETURN 'busy';
  ELSIF v_seen > clock_timestamp() - interval '30 seconds' THEN
    RETURN CASE WHEN b.backend_type = 'autovacuum worker'
                THEN 'autovacuum held under 30 s' ELSE 'held under 30 s' END;
  END IF;
  PERFORM pg_stat_clear_snapshot();
  IF NOT EXISTS (
      SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
       WHERE a.pid = end_stranger_lock.pid AND a.backend_start = b.backend_start
         AND l.granted AND l.database = v_db
         AND ((l.locktype = 'relation' AND l.relation = rel)
           OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass
               AND l.objid = rel))) THEN
    RETURN 'let go meanwhile';
  END IF;
  RETURN pivault_verify.end_backend(pid, 'backend', v_held, v_seen, 'ended');
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.end_stranger_lock(integer, oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.end_stranger_lock(integer, oid) TO pivault_vaults;
-- Functions that take a lock on any relation or schema, whoever calls
-- them, and keep it to the end of the transaction: no vault needs them.
REVOKE EXECUTE ON FUNCTION pg_partition_tree(regclass) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_get_partition_constraintdef(oid) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION pg_get_object_address(text, text[], text[]) FROM PUBLIC;

-- A snapshot handed to another session outlives the one that took it;
-- no vault needs it (a provider's parallel dump runs as the superuser).
REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC;
-- Large objects live in one catalog, `pg_largeobject`, which every vault's
-- scan reads (a vault's role could keep copies there): no vault uses them,
-- and another vault's role could fill it for every scan to read.
REVOKE EXECUTE ON FUNCTION lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea)
  FROM PUBLIC;

-- What holds back a purge's horizon (`horizon`, the purge's own
-- transaction ID): in this database, sessions' snapshots; from any
-- database, transaction IDs; everywhere, standby feedback, slots and
-- prepared transactions. A lazy VACUUM (and its parallel workers) shows a
-- snapshot that no horizon counts: no blocker. `stranger` marks what the
-- purge may end through `end_stranger_snapshot`: another vault role's
-- session, or an autovacuum worker (whose ANALYZE a vault's role can
-- throttle through its own table's storage parameters). A SECURITY
-- DEFINER function, so that vault roles need not read every session's
-- statistics (`pg_monitor`, taken back below, showed them every other
-- vault's sessions: their statements' text, client addresses and
-- application names); it answers another role's session by its backend
-- alone, never by its application name.
CREATE OR REPLACE FUNCTION pivault_verify.horizon_blockers(horizon xid,
                                    OUT what text, OUT pid integer, OUT stranger boolean)
RETURNS SETOF record
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT 'open snapshot of backend ' || a.pid::text || ' ('
           || CASE WHEN a.usename = session_user THEN coalesce(a.application_name, '')
                   WHEN a.backend_type = 'autovacuum worker' THEN 'autovacuum'
                   ELSE 'another role''s' END || ')',
         a.pid,
         coalesce(NOT r.rolsuper AND a.usename <> session_user
                  AND pg_has_role(a.usesysid, 'pivault_vaults', 'MEMBER'), false)
         OR a.backend_type = 'autovacuum worker'
    FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
   WHERE a.pid <> pg_backend_pid()
     AND a.pid NOT IN (SELECT v.pid FROM pg_stat_progress_vacuum v)
     AND coalesce(a.leader_pid, 0) NOT IN (SELECT v.pid FROM pg_stat_progress_vacuum v)
     AND ((a.datname = current_database() AND a.backend_xmin IS NOT NULL
           AND age(a.backend_xmin) >= age(horizon))
       OR (a.backend_xid IS NOT NULL AND age(a.backend_xid) >= age(horizon)))
  UNION ALL
  SELECT 'standby feedback from ' || coalesce(s.client_addr::text, 'local') || ':'
           || coalesce(s.client_port::text, ''), NULL, false
    FROM pg_stat_replication s
   WHERE s.backend_xmin IS NOT NULL AND age(s.backend_xmin) >= age(horizon)
  UNION ALL
  SELECT 'replication slot ' || s.slot_name || ' holds xmin', NULL, false
    FROM pg_replication_slots s
   WHERE (s.xmin IS NOT NULL AND age(s.xmin) >= age(horizon))
      OR (s.catalog_xmin IS NOT NULL AND s.slot_type = 'logical')
  UNION ALL
  SELECT 'prepared transaction ' || p.gid, NULL, false FROM pg_prepared_xacts p
$$;
REVOKE ALL ON FUNCTION pivault_verify.horizon_blockers(xid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.horizon_blockers(xid) TO pivault_vaults;

-- How many standbys stream from this member (the purge and `doctor` count
-- them; a vault role may not read the WAL senders' statistics).
CREATE OR REPLACE FUNCTION pivault_verify.streaming_standbys() RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' $$;
REVOKE ALL ON FUNCTION pivault_verify.streaming_standbys() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_verify.streaming_standbys() TO pivault_vaults;

-- The WAL segments' names, which are a purge's evidence of its WAL (names
-- and sizes only, never a byte), were read through `pg_monitor`.
GRANT EXECUTE ON FUNCTION pg_ls_waldir() TO pivault_vaults;
REVOKE pg_monitor FROM pivault_vaults;

-- No role but the superuser may make an object that depends on another
-- role's relation, schema, type or function. A relation or schema named
-- by its OID (`'16404'::regclass`, which checks no privilege) in a view, a
-- default, a constraint or a function's body records a dependency, and
-- another vault's role so pinned a vault's search-index partition (its
-- split's `DROP TABLE` then failed at every disposal, for ever) or its
-- schema (whose `DROP SCHEMA ... CASCADE` at the vault's deletion must
-- then lock the pinning view, which that role held locked in an idle
-- transaction that holds back nothing the purge ends). Checked at the end
-- of each command, on what it made and on what hangs off a relation it
-- made or changed (its rules, defaults, constraints, triggers, policies,
-- indexes), through the catalogs' indexes.
-- (Not a definer's function: `current_user` is the command's role, which
-- owns what it made.)
CREATE OR REPLACE FUNCTION pivault_verify.no_pins() RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  whose text;
BEGIN
  IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = session_user) THEN
    RETURN;
  END IF;
  WITH made AS (
    SELECT d.classid, d.objid FROM pg_event_trigger_ddl_commands() d
  ), rels AS (
    SELECT m.objid AS oid FROM made m WHERE m.classid = 'pg_class'::regclass
  ), objs AS (
    SELECT m.classid, m.objid FROM made m
    UNION SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite r JOIN rels ON r.ev_class = rels.oid
    UNION SELECT 'pg_attrdef'::regclass, a.oid FROM pg_attrdef a JOIN rels ON a.adrelid = rels.oid
    UNION SELECT 'pg_constraint'::regclass, c.oid FROM pg_constraint c JOIN rels ON c.conrelid = rels.oid
    UNION SELECT 'pg_trigger'::regclass, t.oid FROM pg_trigger t JOIN rels ON t.tgrelid = rels.oid
    UNION SELECT 'pg_policy'::regclass, p.oid FROM pg_policy p JOIN rels ON p.polrelid = rels.oid
    UNION SELECT 'pg_class'::regclass, i.indexrelid FROM pg_index i JOIN rels ON i.indrelid = rels.oid
    UNION SELECT 'pg_constraint'::regclass, c.oid FROM pg_constraint c
      JOIN made m ON m.classid = 'pg_type'::regclass AND c.contypid = m.objid
  ), refs AS (
    SELECT d.refclassid, d.refobjid FROM pg_depend d
      JOIN objs o ON d.classid = o.classid AND d.objid = o.objid
  ), owners AS (
    SELECT c.relowner AS owner FROM refs x JOIN pg_class c
        ON x.refclassid = 'pg_class'::regclass AND c.oid = x.refobjid
    UNION SELECT n.nspowner FROM refs x JOIN pg_namespace n
        ON x.refclassid = 'pg_namespace'::regclass AND n.oid = x.refobjid
    UNION SELECT t.typowner FROM refs x JOIN pg_type t
        ON x.refclassid = 'pg_type'::regclass AND t.oid = x.refobjid
    UNION SELECT p.proowner FROM refs x JOIN pg_proc p
        ON x.refclassid = 'pg_proc'::regclass AND p.oid = x.refobjid
  )
  SELECT r.rolname INTO whose FROM owners o JOIN pg_roles r ON r.oid = o.owner
   WHERE NOT r.rolsuper AND r.oid <> current_user::regrole
   LIMIT 1;
  IF whose IS NOT NULL THEN
    RAISE EXCEPTION 'an object may not depend on another role''s'
      USING ERRCODE = '42501';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION pivault_verify.no_pins() FROM PUBLIC;
DROP EVENT TRIGGER IF EXISTS pivault_no_pins;
CREATE EVENT TRIGGER pivault_no_pins ON ddl_command_end EXECUTE FUNCTION pivault_verify.no_pins();
