"""Earning rules: per-tenant versioned rules (base rate, category/tag rates, scheduled multipliers,
event bonuses) and alliance-wide campaigns by the operator (tenant_id NULL).

Rules are interpreted by ``alliance.earning.engine``; the table only stores them, effective-dated.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import execute_script

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RULES = """
CREATE TABLE earning_rules (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint REFERENCES tenants(id),  -- NULL: an alliance-wide campaign of the operator
  code text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
  kind text NOT NULL CHECK (kind IN ('base', 'category_rate', 'tag_rate', 'multiplier', 'event_bonus')),
  config jsonb NOT NULL,
  funded_by text NOT NULL DEFAULT 'merchant' CHECK (funded_by IN ('merchant', 'alliance')),
  effective_from timestamptz NOT NULL,
  effective_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  CHECK (effective_until IS NULL OR effective_until > effective_from),
  CHECK (tenant_id IS NOT NULL OR kind = 'multiplier')
  -- One version of a rule code at any instant: checked by alliance.earning.service under a lock
  -- (an exclusion constraint would need btree_gist, which the embedded PostgreSQL lacks).
);
CREATE INDEX earning_rules_tenant ON earning_rules (tenant_id, effective_from);

-- What the earning rules need to know about a member, in one round trip: their tier and what
-- they already earned today at this merchant (for previews; postings re-check under a lock).
CREATE FUNCTION earning_member_facts(p_tenant bigint, p_member_numbers text[], p_asset text, p_at timestamptz,
  p_with_today boolean)
RETURNS TABLE (member_number text, tier_code text, tier_rank int, earn_multiplier numeric, earned_today bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT m.member_number, t.code, coalesce(t.rank, 0), coalesce(t.earn_multiplier, 1),
    CASE WHEN NOT p_with_today THEN 0::bigint ELSE
    (SELECT coalesce(sum(x.points), 0)::bigint FROM ledger_transactions x, assets a
      WHERE a.code = p_asset AND x.member_id = m.id AND x.tenant_id = p_tenant AND x.kind = 'earn'
        AND x.asset = p_asset
        AND (x.effective_at AT TIME ZONE a.time_zone)::date = (p_at AT TIME ZONE a.time_zone)::date) END
  FROM members m
  JOIN member_links l ON l.member_id = m.id AND l.tenant_id = p_tenant
  LEFT JOIN member_tiers mt ON mt.member_id = m.id
  LEFT JOIN tiers t ON t.code = mt.tier_code
  WHERE m.member_number = ANY (p_member_numbers) AND m.status = 'active'
$$;
"""


def _protect(table: str, app_role: str, using: str, check: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_access ON {table} TO {app_role} USING ({using}) WITH CHECK ({check})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(RULES)
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON earning_rules TO {app_role}")
    op.execute(
        f"GRANT EXECUTE ON FUNCTION earning_member_facts(bigint, text[], text, timestamptz, boolean) TO {app_role}"
    )
    operator = "alliance_role() = 'operator'"
    own = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
    # Merchants read their rules and the campaigns they take part in; members read all (to explain).
    _protect(
        "earning_rules",
        app_role,
        using=f"{operator} OR {own} OR tenant_id IS NULL OR alliance_role() = 'member'",
        check=f"({operator} AND tenant_id IS NULL) OR {own}",
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS earning_member_facts(bigint, text[], text, timestamptz, boolean)")
    op.execute("DROP TABLE IF EXISTS earning_rules")
