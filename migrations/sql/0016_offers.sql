-- Targeted offers (migration 0016).

-- The earn path's question when a segment-restricted rule is in force at the merchant: which of
-- its active segments is each of these members in? One indexed lookup per member on
-- customer_segment_members (tenant_id, member_id), for one member or a whole batch.
CREATE FUNCTION earning_member_segments(p_tenant bigint, p_member_numbers text[])
RETURNS TABLE (member_number text, segments text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT m.member_number, array_agg(s.code ORDER BY s.code)
  FROM members m
  JOIN customer_segment_members sm ON sm.tenant_id = p_tenant AND sm.member_id = m.id
  JOIN customer_segments s ON s.id = sm.segment_id AND s.status = 'active'
  WHERE m.member_number = ANY (p_member_numbers)
  GROUP BY m.member_number
$$;

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
