"""Live balance changes: one LISTEN connection per process, fanned out to subscribers in-process.

The ledger's triggers send ``NOTIFY balance_changed, '<member_id>:<asset>'`` in the transaction
of a posting or hold change (``migrations/sql/0013_webhooks.sql``); PostgreSQL delivers it at
commit, never for a rollback, to every listening process, so it works across any number of
gateway replicas. The notification says only *whose* balance changed: a subscriber re-reads the
balance through its own access-controlled path.

The triggers notify only for members someone watches (``balance_watches``): a notifying commit
holds a database-wide lock, which must stay off the ledger's common path. This process records
the members its subscribers watch under its own listener id, renews that lease while it lives
(the renewal doubles as the connection's health check), and removes a member when its last
subscriber leaves. Recording a watch waits for the postings of that member in flight (they hold
row locks recording conflicts with), so a posting that checked for watchers just before is
already visible when the subscriber reads its first balance. When the connection drops it is
re-established with backoff, the watches are recorded again, and every subscriber re-reads
(notifications may have been missed meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
import structlog

from alliance.errors import DomainError

CHANNEL = "balance_changed"
MAX_SUBSCRIBERS = 10_000  # per process
CONNECT_WAIT_SECONDS = 10.0  # a subscription waits this long for the listener before refusing
RENEW_SECONDS = 15.0  # the watches' lease is renewed (and the connection probed) this often
LEASE_SECONDS = 120  # a dead process's watches lapse after this
RECONNECT_MAX_SECONDS = 30.0

log = structlog.get_logger("alliance.live")
T = TypeVar("T")


@dataclass(eq=False)
class BalanceWatch:
    """One subscriber's pending news: assets whose balance changed, or "re-read everything"."""

    member_id: int
    changed: set[str] = field(default_factory=set)
    everything: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, asset: str | None) -> None:
        if asset is None:
            self.everything = True
        else:
            self.changed.add(asset)
        self.ready.set()

    async def next(self) -> set[str] | None:
        """Wait for news; the assets that changed, or None when every balance must be re-read.
        Bursts coalesce: ten postings before the subscriber wakes are one re-read."""
        await self.ready.wait()
        self.ready.clear()
        changed, everything = self.changed, self.everything
        self.changed, self.everything = set(), False
        return None if everything else changed


class BalanceHub:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.listener = uuid.uuid4()
        self.watches: dict[int, set[BalanceWatch]] = {}
        self.recorded: dict[int, asyncio.Future[None]] = {}  # members whose watch is in the database
        self.listening = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.connection: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()  # one query at a time on the connection (FIFO)
        self.background: set[asyncio.Task[None]] = set()

    @property
    def subscribers(self) -> int:
        return sum(len(watches) for watches in self.watches.values())

    @asynccontextmanager
    async def watch(self, member_id: int) -> AsyncIterator[BalanceWatch]:
        """Notifications for one member while the block runs. Yields once they are sure to come:
        a balance read after this point misses no later change."""
        if self.subscribers >= MAX_SUBSCRIBERS:
            raise DomainError("TOO_MANY_SUBSCRIPTIONS", "this gateway serves no more subscriptions; retry")
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._listen_forever())
        watch = BalanceWatch(member_id)
        self.watches.setdefault(member_id, set()).add(watch)
        try:
            try:
                await asyncio.wait_for(self.listening.wait(), CONNECT_WAIT_SECONDS)
                recorded = self.recorded.get(member_id)
                if recorded is None:
                    recorded = self.recorded[member_id] = asyncio.ensure_future(self._record([member_id]))
                await asyncio.shield(recorded)
            except Exception as exc:
                if self.recorded.get(member_id) is not None and self.recorded[member_id].done():
                    self.recorded.pop(member_id, None)  # let the next subscriber try again
                raise DomainError("LIVE_UNAVAILABLE", "live balances are unavailable; retry") from exc
            yield watch
        finally:
            watches = self.watches.get(member_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self.watches[member_id]
                    self.recorded.pop(member_id, None)
                    forget = asyncio.create_task(self._forget([member_id]))
                    self.background.add(forget)
                    forget.add_done_callback(self.background.discard)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    # -- the database side -------------------------------------------------------------------

    async def _query(self, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with self.lock:
            if self.connection is None:
                raise ConnectionError("the balance listener is not connected")
            return await action(self.connection)

    async def _record(self, members: list[int]) -> None:
        """Record watches (``balance_watch``), then wait for the hold changes in flight
        (``balance_watch_settle``): two transactions, see the SQL."""

        async def run(connection: asyncpg.Connection) -> None:
            await connection.execute(
                "SELECT balance_watch($1, $2, $3)", self.listener, members, LEASE_SECONDS
            )
            await connection.execute("SELECT balance_watch_settle($1)", members)

        await self._query(run)

    async def _renew(self) -> None:
        """Extend the lease of every watch of this process; members whose watch had lapsed (a
        slow connection, a racing removal) may have missed notifications: they re-read."""
        members = list(self.watches)
        lapsed = await self._query(
            lambda connection: connection.fetch(
                "SELECT balance_watch_renew($1, $2, $3) AS member_id", self.listener, members, LEASE_SECONDS
            )
        )
        for row in lapsed:
            for watch in self.watches.get(row["member_id"], ()):
                watch.note(None)

    async def _forget(self, members: list[int]) -> None:
        with contextlib.suppress(Exception):  # it lapses by itself otherwise
            await self._query(
                lambda connection: connection.execute(
                    "SELECT balance_unwatch($1, $2)", self.listener, members
                )
            )

    def _on_notification(self, connection: object, pid: int, channel: str, payload: str) -> None:
        member, _, asset = payload.partition(":")
        if not member.isdigit() or not asset:
            return
        for watch in self.watches.get(int(member), ()):
            watch.note(asset)

    async def _listen_forever(self) -> None:
        delay = 0.5
        reconnecting = False
        while True:
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self.dsn)
                connection.add_termination_listener(lambda _, event=lost: event.set())
                await connection.add_listener(CHANNEL, self._on_notification)
                async with self.lock:
                    self.connection = connection
                if reconnecting and self.watches:
                    await self._record(list(self.watches))
                    for watches in self.watches.values():
                        for watch in watches:
                            watch.note(None)
                self.listening.set()
                delay = 0.5
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), RENEW_SECONDS)
                    if not lost.is_set():
                        await asyncio.wait_for(self._renew(), RENEW_SECONDS)
                log.warning("balance listener connection lost; reconnecting")
            except asyncio.CancelledError:
                await self._close_connection(forget=True)
                raise
            except Exception as exc:
                log.warning("balance listener failed; reconnecting", error=f"{type(exc).__name__}: {exc}")
            self.listening.clear()
            await self._close_connection(forget=False)
            reconnecting = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    async def _close_connection(self, forget: bool) -> None:
        self.listening.clear()
        connection, self.connection = self.connection, None
        if connection is None:
            return
        if forget and self.watches and not connection.is_closed():
            with contextlib.suppress(Exception):  # they lapse by themselves otherwise
                await asyncio.wait_for(
                    connection.execute("SELECT balance_unwatch($1, $2)", self.listener, list(self.watches)), 1
                )
        connection.terminate()
