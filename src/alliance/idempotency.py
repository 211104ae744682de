"""Idempotency keys for configuration mutations: a retry gets the object the first attempt made.

(Money-moving mutations keep their whole answer in the ledger's idempotency records instead.)
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError

MAX_KEY = 200


@dataclass(frozen=True, slots=True)
class Remembered:
    entity_id: int
    created: bool


async def recall(
    session: AsyncSession, scope: str, key: str, operation: str, digest: str
) -> Remembered | None:
    """What an earlier attempt with this key made; IDEMPOTENCY_KEY_REUSED for another request."""
    if not 1 <= len(key) <= MAX_KEY:
        raise DomainError(
            "INVALID_IDEMPOTENCY_KEY", f"idempotencyKey must be 1-{MAX_KEY} chars", "idempotencyKey"
        )
    row = (
        await run_sql(
            session,
            text(
                "SELECT operation, request_digest, entity_id, created FROM mutation_keys"
                " WHERE client_scope = :scope AND idempotency_key = :key"
            ),
            {"scope": scope, "key": key},
        )
    ).first()
    if row is None:
        return None
    if (row.operation, row.request_digest) != (operation, digest):
        raise DomainError(
            "IDEMPOTENCY_KEY_REUSED", "this key was used with a different request", "idempotencyKey"
        )
    return Remembered(row.entity_id, row.created)


async def remember(
    session: AsyncSession, scope: str, key: str, operation: str, digest: str, entity_id: int, created: bool
) -> None:
    try:
        async with session.begin_nested():
            await run_sql(
                session,
                text(
                    "INSERT INTO mutation_keys (client_scope, idempotency_key, operation, request_digest,"
                    " entity_id, created) VALUES (:scope, :key, :operation, :digest, :entity, :created)"
                ),
                {
                    "scope": scope,
                    "key": key,
                    "operation": operation,
                    "digest": digest,
                    "entity": entity_id,
                    "created": created,
                },
            )
    except IntegrityError as exc:  # the same key, concurrently: the client's retry gets the winner's
        raise DomainError(
            "CONCURRENT_RETRY", "the same request is being processed; retry", "idempotencyKey"
        ) from exc
