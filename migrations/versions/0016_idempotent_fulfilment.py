"""fulfilRedemption under an idempotency key: a retry of a fulfilment that went through gets the
original answer instead of REDEMPTION_NOT_PENDING (a client that lost the response cannot tell
"already done by me" from "done by someone else" otherwise).

The keyed variant wraps the existing function: the remembered answer is written in the same
transaction as the status change, as every money-moving call does. Without a key the two-argument
function keeps its meaning (fulfilling twice is refused).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

SIGNATURE = "catalog_fulfil_redemption(text, text, text, bigint, bigint)"


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    op.execute(
        """
        CREATE FUNCTION catalog_fulfil_redemption(
          p_scope text, p_key text, p_hash text, p_tenant bigint, p_redemption bigint)
        RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = public
        SET plan_cache_mode = force_generic_plan AS $$
        DECLARE v_replay jsonb := ledger_replay(p_scope, p_key, 'fulfil_redemption', p_hash);
        BEGIN
          IF v_replay IS NOT NULL THEN RETURN v_replay; END IF;
          RETURN ledger_remember(p_scope, p_key, 'fulfil_redemption', p_hash,
            catalog_fulfil_redemption(p_tenant, p_redemption));
        END $$
        """
    )
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO {app_role}")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
