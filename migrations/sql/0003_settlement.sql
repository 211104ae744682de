-- Settlement (revision 0003): versioned terms, batches built set-based from the ledger's
-- provenance (lot_movements), priced, netted and reconciled; expiry into breakage.

-- Functions below may refer to ones defined further down (as pg_dump output does).
SET LOCAL check_function_bodies = false;

CREATE TABLE settlement_terms (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  asset text NOT NULL REFERENCES assets(code),
  model text NOT NULL DEFAULT 'provenance_netting' CHECK (model IN ('provenance_netting', 'operator_clearing')),
  settlement_value numeric(18, 6) NOT NULL CHECK (settlement_value >= 0),
  currency char(3) NOT NULL DEFAULT 'CNY',
  fee_bps int NOT NULL DEFAULT 0 CHECK (fee_bps BETWEEN 0 AND 10000),
  period_length text NOT NULL DEFAULT 'monthly' CHECK (period_length IN ('daily', 'weekly', 'monthly')),
  time_zone text NOT NULL DEFAULT 'Asia/Shanghai',
  effective_from timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (asset, effective_from)
);
INSERT INTO settlement_terms (asset, settlement_value, effective_from)
  SELECT code, settlement_value, '2000-01-01T00:00:00Z' FROM assets;

CREATE TABLE settlement_batches (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  asset text NOT NULL REFERENCES assets(code),
  period_start timestamptz NOT NULL,
  period_end timestamptz NOT NULL CHECK (period_end > period_start),
  status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'approved', 'paid')),
  terms_id bigint NOT NULL REFERENCES settlement_terms(id),
  line_points bigint NOT NULL,
  cross_redeemed_points bigint NOT NULL,
  reversed_points bigint NOT NULL,
  gross_amount numeric(18, 2) NOT NULL,
  fee_amount numeric(18, 2) NOT NULL,
  computed_at timestamptz NOT NULL DEFAULT now(),
  approved_at timestamptz,
  paid_at timestamptz,
  UNIQUE (asset, period_start),
  -- Σ line points = cross-merchant redeemed points in the period minus reversals of them.
  CHECK (line_points = cross_redeemed_points - reversed_points)
);

CREATE TABLE settlement_lines (
  id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  batch_id bigint NOT NULL REFERENCES settlement_batches(id) ON DELETE CASCADE,
  issuer_tenant_id bigint NOT NULL REFERENCES tenants(id),
  redeemer_tenant_id bigint NOT NULL REFERENCES tenants(id),
  points bigint NOT NULL,
  gross_amount numeric(18, 2) NOT NULL,
  fee_amount numeric(18, 2) NOT NULL,
  net_amount numeric(18, 2) NOT NULL,
  PRIMARY KEY (batch_id, issuer_tenant_id, redeemer_tenant_id),
  CHECK (issuer_tenant_id <> redeemer_tenant_id),
  CHECK (net_amount = gross_amount - fee_amount)
);

-- One row per party; tenant_id NULL is the operator (its fees).
CREATE TABLE settlement_positions (
  batch_id bigint NOT NULL REFERENCES settlement_batches(id) ON DELETE CASCADE,
  tenant_id bigint REFERENCES tenants(id),
  receivable numeric(18, 2) NOT NULL,
  payable numeric(18, 2) NOT NULL,
  net_amount numeric(18, 2) NOT NULL,
  payment_reference text,
  paid_at timestamptz,
  UNIQUE NULLS NOT DISTINCT (batch_id, tenant_id),
  CHECK (net_amount = receivable - payable)
);

