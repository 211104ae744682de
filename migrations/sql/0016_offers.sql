-- Targeted offers (migration 0016).

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
