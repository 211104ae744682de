-- Member tiers (revision 0004): qualification from the ledger, immediate upgrades, the nightly
-- evaluation (downgrades only after a grace period) and an append-only audit of every change.
--
-- Qualifying points: what a member EARNED (ledger kinds earn, award, compensate) in the
-- qualifying asset over the rolling window, by effective_at, minus what was reversed of those
-- very credits (points clawed back plus any recorded shortfall). Redemptions, expiry and
-- operator adjustments do not count: spending points never costs a member their tier.

-- One row: the qualifying asset, the rolling window and the grace period before a downgrade.
CREATE TABLE tier_settings (
  id boolean PRIMARY KEY DEFAULT true CHECK (id),
  asset text NOT NULL DEFAULT 'POINTS' REFERENCES assets(code),
  window_months int NOT NULL DEFAULT 12 CHECK (window_months BETWEEN 1 AND 60),
  grace_days int NOT NULL DEFAULT 30 CHECK (grace_days BETWEEN 0 AND 366)
);
INSERT INTO tier_settings DEFAULT VALUES;

-- The audit trail: every tier change, why, and the rolling points at that moment. Append-only.
CREATE TABLE tier_changes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  member_id bigint NOT NULL REFERENCES members(id),
  from_tier text NOT NULL REFERENCES tiers(code),
  to_tier text NOT NULL REFERENCES tiers(code),
  reason text NOT NULL CHECK (reason IN ('qualified', 'grace_expired', 'operator')),
  rolling_points bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (from_tier <> to_tier)
);
CREATE INDEX tier_changes_member ON tier_changes (member_id, id);

CREATE FUNCTION tier_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'tier changes are append-only: % on % refused', TG_OP, TG_TABLE_NAME USING ERRCODE = '42501';
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON tier_changes
  FOR EACH ROW EXECUTE FUNCTION tier_refuse_change();
CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON tier_changes
  FOR EACH STATEMENT EXECUTE FUNCTION tier_refuse_change();

-- The earn path sums one member's credits of the window: an index-only range scan.
CREATE INDEX ledger_transactions_tier_credits ON ledger_transactions (member_id, effective_at)
  INCLUDE (asset, points, id) WHERE kind IN ('earn', 'award', 'compensate');

-- One member's qualifying points now (kept in step with tier_rolling_points_all below).
CREATE FUNCTION tier_rolling_points(p_member bigint)
RETURNS bigint LANGUAGE sql STABLE SET search_path = public AS $$
  SELECT coalesce(sum(t.points - coalesce(r.reversed, 0)), 0)::bigint
  FROM ledger_transactions t
  LEFT JOIN LATERAL (SELECT sum(x.points + x.shortfall) AS reversed FROM ledger_transactions x
                     WHERE x.reverses_id = t.id AND x.kind = 'reverse') r ON true
  WHERE t.member_id = p_member AND t.kind IN ('earn', 'award', 'compensate')
    AND t.asset = (SELECT s.asset FROM tier_settings s)
    AND t.effective_at > now() - (SELECT make_interval(months => s.window_months) FROM tier_settings s)
    AND t.effective_at <= now()
$$;

-- Every member's qualifying points now (members with none are absent), set-based.
CREATE FUNCTION tier_rolling_points_all()
RETURNS TABLE (member_id bigint, points bigint) LANGUAGE sql STABLE SET search_path = public AS $$
  WITH credits AS (
    SELECT t.id, t.member_id, t.points FROM ledger_transactions t
    WHERE t.kind IN ('earn', 'award', 'compensate')
      AND t.asset = (SELECT s.asset FROM tier_settings s)
      AND t.effective_at > now() - (SELECT make_interval(months => s.window_months) FROM tier_settings s)
      AND t.effective_at <= now()
  ), reversed AS (
    SELECT x.reverses_id AS id, sum(x.points + x.shortfall) AS points
    FROM ledger_transactions x JOIN credits c ON c.id = x.reverses_id
    WHERE x.kind = 'reverse' GROUP BY x.reverses_id
  )
  SELECT c.member_id, sum(c.points - coalesce(v.points, 0))::bigint
  FROM credits c LEFT JOIN reversed v ON v.id = c.id
  GROUP BY c.member_id
