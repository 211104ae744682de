"""Customer segments (tables of revision 0015): a merchant writes the definition, the insights
refresh writes membership, member_count and refreshed_at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class CustomerSegment(SQLModel, table=True):
    __tablename__ = "customer_segments"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int
    code: str
    name: str
    definition: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    status: str = "active"
    member_count: int = 0
    refreshed_at: datetime | None = None
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
    updated_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
