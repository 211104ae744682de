"""Customer segments: a merchant's named groups of its own linked members.

A segment is a definition (kept as validated JSON by the insights domain, e.g. "bought baby
formula in at least 3 of the last 4 months") and its membership, which only the insights
refresh job writes (as the owner). Merchants define and read their own segments and see their
own members in them; a member sees the segments they belong to (so the member app can show the
offers made to them); the operator sees all. Targeted offers are earning rules restricted to a
segment, so the earn path reads membership by (tenant, member).

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

OPERATOR = "alliance_role() = 'operator'"
OWN_TENANT = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
OWN_MEMBER = "(alliance_role() = 'member' AND member_id = alliance_member_id())"


def _protect(table: str, app_role: str, read: str, write: str | None) -> None:
    """FORCE row-level security: the owner (the refresh job) sees every row, the application role
    what ``read`` allows and writes what ``write`` allows."""
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
    op.execute(
        """
        CREATE TABLE customer_segments (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          tenant_id bigint NOT NULL REFERENCES tenants(id),
          code text NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
          name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
          definition jsonb NOT NULL,
          status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
          member_count int NOT NULL DEFAULT 0 CHECK (member_count >= 0),
          refreshed_at timestamptz,
          created_at timestamptz NOT NULL DEFAULT now(),
          updated_at timestamptz NOT NULL DEFAULT now(),
          UNIQUE (tenant_id, code)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE customer_segment_members (
          segment_id bigint NOT NULL REFERENCES customer_segments(id),
          tenant_id bigint NOT NULL,
          member_id bigint NOT NULL REFERENCES members(id),
          since timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (segment_id, member_id)
        )
        """
    )
    # The earn path: "which of this merchant's segments is this member in?"
    op.execute(
        """CREATE INDEX customer_segment_members_member ON customer_segment_members (tenant_id, member_id)"""
    )
    op.execute(f"GRANT SELECT ON customer_segments TO {app_role}")
    op.execute(f"GRANT INSERT (tenant_id, code, name, definition) ON customer_segments TO {app_role}")
    op.execute(f"GRANT UPDATE (name, definition, status, updated_at) ON customer_segments TO {app_role}")
    op.execute(f"GRANT SELECT ON customer_segment_members TO {app_role}")
    _protect("customer_segments", app_role, f"{OPERATOR} OR {OWN_TENANT}", OWN_TENANT)
    # A member reads their own memberships (the offers made to them), never a segment's roster.
    _protect("customer_segment_members", app_role, f"{OPERATOR} OR {OWN_TENANT} OR {OWN_MEMBER}", None)
    op.execute(
        f"""CREATE POLICY member_read ON customer_segments FOR SELECT TO {app_role} USING (
          alliance_role() = 'member' AND EXISTS (
            SELECT 1 FROM customer_segment_members m
            WHERE m.segment_id = customer_segments.id AND m.member_id = alliance_member_id()))"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS customer_segment_members")
    op.execute("DROP TABLE IF EXISTS customer_segments")
