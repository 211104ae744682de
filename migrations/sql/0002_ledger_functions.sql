-- Ledger write functions (revision 0002). Each public ledger_* function is one atomic
-- operation: it checks the idempotency record, validates against the books under the member's
-- wallet lock, posts balanced entries, records lot movements (provenance), stores its response
-- under the idempotency key and returns it. Refusals are returned, not raised, and remembered.
--
-- The caller passes who it acts as (p_tenant: the merchant, NULL for the operator); these
-- functions run as the owner, so they enforce visibility themselves.

CREATE FUNCTION ledger_user_error(p_code text, p_message text, p_field text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT jsonb_build_object('transaction', NULL, 'balance', NULL, 'hold', NULL,
    'userErrors', jsonb_build_array(jsonb_build_object('field', p_field, 'code', p_code, 'message', p_message)))
$$;

CREATE FUNCTION ledger_asset_expiry(p_asset text, p_issued_at timestamptz)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
  SELECT CASE a.expiry_policy
    WHEN 'never' THEN NULL
    WHEN 'months_after_issue' THEN p_issued_at + make_interval(months => a.expiry_months)
    -- "end of the Nth month after issue" = the first instant of month N+1, in the alliance's zone.
    ELSE (date_trunc('month', p_issued_at AT TIME ZONE a.time_zone)
          + make_interval(months => a.expiry_months + 1)) AT TIME ZONE a.time_zone
  END
  FROM assets a WHERE a.code = p_asset
$$;

-- Idempotency: NULL if the key is new, else the remembered response (or a KEY_REUSED refusal).
CREATE FUNCTION ledger_replay(p_scope text, p_key text, p_operation text, p_hash text)
RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
DECLARE r idempotency_records%ROWTYPE;
BEGIN
  SELECT * INTO r FROM idempotency_records WHERE client_scope = p_scope AND idempotency_key = p_key;
  IF NOT FOUND THEN RETURN NULL; END IF;
  IF r.operation <> p_operation OR r.request_hash <> p_hash THEN
    RETURN ledger_user_error('IDEMPOTENCY_KEY_REUSED',
      'this idempotency key was used with a different request', 'idempotencyKey');
  END IF;
  RETURN r.response || jsonb_build_object('replayed', true);
END $$;

-- The remembered answer for a client's key, if any (SECURITY DEFINER: the records are private).
CREATE FUNCTION ledger_lookup_replay(p_scope text, p_key text, p_operation text, p_hash text)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT ledger_replay(p_scope, p_key, p_operation, p_hash)
$$;

CREATE FUNCTION ledger_remember(p_scope text, p_key text, p_operation text, p_hash text, p_response jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
  -- A concurrent first attempt with the same key makes this raise unique_violation; the whole
  -- call then rolls back and the caller retries, finding the winner's response.
  INSERT INTO idempotency_records (client_scope, idempotency_key, operation, request_hash, response)
    VALUES (p_scope, p_key, p_operation, p_hash, p_response);
  RETURN p_response || jsonb_build_object('replayed', false);
END $$;

CREATE FUNCTION ledger_account(p_kind text, p_asset text, p_member bigint, p_tenant bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_id bigint;
BEGIN
  -- Equality or IS NULL on every key column, so the lookup is one unique-index probe.
  LOOP
    IF p_member IS NOT NULL THEN
      SELECT id INTO v_id FROM accounts
        WHERE kind = p_kind AND asset = p_asset AND member_id = p_member AND tenant_id IS NULL;
    ELSIF p_tenant IS NOT NULL THEN
      SELECT id INTO v_id FROM accounts
        WHERE kind = p_kind AND asset = p_asset AND member_id IS NULL AND tenant_id = p_tenant;
    ELSE
      SELECT id INTO v_id FROM accounts
        WHERE kind = p_kind AND asset = p_asset AND member_id IS NULL AND tenant_id IS NULL;
    END IF;
    EXIT WHEN v_id IS NOT NULL;
    INSERT INTO accounts (kind, asset, member_id, tenant_id) VALUES (p_kind, p_asset, p_member, p_tenant)
      ON CONFLICT DO NOTHING RETURNING id INTO v_id;
    EXIT WHEN v_id IS NOT NULL;  -- else a concurrent insert won: read its row
  END LOOP;
  RETURN v_id;
END $$;

-- Posted points in unexpired lots, and points held by live holds. An expired hold simply stops
-- counting: no job has to release it for the balance to be right.
CREATE FUNCTION ledger_balance_json(p_member bigint, p_asset text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  WITH posted AS (
    SELECT coalesce(sum(remaining), 0) AS points FROM lots
    WHERE member_id = p_member AND asset = p_asset AND remaining > 0
      AND (expires_at IS NULL OR expires_at > now())
  ), held AS (
    SELECT coalesce(sum(points - captured_points), 0) AS points FROM holds
    WHERE member_id = p_member AND asset = p_asset AND status = 'active' AND expires_at > now()
  )
  -- A lot can expire under a live hold; the hold never counts for more than what is left, so
  -- available never goes below zero.
  SELECT jsonb_build_object('asset', p_asset, 'available', posted.points - least(held.points, posted.points),
    'held', least(held.points, posted.points))
  FROM posted, held
$$;

CREATE FUNCTION ledger_transaction_json(p_tx ledger_transactions)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('id', p_tx.id, 'kind', p_tx.kind, 'points', p_tx.points, 'asset', p_tx.asset,
    'effectiveAt', to_char(p_tx.effective_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'createdAt', to_char(p_tx.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'orderRef', p_tx.order_ref, 'reason', p_tx.reason, 'shortfall', p_tx.shortfall,
    'reversesId', p_tx.reverses_id, 'details', p_tx.details)
$$;

CREATE FUNCTION ledger_success(p_tx ledger_transactions, p_hold jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('transaction', ledger_transaction_json(p_tx),
    'balance', ledger_balance_json(p_tx.member_id, p_tx.asset), 'hold', p_hold, 'userErrors', '[]'::jsonb)
$$;

-- The member a merchant may act on: linked to it. For the operator (p_tenant NULL): any member.
CREATE FUNCTION ledger_member_for(p_tenant bigint, p_member_number text)
RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT m.id FROM members m
  WHERE m.member_number = p_member_number AND m.status = 'active'
    AND (p_tenant IS NULL OR EXISTS (SELECT 1 FROM member_links l WHERE l.member_id = m.id AND l.tenant_id = p_tenant))
$$;

-- Whether postings dated p_at may no longer land for this asset (its settlement period is closed).
-- Settlement (revision 0003) replaces this with the real rule.
CREATE FUNCTION ledger_period_closed(p_asset text, p_at timestamptz)
RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT false $$;

-- Reserve (p_points > 0) or give back (p_points < 0) issuance capacity of a tenant: false when
-- a prepaid tenant has not bought enough points. Settlement (revision 0003) replaces this.
CREATE FUNCTION ledger_issuance_reserve(p_tenant bigint, p_asset text, p_points bigint)
RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;

-- Called after points are credited to members (earns, awards, compensation), in the same
-- transaction. Member tiers (revision 0004) replace it to upgrade members who now qualify.
CREATE FUNCTION ledger_after_credit(p_members bigint[])
RETURNS void LANGUAGE plpgsql AS $$ BEGIN END $$;

-- Common checks for a merchant's posting: active tenant, visible member, known asset and store.
-- Returns a refusal, or NULL with the member id and store id written to the out parameters.
CREATE FUNCTION ledger_check_context(
  p_tenant bigint, p_member_number text, p_asset text, p_store_code text,
  OUT refusal jsonb, OUT member_id bigint, OUT store_id bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
  IF p_tenant IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = p_tenant AND t.status = 'active') THEN
    refusal := ledger_user_error('TENANT_SUSPENDED', 'this merchant is suspended'); RETURN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM assets a WHERE a.code = p_asset) THEN
    refusal := ledger_user_error('UNKNOWN_ASSET', format('no asset %s', p_asset), 'asset'); RETURN;
  END IF;
  member_id := ledger_member_for(p_tenant, p_member_number);
  IF member_id IS NULL THEN
    refusal := ledger_user_error('MEMBER_NOT_FOUND', 'no such member is enrolled at this merchant', 'memberNumber');
    RETURN;
  END IF;
  IF p_store_code IS NOT NULL THEN
    SELECT s.id INTO store_id FROM stores s WHERE s.tenant_id = p_tenant AND s.code = p_store_code;
    IF store_id IS NULL THEN
      refusal := ledger_user_error('UNKNOWN_STORE', format('no store %s at this merchant', p_store_code), 'storeCode');
    END IF;
  END IF;
END $$;

-- Credit a member: transaction, two entries, one lot. Used by earn, award, adjust (+), compensate.
CREATE FUNCTION ledger_credit(
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
  v_expiry timestamptz := ledger_asset_expiry(p_asset, p_effective_at);
BEGIN
  ASSERT p_points >= 0 AND p_alliance_points >= 0 AND p_points + p_alliance_points > 0, 'credits are positive';
  INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, amount, currency,
      order_ref, store_id, reason, details, effective_at)
    VALUES (p_kind, p_asset, p_member, p_tenant, p_scope, p_points + p_alliance_points, p_amount, p_currency,
      p_order_ref, p_store, p_reason, coalesce(p_details, '{}'::jsonb), p_effective_at)
    RETURNING * INTO v_tx;
  IF p_points > 0 THEN
    v_source := CASE WHEN p_issuer IS NULL THEN ledger_account('alliance_adjustment', p_asset, NULL, NULL)
                     ELSE ledger_account('tenant_issuance', p_asset, NULL, p_issuer) END;
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
      VALUES (v_tx.id, v_source, p_member, p_asset, -p_points);
    INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
      VALUES (p_member, p_asset, p_issuer, v_tx.id, p_points, p_points, p_effective_at, v_expiry);
  END IF;
  IF p_alliance_points > 0 THEN
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
      VALUES (v_tx.id, ledger_account('alliance_adjustment', p_asset, NULL, NULL), p_member, p_asset,
        -p_alliance_points);
    INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
      VALUES (p_member, p_asset, NULL, v_tx.id, p_alliance_points, p_alliance_points, p_effective_at, v_expiry);
  END IF;
  INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
    VALUES (v_tx.id, ledger_account('member_wallet', p_asset, p_member, NULL), p_member, p_asset,
      p_points + p_alliance_points);
  RETURN v_tx;
END $$;

-- Debit a member: consume unexpired lots soonest-expiring first, then oldest, recording each
-- consumption. The caller holds the wallet lock and has checked the available balance.
CREATE FUNCTION ledger_debit(
  p_kind text, p_member bigint, p_asset text, p_points bigint, p_tenant bigint, p_scope text,
  p_order_ref text, p_store bigint, p_reason text, p_hold bigint, p_details jsonb)
RETURNS ledger_transactions LANGUAGE plpgsql AS $$
DECLARE
  v_tx ledger_transactions;
  v_left bigint := p_points;
  v_take bigint;
  v_lot record;
  v_sink bigint;
  v_seq int := 0;
BEGIN
  ASSERT p_points > 0, 'debits are positive';
  INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, order_ref, store_id,
      reason, hold_id, details, effective_at)
    VALUES (p_kind, p_asset, p_member, p_tenant, p_scope, p_points, p_order_ref, p_store, p_reason, p_hold,
      coalesce(p_details, '{}'::jsonb), now())
    RETURNING * INTO v_tx;
  FOR v_lot IN
    SELECT id, remaining FROM lots
    WHERE member_id = p_member AND asset = p_asset AND remaining > 0 AND (expires_at IS NULL OR expires_at > now())
    ORDER BY expires_at ASC NULLS LAST, issued_at, id
    FOR UPDATE
  LOOP
    EXIT WHEN v_left = 0;
    v_take := least(v_left, v_lot.remaining);
    v_seq := v_seq + 1;
    UPDATE lots SET remaining = remaining - v_take WHERE id = v_lot.id;
    INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points, seq)
      VALUES (v_lot.id, v_tx.id, p_member, 'consume', -v_take, v_seq);
    v_left := v_left - v_take;
  END LOOP;
  IF v_left <> 0 THEN
    RAISE EXCEPTION 'ledger_debit: % points short after the balance check', v_left;
  END IF;
  v_sink := CASE WHEN p_tenant IS NULL THEN ledger_account('alliance_adjustment', p_asset, NULL, NULL)
                 ELSE ledger_account('tenant_redemption', p_asset, NULL, p_tenant) END;
  INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount) VALUES
    (v_tx.id, ledger_account('member_wallet', p_asset, p_member, NULL), p_member, p_asset, -p_points),
    (v_tx.id, v_sink, p_member, p_asset, p_points);
  RETURN v_tx;
END $$;

-- Serialise every balance-reducing operation on one member wallet.
CREATE FUNCTION ledger_lock_wallet(p_member bigint, p_asset text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_wallet bigint := ledger_account('member_wallet', p_asset, p_member, NULL);
BEGIN
  PERFORM 1 FROM accounts WHERE id = v_wallet FOR UPDATE;
END $$;

CREATE FUNCTION ledger_available(p_member bigint, p_asset text)
RETURNS bigint LANGUAGE sql STABLE AS $$
  SELECT (ledger_balance_json(p_member, p_asset) ->> 'available')::bigint
$$;

---------------------------------------------------------------------------------------------------
-- Public operations
---------------------------------------------------------------------------------------------------

-- earnPoints / awardPoints / compensatePoints (merchant-funded): points from the merchant's issuance.
CREATE FUNCTION ledger_earn(
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
  FOR v_other IN SELECT key AS asset, value::bigint AS points FROM jsonb_each_text(v_other_assets) ORDER BY key LOOP
    CONTINUE WHEN v_other.points <= 0 OR NOT EXISTS (SELECT 1 FROM assets WHERE code = v_other.asset);
    IF p_tenant IS NULL OR ledger_issuance_reserve(p_tenant, v_other.asset, v_other.points) THEN
      PERFORM ledger_credit('award', v_ctx.member_id, v_other.asset, v_other.points, p_tenant, p_tenant, p_scope,
        NULL, NULL, NULL, v_ctx.store_id, 'co-earned with a purchase', jsonb_build_object('coEarnOf', v_tx.id), v_at);
    END IF;
  END LOOP;
  PERFORM ledger_after_credit(ARRAY[v_ctx.member_id]);
  RETURN ledger_remember(p_scope, p_key, p_kind, p_hash, ledger_success(v_tx));
END $$;

-- redeemPoints: fails with INSUFFICIENT_POINTS, writing nothing but the remembered refusal.
CREATE FUNCTION ledger_redeem(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_member_number text, p_asset text, p_points bigint,
  p_order_ref text, p_store_code text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'redeem', p_hash);
  v_ctx record;
  v_available bigint;
  v_tx ledger_transactions;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  v_ctx := ledger_check_context(p_tenant, p_member_number, p_asset, p_store_code);
  IF v_ctx.refusal IS NOT NULL THEN
    RETURN ledger_remember(p_scope, p_key, 'redeem', p_hash, v_ctx.refusal);
  END IF;
  PERFORM ledger_lock_wallet(v_ctx.member_id, p_asset);
  v_available := ledger_available(v_ctx.member_id, p_asset);
  IF v_available < p_points THEN
    RETURN ledger_remember(p_scope, p_key, 'redeem', p_hash, ledger_user_error('INSUFFICIENT_POINTS',
      format('%s points available, %s requested', v_available, p_points), 'points'));
  END IF;
  v_tx := ledger_debit('redeem', v_ctx.member_id, p_asset, p_points, p_tenant, p_scope, p_order_ref,
    v_ctx.store_id, NULL, NULL, NULL);
  RETURN ledger_remember(p_scope, p_key, 'redeem', p_hash, ledger_success(v_tx));
END $$;

CREATE FUNCTION ledger_hold_json(p_hold holds)
RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('id', p_hold.id, 'points', p_hold.points, 'capturedPoints', p_hold.captured_points,
    'status', CASE WHEN p_hold.status = 'active' AND p_hold.expires_at <= now() THEN 'expired' ELSE p_hold.status END,
    'asset', p_hold.asset,
    'expiresAt', to_char(p_hold.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
$$;

CREATE FUNCTION ledger_hold(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_member_number text, p_asset text, p_points bigint,
  p_order_ref text, p_store_code text, p_timeout_seconds int)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'hold', p_hash);
  v_ctx record;
  v_available bigint;
  v_hold holds;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  v_ctx := ledger_check_context(p_tenant, p_member_number, p_asset, p_store_code);
  IF v_ctx.refusal IS NOT NULL THEN
    RETURN ledger_remember(p_scope, p_key, 'hold', p_hash, v_ctx.refusal);
  END IF;
  PERFORM ledger_lock_wallet(v_ctx.member_id, p_asset);
  v_available := ledger_available(v_ctx.member_id, p_asset);
  IF v_available < p_points THEN
    RETURN ledger_remember(p_scope, p_key, 'hold', p_hash, ledger_user_error('INSUFFICIENT_POINTS',
      format('%s points available, %s requested', v_available, p_points), 'points'));
  END IF;
  INSERT INTO holds (member_id, asset, tenant_id, points, order_ref, store_id, expires_at)
    VALUES (v_ctx.member_id, p_asset, p_tenant, p_points, p_order_ref, v_ctx.store_id,
      now() + make_interval(secs => p_timeout_seconds))
    RETURNING * INTO v_hold;
  RETURN ledger_remember(p_scope, p_key, 'hold', p_hash, jsonb_build_object('transaction', NULL,
    'balance', ledger_balance_json(v_hold.member_id, p_asset), 'hold', ledger_hold_json(v_hold),
    'userErrors', '[]'::jsonb));
END $$;

-- captureHold (p_release false) and releaseHold (p_release true). A partial capture closes the
-- hold: the uncaptured rest returns to the member at once.
CREATE FUNCTION ledger_close_hold(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_hold_id bigint, p_points bigint, p_release boolean)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_operation text := CASE WHEN p_release THEN 'release' ELSE 'capture' END;
  v_replay jsonb := ledger_replay(p_scope, p_key, v_operation, p_hash);
  v_hold holds;
  v_capture bigint;
  v_posted bigint;
  v_other_holds bigint;
  v_tx ledger_transactions;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold_id AND (p_tenant IS NULL OR h.tenant_id = p_tenant);
  IF NOT FOUND THEN
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash,
      ledger_user_error('HOLD_NOT_FOUND', 'no such hold at this merchant', 'holdId'));
  END IF;
  PERFORM ledger_lock_wallet(v_hold.member_id, v_hold.asset);
  SELECT * INTO v_hold FROM holds h WHERE h.id = p_hold_id FOR UPDATE;
  IF v_hold.status <> 'active' THEN
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash, ledger_user_error('HOLD_NOT_ACTIVE',
      format('the hold is already %s', v_hold.status), 'holdId'));
  END IF;
  IF v_hold.expires_at <= now() THEN
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash,
      ledger_user_error('HOLD_EXPIRED', 'the hold expired; its points are available again', 'holdId'));
  END IF;
  IF p_release THEN
    UPDATE holds SET status = 'released', closed_at = now() WHERE id = v_hold.id RETURNING * INTO v_hold;
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash, jsonb_build_object('transaction', NULL,
      'balance', ledger_balance_json(v_hold.member_id, v_hold.asset), 'hold', ledger_hold_json(v_hold),
      'userErrors', '[]'::jsonb));
  END IF;
  v_capture := coalesce(p_points, v_hold.points);
  IF v_capture > v_hold.points THEN
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash, ledger_user_error('CAPTURE_EXCEEDS_HOLD',
      format('the hold is for %s points', v_hold.points), 'points'));
  END IF;
  -- The held points may have expired meanwhile: capture only what is really there.
  SELECT coalesce(sum(l.remaining), 0) INTO v_posted FROM lots l
    WHERE l.member_id = v_hold.member_id AND l.asset = v_hold.asset AND l.remaining > 0
      AND (l.expires_at IS NULL OR l.expires_at > now());
  SELECT coalesce(sum(h.points - h.captured_points), 0) INTO v_other_holds FROM holds h
    WHERE h.member_id = v_hold.member_id AND h.asset = v_hold.asset AND h.status = 'active'
      AND h.expires_at > now() AND h.id <> v_hold.id;
  IF v_posted - v_other_holds < v_capture THEN
    RETURN ledger_remember(p_scope, p_key, v_operation, p_hash, ledger_user_error('INSUFFICIENT_POINTS',
      'some held points expired during the hold; capture fewer or release it', 'points'));
  END IF;
  -- Close the hold first so the captured points are no longer counted as held.
  UPDATE holds SET status = 'captured', captured_points = v_capture, closed_at = now()
    WHERE id = v_hold.id RETURNING * INTO v_hold;
  v_tx := ledger_debit('capture', v_hold.member_id, v_hold.asset, v_capture, v_hold.tenant_id, p_scope,
    v_hold.order_ref, v_hold.store_id, NULL, v_hold.id, NULL);
  RETURN ledger_remember(p_scope, p_key, v_operation, p_hash, ledger_success(v_tx, ledger_hold_json(v_hold)));
END $$;

-- reverseTransaction: of an earn/award/compensate (claw back from its lot) or of a redeem/capture
-- (restore into the lots it consumed; an expired lot's share comes back as a fresh lot).
CREATE FUNCTION ledger_reverse(
  p_scope text, p_key text, p_hash text, p_tenant bigint, p_transaction_id bigint, p_points bigint,
  p_reason text, p_force boolean)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'reverse', p_hash);
  v_orig ledger_transactions;
  v_reversed bigint;
  v_points bigint;
  v_tx ledger_transactions;
  v_lot lots;
  v_clawed bigint;
  v_left bigint;
  v_take bigint;
  v_row record;
  v_wallet bigint;
  v_other bigint;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  SELECT * INTO v_orig FROM ledger_transactions t
    WHERE t.id = p_transaction_id AND (p_tenant IS NULL OR t.tenant_id = p_tenant);
  IF NOT FOUND THEN
    RETURN ledger_remember(p_scope, p_key, 'reverse', p_hash,
      ledger_user_error('TRANSACTION_NOT_FOUND', 'no such transaction of this merchant', 'transactionId'));
  END IF;
  IF v_orig.kind NOT IN ('earn', 'award', 'compensate', 'redeem', 'capture') THEN
    RETURN ledger_remember(p_scope, p_key, 'reverse', p_hash, ledger_user_error('NOT_REVERSIBLE',
      format('a %s transaction cannot be reversed', v_orig.kind), 'transactionId'));
  END IF;
  PERFORM ledger_lock_wallet(v_orig.member_id, v_orig.asset);
  SELECT coalesce(sum(t.points + t.shortfall), 0) INTO v_reversed FROM ledger_transactions t
    WHERE t.reverses_id = v_orig.id;
  v_points := coalesce(p_points, v_orig.points - v_reversed);
  IF v_points <= 0 OR v_reversed + v_points > v_orig.points THEN
    RETURN ledger_remember(p_scope, p_key, 'reverse', p_hash, ledger_user_error('REVERSAL_EXCEEDS_ORIGINAL',
      format('%s of %s points are already reversed', v_reversed, v_orig.points), 'points'));
  END IF;
  v_wallet := ledger_account('member_wallet', v_orig.asset, v_orig.member_id, NULL);

  IF v_orig.kind IN ('earn', 'award', 'compensate') THEN
    SELECT * INTO STRICT v_lot FROM lots WHERE transaction_id = v_orig.id FOR UPDATE;
    -- Only points still unspent in that lot and not reserved by a hold can be taken back.
    v_clawed := greatest(0, least(v_points, v_lot.remaining, ledger_available(v_orig.member_id, v_orig.asset)));
    IF v_clawed < v_points AND NOT p_force THEN
      RETURN ledger_remember(p_scope, p_key, 'reverse', p_hash, ledger_user_error('POINTS_ALREADY_SPENT',
        format('only %s of these points are unspent and unheld', v_clawed), 'points'));
    END IF;
    INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, reason,
        reverses_id, shortfall, effective_at)
      VALUES ('reverse', v_orig.asset, v_orig.member_id, v_orig.tenant_id, p_scope, v_clawed, p_reason,
        v_orig.id, v_points - v_clawed, now())
      RETURNING * INTO v_tx;
    IF v_clawed > 0 THEN
      IF v_lot.issuer_tenant_id IS NOT NULL THEN
        PERFORM ledger_issuance_reserve(v_lot.issuer_tenant_id, v_orig.asset, -v_clawed);
      END IF;
      UPDATE lots SET remaining = remaining - v_clawed WHERE id = v_lot.id;
      INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points)
        VALUES (v_lot.id, v_tx.id, v_orig.member_id, 'clawback', -v_clawed);
      v_other := CASE WHEN v_lot.issuer_tenant_id IS NULL
                      THEN ledger_account('alliance_adjustment', v_orig.asset, NULL, NULL)
                      ELSE ledger_account('tenant_issuance', v_orig.asset, NULL, v_lot.issuer_tenant_id) END;
      INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount) VALUES
        (v_tx.id, v_wallet, v_orig.member_id, v_orig.asset, -v_clawed),
        (v_tx.id, v_other, v_orig.member_id, v_orig.asset, v_clawed);
    END IF;
  ELSE
    INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, reason,
        reverses_id, effective_at)
      VALUES ('reverse', v_orig.asset, v_orig.member_id, v_orig.tenant_id, p_scope, v_points, p_reason,
        v_orig.id, now())
      RETURNING * INTO v_tx;
    v_left := v_points;
    -- Give back the most recently consumed points first (the reverse of consumption order).
    FOR v_row IN
      SELECT c.lot_id, -c.points - coalesce((
          SELECT sum(r.points) FROM lot_movements r JOIN ledger_transactions rt ON rt.id = r.transaction_id
          WHERE rt.reverses_id = v_orig.id AND r.kind = 'restore'
            AND (r.lot_id = c.lot_id OR r.lot_id IN (SELECT id FROM lots WHERE restored_from_lot_id = c.lot_id
                                                       AND transaction_id = rt.id))), 0) AS restorable
      FROM lot_movements c
      WHERE c.transaction_id = v_orig.id AND c.kind = 'consume'
      ORDER BY c.seq DESC
    LOOP
      EXIT WHEN v_left = 0;
      CONTINUE WHEN v_row.restorable <= 0;
      v_take := least(v_left, v_row.restorable);
      SELECT * INTO STRICT v_lot FROM lots WHERE id = v_row.lot_id FOR UPDATE;
      IF v_lot.expires_at IS NOT NULL AND v_lot.expires_at <= now() THEN
        -- The member must not lose points to the merchant's refund: fresh validity, same issuer.
        INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at,
            expires_at, restored_from_lot_id)
          VALUES (v_lot.member_id, v_lot.asset, v_lot.issuer_tenant_id, v_tx.id, v_take, 0, now(),
            ledger_asset_expiry(v_lot.asset, now()), v_lot.id)
          RETURNING * INTO v_lot;
      END IF;
      UPDATE lots SET remaining = remaining + v_take WHERE id = v_lot.id;
      INSERT INTO lot_movements (lot_id, transaction_id, member_id, kind, points)
        VALUES (v_lot.id, v_tx.id, v_orig.member_id, 'restore', v_take);
      v_left := v_left - v_take;
    END LOOP;
    IF v_left <> 0 THEN
      RAISE EXCEPTION 'ledger_reverse: % points of redemption % could not be restored', v_left, v_orig.id;
    END IF;
    v_other := CASE WHEN v_orig.tenant_id IS NULL THEN ledger_account('alliance_adjustment', v_orig.asset, NULL, NULL)
                    ELSE ledger_account('tenant_redemption', v_orig.asset, NULL, v_orig.tenant_id) END;
    INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount) VALUES
      (v_tx.id, v_other, v_orig.member_id, v_orig.asset, -v_points),
      (v_tx.id, v_wallet, v_orig.member_id, v_orig.asset, v_points);
  END IF;
  RETURN ledger_remember(p_scope, p_key, 'reverse', p_hash, ledger_success(v_tx));
