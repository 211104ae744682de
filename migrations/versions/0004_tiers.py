"""Member tiers (alliance-wide): definitions, each member's current tier, and the audit of changes.

The tables and ``member_tier_rank`` are the contract other parts build on (earning rules and
rewards target ranks); ``migrations/sql/0004_tiers.sql`` holds qualification (rolling points
from the ledger), the immediate upgrade the earn path calls, the nightly evaluation with its
grace period, operator assignment and the append-only ``tier_changes`` audit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TIERS = """
CREATE TABLE tiers (
  code text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z0-9_]{1,31}$'),
  name text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
  rank int NOT NULL UNIQUE CHECK (rank >= 0),
  qualifying_points bigint NOT NULL CHECK (qualifying_points >= 0),
  earn_multiplier numeric(6, 3) NOT NULL DEFAULT 1 CHECK (earn_multiplier >= 1 AND earn_multiplier <= 10),
  benefits text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO tiers (code, name, rank, qualifying_points, earn_multiplier, benefits) VALUES
  ('MEMBER', 'Member', 0, 0, 1, 'Earn and redeem across the whole alliance.'),
  ('SILVER', 'Silver', 1, 5000, 1.1, '10% more points at every merchant.'),
  ('GOLD', 'Gold', 2, 20000, 1.25, '25% more points; priority service.');

CREATE TABLE member_tiers (
  member_id bigint PRIMARY KEY REFERENCES members(id),
  tier_code text NOT NULL REFERENCES tiers(code),
  since timestamptz NOT NULL DEFAULT now(),
  below_since timestamptz  -- when the member first fell below the tier's threshold (grace period)
);

-- The member's tier rank (0 = the base tier when none is recorded). Rules and rewards target ranks.
CREATE FUNCTION member_tier_rank(p_member bigint) RETURNS int LANGUAGE sql STABLE AS $$
  SELECT coalesce((SELECT t.rank FROM member_tiers mt JOIN tiers t ON t.code = mt.tier_code
                   WHERE mt.member_id = p_member), 0)
$$;
"""


FUNCTIONS = (
    "tier_rolling_points(bigint)",
    "tier_rolling_points_all()",
    "tier_base()",
    "tier_for_points(bigint)",
    "tier_lock_member(bigint)",
    "tier_lock_row(bigint)",
    "tier_upgrade_if_qualified(bigint)",
    "tier_upgrade_members_if_qualified(bigint[])",
    "tier_evaluate()",
    "tier_assign(bigint, text)",
    "tier_progress(bigint)",
)


def _protect(table: str, app_role: str, using: str) -> None:
    """FORCE row-level security: the owner (security-definer functions) sees everything, the
    application role reads what its access context allows and writes nothing directly."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_read ON {table} FOR SELECT TO {app_role} USING ({using})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(TIERS)
    execute_script((Path(__file__).parents[1] / "sql" / "0004_tiers.sql").read_text())
    operator = "alliance_role() = 'operator'"
    visible_member = f"""{operator}
      OR (alliance_role() = 'member' AND member_id = alliance_member_id())
      OR (alliance_role() = 'merchant' AND EXISTS (
            SELECT 1 FROM member_links l WHERE l.member_id = {{table}}.member_id AND l.tenant_id = alliance_tenant_id()))"""

    # Definitions: everyone reads them; the operator defines them (defineTier).
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON tiers TO {app_role}")
    _protect("tiers", app_role, "true")
    op.execute(f"CREATE POLICY app_insert ON tiers FOR INSERT TO {app_role} WITH CHECK ({operator})")
    op.execute(
        f"CREATE POLICY app_update ON tiers FOR UPDATE TO {app_role} USING ({operator}) WITH CHECK ({operator})"
    )
    # Members' tiers and the audit trail: written only by the tier_* functions (as the owner).
    op.execute(f"GRANT SELECT ON member_tiers, tier_changes, tier_settings TO {app_role}")
    _protect("member_tiers", app_role, visible_member.format(table="member_tiers"))
    _protect("tier_changes", app_role, visible_member.format(table="tier_changes"))
    _protect("tier_settings", app_role, "true")

    op.execute(f"GRANT EXECUTE ON FUNCTION member_tier_rank(bigint) TO {app_role}")
    for signature in FUNCTIONS:
        op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    # The application reaches these through the API (operator or own-member checks inside);
    # tier_upgrade_if_qualified is called by the ledger's earn path, which runs as the owner.
    for signature in ("tier_evaluate()", "tier_assign(bigint, text)", "tier_progress(bigint)"):
        op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO {app_role}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS " + ", ".join(reversed(FUNCTIONS)))
    op.execute("DROP INDEX IF EXISTS ledger_transactions_tier_credits")
    op.execute("DROP TABLE IF EXISTS tier_changes, tier_settings")
    op.execute("DROP FUNCTION IF EXISTS tier_refuse_change()")
    op.execute("DROP FUNCTION IF EXISTS member_tier_rank(bigint)")
    op.execute("DROP TABLE IF EXISTS member_tiers, tiers")
