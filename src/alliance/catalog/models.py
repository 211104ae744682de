"""Catalog rows. Rewards and points-payment settings are written by their merchant (row-level
security keeps each to its own); redemptions only by the catalog's SQL functions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlmodel import Field, SQLModel


class RewardKind(StrEnum):
    GOODS = "goods"
    SERVICE = "service"
    UPGRADE = "upgrade"
    COUPON = "coupon"


class RewardStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


class RedemptionStatus(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"


class Reward(SQLModel, table=True):
    __tablename__ = "rewards"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id")
    kind: str
    name: str
    description: str = ""
    asset: str = "POINTS"
    points: int
    sale_points: int | None = None
    sale_starts_at: datetime | None = None
    sale_ends_at: datetime | None = None
    stock: int | None = None
    available_from: datetime | None = None
    available_until: datetime | None = None
    min_tier: str | None = None
    per_member_limit: int | None = None
    status: str = RewardStatus.ACTIVE.value
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
    updated_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
    withdrawn_at: datetime | None = None

    def unit_points(self, at: datetime) -> int:
        """What one unit costs at ``at``: the sale price inside its window, else the regular price."""
        if (
            self.sale_points is not None
            and self.sale_starts_at is not None
            and self.sale_ends_at is not None
            and self.sale_starts_at <= at < self.sale_ends_at
        ):
            return self.sale_points
        return self.points


class Redemption(SQLModel, table=True):
    __tablename__ = "reward_redemptions"

    id: int = Field(primary_key=True)
    member_id: int
    member_number: str
    reward_id: int
    tenant_id: int
    asset: str
    quantity: int
    unit_points: int
    points: int
    status: str
    transaction_id: int
    reversal_id: int | None
    client_scope: str
    cancel_reason: str | None
    created_at: datetime
    closed_at: datetime | None


class PointsPaymentSettings(SQLModel, table=True):
    __tablename__ = "points_payment_settings"

    tenant_id: int = Field(primary_key=True, foreign_key="tenants.id")
    points_per_unit: int
    max_share: Decimal
    currency: str = "CNY"
    enabled: bool = True
    updated_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
