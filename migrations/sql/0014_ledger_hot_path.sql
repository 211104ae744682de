-- The posting hot path (revision 0014): the same rules, less work per call.
--
-- 1. Small helpers the posting functions call once per operation are PL/pgSQL, not SQL. A SQL
--    function that cannot be inlined (it has a FROM clause) is parsed and planned again on every
--    call from PL/pgSQL before PostgreSQL 18; PL/pgSQL keeps its statements' plans for the
--    session. Bodies and results are unchanged.
-- 2. The tier check after a credit is set-based: one statement keeps only the members whose
--    credits in the window could reach a higher tier (or who are in a grace period); only those
--    go through tier_upgrade_if_qualified and its lock. An upper bound is enough to rule a
--    member out: reversals only lower the rolling points.
-- 3. earnPointsBatch keeps its work table for the session and posts in one statement (below).
-- 4. Fewer writes per posting: one index less on transactions and on entries, and foreign keys
--    to reference data replaced (see there for why, and what guards the references instead).

CREATE OR REPLACE FUNCTION ledger_asset_expiry(p_asset text, p_issued_at timestamptz)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT CASE a.expiry_policy
    WHEN 'never' THEN NULL
    WHEN 'months_after_issue' THEN p_issued_at + make_interval(months => a.expiry_months)
    -- "end of the Nth month after issue" = the first instant of month N+1, in the alliance's zone.
    ELSE (date_trunc('month', p_issued_at AT TIME ZONE a.time_zone)
          + make_interval(months => a.expiry_months + 1)) AT TIME ZONE a.time_zone
  END
  FROM assets a WHERE a.code = p_asset);
END $$;

-- Posted points in unexpired lots, and points held by live holds (see revision 0002).
CREATE OR REPLACE FUNCTION ledger_balance_json(p_member bigint, p_asset text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_posted bigint;
  v_held bigint;
BEGIN
  SELECT (SELECT coalesce(sum(remaining), 0) FROM lots
           WHERE member_id = p_member AND asset = p_asset AND remaining > 0
             AND (expires_at IS NULL OR expires_at > now())),
         (SELECT coalesce(sum(points - captured_points), 0) FROM holds
           WHERE member_id = p_member AND asset = p_asset AND status = 'active' AND expires_at > now())
    INTO v_posted, v_held;
  -- A lot can expire under a live hold; the hold never counts for more than what is left.
  v_held := least(v_held, v_posted);
  RETURN jsonb_build_object('asset', p_asset, 'available', v_posted - v_held, 'held', v_held);
END $$;

CREATE OR REPLACE FUNCTION ledger_member_for(p_tenant bigint, p_member_number text)
RETURNS bigint LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN (SELECT m.id FROM members m
    WHERE m.member_number = p_member_number AND m.status = 'active'
      AND (p_tenant IS NULL
           OR EXISTS (SELECT 1 FROM member_links l WHERE l.member_id = m.id AND l.tenant_id = p_tenant)));
END $$;

CREATE OR REPLACE FUNCTION ledger_period_closed(p_asset text, p_at timestamptz)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM settlement_batches WHERE asset = p_asset AND status <> 'draft'
                 AND period_start <= p_at AND p_at < period_end);
END $$;

CREATE OR REPLACE FUNCTION member_tier_rank(p_member bigint)
RETURNS int LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN coalesce((SELECT t.rank FROM member_tiers mt JOIN tiers t ON t.code = mt.tier_code
                   WHERE mt.member_id = p_member), 0);
END $$;

-- The common checks of a merchant's posting (revision 0002) in one query instead of four.
CREATE OR REPLACE FUNCTION ledger_check_context(
  p_tenant bigint, p_member_number text, p_asset text, p_store_code text,
  OUT refusal jsonb, OUT member_id bigint, OUT store_id bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_tenant_active boolean;
  v_asset_known boolean;
  v_member bigint;
  v_store bigint;
BEGIN
  SELECT p_tenant IS NULL OR EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant AND t.status = 'active'),
         EXISTS (SELECT 1 FROM assets a WHERE a.code = p_asset),
         ledger_member_for(p_tenant, p_member_number),
         (SELECT s.id FROM stores s WHERE s.tenant_id = p_tenant AND s.code = p_store_code)
    INTO v_tenant_active, v_asset_known, v_member, v_store;
  IF NOT v_tenant_active THEN
    refusal := ledger_user_error('TENANT_SUSPENDED', 'this merchant is suspended'); RETURN;
  END IF;
  IF NOT v_asset_known THEN
    refusal := ledger_user_error('UNKNOWN_ASSET', format('no asset %s', p_asset), 'asset'); RETURN;
  END IF;
  IF v_member IS NULL THEN
    refusal := ledger_user_error('MEMBER_NOT_FOUND', 'no such member is enrolled at this merchant', 'memberNumber');
    RETURN;
  END IF;
  member_id := v_member;
  IF p_store_code IS NOT NULL THEN
    store_id := v_store;
    IF store_id IS NULL THEN
      refusal := ledger_user_error('UNKNOWN_STORE', format('no store %s at this merchant', p_store_code), 'storeCode');
    END IF;
  END IF;
