"""Ledger: assets, accounts, transactions, entries, lots, lot movements, holds, idempotency.

Every write goes through SECURITY DEFINER functions owned by the migration owner: one call is
one database round trip and one atomic transaction, and the application role holds no INSERT,
UPDATE or DELETE privilege on any ledger table. Ledger rows are append-only (triggers refuse
UPDATE/DELETE on transactions and entries); lots change only their ``remaining``.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE assets (
  code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_]{1,31}$'),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  settlement_value numeric(18, 6) NOT NULL CHECK (settlement_value >= 0),
  currency char(3) NOT NULL DEFAULT 'CNY' CHECK (currency ~ '^[A-Z]{3}$'),
  expiry_policy text NOT NULL CHECK (expiry_policy IN ('never', 'months_after_issue', 'end_of_month_after_issue')),
  expiry_months int CHECK (expiry_months IS NULL OR expiry_months BETWEEN 1 AND 120),
  policy_description text NOT NULL,
  time_zone text NOT NULL DEFAULT 'Asia/Shanghai',
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((expiry_policy = 'never') = (expiry_months IS NULL))
);
INSERT INTO assets (code, name, settlement_value, expiry_policy, expiry_months, policy_description) VALUES
  ('POINTS', 'Alliance points', 0.01, 'end_of_month_after_issue', 24,
   'Points expire at the end of the 24th calendar month after the month they were earned (Asia/Shanghai).'),
  ('GREEN', 'Green points', 0.01, 'months_after_issue', 12,
   'Green points expire 12 months after the day they were earned.');

CREATE TABLE accounts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN
    ('member_wallet', 'tenant_issuance', 'tenant_redemption', 'alliance_breakage', 'alliance_adjustment')),
  asset text NOT NULL REFERENCES assets(code),
  member_id bigint REFERENCES members(id),
  tenant_id bigint REFERENCES tenants(id),
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'member_wallet') = (member_id IS NOT NULL)),
  CHECK ((kind IN ('tenant_issuance', 'tenant_redemption')) = (tenant_id IS NOT NULL)),
  UNIQUE NULLS NOT DISTINCT (kind, asset, member_id, tenant_id)
);

CREATE TABLE ledger_transactions (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('earn', 'award', 'redeem', 'capture', 'reverse', 'expire', 'adjust', 'compensate')),
  asset text NOT NULL REFERENCES assets(code),
  member_id bigint NOT NULL REFERENCES members(id),
  tenant_id bigint REFERENCES tenants(id),
  client_scope text,
  points bigint NOT NULL CHECK (points >= 0),
  amount numeric(18, 2),
  currency char(3),
  order_ref text CHECK (order_ref IS NULL OR length(order_ref) BETWEEN 1 AND 128),
  store_id bigint REFERENCES stores(id),
  reason text CHECK (reason IS NULL OR length(reason) BETWEEN 1 AND 500),
  reverses_id bigint REFERENCES ledger_transactions(id),
  hold_id bigint,
  shortfall bigint NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
  details jsonb NOT NULL DEFAULT '{}'::jsonb,
  effective_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((kind = 'reverse') = (reverses_id IS NOT NULL))
);
CREATE INDEX ledger_transactions_member ON ledger_transactions (member_id, id);
CREATE INDEX ledger_transactions_tenant ON ledger_transactions (tenant_id, id);
CREATE INDEX ledger_transactions_reverses ON ledger_transactions (reverses_id) WHERE reverses_id IS NOT NULL;
-- One earn per order, member and merchant (member_id included: the ledger shards by member).
CREATE UNIQUE INDEX ledger_transactions_earn_order ON ledger_transactions (tenant_id, member_id, order_ref)
  WHERE kind = 'earn';

CREATE TABLE ledger_entries (
  transaction_id bigint NOT NULL REFERENCES ledger_transactions(id),
  account_id bigint NOT NULL REFERENCES accounts(id),
  member_id bigint NOT NULL,
  asset text NOT NULL,
  amount bigint NOT NULL CHECK (amount <> 0),
  PRIMARY KEY (transaction_id, account_id)
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id);

CREATE TABLE lots (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  member_id bigint NOT NULL REFERENCES members(id),
  asset text NOT NULL REFERENCES assets(code),
  issuer_tenant_id bigint REFERENCES tenants(id),
  transaction_id bigint NOT NULL REFERENCES ledger_transactions(id),
  amount bigint NOT NULL CHECK (amount > 0),
  remaining bigint NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
  issued_at timestamptz NOT NULL,
  expires_at timestamptz,
  restored_from_lot_id bigint REFERENCES lots(id)
);
CREATE INDEX lots_open ON lots (member_id, asset, expires_at, issued_at, id) WHERE remaining > 0;
CREATE INDEX lots_transaction ON lots (transaction_id);
CREATE INDEX lots_expiring ON lots (expires_at) WHERE remaining > 0 AND expires_at IS NOT NULL;

-- Provenance: every change to a lot's remaining, signed (consume < 0, clawback < 0, expire < 0, restore > 0).
CREATE TABLE lot_movements (
  lot_id bigint NOT NULL REFERENCES lots(id),
  transaction_id bigint NOT NULL REFERENCES ledger_transactions(id),
  member_id bigint NOT NULL,
  kind text NOT NULL CHECK (kind IN ('consume', 'clawback', 'expire', 'restore')),
  points bigint NOT NULL CHECK (points <> 0),
  seq int NOT NULL DEFAULT 1,  -- order of consumption within the transaction (refunds go in reverse)
  PRIMARY KEY (transaction_id, lot_id),
  CHECK ((kind = 'restore') = (points > 0))
);
CREATE INDEX lot_movements_lot ON lot_movements (lot_id);

CREATE TABLE holds (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  member_id bigint NOT NULL REFERENCES members(id),
  asset text NOT NULL REFERENCES assets(code),
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  points bigint NOT NULL CHECK (points > 0),
  captured_points bigint NOT NULL DEFAULT 0 CHECK (captured_points >= 0 AND captured_points <= points),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'captured', 'released')),
  order_ref text,
  store_id bigint REFERENCES stores(id),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  closed_at timestamptz
);
CREATE INDEX holds_active ON holds (member_id, asset) WHERE status = 'active';

CREATE TABLE idempotency_records (
  client_scope text NOT NULL,
  idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
  operation text NOT NULL,
  request_hash text NOT NULL,
  response jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (client_scope, idempotency_key)
);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME USING ERRCODE = '42501';
END $$;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON ledger_transactions
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON lot_movements
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""


def _roles() -> str:
    return op.get_context().config.attributes["app_role"]


def _protect(table: str, app_role: str, using: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({using})")


def upgrade() -> None:
    app_role = _roles()
    execute_script(TABLES)
    execute_script((Path(__file__).parents[1] / "sql" / "0002_ledger_functions.sql").read_text())

    operator = "alliance_role() = 'operator'"
    own_member = "(alliance_role() = 'member' AND member_id = alliance_member_id())"
    own_tenant = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
    own_transaction = """(alliance_role() = 'merchant' AND EXISTS (SELECT 1 FROM ledger_transactions t
        WHERE t.id = transaction_id AND t.tenant_id = alliance_tenant_id()))"""
    op.execute(f"GRANT SELECT ON assets TO {app_role}")
    op.execute(
        f"GRANT SELECT ON accounts, ledger_transactions, ledger_entries, lots, lot_movements, holds TO {app_role}"
    )
    _protect("accounts", app_role, f"{operator} OR {own_member} OR {own_tenant}")
    _protect("ledger_transactions", app_role, f"{operator} OR {own_member} OR {own_tenant}")
    _protect("ledger_entries", app_role, f"{operator} OR {own_member} OR {own_transaction}")
    _protect("lot_movements", app_role, f"{operator} OR {own_member} OR {own_transaction}")
    _protect("lots", app_role, f"{operator} OR {own_member} OR {own_transaction}")
    _protect("holds", app_role, f"{operator} OR {own_member} OR {own_tenant}")
    # Idempotency records are read and written only by the ledger functions.
    op.execute("ALTER TABLE idempotency_records ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE idempotency_records FORCE ROW LEVEL SECURITY")
    op.execute(
        """DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON idempotency_records TO %I USING (true)
        WITH CHECK (true)', current_user); END $$"""
    )
    op.execute(
        f"""DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE p.proname LIKE 'ledger\\_%' AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO {app_role}', f.sig);
          END LOOP;
        END $$"""
    )


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS idempotency_records, holds, lot_movements, lots, ledger_entries, "
        "ledger_transactions, accounts, assets CASCADE"
    )
    op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change() CASCADE")
