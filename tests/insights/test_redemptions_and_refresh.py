"""Redemption preferences by tier and segment, rewards nobody takes, and the refresh itself:
incremental equals a full rebuild, overlapping runs skip, runs are recorded for /metrics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.db.database import OPERATOR, run_sql
from alliance.insights.refresh import refresh
from alliance.tenants.models import TenantCategory
from tests.catalog import CANCEL, create_reward, funded_member, redeem
from tests.catalog import earn as award
from tests.conftest import random_phone, unique
from tests.insights.helpers import REVERSE, date_transactions, days_ago, earn, run_refresh
from tests.ledger.test_worked_example import enroll

PREFERENCES = """{ merchantInsights {
  redemptions { group rewardName rewardKind redemptions quantity points members }
  redemptionsByTier { group rewardName redemptions quantity members }
  redemptionsBySegment(segmentCode: "regulars") { group rewardName redemptions quantity members }
  unredeemedRewards(days: 30) { rewardName rewardKind stock } } }"""
CREATE_SEGMENT = """mutation($i: CreateSegmentInput!) { createSegment(input: $i) { userErrors { code } } }"""


async def test_redemption_preferences_by_tier_and_segment(db, settings, operator, make_merchant):
    shop = await make_merchant(TenantCategory.CLOTHING)
    tote = await create_reward(shop, name="Tote bag", kind="GOODS", points=100, stock=10)
    await create_reward(shop, name="Free alteration", kind="SERVICE", points=50, stock=3)
    await create_reward(shop, name="Sold out", kind="COUPON", points=10, stock=0)
    regular = await funded_member(shop, 1000)
    visitor = await funded_member(shop, 1000)
    await earn(shop, regular, "20")  # a purchase: `regulars` (1+ visit in a month) holds only them
    assert (
        await shop.api(
            CREATE_SEGMENT,
            i={"code": "regulars", "name": "Regulars", "definition": {"minVisits": 1, "windowMonths": 1}},
        )
    )["createSegment"]["userErrors"] == []
    assert (await redeem(shop.api, tote["id"], regular, quantity=2))["userErrors"] == []
    assert (await redeem(shop.api, tote["id"], visitor))["userErrors"] == []
    cancelled = await redeem(shop.api, tote["id"], visitor)
    result = await shop.api(
        CANCEL,
        i={
            "redemptionId": cancelled["redemption"]["id"],
            "reason": "changed mind",
            "idempotencyKey": unique("k"),
        },
    )
    assert result["cancelRedemption"]["userErrors"] == []
    await run_refresh(db, settings)

    seen = (await shop.api(PREFERENCES))["merchantInsights"]
    assert seen["redemptions"] == [
        {
            "group": "ALL",
            "rewardName": "Tote bag",
            "rewardKind": "GOODS",
            "redemptions": 2,
            "quantity": 3,
            "points": 300,
            "members": 2,
        }
    ]
    assert seen["redemptionsByTier"] == [
        {"group": "MEMBER", "rewardName": "Tote bag", "redemptions": 2, "quantity": 3, "members": 2}
    ]
    assert seen["redemptionsBySegment"] == [
        {"group": "regulars", "rewardName": "Tote bag", "redemptions": 1, "quantity": 2, "members": 1}
    ]
    # In stock, and nobody took it; the sold-out coupon is not "no takers".
    assert seen["unredeemedRewards"] == [
        {"rewardName": "Free alteration", "rewardKind": "SERVICE", "stock": 3}
    ]


async def _snapshot(settings: Any) -> dict[str, list[Any]]:
    engine = create_async_engine(settings.database_url)
    tables = {
        "insights_member_months": "*",
        "insights_member_recent_days": "*",
        "insights_member_categories": "*",
        "insights_member_tags": "*",
        "insights_members": "*",
        "insights_tenant_categories": "*",
        "insights_tenant_tags": "*",
        "insights_member_redeemers": "*",
        "insights_rising": "*",
        "insights_reward_redemptions": "*",
        "insights_retention": "*",
        "insights_coalition": "*",
        "insights_cross_categories": "*",
        "customer_segment_members": "segment_id, member_id",
        "insights_watermarks": "step, last_id",
    }
    try:
        async with engine.connect() as conn:
            return {
                table: sorted(
                    (tuple(r) for r in await conn.execute(text(f"SELECT {columns} FROM {table}"))), key=str
                )
                for table, columns in tables.items()
            }
    finally:
        await engine.dispose()


async def test_incremental_refresh_equals_a_full_rebuild(db, settings, make_merchant):
    shop = await make_merchant(TenantCategory.BABY_GOODS)
    other = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(shop, phone)
    await enroll(other, phone)
    await shop.api(
        CREATE_SEGMENT,
        i={
            "code": "formula",
            "name": "F",
            "definition": {"category": "formula", "minMonths": 1, "windowMonths": 2},
        },
    )
    first, _ = await earn(shop, number, "40", "formula", ["tin"])
    await date_transactions(settings, {first: days_ago(settings, 40)})
    await run_refresh(db, settings)
    # After the first refresh: more purchases, a partial and a full refund, activity elsewhere.
    second, _ = await earn(shop, number, "60", "formula", ["tin", "gift"])
    third, _ = await earn(shop, number, "15", "toys")
    for pk, points in ((second, 1), (third, None)):
        variables = {"transactionId": _gid(pk), "reason": "refund", "idempotencyKey": unique("k")}
        if points:
            variables["points"] = points
        assert (await shop.api(REVERSE, i=variables))["reverseTransaction"]["userErrors"] == []
    await earn(other, number, "300")
    now = datetime.now(UTC)
    await run_refresh(db, settings, now=now)
    incremental = await _snapshot(settings)
    await run_refresh(db, settings, full=True, now=now)
    assert await _snapshot(settings) == incremental
    months = [r for r in incremental["insights_member_months"] if r[0] == shop.tenant_id]
    assert sum(r[3] for r in months) == 2 and sum(r[4] for r in months) == 100  # the toys purchase is gone
    # The rebuild added its tables' primary keys back after the rows: the next run merges into them.
    await earn(shop, number, "5", "formula")
    await run_refresh(db, settings)
    months = [r for r in (await _snapshot(settings))["insights_member_months"] if r[0] == shop.tenant_id]
    assert sum(r[3] for r in months) == 3 and sum(r[4] for r in months) == 105


async def test_overlapping_runs_skip(db, settings):
    lagless = settings.model_copy(update={"insights_refresh_lag_seconds": 0})
    async with db.transaction(OPERATOR) as session:
        await run_sql(
            session, text("SELECT pg_advisory_xact_lock(hashtextextended('alliance:insights:refresh', 0))")
        )
        assert await asyncio.wait_for(refresh(db, lagless), 30) is None  # another run holds the lock
    assert await refresh(db, lagless) is not None


def test_the_cli_run_is_recorded_for_metrics(settings, capsys):
    import argparse

    from alliance.cli import cmd_insights_refresh

    assert cmd_insights_refresh(argparse.Namespace(full=False), settings) == 0
    assert "insights refreshed: facts" in capsys.readouterr().out

    async def last_run() -> tuple[str, dict[str, int]]:
        engine = create_async_engine(settings.database_url)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT outcome, counts FROM job_runs WHERE job = 'insights_refresh' ORDER BY id DESC LIMIT 1"
                        )
                    )
                ).one()
                return row.outcome, row.counts
        finally:
            await engine.dispose()

    outcome, counts = asyncio.run(last_run())
    assert outcome == "succeeded" and set(counts) >= {"facts", "segments", "cross_categories"}


def _gid(pk: int) -> str:
    from alliance.api.ids import to_global_id

    return to_global_id("LedgerTransaction", pk)


__all__ = ["award"]
