"""Concurrent earns posted together: one call and one transaction for many `earnPoints` requests.

Why: an earn's own work in PostgreSQL is a handful of index probes and inserts. Under load,
what dominates is what every transaction pays whatever it does (the call, the snapshot, a
dozen PL/pgSQL statements, the commit and its WAL flush) and many backends taking turns on
few cores. So earns that arrive while earlier ones are being posted wait for the next group
instead of each opening a transaction of its own. With nothing in flight an earn goes at once,
alone, through ``ledger_earn``: grouping adds no wait at low load, and groups grow with the
queue under load (the batching TigerBeetle is built on).

Each earn keeps its own answer and its own idempotency record: ``ledger_earn_group``
(migrations/sql/0022_earn_groups.sql) applies ``ledger_earn``'s checks item by item,
set-based. An earn the group cannot take (a daily cap or co-earned assets in its plans), an
item the group hands back (prepaid capacity), and every earn of a group whose call fails as a
whole are posted alone, so one request cannot fail another. Posting alone after a failed group
is safe: the group wrote nothing, and an earn it did commit before its answer was lost is
found by its idempotency record.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from alliance.db import Database
from alliance.db.calls import json_text
from alliance.observability import EARN_GROUP_SIZE, EARN_GROUPS_FAILED, count_posting

Payload = dict[str, Any]
PostAlone = Callable[[dict[str, Any]], Awaitable[Payload]]

MAX_GROUP_ITEMS = 1000  # ledger_earn_group's own limit
MAX_SCANNED = 4  # a group looks at most this many times its size into the queue for items it may take

# The parameters of ``ledger_earn`` a group item carries (under shorter names).
_ITEM_FIELDS = {
    "p_scope": "scope",
    "p_key": "key",
    "p_hash": "hash",
    "p_tenant": "tenant",
    "p_member_number": "member_number",
    "p_asset": "asset",
    "p_amount": "amount",
    "p_currency": "currency",
    "p_order_ref": "order_ref",
    "p_store_code": "store_code",
    "p_details": "details",
    "p_effective_at": "effective_at",
    "p_plans": "plans",
}


def can_group(plans: dict[str, dict[str, Any]]) -> bool:
    """Whether ``ledger_earn_group`` can post a purchase earn with these plans (one per tier):
    none has a daily cap or co-earns another asset (those need ``ledger_earn``'s locks)."""
    return all(plan["dailyCap"] is None and not plan["other"] for plan in plans.values())


@dataclass(slots=True)
class _Pending:
    params: dict[str, Any]
    answer: asyncio.Future[Payload]


class EarnGroups:
    """The earns of one process waiting to be posted, and the groups being posted.

    ``max_items`` bounds a group (1: every earn is posted alone); ``in_flight`` bounds the
    groups posted at once, so a burst queues here rather than in PostgreSQL.
    """

    def __init__(self, db: Database, post_alone: PostAlone, max_items: int, in_flight: int) -> None:
        assert 1 <= max_items <= MAX_GROUP_ITEMS, max_items
        assert in_flight >= 1, in_flight
        self._db = db
        self._post_alone = post_alone
        self._max_items = max_items
        self._in_flight = in_flight
        self._posting = 0  # slots started (a slot posts one group at a time until the queue is empty)
        self._starting = 0  # slots started that have not taken their first group yet
        self._queue: deque[_Pending] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(self, params: dict[str, Any]) -> Payload:
        """Post one earn (``ledger_earn``'s named parameters) and return its payload."""
        if self._max_items == 1:
            return await self._post_alone(params)
        answer: asyncio.Future[Payload] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(params, answer))
        if self._posting < self._in_flight:
            self._start_posting()
        return await answer

    def _start_posting(self) -> None:
        self._posting += 1
        self._starting += 1
        task = asyncio.create_task(self._drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        self._starting -= 1
        try:
            while self._queue:
                # The queue is shared among this slot, the slots started that have not taken yet,
                # and the idle ones, so groups run side by side (PostgreSQL runs each on one core)
                # instead of the first slot to run taking every earn queued meanwhile.
                idle = self._in_flight - self._posting
                group = self._take(-(-len(self._queue) // (1 + self._starting + idle)))
                if self._queue and idle > 0:
                    self._start_posting()
                try:
                    await self._post_group(group)
                except BaseException as error:  # never leave a caller waiting for an answer
                    for pending in group:
                        if pending.answer.done():
                            continue
                        if isinstance(error, Exception):
                            pending.answer.set_exception(error)
                        else:
                            pending.answer.cancel()
                    if not isinstance(error, Exception):
                        raise
        finally:
            self._posting -= 1

    def _take(self, share: int) -> list[_Pending]:
        """The next group of at most ``share`` earns: queue order, at most one earn per member and
        per idempotency key (the others wait for a later group, still first in line)."""
        size = min(share, self._max_items)
        group: list[_Pending] = []
        later: list[_Pending] = []
        members: set[str] = set()
        keys: set[tuple[str, str]] = set()
        scanned = 0
        while self._queue and len(group) < size and scanned < size * MAX_SCANNED:
            pending = self._queue.popleft()
            scanned += 1
            if pending.answer.done():  # its caller gave up before it was posted
                continue
            member = pending.params["p_member_number"]
            key = (pending.params["p_scope"], pending.params["p_key"])
            if member in members or key in keys:
                later.append(pending)
                continue
            members.add(member)
            keys.add(key)
            group.append(pending)
        self._queue.extendleft(reversed(later))
        return group

    async def _post_group(self, group: list[_Pending]) -> None:
        if len(group) <= 1:  # empty when every caller taken had given up
            await asyncio.gather(*(_settle(pending, self._post_alone(pending.params)) for pending in group))
            return
        items = [
            {short: pending.params[name] for name, short in _ITEM_FIELDS.items()} | {"i": index}
            for index, pending in enumerate(group)
        ]
        try:
            answers = await self._db.call("SELECT ledger_earn_group($1::jsonb)", json_text(items))
        except Exception:
            # The group wrote nothing, or (a connection lost after the commit) its idempotency
            # records answer for it: a key another process posted meanwhile, a deadlock, a
            # refused or dropped connection... Each earn goes alone and gets its own answer or error.
            EARN_GROUPS_FAILED.inc()
            await asyncio.gather(*(_settle(pending, self._post_alone(pending.params)) for pending in group))
            return
        assert isinstance(answers, list) and len(answers) == len(group), answers
        EARN_GROUP_SIZE.observe(len(group))
        alone = []
        for pending, payload in zip(group, answers, strict=True):
            if payload is None:
                alone.append(pending)
                continue
            count_posting("ledger_earn", payload)
            if not pending.answer.done():
                pending.answer.set_result(payload)
        await asyncio.gather(*(_settle(pending, self._post_alone(pending.params)) for pending in alone))


async def _settle(pending: _Pending, posting: Awaitable[Payload]) -> None:
    """Await ``posting`` and hand its payload (or its exception) to the waiting caller."""
    try:
        payload = await posting
    except Exception as error:  # the caller's own error, raised where it awaits
        if not pending.answer.done():
            pending.answer.set_exception(error)
        return
    if not pending.answer.done():
        pending.answer.set_result(payload)
