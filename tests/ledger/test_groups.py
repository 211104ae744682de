"""Concurrent earns posted in groups: each earn answered as if it had been posted alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.config import Settings
from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import EarnItem, Poster, earn_points, request_hash
from tests.conftest import random_phone, unique
from tests.ledger.test_concurrency import assert_books_balance
from tests.ledger.test_worked_example import enroll
from tests.settlement.test_operator_clearing import BLOCK, CLEARING, TERMS
from tests.webhooks.test_sweeps_and_settlement import private_asset

ZONE = "Asia/Shanghai"
MOMENT = ("id", "createdAt", "effectiveAt")  # what differs between two postings of the same earn


@pytest.fixture
async def process(settings: Settings) -> AsyncIterator[Callable[..., Database]]:
    """Factory: a process of its own (a Database with a small pool), closed after the test, so
    these tests' bursts do not leave the session's pools holding connections."""
    assert settings.database_url is not None
    url = settings.database_url
    opened: list[Database] = []

    def make(**overrides: Any) -> Database:
        opened.append(Database(url, settings.model_copy(update={"pool_size": 4} | overrides)))
        return opened[-1]

    yield make
    for database in opened:
        await database.close()


def groups_posted() -> tuple[float, float]:
    """(groups, earns in them) posted by ledger_earn_group so far in this process."""
    count = REGISTRY.get_sample_value("alliance_earn_group_size_count") or 0.0
    return count, REGISTRY.get_sample_value("alliance_earn_group_size_sum") or 0.0


def without_moment(payload: dict[str, Any]) -> dict[str, Any]:
    transaction = {k: v for k, v in payload["transaction"].items() if k not in MOMENT}
    return payload | {"transaction": transaction}


async def test_a_group_answers_each_earn_as_ledger_earn_alone_would(make_merchant, db, process):
    # One slot: every case below lands in the same group (two slots would share them, 5 and 4).
    grouped_db, alone_db = process(earn_groups_in_flight=1), process(earn_group_max_items=1)
    merchant, other = await make_merchant(), await make_merchant()
    poster = Poster(unique("scope"), merchant.tenant_id)
    members = {
        name: await enroll(merchant, random_phone()) for name in ("a", "a2", "c", "d", "x", "e", "y", "z")
    }
    stranger = await enroll(other, random_phone())

    async def earn(database: Database, key: str, number: str, amount: str, order: str, **more: Any) -> Any:
        item = EarnItem(member_number=number, amount=Decimal(amount), order_ref=order, **more)
        return await earn_points(database, poster, idempotency_key=key, item=item, time_zone=ZONE)

    # History, posted alone: an order already earned, a key already answered, a key to reuse.
    await earn(alone_db, unique("k"), members["x"], "10", "X-1")
    replayed_key, reused_key = unique("k"), unique("k")
    original = await earn(alone_db, replayed_key, members["y"], "30", "Y-1")
    await earn(alone_db, reused_key, members["z"], "40", "Z-1")
    # Warm the rules and tiers caches: then every earn below queues before the first group leaves.
    await earn(grouped_db, unique("k"), members["a2"], "1", "WARM")

    cases: dict[str, tuple[str, str, str, str, dict[str, Any]]] = {  # (key, member, amount, order, more)
        "posted": (unique("k"), members["a"], "100.50", "P-1", {"category": "food", "tags": ("x", "y")}),
        "unknown member": (unique("k"), "8999999999", "10", "U-1", {}),
        "another merchant's member": (unique("k"), stranger, "10", "S-1", {}),
        "unknown store": (unique("k"), members["c"], "10", "C-1", {"store_code": "NOPE"}),
        "unknown asset": (unique("k"), members["d"], "10", "D-1", {"asset": "NOPE_ASSET"}),
        "duplicate order": (unique("k"), members["x"], "10", "X-1", {}),
        "no points": (unique("k"), members["e"], "0.50", "E-1", {}),
        "replay": (replayed_key, members["y"], "30", "Y-1", {}),
        "key reused": (reused_key, members["z"], "41", "Z-2", {}),
    }
    before = groups_posted()
    grouped = dict(
        zip(
            cases,
            await asyncio.gather(
                *(
                    earn(grouped_db, key, n, amount, order, **more)
                    for key, n, amount, order, more in cases.values()
                )
            ),
            strict=True,
        )
    )
    after = groups_posted()
    assert (after[0] - before[0], after[1] - before[1]) == (1, len(cases)), "one group took every case"

    fresh = await enroll(merchant, random_phone())
    for case, (key, number, amount, order, more) in cases.items():
        if case == "replay":
            assert grouped[case] == original | {"replayed": True}
            continue
        if case == "posted":  # the same earn for a member in the same state, alone
            alone = await earn(alone_db, unique("k"), fresh, amount, order, **more)
            assert without_moment(grouped[case]) == without_moment(alone)
            assert grouped[case]["transaction"]["details"]["breakdown"], "the plan's breakdown is kept"
            continue
        alone = await earn(
            alone_db, key if case == "key reused" else unique("k"), number, amount, order, **more
        )
        assert grouped[case] == alone, case
    codes = {case: [e["code"] for e in payload["userErrors"]] for case, payload in grouped.items()}
    assert codes == {
        "posted": [],
        "unknown member": ["MEMBER_NOT_FOUND"],
        "another merchant's member": ["MEMBER_NOT_FOUND"],
        "unknown store": ["UNKNOWN_STORE"],
        "unknown asset": ["UNKNOWN_ASSET"],
        "duplicate order": ["DUPLICATE_ORDER"],
        "no points": ["NO_POINTS_EARNED"],
        "replay": [],
        "key reused": ["IDEMPOTENCY_KEY_REUSED"],
    }
    assert grouped["posted"]["balance"] == {"asset": "POINTS", "available": 100, "held": 0}

    # Each earn of the group remembered its own answer: a retry replays it, even posted alone.
    for case in ("posted", "unknown store", "no points"):
        key, number, amount, order, more = cases[case]
        assert await earn(alone_db, key, number, amount, order, **more) == grouped[case] | {"replayed": True}
    await assert_books_balance(db)


async def test_a_group_applies_each_members_tier_plan(make_merchant, db, settings):
    merchant = await make_merchant()
    silver, plain = await enroll(merchant, random_phone()), await enroll(merchant, random_phone())
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            member = (
                await conn.execute(text("SELECT id FROM members WHERE member_number = :n"), {"n": silver})
            ).scalar()
            await conn.execute(text("SELECT tier_assign(:m, 'SILVER')"), {"m": member})
    finally:
        await engine.dispose()

    def plan(points: int) -> dict[str, Any]:
        line = {"rule": "base", "points": points, "asset": "POINTS"}
        return {"points": points, "alliance": 0, "other": {}, "breakdown": [line], "dailyCap": None}

    plans = json.dumps({"0": plan(10), "1": plan(15), "2": plan(20)})
    scope = unique("scope")
    items = [
        {
            "i": i,
            "scope": scope,
            "key": unique("k"),
            "hash": request_hash("earn", {"n": number}),
            "tenant": merchant.tenant_id,
            "member_number": number,
            "asset": "POINTS",
            "amount": "10",
            "currency": "CNY",
            "order_ref": unique("o"),
            "store_code": None,
            "details": "{}",
            "effective_at": None,
            "plans": plans,
        }
        for i, number in enumerate((silver, plain))
    ]
    answers = await db.call("SELECT ledger_earn_group($1::jsonb)", json.dumps(items))
    assert [a["transaction"]["points"] for a in answers] == [15, 10]
    assert [a["balance"]["available"] for a in answers] == [15, 10]


async def test_earns_queued_together_are_shared_among_the_slots(make_merchant, process):
    """Earns that queue while no group is in flight are split among the slots, so PostgreSQL posts
    the groups side by side on its cores; the first slot to run does not take them all."""
    merchant = await make_merchant()
    poster = Poster(unique("scope"), merchant.tenant_id)
    numbers = [await enroll(merchant, random_phone()) for _ in range(10)]
    grouped_db = process(earn_groups_in_flight=2)

    async def earn(number: str, order: str) -> Any:
        item = EarnItem(member_number=number, amount=Decimal("15"), order_ref=order)
        return await earn_points(grouped_db, poster, idempotency_key=unique("k"), item=item, time_zone=ZONE)

    await earn(numbers[0], "WARM")  # rules and tiers cached: the ten below queue before any group leaves
    before = groups_posted()
    answers = await asyncio.gather(*(earn(number, f"S-{n}") for n, number in enumerate(numbers)))
    after = groups_posted()
    assert all(a["userErrors"] == [] for a in answers)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 10), "two groups of five, side by side"


async def test_items_over_the_prepaid_capacity_go_alone(settings, db, operator, make_merchant, process):
    """A prepaid merchant's group whose sum exceeds what is left hands its items back; posted alone,
    each takes what fits, in turn, and the capacity is never overdrawn."""
    asset = await private_asset(settings)
    since = "2000-01-01T00:00:00+00:00"
    terms = {"asset": asset, "model": "OPERATOR_CLEARING", "settlementValue": "0.01", "feeBps": 0}
    assert (await operator(TERMS, i=terms | {"effectiveFrom": since}))["setSettlementTerms"][
        "userErrors"
    ] == []
    merchant = await make_merchant()
    clearing = {
        "tenantCode": merchant.code,
        "asset": asset,
        "accrualCost": "0.012",
        "reimbursementRate": "0.010",
    }
    done = await operator(CLEARING, i=clearing | {"billing": "PREPAID", "effectiveFrom": since})
    assert done["setClearingTerms"] == {"ok": True, "userErrors": []}
    block = {
        "tenantCode": merchant.code,
        "asset": asset,
        "points": 300,
        "price": "3.60",
        "idempotencyKey": unique("k"),
    }
    assert (await operator(BLOCK, i=block))["purchasePointBlock"] == {"prepaidBalance": 300, "userErrors": []}
    poster = Poster(unique("scope"), merchant.tenant_id)
    numbers = [await enroll(merchant, random_phone()) for _ in range(3)]
    grouped_db = process(earn_groups_in_flight=1)

    async def earn(number: str, amount: str, order: str) -> Any:
        item = EarnItem(member_number=number, amount=Decimal(amount), order_ref=order, asset=asset)
        return await earn_points(grouped_db, poster, idempotency_key=unique("k"), item=item, time_zone=ZONE)

    assert (await earn(numbers[0], "1", "WARM"))["userErrors"] == []  # 299 left
    before = groups_posted()
    answers = await asyncio.gather(earn(numbers[1], "200", "P-1"), earn(numbers[2], "150", "P-2"))
    assert (groups_posted()[0] - before[0], groups_posted()[1] - before[1]) == (1, 2), "one group of both"
    codes = sorted(e["code"] for a in answers for e in a["userErrors"])
    assert codes == ["PREPAID_BALANCE_EXHAUSTED"], "350 does not fit in 299: alone, the first fits, not both"
    posted = sum(a["transaction"]["points"] for a in answers if a["transaction"])
    async with db.transaction(OPERATOR) as session:
        left = (
            await run_sql(
                session,
                text("SELECT points FROM prepaid_balances WHERE tenant_id = :t AND asset = :a"),
                {"t": merchant.tenant_id, "a": asset},
            )
        ).scalar_one()
    assert posted in (150, 200) and left == 299 - posted
    await assert_books_balance(db)


async def test_earns_of_a_group_that_fails_are_posted_alone(make_merchant, db, settings, process):
    """Another process's first attempt with one of the group's keys commits while the group waits
    for it: the group's call fails as a whole, and each earn is then answered on its own."""
    merchant = await make_merchant()
    poster = Poster(unique("scope"), merchant.tenant_id)
    numbers = [await enroll(merchant, random_phone()) for _ in range(4)]

    async def earn(key: str, number: str, order: str) -> Any:
        item = EarnItem(member_number=number, amount=Decimal("20"), order_ref=order)
        return await earn_points(grouped_db, poster, idempotency_key=key, item=item, time_zone=ZONE)

    grouped_db = process()
    await earn(unique("k"), numbers[0], "WARM")
    contested = unique("k")
    theirs = {
        "transaction": None,
        "balance": None,
        "hold": None,
        "userErrors": [{"field": "x", "code": "THEIRS", "message": "m"}],
    }
    engine = create_async_engine(settings.database_url)
    failed_before = REGISTRY.get_sample_value("alliance_earn_groups_failed_total") or 0.0
    try:
        async with engine.connect() as blocker:
            first_attempt = await blocker.begin()
            await blocker.execute(
                text(
                    "INSERT INTO idempotency_records (client_scope, idempotency_key, operation, request_hash, response)"
                    " VALUES (:s, :k, 'earn', 'h', CAST(:r AS jsonb))"
                ),
                {"s": poster.scope, "k": contested, "r": json.dumps(theirs)},
            )
            posting = asyncio.gather(
                earn(unique("k"), numbers[1], "G-1"),
                earn(contested, numbers[2], "G-2"),
                earn(unique("k"), numbers[3], "G-3"),
            )
            await _until_waiting_on_a_lock(engine)
            await first_attempt.commit()
            answers = await posting
    finally:
        await engine.dispose()
    assert (REGISTRY.get_sample_value("alliance_earn_groups_failed_total") or 0.0) == failed_before + 1
    assert [a["userErrors"] for a in (answers[0], answers[2])] == [[], []]
    assert answers[1]["userErrors"] == [
        {
            "field": "idempotencyKey",
            "code": "IDEMPOTENCY_KEY_REUSED",
            "message": "this idempotency key was used with a different request",
        }
    ]
    async with db.transaction(OPERATOR) as session:
        orders = (
            (
                await run_sql(
                    session,
                    text(
                        "SELECT order_ref FROM ledger_transactions WHERE tenant_id = :t AND kind = 'earn' ORDER BY order_ref"
                    ),
                    {"t": merchant.tenant_id},
                )
            )
            .scalars()
            .all()
        )
    assert orders == ["G-1", "G-3", "WARM"], "each earn posted once; the contested key's earn not at all"
    await assert_books_balance(db)


