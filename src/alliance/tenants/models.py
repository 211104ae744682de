"""Tenant and store rows. Both are tenant-owned: row-level security limits a merchant to its own."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class TenantCategory(StrEnum):
    HOTEL = "hotel"
    AUTO_SERVICE = "auto_service"
    SUPERMARKET = "supermarket"
    RETAIL = "retail"
    BABY_GOODS = "baby_goods"
    CLOTHING = "clothing"
    OTHER = "other"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Tenant(SQLModel, table=True):
    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    code: str
    name: str
    category: str
    status: str = TenantStatus.ACTIVE.value
    # Placeholder until the settlement issue gives terms their own versioned table.
    settlement_terms: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})


class Store(SQLModel, table=True):
    __tablename__ = "stores"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id")
    code: str
    name: str
    city: str | None = None
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
