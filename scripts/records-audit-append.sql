-- `pivault_audit.append`, the one function every audited operation calls
-- (run by the superuser in `pivault_records`, by records-audit.sql on a new
-- cluster; run again, it replaces an earlier build's, which checks the
-- same and is slower: `psql -v ON_ERROR_STOP=1 -d pivault_records -f
-- scripts/records-audit-append.sql`).
--
-- Appends `lines` as events `first_seq`, `first_seq + 1`, ...: each must be the
-- next after the head and chain to the line before it. A line already
-- there with the same bytes is a retried append (the answer was lost with
-- a connection, or a failover lost the event and its writer sends it
-- again) and passes; any other number, or a line that does not chain
-- (a writer whose events a failover lost, after another writer took their
-- numbers), is refused, so no writer can fork the chain.
--
-- A line chains when it is canonical JSON, a space and 64 hex digits
-- naming sha256('pivault-audit-v1' || hash of the line before it || its
-- JSON), the hash before the first line being 32 zero bytes, as
-- audit::verify checks it.
--
-- Every part is inline PL/pgSQL, whose plans the session keeps: the first
-- build called a SQL function for the chain check, planned again at every
-- call, and `own_trail` (a second SECURITY DEFINER call) for every append;
-- the two were 0.17 of the append's 0.26 ms in the database (benches/README,
-- run 20). `own_trail` is now called only for a trail not yet claimed or
-- claimed by another role, which it refuses.
-- A trail's owner is its role's OID as well as its name: a role dropped
-- and made again under the same name (the provider's operator makes `pvr_`
-- roles, and a deleted vault's role is dropped) is another role, and gets
-- neither the trail's next numbers nor its lines. A trail claimed before
-- the column existed takes the OID its owner's name has when this runs.
SET search_path = pg_catalog, pg_temp;
ALTER TABLE pivault_audit.trails ADD COLUMN IF NOT EXISTS owner_oid oid;
UPDATE pivault_audit.trails t SET owner_oid = r.oid FROM pg_roles r
 WHERE t.owner_oid IS NULL AND r.rolname = t.owner;

-- The trail of vault `v`, locked, claimed for the caller when new; refused
-- to any role but its owner.
CREATE OR REPLACE FUNCTION pivault_audit.own_trail(v uuid) RETURNS pivault_audit.trails
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t pivault_audit.trails;
  me oid := (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user);
BEGIN
  SELECT * INTO t FROM pivault_audit.trails WHERE vault = v FOR UPDATE;
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace n
                   WHERE n.nspname = 'pr_' || replace(v::text, '-', '')
                     AND n.nspowner = me) THEN
      RAISE EXCEPTION 'the audit trail of a vault whose records this role does not hold'
        USING ERRCODE = '42501';
    END IF;
    INSERT INTO pivault_audit.trails (vault, owner, owner_oid) VALUES (v, session_user, me)
      ON CONFLICT DO NOTHING;
    SELECT * INTO t FROM pivault_audit.trails WHERE vault = v FOR UPDATE;
  END IF;
  IF t.owner <> session_user OR t.owner_oid IS DISTINCT FROM me THEN
    RAISE EXCEPTION 'the audit trail of another role''s vault' USING ERRCODE = '42501';
  END IF;
  RETURN t;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.own_trail(uuid) FROM PUBLIC;

