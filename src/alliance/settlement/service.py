"""Settlement operations. Batches are built and transitioned by SQL functions; this module
chooses periods and terms, maps refusals to `DomainError`, and reads batches for the caller
(row-level security shows a merchant only the lines and positions it is a party to)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db import Database
from alliance.db.database import run_sql
from alliance.errors import DomainError, NotFound
from alliance.ledger.service import (
    Payload,
    Poster,
    check_asset,
    check_key,
    idempotency_params,
    post_idempotent,
)
from alliance.settlement.models import (
    SettlementBatch,
    SettlementClearingLine,
    SettlementDispute,
    SettlementLine,
    SettlementPosition,
    SettlementTerms,
)
from alliance.settlement.periods import PERIOD_LENGTHS, period_bounds
from alliance.tenants.models import Tenant

_REFUSALS = {
    "FORBIDDEN": ("only the operator may do this", None),
    "NO_TERMS": ("no settlement terms are in force for this period", "periodStart"),
    "BATCH_NOT_DRAFT": ("the batch is approved and can no longer change", "batchId"),
    "BATCH_NOT_FOUND": ("no such settlement batch", "batchId"),
    "BATCH_NOT_APPROVED": ("only an approved batch can be paid", "batchId"),
    "BATCH_STALE": ("the ledger changed since this batch was computed; run it again", "batchId"),
    "PERIOD_NOT_ENDED": ("a period can be approved only after it ends", "batchId"),
    "PERIOD_OVERLAP": ("another batch of this asset covers part of this period", "periodStart"),
    "PERIOD_MISMATCH": ("a batch for this start exists with another end", "periodEnd"),
    "PERIOD_CLOSED": ("terms cannot change for a settled period", "effectiveFrom"),
    "LINE_NOT_FOUND": ("no such line in this batch that you are a party to", "issuerCode"),
    "BATCH_PAID": ("a paid batch can no longer be disputed", "batchId"),
    "DISPUTE_NOT_OPEN": ("no such open dispute", "disputeId"),
    "NO_TENANT_TERMS": ("a tenant with activity has no clearing terms in force", "periodStart"),
    "INSTRUCTION_NOT_FOUND": ("no unpaid instruction for this party", "party"),
}

OPERATOR_PARTY = "OPERATOR"


async def _call(session: AsyncSession, sql: str, params: dict[str, object]) -> object:
    """Run a settlement function; its P0001 refusals (raised with a code as message) become DomainErrors."""
    try:
        async with session.begin_nested():
            return (await run_sql(session, text(sql), params)).scalar()
    except DBAPIError as error:
        code = next((known for known in _REFUSALS if known in str(error.orig)), "")
        if code not in _REFUSALS:
            raise
        message, field = _REFUSALS[code]
        raise DomainError(code, message, field) from error


async def terms_in_force(session: AsyncSession, asset: str, at: datetime) -> SettlementTerms:
    query = (
        select(SettlementTerms)
        .where(SettlementTerms.asset == asset, col(SettlementTerms.effective_from) <= at)
        .order_by(col(SettlementTerms.effective_from).desc())
        .limit(1)
    )
    terms = (await session.exec(query)).first()
    if terms is None:
        raise DomainError("NO_TERMS", "no settlement terms are in force", "asset")
    return terms


async def set_terms(
    session: AsyncSession,
    asset: str,
    model: str,
    settlement_value: Decimal,
    currency: str,
    fee_bps: int,
    period_length: str,
    effective_from: datetime,
) -> SettlementTerms:
    """A new version of an asset's terms, in force from ``effective_from`` (past periods keep theirs)."""
    check_asset(asset)
    if model not in ("provenance_netting", "operator_clearing"):
        raise DomainError("INVALID_MODEL", "unknown settlement model", "model")
    if not Decimal(0) <= settlement_value <= Decimal(1000) or settlement_value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise DomainError(
            "INVALID_VALUE", "settlementValue must be 0-1000 with at most 6 decimals", "settlementValue"
        )
    if not 0 <= fee_bps <= 10000:
        raise DomainError("INVALID_FEE", "feeBps must be between 0 and 10000", "feeBps")
    if period_length not in PERIOD_LENGTHS:
        raise DomainError("INVALID_PERIOD_LENGTH", "periodLength is daily, weekly or monthly", "periodLength")
    if effective_from.tzinfo is None:
        raise DomainError("INVALID_EFFECTIVE_FROM", "effectiveFrom needs a time zone offset", "effectiveFrom")
    terms_id = await _call(
        session,
        "SELECT settlement_set_terms(:asset, :model, :value, :currency, :fee, :length, :from_)",
        {
            "asset": asset,
            "model": model,
            "value": settlement_value,
            "currency": currency,
            "fee": fee_bps,
            "length": period_length,
            "from_": effective_from,
        },
    )
    terms = await session.get(SettlementTerms, terms_id)
    assert terms is not None
    return terms


