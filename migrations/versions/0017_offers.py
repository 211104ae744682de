"""Targeted offers: a merchant's earning rule restricted to one of its customer segments, with the
title and text its members see, measured afterwards.

An offer is two rows written together: the earning rule (kind category_rate, tag_rate or
multiplier, ``config.segment`` naming the segment, effective over the offer's window), which the
earning engine applies like any rule, and the ``offers`` row, which carries what the member app
shows. Members read an offer only while they belong to its segment; they also stop reading the
segment-restricted earning rules of segments they are not in (before, a member read every rule,
which would have told anyone whom a merchant targets with what).

SQL (functions for the earn path, withdrawal, measurement and its refresh) is in ``migrations/sql/0017_offers.sql``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from alliance.db.migrate import execute_script

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

SQL = Path(__file__).parents[1] / "sql" / "0017_offers.sql"
OPERATOR = "alliance_role() = 'operator'"
OWN_TENANT = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
IN_OFFER_SEGMENT = """(alliance_role() = 'member' AND withdrawn_at IS NULL AND EXISTS (
  SELECT 1 FROM customer_segment_members m
  WHERE m.segment_id = offers.segment_id AND m.member_id = alliance_member_id()))"""
RULES_BEFORE = (
    "alliance_role() = 'operator' OR (alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
)
RULES_CHECK = (
    "(alliance_role() = 'operator' AND tenant_id IS NULL)"
    " OR (alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
)
# A member reads every general rule and campaign (to explain a breakdown), and an offer's rule
# only as a member of its segment.
MEMBER_READS_RULE = """(alliance_role() = 'member' AND (NOT config ? 'segment' OR EXISTS (
  SELECT 1 FROM customer_segments s JOIN customer_segment_members m ON m.segment_id = s.id
  WHERE s.tenant_id = earning_rules.tenant_id AND s.code = earning_rules.config->>'segment'
    AND m.member_id = alliance_member_id())))"""


def _protect(table: str, app_role: str, read: str, write: str | None) -> None:
    """As in 0015: the owner sees every row, the application role what ``read`` allows and writes
    what ``write`` allows."""
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


def _rules_policy(app_role: str, member_reads: str) -> None:
    op.execute("DROP POLICY app_access ON earning_rules")
    op.execute(
        f"CREATE POLICY app_access ON earning_rules TO {app_role} "
        f"USING ({RULES_BEFORE} OR tenant_id IS NULL OR {member_reads}) WITH CHECK ({RULES_CHECK})"
    )


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    op.execute(
        """
        CREATE TABLE offers (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          tenant_id bigint NOT NULL REFERENCES tenants(id),
          code text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
          segment_id bigint NOT NULL REFERENCES customer_segments(id),
          title text NOT NULL CHECK (length(title) BETWEEN 1 AND 120),
          description text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
          kind text NOT NULL CHECK (kind IN ('category_rate', 'tag_rate', 'multiplier')),
          target text CHECK ((kind = 'multiplier') = (target IS NULL)),
          multiplier numeric(6, 2) NOT NULL CHECK (multiplier > 1 AND multiplier <= 10),
          starts_at timestamptz NOT NULL,
          ends_at timestamptz NOT NULL,
          withdrawn_at timestamptz,
          created_at timestamptz NOT NULL DEFAULT now(),
          CHECK (ends_at > starts_at),
          UNIQUE (tenant_id, code)
        )
        """
    )
    op.execute("CREATE INDEX offers_segment ON offers (segment_id)")
    op.execute(f"GRANT SELECT ON offers TO {app_role}")
    op.execute(
        f"GRANT INSERT (tenant_id, code, segment_id, title, description, kind, target, multiplier,"
        f" starts_at, ends_at, withdrawn_at) ON offers TO {app_role}"
    )
    op.execute(f"GRANT UPDATE (withdrawn_at) ON offers TO {app_role}")
    _protect("offers", app_role, f"{OPERATOR} OR {OWN_TENANT} OR {IN_OFFER_SEGMENT}", OWN_TENANT)
    # What `refresh_offer_results()` (the insights refresh, as the owner) measured; merchants read theirs.
    op.execute(
        """
        CREATE TABLE offer_results (
          offer_id bigint PRIMARY KEY REFERENCES offers(id),
          tenant_id bigint NOT NULL,
          window_start timestamptz NOT NULL,
          window_end timestamptz NOT NULL,
          baseline_start timestamptz NOT NULL,
          segment_size bigint NOT NULL,
          members_earned bigint NOT NULL,
          spend_in_window numeric(18, 2) NOT NULL,
          spend_in_baseline numeric(18, 2) NOT NULL,
          points_cost bigint NOT NULL,
          refreshed_at timestamptz NOT NULL
        )
        """
    )
    op.execute(f"GRANT SELECT ON offer_results TO {app_role}")
    _protect("offer_results", app_role, f"{OPERATOR} OR {OWN_TENANT}", None)
    _rules_policy(app_role, MEMBER_READS_RULE)
    execute_script(SQL.read_text())
    for function in (
        "earning_member_segments(bigint, text[])",
        "offers_cancel_scheduled_rule(text)",
        "offer_measure(bigint[], timestamptz)",
        "refresh_offer_results(timestamptz)",
    ):
        op.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {app_role}")


def downgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    op.execute("DROP FUNCTION IF EXISTS refresh_offer_results(timestamptz)")
    op.execute("DROP FUNCTION IF EXISTS offer_measure(bigint[], timestamptz)")
    op.execute("DROP TABLE IF EXISTS offer_results")
    # The code before this revision would apply a segment-restricted rule to everyone: end them.
    op.execute("DELETE FROM earning_rules WHERE config ? 'segment' AND effective_from > now()")
    op.execute(
        "UPDATE earning_rules SET effective_until = now() WHERE config ? 'segment'"
        " AND (effective_until IS NULL OR effective_until > now())"
    )
    op.execute("DROP FUNCTION IF EXISTS offers_cancel_scheduled_rule(text)")
    op.execute("DROP FUNCTION IF EXISTS earning_member_segments(bigint, text[])")
    _rules_policy(app_role, "alliance_role() = 'member'")
    op.execute("DROP TABLE IF EXISTS offers")
