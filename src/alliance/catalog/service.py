"""Catalog operations: merchants manage rewards; members redeem them or pay with points.

Managing a reward is a plain write in the caller's scoped transaction (row-level security keeps
a merchant to its own). Everything that moves points — redeeming, cancelling, withdrawing a
reward with pending redemptions, paying with points — is one call of a SECURITY DEFINER
function (``migrations/sql/0006_catalog.sql``) that reuses the ledger's internals and stores
its answer under the caller's idempotency key, exactly like the ledger's own postings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, false, func, or_, text
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.catalog.models import PointsPaymentSettings, Redemption, Reward, RewardKind, RewardStatus
from alliance.db import Database
from alliance.db.database import run_sql
from alliance.errors import DomainError, NotFound
from alliance.ledger import limits
from alliance.ledger.service import (
    Payload,
    Poster,
    check_asset,
    check_key,
    check_points,
    check_text,
    idempotency_params,
    post_idempotent,
)
from alliance.tenants.models import Tenant

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_QUANTITY = 100
MAX_STOCK = 1_000_000_000
MAX_PER_MEMBER = 1_000_000
MAX_POINTS_PER_UNIT = 10_000
SHARE_DECIMALS = 4

# Fields of a reward a merchant may set, by model attribute.
EDITABLE = (
    "kind",
    "name",
    "description",
    "points",
    "sale_points",
    "sale_starts_at",
    "sale_ends_at",
    "stock",
    "available_from",
    "available_until",
    "min_tier",
    "per_member_limit",
)
_FIELD = {
    "sale_points": "salePoints",
    "sale_starts_at": "saleStartsAt",
    "sale_ends_at": "saleEndsAt",
    "available_from": "availableFrom",
    "available_until": "availableUntil",
    "min_tier": "minTier",
    "per_member_limit": "perMemberLimit",
}


def _field(attribute: str) -> str:
    return _FIELD.get(attribute, attribute)


# -- rewards: validation -------------------------------------------------------------------------


def _check_instant(value: datetime | None, attribute: str) -> None:
    if value is not None and value.tzinfo is None:
        raise DomainError(
            "INVALID_DATETIME", f"{_field(attribute)} needs a time zone offset", _field(attribute)
        )


async def _check_reward(session: AsyncSession, reward: Reward) -> None:
    """Every rule a reward must satisfy, on the whole row (so a partial update is checked in context)."""
    name = reward.name.strip() if reward.name else ""
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError("INVALID_NAME", f"name must be 1 to {MAX_NAME} characters", "name")
    reward.name = name
    reward.description = (reward.description or "").strip()
    if len(reward.description) > MAX_DESCRIPTION:
        raise DomainError(
            "TOO_LONG", f"description must be at most {MAX_DESCRIPTION} characters", "description"
        )
    check_points(reward.points)
    for attribute in ("sale_starts_at", "sale_ends_at", "available_from", "available_until"):
        _check_instant(getattr(reward, attribute), attribute)
    sale = (reward.sale_points, reward.sale_starts_at, reward.sale_ends_at)
    if any(part is not None for part in sale):
        if any(part is None for part in sale):
            raise DomainError(
                "INVALID_SALE", "a sale needs salePoints, saleStartsAt and saleEndsAt together", "salePoints"
            )
        assert reward.sale_points is not None and reward.sale_starts_at and reward.sale_ends_at
        if not 0 < reward.sale_points < reward.points:
            raise DomainError(
                "INVALID_SALE_PRICE", "salePoints must be positive and below the regular points", "salePoints"
            )
        if reward.sale_starts_at >= reward.sale_ends_at:
            raise DomainError("INVALID_SALE_WINDOW", "saleStartsAt must be before saleEndsAt", "saleEndsAt")
    if (
        reward.available_from is not None
        and reward.available_until is not None
        and reward.available_from >= reward.available_until
    ):
        raise DomainError("INVALID_WINDOW", "availableFrom must be before availableUntil", "availableUntil")
    if reward.stock is not None and not 0 <= reward.stock <= MAX_STOCK:
        raise DomainError("INVALID_STOCK", f"stock must be 0-{MAX_STOCK}, or null for unlimited", "stock")
    if reward.per_member_limit is not None and not 1 <= reward.per_member_limit <= MAX_PER_MEMBER:
        raise DomainError(
            "INVALID_LIMIT", f"perMemberLimit must be 1-{MAX_PER_MEMBER}, or null", "perMemberLimit"
        )
    if reward.min_tier is not None:
        found = await run_sql(session, text("SELECT 1 FROM tiers WHERE code = :c"), {"c": reward.min_tier})
        if found.first() is None:
            raise DomainError("UNKNOWN_TIER", f"no tier {reward.min_tier!r}", "minTier")


# -- rewards: writes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RewardSpec:
    kind: RewardKind
    name: str
    points: int
    description: str = ""
    asset: str = "POINTS"
    sale_points: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    stock: int | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    min_tier: str | None = None
    per_member_limit: int | None = None


async def create_reward(session: AsyncSession, tenant_id: int, spec: RewardSpec) -> Reward:
    """A new active reward of the merchant's catalog."""
    check_asset(spec.asset)
    found = await run_sql(session, text("SELECT 1 FROM assets WHERE code = :a"), {"a": spec.asset})
    if found.first() is None:
        raise DomainError("UNKNOWN_ASSET", f"no asset {spec.asset!r}", "asset")
    reward = Reward(
        tenant_id=tenant_id,
        kind=spec.kind.value,
        name=spec.name,
        description=spec.description,
        asset=spec.asset,
        points=spec.points,
        sale_points=spec.sale_points,
        sale_starts_at=spec.sale_starts_at,
        sale_ends_at=spec.sale_ends_at,
        stock=spec.stock,
        available_from=spec.available_from,
        available_until=spec.available_until,
        min_tier=spec.min_tier,
        per_member_limit=spec.per_member_limit,
    )
    await _check_reward(session, reward)
    session.add(reward)
    await session.flush()
    await session.refresh(reward)
    return reward