-- Operator clearing: per-tenant rates (versioned) and prepaid issuance capacity.
CREATE TABLE tenant_clearing_terms (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  asset text NOT NULL REFERENCES assets(code),
  accrual_cost numeric(18, 6) NOT NULL CHECK (accrual_cost >= 0),
  reimbursement_rate numeric(18, 6) NOT NULL CHECK (reimbursement_rate >= 0),
  billing text NOT NULL CHECK (billing IN ('prepaid', 'postpaid')),
  effective_from timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, asset, effective_from)
);
CREATE TABLE prepaid_balances (
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  asset text NOT NULL REFERENCES assets(code),
  points bigint NOT NULL CHECK (points >= 0),
  PRIMARY KEY (tenant_id, asset)
);
CREATE TABLE prepaid_block_purchases (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  asset text NOT NULL REFERENCES assets(code),
  points bigint NOT NULL CHECK (points > 0),
  price numeric(18, 2) NOT NULL CHECK (price >= 0),
  client_scope text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
-- Clearing batches: each tenant against the operator (no bilateral lines).
CREATE TABLE settlement_clearing_lines (
  batch_id bigint NOT NULL REFERENCES settlement_batches(id) ON DELETE CASCADE,
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  billing text NOT NULL,
  issued_points bigint NOT NULL,
  accrual_amount numeric(18, 2) NOT NULL,
  redeemed_points bigint NOT NULL,
  reimbursement_amount numeric(18, 2) NOT NULL,
  net_amount numeric(18, 2) NOT NULL CHECK (net_amount = reimbursement_amount - accrual_amount),
  PRIMARY KEY (batch_id, tenant_id)
);

CREATE FUNCTION settlement_round(p_amount numeric) RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  -- Half-even to the cent (banker's rounding), as DESIGN.md rule 5 requires.
  SELECT CASE WHEN abs(p_amount * 100 - trunc(p_amount * 100)) = 0.5
              THEN (trunc(p_amount * 100) + CASE WHEN trunc(p_amount * 100) % 2 = 0 THEN 0 ELSE sign(p_amount) END) / 100
              ELSE round(p_amount, 2) END
$$;

-- The provenance of a period, recomputed from the ledger: per (issuer, redeemer), points
-- consumed by redemptions minus points restored by their reversals, by effective time.
CREATE FUNCTION settlement_provenance(p_asset text, p_start timestamptz, p_end timestamptz)
RETURNS TABLE (issuer_tenant_id bigint, redeemer_tenant_id bigint, consumed bigint, restored bigint)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT l.issuer_tenant_id, t.tenant_id,
    coalesce(sum(-mv.points) FILTER (WHERE mv.kind = 'consume'), 0)::bigint,
    coalesce(sum(mv.points) FILTER (WHERE mv.kind = 'restore'), 0)::bigint
  FROM ledger_transactions t
  JOIN lot_movements mv ON mv.transaction_id = t.id
  JOIN lots l ON l.id = mv.lot_id
  WHERE t.asset = p_asset AND t.effective_at >= p_start AND t.effective_at < p_end
    AND ((t.kind IN ('redeem', 'capture') AND mv.kind = 'consume') OR (t.kind = 'reverse' AND mv.kind = 'restore'))
    AND t.tenant_id IS NOT NULL AND l.issuer_tenant_id IS NOT NULL AND l.issuer_tenant_id <> t.tenant_id
  GROUP BY l.issuer_tenant_id, t.tenant_id
$$;

-- Build (or rebuild, while still a draft) the batch of one asset and period. Returns the batch
-- id, or raises BATCH_NOT_DRAFT (P0001) if it is already approved.
CREATE FUNCTION settlement_run(p_asset text, p_start timestamptz, p_end timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_terms settlement_terms;
  v_batch settlement_batches;
  v_sum numeric;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  SELECT * INTO v_terms FROM settlement_terms
    WHERE asset = p_asset AND effective_from <= p_start ORDER BY effective_from DESC LIMIT 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'NO_TERMS' USING ERRCODE = 'P0001', DETAIL = 'no settlement terms in force for this period';
  END IF;
  -- Serialise runs of one asset and period (a CronJob and an operator may overlap).
  PERFORM pg_advisory_xact_lock(hashtext('settlement:' || p_asset), hashtext(p_start::text));
  SELECT * INTO v_batch FROM settlement_batches WHERE asset = p_asset AND period_start = p_start FOR UPDATE;
  IF FOUND AND v_batch.status <> 'draft' THEN
    RAISE EXCEPTION 'BATCH_NOT_DRAFT' USING ERRCODE = 'P0001', DETAIL = 'an approved batch is immutable';
  END IF;
  IF EXISTS (SELECT 1 FROM settlement_batches o WHERE o.asset = p_asset AND o.period_start <> p_start
             AND tstzrange(o.period_start, o.period_end) && tstzrange(p_start, p_end)) THEN
    RAISE EXCEPTION 'PERIOD_OVERLAP' USING ERRCODE = 'P0001', DETAIL = 'another batch covers part of this period';
  END IF;
  IF FOUND AND v_batch.period_end <> p_end THEN
    RAISE EXCEPTION 'PERIOD_MISMATCH' USING ERRCODE = 'P0001', DETAIL = 'a batch exists for this start with another end';
  END IF;

  CREATE TEMP TABLE settlement_work ON COMMIT DROP AS
    SELECT p.issuer_tenant_id, p.redeemer_tenant_id, p.consumed, p.restored, p.consumed - p.restored AS points,
      settlement_round((p.consumed - p.restored) * v_terms.settlement_value) AS gross
    FROM settlement_provenance(p_asset, p_start, p_end) p;

  IF v_batch.id IS NULL THEN
    INSERT INTO settlement_batches (asset, period_start, period_end, terms_id, line_points, cross_redeemed_points,
        reversed_points, gross_amount, fee_amount)
      VALUES (p_asset, p_start, p_end, v_terms.id, 0, 0, 0, 0, 0) RETURNING * INTO v_batch;
  ELSE
    DELETE FROM settlement_lines WHERE batch_id = v_batch.id;
    DELETE FROM settlement_positions WHERE batch_id = v_batch.id;
  END IF;

  DELETE FROM settlement_clearing_lines WHERE batch_id = v_batch.id;
  IF v_terms.model = 'provenance_netting' THEN
    INSERT INTO settlement_lines (batch_id, issuer_tenant_id, redeemer_tenant_id, points, gross_amount, fee_amount,
        net_amount)
      SELECT v_batch.id, w.issuer_tenant_id, w.redeemer_tenant_id, w.points, w.gross,
        settlement_round(w.gross * v_terms.fee_bps / 10000),
        w.gross - settlement_round(w.gross * v_terms.fee_bps / 10000)
      FROM settlement_work w WHERE w.points <> 0;

    INSERT INTO settlement_positions (batch_id, tenant_id, receivable, payable, net_amount)
      SELECT v_batch.id, party, sum(receivable), sum(payable), sum(receivable) - sum(payable)
      FROM (
        SELECT redeemer_tenant_id AS party, net_amount AS receivable, 0 AS payable FROM settlement_lines
          WHERE batch_id = v_batch.id
        UNION ALL
        SELECT issuer_tenant_id, 0, gross_amount FROM settlement_lines WHERE batch_id = v_batch.id
        UNION ALL
        SELECT NULL, fee_amount, 0 FROM settlement_lines WHERE batch_id = v_batch.id
      ) flows
      GROUP BY party;
  ELSE
    PERFORM settlement_run_clearing(v_batch.id, p_asset, p_start, p_end);
  END IF;

  UPDATE settlement_batches b SET
      terms_id = v_terms.id, computed_at = now(),
      line_points = coalesce((SELECT sum(points) FROM settlement_work), 0),
      cross_redeemed_points = coalesce((SELECT sum(consumed) FROM settlement_work), 0),
      reversed_points = coalesce((SELECT sum(restored) FROM settlement_work), 0),
      gross_amount = coalesce((SELECT sum(gross_amount) FROM settlement_lines WHERE batch_id = b.id), 0),
      fee_amount = coalesce((SELECT sum(fee_amount) FROM settlement_lines WHERE batch_id = b.id), 0)
    WHERE b.id = v_batch.id;
  SELECT coalesce(sum(net_amount), 0) INTO v_sum FROM settlement_positions WHERE batch_id = v_batch.id;
  ASSERT v_sum = 0, format('settlement batch %s: net positions sum to %s, not 0', v_batch.id, v_sum);
  DROP TABLE settlement_work;
  RETURN v_batch.id;
END $$;

-- The operator's proof: the stored lines against a fresh recomputation from the ledger.
CREATE FUNCTION settlement_reconcile(p_batch bigint)
RETURNS TABLE (issuer_tenant_id bigint, redeemer_tenant_id bigint, batch_points bigint, ledger_points bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
-- Provenance netting: bilateral lines. Operator clearing: each tenant's issued points (as issuer,
-- to the operator, NULL) and redeemed points (the operator, NULL, to it as redeemer). The batch's
-- bounds are read first so the recomputation is planned for the real period.
DECLARE
  v_batch settlement_batches;
  v_model text;
BEGIN
  SELECT * INTO v_batch FROM settlement_batches WHERE id = p_batch;
  IF NOT FOUND THEN RETURN; END IF;
  SELECT st.model INTO v_model FROM settlement_terms st WHERE st.id = v_batch.terms_id;
  RETURN QUERY
  WITH fresh AS (
    SELECT p.issuer_tenant_id AS issuer, p.redeemer_tenant_id AS redeemer, p.consumed - p.restored AS points
      FROM settlement_provenance(v_batch.asset, v_batch.period_start, v_batch.period_end) p
      WHERE v_model = 'provenance_netting'
    UNION ALL
    SELECT a.tenant_id, NULL, a.issued
      FROM settlement_clearing_activity(v_batch.asset, v_batch.period_start, v_batch.period_end) a
      WHERE v_model = 'operator_clearing'
    UNION ALL
    SELECT NULL, a.tenant_id, a.redeemed
      FROM settlement_clearing_activity(v_batch.asset, v_batch.period_start, v_batch.period_end) a
      WHERE v_model = 'operator_clearing'),
  stored AS (
    SELECT l.issuer_tenant_id AS issuer, l.redeemer_tenant_id AS redeemer, l.points FROM settlement_lines l
      WHERE l.batch_id = p_batch
    UNION ALL
    SELECT c.tenant_id, NULL, c.issued_points FROM settlement_clearing_lines c WHERE c.batch_id = p_batch
    UNION ALL
    SELECT NULL, c.tenant_id, c.redeemed_points FROM settlement_clearing_lines c WHERE c.batch_id = p_batch)
  SELECT coalesce(s.issuer, f.issuer), coalesce(s.redeemer, f.redeemer), coalesce(s.points, 0)::bigint,
    coalesce(f.points, 0)::bigint
  FROM stored s FULL JOIN fresh f ON coalesce(f.issuer, 0) = coalesce(s.issuer, 0)
    AND coalesce(f.redeemer, 0) = coalesce(s.redeemer, 0)
  WHERE coalesce(s.points, 0) <> coalesce(f.points, 0);
END $$;

-- Whether an approved (closed) batch covers this asset at this instant: postings may not land there.
CREATE OR REPLACE FUNCTION ledger_period_closed(p_asset text, p_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM settlement_batches WHERE asset = p_asset AND status <> 'draft'
                 AND period_start <= p_at AND p_at < period_end)
$$;

---------------------------------------------------------------------------------------------------
-- Expiry: the remainder of every lot past its expiry moves to the breakage account, one
-- transaction per member and asset and run. Set-based over a chunk of members; idempotent (an
-- expired lot has remaining 0 afterwards) and safe beside traffic (wallet locks, SKIP LOCKED).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION ledger_expire(p_run text, p_max_members int)
RETURNS TABLE (expired_wallets bigint, expired_lots bigint, expired_points bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  -- Candidates in member order from the open-lots index; each wallet locked with SKIP LOCKED
  -- *before* the limit, so a concurrent run takes the next wallets instead of stopping.
  CREATE TEMP TABLE expiring_wallets ON COMMIT DROP AS
    SELECT w.id AS wallet_id, c.member_id, c.asset
    FROM (SELECT DISTINCT ON (l.member_id, l.asset) l.member_id, l.asset FROM lots l
          WHERE l.remaining > 0 AND l.expires_at <= now()
          ORDER BY l.member_id, l.asset) c
    CROSS JOIN LATERAL (
      SELECT a.id FROM accounts a
      WHERE a.kind = 'member_wallet' AND a.asset = c.asset AND a.member_id = c.member_id AND a.tenant_id IS NULL
      FOR UPDATE SKIP LOCKED) w
    LIMIT p_max_members;
  CREATE TEMP TABLE expiring_lots ON COMMIT DROP AS
    SELECT l.id AS lot_id, l.member_id, l.asset, l.remaining
    FROM lots l JOIN expiring_wallets w ON w.member_id = l.member_id AND w.asset = l.asset
    WHERE l.remaining > 0 AND l.expires_at <= now()
    FOR UPDATE OF l;
  CREATE TEMP TABLE expiring_transactions ON COMMIT DROP AS
    WITH posted AS (
      INSERT INTO ledger_transactions (kind, asset, member_id, points, reason, details, effective_at)
        SELECT 'expire', e.asset, e.member_id, sum(e.remaining), 'lots past their expiry',
          jsonb_build_object('run', p_run), now()
        FROM expiring_lots e GROUP BY e.member_id, e.asset
        RETURNING id, member_id, asset, points)
    SELECT * FROM posted;
  INSERT INTO accounts (kind, asset) SELECT DISTINCT 'alliance_breakage', asset FROM expiring_transactions
    ON CONFLICT DO NOTHING;
  INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points)
    SELECT e.lot_id, t.id, e.member_id, 'expire', -e.remaining
    FROM expiring_lots e JOIN expiring_transactions t ON t.member_id = e.member_id AND t.asset = e.asset;
  UPDATE lots l SET remaining = 0 FROM expiring_lots e WHERE l.id = e.lot_id;
  INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
    SELECT t.id, w.wallet_id, t.member_id, t.asset, -t.points
      FROM expiring_transactions t JOIN expiring_wallets w ON w.member_id = t.member_id AND w.asset = t.asset
    UNION ALL
    SELECT t.id, b.id, t.member_id, t.asset, t.points
      FROM expiring_transactions t JOIN accounts b ON b.kind = 'alliance_breakage' AND b.asset = t.asset;
  RETURN QUERY SELECT (SELECT count(*) FROM expiring_transactions), (SELECT count(*) FROM expiring_lots),
    (SELECT coalesce(sum(t.points), 0)::bigint FROM expiring_transactions t);
  DROP TABLE expiring_wallets, expiring_lots, expiring_transactions;
END $$;

-- Breakage per issuer and month (alliance time zone).
CREATE FUNCTION settlement_breakage(p_asset text, p_start timestamptz, p_end timestamptz)
RETURNS TABLE (issuer_tenant_id bigint, points bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT l.issuer_tenant_id, sum(-mv.points)::bigint
  FROM ledger_transactions t JOIN lot_movements mv ON mv.transaction_id = t.id JOIN lots l ON l.id = mv.lot_id
  WHERE t.kind = 'expire' AND t.asset = p_asset AND t.effective_at >= p_start AND t.effective_at < p_end
    AND (alliance_role() = 'operator' OR l.issuer_tenant_id = alliance_tenant_id())
  GROUP BY l.issuer_tenant_id
$$;

---------------------------------------------------------------------------------------------------
-- Lifecycle: DRAFT -> APPROVED (operator, after the period ended) -> PAID (every payment recorded).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION settlement_approve(p_batch bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE v_batch settlement_batches;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  SELECT * INTO v_batch FROM settlement_batches WHERE id = p_batch FOR UPDATE;
  IF NOT FOUND THEN RAISE EXCEPTION 'BATCH_NOT_FOUND' USING ERRCODE = 'P0001'; END IF;
  IF v_batch.status <> 'draft' THEN RAISE EXCEPTION 'BATCH_NOT_DRAFT' USING ERRCODE = 'P0001'; END IF;
  IF v_batch.period_end > now() THEN RAISE EXCEPTION 'PERIOD_NOT_ENDED' USING ERRCODE = 'P0001'; END IF;
  IF EXISTS (SELECT 1 FROM settlement_reconcile(p_batch)) THEN
    RAISE EXCEPTION 'BATCH_STALE' USING ERRCODE = 'P0001';
  END IF;
  UPDATE settlement_batches SET status = 'approved', approved_at = now() WHERE id = p_batch;
END $$;

CREATE FUNCTION settlement_mark_paid(p_batch bigint, p_tenant bigint, p_operator boolean, p_reference text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE v_batch settlement_batches;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  SELECT * INTO v_batch FROM settlement_batches WHERE id = p_batch FOR UPDATE;
  IF NOT FOUND THEN RAISE EXCEPTION 'BATCH_NOT_FOUND' USING ERRCODE = 'P0001'; END IF;
  IF v_batch.status <> 'approved' THEN RAISE EXCEPTION 'BATCH_NOT_APPROVED' USING ERRCODE = 'P0001'; END IF;
  UPDATE settlement_positions SET payment_reference = p_reference, paid_at = now()
    WHERE batch_id = p_batch AND tenant_id IS NOT DISTINCT FROM (CASE WHEN p_operator THEN NULL ELSE p_tenant END)
      AND net_amount <> 0 AND paid_at IS NULL;
  IF NOT FOUND THEN RAISE EXCEPTION 'INSTRUCTION_NOT_FOUND' USING ERRCODE = 'P0001'; END IF;
  IF NOT EXISTS (SELECT 1 FROM settlement_positions WHERE batch_id = p_batch AND net_amount <> 0 AND paid_at IS NULL) THEN
    UPDATE settlement_batches SET status = 'paid', paid_at = now() WHERE id = p_batch;
  END IF;
END $$;

CREATE FUNCTION settlement_set_terms(p_asset text, p_model text, p_value numeric, p_currency text, p_fee_bps int,
  p_period_length text, p_effective_from timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE v_id bigint;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  -- Terms may not change for a period that already has an approved batch.
  IF EXISTS (SELECT 1 FROM settlement_batches WHERE asset = p_asset AND status <> 'draft'
             AND period_end > p_effective_from) THEN
    RAISE EXCEPTION 'PERIOD_CLOSED' USING ERRCODE = 'P0001';
  END IF;
  INSERT INTO settlement_terms (asset, model, settlement_value, currency, fee_bps, period_length, effective_from)
    VALUES (p_asset, p_model, p_value, p_currency, p_fee_bps, p_period_length, p_effective_from)
    ON CONFLICT (asset, effective_from) DO UPDATE SET model = EXCLUDED.model,
      settlement_value = EXCLUDED.settlement_value, currency = EXCLUDED.currency, fee_bps = EXCLUDED.fee_bps,
      period_length = EXCLUDED.period_length
    RETURNING id INTO v_id;
  RETURN v_id;
END $$;

-- Tenant codes for the parties of lines the caller can see (counterparties are otherwise hidden).
CREATE FUNCTION settlement_party_codes(p_ids bigint[])
RETURNS TABLE (id bigint, code text) LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT t.id, t.code FROM tenants t WHERE t.id = ANY (p_ids)
    AND (alliance_role() = 'operator' OR t.id = alliance_tenant_id() OR EXISTS (
      SELECT 1 FROM settlement_lines l
      WHERE alliance_role() = 'merchant' AND alliance_tenant_id() IN (l.issuer_tenant_id, l.redeemer_tenant_id)
        AND t.id IN (l.issuer_tenant_id, l.redeemer_tenant_id)))
$$;

---------------------------------------------------------------------------------------------------
-- Consumer protection: extend the validity of lots (points the member could not use because of
-- the merchant or the platform). Each change is recorded with its reason; nothing is overwritten
-- silently.
---------------------------------------------------------------------------------------------------
CREATE TABLE lot_expiry_extensions (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  lot_id bigint NOT NULL REFERENCES lots(id),
  member_id bigint NOT NULL,
  tenant_id bigint REFERENCES tenants(id),
  client_scope text NOT NULL,
  old_expires_at timestamptz NOT NULL,
  new_expires_at timestamptz NOT NULL CHECK (new_expires_at > old_expires_at),
  reason text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lot_expiry_extensions_member ON lot_expiry_extensions (member_id);

CREATE FUNCTION ledger_extend_expiry(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_member_number text, p_issuer bigint,
  p_days int, p_new_expiry timestamptz, p_reason text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'extend_expiry', p_hash);
  v_member bigint;
  v_lots bigint;
  v_points bigint;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  IF p_member_number IS NOT NULL THEN
    v_member := ledger_member_for(p_tenant, p_member_number);
    IF v_member IS NULL THEN
      RETURN ledger_remember(p_scope, p_key, 'extend_expiry', p_hash,
        ledger_user_error('MEMBER_NOT_FOUND', 'no such member is enrolled at this merchant', 'memberNumber'));
    END IF;
  END IF;
  WITH targets AS (
    SELECT l.id, l.member_id, l.remaining, l.expires_at,
      coalesce(p_new_expiry, l.expires_at + make_interval(days => p_days)) AS new_expiry
    FROM lots l
    WHERE l.remaining > 0 AND l.expires_at IS NOT NULL
      AND (v_member IS NULL OR l.member_id = v_member)
      -- A merchant extends only lots it issued; the operator may narrow to one issuer.
      AND (p_tenant IS NULL OR l.issuer_tenant_id = p_tenant)
      AND (p_issuer IS NULL OR l.issuer_tenant_id = p_issuer)
    FOR UPDATE
  ), changed AS (
    UPDATE lots l SET expires_at = t.new_expiry FROM targets t
    WHERE l.id = t.id AND t.new_expiry > t.expires_at
    RETURNING l.id, t.member_id, t.remaining, t.expires_at AS old_expiry, t.new_expiry
  ), logged AS (
    INSERT INTO lot_expiry_extensions (lot_id, member_id, tenant_id, client_scope, old_expires_at, new_expires_at, reason)
      SELECT c.id, c.member_id, p_tenant, p_scope, c.old_expiry, c.new_expiry, p_reason FROM changed c
      RETURNING lot_id
  )
  SELECT count(*), coalesce(sum(c.remaining), 0) INTO v_lots, v_points FROM changed c;
  RETURN ledger_remember(p_scope, p_key, 'extend_expiry', p_hash, jsonb_build_object(
    'extendedLots', v_lots, 'points', v_points, 'userErrors', '[]'::jsonb));
END $$;

-- Points expiring within p_days, per member the caller may see (merchants: linked members).
CREATE FUNCTION ledger_expiring_points(p_asset text, p_days int, p_after_member bigint, p_limit int)
RETURNS TABLE (member_id bigint, member_number text, asset text, points bigint, first_expiry timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT l.member_id, m.member_number, l.asset, sum(l.remaining)::bigint, min(l.expires_at)
  FROM lots l JOIN members m ON m.id = l.member_id
  WHERE l.asset = p_asset AND l.remaining > 0 AND l.expires_at > now()
    AND l.expires_at <= now() + make_interval(days => p_days) AND l.member_id > coalesce(p_after_member, 0)
    AND (alliance_role() = 'operator' OR (alliance_role() = 'merchant' AND EXISTS (
      SELECT 1 FROM member_links k WHERE k.member_id = l.member_id AND k.tenant_id = alliance_tenant_id())))
  GROUP BY l.member_id, m.member_number, l.asset
  ORDER BY l.member_id
  LIMIT p_limit
$$;

---------------------------------------------------------------------------------------------------
-- Disputes: a party raises one on a line of a draft or approved batch; the operator resolves it.
-- A resolution never edits the batch: corrections are new postings in the open period.
---------------------------------------------------------------------------------------------------
CREATE TABLE settlement_disputes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  batch_id bigint NOT NULL REFERENCES settlement_batches(id),
  issuer_tenant_id bigint NOT NULL REFERENCES tenants(id),
  redeemer_tenant_id bigint NOT NULL REFERENCES tenants(id),
  raised_by_tenant_id bigint NOT NULL REFERENCES tenants(id),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
  status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
  resolution text CHECK (resolution IS NULL OR length(resolution) BETWEEN 1 AND 1000),
  created_at timestamptz NOT NULL DEFAULT now(),
  resolved_at timestamptz,
  CHECK ((status = 'resolved') = (resolution IS NOT NULL))
);
CREATE INDEX settlement_disputes_batch ON settlement_disputes (batch_id);

CREATE FUNCTION settlement_dispute_line(p_batch bigint, p_issuer text, p_redeemer text, p_reason text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_status text;
  v_issuer bigint := (SELECT id FROM tenants WHERE code = p_issuer);
  v_redeemer bigint := (SELECT id FROM tenants WHERE code = p_redeemer);
  v_id bigint;
BEGIN
  IF alliance_role() <> 'merchant' OR alliance_tenant_id() NOT IN (v_issuer, v_redeemer)
     OR NOT EXISTS (SELECT 1 FROM settlement_lines WHERE batch_id = p_batch AND issuer_tenant_id = v_issuer
                    AND redeemer_tenant_id = v_redeemer) THEN
    RAISE EXCEPTION 'LINE_NOT_FOUND' USING ERRCODE = 'P0001';
  END IF;
  SELECT status INTO v_status FROM settlement_batches WHERE id = p_batch;
  IF v_status = 'paid' THEN RAISE EXCEPTION 'BATCH_PAID' USING ERRCODE = 'P0001'; END IF;
  INSERT INTO settlement_disputes (batch_id, issuer_tenant_id, redeemer_tenant_id, raised_by_tenant_id, reason)
    VALUES (p_batch, v_issuer, v_redeemer, alliance_tenant_id(), p_reason) RETURNING id INTO v_id;
  RETURN v_id;
END $$;

CREATE FUNCTION settlement_resolve_dispute(p_dispute bigint, p_resolution text)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  UPDATE settlement_disputes SET status = 'resolved', resolution = p_resolution, resolved_at = now()
    WHERE id = p_dispute AND status = 'open';
  IF NOT FOUND THEN RAISE EXCEPTION 'DISPUTE_NOT_OPEN' USING ERRCODE = 'P0001'; END IF;
  RETURN p_dispute;
END $$;

-- Operator clearing: the operator sells points to issuers (postpaid: billed per period at the
-- accrual cost; prepaid: paid when the block was bought) and buys back every point redeemed at a
-- tenant at its reimbursement rate. The operator keeps the spread and the breakage.
-- Per tenant: points issued (minus clawbacks) and points redeemed there (minus restorations).
CREATE FUNCTION settlement_clearing_activity(p_asset text, p_start timestamptz, p_end timestamptz)
RETURNS TABLE (tenant_id bigint, issued bigint, redeemed bigint) LANGUAGE sql STABLE AS $$
  WITH issued AS (
    -- Points issued minus points clawed back by reversals, by effective time.
    SELECT l.issuer_tenant_id AS tenant_id, sum(l.amount) AS points
    FROM lots l JOIN ledger_transactions t ON t.id = l.transaction_id
    WHERE t.asset = p_asset AND t.kind IN ('earn', 'award', 'compensate') AND l.issuer_tenant_id IS NOT NULL
      AND t.effective_at >= p_start AND t.effective_at < p_end
    GROUP BY 1
    UNION ALL
    SELECT l.issuer_tenant_id, sum(mv.points)
    FROM lot_movements mv JOIN lots l ON l.id = mv.lot_id JOIN ledger_transactions t ON t.id = mv.transaction_id
    WHERE t.asset = p_asset AND mv.kind = 'clawback' AND l.issuer_tenant_id IS NOT NULL
      AND t.effective_at >= p_start AND t.effective_at < p_end
    GROUP BY 1
  ), redeemed AS (
    SELECT t.tenant_id, sum(-mv.points) AS points
    FROM ledger_transactions t JOIN lot_movements mv ON mv.transaction_id = t.id
    WHERE t.asset = p_asset AND t.tenant_id IS NOT NULL AND t.effective_at >= p_start AND t.effective_at < p_end
      AND ((t.kind IN ('redeem', 'capture') AND mv.kind = 'consume') OR (t.kind = 'reverse' AND mv.kind = 'restore'))
    GROUP BY 1
  ), activity AS (
    SELECT tenant_id, sum(points) AS issued, 0::numeric AS redeemed FROM issued GROUP BY 1
    UNION ALL SELECT tenant_id, 0, points FROM redeemed
  )
  SELECT tenant_id, sum(issued)::bigint, sum(redeemed)::bigint FROM activity GROUP BY tenant_id
$$;

CREATE FUNCTION settlement_run_clearing(p_batch bigint, p_asset text, p_start timestamptz, p_end timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM settlement_clearing_activity(p_asset, p_start, p_end) a
             WHERE NOT EXISTS (SELECT 1 FROM tenant_clearing_terms c WHERE c.tenant_id = a.tenant_id
                               AND c.asset = p_asset AND c.effective_from <= p_start)) THEN
    RAISE EXCEPTION 'NO_TENANT_TERMS' USING ERRCODE = 'P0001',
      DETAIL = 'a tenant with activity has no clearing terms in force';
  END IF;
  WITH per_tenant AS (
    SELECT a.tenant_id, a.issued, a.redeemed, ct.billing, ct.accrual_cost, ct.reimbursement_rate
    FROM settlement_clearing_activity(p_asset, p_start, p_end) a
    LEFT JOIN LATERAL (SELECT * FROM tenant_clearing_terms c WHERE c.tenant_id = a.tenant_id AND c.asset = p_asset
                       AND c.effective_from <= p_start ORDER BY c.effective_from DESC LIMIT 1) ct ON true
  )
  INSERT INTO settlement_clearing_lines (batch_id, tenant_id, billing, issued_points, accrual_amount,
      redeemed_points, reimbursement_amount, net_amount)
    SELECT p_batch, p.tenant_id, p.billing, p.issued,
      CASE WHEN p.billing = 'postpaid' THEN settlement_round(p.issued * p.accrual_cost) ELSE 0 END,
      p.redeemed, settlement_round(p.redeemed * p.reimbursement_rate),
      settlement_round(p.redeemed * p.reimbursement_rate)
        - CASE WHEN p.billing = 'postpaid' THEN settlement_round(p.issued * p.accrual_cost) ELSE 0 END
    FROM per_tenant p;
  INSERT INTO settlement_positions (batch_id, tenant_id, receivable, payable, net_amount)
    SELECT p_batch, tenant_id, reimbursement_amount, accrual_amount, net_amount
    FROM settlement_clearing_lines WHERE batch_id = p_batch
    UNION ALL
    SELECT p_batch, NULL, coalesce(sum(accrual_amount), 0), coalesce(sum(reimbursement_amount), 0),
      coalesce(sum(accrual_amount), 0) - coalesce(sum(reimbursement_amount), 0)
    FROM settlement_clearing_lines WHERE batch_id = p_batch;
END $$;

CREATE OR REPLACE FUNCTION ledger_issuance_reserve(p_tenant bigint, p_asset text, p_points bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  -- Only a prepaid tenant under an operator-clearing asset has a capacity to respect.
  IF p_points = 0 OR NOT EXISTS (
      SELECT 1 FROM settlement_terms st WHERE st.asset = p_asset AND st.effective_from <= now()
        AND st.model = 'operator_clearing'
        AND st.effective_from = (SELECT max(effective_from) FROM settlement_terms x
                                 WHERE x.asset = p_asset AND x.effective_from <= now()))
     OR coalesce((SELECT c.billing FROM tenant_clearing_terms c WHERE c.tenant_id = p_tenant AND c.asset = p_asset
                  AND c.effective_from <= now() ORDER BY c.effective_from DESC LIMIT 1), 'postpaid') <> 'prepaid' THEN
    RETURN true;
  END IF;
  -- One row per prepaid tenant: issuing there is serialised, by design (the balance must be exact).
  UPDATE prepaid_balances SET points = points - p_points
    WHERE tenant_id = p_tenant AND asset = p_asset AND points - p_points >= 0;
  RETURN FOUND;
END $$;

CREATE FUNCTION settlement_set_clearing_terms(p_tenant bigint, p_asset text, p_accrual numeric, p_reimbursement numeric,
  p_billing text, p_effective_from timestamptz)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE v_id bigint;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = 'P0001'; END IF;
  INSERT INTO tenant_clearing_terms (tenant_id, asset, accrual_cost, reimbursement_rate, billing, effective_from)
    VALUES (p_tenant, p_asset, p_accrual, p_reimbursement, p_billing, p_effective_from)
    ON CONFLICT (tenant_id, asset, effective_from) DO UPDATE SET accrual_cost = EXCLUDED.accrual_cost,
      reimbursement_rate = EXCLUDED.reimbursement_rate, billing = EXCLUDED.billing
    RETURNING id INTO v_id;
  RETURN v_id;
END $$;

-- purchasePointBlock: a prepaid tenant buys issuance capacity (idempotent under the client's key).
CREATE FUNCTION settlement_purchase_block(p_scope text, p_key text, p_hash text, p_tenant bigint, p_asset text,
  p_points bigint, p_price numeric)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'purchase_block', p_hash);
  v_balance bigint;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  INSERT INTO prepaid_block_purchases (tenant_id, asset, points, price, client_scope)
    VALUES (p_tenant, p_asset, p_points, p_price, p_scope);
  INSERT INTO prepaid_balances (tenant_id, asset, points) VALUES (p_tenant, p_asset, p_points)
    ON CONFLICT (tenant_id, asset) DO UPDATE SET points = prepaid_balances.points + EXCLUDED.points
    RETURNING points INTO v_balance;
  RETURN ledger_remember(p_scope, p_key, 'purchase_block', p_hash, jsonb_build_object(
    'prepaidBalance', v_balance, 'userErrors', '[]'::jsonb));
END $$;
