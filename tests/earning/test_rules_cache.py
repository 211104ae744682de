"""The earn path's caches of rules and tiers: an expired entry is refilled by one request, not
by every request in flight (each refill is a transaction, i.e. a pooled connection)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from alliance.db import Database
from alliance.earning import service


@pytest.fixture
def counted_transactions(db: Database, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every transaction the earning service opens on ``db``, by access role (they still run)."""
    opened: list[str] = []
    real = db.transaction

    def counting(access):  # type: ignore[no-untyped-def]
        opened.append(access.role)
        return real(access)

    monkeypatch.setattr(db, "transaction", counting)
    return opened


def expire_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "RULES_CACHE_SECONDS", -1.0)  # every entry is expired on arrival


async def test_one_request_refills_expired_rules_while_the_others_use_them(
    make_merchant, db: Database, counted_transactions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    merchant = await make_merchant()
    now = datetime.now(UTC)
    service.forget_cached_rules()
    before = len(counted_transactions)
    first = await service.cached_rules(db, merchant.tenant_id, now)
    assert counted_transactions[before:] == ["merchant"]
    expire_caches(monkeypatch)
    answers = await asyncio.gather(*(service.cached_rules(db, merchant.tenant_id, now) for _ in range(20)))
    assert counted_transactions[before:] == ["merchant", "merchant"], "one refill for twenty requests"
    assert all(answer == first for answer in answers)


async def test_one_request_refills_expired_tiers(
    db: Database, counted_transactions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await service.tier_variants(db)
    before = len(counted_transactions)
    expire_caches(monkeypatch)
    answers = await asyncio.gather(*(service.tier_variants(db) for _ in range(20)))
    assert len(counted_transactions) == before + 1
    assert all(answer == first for answer in answers)