END $$;

-- adjustPoints (operator): a reason-coded correction from or to the alliance adjustment account.
CREATE FUNCTION ledger_adjust(
  p_scope text, p_key text, p_hash text, p_member_number text, p_asset text, p_points bigint, p_reason text)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_replay jsonb := ledger_replay(p_scope, p_key, 'adjust', p_hash);
  v_ctx record;
  v_available bigint;
  v_tx ledger_transactions;
BEGIN
  IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
  v_ctx := ledger_check_context(NULL, p_member_number, p_asset, NULL);
  IF v_ctx.refusal IS NOT NULL THEN
    RETURN ledger_remember(p_scope, p_key, 'adjust', p_hash, v_ctx.refusal);
  END IF;
  IF p_points > 0 THEN
    v_tx := ledger_credit('adjust', v_ctx.member_id, p_asset, p_points, NULL, NULL, p_scope, NULL, NULL, NULL,
      NULL, p_reason, NULL, now());
  ELSE
    PERFORM ledger_lock_wallet(v_ctx.member_id, p_asset);
    v_available := ledger_available(v_ctx.member_id, p_asset);
    IF v_available < -p_points THEN
      RETURN ledger_remember(p_scope, p_key, 'adjust', p_hash, ledger_user_error('INSUFFICIENT_POINTS',
        format('%s points available, %s requested', v_available, -p_points), 'points'));
    END IF;
    v_tx := ledger_debit('adjust', v_ctx.member_id, p_asset, -p_points, NULL, p_scope, NULL, NULL, p_reason,
      NULL, jsonb_build_object('direction', 'debit'));
  END IF;
  RETURN ledger_remember(p_scope, p_key, 'adjust', p_hash, ledger_success(v_tx));
