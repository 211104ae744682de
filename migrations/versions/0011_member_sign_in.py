"""Member sign-in by phone and one-time code: the codes (hashed) and the throttle events.

Both tables belong to the token endpoint's narrow ``auth`` context, so several replicas share
the rate limits and the lockout through PostgreSQL. Finding the member behind a phone needs
to look across the whole alliance, which no request context may do; the owner-run
``auth_member_by_phone`` answers exactly that question and only in the ``auth`` context.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import execute_script

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

AUTH_ONLY = "alliance_role() = 'auth'"


def _protect(table: str, app_role: str) -> None:
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(f"CREATE POLICY app_access ON {table} TO {app_role} USING ({AUTH_ONLY}) WITH CHECK ({AUTH_ONLY})")


def upgrade() -> None:
    app_role = op.get_context().config.attributes["app_role"]
    execute_script(
        """
        CREATE TABLE otp_codes (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          phone text NOT NULL CHECK (phone ~ '^\\+[1-9][0-9]{6,14}$'),
          code_hash text NOT NULL CHECK (length(code_hash) BETWEEN 16 AND 200),
          attempts int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
          created_at timestamptz NOT NULL DEFAULT now(),
          expires_at timestamptz NOT NULL,
          consumed_at timestamptz
        );
        CREATE INDEX otp_codes_phone ON otp_codes (phone, id DESC);
        CREATE INDEX otp_codes_expiry ON otp_codes (expires_at);
        CREATE TABLE auth_throttle (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          kind text NOT NULL CHECK (kind IN ('otp_sent_phone', 'otp_sent_ip', 'otp_failed_phone')),
          subject text NOT NULL CHECK (length(subject) BETWEEN 1 AND 200),
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX auth_throttle_lookup ON auth_throttle (kind, subject, created_at);
        CREATE INDEX auth_throttle_age ON auth_throttle (created_at);

        CREATE FUNCTION auth_member_by_phone(p_phone text)
        RETURNS TABLE (member_id bigint, member_number text)
        LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
        BEGIN
          IF alliance_role() <> 'auth' THEN
            RAISE EXCEPTION 'auth_member_by_phone needs the auth context' USING ERRCODE = '42501';
          END IF;
          RETURN QUERY SELECT m.id, m.member_number FROM members m
            WHERE m.phone = p_phone AND m.status = 'active';
        END $$;
        """
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON otp_codes TO {app_role}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON auth_throttle TO {app_role}")
    _protect("otp_codes", app_role)
    _protect("auth_throttle", app_role)
    op.execute("REVOKE ALL ON FUNCTION auth_member_by_phone(text) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION auth_member_by_phone(text) TO {app_role}")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS auth_member_by_phone(text)")
    op.execute("DROP TABLE IF EXISTS auth_throttle, otp_codes")
