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
-- 16MB. Measured on the same database, the statement and the keys: 130 s -> 64-75 s. An
-- incremental run (the rows merge into existing keys) keeps its keys. Dropping a key takes the
-- table's ACCESS EXCLUSIVE lock until the refresh commits: readers wait for a rebuild from empty,
-- as they already did after `--full`'s TRUNCATE, instead of reading empty insights.

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

CREATE OR REPLACE FUNCTION insights_refresh_facts(p_time_zone text, p_upto bigint, p_keep_since date)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET work_mem = '16MB' AS $$
DECLARE
  v_from bigint;
  v_rows bigint;
  v_merge boolean;
  v_sql text;
  v_restore_keys text[] := '{}';
  v_statement text;
BEGIN
  PERFORM insights_require_operator();
  INSERT INTO insights_watermarks (step) VALUES ('facts') ON CONFLICT DO NOTHING;
  SELECT last_id INTO v_from FROM insights_watermarks WHERE step = 'facts' FOR UPDATE;
  v_merge := v_from > 0;
  IF p_upto <= v_from THEN
    UPDATE insights_watermarks SET refreshed_at = now() WHERE step = 'facts';
    DELETE FROM insights_member_recent_days WHERE day < p_keep_since;
    RETURN 0;
  END IF;

  -- One statement: the delta (one row per posting) is read from the ledger once, kept by the
  -- MATERIALIZED CTE in work_mem (a temporary table would go through the small temp_buffers),
  -- and every summary is fed from it. Purchases count +; their refunds − on the original
  -- purchase's day, category and tags (a visit and its spend are taken back only by a full
  -- refund, a partial one takes back points); redemptions are counted for the cross-merchant
  -- figures.
  v_sql := $q$
  WITH delta AS MATERIALIZED (
    SELECT t.tenant_id, t.member_id, (t.effective_at AT TIME ZONE $1)::date AS day,
           'earn'::text AS kind, t.details ->> 'category' AS category,
           CASE WHEN jsonb_typeof(t.details -> 'tags') = 'array' AND t.details -> 'tags' <> '[]'
                THEN t.details -> 'tags' END AS tags,
           1 AS visits, coalesce(t.amount, 0) AS spend, t.points AS points
      FROM ledger_transactions t
     WHERE t.id > $2 AND t.id <= $3 AND t.kind = 'earn' AND t.tenant_id IS NOT NULL
    UNION ALL
    SELECT o.tenant_id, o.member_id, (o.effective_at AT TIME ZONE $1)::date,
           'refund', o.details ->> 'category',
           CASE WHEN jsonb_typeof(o.details -> 'tags') = 'array' AND o.details -> 'tags' <> '[]'
                THEN o.details -> 'tags' END,
           CASE WHEN r.points + r.shortfall >= o.points THEN -1 ELSE 0 END,
           CASE WHEN r.points + r.shortfall >= o.points THEN -coalesce(o.amount, 0) ELSE 0 END,
           -r.points
      FROM ledger_transactions r JOIN ledger_transactions o ON o.id = r.reverses_id
     WHERE r.id > $2 AND r.id <= $3 AND r.kind = 'reverse' AND o.kind = 'earn' AND o.tenant_id IS NOT NULL
    UNION ALL
    SELECT t.tenant_id, t.member_id, (t.effective_at AT TIME ZONE $1)::date, 'redeem', NULL, NULL, 0, 0, 0
      FROM ledger_transactions t
     WHERE t.id > $2 AND t.id <= $3 AND t.kind IN ('redeem', 'capture') AND t.tenant_id IS NOT NULL
  ),
  tagged AS MATERIALIZED (
    SELECT d.tenant_id, d.member_id, date_trunc('month', d.day)::date AS month, tag.value AS tag, d.visits, d.spend
      FROM delta d CROSS JOIN LATERAL jsonb_array_elements_text(d.tags) AS tag(value) WHERE d.tags IS NOT NULL
  ),
  months AS (
    INSERT INTO insights_member_months AS m (tenant_id, member_id, month, visits, spend, points, earns, redeems)
    SELECT tenant_id, member_id, date_trunc('month', day)::date, sum(visits), sum(spend), sum(points),
           count(*) FILTER (WHERE kind = 'earn'), count(*) FILTER (WHERE kind = 'redeem')
      FROM delta GROUP BY 1, 2, 3
    @MONTHS@
  ),
  days AS (
    INSERT INTO insights_member_recent_days AS d (tenant_id, member_id, day, visits, points)
    SELECT tenant_id, member_id, day, sum(visits), sum(points)
      FROM delta WHERE kind <> 'redeem' AND day >= $4 GROUP BY 1, 2, 3
    @DAYS@
  ),
  categories AS (
    INSERT INTO insights_member_categories AS c (tenant_id, member_id, month, category, visits, spend)
    SELECT tenant_id, member_id, date_trunc('month', day)::date, category, sum(visits), sum(spend)
      FROM delta WHERE kind <> 'redeem' AND category IS NOT NULL GROUP BY 1, 2, 3, 4
    @CATEGORIES@
  ),
  tags AS (
    INSERT INTO insights_member_tags AS g (tenant_id, member_id, month, tag, visits, spend)
    SELECT tenant_id, member_id, month, tag, sum(visits), sum(spend) FROM tagged GROUP BY 1, 2, 3, 4
    @TAGS@
  ),
  profiles AS (
    INSERT INTO insights_members AS p (tenant_id, member_id, visits, spend, points, first_visit, last_visit)
    SELECT tenant_id, member_id, sum(visits), sum(spend), sum(points),
           min(day) FILTER (WHERE kind = 'earn'), max(day) FILTER (WHERE kind = 'earn')
      FROM delta WHERE kind <> 'redeem' GROUP BY 1, 2
    @PROFILES@
  ),
  tenant_categories AS (
    INSERT INTO insights_tenant_categories AS t (tenant_id, month, category, visits, spend)
    SELECT tenant_id, date_trunc('month', day)::date, category, sum(visits), sum(spend)
      FROM delta WHERE kind <> 'redeem' AND category IS NOT NULL GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, month, category) DO UPDATE
      SET visits = t.visits + excluded.visits, spend = t.spend + excluded.spend
  ),
  tenant_tags AS (
    INSERT INTO insights_tenant_tags AS t (tenant_id, month, tag, visits, spend)
    SELECT tenant_id, month, tag, sum(visits), sum(spend) FROM tagged GROUP BY 1, 2, 3
    ON CONFLICT (tenant_id, month, tag) DO UPDATE
      SET visits = t.visits + excluded.visits, spend = t.spend + excluded.spend
  ),
  redeemers AS (
    INSERT INTO insights_member_redeemers (member_id, tenant_id)
    SELECT DISTINCT member_id, tenant_id FROM delta WHERE kind = 'redeem'
    ON CONFLICT DO NOTHING
  )
  SELECT count(*) FROM delta $q$;
  v_sql := replace(v_sql, '@MONTHS@', CASE WHEN v_merge THEN $q$ON CONFLICT (tenant_id, member_id, month) DO UPDATE
    SET visits = m.visits + excluded.visits, spend = m.spend + excluded.spend, points = m.points + excluded.points,
        earns = m.earns + excluded.earns, redeems = m.redeems + excluded.redeems $q$ ELSE '' END);
  v_sql := replace(v_sql, '@DAYS@', CASE WHEN v_merge THEN $q$ON CONFLICT (tenant_id, member_id, day) DO UPDATE
    SET visits = d.visits + excluded.visits, points = d.points + excluded.points $q$ ELSE '' END);
  v_sql := replace(v_sql, '@CATEGORIES@', CASE WHEN v_merge THEN $q$ON CONFLICT (tenant_id, member_id, month, category)
    DO UPDATE SET visits = c.visits + excluded.visits, spend = c.spend + excluded.spend $q$ ELSE '' END);
  v_sql := replace(v_sql, '@TAGS@', CASE WHEN v_merge THEN $q$ON CONFLICT (tenant_id, member_id, month, tag)
    DO UPDATE SET visits = g.visits + excluded.visits, spend = g.spend + excluded.spend $q$ ELSE '' END);
  v_sql := replace(v_sql, '@PROFILES@', CASE WHEN v_merge THEN $q$ON CONFLICT (tenant_id, member_id) DO UPDATE
    SET visits = p.visits + excluded.visits, spend = p.spend + excluded.spend, points = p.points + excluded.points,
        first_visit = least(p.first_visit, excluded.first_visit),
        last_visit = greatest(p.last_visit, excluded.last_visit) $q$ ELSE '' END);
  IF NOT v_merge THEN
    -- From empty: the rows go in without their keys, which are then built once, by sorting.
    v_restore_keys := insights_drop_primary_keys(ARRAY['insights_member_months', 'insights_member_recent_days',
      'insights_member_categories', 'insights_member_tags']::regclass[]);
  END IF;
  EXECUTE v_sql INTO v_rows USING p_time_zone, v_from, p_upto, p_keep_since;
  FOREACH v_statement IN ARRAY v_restore_keys LOOP
    EXECUTE v_statement;
  END LOOP;
  DELETE FROM insights_member_recent_days WHERE day < p_keep_since;

  UPDATE insights_watermarks SET last_id = p_upto, refreshed_at = now() WHERE step = 'facts';
  RETURN v_rows;
END $$;