async def run_settlement(
    session: AsyncSession, asset: str, period_start: date, period_end: date | None
) -> SettlementBatch:
    """Build (or rebuild a draft of) the batch for one asset and period from the ledger's provenance."""
    check_asset(asset)
    terms = await terms_in_force(
        session, asset, datetime.combine(period_start, datetime.min.time()).astimezone()
    )
    start, end = period_bounds(period_start, terms.period_length, terms.time_zone, period_end)
    batch_id = await _call(
        session, "SELECT settlement_run(:asset, :start, :end)", {"asset": asset, "start": start, "end": end}
    )
    batch = await session.get(SettlementBatch, batch_id, populate_existing=True)
    assert batch is not None
    assert batch.line_points == batch.cross_redeemed_points - batch.reversed_points
    return batch


async def approve_settlement(session: AsyncSession, batch_id: int) -> SettlementBatch:
    await _call(session, "SELECT settlement_approve(:b)", {"b": batch_id})
    return await batch_by_id(session, batch_id)


async def mark_settlement_paid(
    session: AsyncSession, batch_id: int, party: str, reference: str
) -> SettlementBatch:
    reference = reference.strip()
    if not 1 <= len(reference) <= 200:
        raise DomainError(
            "INVALID_REFERENCE", "paymentReference must be 1-200 characters", "paymentReference"
        )
    tenant_id = None
    if party != OPERATOR_PARTY:
        tenant = (await session.exec(select(Tenant).where(Tenant.code == party))).first()
        if tenant is None:
            raise NotFound("tenant", "party")
        tenant_id = tenant.id
    await _call(
        session,
        "SELECT settlement_mark_paid(:b, :t, :op, :ref)",
        {"b": batch_id, "t": tenant_id, "op": party == OPERATOR_PARTY, "ref": reference},
    )
    return await batch_by_id(session, batch_id)


async def batch_by_id(session: AsyncSession, batch_id: int) -> SettlementBatch:
    batch = await session.get(SettlementBatch, batch_id, populate_existing=True)
    if batch is None:
        raise NotFound("batch", "batchId", code="BATCH_NOT_FOUND")
    return batch


async def list_batches(
    session: AsyncSession, asset: str | None, status: str | None, before_id: int | None, limit: int
) -> list[SettlementBatch]:
    query = select(SettlementBatch)
    if asset is not None:
        query = query.where(SettlementBatch.asset == asset)
    if status is not None:
        query = query.where(SettlementBatch.status == status)
    if before_id is not None:
        query = query.where(col(SettlementBatch.id) < before_id)
    return list((await session.exec(query.order_by(col(SettlementBatch.id).desc()).limit(limit))).all())


@dataclass(frozen=True, slots=True)
class Line:
    id: int
    issuer_code: str
    redeemer_code: str
    points: int
    gross_amount: Decimal
    fee_amount: Decimal
    net_amount: Decimal


@dataclass(frozen=True, slots=True)
class Position:
    party: str
    receivable: Decimal
    payable: Decimal
    net_amount: Decimal
    payment_reference: str | None

    @property
    def direction(self) -> str | None:
        """What the party does through the clearing account: PAY, RECEIVE, or nothing."""
        return "PAY" if self.net_amount < 0 else "RECEIVE" if self.net_amount > 0 else None


async def batch_lines(session: AsyncSession, batch_id: int, after_id: int | None, limit: int) -> list[Line]:
    """The batch's lines the caller may see (a merchant: those it issued or redeemed), by id.
    Both parties' codes come from `party_codes`: a merchant cannot read its counterparty's row."""
    query = (
        select(SettlementLine)
        .where(SettlementLine.batch_id == batch_id)
        .order_by(col(SettlementLine.id))
        .limit(limit)
    )
    if after_id is not None:
        query = query.where(col(SettlementLine.id) > after_id)
    rows = (await session.exec(query)).all()
    codes = await party_codes(
        session, {line.issuer_tenant_id for line in rows} | {line.redeemer_tenant_id for line in rows}
    )
    return [
        Line(
            line.id,
            codes[line.issuer_tenant_id],
            codes[line.redeemer_tenant_id],
            line.points,
            line.gross_amount,
            line.fee_amount,
            line.net_amount,
        )
        for line in rows
    ]


