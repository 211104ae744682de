"""Earning rule rows: a versioned, effective-dated rule of a tenant (or an alliance campaign)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class EarningRule(SQLModel, table=True):
    __tablename__ = "earning_rules"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int | None = None
    code: str
    kind: str
    config: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    funded_by: str = "merchant"
    effective_from: datetime
    effective_until: datetime | None = None
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
