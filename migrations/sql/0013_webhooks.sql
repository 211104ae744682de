-- Webhooks and live balances (revision 0010).
--
-- The outbox: triggers write an event (and one delivery per subscribed endpoint) in the very
-- transaction of the ledger or settlement change, so no event is lost and none exists for a
-- change that rolled back. Tenants without an active endpoint cost one
-- index probe per posting statement. `alliance webhooks run` claims due deliveries with
-- FOR UPDATE SKIP LOCKED and a lease, so several workers share the work and a crashed
-- worker's claim is taken over once its lease runs out (at-least-once, same event id).
--
-- Live balances: the same ledger trigger (and one on holds) sends NOTIFY balance_changed with
-- "member_id:asset" for members someone watches; PostgreSQL delivers it at commit, to every
-- gateway replica listening. Only for watched members: a transaction that notifies takes a
-- database-wide lock from its pre-commit until the end of its commit (WAL flush, synchronous
-- replica), so notifying on every posting would serialise the ledger's commits.

CREATE TABLE webhook_endpoints (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  url text NOT NULL CHECK (length(url) BETWEEN 10 AND 2000),
  description text CHECK (description IS NULL OR length(description) BETWEEN 1 AND 200),
  event_types text[] NOT NULL CHECK (cardinality(event_types) >= 1 AND event_types <@ ARRAY[
    'points.earned', 'points.redeemed', 'points.reversed', 'points.expiring', 'hold.expired',
    'settlement.ready', 'settlement.disputed']::text[]),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  -- The signing secret must be readable to sign; the application role has no SELECT on it
  -- (column privileges): only the worker's claim function reads it.
  secret text NOT NULL CHECK (length(secret) >= 32),
  -- After a rotation the previous secret also signs until it lapses, so receivers can switch.
  previous_secret text,
  previous_secret_expires_at timestamptz,
  secret_rotated_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);
-- The triggers' check: "does this tenant have an active endpoint?" is one probe of this index.
CREATE INDEX webhook_endpoints_active ON webhook_endpoints (tenant_id) WHERE status = 'active';

CREATE TABLE webhook_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  event_type text NOT NULL,
  data jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_events_created ON webhook_events (created_at);

