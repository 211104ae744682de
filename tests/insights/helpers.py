"""Shared fixture-building for the insights tests: purchases through the real API, then dated in
the past as the owner (the API allows 7 days of back-dating; insights look at months)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.api.ids import from_global_id
from alliance.config import Settings
from alliance.db import Database
from alliance.insights.refresh import refresh
from tests.conftest import unique
from tests.ledger.test_worked_example import EARN

REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id points } userErrors { code message } } }"""
NOW = datetime.now(UTC)


def business_today(settings: Settings) -> date:
    return NOW.astimezone(ZoneInfo(settings.time_zone)).date()


def at_noon(settings: Settings, day: date) -> datetime:
    return datetime.combine(day, time(12), ZoneInfo(settings.time_zone))


async def earn(
    merchant: Any, number: str, amount: str, category: str | None = None, tags: list[str] | None = None
) -> tuple[int, int]:
    """A purchase now; (transaction pk, points)."""
    item: dict[str, Any] = {
        "memberNumber": number,
        "amount": amount,
        "orderRef": unique("o"),
        "idempotencyKey": unique("k"),
    }
    if category:
        item["category"] = category
    if tags:
        item["tags"] = tags
    data = (await merchant.api(EARN, i=item))["earnPoints"]
    assert data["userErrors"] == [], data
    return from_global_id(data["transaction"]["id"])[1], data["transaction"]["points"]


async def as_owner(settings: Settings, statements: list[tuple[str, dict[str, Any]]]) -> None:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            for sql, params in statements:
                await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def date_transactions(settings: Settings, dated: dict[int, datetime]) -> None:
    """Set the business time of postings (before the refresh that folds them in)."""
    statements: list[tuple[str, dict[str, Any]]] = [
        ("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only", {})
    ]
    statements += [
        ("UPDATE ledger_transactions SET effective_at = :at WHERE id = :id", {"at": at, "id": pk})
        for pk, at in dated.items()
    ]
    statements.append(("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only", {}))
    await as_owner(settings, statements)


async def date_links(settings: Settings, tenant_id: int, numbers: list[str], at: datetime) -> None:
    await as_owner(
        settings,
        [
            (
                "UPDATE member_links SET created_at = :at WHERE tenant_id = :t"
                " AND member_id IN (SELECT id FROM members WHERE member_number = ANY(:n))",
                {"at": at, "t": tenant_id, "n": numbers},
            )
        ],
    )


async def run_refresh(
    db: Database, settings: Settings, full: bool = False, now: datetime | None = None
) -> dict[str, int]:
    lagless = settings.model_copy(update={"insights_refresh_lag_seconds": 0})
    counts = await refresh(db, lagless, full=full, now=now or datetime.now(UTC))
    assert counts is not None
    return counts


def days_ago(settings: Settings, days: int) -> datetime:
    return at_noon(settings, business_today(settings) - timedelta(days=days))