$$;

-- The base tier (the lowest rank; rank 0 by convention).
CREATE FUNCTION tier_base() RETURNS tiers LANGUAGE sql STABLE SET search_path = public AS $$
  SELECT * FROM tiers ORDER BY rank LIMIT 1
$$;

-- The highest tier whose threshold p_points reach.
CREATE FUNCTION tier_for_points(p_points bigint) RETURNS tiers LANGUAGE sql STABLE SET search_path = public AS $$
  SELECT * FROM tiers WHERE qualifying_points <= p_points ORDER BY rank DESC LIMIT 1
$$;

-- Serialises the tier changes of one member (the earn path and operator assignments).
CREATE FUNCTION tier_lock_member(p_member bigint) RETURNS void LANGUAGE sql AS $$
  SELECT pg_advisory_xact_lock(hashtextextended(format('tier:%s', p_member), 0))
$$;

-- The member's tier row, locked; a member without one gets the base tier (since enrolment) first.
CREATE FUNCTION tier_lock_row(p_member bigint) RETURNS member_tiers
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE v_row member_tiers;
BEGIN
  INSERT INTO member_tiers (member_id, tier_code, since)
    SELECT m.id, (tier_base()).code, m.created_at FROM members m WHERE m.id = p_member
    ON CONFLICT (member_id) DO NOTHING;
  SELECT * INTO STRICT v_row FROM member_tiers WHERE member_id = p_member FOR UPDATE;
  RETURN v_row;
END $$;

