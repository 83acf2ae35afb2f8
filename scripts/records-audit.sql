-- The audit trails in the records database (`pivault_records`), run by
-- the cluster's superuser: by keystore-cluster.sql on a new cluster, or
-- alone on a cluster set up by an earlier build
-- (`psql -d pivault_records -f scripts/records-audit.sql`).
--
-- The audit trails of the vaults whose records are here, one per vault
-- (keyed by its ID): append-only. The tables belong to the superuser; a
-- vault's role may only call the functions below, which add events at the
-- next sequence number of its own trail, add checkpoints, and read its own
-- trail back. No vault role, not even with the vault host's credentials,
-- can change, remove or reorder a line, and two processes writing the same
-- trail cannot both take a sequence number: the trail's row is locked and
-- its head checked in the database. A trail belongs to the role that owns
-- the vault's records schema `pr_<vault id>` when the trail is first
-- written, and stays that role's (by its OID: one made again under the
-- same name is another role).
SET search_path = pg_catalog, pg_temp;
CREATE SCHEMA pivault_audit;
REVOKE ALL ON SCHEMA pivault_audit FROM PUBLIC;
GRANT USAGE ON SCHEMA pivault_audit TO pivault_vaults;
CREATE TABLE pivault_audit.trails (
  vault uuid PRIMARY KEY,
  owner name NOT NULL,
  head bigint NOT NULL DEFAULT 0,
  checkpoint bigint NOT NULL DEFAULT 0);
CREATE TABLE pivault_audit.events (
  vault uuid NOT NULL, seq bigint NOT NULL, line bytea NOT NULL, PRIMARY KEY (vault, seq));
CREATE TABLE pivault_audit.checkpoints (
  vault uuid NOT NULL, seq bigint NOT NULL, line bytea NOT NULL, PRIMARY KEY (vault, seq));
REVOKE ALL ON ALL TABLES IN SCHEMA pivault_audit FROM PUBLIC;

-- Appending an event (`pivault_audit.append`), with who owns a trail
-- (`own_trail`, `may_read`): a separate file, replaced if there, so a
-- cluster set up by an earlier build gets the current one with
-- `psql -d pivault_records -f scripts/records-audit-append.sql`.
\ir records-audit-append.sql

-- Adds a checkpoint at event `s`: after the last one, of an event already
-- written, naming that event's chain hash as its head and (a version 2
-- line) the hash of the last checkpoint line as its `prev`, so a writer
-- whose view of the trail is stale cannot break the checkpoints' chain.
-- The same line again passes, as a retry. The signature is the
-- verifier's to check (the database holds no key).
CREATE FUNCTION pivault_audit.add_checkpoint(v uuid, s bigint, l bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t pivault_audit.trails := pivault_audit.own_trail(v);
  j json := convert_from(l, 'UTF8')::json;
  old bytea;
  ev bytea;
BEGIN
  IF s <= t.checkpoint THEN
    SELECT c.line INTO old FROM pivault_audit.checkpoints c WHERE c.vault = v AND c.seq = s;
    IF old IS DISTINCT FROM l THEN
      RAISE EXCEPTION 'audit checkpoint % is not after the last one (%)', s, t.checkpoint
        USING ERRCODE = '40001';
    END IF;
    RETURN;
  END IF;
  SELECT e.line INTO ev FROM pivault_audit.events e WHERE e.vault = v AND e.seq = s;
  IF ev IS NULL OR (j->>'seq')::bigint IS DISTINCT FROM s
     OR encode(substr(ev, length(ev) - 63), 'escape') IS DISTINCT FROM j->>'head' THEN
    RAISE EXCEPTION 'audit checkpoint % does not name the chain hash of event %', s, s
      USING ERRCODE = '40001';
  END IF;
  IF j->>'prev' IS NOT NULL THEN
    SELECT c.line INTO old FROM pivault_audit.checkpoints c
      WHERE c.vault = v ORDER BY c.seq DESC LIMIT 1;
    IF j->>'prev' IS DISTINCT FROM coalesce(
        encode(sha256('pivault-audit-checkpoint-hash-v1'::bytea || old), 'hex'),
        repeat('0', 64)) THEN
      RAISE EXCEPTION 'audit checkpoint % does not follow the last one', s
        USING ERRCODE = '40001';
    END IF;
  END IF;
  INSERT INTO pivault_audit.checkpoints VALUES (v, s, l);
  UPDATE pivault_audit.trails SET checkpoint = s WHERE vault = v;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.add_checkpoint(uuid, bigint, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_audit.add_checkpoint(uuid, bigint, bytea) TO pivault_vaults;

-- The caller's own trail, read back: events `from_seq` to `to_seq`, and
-- every checkpoint.
CREATE FUNCTION pivault_audit.events(v uuid, from_seq bigint, to_seq bigint)
RETURNS TABLE (seq bigint, line bytea)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pivault_audit.may_read(v);
  RETURN QUERY SELECT e.seq, e.line FROM pivault_audit.events e
    WHERE e.vault = v AND e.seq BETWEEN from_seq AND to_seq ORDER BY e.seq;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.events(uuid, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_audit.events(uuid, bigint, bigint) TO pivault_vaults;

CREATE FUNCTION pivault_audit.checkpoints(v uuid)
RETURNS TABLE (seq bigint, line bytea)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pivault_audit.may_read(v);
  RETURN QUERY SELECT c.seq, c.line FROM pivault_audit.checkpoints c
    WHERE c.vault = v ORDER BY c.seq;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.checkpoints(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_audit.checkpoints(uuid) TO pivault_vaults;

CREATE FUNCTION pivault_audit.last_event(v uuid)
RETURNS TABLE (seq bigint, line bytea)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM pivault_audit.may_read(v);
  RETURN QUERY SELECT e.seq, e.line FROM pivault_audit.events e
    WHERE e.vault = v ORDER BY e.seq DESC LIMIT 1;
END
$$;
REVOKE ALL ON FUNCTION pivault_audit.last_event(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pivault_audit.last_event(uuid) TO pivault_vaults;
