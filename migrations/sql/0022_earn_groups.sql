-- Earns posted in groups (revision 0022): one call and one transaction for the earns that
-- several API requests asked for at the same time (alliance.ledger.groups gathers them).
--
-- Each item is one `earnPoints` request with its own client scope, idempotency key and merchant.
-- It gets the answer `ledger_earn` would give it, and that answer is remembered under its own
-- key: the same checks in the same order (replay, merchant, asset, member, store, duplicate
-- order, closed period, no points, prepaid capacity), the plan of the member's tier from
-- p_plans, the same transaction, entries and lots, the same tier check, the same balance.
-- The checks run set-based: a few index probes per item instead of a dozen statements, and one
-- commit for the group.
--
-- What the group does not do, the caller posts through `ledger_earn` alone:
-- * plans with a daily cap or co-earned assets (the caller does not send them here);
-- * an item whose merchant's prepaid capacity does not cover the group (its answer is NULL:
--   alone, it may fit where the group's sum did not).
-- The caller sends at most one item per member and per (scope, key), so each answer's balance
-- is the balance after that earn, and no two items race for one idempotency record.

CREATE OR REPLACE FUNCTION ledger_earn_group(p_items jsonb)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_reserve record;
  v_answers jsonb;
BEGIN
  ASSERT jsonb_array_length(p_items) BETWEEN 1 AND 1000, 'a group has 1 to 1000 earns';
  IF to_regclass('pg_temp.earn_group_items') IS NULL THEN
    CREATE TEMP TABLE earn_group_items (
      i int NOT NULL, scope text NOT NULL, key text NOT NULL, hash text NOT NULL, tenant_id bigint NOT NULL,
      asset text NOT NULL, amount numeric, currency text, order_ref text, details jsonb NOT NULL,
      at timestamptz NOT NULL, expires_at timestamptz, member_id bigint, store_id bigint, points bigint,
      alliance_points bigint, wallet_id bigint, replay jsonb, refusal jsonb, alone boolean NOT NULL DEFAULT false,
      transaction_id bigint, transaction_json jsonb, answer jsonb
    ) ON COMMIT DELETE ROWS;
  END IF;
  DELETE FROM earn_group_items;  -- rows of an earlier group in the same transaction

  -- Resolve every item with index probes and decide its refusal, in ledger_earn's order.
  INSERT INTO earn_group_items (i, scope, key, hash, tenant_id, asset, amount, currency, order_ref, details, at,
      expires_at, member_id, store_id, points, alliance_points, wallet_id, replay, refusal)
    WITH items AS MATERIALIZED (
      -- details and plans arrive as JSON text, as ledger_earn takes them
      SELECT x.i, x.scope, x.key, x.hash, x.tenant, x.member_number, x.asset, x.amount, x.currency, x.order_ref,
        x.store_code, x.details::jsonb AS details, x.effective_at, x.plans::jsonb AS plans,
        coalesce(x.effective_at, now()) AS at
      FROM jsonb_to_recordset(p_items) AS x(i int, scope text, key text, hash text, tenant bigint,
        member_number text, asset text, amount numeric, currency text, order_ref text, store_code text,
        details text, effective_at timestamptz, plans text)
    ), dated AS (  -- expiry once per asset and instant (most items share now())
      SELECT d.asset, d.at, ledger_asset_expiry(d.asset, d.at) AS expires_at
      FROM (SELECT DISTINCT asset, at FROM items) d
    ), resolved AS (
      SELECT x.*, t.id AS tenant_ok, a.code AS asset_ok, l.member_id, s.id AS store_id, dt.expires_at,
        -- ledger_replay's answer, joined instead of called per item
        CASE WHEN k.client_scope IS NULL THEN NULL
             WHEN k.operation <> 'earn' OR k.request_hash <> x.hash THEN ledger_user_error('IDEMPOTENCY_KEY_REUSED',
               'this idempotency key was used with a different request', 'idempotencyKey')
             ELSE k.response || jsonb_build_object('replayed', true) END AS replay,
        coalesce(x.plans -> coalesce(r.rank, 0)::text, x.plans -> '0') AS plan
      FROM items x
      JOIN dated dt ON dt.asset = x.asset AND dt.at = x.at
      LEFT JOIN idempotency_records k ON k.client_scope = x.scope AND k.idempotency_key = x.key
      LEFT JOIN tenants t ON t.id = x.tenant AND t.status = 'active'
      LEFT JOIN assets a ON a.code = x.asset
      LEFT JOIN members m ON m.member_number = x.member_number AND m.status = 'active'
      LEFT JOIN member_links l ON l.member_id = m.id AND l.tenant_id = x.tenant
      LEFT JOIN stores s ON s.tenant_id = x.tenant AND s.code = x.store_code
      LEFT JOIN member_tiers mt ON mt.member_id = l.member_id
      LEFT JOIN tiers r ON r.code = mt.tier_code
    )
    SELECT x.i, x.scope, x.key, x.hash, x.tenant, x.asset, x.amount, x.currency, x.order_ref,
      jsonb_set(coalesce(x.details, '{}'::jsonb), '{breakdown}', coalesce(x.plan -> 'breakdown', '[]'::jsonb)),
      x.at, x.expires_at, x.member_id, x.store_id,
      (x.plan ->> 'points')::bigint, (x.plan ->> 'alliance')::bigint, w.id, x.replay,
      CASE
        WHEN x.replay IS NOT NULL THEN NULL
        WHEN x.tenant_ok IS NULL THEN ledger_user_error('TENANT_SUSPENDED', 'this merchant is suspended')
        WHEN x.asset_ok IS NULL THEN ledger_user_error('UNKNOWN_ASSET', format('no asset %s', x.asset), 'asset')
        WHEN x.member_id IS NULL THEN
          ledger_user_error('MEMBER_NOT_FOUND', 'no such member is enrolled at this merchant', 'memberNumber')
        WHEN x.store_code IS NOT NULL AND x.store_id IS NULL THEN
          ledger_user_error('UNKNOWN_STORE', format('no store %s at this merchant', x.store_code), 'storeCode')
        WHEN x.order_ref IS NOT NULL AND EXISTS (SELECT 1 FROM ledger_transactions e WHERE e.tenant_id = x.tenant
            AND e.kind = 'earn' AND e.order_ref = x.order_ref AND e.member_id = x.member_id) THEN
          ledger_user_error('DUPLICATE_ORDER', 'points were already earned for this order', 'orderRef')
        WHEN x.effective_at IS NOT NULL AND ledger_period_closed(x.asset, x.effective_at) THEN
          ledger_user_error('PERIOD_CLOSED',
            'effectiveAt falls in a settled (approved) period; post it in the open period', 'effectiveAt')
        WHEN (x.plan ->> 'points')::bigint + (x.plan ->> 'alliance')::bigint <= 0 THEN
          ledger_user_error('NO_POINTS_EARNED', 'this purchase earns no points', 'amount')
      END
    FROM resolved x
    LEFT JOIN accounts w ON w.kind = 'member_wallet' AND w.asset = x.asset AND w.member_id = x.member_id
      AND w.tenant_id IS NULL;
  ASSERT NOT EXISTS (SELECT 1 FROM earn_group_items WHERE replay IS NULL AND refusal IS NULL
                     AND (points IS NULL OR points < 0 OR alliance_points IS NULL OR alliance_points < 0)),
    'every plan has points, none negative';
  ASSERT (SELECT count(*) = count(DISTINCT (scope, key)) AND count(member_id) = count(DISTINCT member_id)
          FROM earn_group_items), 'at most one item per idempotency key and per member';

  -- Prepaid capacity per merchant and asset, in one order (no deadlock between groups). Where
  -- the group's sum does not fit, its items go alone: each of them may still fit.
  FOR v_reserve IN SELECT b.tenant_id, b.asset, sum(b.points)::bigint AS points FROM earn_group_items b
                   WHERE b.replay IS NULL AND b.refusal IS NULL GROUP BY 1, 2 ORDER BY 1, 2 LOOP
    IF NOT ledger_issuance_reserve(v_reserve.tenant_id, v_reserve.asset, v_reserve.points) THEN
      UPDATE earn_group_items SET alone = true
        WHERE replay IS NULL AND refusal IS NULL AND tenant_id = v_reserve.tenant_id AND asset = v_reserve.asset;
    END IF;
  END LOOP;

  -- Wallets credited for the first time, in one statement.
  IF EXISTS (SELECT 1 FROM earn_group_items WHERE replay IS NULL AND refusal IS NULL AND wallet_id IS NULL) THEN
    INSERT INTO accounts (kind, asset, member_id)
      SELECT DISTINCT 'member_wallet', b.asset, b.member_id FROM earn_group_items b
      WHERE b.replay IS NULL AND b.refusal IS NULL AND NOT b.alone AND b.wallet_id IS NULL
      ON CONFLICT DO NOTHING;
    UPDATE earn_group_items b SET wallet_id = a.id FROM accounts a
      WHERE b.replay IS NULL AND b.refusal IS NULL AND b.wallet_id IS NULL AND a.kind = 'member_wallet'
        AND a.asset = b.asset AND a.member_id = b.member_id AND a.tenant_id IS NULL;
  END IF;

  -- Transactions, entries and lots in one statement (ledger_credit's rows, for every item). An
  -- order earned concurrently since the check above is skipped here and refused below.
  WITH sources AS MATERIALIZED (
    SELECT d.tenant_id, d.asset, ledger_account('tenant_issuance', d.asset, NULL, d.tenant_id) AS issuance,
      CASE WHEN d.alliance THEN ledger_account('alliance_adjustment', d.asset, NULL, NULL) END AS alliance
    FROM (SELECT tenant_id, asset, bool_or(alliance_points > 0) AS alliance FROM earn_group_items
          WHERE replay IS NULL AND refusal IS NULL AND NOT alone GROUP BY 1, 2) d
  ), posted AS (
    INSERT INTO ledger_transactions AS t (kind, asset, member_id, tenant_id, client_scope, points, amount, currency,
        order_ref, store_id, details, effective_at)
      SELECT 'earn', b.asset, b.member_id, b.tenant_id, b.scope, b.points + b.alliance_points, b.amount, b.currency,
        b.order_ref, b.store_id, b.details, b.at
      FROM earn_group_items b WHERE b.replay IS NULL AND b.refusal IS NULL AND NOT b.alone ORDER BY b.i
      ON CONFLICT (tenant_id, member_id, order_ref) WHERE kind = 'earn' DO NOTHING
      RETURNING t.id, t.tenant_id, t.member_id, t.order_ref, ledger_transaction_json(t) AS transaction_json
  ), credited AS (
    SELECT p.id, p.transaction_json, b.i, b.member_id, b.asset, b.points, b.alliance_points, b.wallet_id, b.at,
      b.expires_at, b.tenant_id, s.issuance, s.alliance
    FROM posted p
    JOIN earn_group_items b ON b.tenant_id = p.tenant_id AND b.member_id = p.member_id
      AND b.order_ref IS NOT DISTINCT FROM p.order_ref AND b.replay IS NULL AND b.refusal IS NULL AND NOT b.alone
    JOIN sources s ON s.tenant_id = b.tenant_id AND s.asset = b.asset
  ), entries AS (
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
      SELECT c.id, c.issuance, c.member_id, c.asset, -c.points FROM credited c WHERE c.points > 0
      UNION ALL
      SELECT c.id, c.alliance, c.member_id, c.asset, -c.alliance_points FROM credited c WHERE c.alliance_points > 0
      UNION ALL
      SELECT c.id, c.wallet_id, c.member_id, c.asset, c.points + c.alliance_points FROM credited c
  ), new_lots AS (
    INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
      SELECT l.member_id, l.asset, l.issuer, l.id, l.points, l.points, l.at, l.expires_at
      FROM (SELECT c.i, 1 AS n, c.member_id, c.asset, c.tenant_id AS issuer, c.id, c.points, c.at, c.expires_at
            FROM credited c WHERE c.points > 0
            UNION ALL
            SELECT c.i, 2, c.member_id, c.asset, NULL, c.id, c.alliance_points, c.at, c.expires_at
            FROM credited c WHERE c.alliance_points > 0) l
      ORDER BY l.i, l.n
  )
  UPDATE earn_group_items b SET transaction_id = c.id, transaction_json = c.transaction_json
    FROM credited c WHERE c.i = b.i;

  -- Orders earned concurrently: their prepaid capacity goes back, and they are refused.
  PERFORM ledger_issuance_reserve(d.tenant_id, d.asset, -d.points)
    FROM (SELECT tenant_id, asset, sum(points)::bigint AS points FROM earn_group_items
          WHERE replay IS NULL AND refusal IS NULL AND NOT alone AND transaction_id IS NULL
          GROUP BY 1, 2 ORDER BY 1, 2) d;
  UPDATE earn_group_items SET refusal = ledger_user_error('DUPLICATE_ORDER',
      'points were already earned for this order', 'orderRef')
    WHERE replay IS NULL AND refusal IS NULL AND NOT alone AND transaction_id IS NULL;

  PERFORM ledger_after_credit(ARRAY(SELECT member_id FROM earn_group_items WHERE transaction_id IS NOT NULL
                                    ORDER BY member_id));

  -- Each item's answer, remembered under its own key (replays and "alone" items excepted).
  UPDATE earn_group_items b SET answer = CASE
      WHEN b.transaction_id IS NOT NULL THEN jsonb_build_object('transaction', b.transaction_json,
        'balance', ledger_balance_json(b.member_id, b.asset), 'hold', NULL, 'userErrors', '[]'::jsonb)
      ELSE b.refusal END
    WHERE b.replay IS NULL AND NOT b.alone;
  INSERT INTO idempotency_records (client_scope, idempotency_key, operation, request_hash, response)
    SELECT b.scope, b.key, 'earn', b.hash, b.answer FROM earn_group_items b WHERE b.answer IS NOT NULL ORDER BY b.i;

  SELECT jsonb_agg(CASE WHEN b.replay IS NOT NULL THEN b.replay
                        WHEN b.alone THEN NULL
                        ELSE b.answer || jsonb_build_object('replayed', false) END ORDER BY b.i)
    INTO v_answers FROM earn_group_items b;
  ASSERT jsonb_array_length(v_answers) = jsonb_array_length(p_items), 'one answer per item';
  RETURN v_answers;
END $$;