-- Refuses a reader whose trail `v` is not (a trail not yet written has
-- nothing to show).
CREATE OR REPLACE FUNCTION pivault_audit.may_read(v uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pivault_audit.trails t WHERE t.vault = v
               AND (t.owner <> session_user OR t.owner_oid IS DISTINCT FROM
                    (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user))) THEN
    RAISE EXCEPTION 'the audit trail of another role''s vault' USING ERRCODE = '42501';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.may_read(uuid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pivault_audit.append(v uuid, first_seq bigint, lines bytea[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t pivault_audit.trails;
  s bigint := first_seq;
  l bytea;
  old bytea;
  prev bytea;
BEGIN
  SELECT * INTO t FROM pivault_audit.trails WHERE vault = v FOR UPDATE;
  IF NOT FOUND OR t.owner <> session_user
     OR t.owner_oid IS DISTINCT FROM (SELECT r.oid FROM pg_roles r WHERE r.rolname = session_user) THEN
    t := pivault_audit.own_trail(v);
  END IF;
  FOREACH l IN ARRAY lines LOOP
    IF s <= t.head THEN
      SELECT e.line INTO old FROM pivault_audit.events e WHERE e.vault = v AND e.seq = s;
      IF old IS DISTINCT FROM l THEN
        RAISE EXCEPTION 'audit event % of this trail is already written (another writer?)', s
          USING ERRCODE = '40001';
      END IF;
    ELSIF s = t.head + 1 THEN
      IF prev IS NULL AND s > 1 THEN
        SELECT e.line INTO prev FROM pivault_audit.events e WHERE e.vault = v AND e.seq = s - 1;
        IF prev IS NULL THEN
          RAISE EXCEPTION 'audit event % has no event % before it', s, s - 1
            USING ERRCODE = '40001';
        END IF;
      END IF;
      IF NOT coalesce(length(l) > 65 AND get_byte(l, length(l) - 65) = 32
          AND encode(sha256('pivault-audit-v1'::bytea
                || coalesce(decode(encode(substr(prev, length(prev) - 63), 'escape'), 'hex'),
                            decode(repeat('00', 32), 'hex'))
                || substr(l, 1, length(l) - 65)), 'hex')
              = encode(substr(l, length(l) - 63), 'escape'), false) THEN
        RAISE EXCEPTION 'audit event % does not chain to event % (another writer?)', s, s - 1
          USING ERRCODE = '40001';
      END IF;
      INSERT INTO pivault_audit.events VALUES (v, s, l);
      t.head := s;
    ELSE
      RAISE EXCEPTION 'audit event % would leave a gap after %', s, t.head
        USING ERRCODE = '40001';
    END IF;
    prev := l;
    s := s + 1;
  END LOOP;
  -- Only a record's events may commit lazily (`synchronous_commit=off`,
  -- the writer's choice without `sync`): a record write the failover lost
  -- the event of is in the write journal, which the next holder reconciles,
  -- and a read changed nothing. Any other change (a user disabled, a hold
  -- placed, a role changed) has no journal: its event is made as durable as
  -- its row, or a failover that also lost the writer would leave the change
  -- standing with no event. Set here, for the transaction's commit.
  IF current_setting('synchronous_commit') = 'off' THEN
    FOREACH l IN ARRAY lines LOOP
      IF position('"action":"record.'::bytea IN l) = 0 THEN
        PERFORM set_config('synchronous_commit', 'on', true);
        EXIT;
      END IF;
    END LOOP;
  END IF;
  UPDATE pivault_audit.trails SET head = t.head WHERE vault = v;
  RETURN t.head;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.append(uuid, bigint, bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_audit.append(uuid, bigint, bytea[]) TO pivault_vaults;
-- The chain check's SQL function of the first build, no longer called.
DROP FUNCTION IF EXISTS pivault_audit.chains(bytea, bytea);

-- No planner statistics of the trails: ANALYZE (autovacuum runs it) copies
-- sampled values into `pg_statistic`, a catalog every vault's byte scan
-- reads, so every vault's lines, heads and counts would be there for any
-- vault's role to test guesses against (the scans skip `pivault_audit`'s
-- own files). The samples an earlier build let ANALYZE take go too.
ALTER TABLE pivault_audit.events ALTER COLUMN vault SET STATISTICS 0,
  ALTER COLUMN seq SET STATISTICS 0, ALTER COLUMN line SET STATISTICS 0;
ALTER TABLE pivault_audit.checkpoints ALTER COLUMN vault SET STATISTICS 0,
  ALTER COLUMN seq SET STATISTICS 0, ALTER COLUMN line SET STATISTICS 0;
ALTER TABLE pivault_audit.trails ALTER COLUMN vault SET STATISTICS 0,
  ALTER COLUMN owner SET STATISTICS 0, ALTER COLUMN head SET STATISTICS 0,
  ALTER COLUMN checkpoint SET STATISTICS 0;
DELETE FROM pg_statistic WHERE starelid IN ('pivault_audit.events'::regclass,
  'pivault_audit.checkpoints'::regclass, 'pivault_audit.trails'::regclass);
