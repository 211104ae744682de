"""The one way a mutation runs: authorise, open a scoped transaction, call the domain, map refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance import audit, idempotency
from alliance.api.context import Context
from alliance.api.metrics import operation_in_progress
from alliance.api.types import UserError
from alliance.errors import DomainError

R = TypeVar("R")


def user_error(error: DomainError) -> UserError:
    return UserError(field=error.field, code=error.code, message=error.message)


async def run_in_transaction(
    context: Context, action: Callable[[AsyncSession], Awaitable[R]], audit_merchants: bool = False
) -> R | list[UserError]:
    """Run ``action`` in one transaction. A `DomainError` rolls everything back and becomes userErrors.
    Operator mutations are audited; ``audit_merchants`` audits a merchant's too (credentials)."""
    audited = context.principal.kind == "operator" or (
        audit_merchants and context.principal.kind == "merchant"
    )
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


async def made_once(
    session: AsyncSession,
    context: Context,
    key: str | None,
    make: Callable[[], Awaitable[R]],
    identify: Callable[[R], tuple[int, bool]],
    load: Callable[[idempotency.Remembered], Awaitable[R | None]],
) -> R:
    """Run ``make`` once per idempotency key: a retry of the same request gets what the first
    attempt made (``load``), another request under the key IDEMPOTENCY_KEY_REUSED."""
    if key is None:
        return await make()
    operation = operation_in_progress()
    scope = context.principal.idempotency_scope
    earlier = await idempotency.recall(session, scope, key, operation.name, operation.digest)
    if earlier is not None:
        again = await load(earlier)
        if again is not None:
            return again
    result = await make()
    entity_id, created = identify(result)
    await idempotency.remember(session, scope, key, operation.name, operation.digest, entity_id, created)
    return result


async def made_once_row(
    session: AsyncSession,
    context: Context,
    key: str | None,
    model: type[Any],
    make: Callable[[], Awaitable[R]],
) -> R:
    """`made_once` for the common case: the mutation makes or changes one row of ``model``, and a
    retry under the same key gets that row as it is now."""
    return await made_once(
        session,
        context,
        key,
        make,
        lambda row: (row.id, True),  # type: ignore[attr-defined]
        lambda earlier: session.get(model, earlier.entity_id),
    )


def _audit_entry(context: Context, outcome: str, codes: tuple[str, ...]) -> audit.AuditEntry:
    operation = operation_in_progress()
    principal = context.principal
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return audit.AuditEntry(
        principal=principal.kind,
        client_scope=principal.idempotency_scope,
        tenant_id=principal.tenant_id,
        operation=operation.name,
        input_digest=operation.digest,
        outcome=outcome,
        codes=codes,
        request_id=request_id,
    )
