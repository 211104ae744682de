"""Audit trail: operator mutations recorded in the transaction that makes them; with the
idempotency records (every money-moving mutation, success or refusal), the audit log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import execute_script

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

AUDIT = """
CREATE TABLE audit_records (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  principal text NOT NULL CHECK (principal IN ('operator', 'merchant', 'member')),
  client_scope text NOT NULL,
  tenant_id bigint REFERENCES tenants(id),
  operation text NOT NULL CHECK (length(operation) BETWEEN 1 AND 100),
  input_digest text NOT NULL,
  outcome text NOT NULL CHECK (outcome IN ('ok', 'refused')),
  codes text[] NOT NULL DEFAULT '{}',
  request_id text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_records_tenant ON audit_records (tenant_id, id);
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON audit_records
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

-- The audit log: operator mutations and every money-moving mutation (its idempotency record),
-- newest first, keyset-paged by (created_at, source id). Merchants see their own.
CREATE FUNCTION audit_log(p_before timestamptz, p_limit int, p_operation text)
RETURNS TABLE (created_at timestamptz, principal text, client_scope text, tenant_code text, operation text,
               input_digest text, outcome text, codes text[], request_id text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT log.created_at, log.principal, log.client_scope, t.code, log.operation, log.input_digest, log.outcome,
    log.codes, log.request_id
  FROM (
    SELECT a.created_at, a.principal, a.client_scope, a.tenant_id, a.operation, a.input_digest, a.outcome,
      a.codes, a.request_id
    FROM audit_records a
    UNION ALL
    SELECT r.created_at, coalesce(c.role, 'member'), r.client_scope, c.tenant_id, r.operation, r.request_hash,
      CASE WHEN jsonb_array_length(r.response -> 'userErrors') = 0 THEN 'ok' ELSE 'refused' END,
      ARRAY(SELECT e ->> 'code' FROM jsonb_array_elements(r.response -> 'userErrors') e), NULL
    FROM idempotency_records r LEFT JOIN api_clients c ON c.client_id = r.client_scope
  ) log LEFT JOIN tenants t ON t.id = log.tenant_id
  WHERE (alliance_role() = 'operator' OR (alliance_role() = 'merchant' AND log.tenant_id = alliance_tenant_id()))
    AND (p_before IS NULL OR log.created_at < p_before)
    AND (p_operation IS NULL OR log.operation = p_operation)
  ORDER BY log.created_at DESC
  LIMIT p_limit
$$;
"""


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(AUDIT)
    # Insert only: the application role can neither change nor remove a record.
    op.execute(f"GRANT INSERT ON audit_records TO {app_role}")
    op.execute("ALTER TABLE audit_records ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE audit_records FORCE ROW LEVEL SECURITY")
    op.execute(
        """DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON audit_records TO %I USING (true)
        WITH CHECK (true)', current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_insert ON audit_records FOR INSERT TO {app_role} WITH CHECK (true)")
    op.execute("REVOKE ALL ON FUNCTION audit_log(timestamptz, int, text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION audit_log(timestamptz, int, text) TO {app_role}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS audit_log(timestamptz, int, text)")
    op.execute("DROP TABLE IF EXISTS audit_records")
