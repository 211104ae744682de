"""GraphQL for the audit log: the operator sees every record, a merchant its own."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from alliance import audit
from alliance.api.context import Info
from alliance.api.ids import from_cursor
from alliance.api.types import Connection, build_connection, page_size
from alliance.auth.principal import LEDGER_READ


@strawberry.type
class AuditRecord:
    created_at: datetime
    principal: str
    client_id: str
    tenant_code: str | None
    operation: str = strawberry.field(description="e.g. mutation:createTenant, earn, redeem.")
    input_digest: str = strawberry.field(description="SHA-256 of the request's input, not the input.")
    outcome: str
    codes: list[str]
    request_id: str | None


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


@strawberry.type
class AuditQueries:
    @strawberry.field(
        description="Who did what, newest first: operator mutations and every money-moving one."
    )
    async def audit_log(
        self, info: Info, first: int | None = None, after: str | None = None, operation: str | None = None
    ) -> Connection[AuditRecord]:
        info.context.require(LEDGER_READ, "operator", "merchant")
        size = page_size(first, info.context.settings.max_page_size)
        before_micros = from_cursor(after)
        before = None if before_micros is None else datetime.fromtimestamp(before_micros / 1_000_000, UTC)
        async with info.context.transaction() as session:
            rows = await audit.audit_log(session, before, size + 1, operation)
        return build_connection(
            rows,
            size,
            lambda r: _micros(r.created_at),
            lambda r: AuditRecord(
                created_at=r.created_at,
                principal=r.principal,
                client_id=r.client_scope,
                tenant_code=r.tenant_code,
                operation=r.operation,
                input_digest=r.input_digest,
                outcome=r.outcome,
                codes=list(r.codes),
                request_id=r.request_id,
            ),
            before is not None,
        )
