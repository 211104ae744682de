"""Read models of the ledger tables (written only by the ledger's SQL functions)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class Asset(SQLModel, table=True):
    __tablename__ = "assets"

    code: str = Field(primary_key=True)
    name: str
    settlement_value: Decimal
    currency: str
    expiry_policy: str
    expiry_months: int | None
    policy_description: str
    time_zone: str


class LedgerTransaction(SQLModel, table=True):
    __tablename__ = "ledger_transactions"

    id: int = Field(primary_key=True)
    kind: str
    asset: str
    member_id: int
    tenant_id: int | None
    client_scope: str | None
    points: int
    amount: Decimal | None
    currency: str | None
    order_ref: str | None
    store_id: int | None
    reason: str | None
    reverses_id: int | None
    hold_id: int | None
    shortfall: int
    details: dict[str, Any] = Field(sa_column=Column(JSONB))
    effective_at: datetime
    created_at: datetime


class Lot(SQLModel, table=True):
    __tablename__ = "lots"

    id: int = Field(primary_key=True)
    member_id: int
    asset: str
    issuer_tenant_id: int | None
    transaction_id: int
    amount: int
    remaining: int
    issued_at: datetime
    expires_at: datetime | None
    restored_from_lot_id: int | None