END $$;

-- earnPoints / awardPoints / compensatePoints (revision 0002); a purchase that co-earns nothing
-- skips the co-earn loop's query.
CREATE OR REPLACE FUNCTION ledger_earn(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_kind text, p_member_number text, p_asset text,
  p_points bigint, p_amount numeric, p_currency text, p_order_ref text, p_store_code text, p_reason text,
  p_details jsonb, p_effective_at timestamptz, p_alliance_points bigint DEFAULT 0, p_daily_cap bigint DEFAULT NULL,
  p_other_assets jsonb DEFAULT '{}'::jsonb, p_event_limit jsonb DEFAULT NULL, p_plans jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
-- p_points (merchant- or, for the operator, alliance-funded) and p_alliance_points come from the
-- earning rules (alliance.earning.engine); here they are checked against the books: duplicate
-- orders, closed periods, prepaid capacity, the member's daily cap, event-bonus limits.
-- p_plans, when given, holds the rules' plan for each tier rank ({"0": {points, alliance, other,
-- breakdown, dailyCap}, "1": ...}): the member's tier is read here, saving the caller a round trip.
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, p_kind, p_hash);
  v_ctx record;
  v_points bigint := coalesce(p_points, 0);
  v_alliance bigint := coalesce(p_alliance_points, 0);
  v_details jsonb := coalesce(p_details, '{}'::jsonb);
  v_at timestamptz := coalesce(p_effective_at, now());
  v_earned_today bigint;
  v_excess bigint;
  v_used bigint;
  v_tx ledger_transactions;
  v_other record;
  v_daily_cap bigint := p_daily_cap;
  v_other_assets jsonb := coalesce(p_other_assets, '{}'::jsonb);
  v_plan jsonb;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  ASSERT p_kind IN ('earn', 'award', 'compensate'), 'ledger_earn kinds';
  v_ctx := ledger_check_context(p_tenant, p_member_number, p_asset, p_store_code);
  IF v_ctx.refusal IS NOT NULL THEN
    RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, v_ctx.refusal);
  END IF;
  IF p_plans IS NOT NULL THEN
    v_plan := coalesce(p_plans -> member_tier_rank(v_ctx.member_id)::text, p_plans -> '0');
    ASSERT v_plan IS NOT NULL, 'p_plans has a plan for rank 0';
    v_points := (v_plan ->> 'points')::bigint;
    v_alliance := (v_plan ->> 'alliance')::bigint;
    v_daily_cap := (v_plan ->> 'dailyCap')::bigint;
    v_other_assets := coalesce(v_plan -> 'other', '{}'::jsonb);
    v_details := jsonb_set(v_details, '{breakdown}', coalesce(v_plan -> 'breakdown', '[]'::jsonb));
  END IF;
  IF p_kind = 'earn' THEN
    -- Serialise earns for one order so the duplicate check below cannot race.
    PERFORM pg_advisory_xact_lock(hashtextextended(format('earn:%s:%s:%s', p_tenant, v_ctx.member_id, p_order_ref), 0));
    IF p_order_ref IS NOT NULL AND EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.tenant_id = p_tenant
        AND t.kind = 'earn' AND t.order_ref = p_order_ref AND t.member_id = v_ctx.member_id) THEN
      RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_user_error('DUPLICATE_ORDER',
        'points were already earned for this order', 'orderRef'));
    END IF;
  END IF;
  IF p_effective_at IS NOT NULL AND ledger_period_closed(p_asset, p_effective_at) THEN
    RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_user_error('PERIOD_CLOSED',
      'effectiveAt falls in a settled (approved) period; post it in the open period', 'effectiveAt'));
  END IF;
  IF p_event_limit IS NOT NULL THEN
    -- An event bonus (survey, feedback, birthday...) at most `count` times per member and period.
    PERFORM pg_advisory_xact_lock(hashtextextended(
      format('event:%s:%s:%s', p_tenant, v_ctx.member_id, p_event_limit ->> 'event'), 0));
    SELECT count(*) INTO v_used FROM ledger_transactions t
      WHERE t.member_id = v_ctx.member_id AND t.tenant_id IS NOT DISTINCT FROM p_tenant AND t.kind = p_kind
        AND t.details ->> 'event' = p_event_limit ->> 'event'
        AND t.effective_at >= (p_event_limit ->> 'since')::timestamptz;
    IF v_used >= (p_event_limit ->> 'count')::int THEN
      RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_user_error('EVENT_LIMIT_REACHED',
        format('this bonus is limited to %s per member', p_event_limit ->> 'count'), 'event'));
    END IF;
  END IF;
  IF v_daily_cap IS NOT NULL AND p_kind = 'earn' THEN
    PERFORM pg_advisory_xact_lock(hashtextextended(format('daycap:%s:%s', p_tenant, v_ctx.member_id), 0));
    SELECT coalesce(sum(t.points), 0) INTO v_earned_today FROM ledger_transactions t, assets a
      WHERE a.code = p_asset AND t.member_id = v_ctx.member_id AND t.tenant_id = p_tenant AND t.kind = 'earn'
        AND t.asset = p_asset
        AND (t.effective_at AT TIME ZONE a.time_zone)::date = (v_at AT TIME ZONE a.time_zone)::date;
    v_excess := greatest(0, v_earned_today + v_points + v_alliance - v_daily_cap);
    IF v_excess > 0 THEN
      IF v_excess >= v_points + v_alliance THEN
        RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_user_error('DAILY_CAP_REACHED',
          format('this member already earned the daily maximum of %s points here', v_daily_cap), 'amount'));
      END IF;
      v_points := v_points - (v_excess - least(v_alliance, v_excess));
      v_alliance := v_alliance - least(v_alliance, v_excess);  -- the alliance's bonus goes first
      v_details := jsonb_set(v_details, '{breakdown}', coalesce(v_details -> 'breakdown', '[]'::jsonb)
        || jsonb_build_array(jsonb_build_object('rule', 'cap:member-day', 'points', -v_excess, 'asset', p_asset,
             'note', format('at most %s per day', v_daily_cap))));
    END IF;
  END IF;
  IF v_points + v_alliance <= 0 THEN
    RETURN ledger_remember(p_scope, p_key, p_kind, p_hash,
      ledger_user_error('NO_POINTS_EARNED', 'this purchase earns no points', 'amount'));
  END IF;
  IF p_tenant IS NOT NULL AND NOT ledger_issuance_reserve(p_tenant, p_asset, v_points) THEN
    RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_user_error('PREPAID_BALANCE_EXHAUSTED',
      'this merchant has not bought enough prepaid points for this issue', 'amount'));
  END IF;
  v_tx := ledger_credit(p_kind, v_ctx.member_id, p_asset, v_points, p_tenant, p_tenant, p_scope, p_amount,
    p_currency, p_order_ref, v_ctx.store_id, p_reason, v_details, v_at, v_alliance);
  -- Co-earned assets (green-labelled products also earn GREEN), as awards tied to this posting.
  IF v_other_assets <> '{}'::jsonb THEN
    FOR v_other IN SELECT key AS asset, value::bigint AS points FROM jsonb_each_text(v_other_assets) ORDER BY key LOOP
      CONTINUE WHEN v_other.points <= 0 OR NOT EXISTS (SELECT 1 FROM assets WHERE code = v_other.asset);
      IF p_tenant IS NULL OR ledger_issuance_reserve(p_tenant, v_other.asset, v_other.points) THEN
        PERFORM ledger_credit('award', v_ctx.member_id, v_other.asset, v_other.points, p_tenant, p_tenant, p_scope,
          NULL, NULL, NULL, v_ctx.store_id, 'co-earned with a purchase', jsonb_build_object('coEarnOf', v_tx.id), v_at);
      END IF;
    END LOOP;
  END IF;
  PERFORM ledger_after_credit(ARRAY[v_ctx.member_id]);
  RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_success(v_tx));