async def party_codes(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    """Codes of tenants by id, read as the owner would: a merchant may see the code of its
    counterparty on a line it is party to, though not the counterparty's tenant row."""
    if not ids:
        return {}
    rows = await run_sql(
        session, text("SELECT id, code FROM settlement_party_codes(:ids)"), {"ids": sorted(ids)}
    )
    return {row.id: row.code for row in rows}


async def batch_positions(session: AsyncSession, batch_id: int) -> list[Position]:
    rows = (
        await session.exec(select(SettlementPosition).where(SettlementPosition.batch_id == batch_id))
    ).all()
    codes = await party_codes(session, {row.tenant_id for row in rows if row.tenant_id is not None})
    positions = [
        Position(
            OPERATOR_PARTY if row.tenant_id is None else codes[row.tenant_id],
            row.receivable,
            row.payable,
            row.net_amount,
            row.payment_reference,
        )
        for row in rows
    ]
    return sorted(positions, key=lambda p: (p.party == OPERATOR_PARTY, p.party))


@dataclass(frozen=True, slots=True)
class Difference:
    issuer_code: str
    redeemer_code: str
    batch_points: int
    ledger_points: int


async def reconcile(session: AsyncSession, batch_id: int) -> list[Difference]:
    """Lines that differ from a fresh recomputation from the ledger; empty means the books match."""
    await batch_by_id(session, batch_id)
    rows = (await run_sql(session, text("SELECT * FROM settlement_reconcile(:b)"), {"b": batch_id})).all()
    ids = {r.issuer_tenant_id for r in rows} | {r.redeemer_tenant_id for r in rows}
    codes = await party_codes(session, {i for i in ids if i is not None})

    def party(tenant_id: int | None) -> str:  # under operator clearing, the operator is the counterparty
        return OPERATOR_PARTY if tenant_id is None else codes[tenant_id]

    return [
        Difference(party(r.issuer_tenant_id), party(r.redeemer_tenant_id), r.batch_points, r.ledger_points)
        for r in rows
    ]


async def statement_csv(session: AsyncSession, batch_id: int) -> str:
    """The batch's lines and positions visible to the caller, amounts as exact decimals."""
    batch = await batch_by_id(session, batch_id)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "section",
            "batch",
            "asset",
            "period_start",
            "period_end",
            "issuer",
            "redeemer",
            "party",
            "points",
            "gross_amount",
            "fee_amount",
            "net_amount",
            "direction",
            "payment_reference",
        ]
    )
    head = [batch.id, batch.asset, batch.period_start.isoformat(), batch.period_end.isoformat()]
    after: int | None = None
    while True:
        lines = await batch_lines(session, batch_id, after, 1000)
        for line in lines:
            writer.writerow(
                [
                    "line",
                    *head,
                    line.issuer_code,
                    line.redeemer_code,
                    "",
                    line.points,
                    line.gross_amount,
                    line.fee_amount,
                    line.net_amount,
                    "",
                    "",
                ]
            )
        if len(lines) < 1000:
            break
        after = lines[-1].id
    for position in await batch_positions(session, batch_id):
        writer.writerow(
            [
                "position",
                *head,
                "",
                "",
                position.party,
                "",
                "",
                "",
                position.net_amount,
                position.direction or "",
                position.payment_reference or "",
            ]
        )
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class ExpiryRun:
    members: int
    lots: int
    points: int


async def expire_lots(session: AsyncSession, run_id: str, max_members: int = 5000) -> ExpiryRun:
    """One chunk of expiry (call until it returns zero members)."""
    assert 1 <= max_members <= 100_000
    row = (
        await run_sql(
            session, text("SELECT * FROM ledger_expire(:run, :n)"), {"run": run_id, "n": max_members}
        )
    ).one()
    return ExpiryRun(row.expired_wallets, row.expired_lots, row.expired_points)


MAX_DISPUTE_TEXT = 1000