async def update_reward(session: AsyncSession, reward_id: int, changes: dict[str, Any]) -> Reward:
    """Change some fields of the caller's own reward; the result is checked as a whole.

    Another merchant's reward is invisible under row-level security: REWARD_NOT_FOUND.
    """
    assert set(changes) <= set(EDITABLE), changes
    reward = (
        await session.exec(select(Reward).where(Reward.id == reward_id).with_for_update(key_share=True))
    ).first()
    if reward is None:
        raise NotFound("reward", "rewardId")
    if reward.status != RewardStatus.ACTIVE.value:
        raise DomainError("REWARD_WITHDRAWN", "a withdrawn reward cannot be changed", "rewardId")
    for attribute, value in changes.items():
        setattr(reward, attribute, value.value if isinstance(value, RewardKind) else value)
    await _check_reward(session, reward)
    reward.updated_at = datetime.now(UTC)
    session.add(reward)
    await session.flush()
    await session.refresh(reward)
    return reward


async def withdraw_reward(
    db: Database, poster: Poster, *, idempotency_key: str, reward_id: int, note: str | None
) -> Payload:
    """No more redemptions; pending ones are cancelled and their points restored (rule 7)."""
    assert poster.tenant_id is not None, "withdrawing is a merchant operation"
    note = check_text(note, "note", limits.MAX_REASON - 20)
    reason = "REWARD_WITHDRAWN" if note is None else f"REWARD_WITHDRAWN: {note}"
    request = {"reward": reward_id, "reason": reason}
    return await post_idempotent(
        db,
        "catalog_withdraw_reward",
        idempotency_params(poster, "withdraw_reward", idempotency_key, request)
        | {"p_tenant": poster.tenant_id, "p_reward": reward_id, "p_reason": reason},
    )


# -- rewards: reads ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RewardRow:
    reward: Reward
    tenant_code: str
    tenant_name: str


@dataclass(frozen=True, slots=True)
class RewardFilter:
    tenant_code: str | None = None
    kind: RewardKind | None = None
    status: RewardStatus | None = None
    max_points: int | None = None
    # Asset -> the member's available balance; rewards are kept (or, with affordable False,
    # dropped) when their current price fits it.
    affordable: bool | None = None
    balances: dict[str, int] | None = None


def _current_points() -> Any:
    now = func.now()
    return case(
        (
            and_(
                col(Reward.sale_points).is_not(None),
                col(Reward.sale_starts_at) <= now,
                col(Reward.sale_ends_at) > now,
            ),
            col(Reward.sale_points),
        ),
        else_=col(Reward.points),
    )