END $$;

-- Credit a member (earn, award, adjust +, compensate; see revision 0002): the transaction, its
-- entries and its lots are written by one statement instead of five.
CREATE OR REPLACE FUNCTION ledger_credit(
  p_kind text, p_member bigint, p_asset text, p_points bigint, p_issuer bigint, p_tenant bigint, p_scope text,
  p_amount numeric, p_currency text, p_order_ref text, p_store bigint, p_reason text, p_details jsonb,
  p_effective_at timestamptz, p_alliance_points bigint DEFAULT 0)
RETURNS ledger_transactions LANGUAGE plpgsql AS $$
-- p_points come from the issuer (the merchant, or the alliance when p_issuer is NULL);
-- p_alliance_points are an alliance-funded share of the same posting (a campaign bonus), with a
-- lot of their own so settlement never charges the merchant for them.
DECLARE
  v_tx ledger_transactions;
  v_source bigint;
  v_alliance bigint;
  v_wallet bigint := ledger_account('member_wallet', p_asset, p_member, NULL);
  v_expiry timestamptz := ledger_asset_expiry(p_asset, p_effective_at);
BEGIN
  ASSERT p_points >= 0 AND p_alliance_points >= 0 AND p_points + p_alliance_points > 0, 'credits are positive';
  IF p_points > 0 THEN
    v_source := CASE WHEN p_issuer IS NULL THEN ledger_account('alliance_adjustment', p_asset, NULL, NULL)
                     ELSE ledger_account('tenant_issuance', p_asset, NULL, p_issuer) END;
  END IF;
  IF p_alliance_points > 0 THEN
    v_alliance := ledger_account('alliance_adjustment', p_asset, NULL, NULL);
  END IF;
  WITH tx AS (
    INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, amount, currency,
        order_ref, store_id, reason, details, effective_at)
      VALUES (p_kind, p_asset, p_member, p_tenant, p_scope, p_points + p_alliance_points, p_amount, p_currency,
        p_order_ref, p_store, p_reason, coalesce(p_details, '{}'::jsonb), p_effective_at)
      RETURNING *
  ), entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
      SELECT tx.id, e.account_id, p_member, p_asset, e.amount
      FROM tx, (VALUES (1, v_source, -p_points), (2, v_alliance, -p_alliance_points),
                       (3, v_wallet, p_points + p_alliance_points)) e(n, account_id, amount)
      WHERE e.amount <> 0 ORDER BY e.n
  ), new_lots AS (
    INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
      SELECT p_member, p_asset, l.issuer, tx.id, l.points, l.points, p_effective_at, v_expiry
      FROM tx, (VALUES (1, p_issuer, p_points), (2, NULL::bigint, p_alliance_points)) l(n, issuer, points)
      WHERE l.points > 0 ORDER BY l.n
  )
  SELECT * INTO v_tx FROM tx;
  RETURN v_tx;
