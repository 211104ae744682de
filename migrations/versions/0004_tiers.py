"""Member tiers (alliance-wide): definitions, each member's current tier, and the audit of changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

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


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(TIERS)
    op.execute(f"GRANT SELECT ON tiers TO {app_role}")
    op.execute(f"GRANT SELECT ON member_tiers TO {app_role}")
    op.execute(f"GRANT EXECUTE ON FUNCTION member_tier_rank(bigint) TO {app_role}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS member_tier_rank(bigint)")
    op.execute("DROP TABLE IF EXISTS member_tiers, tiers")