async def _until_waiting_on_a_lock(engine: Any) -> None:
    for _ in range(200):
        async with engine.connect() as conn:
            waiting = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                )
            ).scalar()
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the group never waited for the other attempt's key")


async def test_many_concurrent_earns_post_exactly_once_each(make_merchant, db, process):
    """Groups take one earn per member and per key; the rest wait for a later group."""
    merchant = await make_merchant()
    poster = Poster(unique("scope"), merchant.tenant_id)
    numbers = [await enroll(merchant, random_phone()) for _ in range(12)]
    requests = [(unique("k"), numbers[n % len(numbers)], f"O-{n}", 10 + n) for n in range(120)]
    requests += requests[:20]  # retries of the first twenty, concurrently with the first attempts

    async def earn(key: str, number: str, order: str, amount: int) -> Any:
        item = EarnItem(member_number=number, amount=Decimal(amount), order_ref=order)
        return await earn_points(grouped_db, poster, idempotency_key=key, item=item, time_zone=ZONE)

    grouped_db = process()
    before = groups_posted()
    answers = await asyncio.gather(*(earn(*request) for request in requests))
    assert groups_posted()[1] > before[1], "some earns were posted in groups"
    assert all(a["userErrors"] == [] for a in answers)
    for first, retry in zip(answers[:20], answers[120:], strict=True):
        assert without_moment(first) | {"replayed": None} == without_moment(retry) | {"replayed": None}
        assert first["transaction"]["id"] == retry["transaction"]["id"]
    assert len({a["transaction"]["id"] for a in answers}) == 120
    expected = {number: 0 for number in numbers}
    for _, number, _, amount in requests[:120]:
        expected[number] += amount
    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text(
                    "SELECT m.member_number, sum(l.remaining) FROM lots l JOIN members m ON m.id = l.member_id"
                    " WHERE m.member_number = ANY(:n) GROUP BY 1"
                ),
                {"n": numbers},
            )
        ).all()
    assert dict(rows) == expected
    await assert_books_balance(db)