-- Written with the ledger change it announces, so kept lean: no foreign keys to the endpoint
-- or the tenant (a KEY SHARE lock on a busy merchant's endpoint row at every earn; endpoints
-- and tenants are never deleted, and the event's tenant is checked on the event).
CREATE TABLE webhook_deliveries (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id uuid NOT NULL REFERENCES webhook_events(id) ON DELETE CASCADE,
  endpoint_id bigint NOT NULL,
  tenant_id bigint NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
  -- Attempts started; the number is also the fencing token of the current claim.
  attempts int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- When the delivery is next due: the retry time, or while claimed, the end of the lease.
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  last_attempt_at timestamptz,
  last_status_code int,
  last_error text CHECK (last_error IS NULL OR length(last_error) <= 500),
  delivered_at timestamptz,
  dead_at timestamptz,
  replays int NOT NULL DEFAULT 0,
  replayed_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (event_id, endpoint_id),
  CHECK ((status = 'delivered') = (delivered_at IS NOT NULL)),
  CHECK ((status = 'dead') = (dead_at IS NOT NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, id);

-- What the sweeps already announced (points.expiring per lot, hold.expired per hold): exactly once.
CREATE TABLE webhook_lot_notices (
  lot_id bigint PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
-- Members whose balance someone watches live, per gateway process (listener) with a lease that
-- the process renews; rows of a process that died lapse by themselves.
CREATE TABLE balance_watches (
  member_id bigint NOT NULL,
  listener uuid NOT NULL,
  expires_at timestamptz NOT NULL,
  PRIMARY KEY (member_id, listener)
);
CREATE INDEX webhook_lot_notices_expiry ON webhook_lot_notices (expires_at);
CREATE TABLE webhook_hold_notices (
  hold_id bigint PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX webhook_hold_notices_expiry ON webhook_hold_notices (expires_at);
-- Holds lapse by time while their status stays 'active': the hold sweep finds them here.
CREATE INDEX holds_active_expiry ON holds (expires_at) WHERE status = 'active';

---------------------------------------------------------------------------------------------------
-- Emitting events
---------------------------------------------------------------------------------------------------

-- The API's global ID (base64url of "Type:pk", unpadded), so payloads name objects as GraphQL does.
CREATE FUNCTION webhook_global_id(p_type text, p_id bigint) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT rtrim(translate(encode(convert_to(p_type || ':' || p_id, 'UTF8'), 'base64'), E'+/\n', '-_'), '=')
$$;

CREATE FUNCTION webhook_instant(p_at timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- One event for one tenant, with a delivery per active endpoint subscribed to its type; nothing
-- (NULL) when the tenant has none.
CREATE FUNCTION webhook_emit(p_tenant bigint, p_type text, p_data jsonb) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE v_id uuid;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM webhook_endpoints e
                 WHERE e.tenant_id = p_tenant AND e.status = 'active' AND p_type = ANY (e.event_types)) THEN
    RETURN NULL;
  END IF;
  INSERT INTO webhook_events (tenant_id, event_type, data) VALUES (p_tenant, p_type, p_data) RETURNING id INTO v_id;
  INSERT INTO webhook_deliveries (event_id, endpoint_id, tenant_id)
    SELECT v_id, e.id, p_tenant FROM webhook_endpoints e
    WHERE e.tenant_id = p_tenant AND e.status = 'active' AND p_type = ANY (e.event_types);
  RETURN v_id;
END $$;

-- After every posting statement (one row for an earn, up to 1000 for a batch): notify live
-- balances, and write points.earned / points.redeemed / points.reversed for the merchant the
-- transaction belongs to (the earning, redeeming, or reversing merchant), if it subscribes.
CREATE FUNCTION webhook_after_ledger_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM pg_notify('balance_changed', p.member_id || ':' || p.asset)
    FROM (SELECT DISTINCT t.member_id, t.asset FROM posted t) p
    WHERE EXISTS (SELECT 1 FROM balance_watches w WHERE w.member_id = p.member_id AND w.expires_at > now());
  -- The common case, checked with a plain query: nobody to tell (the statement below costs
  -- several times more to start than this probe, even when it writes nothing).
  IF NOT EXISTS (SELECT 1 FROM posted t JOIN webhook_endpoints e ON e.tenant_id = t.tenant_id AND e.status = 'active')
  THEN
    RETURN NULL;
  END IF;
  WITH subscribed AS MATERIALIZED (
    SELECT t.*, x.event_type
    FROM posted t
    CROSS JOIN LATERAL (SELECT CASE
      WHEN t.kind IN ('earn', 'award', 'compensate') THEN 'points.earned'
      WHEN t.kind IN ('redeem', 'capture') THEN 'points.redeemed'
      WHEN t.kind = 'reverse' THEN 'points.reversed' END AS event_type) x
    WHERE t.tenant_id IS NOT NULL AND x.event_type IS NOT NULL
      AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = t.tenant_id AND e.status = 'active'
                  AND x.event_type = ANY (e.event_types))
  ), events AS (
    INSERT INTO webhook_events (tenant_id, event_type, data)
    SELECT s.tenant_id, s.event_type, jsonb_build_object(
        'transactionId', webhook_global_id('LedgerTransaction', s.id),
        'kind', s.kind,
        'memberNumber', m.member_number,
        'asset', s.asset,
        'points', s.points,
        'amount', s.amount::text,
        'currency', s.currency,
        'orderRef', s.order_ref,
        'storeCode', st.code,
        'holdId', CASE WHEN s.hold_id IS NULL THEN NULL ELSE webhook_global_id('Hold', s.hold_id) END,
        'reversesTransactionId',
          CASE WHEN s.reverses_id IS NULL THEN NULL ELSE webhook_global_id('LedgerTransaction', s.reverses_id) END,
        'shortfall', s.shortfall,
        'effectiveAt', webhook_instant(s.effective_at))
    FROM subscribed s JOIN members m ON m.id = s.member_id LEFT JOIN stores st ON st.id = s.store_id
    ORDER BY s.id
    RETURNING id, tenant_id, event_type
  )
  INSERT INTO webhook_deliveries (event_id, endpoint_id, tenant_id)
    SELECT ev.id, e.id, ev.tenant_id FROM events ev
    JOIN webhook_endpoints e ON e.tenant_id = ev.tenant_id AND e.status = 'active' AND ev.event_type = ANY (e.event_types);
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_outbox AFTER INSERT ON ledger_transactions
  REFERENCING NEW TABLE AS posted FOR EACH STATEMENT EXECUTE FUNCTION webhook_after_ledger_insert();

-- A hold placed, captured or released changes the available balance without (or before) a posting.
CREATE FUNCTION webhook_after_hold_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM balance_watches w WHERE w.member_id = NEW.member_id AND w.expires_at > now()) THEN
    PERFORM pg_notify('balance_changed', NEW.member_id || ':' || NEW.asset);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER balance_changed AFTER INSERT OR UPDATE OF status ON holds
  FOR EACH ROW EXECUTE FUNCTION webhook_after_hold_change();

-- settlement.ready: an approved batch, to every tenant with a position in it.
CREATE FUNCTION webhook_after_settlement_approved() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM webhook_emit(p.tenant_id, 'settlement.ready', jsonb_build_object(
      'batchId', webhook_global_id('SettlementBatch', NEW.id),
      'asset', NEW.asset,
      'model', upper(st.model),
      'periodStart', webhook_instant(NEW.period_start),
      'periodEnd', webhook_instant(NEW.period_end),
      'currency', st.currency,
      'netAmount', p.net_amount::text,
      'direction', CASE WHEN p.net_amount > 0 THEN 'RECEIVE' WHEN p.net_amount < 0 THEN 'PAY' END))
  FROM settlement_positions p, settlement_terms st
  WHERE p.batch_id = NEW.id AND p.tenant_id IS NOT NULL AND st.id = NEW.terms_id
  ORDER BY p.tenant_id;
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_settlement_ready AFTER UPDATE OF status ON settlement_batches
  FOR EACH ROW WHEN (OLD.status = 'draft' AND NEW.status = 'approved')
  EXECUTE FUNCTION webhook_after_settlement_approved();

-- settlement.disputed: to both parties of the disputed line (the one that raised it included).
CREATE FUNCTION webhook_after_dispute() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  PERFORM webhook_emit(party.tenant_id, 'settlement.disputed', jsonb_build_object(
      'disputeId', webhook_global_id('SettlementDispute', NEW.id),
      'batchId', webhook_global_id('SettlementBatch', NEW.batch_id),
      'issuerCode', (SELECT code FROM tenants WHERE id = NEW.issuer_tenant_id),
      'redeemerCode', (SELECT code FROM tenants WHERE id = NEW.redeemer_tenant_id),
      'raisedByCode', (SELECT code FROM tenants WHERE id = NEW.raised_by_tenant_id),
      'reason', NEW.reason))
  FROM (SELECT DISTINCT unnest(ARRAY[NEW.issuer_tenant_id, NEW.redeemer_tenant_id]) AS tenant_id) party
  ORDER BY party.tenant_id;
  RETURN NULL;
END $$;
CREATE TRIGGER webhook_settlement_disputed AFTER INSERT ON settlement_disputes
  FOR EACH ROW EXECUTE FUNCTION webhook_after_dispute();

-- A gateway process starts watching members, in two steps (two calls, two transactions), after
-- which every change is either visible to a read or will be notified:
--  1. a posting holds a KEY SHARE lock on its member's row (the foreign key of the transaction
--     it inserts) from before its trigger checks for watches until it ends: wait for those in
--     flight, record the watches, commit;
--  2. hold releases and captures lock the member's wallet before they check: wait for those.
-- Not one transaction: the ledger takes these two locks in either order (credits the member row
-- first, debits the wallet first), so holding both could deadlock with a posting.
CREATE FUNCTION balance_watch(p_listener uuid, p_members bigint[], p_seconds int)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  ASSERT p_seconds BETWEEN 10 AND 3600 AND cardinality(p_members) <= 100000;
  PERFORM 1 FROM members WHERE id = ANY (p_members) ORDER BY id FOR UPDATE;
  INSERT INTO balance_watches (member_id, listener, expires_at)
    SELECT DISTINCT m, p_listener, now() + make_interval(secs => p_seconds) FROM unnest(p_members) m
    ORDER BY 1
    ON CONFLICT (member_id, listener) DO UPDATE SET expires_at = EXCLUDED.expires_at;
END $$;

CREATE FUNCTION balance_watch_settle(p_members bigint[])
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
  SELECT FROM accounts WHERE kind = 'member_wallet' AND member_id = ANY (p_members) AND tenant_id IS NULL
    ORDER BY id FOR UPDATE
$$;

-- The lease of a process's watches, extended (every few seconds while it lives); answers the
-- members whose watch had lapsed or vanished meanwhile, whose subscribers must re-read. Also
-- drops lapsed watches of processes that died.
CREATE FUNCTION balance_watch_renew(p_listener uuid, p_members bigint[], p_seconds int)
RETURNS SETOF bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  ASSERT p_seconds BETWEEN 10 AND 3600 AND cardinality(p_members) <= 100000;
  RETURN QUERY
    WITH live AS (
      SELECT w.member_id FROM balance_watches w
      WHERE w.listener = p_listener AND w.member_id = ANY (p_members) AND w.expires_at > now()
    ), renewed AS (
      INSERT INTO balance_watches (member_id, listener, expires_at)
        SELECT DISTINCT m, p_listener, now() + make_interval(secs => p_seconds) FROM unnest(p_members) m
        ORDER BY 1
        ON CONFLICT (member_id, listener) DO UPDATE SET expires_at = EXCLUDED.expires_at
        RETURNING member_id
    )
    SELECT r.member_id FROM renewed r WHERE r.member_id NOT IN (SELECT member_id FROM live);
  DELETE FROM balance_watches WHERE (member_id, listener) IN (
    SELECT w.member_id, w.listener FROM balance_watches w WHERE w.expires_at < now() LIMIT 1000);
END $$;

CREATE FUNCTION balance_unwatch(p_listener uuid, p_members bigint[])
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
  DELETE FROM balance_watches WHERE listener = p_listener AND member_id = ANY (p_members)
$$;

---------------------------------------------------------------------------------------------------
-- The worker's functions (operator context only)
---------------------------------------------------------------------------------------------------

-- Events nothing writes at the moment they happen: points about to expire (to their issuer,
-- once per lot, grouped per member, asset and instant) and holds that lapsed (to the holding
-- merchant, once per hold, if it lapsed within p_hold_lookback_days). Only tenants subscribed
-- to the type are considered, so an unsubscribed tenant's lots are never marked. One sweep
-- at a time (others return at once); at most p_limit lots and p_limit holds per call.
CREATE FUNCTION webhook_sweep(p_expiring_days int, p_hold_lookback_days int, p_limit int)
RETURNS TABLE (expiring_events int, hold_events int)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_expiring int := 0;
  v_holds int := 0;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = '42501'; END IF;
  ASSERT p_limit BETWEEN 1 AND 100000 AND p_expiring_days BETWEEN 1 AND 366 AND p_hold_lookback_days BETWEEN 1 AND 366;
  IF NOT pg_try_advisory_xact_lock(hashtext('webhook_sweep')) THEN
    RETURN QUERY SELECT 0, 0;
    RETURN;
  END IF;

  WITH subscribers AS (
    SELECT DISTINCT tenant_id FROM webhook_endpoints WHERE status = 'active' AND 'points.expiring' = ANY (event_types)
  ), due AS (
    SELECT l.id, l.member_id, l.asset, l.issuer_tenant_id, l.remaining, l.expires_at FROM lots l
    WHERE l.remaining > 0 AND l.expires_at > now() AND l.expires_at <= now() + make_interval(days => p_expiring_days)
      AND l.issuer_tenant_id IN (SELECT tenant_id FROM subscribers)
      AND NOT EXISTS (SELECT 1 FROM webhook_lot_notices n WHERE n.lot_id = l.id)
    ORDER BY l.expires_at, l.id
    LIMIT p_limit
  ), noticed AS (
    INSERT INTO webhook_lot_notices (lot_id, expires_at) SELECT id, expires_at FROM due
    ON CONFLICT DO NOTHING RETURNING lot_id
  )
  SELECT count(webhook_emit(g.issuer_tenant_id, 'points.expiring', jsonb_build_object(
      'memberNumber', m.member_number, 'asset', g.asset, 'points', g.points,
      'expiresAt', webhook_instant(g.expires_at))))
  INTO v_expiring
  FROM (SELECT d.issuer_tenant_id, d.member_id, d.asset, d.expires_at, sum(d.remaining) AS points
        FROM due d JOIN noticed n ON n.lot_id = d.id
        GROUP BY d.issuer_tenant_id, d.member_id, d.asset, d.expires_at) g
  JOIN members m ON m.id = g.member_id;

  WITH subscribers AS (
    SELECT DISTINCT tenant_id FROM webhook_endpoints WHERE status = 'active' AND 'hold.expired' = ANY (event_types)
  ), due AS (
    SELECT h.* FROM holds h
    WHERE h.status = 'active' AND h.expires_at <= now()
      AND h.expires_at > now() - make_interval(days => p_hold_lookback_days)
      AND h.tenant_id IN (SELECT tenant_id FROM subscribers)
      AND NOT EXISTS (SELECT 1 FROM webhook_hold_notices n WHERE n.hold_id = h.id)
    ORDER BY h.expires_at, h.id
    LIMIT p_limit
  ), noticed AS (
    INSERT INTO webhook_hold_notices (hold_id, expires_at) SELECT id, expires_at FROM due
    ON CONFLICT DO NOTHING RETURNING hold_id
  )
  SELECT count(webhook_emit(d.tenant_id, 'hold.expired', jsonb_build_object(
      'holdId', webhook_global_id('Hold', d.id), 'memberNumber', m.member_number, 'asset', d.asset,
      'points', d.points, 'orderRef', d.order_ref, 'expiresAt', webhook_instant(d.expires_at))))
  INTO v_holds
  FROM due d JOIN noticed n ON n.hold_id = d.id JOIN members m ON m.id = d.member_id;

  RETURN QUERY SELECT v_expiring, v_holds;
END $$;

-- Claim up to p_limit due deliveries: each gets its attempt number (the fencing token for
-- recording the outcome) and is leased for p_lease_seconds, after which another worker may claim
-- it again. Returns what signing and sending need, secrets included. Not claimed but sent to the
-- dead letters (where a replay finds them): a delivery whose endpoint was disabled meanwhile
-- (an event written concurrently with the disabling), and one that already had p_max_attempts
-- claims (workers kept dying on it, so no outcome was ever recorded).
CREATE FUNCTION webhook_claim(p_limit int, p_lease_seconds int, p_max_attempts int)
RETURNS TABLE (delivery_id bigint, attempt int, event_id uuid, event_type text, tenant_code text, data jsonb,
               event_created_at timestamptz, url text, secrets text[], started_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = '42501'; END IF;
  ASSERT p_limit BETWEEN 1 AND 1000 AND p_lease_seconds BETWEEN 1 AND 3600 AND p_max_attempts >= 1;
  RETURN QUERY
  WITH due AS (
    SELECT d.id, CASE WHEN e.status <> 'active' THEN 'endpoint disabled'
                      WHEN d.attempts >= p_max_attempts THEN 'attempts exhausted without an outcome' END AS parked
    FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at
    LIMIT p_limit
    FOR UPDATE OF d SKIP LOCKED
  ), parked AS (
    UPDATE webhook_deliveries d SET status = 'dead', dead_at = now(), last_error = due.parked
      FROM due WHERE d.id = due.id AND due.parked IS NOT NULL
  ), claimed AS (
    UPDATE webhook_deliveries d
      SET attempts = d.attempts + 1, last_attempt_at = now(),
          next_attempt_at = now() + make_interval(secs => p_lease_seconds)
      FROM due WHERE d.id = due.id AND due.parked IS NULL
      RETURNING d.id, d.attempts, d.event_id, d.endpoint_id, coalesce(d.replayed_at, d.created_at) AS started_at
  )
  SELECT c.id, c.attempts, ev.id, ev.event_type, t.code, ev.data, ev.created_at, e.url,
    CASE WHEN e.previous_secret_expires_at > now() THEN ARRAY[e.secret, e.previous_secret] ELSE ARRAY[e.secret] END,
    c.started_at
  FROM claimed c
  JOIN webhook_events ev ON ev.id = c.event_id
  JOIN webhook_endpoints e ON e.id = c.endpoint_id
  JOIN tenants t ON t.id = ev.tenant_id
  ORDER BY c.id;
END $$;

-- Rotate an endpoint's secret (the caller's own endpoint); the old one keeps signing until
-- p_previous_valid_until (NULL: it stops at once).
CREATE FUNCTION webhook_rotate_secret(p_endpoint bigint, p_secret text, p_previous_valid_until timestamptz)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  UPDATE webhook_endpoints SET
      previous_secret = CASE WHEN p_previous_valid_until > now() THEN secret END,
      previous_secret_expires_at = CASE WHEN p_previous_valid_until > now() THEN p_previous_valid_until END,
      secret = p_secret, secret_rotated_at = now(), updated_at = now()
    WHERE id = p_endpoint AND alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id();
  RETURN FOUND;
END $$;

-- Retention: events older than p_days whose deliveries all finished (delivered or dead) before
-- then go, with their deliveries; so do notices of lots and holds long past their expiry (the
-- sweeps never look back that far). At most p_limit events per call.
CREATE FUNCTION webhook_purge(p_days int, p_limit int)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_cutoff timestamptz := now() - make_interval(days => p_days);
  v_deleted bigint;
BEGIN
  IF alliance_role() <> 'operator' THEN RAISE EXCEPTION 'FORBIDDEN' USING ERRCODE = '42501'; END IF;
  ASSERT p_days >= 1 AND p_limit BETWEEN 1 AND 100000;
  DELETE FROM webhook_events WHERE id IN (
    SELECT ev.id FROM webhook_events ev
    WHERE ev.created_at < v_cutoff
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = ev.id
                      AND (d.status = 'pending' OR coalesce(d.replayed_at, d.created_at) >= v_cutoff))
    ORDER BY ev.created_at LIMIT p_limit);
  GET DIAGNOSTICS v_deleted = ROW_COUNT;
  DELETE FROM webhook_lot_notices WHERE lot_id IN (
    SELECT lot_id FROM webhook_lot_notices WHERE expires_at < now() - interval '1 day'
    ORDER BY expires_at LIMIT p_limit);
  DELETE FROM webhook_hold_notices WHERE hold_id IN (
    SELECT hold_id FROM webhook_hold_notices WHERE expires_at < v_cutoff ORDER BY expires_at LIMIT p_limit);
  RETURN v_deleted;
END $$;