END $$;

-- The earn path's tier check, set-based (see 2. above). Members are upgraded in id order, so
-- concurrent batches sharing members take the per-member locks in one order.
CREATE OR REPLACE FUNCTION tier_upgrade_members_if_qualified(p_members bigint[])
RETURNS int LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_member bigint;
  v_upgraded int := 0;
BEGIN
  FOR v_member IN
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
                  AND t.effective_at <= now()) >= next_tier.points)
    ORDER BY m.id
  LOOP
    IF tier_upgrade_if_qualified(v_member) IS NOT NULL THEN
      v_upgraded := v_upgraded + 1;
    END IF;
  END LOOP;
  RETURN v_upgraded;
END $$;

-- The tier path's helpers, as PL/pgSQL for the same reason as above (1.).
CREATE OR REPLACE FUNCTION tier_rolling_points(p_member bigint)
RETURNS bigint LANGUAGE plpgsql STABLE SET search_path = public AS $$
BEGIN
  RETURN (SELECT coalesce(sum(t.points - coalesce(r.reversed, 0)), 0)::bigint
    FROM ledger_transactions t
    LEFT JOIN LATERAL (SELECT sum(x.points + x.shortfall) AS reversed FROM ledger_transactions x
                       WHERE x.reverses_id = t.id AND x.kind = 'reverse') r ON true
    WHERE t.member_id = p_member AND t.kind IN ('earn', 'award', 'compensate')
      AND t.asset = (SELECT s.asset FROM tier_settings s)
      AND t.effective_at > now() - (SELECT make_interval(months => s.window_months) FROM tier_settings s)
      AND t.effective_at <= now());
END $$;

CREATE OR REPLACE FUNCTION tier_for_points(p_points bigint)
RETURNS tiers LANGUAGE plpgsql STABLE SET search_path = public AS $$
DECLARE v_tier tiers;
BEGIN
  SELECT * INTO v_tier FROM tiers WHERE qualifying_points <= p_points ORDER BY rank DESC LIMIT 1;
  RETURN v_tier;
END $$;

CREATE OR REPLACE FUNCTION tier_lock_member(p_member bigint)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended(format('tier:%s', p_member), 0));
END $$;

