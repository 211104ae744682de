"""Read models of the settlement tables (written only by the settlement SQL functions)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel


class SettlementTerms(SQLModel, table=True):
    __tablename__ = "settlement_terms"

    id: int = Field(primary_key=True)
    asset: str
    model: str
    settlement_value: Decimal
    currency: str
    fee_bps: int
    period_length: str
    time_zone: str
    effective_from: datetime


class SettlementBatch(SQLModel, table=True):
    __tablename__ = "settlement_batches"

    id: int = Field(primary_key=True)
    asset: str
    period_start: datetime
    period_end: datetime
    status: str
    terms_id: int
    line_points: int
    cross_redeemed_points: int
    reversed_points: int
    gross_amount: Decimal
    fee_amount: Decimal
    computed_at: datetime
    approved_at: datetime | None
    paid_at: datetime | None


class SettlementLine(SQLModel, table=True):
    __tablename__ = "settlement_lines"

    id: int = Field(primary_key=True)
    batch_id: int
    issuer_tenant_id: int
    redeemer_tenant_id: int
    points: int
    gross_amount: Decimal
    fee_amount: Decimal
    net_amount: Decimal


class SettlementPosition(SQLModel, table=True):
    __tablename__ = "settlement_positions"

    batch_id: int = Field(primary_key=True)
    tenant_id: int | None = Field(default=None, primary_key=True)
    receivable: Decimal
    payable: Decimal
    net_amount: Decimal
    payment_reference: str | None
    paid_at: datetime | None


class SettlementDispute(SQLModel, table=True):
    __tablename__ = "settlement_disputes"

    id: int = Field(primary_key=True)
    batch_id: int
    issuer_tenant_id: int
    redeemer_tenant_id: int
    raised_by_tenant_id: int
    reason: str
    status: str
    resolution: str | None
    created_at: datetime
    resolved_at: datetime | None


class SettlementClearingLine(SQLModel, table=True):
    __tablename__ = "settlement_clearing_lines"

    batch_id: int = Field(primary_key=True)
    tenant_id: int = Field(primary_key=True)
    billing: str
    issued_points: int
    accrual_amount: Decimal
    redeemed_points: int
    reimbursement_amount: Decimal
    net_amount: Decimal