async def list_rewards(
    session: AsyncSession, where: RewardFilter, active_only: bool, after_id: int | None, limit: int
) -> list[RewardRow]:
    """Rewards visible to the caller in id order: its own for a merchant, all for the operator,
    the whole alliance's active catalog for a member."""
    if where.max_points is not None and where.max_points < 0:
        raise DomainError("INVALID_POINTS", "maxPoints cannot be negative", "maxPoints")
    query = select(Reward, Tenant.code, Tenant.name).join(Tenant, col(Tenant.id) == col(Reward.tenant_id))
    if active_only:
        query = query.where(Reward.status == RewardStatus.ACTIVE.value)
    if where.status is not None:
        query = query.where(Reward.status == where.status.value)
    if where.tenant_code is not None:
        query = query.where(Tenant.code == where.tenant_code)
    if where.kind is not None:
        query = query.where(Reward.kind == where.kind.value)
    price = _current_points()
    if where.max_points is not None:
        query = query.where(price <= where.max_points)
    if where.affordable is not None:
        balances = where.balances or {}
        fits = or_(
            false(), *(and_(Reward.asset == asset, price <= points) for asset, points in balances.items())
        )
        query = query.where(fits if where.affordable else ~fits)
    if after_id is not None:
        query = query.where(col(Reward.id) > after_id)
    query = query.order_by(col(Reward.id)).limit(limit)
    rows = (await session.exec(query)).all()
    return [RewardRow(reward, code, name) for reward, code, name in rows]


async def reward_by_id(session: AsyncSession, reward_id: int) -> RewardRow | None:
    query = (
        select(Reward, Tenant.code, Tenant.name)
        .join(Tenant, col(Tenant.id) == col(Reward.tenant_id))
        .where(Reward.id == reward_id)
    )
    row = (await session.exec(query)).first()
    return None if row is None else RewardRow(*row)


# -- redemptions ---------------------------------------------------------------------------------


def _check_quantity(quantity: int) -> int:
    if not 1 <= quantity <= MAX_QUANTITY:
        raise DomainError("INVALID_QUANTITY", f"quantity must be between 1 and {MAX_QUANTITY}", "quantity")
    return quantity


async def redeem_reward(
    db: Database,
    poster: Poster,
    *,
    member_id: int | None,
    idempotency_key: str,
    member_number: str | None,
    reward_id: int,
    quantity: int,
) -> Payload:
    """Redeem ``quantity`` of a reward: a merchant for a linked member (its own rewards only), or a
    member from its own wallet (any merchant's reward). One SQL call; a PENDING redemption."""
    assert (poster.tenant_id is None) != (member_id is None), "a merchant or a member redeems"
    if member_number is None and member_id is None:
        raise DomainError("REQUIRED", "memberNumber is required", "memberNumber")
    request = {"member": member_number, "reward": reward_id, "quantity": _check_quantity(quantity)}
    return await post_idempotent(
        db,
        "catalog_redeem_reward",
        idempotency_params(poster, "redeem_reward", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_member": member_id,
            "p_member_number": member_number,
            "p_reward": reward_id,
            "p_quantity": quantity,
        },
    )


async def fulfil_redemption(
    db: Database, poster: Poster, *, redemption_id: int, idempotency_key: str | None = None
) -> Payload:
    """PENDING -> FULFILLED. Moves no points. Fulfilling twice is refused (REDEMPTION_NOT_PENDING)
    unless it is a retry under the first attempt's idempotency key, which gets the first answer."""
    assert poster.tenant_id is not None, "fulfilment is a merchant operation"
    if idempotency_key is None:
        payload = await db.call("SELECT catalog_fulfil_redemption($1, $2)", poster.tenant_id, redemption_id)
        assert isinstance(payload, dict) and "userErrors" in payload, payload
        return payload
    return await post_idempotent(
        db,
        "catalog_fulfil_redemption",
        idempotency_params(poster, "fulfil_redemption", idempotency_key, {"redemption": redemption_id})
        | {"p_tenant": poster.tenant_id, "p_redemption": redemption_id},
    )


async def cancel_redemption(
    db: Database, poster: Poster, *, idempotency_key: str, redemption_id: int, reason: str | None
) -> Payload:
    """PENDING -> CANCELLED: the points go back into the lots they came from, the stock returns."""
    assert poster.tenant_id is not None, "cancelling is a merchant operation"
    note = check_text(reason, "reason", limits.MAX_REASON - 24)
    full_reason = "REDEMPTION_CANCELLED" if note is None else f"REDEMPTION_CANCELLED: {note}"
    request = {"redemption": redemption_id, "reason": full_reason}
    return await post_idempotent(
        db,
        "catalog_cancel_redemption",
        idempotency_params(poster, "cancel_redemption", idempotency_key, request)
        | {"p_tenant": poster.tenant_id, "p_redemption": redemption_id, "p_reason": full_reason},
    )


