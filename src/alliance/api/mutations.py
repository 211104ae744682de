"""The one way a mutation runs: authorise, open a scoped transaction, call the domain, map refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance import audit
from alliance.api.context import Context
from alliance.api.metrics import current_operation
from alliance.api.types import UserError
from alliance.errors import DomainError

R = TypeVar("R")


def user_error(error: DomainError) -> UserError:
    return UserError(field=error.field, code=error.code, message=error.message)


async def run_in_transaction(
    context: Context, action: Callable[[AsyncSession], Awaitable[R]]
) -> R | list[UserError]:
    """Run ``action`` in one transaction. A `DomainError` rolls everything back and becomes userErrors."""
    audited = context.principal.kind == "operator"
    try:
        async with context.transaction() as session:
            result = await action(session)
            if audited:
                await audit.record(session, _audit_entry(context, "ok", ()))
            return result
    except DomainError as error:
        if audited:  # the refused transaction rolled back; the refusal is recorded on its own
            async with context.transaction() as session:
                await audit.record(session, _audit_entry(context, "refused", (error.code,)))
        return [user_error(error)]


def _audit_entry(context: Context, outcome: str, codes: tuple[str, ...]) -> audit.AuditEntry:
    operation, digest = current_operation.get()
    principal = context.principal
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return audit.AuditEntry(
        principal=principal.kind,
        client_scope=principal.idempotency_scope,
        tenant_id=principal.tenant_id,
        operation=operation,
        input_digest=digest,
        outcome=outcome,
        codes=codes,
        request_id=request_id,
    )
