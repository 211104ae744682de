"""Webhooks for merchants (endpoints, a transactional outbox, deliveries) and the NOTIFY behind
live balances.

Events are written by triggers in the transaction of the change (``migrations/sql/0013_webhooks.sql``).
Merchants manage their own endpoints and see their own events and deliveries (row-level
security); the signing secrets are never readable by the application role (column privileges):
only the worker's SECURITY DEFINER claim function hands them out, to the operator context.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ENDPOINT_READABLE = (
    "id, tenant_id, url, description, event_types, status, secret_rotated_at, previous_secret_expires_at, "
    "created_at, updated_at"
)
ENDPOINT_INSERTABLE = "tenant_id, url, description, event_types, secret"
ENDPOINT_UPDATABLE = "url, description, event_types, status, updated_at"
DELIVERY_UPDATABLE = (
    "status, attempts, next_attempt_at, last_attempt_at, last_status_code, last_error, delivered_at, dead_at, "
    "replays, replayed_at"
)
WORKER_FUNCTIONS = (
    "webhook_sweep(int, int, int)",
    "webhook_claim(int, int, int)",
    "webhook_purge(int, int)",
    "webhook_rotate_secret(bigint, text, timestamptz)",
    "balance_watch(uuid, bigint[], int)",
    "balance_watch_settle(bigint[])",
    "balance_watch_renew(uuid, bigint[], int)",
    "balance_unwatch(uuid, bigint[])",
)

# The scopes each role held by default before this revision: clients holding all of them (the
# usual, unrestricted client) are given the new webhooks:manage scope too.
MERCHANT_SCOPES_0009 = [
    "tenants:read",
    "stores:write",
    "members:read",
    "members:write",
    "points:earn",
    "points:redeem",
    "ledger:read",
    "settlement:read",
    "catalog:write",
    "rules:write",
    "tiers:read",
]
OPERATOR_SCOPES_0009 = [
    *MERCHANT_SCOPES_0009,
    "tenants:write",
    "points:adjust",
    "settlement:write",
    "tiers:write",
]


def _protect(table: str, app_role: str, read: str | None, write: str | None) -> None:
    """FORCE row-level security: the owner (triggers, security-definer functions) sees every row,
    the application role what ``read`` allows, and writes what ``write`` allows."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    if read is None:
        return
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({read})")
    if write is not None:
        op.execute(f"CREATE POLICY app_insert ON {table} FOR INSERT TO {app_role} WITH CHECK ({write})")
        op.execute(
            f"CREATE POLICY app_update ON {table} FOR UPDATE TO {app_role} USING ({write}) WITH CHECK ({write})"
        )


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{v}'" for v in values) + "]::text[]"


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0013_webhooks.sql").read_text())

    operator = "alliance_role() = 'operator'"
    own_tenant = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"

    op.execute(f"GRANT SELECT ({ENDPOINT_READABLE}) ON webhook_endpoints TO {app_role}")
    op.execute(f"GRANT INSERT ({ENDPOINT_INSERTABLE}) ON webhook_endpoints TO {app_role}")
    op.execute(f"GRANT UPDATE ({ENDPOINT_UPDATABLE}) ON webhook_endpoints TO {app_role}")
    _protect("webhook_endpoints", app_role, f"{operator} OR {own_tenant}", own_tenant)

    op.execute(f"GRANT SELECT ON webhook_events TO {app_role}")
    _protect("webhook_events", app_role, f"{operator} OR {own_tenant}", None)

    op.execute(f"GRANT SELECT ON webhook_deliveries TO {app_role}")
    op.execute(f"GRANT UPDATE ({DELIVERY_UPDATABLE}) ON webhook_deliveries TO {app_role}")
    # Updates: the worker records outcomes (operator), a merchant replays its own dead letters.
    _protect("webhook_deliveries", app_role, f"{operator} OR {own_tenant}", None)
    op.execute(
        f"CREATE POLICY app_update ON webhook_deliveries FOR UPDATE TO {app_role}"
        f" USING ({operator} OR {own_tenant}) WITH CHECK ({operator} OR {own_tenant})"
    )

    # Written and read only by the sweep and balance_watch (as the owner).
    for table in ("webhook_lot_notices", "webhook_hold_notices", "balance_watches"):
        _protect(table, app_role, None, None)

    for function in (
        "webhook_emit(bigint, text, jsonb)",
        "webhook_after_ledger_insert()",
        "webhook_after_hold_change()",
        "webhook_after_settlement_approved()",
        "webhook_after_dispute()",
    ):
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    for function in WORKER_FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {app_role}")

    for role, scopes in (("merchant", MERCHANT_SCOPES_0009), ("operator", OPERATOR_SCOPES_0009)):
        op.execute(
            f"""UPDATE api_clients SET scopes = array_append(scopes, 'webhooks:manage')
            WHERE role = '{role}' AND scopes @> {_array(scopes)} AND NOT scopes @> ARRAY['webhooks:manage']"""
        )


def downgrade() -> None:
    op.execute("UPDATE api_clients SET scopes = array_remove(scopes, 'webhooks:manage')")
    op.execute("DROP TRIGGER IF EXISTS webhook_outbox ON ledger_transactions")
    op.execute("DROP TRIGGER IF EXISTS balance_changed ON holds")
    op.execute("DROP TRIGGER IF EXISTS webhook_settlement_ready ON settlement_batches")
    op.execute("DROP TRIGGER IF EXISTS webhook_settlement_disputed ON settlement_disputes")
    op.execute("DROP INDEX IF EXISTS holds_active_expiry")
    op.execute(
        "DROP TABLE IF EXISTS balance_watches, webhook_hold_notices, webhook_lot_notices, webhook_deliveries, "
        "webhook_events, webhook_endpoints"
    )
    op.execute(
        """DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE (p.proname LIKE 'webhook\\_%' OR p.proname LIKE 'balance\\_%')
                     AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP FUNCTION %s', f.sig);
          END LOOP;
        END $$"""
    )
