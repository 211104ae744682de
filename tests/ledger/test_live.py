"""The NOTIFY behind live balances: only for watched members, only at commit, and a new watch
misses no posting that was in flight when it started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from alliance.db import Database
from alliance.db.database import OPERATOR
from alliance.ledger.live import CHANNEL, BalanceHub
from alliance.ledger.service import member_balance
from tests.catalog import earn as award
from tests.catalog import member_id
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import enroll


@pytest.fixture
async def notifications(db: Database) -> AsyncIterator[asyncio.Queue[str]]:
    """Every balance_changed payload, as a plain listener on its own connection receives them."""
    received: asyncio.Queue[str] = asyncio.Queue()
    connection = await asyncpg.connect(db.listen_dsn())
    await connection.add_listener(CHANNEL, lambda _c, _p, _ch, payload: received.put_nowait(payload))
    yield received
    await connection.close()


async def drained(queue: asyncio.Queue[str], wait: float = 0.3) -> list[str]:
    await asyncio.sleep(wait)
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def earn_uncommitted(connection, merchant, number: str) -> None:
    posted = await connection.execute(
        text(
            "SELECT ledger_earn('live-test', :key, 'h', :tenant, 'earn', :number, 'POINTS', 7, 7, 'CNY', :key,"
            " NULL, NULL, NULL, NULL)"
        ),
        {"key": unique("k"), "tenant": merchant.tenant_id, "number": number},
    )
    assert posted.scalar_one()["userErrors"] == []


async def test_only_watched_members_are_notified_and_only_at_commit(db, make_merchant, notifications):
    mart = await make_merchant()
    watched, unwatched = await enroll(mart, random_phone()), await enroll(mart, random_phone())
    watched_id = await member_id(db, watched)
    hub = BalanceHub(db.listen_dsn())
    try:
        async with hub.watch(watched_id):
            await award(mart, unwatched, 5)
            await award(mart, watched, 5)
            assert await drained(notifications) == [f"{watched_id}:POINTS"]

            async with db.engine.connect() as connection:
                transaction = await connection.begin()
                await earn_uncommitted(connection, mart, watched)
                assert await drained(notifications) == [], "nothing before the commit"
                await transaction.rollback()
            assert await drained(notifications) == [], "nothing for a rollback"
        await asyncio.sleep(0.2)  # the watch is removed in the background
        await award(mart, watched, 5)
        assert await drained(notifications) == []
    finally:
        await hub.close()


async def test_a_new_watch_waits_for_a_posting_in_flight(db, make_merchant):
    mart = await make_merchant()
    number = await enroll(mart, random_phone())
    member = await member_id(db, number)
    hub = BalanceHub(db.listen_dsn())
    try:
        async with db.engine.connect() as connection:
            transaction = await connection.begin()
            await earn_uncommitted(connection, mart, number)  # checked for watchers: none yet

            async def watch_then_read() -> int:
                async with hub.watch(member), db.transaction(OPERATOR) as session:
                    return (await member_balance(session, member, "POINTS", None)).available

            reader = asyncio.create_task(watch_then_read())
            await asyncio.sleep(0.5)
            assert not reader.done(), "the watch waits for the posting that may not have seen it"
            await transaction.commit()
        assert await asyncio.wait_for(reader, 10) == 7, "so the first read includes it"
    finally:
        await hub.close()
