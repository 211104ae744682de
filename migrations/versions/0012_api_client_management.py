"""API client management: revocation and secret-rotation times, and the `clients:manage` scope.

Clients that were granted everything their role allowed get the new scope (they would have had
it, had it existed); clients created with a narrower grant keep exactly what they were given.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# The role defaults as they were before this revision (src/alliance/auth/principal.py).
_MERCHANT_BEFORE = [
    "catalog:write",
    "ledger:read",
    "members:read",
    "members:write",
    "points:earn",
    "points:redeem",
    "rules:write",
    "settlement:read",
    "stores:write",
    "tenants:read",
    "tiers:read",
]
_OPERATOR_BEFORE = sorted(
    [*_MERCHANT_BEFORE, "tenants:write", "points:adjust", "settlement:write", "tiers:write"]
)


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join(f"'{value}'" for value in values) + "]::text[]"


def upgrade() -> None:
    op.execute(
        """ALTER TABLE api_clients
          ADD COLUMN revoked_at timestamptz,
          ADD COLUMN secret_rotated_at timestamptz"""
    )
    op.execute("UPDATE api_clients SET revoked_at = created_at WHERE status = 'revoked'")
    op.execute(
        """ALTER TABLE api_clients ADD CONSTRAINT api_clients_revoked_at
          CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))"""
    )
    # The revocation list each replica loads: recently revoked clients, found without a scan.
    op.execute("CREATE INDEX api_clients_revoked ON api_clients (revoked_at) WHERE revoked_at IS NOT NULL")
    for role, before in (("operator", _OPERATOR_BEFORE), ("merchant", _MERCHANT_BEFORE)):
        op.execute(
            f"""UPDATE api_clients SET scopes = array_append(scopes, 'clients:manage')
              WHERE role = '{role}' AND scopes @> {_array(before)}
                AND NOT scopes @> ARRAY['clients:manage']::text[]"""
        )


def downgrade() -> None:
    op.execute("UPDATE api_clients SET scopes = array_remove(scopes, 'clients:manage')")
    op.execute("DROP INDEX IF EXISTS api_clients_revoked")
    op.execute("ALTER TABLE api_clients DROP CONSTRAINT IF EXISTS api_clients_revoked_at")
    op.execute(
        "ALTER TABLE api_clients DROP COLUMN IF EXISTS revoked_at, DROP COLUMN IF EXISTS secret_rotated_at"
    )
