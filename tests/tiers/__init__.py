"""Helpers for the tier tests.

Tiers are alliance-wide and other tests share the database, so every test defines its own
tiers above whatever exists (next ranks, thresholds above the highest one) and reads rolling
points through the API instead of assuming an earn rate or multiplier.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from alliance.db.database import OPERATOR
from alliance.tiers import service
from alliance.tiers.models import Evaluation
from tests.conftest import Api, unique

DEFINE = """mutation($i: DefineTierInput!) { defineTier(input: $i) {
  tier { code name rank qualifyingPoints earnMultiplier benefits } userErrors { field code message } } }"""
TIERS = "{ tiers { code name rank qualifyingPoints earnMultiplier benefits } }"
MEMBER_TIER = """query($n: String!) { member(memberNumber: $n) {
  tier { code name rank earnMultiplier since }
  tierProgress { currentCode nextCode rollingPoints pointsToNext pointsToKeep belowSince graceEndsAt } } }"""
CHANGES = """query($n: String, $first: Int, $after: String) {
  tierChanges(memberNumber: $n, first: $first, after: $after) {
    edges { cursor node { id memberNumber fromTier toTier reason rollingPoints createdAt } }
    pageInfo { hasNextPage endCursor } } }"""
EARN = """mutation($i: EarnPointsInput!) { earnPoints(input: $i) {
  transaction { id points } userErrors { field code message } } }"""
REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id kind points } userErrors { field code message } } }"""


def tier_code() -> str:
    return f"T_{secrets.token_hex(4).upper()}"


def tier_input(code: str, rank: int, points: int, multiplier: str = "1", **extra: Any) -> dict[str, Any]:
    return {
        "code": code,
        "name": f"Tier {code}",
        "rank": rank,
        "qualifyingPoints": points,
        "earnMultiplier": multiplier,
        "benefits": f"benefits of {code}",
        **extra,
    }


async def new_top_tiers(operator: Api, *gaps: int) -> list[dict[str, Any]]:
    """Define tiers above every existing one, each ``gap`` points above the one below it."""
    existing = (await operator(TIERS))["tiers"]
    rank = max(t["rank"] for t in existing)
    points = max(t["qualifyingPoints"] for t in existing)
    defined = []
    for gap in gaps:
        rank, points = rank + 1, points + gap
        data = await operator(DEFINE, i=tier_input(tier_code(), rank, points))
        assert data["defineTier"]["userErrors"] == [], data
        defined.append(data["defineTier"]["tier"])
    return defined


async def earn(merchant: Any, number: str, amount: int) -> dict[str, Any]:
    """One purchase of ``amount`` CNY; returns the posted transaction."""
    data = await merchant.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": str(amount),
            "orderRef": unique("o"),
            "idempotencyKey": unique("k"),
        },
    )
    assert data["earnPoints"]["userErrors"] == [], data
    return data["earnPoints"]["transaction"]


async def progress(operator: Api, number: str) -> dict[str, Any]:
    return (await operator(MEMBER_TIER, n=number))["member"]


async def rolling_points(operator: Api, number: str) -> int:
    return (await progress(operator, number))["tierProgress"]["rollingPoints"]


async def earn_until(merchant: Any, operator: Api, number: str, target: int) -> int:
    """Earn until the member's rolling points reach ``target``; returns them."""
    points = await rolling_points(operator, number)
    while points < target:
        await earn(merchant, number, target - points)
        points = await rolling_points(operator, number)
    return points


async def changes(api: Api, number: str | None = None, first: int | None = None) -> list[dict[str, Any]]:
    data = await api(CHANGES, n=number, first=first)
    return [edge["node"] for edge in data["tierChanges"]["edges"]]


@asynccontextmanager
async def owner(settings: Any) -> AsyncIterator[AsyncConnection]:
    """One transaction as the database owner (bypasses row-level security, runs maintenance)."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


MEMBER_ID = "(SELECT id FROM members WHERE member_number = :n)"


async def upgrade_if_qualified(settings: Any, number: str) -> str | None:
    """What the ledger's earn path calls after posting."""
    async with owner(settings) as conn:
        return (
            await conn.execute(text(f"SELECT tier_upgrade_if_qualified({MEMBER_ID})"), {"n": number})
        ).scalar()


async def evaluate(db: Any) -> Evaluation:
    """The nightly job's work, as `alliance tiers evaluate` runs it (operator context)."""
    async with db.transaction(OPERATOR) as session:
        return await service.evaluate(session)


async def backdate_earnings(settings: Any, number: str, when: datetime) -> None:
    """Move the member's postings to ``when`` (business time), out of the rolling window."""
    async with owner(settings) as conn:
        await conn.execute(text("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only"))
        await conn.execute(
            text(f"UPDATE ledger_transactions SET effective_at = :when WHERE member_id = {MEMBER_ID}"),
            {"when": when, "n": number},
        )
        await conn.execute(text("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only"))


async def set_below_since(settings: Any, number: str, when: datetime) -> None:
    """Pretend the member's grace period started at ``when``."""
    async with owner(settings) as conn:
        updated = await conn.execute(
            text(f"UPDATE member_tiers SET below_since = :when WHERE member_id = {MEMBER_ID}"),
            {"when": when, "n": number},
        )
        assert updated.rowcount == 1


async def tier_row(settings: Any, number: str) -> Any:
    async with owner(settings) as conn:
        return (
            await conn.execute(
                text(f"SELECT * FROM member_tiers WHERE member_id = {MEMBER_ID}"), {"n": number}
            )
        ).one_or_none()