END $$;

---------------------------------------------------------------------------------------------------
-- Verification: every invariant of the books, one row per failed check (no rows: all hold).
---------------------------------------------------------------------------------------------------
CREATE FUNCTION ledger_verify()
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
  )
  SELECT check_name, failures, example FROM checks WHERE failures > 0
$$;

---------------------------------------------------------------------------------------------------
-- Reads that need the whole wallet (lots of every issuer) but must respect who is asking.
---------------------------------------------------------------------------------------------------
CREATE FUNCTION ledger_can_see_member(p_member bigint)
RETURNS boolean LANGUAGE sql STABLE AS $$
  SELECT CASE alliance_role()
    WHEN 'operator' THEN true
    WHEN 'member' THEN p_member = alliance_member_id()
    WHEN 'merchant' THEN EXISTS (SELECT 1 FROM member_links l
                                 WHERE l.member_id = p_member AND l.tenant_id = alliance_tenant_id())
    ELSE false END
$$;

-- Balance of one asset now (available, held), or posted as of a past instant from the entries.
CREATE FUNCTION ledger_member_balance(p_member bigint, p_asset text, p_as_of timestamptz)
RETURNS jsonb LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT CASE
    WHEN NOT ledger_can_see_member(p_member) THEN NULL
    WHEN p_as_of IS NULL THEN ledger_balance_json(p_member, p_asset)
    ELSE jsonb_build_object('asset', p_asset, 'held', 0, 'available', (
      SELECT coalesce(sum(e.amount), 0) FROM ledger_entries e
      JOIN ledger_transactions t ON t.id = e.transaction_id
      JOIN accounts a ON a.id = e.account_id
      WHERE a.kind = 'member_wallet' AND a.member_id = p_member AND a.asset = p_asset
        AND e.member_id = p_member AND t.effective_at <= p_as_of))
  END
