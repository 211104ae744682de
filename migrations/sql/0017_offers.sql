-- Targeted offers (migration 0017).

-- The earn path's question when a segment-restricted rule is in force at the merchant: which of
-- its active segments is each of these members in? One indexed lookup per member on
-- customer_segment_members (tenant_id, member_id), for one member or a whole batch, answered as
-- {"<member number>": ["<segment code>", ...]} (members in no segment are absent).
-- PL/pgSQL with a generic plan (a LANGUAGE sql function that is not inlined plans its query on
-- every call); the per-member subquery keeps that generic plan on the (tenant_id, member_id)
-- index whatever the segments' size (a join let it scan all of the merchant's memberships).
CREATE FUNCTION earning_member_segments(p_tenant bigint, p_member_numbers text[])
RETURNS jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public
SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN (
    SELECT coalesce(jsonb_object_agg(found.member_number, found.codes), '{}'::jsonb)
    FROM (
      SELECT m.member_number,
        (SELECT jsonb_agg(s.code ORDER BY s.code)
         FROM customer_segment_members sm JOIN customer_segments s ON s.id = sm.segment_id
         WHERE sm.tenant_id = p_tenant AND sm.member_id = m.id AND s.status = 'active') AS codes
      FROM members m
      WHERE m.member_number = ANY (p_member_numbers)) found
    WHERE found.codes IS NOT NULL);
END $$;

-- Withdrawing an offer before it starts: its rule version never came into force, so it goes
-- (the application role cannot delete rules; this deletes only the calling merchant's scheduled,
-- segment-restricted version of the code).
CREATE FUNCTION offers_cancel_scheduled_rule(p_code text)
RETURNS int LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public AS $$
  WITH gone AS (
    DELETE FROM earning_rules
    WHERE alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id() AND code = p_code
      AND config ? 'segment' AND effective_from > now()
    RETURNING 1)
  SELECT count(*)::int FROM gone
$$;

-- How offers did (definitions in src/alliance/offers/results.py), set-based for any number of
-- offers. SECURITY INVOKER: a merchant calling it measures only what its row-level security lets
-- it read (its own offers, segments and transactions); the refresh, as the owner, measures all.
CREATE FUNCTION offer_measure(p_offers bigint[], p_at timestamptz)
RETURNS TABLE (offer_id bigint, tenant_id bigint, window_start timestamptz, window_end timestamptz,
  baseline_start timestamptz, segment_size bigint, members_earned bigint, spend_in_window numeric,
  spend_in_baseline numeric, points_cost bigint)
LANGUAGE sql STABLE SET search_path = public AS $$
  WITH windows AS (
    SELECT o.id, o.code, o.tenant_id, o.segment_id, o.starts_at,
      greatest(o.starts_at, least(o.ends_at, coalesce(o.withdrawn_at, 'infinity'), p_at)) AS window_end
    FROM offers o WHERE o.id = ANY (p_offers)
  ), w AS (
    SELECT windows.*, windows.starts_at - (windows.window_end - windows.starts_at) AS baseline_start
    FROM windows
  ), segment AS (
    SELECT w.id AS offer_id, m.member_id
    FROM w JOIN customer_segment_members m ON m.segment_id = w.segment_id
  ), earns AS (
    SELECT s.offer_id, t.member_id, t.amount, t.effective_at >= w.starts_at AS in_window, t.details
    FROM segment s JOIN w ON w.id = s.offer_id
    JOIN ledger_transactions t ON t.member_id = s.member_id
    WHERE t.tenant_id = w.tenant_id AND t.kind = 'earn'
      AND t.effective_at >= w.baseline_start AND t.effective_at < w.window_end
      AND NOT EXISTS (SELECT 1 FROM ledger_transactions r WHERE r.reverses_id = t.id)
  ), offer_lines AS (
    SELECT e.offer_id, e.member_id, (line ->> 'points')::bigint AS points
    FROM earns e JOIN w ON w.id = e.offer_id
    CROSS JOIN LATERAL jsonb_array_elements(coalesce(e.details -> 'breakdown', '[]'::jsonb)) line
    WHERE e.in_window AND line ->> 'rule' = 'offer:' || w.code
  ), sizes AS (
    SELECT s.offer_id, count(*) AS members FROM segment s GROUP BY s.offer_id
  ), spend AS (
    SELECT e.offer_id, sum(e.amount) FILTER (WHERE e.in_window) AS in_window,
      sum(e.amount) FILTER (WHERE NOT e.in_window) AS in_baseline
    FROM earns e GROUP BY e.offer_id
  ), cost AS (
    SELECT l.offer_id, count(DISTINCT l.member_id) FILTER (WHERE l.points > 0) AS earned,
      sum(l.points) AS points
    FROM offer_lines l GROUP BY l.offer_id
  )
  SELECT w.id, w.tenant_id, w.starts_at, w.window_end, w.baseline_start,
    coalesce(sizes.members, 0), coalesce(cost.earned, 0), coalesce(spend.in_window, 0),
    coalesce(spend.in_baseline, 0), coalesce(cost.points, 0)::bigint
  FROM w
  LEFT JOIN sizes ON sizes.offer_id = w.id
  LEFT JOIN spend ON spend.offer_id = w.id
  LEFT JOIN cost ON cost.offer_id = w.id
$$;

-- The summary requests read: re-measured on each refresh while an offer runs and for 30 days
-- after its window closes (returns reverse earns, late POS uploads are backdated), then frozen.
-- Run by `alliance insights refresh` (the application role in the operator context; the
-- function writes as the owner); answers how many offers it measured.
CREATE FUNCTION refresh_offer_results(p_at timestamptz DEFAULT now())
RETURNS int LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public AS $$
DECLARE v_measured int;
BEGIN
  IF alliance_role() IS DISTINCT FROM 'operator' AND session_user <> current_user THEN
    RAISE EXCEPTION 'offer results are refreshed in the operator context' USING ERRCODE = '42501';
  END IF;
  WITH due AS (
    SELECT array_agg(o.id) AS ids
    FROM offers o LEFT JOIN offer_results r ON r.offer_id = o.id
    WHERE o.starts_at <= p_at
      AND (r.offer_id IS NULL
        OR least(o.ends_at, coalesce(o.withdrawn_at, 'infinity')) > p_at - interval '30 days')
  ), measured AS (
    INSERT INTO offer_results AS r (offer_id, tenant_id, window_start, window_end, baseline_start,
      segment_size, members_earned, spend_in_window, spend_in_baseline, points_cost, refreshed_at)
    SELECT m.offer_id, m.tenant_id, m.window_start, m.window_end, m.baseline_start, m.segment_size,
      m.members_earned, m.spend_in_window, m.spend_in_baseline, m.points_cost, p_at
    FROM due CROSS JOIN LATERAL offer_measure(due.ids, p_at) m
    ON CONFLICT (offer_id) DO UPDATE SET window_start = excluded.window_start,
      window_end = excluded.window_end, baseline_start = excluded.baseline_start,
      segment_size = excluded.segment_size, members_earned = excluded.members_earned,
      spend_in_window = excluded.spend_in_window, spend_in_baseline = excluded.spend_in_baseline,
      points_cost = excluded.points_cost, refreshed_at = excluded.refreshed_at
    RETURNING 1)
  SELECT count(*)::int INTO v_measured FROM measured;
  RETURN v_measured;
END $$;
