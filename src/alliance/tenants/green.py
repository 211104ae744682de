"""GREEN points for a partner tenant's environmental cooperation (operator → tenant).

A register, not a wallet: the points recognise the tenant (on its statements and in reports);
members' GREEN points live in the ledger like every other asset.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.errors import DomainError, NotFound
from alliance.tenants.service import tenant_by_code

MAX_POINTS = 1_000_000_000


class TenantGreenAward(SQLModel, table=True):
    __tablename__ = "tenant_green_awards"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int
    points: int
    reason: str
    client_scope: str
    idempotency_key: str
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})


async def award_tenant_green_points(
    session: AsyncSession, scope: str, idempotency_key: str, tenant_code: str, points: int, reason: str
) -> TenantGreenAward:
    """Idempotent under the client's key: a retry returns the award made the first time."""
    if not 1 <= len(idempotency_key) <= 200:
        raise DomainError("INVALID_IDEMPOTENCY_KEY", "idempotencyKey must be 1-200 chars", "idempotencyKey")
    earlier = (
        await session.exec(
            select(TenantGreenAward).where(
                TenantGreenAward.client_scope == scope, TenantGreenAward.idempotency_key == idempotency_key
            )
        )
    ).first()
    tenant = await tenant_by_code(session, tenant_code)
    if tenant is None or tenant.id is None:
        raise NotFound("tenant", "tenantCode")
    if earlier is not None:
        if (earlier.tenant_id, earlier.points, earlier.reason) != (tenant.id, points, reason.strip()):
            raise DomainError(
                "IDEMPOTENCY_KEY_REUSED", "this key was used with a different request", "idempotencyKey"
            )
        return earlier
    if not 0 < points <= MAX_POINTS:
        raise DomainError("INVALID_POINTS", f"points must be between 1 and {MAX_POINTS}", "points")
    if not 1 <= len(reason.strip()) <= 500:
        raise DomainError("INVALID_REASON", "reason must be 1-500 characters", "reason")
    award = TenantGreenAward(
        tenant_id=tenant.id,
        points=points,
        reason=reason.strip(),
        client_scope=scope,
        idempotency_key=idempotency_key,
    )
    session.add(award)
    try:
        await session.flush()
    except IntegrityError as exc:  # the same key, concurrently: the client retries and gets the first award
        raise DomainError(
            "CONCURRENT_RETRY", "the same request is being processed; retry", "idempotencyKey"
        ) from exc
    await session.refresh(award)
    return award


async def tenant_green_total(session: AsyncSession, tenant_id: int) -> int:
    total = await session.exec(
        select(func.coalesce(func.sum(TenantGreenAward.points), 0)).where(
            TenantGreenAward.tenant_id == tenant_id
        )
    )
    return int(total.one())


async def list_tenant_green_awards(
    session: AsyncSession, tenant_id: int, limit: int
) -> list[TenantGreenAward]:
    query = (
        select(TenantGreenAward)
        .where(TenantGreenAward.tenant_id == tenant_id)
        .order_by(col(TenantGreenAward.id).desc())
        .limit(limit)
    )
    return list((await session.exec(query)).all())
