"""Foundation: roles, access-context functions, tenants, stores, members, links, API clients, keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

from alliance.db.migrate import execute_script

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _roles() -> tuple[str, str | None]:
    attributes = op.get_context().config.attributes
    return attributes["app_role"], attributes.get("app_role_password")


def _protect(table: str, app_role: str, using: str, check: str | None = None) -> None:
    """FORCE row-level security on ``table``: the owner (who runs security-definer functions)
    sees everything, the application role only what its access context allows."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"""DO $$ BEGIN EXECUTE format('CREATE POLICY owner_all ON {table} TO %I USING (true) WITH CHECK (true)',
        current_user); END $$"""
    )
    op.execute(
        f"CREATE POLICY app_access ON {table} TO {app_role} USING ({using}) WITH CHECK ({check or using})"
    )


def upgrade() -> None:
    app_role, password = _roles()
    op.execute(
        f"""DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app_role}') THEN
            CREATE ROLE {app_role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
          END IF;
          -- An existing role must be just as powerless: refuse to run on a privileged one.
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{app_role}' AND (rolsuper OR rolbypassrls)) THEN
            RAISE EXCEPTION 'application role {app_role} must be NOSUPERUSER NOBYPASSRLS';
          END IF;
        END $$"""
    )
    if password:
        op.execute(f"ALTER ROLE {app_role} PASSWORD {_literal(password)}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {app_role}")
    op.execute(f"GRANT SELECT ON alembic_version TO {app_role}")

    # The access context, read from transaction-local settings set by the application.
    execute_script(
        """
        CREATE FUNCTION alliance_role() RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS
          $$ SELECT coalesce(current_setting('alliance.role', true), '') $$;
        CREATE FUNCTION alliance_tenant_id() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS
          $$ SELECT nullif(current_setting('alliance.tenant_id', true), '')::bigint $$;
        CREATE FUNCTION alliance_member_id() RETURNS bigint LANGUAGE sql STABLE PARALLEL SAFE AS
          $$ SELECT nullif(current_setting('alliance.member_id', true), '')::bigint $$;
        """
    )

    execute_script(
        """
        CREATE TABLE tenants (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          code text NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
          name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
          category text NOT NULL CHECK (category IN
            ('hotel', 'auto_service', 'supermarket', 'retail', 'baby_goods', 'clothing', 'other')),
          status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
          settlement_terms jsonb NOT NULL DEFAULT '{}'::jsonb,
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE stores (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          tenant_id bigint NOT NULL REFERENCES tenants(id),
          code text NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
          name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
          city text CHECK (city IS NULL OR length(city) BETWEEN 1 AND 100),
          created_at timestamptz NOT NULL DEFAULT now(),
          UNIQUE (tenant_id, code)
        );
        CREATE SEQUENCE member_number_seq START 100000001;
        CREATE TABLE members (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          member_number text NOT NULL UNIQUE
            DEFAULT '8' || lpad(nextval('member_number_seq')::text, 9, '0'),
          phone text NOT NULL UNIQUE CHECK (phone ~ '^\\+[1-9][0-9]{6,14}$'),
          name text CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200),
          birthday date,
          status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
          created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE member_links (
          tenant_id bigint NOT NULL REFERENCES tenants(id),
          member_id bigint NOT NULL REFERENCES members(id),
          external_ref text NOT NULL CHECK (length(external_ref) BETWEEN 1 AND 128),
          created_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (tenant_id, member_id),
          UNIQUE (tenant_id, external_ref)
        );
        CREATE INDEX member_links_member ON member_links (member_id);
        CREATE TABLE api_clients (
          id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
          client_id text NOT NULL UNIQUE,
          secret_hash text NOT NULL,
          name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
          role text NOT NULL CHECK (role IN ('operator', 'merchant')),
          tenant_id bigint REFERENCES tenants(id),
          scopes text[] NOT NULL,
          status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
          created_at timestamptz NOT NULL DEFAULT now(),
          CHECK ((role = 'merchant') = (tenant_id IS NOT NULL))
        );
        CREATE TABLE signing_keys (
          kid text PRIMARY KEY,
          private_jwk jsonb NOT NULL,
          created_at timestamptz NOT NULL DEFAULT now(),
          retired_at timestamptz
        );
        """
    )

    op.execute(f"GRANT SELECT, INSERT, UPDATE ON tenants, stores, api_clients TO {app_role}")
    op.execute(f"GRANT SELECT ON members TO {app_role}")
    op.execute(f"GRANT SELECT ON member_links TO {app_role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON signing_keys TO {app_role}")

    op_ = "alliance_role() = 'operator'"
    own_tenant = "(alliance_role() = 'merchant' AND tenant_id = alliance_tenant_id())"
    _protect(
        "tenants",
        app_role,
        using=f"{op_} OR alliance_role() IN ('member', 'auth')"
        " OR (alliance_role() = 'merchant' AND id = alliance_tenant_id())",
        check=op_,
    )
    _protect(
        "stores",
        app_role,
        using=f"{op_} OR alliance_role() = 'member' OR {own_tenant}",
        check=f"{op_} OR {own_tenant}",
    )
    _protect(
        "members",
        app_role,
        using=f"""{op_}
          OR (alliance_role() = 'member' AND id = alliance_member_id())
          OR (alliance_role() = 'merchant' AND EXISTS (
                SELECT 1 FROM member_links l WHERE l.member_id = members.id AND l.tenant_id = alliance_tenant_id()))""",
    )
    _protect(
        "member_links",
        app_role,
        using=f"{op_} OR {own_tenant} OR (alliance_role() = 'member' AND member_id = alliance_member_id())",
    )
    _protect(
        "api_clients",
        app_role,
        using=f"{op_} OR alliance_role() = 'auth' OR {own_tenant}",
        check=f"{op_} OR {own_tenant}",
    )

    # Private signing keys: only the operator context (key loading and rotation) may touch them.
    _protect("signing_keys", app_role, using="alliance_role() = 'operator'")

    # Enrolment must find a member by phone across the whole alliance, which the merchant's
    # context cannot see; this owner-run function does exactly that and nothing more.
    execute_script(
        """
        CREATE FUNCTION enroll_member(p_phone text, p_external_ref text, p_name text, p_birthday date)
        RETURNS TABLE (member_id bigint, member_number text, created boolean, error_code text)
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
        DECLARE
          v_tenant bigint := alliance_tenant_id();
          v_member members%ROWTYPE;
          v_ref_phone text;
          v_linked_ref text;
          v_created boolean := false;
        BEGIN
          IF alliance_role() <> 'merchant' OR v_tenant IS NULL THEN
            RAISE EXCEPTION 'enroll_member needs a merchant context' USING ERRCODE = '42501';
          END IF;
          SELECT m.phone INTO v_ref_phone FROM member_links l JOIN members m ON m.id = l.member_id
            WHERE l.tenant_id = v_tenant AND l.external_ref = p_external_ref;
          IF FOUND AND v_ref_phone <> p_phone THEN
            RETURN QUERY SELECT NULL::bigint, NULL::text, false, 'EXTERNAL_REF_TAKEN'::text;
            RETURN;
          END IF;
          INSERT INTO members (phone, name, birthday) VALUES (p_phone, p_name, p_birthday)
            ON CONFLICT (phone) DO NOTHING RETURNING * INTO v_member;
          IF FOUND THEN
            v_created := true;
          ELSE
            SELECT * INTO STRICT v_member FROM members m WHERE m.phone = p_phone;
          END IF;
          SELECT l.external_ref INTO v_linked_ref FROM member_links l
            WHERE l.tenant_id = v_tenant AND l.member_id = v_member.id;
          IF FOUND THEN
            -- Enrolling the same person twice under the same reference is a harmless retry.
            RETURN QUERY SELECT v_member.id, v_member.member_number, false,
              CASE WHEN v_linked_ref = p_external_ref THEN NULL ELSE 'MEMBER_ALREADY_ENROLLED' END;
            RETURN;
          END IF;
          INSERT INTO member_links (tenant_id, member_id, external_ref) VALUES (v_tenant, v_member.id, p_external_ref)
            ON CONFLICT DO NOTHING;
          IF NOT FOUND THEN
            -- A concurrent enrolment won the race: a retry of ours, or a clash on the reference.
            SELECT l.external_ref INTO v_linked_ref FROM member_links l
              WHERE l.tenant_id = v_tenant AND l.member_id = v_member.id;
            RETURN QUERY SELECT v_member.id, v_member.member_number, false,
              CASE WHEN v_linked_ref = p_external_ref THEN NULL
                   WHEN v_linked_ref IS NOT NULL THEN 'MEMBER_ALREADY_ENROLLED'
                   ELSE 'EXTERNAL_REF_TAKEN' END;
            RETURN;
          END IF;
          RETURN QUERY SELECT v_member.id, v_member.member_number, v_created, NULL::text;
        END $$;
        """
    )
    op.execute("REVOKE ALL ON FUNCTION enroll_member(text, text, text, date) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION enroll_member(text, text, text, date) TO {app_role}")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def downgrade() -> None:
    app_role, _ = _roles()
    op.execute("DROP FUNCTION IF EXISTS enroll_member(text, text, text, date)")
    op.execute(
        "DROP TABLE IF EXISTS signing_keys, api_clients, member_links, members, stores, tenants CASCADE"
    )
    op.execute("DROP SEQUENCE IF EXISTS member_number_seq")
    op.execute("DROP FUNCTION IF EXISTS alliance_role(), alliance_tenant_id(), alliance_member_id()")
    op.execute(f"REVOKE ALL ON alembic_version FROM {app_role}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {app_role}")