---------------------------------------------------------------------------------------------------
-- earnPointsBatch (see revision 0002 for the rules), with less work per item:
-- * the work table is created once per session and emptied at commit, so the statements that
--   use it keep their plans (a table created per call made every one of them planned anew, and
--   ANALYZE wrote statistics for it on every call);
-- * expiry and the closed-period check are computed once per (asset, instant), not per item;
-- * transactions, entries and lots are posted in one statement, and each transaction's JSON is
--   taken from the inserted row instead of being read back.
---------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION ledger_earn_batch(p_scope text, p_key text, p_hash text, p_tenant bigint, p_items jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'earn_batch', p_hash);
  v_results jsonb;
  v_total record;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  ASSERT jsonb_array_length(p_items) <= 1000, 'batches are at most 1000 items';
  IF NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant AND t.status = 'active') THEN
    RETURN ledger_remember(p_scope, p_key, 'earn_batch', p_hash,
      ledger_user_error('TENANT_SUSPENDED', 'this merchant is suspended') || jsonb_build_object('results', '[]'::jsonb));
  END IF;
  IF to_regclass('pg_temp.earn_batch_items') IS NULL THEN
    CREATE TEMP TABLE earn_batch_items (
      idx int NOT NULL, member_number text, amount numeric, currency text, order_ref text, asset text,
      details jsonb NOT NULL, effective_at timestamptz NOT NULL, expires_at timestamptz, member_id bigint,
      store_id bigint, points bigint, alliance_points bigint NOT NULL, error_code text, wallet_id bigint,
      transaction_id bigint, transaction_json jsonb
    ) ON COMMIT DELETE ROWS;
  END IF;
  DELETE FROM earn_batch_items;  -- rows of an earlier batch in the same transaction (commit empties it)

  -- One pass: resolve member, store, asset and wallet by index lookups and decide each item's refusal.
  INSERT INTO earn_batch_items
    WITH items AS MATERIALIZED (
      SELECT i.*, coalesce(i.effective_at, now()) AS at
      FROM jsonb_to_recordset(p_items) AS i(idx int, member_number text, amount numeric, currency text,
        order_ref text, store_code text, asset text, details jsonb, effective_at timestamptz, points bigint,
        alliance_points bigint, breakdown jsonb)
    ), dated AS (
      SELECT d.asset, d.at, ledger_period_closed(d.asset, d.at) AS closed, ledger_asset_expiry(d.asset, d.at) AS expires_at
      FROM (SELECT DISTINCT asset, at FROM items) d
    )
    SELECT i.idx, i.member_number, i.amount, i.currency, i.order_ref, i.asset,
      coalesce(i.details, '{}'::jsonb) || jsonb_build_object('breakdown', coalesce(i.breakdown, '[]'::jsonb)),
      i.at, dt.expires_at, l.member_id, s.id, i.points, coalesce(i.alliance_points, 0),
      CASE
        WHEN a.code IS NULL THEN 'UNKNOWN_ASSET'
        WHEN l.member_id IS NULL THEN 'MEMBER_NOT_FOUND'
        WHEN i.store_code IS NOT NULL AND s.id IS NULL THEN 'UNKNOWN_STORE'
        WHEN i.points + coalesce(i.alliance_points, 0) <= 0 THEN 'NO_POINTS_EARNED'
        WHEN dt.closed THEN 'PERIOD_CLOSED'
      END,
      w.id, NULL, NULL
    FROM items i
    JOIN dated dt ON dt.asset = i.asset AND dt.at = i.at
    LEFT JOIN members m ON m.member_number = i.member_number AND m.status = 'active'
    LEFT JOIN member_links l ON l.member_id = m.id AND l.tenant_id = p_tenant
    LEFT JOIN stores s ON s.tenant_id = p_tenant AND s.code = i.store_code
    LEFT JOIN assets a ON a.code = i.asset
    LEFT JOIN accounts w ON w.kind = 'member_wallet' AND w.asset = i.asset AND w.member_id = l.member_id
      AND w.tenant_id IS NULL;

  -- Prepaid merchants: reserve issuance per asset; an asset over the prepaid balance fails alone.
  FOR v_total IN SELECT b.asset, sum(b.points)::bigint AS points FROM earn_batch_items b
                 WHERE b.error_code IS NULL GROUP BY b.asset ORDER BY b.asset LOOP
    IF NOT ledger_issuance_reserve(p_tenant, v_total.asset, v_total.points) THEN
      UPDATE earn_batch_items SET error_code = 'PREPAID_BALANCE_EXHAUSTED'
        WHERE error_code IS NULL AND asset = v_total.asset;
    END IF;
  END LOOP;

  -- Wallets the batch credits for the first time, created in one statement.
  IF EXISTS (SELECT 1 FROM earn_batch_items WHERE error_code IS NULL AND wallet_id IS NULL) THEN
    INSERT INTO accounts (kind, asset, member_id)
      SELECT DISTINCT 'member_wallet', b.asset, b.member_id FROM earn_batch_items b
      WHERE b.error_code IS NULL AND b.wallet_id IS NULL
      ON CONFLICT DO NOTHING;
    UPDATE earn_batch_items b SET wallet_id = a.id FROM accounts a
      WHERE b.error_code IS NULL AND b.wallet_id IS NULL AND a.kind = 'member_wallet' AND a.asset = b.asset
        AND a.member_id = b.member_id AND a.tenant_id IS NULL;
  END IF;

  -- Transactions, entries and lots in one statement. An order already earned (earlier,
  -- concurrently, or twice in this batch) is skipped by the insert and refused below.
  WITH sources AS MATERIALIZED (
    SELECT d.asset, ledger_account('tenant_issuance', d.asset, NULL, p_tenant) AS issuance,
      CASE WHEN d.alliance THEN ledger_account('alliance_adjustment', d.asset, NULL, NULL) END AS alliance
    FROM (SELECT asset, bool_or(alliance_points > 0) AS alliance FROM earn_batch_items WHERE error_code IS NULL
          GROUP BY asset) d
  ), posted AS (
    INSERT INTO ledger_transactions AS t (kind, asset, member_id, tenant_id, client_scope, points, amount, currency,
        order_ref, store_id, details, effective_at)
      SELECT 'earn', b.asset, b.member_id, p_tenant, p_scope, b.points + b.alliance_points, b.amount, b.currency,
        b.order_ref, b.store_id, b.details || jsonb_build_object('batchIndex', b.idx), b.effective_at
      FROM earn_batch_items b WHERE b.error_code IS NULL ORDER BY b.idx
      ON CONFLICT (tenant_id, member_id, order_ref) WHERE kind = 'earn' DO NOTHING
      RETURNING t.id, (t.details ->> 'batchIndex')::int AS idx, ledger_transaction_json(t) AS transaction_json
  ), credited AS (
    SELECT p.id, p.idx, p.transaction_json, b.member_id, b.asset, b.points, b.alliance_points, b.wallet_id,
      b.effective_at, b.expires_at, s.issuance, s.alliance
    FROM posted p JOIN earn_batch_items b ON b.idx = p.idx JOIN sources s ON s.asset = b.asset
  ), entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
      SELECT c.id, c.issuance, c.member_id, c.asset, -c.points FROM credited c WHERE c.points > 0
      UNION ALL
      SELECT c.id, c.alliance, c.member_id, c.asset, -c.alliance_points FROM credited c WHERE c.alliance_points > 0
      UNION ALL
      SELECT c.id, c.wallet_id, c.member_id, c.asset, c.points + c.alliance_points FROM credited c
  ), new_lots AS (
    INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
      SELECT c.member_id, c.asset, p_tenant, c.id, c.points, c.points, c.effective_at, c.expires_at
      FROM credited c WHERE c.points > 0
      UNION ALL
      SELECT c.member_id, c.asset, NULL, c.id, c.alliance_points, c.alliance_points, c.effective_at, c.expires_at
      FROM credited c WHERE c.alliance_points > 0
  )
  UPDATE earn_batch_items b SET transaction_id = c.id, transaction_json = c.transaction_json
    FROM credited c WHERE c.idx = b.idx;

  UPDATE earn_batch_items SET error_code = 'DUPLICATE_ORDER' WHERE error_code IS NULL AND transaction_id IS NULL;
  IF FOUND THEN  -- give back prepaid capacity reserved for duplicates
    PERFORM ledger_issuance_reserve(p_tenant, d.asset, -d.points)
      FROM (SELECT asset, sum(points)::bigint AS points FROM earn_batch_items WHERE error_code = 'DUPLICATE_ORDER'
            GROUP BY asset) d;
  END IF;

  PERFORM ledger_after_credit(ARRAY(SELECT DISTINCT member_id FROM earn_batch_items
                                    WHERE transaction_id IS NOT NULL ORDER BY member_id));
  SELECT jsonb_agg(jsonb_build_object(
      'index', b.idx,
      'transaction', b.transaction_json,
      'userErrors', CASE WHEN b.error_code IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(jsonb_build_object(
        'field', CASE b.error_code WHEN 'UNKNOWN_ASSET' THEN 'asset' WHEN 'MEMBER_NOT_FOUND' THEN 'memberNumber'
          WHEN 'UNKNOWN_STORE' THEN 'storeCode' WHEN 'DUPLICATE_ORDER' THEN 'orderRef'
          WHEN 'PERIOD_CLOSED' THEN 'effectiveAt' ELSE 'amount' END,
        'code', b.error_code,
        'message', CASE b.error_code
          WHEN 'UNKNOWN_ASSET' THEN 'no such asset'
          WHEN 'MEMBER_NOT_FOUND' THEN 'no such member is enrolled at this merchant'
          WHEN 'UNKNOWN_STORE' THEN 'no such store at this merchant'
          WHEN 'DUPLICATE_ORDER' THEN 'points were already earned for this order'
          WHEN 'PERIOD_CLOSED' THEN 'effectiveAt falls in a settled (approved) period'
          WHEN 'PREPAID_BALANCE_EXHAUSTED' THEN 'this merchant has not bought enough prepaid points'
          ELSE 'this purchase earns no points' END)) END) ORDER BY b.idx)
    INTO v_results
    FROM earn_batch_items b;
  RETURN ledger_remember(p_scope, p_key, 'earn_batch', p_hash, jsonb_build_object(
    'results', coalesce(v_results, '[]'::jsonb), 'userErrors', '[]'::jsonb));
