-- A full rebuild of the insight facts in about half the time (revision 0027).
--
-- `insights_refresh_facts` from empty (first deployment, `alliance insights refresh --full`, or
-- after a crash emptied the unlogged summaries) folds the whole ledger in one statement. On the
-- insights benchmark (10,000,000 transactions, PostgreSQL 15, 2 cores) it took 130 s of the
-- refresh's 150 s. EXPLAIN ANALYZE put ~70 s in the inserts: 18 million summary rows, each also
-- inserted into its table's primary key in hash order, a random leaf of an index larger than
-- shared_buffers. And the hash aggregates into 3-8 million groups ran slower with more memory
-- (work_mem 1GB: 86 s; 256MB, the refresh's setting: 76 s; 64MB: 60-65 s; 16MB: 56-68 s): one
-- table of hundreds of MB misses the CPU caches on every row, while many small partitions,
-- spilled and read back sequentially, do not.
--
-- So, from empty only, the four member-level tables take their rows without a primary key,
-- which is then added back (a sorted build, ~8 s for the four), and the step runs with work_mem
-- 16MB. Measured on the same database, the statement and the keys: 130 s -> 64-75 s; the whole
-- refresh: 150 s -> 77 s. An incremental run (its rows merge into the existing keys) keeps them.
-- Dropping a key takes the table's ACCESS EXCLUSIVE lock until the refresh commits: readers wait
-- for a rebuild from empty, as they already did after `--full`'s TRUNCATE, instead of reading
-- empty insights.
--
-- The step is otherwise revision 0019's: the migration derives it from that script
-- (migrations/versions/0027_insights_rebuild_keys_after.py), so the two cannot drift apart. This
-- file holds the one new function.

-- Drops the primary keys of p_tables; returns the statements that add them back as they were.
CREATE FUNCTION insights_drop_primary_keys(p_tables regclass[]) RETURNS text[]
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  v_key record;
  v_restore text[] := '{}';
BEGIN
  FOR v_key IN SELECT c.conrelid::regclass AS tab, c.conname, pg_get_constraintdef(c.oid) AS definition
               FROM pg_constraint c WHERE c.conrelid = ANY (p_tables) AND c.contype = 'p' ORDER BY c.conname LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', v_key.tab, v_key.conname);
    v_restore := v_restore || format('ALTER TABLE %s ADD CONSTRAINT %I %s', v_key.tab, v_key.conname, v_key.definition);
  END LOOP;
  ASSERT cardinality(v_restore) = cardinality(p_tables), 'every table has a primary key to drop';
  RETURN v_restore;
END $$;
REVOKE ALL ON FUNCTION insights_drop_primary_keys(regclass[]) FROM PUBLIC;
