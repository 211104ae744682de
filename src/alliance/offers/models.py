"""The offer row: what members are told about a segment-restricted earning rule of the same code."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel


class Offer(SQLModel, table=True):
    __tablename__ = "offers"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int
    code: str
    segment_id: int
    title: str
    description: str = ""
    kind: str
    target: str | None = None  # the category or tag; None for every purchase
    multiplier: Decimal
    starts_at: datetime
    ends_at: datetime
    withdrawn_at: datetime | None = None
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