END $$;

---------------------------------------------------------------------------------------------------
-- Fewer writes per posting (4.). Every index and foreign key on the posting tables is paid on
-- every insert, and the hottest indexes are keyed by member, so each touches a random page.
---------------------------------------------------------------------------------------------------

-- The member history index also answers the tier check (an index-only scan of the member's
-- transactions), so the separate tier_credits index (another random page per credit) goes.
DROP INDEX ledger_transactions_tier_credits;
DROP INDEX ledger_transactions_member;
CREATE INDEX ledger_transactions_member ON ledger_transactions (member_id, id)
  INCLUDE (kind, asset, points, effective_at);

-- Entries were indexed by account for one reader: a member's balance as of an instant, which
-- now goes through the member's transactions (the entries' primary key starts with the
-- transaction). A merchant's entries are reached the same way, through ledger_transactions_tenant.
DROP INDEX ledger_entries_account;

-- A balance (returned by every posting) sums the member's open lots: an index-only scan.
DROP INDEX lots_open;
CREATE INDEX lots_open ON lots (member_id, asset, expires_at, issued_at, id) INCLUDE (remaining)
  WHERE remaining > 0;

-- Balance of one asset now (available, held), or posted as of a past instant from the entries.
CREATE OR REPLACE FUNCTION ledger_member_balance(p_member bigint, p_asset text, p_as_of timestamptz)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT CASE
    WHEN NOT ledger_can_see_member(p_member) THEN NULL
    WHEN p_as_of IS NULL THEN ledger_balance_json(p_member, p_asset)
    ELSE jsonb_build_object('asset', p_asset, 'held', 0, 'available', (
      SELECT coalesce(sum(e.amount), 0) FROM ledger_transactions t
      JOIN ledger_entries e ON e.transaction_id = t.id AND e.member_id = p_member
      JOIN accounts a ON a.id = e.account_id
      WHERE t.member_id = p_member AND t.effective_at <= p_as_of
        AND a.kind = 'member_wallet' AND a.member_id = p_member AND a.asset = p_asset))
  END