-- Upgrade at once on qualification: move the member up to the highest tier their rolling points
-- reach — never down (downgrades are the nightly evaluation's, after the grace period). A member
-- in their grace period who is back above their tier's threshold leaves it. Returns the new tier
-- code, or NULL when nothing moved. The ledger's earn path calls it after posting.
CREATE FUNCTION tier_upgrade_if_qualified(p_member bigint)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_points bigint;
  v_target tiers;
  v_current tiers;
  v_row member_tiers;
BEGIN
  -- Fast exit without a lock: already at the top and not in a grace period.
  IF NOT EXISTS (SELECT 1 FROM tiers t WHERE t.rank > member_tier_rank(p_member))
     AND NOT EXISTS (SELECT 1 FROM member_tiers mt WHERE mt.member_id = p_member AND mt.below_since IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  -- Fast exit without a lock: the points do not reach a higher tier (the common case of an earn).
  IF (tier_for_points(tier_rolling_points(p_member))).rank <= member_tier_rank(p_member)
     AND NOT EXISTS (SELECT 1 FROM member_tiers mt WHERE mt.member_id = p_member AND mt.below_since IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  -- Concurrent earns of one member queue here, so the later one counts the earlier one's points
  -- (each statement below reads what has been committed by then).
  PERFORM tier_lock_member(p_member);
  v_points := tier_rolling_points(p_member);
  v_target := tier_for_points(v_points);
  SELECT t.* INTO v_current FROM member_tiers mt JOIN tiers t ON t.code = mt.tier_code WHERE mt.member_id = p_member;
  IF NOT FOUND THEN
    v_current := tier_base();
  END IF;
  IF v_target.code IS NULL OR v_target.rank < v_current.rank
     OR (v_target.rank = v_current.rank
         AND NOT EXISTS (SELECT 1 FROM member_tiers mt WHERE mt.member_id = p_member AND mt.below_since IS NOT NULL)) THEN
    RETURN NULL;
  END IF;
  v_row := tier_lock_row(p_member);
  SELECT * INTO STRICT v_current FROM tiers WHERE code = v_row.tier_code;
  IF v_target.rank > v_current.rank THEN
    UPDATE member_tiers SET tier_code = v_target.code, since = now(), below_since = NULL WHERE member_id = p_member;
    INSERT INTO tier_changes (member_id, from_tier, to_tier, reason, rolling_points)
      VALUES (p_member, v_current.code, v_target.code, 'qualified', v_points);
    RETURN v_target.code;
  END IF;
  IF v_target.rank = v_current.rank AND v_row.below_since IS NOT NULL THEN
    UPDATE member_tiers SET below_since = NULL WHERE member_id = p_member;
  END IF;
  RETURN NULL;
END $$;

-- The nightly evaluation of every member, set-based and in one statement: upgrades as above; a
-- member below their tier's threshold starts a grace period (below_since); one still below after
-- grace_days moves down to the tier their points reach; one back above leaves the grace period.
-- Serialised by an advisory lock, so two runs (a retried CronJob) queue and the second finds
-- nothing left to do. A change that an earn made meanwhile wins: rows are only updated if they
-- are still as they were read.
CREATE FUNCTION tier_evaluate()
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE v_result jsonb;
BEGIN
  IF alliance_role() <> 'operator' AND session_user <> current_user THEN
    RAISE EXCEPTION 'tier_evaluate needs the operator context' USING ERRCODE = '42501';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('alliance:tiers:evaluate', 0));
  WITH points AS (
    SELECT * FROM tier_rolling_points_all()
  ), state AS (
    SELECT m.member_id, coalesce(p.points, 0) AS rolling_points, mt.member_id IS NOT NULL AS has_row,
      cur.code AS current_code, cur.rank AS current_rank, mt.below_since,
      tgt.code AS target_code, tgt.rank AS target_rank
    FROM (SELECT member_id FROM member_tiers UNION SELECT member_id FROM points) m
    LEFT JOIN points p ON p.member_id = m.member_id
    LEFT JOIN member_tiers mt ON mt.member_id = m.member_id
    JOIN tiers cur ON cur.code = coalesce(mt.tier_code, (tier_base()).code)
    LEFT JOIN LATERAL (SELECT t.code, t.rank FROM tiers t WHERE t.qualifying_points <= coalesce(p.points, 0)
                       ORDER BY t.rank DESC LIMIT 1) tgt ON true
  ), decided AS (
    SELECT s.*, CASE
        WHEN s.target_rank > s.current_rank THEN 'qualified'
        WHEN s.target_rank < s.current_rank AND s.below_since IS NULL THEN 'below'
        WHEN s.target_rank < s.current_rank
             AND s.below_since <= now() - make_interval(days => (SELECT grace_days FROM tier_settings)) THEN 'grace_expired'
        WHEN s.target_rank >= s.current_rank AND s.below_since IS NOT NULL THEN 'recovered'
      END AS action
    FROM state s
  ), inserted AS (
    INSERT INTO member_tiers (member_id, tier_code, since)
      SELECT d.member_id, d.target_code, now() FROM decided d WHERE d.action = 'qualified' AND NOT d.has_row
      ON CONFLICT (member_id) DO NOTHING
      RETURNING member_id
  ), updated AS (
    UPDATE member_tiers mt SET
        tier_code = CASE WHEN d.action IN ('qualified', 'grace_expired') THEN d.target_code ELSE mt.tier_code END,
        since = CASE WHEN d.action IN ('qualified', 'grace_expired') THEN now() ELSE mt.since END,
        below_since = CASE WHEN d.action = 'below' THEN now() END
      FROM decided d
      WHERE mt.member_id = d.member_id AND d.has_row AND d.action IS NOT NULL
        AND mt.tier_code = d.current_code AND mt.below_since IS NOT DISTINCT FROM d.below_since
      RETURNING mt.member_id
  ), changed AS (
    SELECT member_id FROM inserted UNION ALL SELECT member_id FROM updated
  ), audited AS (
    INSERT INTO tier_changes (member_id, from_tier, to_tier, reason, rolling_points)
      SELECT d.member_id, d.current_code, d.target_code, d.action, d.rolling_points
      FROM decided d JOIN changed c ON c.member_id = d.member_id
      WHERE d.action IN ('qualified', 'grace_expired')
      RETURNING reason
  )
  SELECT jsonb_build_object(
      'evaluated', (SELECT count(*) FROM decided),
      'upgraded', (SELECT count(*) FROM audited WHERE reason = 'qualified'),
      'downgraded', (SELECT count(*) FROM audited WHERE reason = 'grace_expired'),
      'graceStarted', (SELECT count(*) FROM decided d JOIN changed c ON c.member_id = d.member_id
                       WHERE d.action = 'below'),
      'graceEnded', (SELECT count(*) FROM decided d JOIN changed c ON c.member_id = d.member_id
                     WHERE d.action = 'recovered'))
    INTO v_result;
  RETURN v_result;
END $$;

-- The operator sets a member's tier (reason 'operator'). It stands until the rules move it: the
-- next qualification moves it up, the nightly evaluation down after the grace period.
-- Returns the previous tier code, or NULL when the member already had this tier.
CREATE FUNCTION tier_assign(p_member bigint, p_code text)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_row member_tiers;
BEGIN
  IF alliance_role() <> 'operator' AND session_user <> current_user THEN
    RAISE EXCEPTION 'tier_assign needs the operator context' USING ERRCODE = '42501';
  END IF;
  PERFORM tier_lock_member(p_member);
  v_row := tier_lock_row(p_member);
  IF v_row.tier_code = p_code THEN
    RETURN NULL;
  END IF;
  UPDATE member_tiers SET tier_code = p_code, since = now(), below_since = NULL WHERE member_id = p_member;
  INSERT INTO tier_changes (member_id, from_tier, to_tier, reason, rolling_points)
    VALUES (p_member, v_row.tier_code, p_code, 'operator', tier_rolling_points(p_member));
  RETURN v_row.tier_code;
END $$;

-- "Progress to the next tier" for the member app: visible to the member and the operator only
-- (the rolling points would tell a merchant what the member earned elsewhere).
CREATE FUNCTION tier_progress(p_member bigint)
RETURNS TABLE (current_code text, next_code text, rolling_points bigint, points_to_next bigint,
               points_to_keep bigint, below_since timestamptz, grace_ends_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  WITH cur AS (
    SELECT coalesce(t.code, b.code) AS code, coalesce(t.rank, b.rank) AS rank,
      coalesce(t.qualifying_points, b.qualifying_points) AS qualifying_points, mt.below_since
    FROM (SELECT (tier_base()).*) b
    LEFT JOIN member_tiers mt ON mt.member_id = p_member
    LEFT JOIN tiers t ON t.code = mt.tier_code
  ), pts AS (SELECT tier_rolling_points(p_member) AS points)
  SELECT cur.code, nxt.code, pts.points,
    CASE WHEN nxt.code IS NOT NULL THEN greatest(nxt.qualifying_points - pts.points, 0) END,
    greatest(cur.qualifying_points - pts.points, 0), cur.below_since,
    cur.below_since + make_interval(days => (SELECT grace_days FROM tier_settings))
  FROM cur CROSS JOIN pts
  LEFT JOIN LATERAL (SELECT t.code, t.qualifying_points FROM tiers t WHERE t.rank > cur.rank
                     ORDER BY t.rank LIMIT 1) nxt ON true
  WHERE alliance_role() = 'operator' OR (alliance_role() = 'member' AND p_member = alliance_member_id())
$$;

-- The earn path of a batch: every member once, in id order (so concurrent batches sharing members
-- take the per-member locks in one order and cannot deadlock). Returns how many moved up.
CREATE FUNCTION tier_upgrade_members_if_qualified(p_members bigint[])
RETURNS int LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_member bigint;
  v_upgraded int := 0;
BEGIN
  FOR v_member IN SELECT DISTINCT m FROM unnest(p_members) m WHERE m IS NOT NULL ORDER BY m LOOP
    IF tier_upgrade_if_qualified(v_member) IS NOT NULL THEN
      v_upgraded := v_upgraded + 1;
    END IF;
  END LOOP;
  RETURN v_upgraded;
END $$;

-- Upgrade on qualification, immediately: the ledger calls this after crediting members.
CREATE OR REPLACE FUNCTION ledger_after_credit(p_members bigint[])
RETURNS void LANGUAGE plpgsql AS $$ BEGIN PERFORM tier_upgrade_members_if_qualified(p_members); END $$;