def _dispute_text(value: str, field: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= MAX_DISPUTE_TEXT:
        raise DomainError("INVALID_TEXT", f"{field} must be 1-{MAX_DISPUTE_TEXT} characters", field)
    return value


async def dispute_line(
    session: AsyncSession, batch_id: int, issuer_code: str, redeemer_code: str, reason: str
) -> SettlementDispute:
    """A party merchant contests one line of a draft or approved batch."""
    dispute_id = await _call(
        session,
        "SELECT settlement_dispute_line(:b, :i, :r, :reason)",
        {"b": batch_id, "i": issuer_code, "r": redeemer_code, "reason": _dispute_text(reason, "reason")},
    )
    dispute = await session.get(SettlementDispute, dispute_id)
    assert dispute is not None
    return dispute


async def resolve_dispute(session: AsyncSession, dispute_id: int, resolution: str) -> SettlementDispute:
    """The operator closes a dispute; corrections are separate postings in the open period."""
    await _call(
        session,
        "SELECT settlement_resolve_dispute(:d, :res)",
        {"d": dispute_id, "res": _dispute_text(resolution, "resolution")},
    )
    dispute = await session.get(SettlementDispute, dispute_id, populate_existing=True)
    assert dispute is not None
    return dispute


async def batch_disputes(session: AsyncSession, batch_id: int) -> list[SettlementDispute]:
    query = (
        select(SettlementDispute)
        .where(SettlementDispute.batch_id == batch_id)
        .order_by(col(SettlementDispute.id))
    )
    return list((await session.exec(query)).all())


@dataclass(frozen=True, slots=True)
class Breakage:
    issuer_code: str
    points: int


async def breakage_report(
    session: AsyncSession, asset: str, start: date, end: date, time_zone: str
) -> list[Breakage]:
    """Points expired into breakage per issuer over [start, end) (merchants: their own only)."""
    start_at, end_at = period_bounds(start, "daily", time_zone, end)
    rows = (
        await run_sql(
            session,
            text("SELECT * FROM settlement_breakage(:a, :s, :e)"),
            {"a": check_asset(asset), "s": start_at, "e": end_at},
        )
    ).all()
    codes = await party_codes(session, {r.issuer_tenant_id for r in rows if r.issuer_tenant_id is not None})
    return sorted(
        (
            Breakage(
                codes.get(r.issuer_tenant_id, "ALLIANCE") if r.issuer_tenant_id else "ALLIANCE", r.points
            )
            for r in rows
        ),
        key=lambda b: b.issuer_code,
    )


BILLING_TYPES = ("prepaid", "postpaid")


def _check_rate(value: Decimal, field: str) -> Decimal:
    if not Decimal(0) <= value <= Decimal(1000) or value.as_tuple().exponent < -6:  # type: ignore[operator]
        raise DomainError("INVALID_RATE", f"{field} must be 0-1000 with at most 6 decimals", field)
    return value


async def set_clearing_terms(
    session: AsyncSession,
    tenant_code: str,
    asset: str,
    accrual_cost: Decimal,
    reimbursement_rate: Decimal,
    billing: str,
    effective_from: datetime,
) -> int:
    """A tenant's operator-clearing rates, in force from ``effective_from``."""
    if billing not in BILLING_TYPES:
        raise DomainError("INVALID_BILLING", "billing is PREPAID or POSTPAID", "billing")
    if effective_from.tzinfo is None:
        raise DomainError("INVALID_EFFECTIVE_FROM", "effectiveFrom needs a time zone offset", "effectiveFrom")
    tenant = (await session.exec(select(Tenant).where(Tenant.code == tenant_code))).first()
    if tenant is None:
        raise NotFound("tenant", "tenantCode")
    result = await _call(
        session,
        "SELECT settlement_set_clearing_terms(:t, :a, :acc, :re, :b, :f)",
        {
            "t": tenant.id,
            "a": check_asset(asset),
            "acc": _check_rate(accrual_cost, "accrualCost"),
            "re": _check_rate(reimbursement_rate, "reimbursementRate"),
            "b": billing,
            "f": effective_from,
        },
    )
    assert isinstance(result, int)
    return result


async def purchase_point_block(
    db: Database,
    poster: Poster,
    *,
    idempotency_key: str,
    tenant_id: int,
    asset: str,
    points: int,
    price: Decimal,
) -> Payload:
    """A prepaid tenant buys issuance capacity; its earns are refused beyond what it bought."""
    check_key(idempotency_key)
    if not 0 < points <= 1_000_000_000:
        raise DomainError("INVALID_POINTS", "points must be between 1 and 1000000000", "points")
    if price < 0 or price.as_tuple().exponent < -2:  # type: ignore[operator]
        raise DomainError("INVALID_AMOUNT", "price must be non-negative with at most 2 decimals", "price")
    request = {"tenant": tenant_id, "asset": check_asset(asset), "points": points, "price": str(price)}
    return await post_idempotent(
        db,
        "settlement_purchase_block",
        idempotency_params(poster, "purchase_block", idempotency_key, request)
        | {
            "p_tenant": tenant_id,
            "p_asset": asset,
            "p_points": points,
            "p_price": price,
        },
    )


async def clearing_lines(session: AsyncSession, batch_id: int) -> list[tuple[str, SettlementClearingLine]]:
    rows = (
        await session.exec(select(SettlementClearingLine).where(SettlementClearingLine.batch_id == batch_id))
    ).all()
    codes = await party_codes(session, {row.tenant_id for row in rows})
    return sorted(((codes[row.tenant_id], row) for row in rows), key=lambda pair: pair[0])
