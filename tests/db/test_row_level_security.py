"""Row-level security, exercised with raw SQL as the application role.

The GraphQL layer filters nothing by tenant itself: every guarantee that merchant A cannot
see or write merchant B's rows comes from the database policies tested here. Raw SQL is the
point: a resolver that forgets a ``WHERE tenant_id = ...`` must still see nothing foreign.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db import AccessContext
from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.service import create_store
from tests.conftest import random_phone, unique

INSUFFICIENT_PRIVILEGE = "42501"
ENROLL = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } userErrors { code } } }"


def merchant(tenant_id: int) -> AccessContext:
    return AccessContext("merchant", tenant_id=tenant_id)


async def scalar(db, access: AccessContext, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db.transaction(access) as session:
        return (await run_sql(session, text(sql), params)).scalar()


async def rows(db, access: AccessContext, sql: str, **params):  # type: ignore[no-untyped-def]
    async with db.transaction(access) as session:
        return (await run_sql(session, text(sql), params)).all()


async def enroll(merchant_api, phone: str) -> str:  # type: ignore[no-untyped-def]
    data = await merchant_api(ENROLL, i={"phone": phone, "externalRef": unique("ref")})
    assert data["enrollMember"]["userErrors"] == []
    return data["enrollMember"]["member"]["memberNumber"]


@pytest.fixture
async def two_merchants(db, make_merchant):  # type: ignore[no-untyped-def]
    """Merchants A and B, each with one store and one enrolled member of its own."""
    a, b = await make_merchant(), await make_merchant()
    for m in (a, b):
        async with db.transaction(OPERATOR) as session:
            await create_store(session, m.code, "S1", "Store one", None)
    a_member = await enroll(a.api, random_phone())
    b_member = await enroll(b.api, random_phone())
    return a, b, a_member, b_member


async def test_sessions_run_as_the_application_role(db, settings) -> None:
    assert await scalar(db, OPERATOR, "SELECT current_user") == settings.app_role


async def test_application_role_is_neither_superuser_nor_bypassrls(db) -> None:
    found = await rows(
        db, OPERATOR, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert found == [(False, False)]


async def test_operator_context_sees_both_tenants(db, two_merchants) -> None:
    # The control for the tests below: B's rows exist and are visible to someone.
    a, b, _, _ = two_merchants
    for table in ("stores", "member_links", "api_clients"):
        count = await scalar(
            db,
            OPERATOR,
            f"SELECT count(*) FROM {table} WHERE tenant_id IN (:a, :b)",
            a=a.tenant_id,
            b=b.tenant_id,
        )
        assert count >= 2, table


@pytest.mark.parametrize("table", ["stores", "member_links", "api_clients"])
async def test_merchant_select_sees_no_rows_of_another_tenant(db, two_merchants, table: str) -> None:
    a, b, _, _ = two_merchants
    foreign = await rows(
        db, merchant(a.tenant_id), f"SELECT * FROM {table} WHERE tenant_id = :b", b=b.tenant_id
    )
    assert foreign == []
    # Without any filter at all, only A's own rows come back.
    tenant_ids = await rows(db, merchant(a.tenant_id), f"SELECT DISTINCT tenant_id FROM {table}")
    assert tenant_ids == [(a.tenant_id,)]


async def test_merchant_sees_only_its_own_tenant_row(db, two_merchants) -> None:
    a, b, _, _ = two_merchants
    assert await rows(db, merchant(a.tenant_id), "SELECT id FROM tenants") == [(a.tenant_id,)]
    assert await rows(db, merchant(a.tenant_id), "SELECT id FROM tenants WHERE id = :b", b=b.tenant_id) == []


async def test_members_linked_only_to_another_tenant_are_invisible(db, two_merchants) -> None:
    a, _, a_member, b_member = two_merchants
    visible = await rows(
        db,
        merchant(a.tenant_id),
        "SELECT member_number FROM members WHERE member_number IN (:a, :b)",
        a=a_member,
        b=b_member,
    )
    assert visible == [(a_member,)]
    assert (
        await scalar(db, OPERATOR, "SELECT count(*) FROM members WHERE member_number = :b", b=b_member) == 1
    )


async def test_merchant_cannot_insert_a_store_for_another_tenant(db, two_merchants) -> None:
    a, b, _, _ = two_merchants
    code = unique("X")
    with pytest.raises(DBAPIError) as raised:
        async with db.transaction(merchant(a.tenant_id)) as session:
            await run_sql(
                session,
                text("INSERT INTO stores (tenant_id, code, name) VALUES (:t, :c, 'Intruder')"),
                {"t": b.tenant_id, "c": code},
            )
    assert "row-level security" in str(raised.value)
    assert raised.value.orig.sqlstate == INSUFFICIENT_PRIVILEGE
    assert await scalar(db, OPERATOR, "SELECT count(*) FROM stores WHERE code = :c", c=code) == 0


async def test_merchant_can_insert_a_store_for_itself(db, two_merchants) -> None:
    # The control for the refusal above: the same statement for the merchant's own tenant works.
    a, _, _, _ = two_merchants
    code = unique("X")
    async with db.transaction(merchant(a.tenant_id)) as session:
        await run_sql(
            session,
            text("INSERT INTO stores (tenant_id, code, name) VALUES (:t, :c, 'Own')"),
            {"t": a.tenant_id, "c": code},
        )
    assert await scalar(db, OPERATOR, "SELECT tenant_id FROM stores WHERE code = :c", c=code) == a.tenant_id


async def test_merchant_cannot_move_its_store_to_another_tenant(db, two_merchants) -> None:
    a, b, _, _ = two_merchants
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.transaction(merchant(a.tenant_id)) as session:
            await run_sql(session, text("UPDATE stores SET tenant_id = :b"), {"b": b.tenant_id})


async def test_merchant_cannot_update_another_tenants_rows(db, two_merchants) -> None:
    a, b, _, _ = two_merchants
    async with db.transaction(merchant(a.tenant_id)) as session:
        result = await run_sql(
            session, text("UPDATE stores SET name = 'Hijacked' WHERE tenant_id = :b"), {"b": b.tenant_id}
        )
        assert result.rowcount == 0
    names = await rows(db, OPERATOR, "SELECT name FROM stores WHERE tenant_id = :b", b=b.tenant_id)
    assert ("Hijacked",) not in names


async def test_merchant_cannot_change_its_own_tenant_record(db, two_merchants) -> None:
    # Status and settlement terms are the operator's to set; the policy's WITH CHECK is operator-only.
    a, _, _, _ = two_merchants
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.transaction(merchant(a.tenant_id)) as session:
            await run_sql(
                session, text("UPDATE tenants SET status = 'suspended' WHERE id = :a"), {"a": a.tenant_id}
            )
    assert await scalar(db, OPERATOR, "SELECT status FROM tenants WHERE id = :a", a=a.tenant_id) == "active"


async def test_merchant_cannot_create_a_tenant(db) -> None:
    any_tenant = await scalar(db, OPERATOR, "SELECT min(id) FROM tenants")
    assert any_tenant is not None
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.transaction(merchant(any_tenant)) as session:
            await run_sql(
                session,
                text("INSERT INTO tenants (code, name, category) VALUES (:c, 'Rogue', 'other')"),
                {"c": unique("rogue")},
            )


async def test_application_role_cannot_delete_tenants(db, two_merchants) -> None:
    a, _, _, _ = two_merchants
    with pytest.raises(DBAPIError, match="permission denied") as raised:
        async with db.transaction(OPERATOR) as session:
            await run_sql(session, text("DELETE FROM tenants WHERE id = :a"), {"a": a.tenant_id})
    assert raised.value.orig.sqlstate == INSUFFICIENT_PRIVILEGE
    assert await scalar(db, OPERATOR, "SELECT count(*) FROM tenants WHERE id = :a", a=a.tenant_id) == 1


async def test_application_role_cannot_write_member_links_directly(db, two_merchants) -> None:
    # Links are only made by the enroll_member function, which enforces the reference rules.
    a, _, _, b_member = two_merchants
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.transaction(merchant(a.tenant_id)) as session:
            await run_sql(
                session,
                text(
                    "INSERT INTO member_links (tenant_id, member_id, external_ref)"
                    " SELECT :a, id, 'stolen' FROM members WHERE member_number = :n"
                ),
                {"a": a.tenant_id, "n": b_member},
            )


async def test_no_access_context_sees_nothing(db, two_merchants) -> None:
    # A connection that never set the access context (a code path that bypassed
    # Database.transaction) must not fall back to seeing everything.
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT alliance_role()")) == ""
        for table in ("tenants", "stores", "members", "member_links", "api_clients"):
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
        await conn.rollback()
    # ...while those rows do exist.
    assert await scalar(db, OPERATOR, "SELECT count(*) FROM tenants") >= 2


async def test_unknown_role_sees_nothing(db, two_merchants) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT set_config('alliance.role', 'admin', true)"))
        for table in ("tenants", "stores", "members", "member_links", "api_clients"):
            assert await conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
        await conn.rollback()