$$;

-- Foreign keys from the posting tables to reference data (members, tenants, stores, accounts,
-- assets) are replaced: each check locked the referenced row (FOR KEY SHARE), which dirtied the
-- member's and the wallet's pages on every posting (WAL, and a full-page image after each
-- checkpoint) and made concurrent postings share multixacts on the merchant's and the asset's
-- rows. The posting functions take every one of these ids from a row they have just read, rows
-- of those tables are never deleted nor re-keyed (the triggers below refuse it, for the owner
-- too; the application role has no DELETE privilege), and ledger_verify() checks that every
-- reference resolves. Foreign keys between ledger rows (entries, lots, movements ->
-- transactions and lots) stay.
ALTER TABLE ledger_transactions
  DROP CONSTRAINT ledger_transactions_asset_fkey,
  DROP CONSTRAINT ledger_transactions_member_id_fkey,
  DROP CONSTRAINT ledger_transactions_tenant_id_fkey,
  DROP CONSTRAINT ledger_transactions_store_id_fkey;
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_account_id_fkey;
ALTER TABLE lots
  DROP CONSTRAINT lots_member_id_fkey,
  DROP CONSTRAINT lots_asset_fkey,
  DROP CONSTRAINT lots_issuer_tenant_id_fkey;

-- TG_ARGV[0]: the key column the ledger refers to.
CREATE FUNCTION ledger_refuse_reference_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND to_jsonb(NEW) -> TG_ARGV[0] IS NOT DISTINCT FROM to_jsonb(OLD) -> TG_ARGV[0] THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'the ledger refers to % rows: % of their % refused', TG_TABLE_NAME, TG_OP, TG_ARGV[0]
    USING ERRCODE = '42501';
END $$;
CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF id ON members
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF id ON tenants
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF id ON stores
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF id ON accounts
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference BEFORE DELETE OR UPDATE OF code ON assets
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_reference_change('code');
CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON members
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON tenants
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON stores
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON accounts
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('id');
CREATE TRIGGER ledger_reference_truncate BEFORE TRUNCATE ON assets
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_reference_change('code');

