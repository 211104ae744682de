"""Tier rows: the operator's definitions, each member's current tier, and the audit of changes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel


class Tier(SQLModel, table=True):
    __tablename__ = "tiers"

    code: str = Field(primary_key=True)
    name: str
    rank: int
    qualifying_points: int
    earn_multiplier: Decimal = Decimal(1)
    benefits: str = ""
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})


class MemberTier(SQLModel, table=True):
    __tablename__ = "member_tiers"

    member_id: int = Field(primary_key=True)
    tier_code: str
    since: datetime
    below_since: datetime | None = None


class TierChange(SQLModel, table=True):
    """One tier change; append-only (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "tier_changes"

    id: int = Field(primary_key=True)
    member_id: int
    from_tier: str
    to_tier: str
    reason: str  # 'qualified' | 'grace_expired' | 'operator'
    rolling_points: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MemberTierStatus:
    """A member's current tier; members never moved up hold the base tier since enrolment."""

    code: str
    name: str
    rank: int
    earn_multiplier: Decimal
    since: datetime
    below_since: datetime | None


@dataclass(frozen=True, slots=True)
class TierProgress:
    current_code: str
    next_code: str | None
    rolling_points: int
    points_to_next: int | None
    points_to_keep: int
    below_since: datetime | None
    grace_ends_at: datetime | None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What one nightly evaluation did."""

    evaluated: int
    upgraded: int
    downgraded: int
    grace_started: int
    grace_ended: int


@dataclass(frozen=True, slots=True)
class TierChangeRow:
    change: TierChange
    member_number: str