$$;

-- Every asset the member holds or has held, with points expiring within p_days grouped by day.
CREATE FUNCTION ledger_member_balances(p_member bigint, p_days int)
RETURNS TABLE (asset text, available bigint, held bigint, expiring jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT a.asset, (b ->> 'available')::bigint, (b ->> 'held')::bigint,
    coalesce((SELECT jsonb_agg(jsonb_build_object('points', x.points,
                'expiresAt', to_char(x.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
                ORDER BY x.expires_at)
              FROM (SELECT l.expires_at, sum(l.remaining) AS points FROM lots l
                    WHERE l.member_id = p_member AND l.asset = a.asset AND l.remaining > 0
                      AND l.expires_at > now() AND l.expires_at <= now() + make_interval(days => p_days)
                    GROUP BY l.expires_at) x), '[]'::jsonb)
  FROM (SELECT DISTINCT ac.asset FROM accounts ac WHERE ac.kind = 'member_wallet' AND ac.member_id = p_member) a,
       LATERAL ledger_balance_json(p_member, a.asset) b
  WHERE ledger_can_see_member(p_member)
  ORDER BY a.asset
$$;

---------------------------------------------------------------------------------------------------
-- earnPointsBatch: up to 1000 purchases in one set-based call (POS back-office imports).
-- Items arrive pre-validated for shape; here each is checked against the books and refused on
-- its own (unknown member or store, duplicate order, no points) while the rest are posted.
---------------------------------------------------------------------------------------------------
CREATE FUNCTION ledger_earn_batch(p_scope text, p_key text, p_hash text, p_tenant bigint, p_items jsonb)
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

  -- One pass: resolve member, store and asset by index lookups and decide each item's refusal.
  CREATE TEMP TABLE earn_batch_items ON COMMIT DROP AS
    SELECT i.idx, i.member_number, i.amount, i.currency, i.order_ref, i.asset,
      coalesce(i.details, '{}'::jsonb) || jsonb_build_object('breakdown', coalesce(i.breakdown, '[]'::jsonb))
        AS details,
      coalesce(i.effective_at, now()) AS effective_at,
      l.member_id, s.id AS store_id, i.points, coalesce(i.alliance_points, 0) AS alliance_points,
      CASE
        WHEN a.code IS NULL THEN 'UNKNOWN_ASSET'
        WHEN l.member_id IS NULL THEN 'MEMBER_NOT_FOUND'
        WHEN i.store_code IS NOT NULL AND s.id IS NULL THEN 'UNKNOWN_STORE'
        WHEN i.points + coalesce(i.alliance_points, 0) <= 0 THEN 'NO_POINTS_EARNED'
        WHEN ledger_period_closed(i.asset, coalesce(i.effective_at, now())) THEN 'PERIOD_CLOSED'
      END AS error_code,
      NULL::bigint AS wallet_id, NULL::bigint AS transaction_id
    FROM jsonb_to_recordset(p_items) AS i(idx int, member_number text, amount numeric, currency text,
      order_ref text, store_code text, asset text, details jsonb, effective_at timestamptz, points bigint,
      alliance_points bigint, breakdown jsonb)
    LEFT JOIN members m ON m.member_number = i.member_number AND m.status = 'active'
    LEFT JOIN member_links l ON l.member_id = m.id AND l.tenant_id = p_tenant
    LEFT JOIN stores s ON s.tenant_id = p_tenant AND s.code = i.store_code
    LEFT JOIN assets a ON a.code = i.asset;
  ANALYZE earn_batch_items;

  -- Prepaid merchants: reserve issuance per asset; an asset over the prepaid balance fails alone.
  FOR v_total IN SELECT b.asset, sum(b.points)::bigint AS points FROM earn_batch_items b
                 WHERE b.error_code IS NULL GROUP BY b.asset ORDER BY b.asset LOOP
    IF NOT ledger_issuance_reserve(p_tenant, v_total.asset, v_total.points) THEN
      UPDATE earn_batch_items SET error_code = 'PREPAID_BALANCE_EXHAUSTED'
        WHERE error_code IS NULL AND asset = v_total.asset;
    END IF;
  END LOOP;

  -- Every wallet the batch credits, created in one statement, then resolved by index.
  INSERT INTO accounts (kind, asset, member_id)
    SELECT DISTINCT 'member_wallet', b.asset, b.member_id FROM earn_batch_items b WHERE b.error_code IS NULL
    ON CONFLICT DO NOTHING;
  UPDATE earn_batch_items b SET wallet_id = a.id FROM accounts a
    WHERE b.error_code IS NULL AND a.kind = 'member_wallet' AND a.asset = b.asset AND a.member_id = b.member_id
      AND a.tenant_id IS NULL;

  WITH posted AS (
    INSERT INTO ledger_transactions (kind, asset, member_id, tenant_id, client_scope, points, amount, currency,
        order_ref, store_id, details, effective_at)
      SELECT 'earn', b.asset, b.member_id, p_tenant, p_scope, b.points + b.alliance_points, b.amount, b.currency,
        b.order_ref,
        b.store_id, b.details || jsonb_build_object('batchIndex', b.idx), b.effective_at
      FROM earn_batch_items b WHERE b.error_code IS NULL ORDER BY b.idx
      -- An order already earned (earlier, concurrently, or twice in this batch) is skipped here.
      ON CONFLICT (tenant_id, member_id, order_ref) WHERE kind = 'earn' DO NOTHING
      RETURNING id, (details ->> 'batchIndex')::int AS idx
  )
  UPDATE earn_batch_items b SET transaction_id = posted.id FROM posted WHERE posted.idx = b.idx;
  UPDATE earn_batch_items SET error_code = 'DUPLICATE_ORDER' WHERE error_code IS NULL AND transaction_id IS NULL;
  -- Give back prepaid capacity reserved for duplicates.
  PERFORM ledger_issuance_reserve(p_tenant, d.asset, -d.points)
    FROM (SELECT asset, sum(points)::bigint AS points FROM earn_batch_items WHERE error_code = 'DUPLICATE_ORDER'
          GROUP BY asset) d;

  WITH issuance AS MATERIALIZED (
    SELECT d.asset, ledger_account('tenant_issuance', d.asset, NULL, p_tenant) AS account_id
    FROM (SELECT DISTINCT asset FROM earn_batch_items WHERE transaction_id IS NOT NULL) d
  )
  INSERT INTO ledger_entries (transaction_id, account_id, member_id, asset, amount)
    SELECT b.transaction_id, i.account_id, b.member_id, b.asset, -b.points
      FROM earn_batch_items b JOIN issuance i ON i.asset = b.asset WHERE b.transaction_id IS NOT NULL AND b.points > 0
    UNION ALL
    SELECT b.transaction_id, ledger_account('alliance_adjustment', b.asset, NULL, NULL), b.member_id, b.asset,
      -b.alliance_points
      FROM earn_batch_items b WHERE b.transaction_id IS NOT NULL AND b.alliance_points > 0
    UNION ALL
    SELECT b.transaction_id, b.wallet_id, b.member_id, b.asset, b.points + b.alliance_points
      FROM earn_batch_items b WHERE b.transaction_id IS NOT NULL;
  INSERT INTO lots (member_id, asset, issuer_tenant_id, transaction_id, amount, remaining, issued_at, expires_at)
    SELECT b.member_id, b.asset, p_tenant, b.transaction_id, b.points, b.points, b.effective_at,
      ledger_asset_expiry(b.asset, b.effective_at)
    FROM earn_batch_items b WHERE b.transaction_id IS NOT NULL AND b.points > 0
    UNION ALL
    SELECT b.member_id, b.asset, NULL, b.transaction_id, b.alliance_points, b.alliance_points, b.effective_at,
      ledger_asset_expiry(b.asset, b.effective_at)
    FROM earn_batch_items b WHERE b.transaction_id IS NOT NULL AND b.alliance_points > 0;

  PERFORM ledger_after_credit(ARRAY(SELECT DISTINCT member_id FROM earn_batch_items
                                    WHERE transaction_id IS NOT NULL ORDER BY member_id));
  SELECT jsonb_agg(jsonb_build_object(
      'index', b.idx,
      'transaction', CASE WHEN b.transaction_id IS NULL THEN NULL ELSE ledger_transaction_json(t) END,
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
    FROM earn_batch_items b LEFT JOIN ledger_transactions t ON t.id = b.transaction_id;
  DROP TABLE earn_batch_items;
  RETURN ledger_remember(p_scope, p_key, 'earn_batch', p_hash, jsonb_build_object(
    'results', coalesce(v_results, '[]'::jsonb), 'userErrors', '[]'::jsonb));
END $$;
