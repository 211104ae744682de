-- Merchant insights (revision 0019): summary tables and the SECURITY DEFINER refresh steps that
-- fill them. Requests read only these tables (each a few index lookups or a small scan of one
-- tenant's rows); the heavy aggregation happens in `alliance insights refresh`.
--
-- Why SECURITY DEFINER: the CronJob runs on the application role, which only reads under row-level
-- security. The refresh must see every tenant's postings (cross-merchant counts) and write the
-- summaries and segment membership, so each step is an owner function that refuses any caller but
-- the operator context.
--
-- Incremental: the ledger is append-only, so `insights_refresh_facts` folds in only the
-- transactions past a stored watermark on ledger_transactions.id (reversals are new rows: they are
-- folded in as negatives on the original purchase's day, category and tags). The other steps are
-- small enough to recompute from the facts on every run.

-- Every summary table is UNLOGGED: it is derived data, rebuilt from the ledger by a refresh, and
-- skipping the write-ahead log makes a full rebuild several times cheaper. After a crash
-- PostgreSQL empties unlogged tables — the watermarks with them — so the next refresh rebuilds
-- everything from the ledger by itself. (They are not replicated to standbys: insights are read
-- on the primary.)

-- What the incremental steps have already folded in.
CREATE UNLOGGED TABLE insights_watermarks (
  step text PRIMARY KEY,
  last_id bigint NOT NULL DEFAULT 0,
  refreshed_at timestamptz
);

-- One row per member, merchant and month: purchases (visits) net of full refunds, spend, points
-- net of refunds, and gross purchase / redemption counts (for the cross-merchant counts).
CREATE UNLOGGED TABLE insights_member_months (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  month date NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  points bigint NOT NULL,
  earns int NOT NULL,
  redeems int NOT NULL,
  PRIMARY KEY (tenant_id, member_id, month)
);

-- Per member, merchant and business day, for the last weeks only (rising members, visits in the
-- last 90 days): older days are pruned by every refresh.
CREATE UNLOGGED TABLE insights_member_recent_days (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  day date NOT NULL,
  visits int NOT NULL,
  points bigint NOT NULL,
  PRIMARY KEY (tenant_id, member_id, day)
);

-- Per member, merchant, month and purchase category / tag.
CREATE UNLOGGED TABLE insights_member_categories (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  month date NOT NULL,
  category text NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  PRIMARY KEY (tenant_id, member_id, month, category)
);
CREATE UNLOGGED TABLE insights_member_tags (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  month date NOT NULL,
  tag text NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  PRIMARY KEY (tenant_id, member_id, month, tag)
);

-- A member's profile at one merchant (all time). first_visit / last_visit: days of purchases
-- (a refund does not undo a visit's date).
CREATE UNLOGGED TABLE insights_members (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  points bigint NOT NULL,
  first_visit date,
  last_visit date,
  PRIMARY KEY (tenant_id, member_id)
);

-- Across a merchant's members, per month and category / tag.
CREATE UNLOGGED TABLE insights_tenant_categories (
  tenant_id bigint NOT NULL,
  month date NOT NULL,
  category text NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  PRIMARY KEY (tenant_id, month, category)
);
CREATE UNLOGGED TABLE insights_tenant_tags (
  tenant_id bigint NOT NULL,
  month date NOT NULL,
  tag text NOT NULL,
  visits int NOT NULL,
  spend numeric(18, 2) NOT NULL,
  PRIMARY KEY (tenant_id, month, tag)
);

-- Owner only (no grant, no application policy): which members redeemed at which merchants. It
-- is what the coalition split is computed from, and must never be readable by a merchant (it is
-- a member's activity elsewhere).
CREATE UNLOGGED TABLE insights_member_redeemers (
  member_id bigint NOT NULL,
  tenant_id bigint NOT NULL,
  PRIMARY KEY (member_id, tenant_id)
);

-- Rising members as of the last refresh (see insights_refresh_rising for the rule).
CREATE UNLOGGED TABLE insights_rising (
  tenant_id bigint NOT NULL,
  member_id bigint NOT NULL,
  recent_visit_days int NOT NULL,
  baseline_visit_days int NOT NULL,
  expected_visit_days numeric(12, 4) NOT NULL,
  recent_points bigint NOT NULL,
  baseline_points bigint NOT NULL,
  reason text NOT NULL CHECK (reason IN ('visits', 'points', 'visits_and_points')),
  score numeric(12, 4) NOT NULL,
  PRIMARY KEY (tenant_id, member_id)
);
CREATE INDEX insights_rising_rank ON insights_rising (tenant_id, score DESC, member_id);

-- Reward redemptions at a merchant (not cancelled), per reward and per group of members: all
-- ('all', ''), by the member's current tier ('tier', code), by segment ('segment', segment id).
CREATE UNLOGGED TABLE insights_reward_redemptions (
  tenant_id bigint NOT NULL,
  group_kind text NOT NULL CHECK (group_kind IN ('all', 'tier', 'segment')),
  group_key text NOT NULL,
  reward_id bigint NOT NULL,
  redemptions int NOT NULL,
  quantity int NOT NULL,
  points bigint NOT NULL,
  members int NOT NULL,
  last_redeemed_at timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, group_kind, group_key, reward_id)
);

-- Repeat-visit rate by enrolment cohort (the month of the member's link to the merchant).
CREATE UNLOGGED TABLE insights_retention (
  tenant_id bigint NOT NULL,
  cohort_month date NOT NULL,
  members int NOT NULL,
  repeat_members int NOT NULL,
  PRIMARY KEY (tenant_id, cohort_month)
);

-- The coalition's value: repeat-visit rate of members who also redeem elsewhere vs those who don't.
-- Counts below k are stored as NULL (both groups, since the merchant knows their sum).
CREATE UNLOGGED TABLE insights_coalition (
  tenant_id bigint NOT NULL,
  redeems_elsewhere boolean NOT NULL,
  members int,
  repeat_members int,
  k int NOT NULL,
  PRIMARY KEY (tenant_id, redeems_elsewhere)
);

-- How many of a merchant's members earned / redeemed at merchants of each category (never which
-- merchant) per month. Counts below k are stored as NULL: a small figure never exists where a
-- merchant's session can read it.
CREATE UNLOGGED TABLE insights_cross_categories (
  tenant_id bigint NOT NULL,
  month date NOT NULL,
  category text NOT NULL,
  earned_members int,
  redeemed_members int,
  k int NOT NULL,
  PRIMARY KEY (tenant_id, month, category),
  CHECK (earned_members IS NULL OR earned_members >= k),
  CHECK (redeemed_members IS NULL OR redeemed_members >= k)
);

CREATE FUNCTION insights_require_operator() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF alliance_role() <> 'operator' THEN
    RAISE EXCEPTION 'the insights refresh runs in the operator context' USING ERRCODE = '42501';
  END IF;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: facts (incremental). Folds ledger transactions (watermark, p_upto] into the monthly,
-- recent-day, category, tag, profile and tenant-month tables. p_upto: the highest id to fold in
-- (the caller leaves out the last seconds, so a posting whose id was drawn but not yet committed
-- is not skipped for ever). p_keep_since: the oldest day kept in insights_member_recent_days.
-- From empty (watermark 0, after insights_reset) the same statements insert without ON CONFLICT.
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_facts(p_time_zone text, p_upto bigint, p_keep_since date)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_from bigint;
  v_rows bigint;
  v_merge boolean;
  v_sql text;
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
  EXECUTE v_sql INTO v_rows USING p_time_zone, v_from, p_upto, p_keep_since;
  DELETE FROM insights_member_recent_days WHERE day < p_keep_since;

  UPDATE insights_watermarks SET last_id = p_upto, refreshed_at = now() WHERE step = 'facts';
  RETURN v_rows;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: rising members (recomputed). Per member and merchant, visit days in the recent window (the
-- last p_recent_weeks weeks up to p_today) against the member's own baseline (the p_baseline_weeks
-- weeks before it). With λ = baseline days × recent / baseline weeks, the expected count if
-- nothing changed, a Poisson count is "significantly above" when
--   recent ≥ λ + 3·√λ  and  recent ≥ p_min_count,  with at least one baseline visit day
-- (no baseline: a new customer, not a rising one). Points velocity: recent points ≥ 2 × the
-- baseline rate scaled to the recent window, with the same minimum of recent visit days (one big
-- basket is not a trend). score = (recent − λ) / √max(λ, 1).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_rising(p_today date, p_recent_weeks int, p_baseline_weeks int, p_min_count int)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_recent_start date := p_today - 7 * p_recent_weeks + 1;
  v_baseline_start date := p_today - 7 * (p_recent_weeks + p_baseline_weeks) + 1;
  v_ratio numeric := p_recent_weeks::numeric / p_baseline_weeks;
  v_rows bigint;
BEGIN
  PERFORM insights_require_operator();
  DELETE FROM insights_rising;
  INSERT INTO insights_rising (tenant_id, member_id, recent_visit_days, baseline_visit_days, expected_visit_days,
                               recent_points, baseline_points, reason, score)
  SELECT tenant_id, member_id, recent, baseline, round(expected, 4), recent_points, baseline_points,
         CASE WHEN by_visits AND by_points THEN 'visits_and_points' WHEN by_visits THEN 'visits' ELSE 'points' END,
         round((recent - expected) / sqrt(greatest(expected, 1)), 4)
    FROM (
      SELECT *, recent >= expected + 3 * sqrt(expected) AS by_visits,
             recent_points >= 2 * baseline_points * v_ratio AND baseline_points > 0 AS by_points
        FROM (
          SELECT tenant_id, member_id,
                 count(*) FILTER (WHERE day >= v_recent_start AND visits > 0)::int AS recent,
                 count(*) FILTER (WHERE day < v_recent_start AND visits > 0)::int AS baseline,
                 (count(*) FILTER (WHERE day < v_recent_start AND visits > 0)) * v_ratio AS expected,
                 coalesce(sum(points) FILTER (WHERE day >= v_recent_start), 0)::bigint AS recent_points,
                 coalesce(sum(points) FILTER (WHERE day < v_recent_start), 0)::bigint AS baseline_points
            FROM insights_member_recent_days
           WHERE day BETWEEN v_baseline_start AND p_today
           GROUP BY tenant_id, member_id
        ) counts
       WHERE baseline >= 1 AND recent >= p_min_count
    ) tested
   WHERE by_visits OR by_points;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  RETURN v_rows;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: segment membership (recomputed, set-based over every active segment). Definitions are
-- validated by the application (alliance.insights.segments); the three shapes are
--   {"category": c, "minMonths": m, "windowMonths": w}   bought c in ≥ m of the last w months
--   {"tag": t, "minMonths": m, "windowMonths": w}        the same for a purchase tag
--   {"minVisits": n?, "minSpend": "s"?, "windowMonths": w}  ≥ n visits / ≥ s spent in the window
-- where the window is the w calendar months up to and including p_today's. Members who stay keep
-- their `since`; archived segments have no members.
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_segments(p_today date)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_month date := date_trunc('month', p_today)::date;
  v_rows bigint;
BEGIN
  PERFORM insights_require_operator();
  CREATE TEMP TABLE insights_segment_windows ON COMMIT DROP AS
  SELECT s.id, s.tenant_id, s.definition ->> 'category' AS category, s.definition ->> 'tag' AS tag,
         coalesce((s.definition ->> 'minMonths')::int, 1) AS min_months,
         (s.definition ->> 'minVisits')::int AS min_visits, (s.definition ->> 'minSpend')::numeric AS min_spend,
         (v_month - make_interval(months => (s.definition ->> 'windowMonths')::int - 1))::date AS since_month
    FROM customer_segments s WHERE s.status = 'active';
  ANALYZE insights_segment_windows;  -- a few rows: the planner must know, or it sorts the facts to join them

  CREATE TEMP TABLE insights_segment_new ON COMMIT DROP AS
  SELECT w.id AS segment_id, w.tenant_id, c.member_id
    FROM insights_segment_windows w
    JOIN insights_member_categories c
      ON c.tenant_id = w.tenant_id AND c.category = w.category AND c.month BETWEEN w.since_month AND v_month
   WHERE w.category IS NOT NULL AND c.visits > 0
   GROUP BY w.id, w.tenant_id, c.member_id, w.min_months HAVING count(*) >= w.min_months
  UNION ALL
  SELECT w.id, w.tenant_id, g.member_id
    FROM insights_segment_windows w
    JOIN insights_member_tags g
      ON g.tenant_id = w.tenant_id AND g.tag = w.tag AND g.month BETWEEN w.since_month AND v_month
   WHERE w.tag IS NOT NULL AND g.visits > 0
   GROUP BY w.id, w.tenant_id, g.member_id, w.min_months HAVING count(*) >= w.min_months
  UNION ALL
  SELECT w.id, w.tenant_id, d.member_id
    FROM insights_segment_windows w
    JOIN insights_member_months d ON d.tenant_id = w.tenant_id AND d.month BETWEEN w.since_month AND v_month
   WHERE w.category IS NULL AND w.tag IS NULL
   GROUP BY w.id, w.tenant_id, d.member_id, w.min_visits, w.min_spend
  HAVING sum(d.visits) >= coalesce(w.min_visits, 0) AND sum(d.spend) >= coalesce(w.min_spend, 0)
     AND sum(d.visits) > 0;
  CREATE UNIQUE INDEX ON insights_segment_new (segment_id, member_id);

  DELETE FROM customer_segment_members m
   WHERE NOT EXISTS (SELECT 1 FROM insights_segment_new n WHERE n.segment_id = m.segment_id AND n.member_id = m.member_id);
  INSERT INTO customer_segment_members (segment_id, tenant_id, member_id)
  SELECT segment_id, tenant_id, member_id FROM insights_segment_new
  ON CONFLICT (segment_id, member_id) DO NOTHING;
  UPDATE customer_segments s
     SET member_count = coalesce((SELECT count(*) FROM insights_segment_new n WHERE n.segment_id = s.id), 0),
         refreshed_at = now();
  SELECT count(*) INTO v_rows FROM insights_segment_new;
  DROP TABLE insights_segment_windows, insights_segment_new;
  RETURN v_rows;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: redemption preferences (recomputed: a redemption's status changes after it is made, so
-- there is no append-only watermark to follow). Redemptions not cancelled, per reward, overall,
-- by the member's current tier, and by the merchant's segments (run after the segments step).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_redemptions()
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_base_tier text := (SELECT code FROM tiers ORDER BY rank LIMIT 1);
  v_rows bigint;
BEGIN
  PERFORM insights_require_operator();
  DELETE FROM insights_reward_redemptions;
  INSERT INTO insights_reward_redemptions (tenant_id, group_kind, group_key, reward_id, redemptions, quantity,
                                           points, members, last_redeemed_at)
  SELECT r.tenant_id, g.kind, g.key, r.reward_id, count(*), sum(r.quantity), sum(r.points),
         count(DISTINCT r.member_id), max(r.created_at)
    FROM reward_redemptions r
    LEFT JOIN member_tiers t ON t.member_id = r.member_id
    CROSS JOIN LATERAL (VALUES ('all', ''), ('tier', coalesce(t.tier_code, v_base_tier))) AS g(kind, key)
   WHERE r.status <> 'cancelled'
   GROUP BY r.tenant_id, g.kind, g.key, r.reward_id;
  INSERT INTO insights_reward_redemptions (tenant_id, group_kind, group_key, reward_id, redemptions, quantity,
                                           points, members, last_redeemed_at)
  SELECT r.tenant_id, 'segment', s.segment_id::text, r.reward_id, count(*), sum(r.quantity), sum(r.points),
         count(DISTINCT r.member_id), max(r.created_at)
    FROM reward_redemptions r
    JOIN customer_segment_members s ON s.tenant_id = r.tenant_id AND s.member_id = r.member_id
   WHERE r.status <> 'cancelled'
   GROUP BY r.tenant_id, s.segment_id, r.reward_id;
  SELECT count(*) INTO v_rows FROM insights_reward_redemptions;
  RETURN v_rows;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: retention (recomputed from the profiles). A repeat member bought on at least two
-- business days (their last purchase day is after their first). Cohort = the month (alliance time zone) of the member's link to the merchant.
-- The coalition split: members who redeemed at any other merchant vs those who did not; both
-- groups are NULL when either has fewer than p_k members (the merchant knows their sum).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_retention(p_time_zone text, p_k int)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_rows bigint;
BEGIN
  PERFORM insights_require_operator();
  DELETE FROM insights_retention;
  INSERT INTO insights_retention (tenant_id, cohort_month, members, repeat_members)
  SELECT l.tenant_id, date_trunc('month', l.created_at AT TIME ZONE p_time_zone)::date,
         count(*), count(*) FILTER (WHERE m.last_visit > m.first_visit)
    FROM member_links l LEFT JOIN insights_members m ON m.tenant_id = l.tenant_id AND m.member_id = l.member_id
   GROUP BY 1, 2;
  GET DIAGNOSTICS v_rows = ROW_COUNT;

  DELETE FROM insights_coalition;
  INSERT INTO insights_coalition (tenant_id, redeems_elsewhere, members, repeat_members, k)
  SELECT tenant_id, redeems_elsewhere,
         CASE WHEN smallest >= p_k THEN members END, CASE WHEN smallest >= p_k THEN repeat_members END, p_k
    FROM (
      SELECT *, min(members) OVER (PARTITION BY tenant_id) AS smallest
        FROM (
          SELECT g.tenant_id, g.redeems_elsewhere, count(x.member_id)::int AS members,
                 (count(x.member_id) FILTER (WHERE x.repeat))::int AS repeat_members
            FROM (SELECT DISTINCT tenant_id FROM member_links) t
            CROSS JOIN LATERAL (VALUES (t.tenant_id, true), (t.tenant_id, false)) AS g(tenant_id, redeems_elsewhere)
            LEFT JOIN (
              SELECT l.tenant_id, l.member_id, coalesce(m.last_visit > m.first_visit, false) AS repeat,
                     EXISTS (SELECT 1 FROM insights_member_redeemers r
                              WHERE r.member_id = l.member_id AND r.tenant_id <> l.tenant_id) AS redeems_elsewhere
                FROM member_links l
                LEFT JOIN insights_members m ON m.tenant_id = l.tenant_id AND m.member_id = l.member_id
            ) x ON x.tenant_id = g.tenant_id AND x.redeems_elsewhere = g.redeems_elsewhere
           GROUP BY 1, 2
        ) groups
    ) sized;
  RETURN v_rows;
END $$;

---------------------------------------------------------------------------------------------------
-- Step: cross-merchant counts (recomputed for the months p_months; gross counts, so a month's
-- figures freeze once no posting can be dated into it any more). For a merchant T, a month M
-- and a merchant category C: the number of T's members — linked to T before M began, so enrolling
-- someone today never changes a past month's figure — who earned (redeemed) in M at a merchant
-- other than T whose category is C. Stored only when ≥ p_k, else NULL.
---------------------------------------------------------------------------------------------------
CREATE FUNCTION insights_refresh_cross_categories(p_time_zone text, p_k int, p_months date[])
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_rows bigint;
BEGIN
  PERFORM insights_require_operator();
  DELETE FROM insights_cross_categories WHERE month = ANY (p_months);
  INSERT INTO insights_cross_categories (tenant_id, month, category, earned_members, redeemed_members, k)
  SELECT tenant_id, month, category,
         CASE WHEN earned >= p_k THEN earned END, CASE WHEN redeemed >= p_k THEN redeemed END, p_k
    FROM (
      SELECT l.tenant_id, a.month, t.category,
             count(DISTINCT a.member_id) FILTER (WHERE a.earns > 0) AS earned,
             count(DISTINCT a.member_id) FILTER (WHERE a.redeems > 0) AS redeemed
        FROM insights_member_months a
        JOIN member_links l ON l.member_id = a.member_id AND l.tenant_id <> a.tenant_id
         AND l.created_at < (a.month::timestamp AT TIME ZONE p_time_zone)
        JOIN tenants t ON t.id = a.tenant_id
       WHERE a.month = ANY (p_months)
       GROUP BY 1, 2, 3
    ) counted;
  GET DIAGNOSTICS v_rows = ROW_COUNT;
  RETURN v_rows;
END $$;

-- The months whose activity changed since a watermark (for the cross-merchant step): a cheap
-- index range on ledger_transactions.id, called before the facts step moves the watermark.
CREATE FUNCTION insights_touched_months(p_time_zone text, p_upto bigint)
RETURNS date[] LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM insights_require_operator();
  RETURN (SELECT coalesce(array_agg(DISTINCT date_trunc('month', t.effective_at AT TIME ZONE p_time_zone)::date),
                          '{}')
            FROM ledger_transactions t
           WHERE t.id > coalesce((SELECT last_id FROM insights_watermarks WHERE step = 'facts'), 0)
             AND t.id <= p_upto AND t.kind IN ('earn', 'redeem', 'capture') AND t.tenant_id IS NOT NULL);
END $$;

-- Forget everything (a full rebuild follows): summaries, watermarks and segment membership.
CREATE FUNCTION insights_reset()
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM insights_require_operator();
  TRUNCATE insights_watermarks, insights_member_months, insights_member_recent_days, insights_member_categories,
           insights_member_tags, insights_members, insights_tenant_categories, insights_tenant_tags,
           insights_member_redeemers,
           insights_rising, insights_reward_redemptions, insights_retention, insights_coalition,
           insights_cross_categories;
END $$;
