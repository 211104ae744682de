"""Tenant and store operations. Callers pass a session already scoped by `Database.transaction`."""

from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.errors import DomainError, NotFound
from alliance.tenants.models import Store, Tenant, TenantCategory

TENANT_CODE = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
STORE_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_NAME = 200


def _check_name(name: str, field: str = "name") -> str:
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError("INVALID_NAME", f"name must be 1 to {MAX_NAME} characters", field)
    return name


async def create_tenant(session: AsyncSession, code: str, name: str, category: TenantCategory) -> Tenant:
    if not TENANT_CODE.fullmatch(code):
        raise DomainError(
            "INVALID_TENANT_CODE", "code must be a lowercase slug of 2-63 letters, digits or '-'", "code"
        )
    tenant = Tenant(code=code, name=_check_name(name), category=category.value)
    if await tenant_by_code(session, code) is not None:
        raise DomainError("TENANT_CODE_TAKEN", f"a tenant with code {code!r} exists", "code")
    session.add(tenant)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create with the same code
        raise DomainError("TENANT_CODE_TAKEN", f"a tenant with code {code!r} exists", "code") from exc
    await session.refresh(tenant)
    return tenant


async def tenant_by_code(session: AsyncSession, code: str) -> Tenant | None:
    return (await session.exec(select(Tenant).where(Tenant.code == code))).first()


async def tenant_by_id(session: AsyncSession, tenant_id: int) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def list_tenants(session: AsyncSession, after_id: int | None, limit: int) -> list[Tenant]:
    """Keyset page of tenants visible to the caller, in id order."""
    query = select(Tenant).order_by(col(Tenant.id)).limit(limit)
    if after_id is not None:
        query = query.where(col(Tenant.id) > after_id)
    return list((await session.exec(query)).all())


async def create_store(
    session: AsyncSession, tenant_code: str, code: str, name: str, city: str | None
) -> Store:
    tenant = await tenant_by_code(session, tenant_code)
    if tenant is None:
        raise NotFound("tenant", "tenantCode")
    if not STORE_CODE.fullmatch(code):
        raise DomainError("INVALID_STORE_CODE", "code must be 1-64 letters, digits, '_' or '-'", "code")
    if city is not None:
        city = city.strip() or None
        if city is not None and len(city) > 100:
            raise DomainError("INVALID_CITY", "city must be at most 100 characters", "city")
    assert tenant.id is not None
    taken = await session.exec(select(Store.id).where(Store.tenant_id == tenant.id, Store.code == code))
    if taken.first() is not None:
        raise DomainError("STORE_CODE_TAKEN", f"store {code!r} exists at this tenant", "code")
    store = Store(tenant_id=tenant.id, code=code, name=_check_name(name), city=city)
    session.add(store)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise DomainError("STORE_CODE_TAKEN", f"store {code!r} exists at this tenant", "code") from exc
    await session.refresh(store)
    return store


async def store_by_code(session: AsyncSession, tenant_id: int, code: str) -> Store | None:
    query = select(Store).where(Store.tenant_id == tenant_id, Store.code == code)
    return (await session.exec(query)).first()


async def list_stores(session: AsyncSession, tenant_id: int, after_id: int | None, limit: int) -> list[Store]:
    query = select(Store).where(Store.tenant_id == tenant_id).order_by(col(Store.id)).limit(limit)
    if after_id is not None:
        query = query.where(col(Store.id) > after_id)
    return list((await session.exec(query)).all())