-- Every invariant of the books (revision 0002), and now that every reference resolves.
CREATE OR REPLACE FUNCTION ledger_verify()
RETURNS TABLE (check_name text, failures bigint, example text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  WITH checks AS (
    SELECT 'transaction entries sum to zero per asset' AS check_name, count(*) AS failures,
           min(transaction_id)::text AS example
      FROM (SELECT transaction_id FROM ledger_entries GROUP BY transaction_id, asset HAVING sum(amount) <> 0) x
    UNION ALL
    SELECT 'trial balance is zero per asset', count(*), min(asset)
      FROM (SELECT asset FROM ledger_entries GROUP BY asset HAVING sum(amount) <> 0) x
    UNION ALL
    SELECT 'entry asset matches its transaction and account', count(*), min(e.transaction_id)::text
      FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
      JOIN accounts a ON a.id = e.account_id
      WHERE e.asset <> t.asset OR a.asset <> e.asset OR e.member_id <> t.member_id
    UNION ALL
    SELECT 'lot remaining = amount + movements', count(*), min(l.id)::text
      FROM lots l LEFT JOIN (SELECT lot_id, sum(points) AS moved FROM lot_movements GROUP BY lot_id) m
        ON m.lot_id = l.id
      WHERE l.remaining <> l.amount + coalesce(m.moved, 0)
            - CASE WHEN l.restored_from_lot_id IS NOT NULL THEN l.amount ELSE 0 END
    UNION ALL
    SELECT 'lot remaining between 0 and amount', count(*), min(id)::text
      FROM lots WHERE remaining < 0 OR remaining > amount
    UNION ALL
    SELECT 'member wallet balance = sum of lot remaining', count(*), min(member_id)::text
      FROM (
        SELECT coalesce(w.member_id, l.member_id) AS member_id
        FROM (SELECT a.member_id, a.asset, sum(e.amount) AS posted FROM ledger_entries e
              JOIN accounts a ON a.id = e.account_id WHERE a.kind = 'member_wallet' GROUP BY a.member_id, a.asset) w
        FULL JOIN (SELECT member_id, asset, sum(remaining) AS remaining FROM lots GROUP BY member_id, asset) l
          ON l.member_id = w.member_id AND l.asset = w.asset
        WHERE coalesce(w.posted, 0) <> coalesce(l.remaining, 0)
      ) x
    UNION ALL
    SELECT 'no negative available balance', count(*), min(member_id)::text
      FROM (SELECT DISTINCT member_id, asset FROM lots) m
      WHERE ledger_available(m.member_id, m.asset) < 0
    UNION ALL
    SELECT 'every movement points at a lot of the same member', count(*), min(mv.lot_id)::text
      FROM lot_movements mv LEFT JOIN lots l ON l.id = mv.lot_id
      WHERE l.id IS NULL OR l.member_id <> mv.member_id
    UNION ALL
    SELECT 'consumed points = debited points', count(*), min(t.id)::text
      FROM ledger_transactions t
      LEFT JOIN (SELECT transaction_id, -sum(points) AS consumed FROM lot_movements WHERE kind = 'consume'
                 GROUP BY transaction_id) c ON c.transaction_id = t.id
      WHERE t.kind IN ('redeem', 'capture') AND coalesce(c.consumed, 0) <> t.points
    UNION ALL
    SELECT 'reversals never exceed the original', count(*), min(o.id)::text
      FROM ledger_transactions o JOIN (SELECT reverses_id, sum(points + shortfall) AS reversed
        FROM ledger_transactions WHERE reverses_id IS NOT NULL GROUP BY reverses_id) r ON r.reverses_id = o.id
      WHERE r.reversed > o.points
    UNION ALL
    -- Foreign keys to reference data were replaced by the posting functions' lookups (0014).
    SELECT 'ledger rows refer to existing members, tenants, stores, accounts and assets', count(*),
           min(x.what)
      FROM (
        SELECT 'transaction ' || t.id AS what FROM ledger_transactions t
        WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.id = t.member_id)
           OR NOT EXISTS (SELECT 1 FROM assets a WHERE a.code = t.asset)
           OR (t.tenant_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenants n WHERE n.id = t.tenant_id))
           OR (t.store_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM stores s WHERE s.id = t.store_id))
        UNION ALL
        SELECT 'entry ' || e.transaction_id || '/' || e.account_id FROM ledger_entries e
        WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = e.account_id)
        UNION ALL
        SELECT 'lot ' || l.id FROM lots l
        WHERE NOT EXISTS (SELECT 1 FROM members m WHERE m.id = l.member_id)
           OR NOT EXISTS (SELECT 1 FROM assets a WHERE a.code = l.asset)
           OR (l.issuer_tenant_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenants n WHERE n.id = l.issuer_tenant_id))
      ) x
  )
  SELECT check_name, failures, example FROM checks WHERE failures > 0
$$;