@dataclass(frozen=True, slots=True)
class RedemptionRow:
    redemption: Redemption
    reward: RewardRow


@dataclass(frozen=True, slots=True)
class RedemptionFilter:
    status: str | None = None
    member_number: str | None = None
    reward_id: int | None = None


async def list_redemptions(
    session: AsyncSession, where: RedemptionFilter, after_id: int | None, limit: int
) -> list[RedemptionRow]:
    """Redemptions visible to the caller in id order: a merchant's own, a member's own, or all."""
    query = (
        select(Redemption, Reward, Tenant.code, Tenant.name)
        .join(Reward, col(Reward.id) == col(Redemption.reward_id))
        .join(Tenant, col(Tenant.id) == col(Redemption.tenant_id))
    )
    if where.status is not None:
        query = query.where(Redemption.status == where.status)
    if where.member_number is not None:
        query = query.where(Redemption.member_number == where.member_number)
    if where.reward_id is not None:
        query = query.where(Redemption.reward_id == where.reward_id)
    if after_id is not None:
        query = query.where(col(Redemption.id) > after_id)
    query = query.order_by(col(Redemption.id)).limit(limit)
    rows = (await session.exec(query)).all()
    return [RedemptionRow(r, RewardRow(reward, code, name)) for r, reward, code, name in rows]


# -- points as payment ---------------------------------------------------------------------------


def _check_bill(amount: Decimal) -> Decimal:
    if not amount.is_finite() or amount.as_tuple().exponent < -limits.AMOUNT_DECIMALS:  # type: ignore[operator]
        raise DomainError("INVALID_AMOUNT", "billAmount has more than 2 decimal places", "billAmount")
    if not Decimal(0) < amount <= limits.MAX_AMOUNT:
        raise DomainError(
            "INVALID_AMOUNT", f"billAmount must be positive and at most {limits.MAX_AMOUNT}", "billAmount"
        )
    return amount


async def set_points_payment(
    session: AsyncSession, tenant_id: int, *, points_per_unit: int, max_share: Decimal, enabled: bool
) -> PointsPaymentSettings:
    """The merchant's rate (points per currency unit) and the largest share of a bill points may pay."""
    if not 1 <= points_per_unit <= MAX_POINTS_PER_UNIT:
        raise DomainError("INVALID_RATE", f"pointsPerUnit must be 1-{MAX_POINTS_PER_UNIT}", "pointsPerUnit")
    if (
        not max_share.is_finite()
        or max_share.as_tuple().exponent < -SHARE_DECIMALS  # type: ignore[operator]
        or not Decimal(0) < max_share <= 1
    ):
        raise DomainError(
            "INVALID_SHARE", f"maxShare must be above 0 and at most 1, {SHARE_DECIMALS} decimals", "maxShare"
        )
    values = {
        "tenant_id": tenant_id,
        "points_per_unit": points_per_unit,
        "max_share": max_share,
        "enabled": enabled,
        "updated_at": func.now(),
    }
    statement = (
        insert(PointsPaymentSettings)
        .values(**values)
        .on_conflict_do_update(
            index_elements=["tenant_id"],
            set_={key: value for key, value in values.items() if key != "tenant_id"},
        )
    )
    await run_sql(session, statement)
    settings = await points_payment_settings(session, tenant_id)
    assert settings is not None
    return settings


async def points_payment_settings(session: AsyncSession, tenant_id: int) -> PointsPaymentSettings | None:
    query = select(PointsPaymentSettings).where(PointsPaymentSettings.tenant_id == tenant_id)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def pay_with_points(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    member_number: str,
    bill_amount: Decimal,
    points: int,
    order_ref: str,
    store_code: str | None,
) -> Payload:
    """Points pay part of a bill at the calling merchant: a redemption worth points / rate, refused
    with OVER_ALLOWED_SHARE beyond the merchant's maximum share of the bill."""
    assert poster.tenant_id is not None, "paying with points is a merchant operation"
    check_key(idempotency_key)
    request = {
        "member": member_number,
        "bill": str(_check_bill(bill_amount)),
        "points": check_points(points),
        "order": check_text(order_ref, "orderRef", limits.MAX_ORDER_REF, required=True),
        "store": store_code,
    }
    return await post_idempotent(
        db,
        "catalog_pay_with_points",
        idempotency_params(poster, "pay_with_points", idempotency_key, request)
        | {
            "p_tenant": poster.tenant_id,
            "p_member_number": member_number,
            "p_bill": bill_amount,
            "p_points": points,
            "p_order_ref": request["order"],
            "p_store_code": store_code,
        },
    )
