"""GREEN points the operator awards to a partner tenant for B2B environmental cooperation.

These points belong to the tenant, not to a member, so they live in a register of their own
(append-only, visible to the tenant) rather than in member wallets.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import execute_script

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

GREEN = """
CREATE TABLE tenant_green_awards (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id bigint NOT NULL REFERENCES tenants(id),
  points bigint NOT NULL CHECK (points > 0 AND points <= 1000000000),
  reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
  client_scope text NOT NULL,
  idempotency_key text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (client_scope, idempotency_key)
);
CREATE INDEX tenant_green_awards_tenant ON tenant_green_awards (tenant_id, id);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON tenant_green_awards
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
"""


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(GREEN)
    op.execute(f"GRANT SELECT, INSERT ON tenant_green_awards TO {app_role}")
    op.execute("ALTER TABLE tenant_green_awards ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE tenant_green_awards FORCE ROW LEVEL SECURITY")
    op.execute(
        """DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON tenant_green_awards TO %I USING (true)
        WITH CHECK (true)', current_user); END $$"""
    )
    op.execute(
        f"""CREATE POLICY app_access ON tenant_green_awards TO {app_role}
        USING (alliance_role() = 'operator'
               OR (alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id()))
        WITH CHECK (alliance_role() = 'operator')"""
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS tenant_green_awards")
