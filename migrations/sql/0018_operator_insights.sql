-- Operator insights (revision 0018): summaries of the ledger the operator's views read, so no
-- request aggregates the ledger itself. Points flows and redemption latency are folded in
-- incrementally (ledger_transactions, lots of a transaction and lot_movements are append-only,
-- so each refresh folds the transactions after a watermark); liability is recomputed from the
-- open lots (remaining and expires_at change in place, so no watermark applies to them).

SET LOCAL check_function_bodies = false;

CREATE TABLE insight_refresh_state (
  name text PRIMARY KEY,
  last_transaction_id bigint NOT NULL DEFAULT 0,  -- folded up to here
  time_zone text,
  refreshed_at timestamptz
);
INSERT INTO insight_refresh_state (name) VALUES ('operator');

-- Points per period (grain day, ISO week or month; bucket: its first business day in the alliance
-- time zone) of the transactions' effective time, with the definitions of settlement: issued and
-- clawed back as in settlement_clearing_activity, consumed and restored as in
-- settlement_provenance (redeemer set), expired as in settlement_breakage. Three grains, so a
-- report reads at most a few tens of thousands of rows whatever its span.
-- issuer NULL: points issued by the alliance itself; redeemer NULL: not a redemption row.
CREATE TABLE insight_point_flows (
  asset text NOT NULL,
  grain text NOT NULL CHECK (grain IN ('day', 'week', 'month')),
  bucket date NOT NULL,
  issuer_tenant_id bigint,
  redeemer_tenant_id bigint,
  issued bigint NOT NULL DEFAULT 0,
  clawed_back bigint NOT NULL DEFAULT 0,
  consumed bigint NOT NULL DEFAULT 0,
  restored bigint NOT NULL DEFAULT 0,
  expired bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX insight_point_flows_key ON insight_point_flows
  (asset, grain, bucket, issuer_tenant_id, redeemer_tenant_id) NULLS NOT DISTINCT;

-- The same flows per party: a merchant's (tenant NULL: the alliance's) issued points (net of
-- clawbacks), points redeemed at it, of those the ones other merchants issued (its settlement
-- receivable), its points redeemed at others (payable), its points redeemed anywhere, and its
-- points that expired. Reports by party read tens of rows per period instead of every pair.
CREATE TABLE insight_party_flows (
  asset text NOT NULL,
  grain text NOT NULL CHECK (grain IN ('day', 'week', 'month')),
  bucket date NOT NULL,
  tenant_id bigint,
  issued bigint NOT NULL DEFAULT 0,
  redeemed bigint NOT NULL DEFAULT 0,
  cross_redeemed bigint NOT NULL DEFAULT 0,
  redeemed_elsewhere bigint NOT NULL DEFAULT 0,
  issued_redeemed bigint NOT NULL DEFAULT 0,
  breakage bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX insight_party_flows_key ON insight_party_flows
  (asset, grain, bucket, tenant_id) NULLS NOT DISTINCT;

-- Net points consumed (redemptions minus their reversals) by whole days between the lot's issue
-- and the redemption, per merchant as issuer and as redeemer: a histogram, so weighted
-- percentiles are a cumulative sum over at most a few thousand rows per merchant.
CREATE TABLE insight_redemption_latency (
  asset text NOT NULL,
  tenant_id bigint NOT NULL,
  side text NOT NULL CHECK (side IN ('issuer', 'redeemer')),
  days int NOT NULL,
  points bigint NOT NULL,
  PRIMARY KEY (asset, tenant_id, side, days)
);

-- Weighted median and 90th percentile of the histogram, per merchant and side, recomputed by each
-- refresh (they are all-time figures, the same for every request).
CREATE TABLE insight_latency_percentiles (
  asset text NOT NULL,
  tenant_id bigint NOT NULL,
  side text NOT NULL,
  median_days int NOT NULL,
  p90_days int NOT NULL,
  points bigint NOT NULL,
  PRIMARY KEY (asset, tenant_id, side)
);

-- Outstanding points: open lots by issuer and expiry day, the last business day (alliance time
-- zone) the points can be used (expires_at is the first instant they cannot); NULL: never.
CREATE TABLE insight_liability (
  asset text NOT NULL,
  issuer_tenant_id bigint,
  expiry_day date,
  points bigint NOT NULL,
  lots bigint NOT NULL
);
CREATE UNIQUE INDEX insight_liability_key ON insight_liability
  (asset, issuer_tenant_id, expiry_day) NULLS NOT DISTINCT;

-- Flows and latency of the transactions with ids in (p_after, p_upto].
CREATE FUNCTION insight_flow_delta(p_after bigint, p_upto bigint, p_time_zone text)
RETURNS TABLE (asset text, day date, issuer_tenant_id bigint, redeemer_tenant_id bigint, issued bigint,
  clawed_back bigint, consumed bigint, restored bigint, expired bigint)
LANGUAGE sql STABLE AS $$
  WITH issued AS (
    SELECT t.asset, (t.effective_at AT TIME ZONE p_time_zone)::date AS day, l.issuer_tenant_id,
      NULL::bigint AS redeemer_tenant_id, sum(l.amount) AS issued, 0 AS clawed_back, 0 AS consumed,
      0 AS restored, 0 AS expired
    FROM ledger_transactions t JOIN lots l ON l.transaction_id = t.id
    WHERE t.id > p_after AND t.id <= p_upto AND t.kind IN ('earn', 'award', 'compensate')
    GROUP BY 1, 2, 3
  ), moved AS (
    SELECT t.asset, (t.effective_at AT TIME ZONE p_time_zone)::date AS day, l.issuer_tenant_id,
      CASE WHEN (t.kind IN ('redeem', 'capture') AND mv.kind = 'consume') OR (t.kind = 'reverse' AND mv.kind = 'restore')
           THEN t.tenant_id END AS redeemer_tenant_id,
      0 AS issued,
      coalesce(sum(-mv.points) FILTER (WHERE mv.kind = 'clawback'), 0) AS clawed_back,
      coalesce(sum(-mv.points) FILTER (WHERE t.kind IN ('redeem', 'capture') AND mv.kind = 'consume'), 0) AS consumed,
      coalesce(sum(mv.points) FILTER (WHERE t.kind = 'reverse' AND mv.kind = 'restore'), 0) AS restored,
      coalesce(sum(-mv.points) FILTER (WHERE t.kind = 'expire' AND mv.kind = 'expire'), 0) AS expired
    FROM ledger_transactions t JOIN lot_movements mv ON mv.transaction_id = t.id JOIN lots l ON l.id = mv.lot_id
    WHERE t.id > p_after AND t.id <= p_upto
    GROUP BY 1, 2, 3, 4
  )
  SELECT asset, day, issuer_tenant_id, redeemer_tenant_id, sum(issued)::bigint, sum(clawed_back)::bigint,
    sum(consumed)::bigint, sum(restored)::bigint, sum(expired)::bigint
  FROM (SELECT * FROM issued UNION ALL SELECT * FROM moved) d
  GROUP BY 1, 2, 3, 4
  HAVING sum(issued) <> 0 OR sum(clawed_back) <> 0 OR sum(consumed) <> 0 OR sum(restored) <> 0 OR sum(expired) <> 0
$$;

-- A reversal's restored points leave the latency bucket of the redemption it reverses (same
-- lot issue time, the redemption's effective time), so the histogram holds net redemptions.
CREATE FUNCTION insight_latency_delta(p_after bigint, p_upto bigint)
RETURNS TABLE (asset text, tenant_id bigint, side text, days int, points bigint)
LANGUAGE sql STABLE AS $$
  WITH redeemed AS (
    SELECT t.asset, l.issuer_tenant_id, t.tenant_id AS redeemer_tenant_id,
      greatest(floor(extract(epoch FROM t.effective_at - l.issued_at) / 86400), 0)::int AS days, -mv.points AS points
    FROM ledger_transactions t JOIN lot_movements mv ON mv.transaction_id = t.id JOIN lots l ON l.id = mv.lot_id
    WHERE t.id > p_after AND t.id <= p_upto AND t.kind IN ('redeem', 'capture') AND mv.kind = 'consume'
      AND t.tenant_id IS NOT NULL
    UNION ALL
    SELECT t.asset, l.issuer_tenant_id, t.tenant_id,
      greatest(floor(extract(epoch FROM r.effective_at - coalesce(o.issued_at, l.issued_at)) / 86400), 0)::int,
      -mv.points
    FROM ledger_transactions t JOIN lot_movements mv ON mv.transaction_id = t.id JOIN lots l ON l.id = mv.lot_id
    JOIN ledger_transactions r ON r.id = t.reverses_id
    LEFT JOIN lots o ON o.id = l.restored_from_lot_id
    WHERE t.id > p_after AND t.id <= p_upto AND t.kind = 'reverse' AND mv.kind = 'restore'
      AND t.tenant_id IS NOT NULL
  )
  SELECT asset, party, side, days, sum(points)::bigint
  FROM redeemed
  CROSS JOIN LATERAL (VALUES (issuer_tenant_id, 'issuer'), (redeemer_tenant_id, 'redeemer')) p(party, side)
  WHERE party IS NOT NULL
  GROUP BY 1, 2, 3, 4
  HAVING sum(points) <> 0
$$;

-- The operator's refresh: fold the transactions after the watermark up to p_upto (the horizon
-- `alliance insights refresh` chose: no lower id can still commit), then recompute liability.
-- A change of time zone rebuilds the buckets from the start.
CREATE FUNCTION insights_refresh_operator(p_time_zone text, p_upto bigint)
RETURNS TABLE (folded_from bigint, folded_to bigint, flow_rows bigint, liability_rows bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_state insight_refresh_state;
  v_from bigint;
  v_flows bigint := 0;
  v_liability bigint;
  v_upto bigint;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  SELECT * INTO STRICT v_state FROM insight_refresh_state WHERE name = 'operator' FOR UPDATE;
  v_upto := p_upto;
  v_from := CASE WHEN v_state.time_zone IS DISTINCT FROM p_time_zone THEN 0 ELSE v_state.last_transaction_id END;
  IF v_from = 0 THEN
    DELETE FROM insight_point_flows;
    DELETE FROM insight_party_flows;
    DELETE FROM insight_redemption_latency;
  END IF;
  IF v_upto > v_from THEN
    CREATE TEMP TABLE insight_delta ON COMMIT DROP AS
      SELECT d.asset, g.grain, date_trunc(g.grain, d.day::timestamp)::date AS bucket, d.issuer_tenant_id,
        d.redeemer_tenant_id, sum(d.issued) AS issued, sum(d.clawed_back) AS clawed_back,
        sum(d.consumed) AS consumed, sum(d.restored) AS restored, sum(d.expired) AS expired
      FROM insight_flow_delta(v_from, v_upto, p_time_zone) d
      CROSS JOIN (VALUES ('day'), ('week'), ('month')) g(grain)
      GROUP BY 1, 2, 3, 4, 5;
    -- In bucket order, so a rebuild lays each period's rows out together.
    INSERT INTO insight_point_flows AS f (asset, grain, bucket, issuer_tenant_id, redeemer_tenant_id, issued,
        clawed_back, consumed, restored, expired)
      SELECT * FROM insight_delta d ORDER BY d.asset, d.grain, d.bucket
      ON CONFLICT (asset, grain, bucket, issuer_tenant_id, redeemer_tenant_id) DO UPDATE SET
        issued = f.issued + EXCLUDED.issued, clawed_back = f.clawed_back + EXCLUDED.clawed_back,
        consumed = f.consumed + EXCLUDED.consumed, restored = f.restored + EXCLUDED.restored,
        expired = f.expired + EXCLUDED.expired;
    GET DIAGNOSTICS v_flows = ROW_COUNT;
    INSERT INTO insight_party_flows AS p (asset, grain, bucket, tenant_id, issued, redeemed, cross_redeemed,
        redeemed_elsewhere, issued_redeemed, breakage)
      SELECT d.asset, d.grain, d.bucket, x.party, sum(x.issued), sum(x.redeemed), sum(x.cross_redeemed),
        sum(x.redeemed_elsewhere), sum(x.issued_redeemed), sum(x.breakage)
      FROM insight_delta d CROSS JOIN LATERAL (VALUES
        ('issuer', d.issuer_tenant_id, d.issued - d.clawed_back, 0, 0,
         CASE WHEN d.redeemer_tenant_id <> d.issuer_tenant_id THEN d.consumed - d.restored ELSE 0 END,
         d.consumed - d.restored, d.expired),
        ('redeemer', d.redeemer_tenant_id, 0, d.consumed - d.restored,
         CASE WHEN d.issuer_tenant_id <> d.redeemer_tenant_id THEN d.consumed - d.restored ELSE 0 END, 0, 0, 0)
      ) x(side, party, issued, redeemed, cross_redeemed, redeemed_elsewhere, issued_redeemed, breakage)
      WHERE x.side = 'issuer' OR d.redeemer_tenant_id IS NOT NULL
      GROUP BY 1, 2, 3, 4
      ORDER BY 1, 2, 3
      ON CONFLICT (asset, grain, bucket, tenant_id) DO UPDATE SET
        issued = p.issued + EXCLUDED.issued, redeemed = p.redeemed + EXCLUDED.redeemed,
        cross_redeemed = p.cross_redeemed + EXCLUDED.cross_redeemed,
        redeemed_elsewhere = p.redeemed_elsewhere + EXCLUDED.redeemed_elsewhere,
        issued_redeemed = p.issued_redeemed + EXCLUDED.issued_redeemed, breakage = p.breakage + EXCLUDED.breakage;
    DROP TABLE insight_delta;
    INSERT INTO insight_redemption_latency AS h (asset, tenant_id, side, days, points)
      SELECT * FROM insight_latency_delta(v_from, v_upto)
      ON CONFLICT (asset, tenant_id, side, days) DO UPDATE SET points = h.points + EXCLUDED.points;
  END IF;

  -- The smallest d with at least half (nine tenths) of the points redeemed within d days.
  DELETE FROM insight_latency_percentiles;
  INSERT INTO insight_latency_percentiles (asset, tenant_id, side, median_days, p90_days, points)
    SELECT asset, tenant_id, side, min(days) FILTER (WHERE cum * 2 >= total),
      min(days) FILTER (WHERE cum * 10 >= total * 9), max(total)
    FROM (SELECT h.asset, h.tenant_id, h.side, h.days,
            sum(h.points) OVER (PARTITION BY h.asset, h.tenant_id, h.side ORDER BY h.days) AS cum,
            sum(h.points) OVER (PARTITION BY h.asset, h.tenant_id, h.side) AS total
          FROM insight_redemption_latency h WHERE h.points > 0) c
    GROUP BY 1, 2, 3;

  DELETE FROM insight_liability;
  INSERT INTO insight_liability (asset, issuer_tenant_id, expiry_day, points, lots)
    SELECT l.asset, l.issuer_tenant_id, ((l.expires_at - interval '1 microsecond') AT TIME ZONE p_time_zone)::date,
      sum(l.remaining), count(*)
    FROM lots l WHERE l.remaining > 0
    GROUP BY 1, 2, 3;
  GET DIAGNOSTICS v_liability = ROW_COUNT;

  -- Fresh statistics: the reports' plans depend on how many rows a period holds.
  ANALYZE insight_point_flows, insight_party_flows, insight_redemption_latency, insight_latency_percentiles,
    insight_liability;
  UPDATE insight_refresh_state SET last_transaction_id = greatest(v_from, v_upto), time_zone = p_time_zone,
      refreshed_at = now()
    WHERE name = 'operator';
  RETURN QUERY SELECT v_from, greatest(v_from, v_upto), v_flows, v_liability;
END $$;

-- The reports that join the summaries with tenants and settlement run as the owner, for the
-- operator only: under row-level security the planner cannot know the policies' filters keep
-- every row for the operator, estimates one row per table and picks nested loops over tens of
-- thousands of rows (x10 slower).
CREATE FUNCTION insight_flow_pairs(p_asset text, p_grain text, p_start date, p_end date, p_by text, p_own boolean,
  p_tenant_code text)
RETURNS TABLE (period_start date, issuer_code text, issuer_category text, redeemer_code text,
  redeemer_category text, points bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  RETURN QUERY
  SELECT f.bucket,
    CASE WHEN p_by = 'category' THEN NULL ELSE coalesce(i.code, 'ALLIANCE') END, i.category,
    CASE WHEN p_by = 'category' THEN NULL ELSE r.code END, r.category,
    sum(f.consumed - f.restored)::bigint
  FROM insight_point_flows f LEFT JOIN tenants i ON i.id = f.issuer_tenant_id
  JOIN tenants r ON r.id = f.redeemer_tenant_id
  WHERE f.asset = p_asset AND f.grain = p_grain AND f.bucket >= p_start AND f.bucket < p_end
    AND f.redeemer_tenant_id IS NOT NULL AND (p_own OR f.issuer_tenant_id IS DISTINCT FROM f.redeemer_tenant_id)
    AND (p_tenant_code IS NULL OR i.code = p_tenant_code OR r.code = p_tenant_code)
  GROUP BY 1, 2, 3, 4, 5
  HAVING sum(f.consumed - f.restored) <> 0
  ORDER BY 1, 3 NULLS FIRST, 2, 5, 4;
END $$;

-- Per merchant: issued and redeemed over the months starting in [p_start, p_end), settlement
-- lines and disputes of the batches starting in [p_start_at, p_end_at), all-time latency.
CREATE FUNCTION insight_merchant_health(p_asset text, p_start date, p_end date, p_start_at timestamptz,
  p_end_at timestamptz, p_tenant_code text)
RETURNS TABLE (code text, category text, issued bigint, redeemed bigint, alliance_issued bigint,
  alliance_redeemed bigint, lines bigint, disputes bigint, issuer_median int, issuer_p90 int, issuer_points bigint,
  redeemer_median int, redeemer_p90 int, redeemer_points bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  RETURN QUERY
  WITH activity AS (
    SELECT p.tenant_id, sum(p.issued) AS issued, sum(p.redeemed) AS redeemed
    FROM insight_party_flows p
    WHERE p.asset = p_asset AND p.grain = 'month' AND p.bucket >= p_start AND p.bucket < p_end
      AND p.tenant_id IS NOT NULL
    GROUP BY 1
  ), batches AS (
    SELECT b.id FROM settlement_batches b
    WHERE b.asset = p_asset AND b.period_start >= p_start_at AND b.period_start < p_end_at
  ), line_parties AS (
    SELECT x.tenant_id, count(*) AS lines FROM settlement_lines l JOIN batches b ON b.id = l.batch_id
    CROSS JOIN LATERAL (VALUES (l.issuer_tenant_id), (l.redeemer_tenant_id)) x(tenant_id)
    GROUP BY 1
  ), dispute_parties AS (
    SELECT x.tenant_id, count(*) AS disputes FROM settlement_disputes d JOIN batches b ON b.id = d.batch_id
    CROSS JOIN LATERAL (VALUES (d.issuer_tenant_id), (d.redeemer_tenant_id)) x(tenant_id)
    GROUP BY 1
  ), latency AS (
    SELECT * FROM insight_latency_percentiles WHERE asset = p_asset
  ), parties AS (
    SELECT a.tenant_id FROM activity a UNION SELECT l.tenant_id FROM line_parties l
    UNION SELECT y.tenant_id FROM latency y
  )
  SELECT t.code, t.category, coalesce(a.issued, 0)::bigint, coalesce(a.redeemed, 0)::bigint,
    (SELECT coalesce(sum(x.issued), 0) FROM activity x)::bigint,
    (SELECT coalesce(sum(x.redeemed), 0) FROM activity x)::bigint,
    coalesce(l.lines, 0), coalesce(d.disputes, 0),
    li.median_days, li.p90_days, coalesce(li.points, 0), lr.median_days, lr.p90_days, coalesce(lr.points, 0)
  FROM parties p JOIN tenants t ON t.id = p.tenant_id
  LEFT JOIN activity a ON a.tenant_id = p.tenant_id
  LEFT JOIN line_parties l ON l.tenant_id = p.tenant_id
  LEFT JOIN dispute_parties d ON d.tenant_id = p.tenant_id
  LEFT JOIN latency li ON li.tenant_id = p.tenant_id AND li.side = 'issuer'
  LEFT JOIN latency lr ON lr.tenant_id = p.tenant_id AND lr.side = 'redeemer'
  WHERE p_tenant_code IS NULL OR t.code = p_tenant_code
  ORDER BY t.code;
END $$;
