"""The one way a mutation runs: authorise, open a scoped transaction, call the domain, map refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.api.context import Context
from alliance.api.types import UserError
from alliance.errors import DomainError

R = TypeVar("R")


def user_error(error: DomainError) -> UserError:
    return UserError(field=error.field, code=error.code, message=error.message)


async def run_in_transaction(
    context: Context, action: Callable[[AsyncSession], Awaitable[R]]
) -> R | list[UserError]:
    """Run ``action`` in one transaction. A `DomainError` rolls everything back and becomes userErrors."""
    try:
        async with context.transaction() as session:
            return await action(session)
    except DomainError as error:
        return [user_error(error)]
