"""Idempotency keys for configuration mutations (createTenant, createStore, enrollMember).

Money-moving mutations remember their whole answer in the ledger's idempotency records; these
remember which object the first attempt created, so a retry returns that object.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    op.execute(
        """CREATE TABLE mutation_keys (
          client_scope text NOT NULL,
          idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
          operation text NOT NULL,
          request_digest text NOT NULL,
          entity_id bigint NOT NULL,
          created boolean NOT NULL DEFAULT true,
          created_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (client_scope, idempotency_key)
        )"""
    )
    op.execute(f"GRANT SELECT, INSERT ON mutation_keys TO {app_role}")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS mutation_keys")
