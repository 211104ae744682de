"""Reward catalogs: rewards per tenant, redemptions with fulfilment, points as payment.

Merchants write their own rewards and points-payment settings directly (row-level security
limits them to their own tenant; a reward's status and stock bookkeeping are left to the
functions). Redemptions move points, so they are written only by the SECURITY DEFINER
catalog_* functions in ``migrations/sql/0006_catalog.sql``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Entry points the application role may call; the other catalog_* functions are internal.
PUBLIC_FUNCTIONS = (
    "catalog_redeem_reward(text, text, text, bigint, bigint, text, bigint, int)",
    "catalog_fulfil_redemption(bigint, bigint)",
    "catalog_cancel_redemption(text, text, text, bigint, bigint, text)",
    "catalog_withdraw_reward(text, text, text, bigint, bigint, text)",
    "catalog_pay_with_points(text, text, text, bigint, text, numeric, bigint, text, text)",
    "catalog_unit_points(rewards, timestamptz)",
)

# What a merchant may change on its own reward (status moves only through catalog_withdraw_reward).
REWARD_UPDATABLE = (
    "kind, name, description, points, sale_points, sale_starts_at, sale_ends_at, stock, available_from, "
    "available_until, min_tier, per_member_limit, updated_at"
)


def _protect(table: str, app_role: str, read: str, write: str | None) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({read})")
    if write is not None:
        op.execute(f"CREATE POLICY app_insert ON {table} FOR INSERT TO {app_role} WITH CHECK ({write})")
        op.execute(
            f"CREATE POLICY app_update ON {table} FOR UPDATE TO {app_role} USING ({write}) WITH CHECK ({write})"
        )


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script((Path(__file__).parents[1] / "sql" / "0006_catalog.sql").read_text())

    operator = "alliance_role() = 'operator'"
    own_tenant = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
    own_member = "(alliance_role() = 'member' AND member_id = alliance_member_id())"
    # Members read the whole alliance's active catalog, and rewards they redeemed even once withdrawn.
    member_reward = """(alliance_role() = 'member' AND (status = 'active' OR EXISTS (
        SELECT 1 FROM reward_redemptions x WHERE x.reward_id = rewards.id AND x.member_id = alliance_member_id())))"""

    op.execute(f"GRANT SELECT, INSERT ON rewards TO {app_role}")
    op.execute(f"GRANT UPDATE ({REWARD_UPDATABLE}) ON rewards TO {app_role}")
    _protect(
        "rewards", app_role, f"{operator} OR {own_tenant} OR {member_reward}", f"{operator} OR {own_tenant}"
    )

    op.execute(f"GRANT SELECT ON reward_redemptions TO {app_role}")
    _protect("reward_redemptions", app_role, f"{operator} OR {own_tenant} OR {own_member}", None)

    op.execute(f"GRANT SELECT, INSERT, UPDATE ON points_payment_settings TO {app_role}")
    _protect(
        "points_payment_settings",
        app_role,
        f"{operator} OR {own_tenant} OR alliance_role() = 'member'",
        f"{operator} OR {own_tenant}",
    )

    op.execute(
        """DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE p.proname LIKE 'catalog\\_%' AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f.sig);
          END LOOP;
        END $$"""
    )
    for signature in PUBLIC_FUNCTIONS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {app_role}")


def downgrade() -> None:
    op.execute(
        """DO $$ DECLARE f record; BEGIN
          FOR f IN SELECT p.oid::regprocedure AS sig FROM pg_proc p
                   WHERE p.proname LIKE 'catalog\\_%' AND p.pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP FUNCTION %s', f.sig);
          END LOOP;
        END $$"""
    )
    op.execute("DROP TABLE IF EXISTS points_payment_settings, reward_redemptions, rewards")
