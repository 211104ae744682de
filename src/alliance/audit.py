"""The audit trail: who did what, through which client, with what input and result.

Operator mutations are recorded here in the transaction that makes them (a refusal, rolled
back with its transaction, in one of its own). Money-moving mutations are already recorded, in
their own transaction, by their idempotency record; `audit_log` reads both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql

MAX_PAGE = 500

_RECORD = text(
    "INSERT INTO audit_records (principal, client_scope, tenant_id, operation, input_digest, outcome, codes,"
    " request_id) VALUES (:principal, :scope, :tenant, :operation, :digest, :outcome, :codes, :request_id)"
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record to write: who (principal kind, client, tenant id), what, with which result."""

    principal: str
    client_scope: str
    tenant_id: int | None
    operation: str
    input_digest: str
    outcome: str
    codes: tuple[str, ...]
    request_id: str | None


@dataclass(frozen=True, slots=True)
class AuditLine:
    """A record read back from the log (the tenant by its code)."""

    created_at: datetime
    principal: str
    client_scope: str
    tenant_code: str | None
    operation: str
    input_digest: str
    outcome: str
    codes: tuple[str, ...]
    request_id: str | None


async def record(session: AsyncSession, entry: AuditEntry) -> None:
    assert entry.outcome in ("ok", "refused")
    await run_sql(
        session,
        _RECORD,
        {
            "principal": entry.principal,
            "scope": entry.client_scope,
            "tenant": entry.tenant_id,
            "operation": entry.operation[:100],
            "digest": entry.input_digest,
            "outcome": entry.outcome,
            "codes": list(entry.codes),
            "request_id": entry.request_id,
        },
    )


async def audit_log(
    session: AsyncSession, before: datetime | None, limit: int, operation: str | None
) -> list[AuditLine]:
    """Newest first; the operator sees everything, a merchant its own records."""
    assert 1 <= limit <= MAX_PAGE
    rows = await run_sql(
        session,
        text("SELECT * FROM audit_log(:before, :limit, :operation)"),
        {"before": before, "limit": limit, "operation": operation},
    )
    return [
        AuditLine(
            r.created_at,
            r.principal,
            r.client_scope,
            r.tenant_code,
            r.operation,
            r.input_digest,
            r.outcome,
            tuple(r.codes),
            r.request_id,
        )
        for r in rows
    ]
