-- Tier upgrades after a credit, set-based (revision 0024).
--
-- Revision 0014 made the *check* set-based: one statement keeps only the members whose credits in
-- the window could reach a higher tier. The members it kept still went one by one through
-- tier_upgrade_if_qualified: about fifteen statements each (the rank, the rolling points twice,
-- the lock, the row, the update, the audit row). Measured on the benchmark's data after its
-- phases: a 1000-earn batch kept 55-73 members, and every one of them moved up, for 50-77 ms of
-- the batch's ~250 ms in PostgreSQL (~1 ms a member).
--
-- Here the members kept go through the same steps together: the rolling points and the tier they
-- reach in one statement, the locks in member order, the rows, then one statement for the
-- updates and the audit rows. The decisions are tier_upgrade_if_qualified's, which stays for a
-- single member (tests, tools):
-- * move up at once to the highest tier the rolling points reach, never down;
-- * a member in a grace period who is back at their tier's threshold leaves it;
-- * concurrent credits of one member queue on the member's tier lock, and the points are counted
--   after it, so the later credit counts the earlier one's points;
-- * a member without a tier row gets one only when the points read before the locks move it up
--   (a base-tier row, which reads as no row, if a concurrent refund then keeps it below).

-- The rolling points of several members (tier_rolling_points, for a set) and the tier each
-- reaches, against the tier they hold. SQL without SET options, so a caller's statement inlines it
-- and keeps its plan.
CREATE FUNCTION tier_targets(p_members bigint[])
RETURNS TABLE (member_id bigint, points bigint, target_code text, target_rank int, current_code text,
               current_rank int, below_since timestamptz)
LANGUAGE sql STABLE AS $$
  SELECT p.member_id, p.points, tgt.code, tgt.rank, cur.code, cur.rank, mt.below_since
  FROM (
    SELECT u.id AS member_id, coalesce(sum(t.points - coalesce(r.reversed, 0)), 0)::bigint AS points
    FROM unnest(p_members) AS u(id)
    CROSS JOIN tier_settings s
    LEFT JOIN ledger_transactions t
      ON t.member_id = u.id AND t.kind IN ('earn', 'award', 'compensate') AND t.asset = s.asset
      AND t.effective_at > now() - make_interval(months => s.window_months) AND t.effective_at <= now()
    LEFT JOIN LATERAL (SELECT sum(x.points + x.shortfall) AS reversed FROM ledger_transactions x
                       WHERE x.reverses_id = t.id AND x.kind = 'reverse') r ON true
    GROUP BY u.id
  ) p
  LEFT JOIN member_tiers mt ON mt.member_id = p.member_id
  JOIN tiers cur ON cur.code = coalesce(mt.tier_code, (SELECT b.code FROM tiers b ORDER BY b.rank LIMIT 1))
  LEFT JOIN LATERAL (SELECT t.code, t.rank FROM tiers t WHERE t.qualifying_points <= p.points
                     ORDER BY t.rank DESC LIMIT 1) tgt ON true
$$;

CREATE OR REPLACE FUNCTION tier_upgrade_members_if_qualified(p_members bigint[])
RETURNS int LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_candidates bigint[];
  v_movers bigint[];
  v_member bigint;
  v_upgraded int;
BEGIN
  -- Members whose credits in the window could reach a higher tier (an upper bound: reversals only
  -- lower the rolling points), or who are in a grace period.
  v_candidates := ARRAY(
    SELECT m.id
    FROM (SELECT DISTINCT u.id FROM unnest(p_members) AS u(id) WHERE u.id IS NOT NULL) m
    CROSS JOIN tier_settings s
    LEFT JOIN member_tiers mt ON mt.member_id = m.id
    LEFT JOIN tiers cur ON cur.code = mt.tier_code
    CROSS JOIN LATERAL (SELECT min(t.qualifying_points) AS points FROM tiers t
                        WHERE t.rank > coalesce(cur.rank, 0)) next_tier
    WHERE mt.below_since IS NOT NULL
       OR (next_tier.points IS NOT NULL
           AND (SELECT coalesce(sum(t.points), 0) FROM ledger_transactions t
                WHERE t.member_id = m.id AND t.kind IN ('earn', 'award', 'compensate') AND t.asset = s.asset
                  AND t.effective_at > now() - make_interval(months => s.window_months)
                  AND t.effective_at <= now()) >= next_tier.points));
  IF cardinality(v_candidates) = 0 THEN
    RETURN 0;
  END IF;

  -- Without a lock, the exact points rule out the candidates that do not move.
  v_movers := ARRAY(SELECT d.member_id FROM tier_targets(v_candidates) d
                    WHERE d.target_rank > d.current_rank OR d.below_since IS NOT NULL
                    ORDER BY d.member_id);
  IF cardinality(v_movers) = 0 THEN
    RETURN 0;
  END IF;
  -- In member order, so concurrent batches sharing members cannot deadlock.
  FOREACH v_member IN ARRAY v_movers LOOP
    PERFORM tier_lock_member(v_member);
  END LOOP;
  -- A base-tier row (held since enrolment) for a member moving up without one, then every row
  -- locked; the statement after this one sees what was committed before the locks were ours.
  INSERT INTO member_tiers (member_id, tier_code, since)
    SELECT m.id, (tier_base()).code, m.created_at FROM members m
    WHERE m.id = ANY (v_movers) AND NOT EXISTS (SELECT 1 FROM member_tiers mt WHERE mt.member_id = m.id)
    ORDER BY m.id
    ON CONFLICT (member_id) DO NOTHING;
  PERFORM 1 FROM member_tiers mt WHERE mt.member_id = ANY (v_movers) ORDER BY mt.member_id FOR UPDATE;

  WITH decided AS MATERIALIZED (
    SELECT d.* FROM tier_targets(v_movers) d
  ), moved_up AS (
    UPDATE member_tiers mt SET tier_code = d.target_code, since = now(), below_since = NULL
    FROM decided d WHERE mt.member_id = d.member_id AND d.target_rank > d.current_rank
    RETURNING mt.member_id
  ), grace_ended AS (
    UPDATE member_tiers mt SET below_since = NULL
    FROM decided d
    WHERE mt.member_id = d.member_id AND d.target_rank = d.current_rank AND d.below_since IS NOT NULL
    RETURNING mt.member_id
  ), audited AS (
    INSERT INTO tier_changes (member_id, from_tier, to_tier, reason, rolling_points)
      SELECT d.member_id, d.current_code, d.target_code, 'qualified', d.points
      FROM decided d JOIN moved_up u ON u.member_id = d.member_id
      ORDER BY d.member_id
      RETURNING member_id
  )
  SELECT count(*) INTO v_upgraded FROM audited;
  RETURN v_upgraded;
END $$;
