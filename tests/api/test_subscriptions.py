"""balanceChanged over graphql-transport-ws, with a real WebSocket client against real uvicorn
servers on loopback (two of them: replicas sharing one database)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from alliance.api.app import create_app
from alliance.tenants.models import TenantCategory
from tests.catalog import earn as award
from tests.catalog import member_id
from tests.conftest import random_phone, unique
from tests.ledger.test_bad_input import HOLD
from tests.ledger.test_worked_example import EARN, enroll

BALANCE_CHANGED = """subscription($n: String!, $a: String) { balanceChanged(memberNumber: $n, asset: $a) {
  memberNumber balance { asset available held } } }"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(app: Any) -> AsyncIterator[str]:
    """``app`` (its lifespan already running) on a real uvicorn server; yields the WebSocket URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.02)
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture(scope="module")
async def gateway(app) -> AsyncIterator[str]:
    async for url in serve(app):
        yield url


@pytest.fixture(scope="module")
async def replica(settings) -> AsyncIterator[tuple[Any, str]]:
    """A second gateway process's worth: its own app, pool and LISTEN connection."""
    assert settings.database_url is not None
    other = create_app(settings.database_url, settings)
    async with other.router.lifespan_context(other):
        async for url in serve(other):
            yield other, url


class Subscriber:
    """A graphql-transport-ws client."""

    def __init__(self, socket_: ClientConnection) -> None:
        self.socket = socket_

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            message = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if message["type"] == "ping":
                await self.socket.send(json.dumps({"type": "pong"}))
                continue
            return message

    async def subscribe(self, id_: str, query: str, **variables: Any) -> None:
        payload = {"query": query, "variables": variables}
        await self.socket.send(json.dumps({"id": id_, "type": "subscribe", "payload": payload}))

    async def balance(self, timeout: float = 10.0) -> dict[str, Any]:
        message = await self.receive(timeout)
        assert message["type"] == "next" and "errors" not in message["payload"], message
        return message["payload"]["data"]["balanceChanged"]

    async def nothing_within(self, seconds: float) -> None:
        with pytest.raises(TimeoutError):
            await self.receive(seconds)


async def open_subscriber(url: str, token: str) -> Subscriber:
    socket_ = await connect(url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await socket_.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    subscriber = Subscriber(socket_)
    assert (await subscriber.receive())["type"] == "connection_ack"
    return subscriber


async def member_token(app, db, number: str, expires_in: int | None = None) -> str:
    issuer = app.state.token_issuer
    now = (
        None
        if expires_in is None
        else int(time.time()) - issuer.settings.member_token_ttl_seconds + expires_in
    )
    return issuer.for_member(await member_id(db, number), number, now=now).access_token


async def test_a_member_sees_its_balance_change(app, db, gateway, make_merchant):
    mart = await make_merchant()
    number = await enroll(mart, random_phone())
    await award(mart, number, 100)
    subscriber = await open_subscriber(gateway, await member_token(app, db, number))
    try:
        await subscriber.subscribe("1", BALANCE_CHANGED, n=number)
        first = await subscriber.balance()
        assert first == {"memberNumber": number, "balance": {"asset": "POINTS", "available": 100, "held": 0}}

        earned = await mart.api(
            EARN,
            i={
                "memberNumber": number,
                "amount": "300",
                "orderRef": unique("o"),
                "idempotencyKey": unique("k"),
            },
        )
        assert earned["earnPoints"]["userErrors"] == []
        assert (await subscriber.balance())["balance"] == {"asset": "POINTS", "available": 400, "held": 0}

        held = await mart.api(
            HOLD, i={"memberNumber": number, "points": 50, "orderRef": "H", "idempotencyKey": unique("k")}
        )
        assert held["holdPoints"]["userErrors"] == []
        assert (await subscriber.balance())["balance"] == {"asset": "POINTS", "available": 350, "held": 50}

        await award(mart, number, 7, "GREEN")  # another asset: a message of its own
        assert (await subscriber.balance())["balance"] == {"asset": "GREEN", "available": 7, "held": 0}
        await subscriber.nothing_within(0.5)
    finally:
        await subscriber.socket.close()


async def test_an_asset_filter_and_a_linked_merchant(app, db, gateway, make_merchant):
    mart = await make_merchant()
    number = await enroll(mart, random_phone())
    subscriber = await open_subscriber(gateway, mart.api.token)
    try:
        await subscriber.subscribe("g", BALANCE_CHANGED, n=number, a="GREEN")
        assert (await subscriber.balance())["balance"] == {"asset": "GREEN", "available": 0, "held": 0}
        await award(mart, number, 40)  # POINTS: not watched
        await subscriber.nothing_within(0.5)
        await award(mart, number, 3, "GREEN")
        assert (await subscriber.balance())["balance"] == {"asset": "GREEN", "available": 3, "held": 0}
    finally:
        await subscriber.socket.close()


async def refusal(subscriber: Subscriber, id_: str, number: str) -> dict[str, Any]:
    """The error a subscription ends with: one `next` with errors, then `complete`."""
    await subscriber.subscribe(id_, BALANCE_CHANGED, n=number)
    message = await subscriber.receive()
    assert message["id"] == id_ and message["type"] == "next" and message["payload"]["data"] is None, message
    assert await subscriber.receive() == {"id": id_, "type": "complete"}
    return message["payload"]["errors"][0]


async def test_only_ones_own_member_number_or_a_linked_members(app, db, gateway, make_merchant):
    mart = await make_merchant()
    stranger = await make_merchant()
    me = await enroll(mart, random_phone())
    someone_else = await enroll(mart, random_phone())

    member = await open_subscriber(gateway, await member_token(app, db, me))
    merchant = await open_subscriber(gateway, stranger.api.token)
    try:
        error = await refusal(member, "other", someone_else)
        assert error["extensions"]["code"] == "MEMBER_NOT_FOUND"
        error = await refusal(merchant, "unlinked", me)
        assert error["extensions"]["code"] == "MEMBER_NOT_FOUND"
        await award(mart, someone_else, 10)
        await member.nothing_within(0.5)
        # The connection is still good for what the member may see.
        await member.subscribe("mine", BALANCE_CHANGED, n=me)
        await award(mart, me, 5)
        assert (await member.balance())["balance"]["available"] == 5
    finally:
        await member.socket.close()
        await merchant.socket.close()


@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic x"}]
)
async def test_a_connection_without_a_valid_token_is_closed(gateway, payload):
    async with connect(gateway, subprotocols=["graphql-transport-ws"]) as socket_:  # type: ignore[list-item]
        await socket_.send(json.dumps({"type": "connection_init", "payload": payload}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket_.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_subscriptions_over_websocket_everything_else_over_http(app, db, gateway, make_merchant):
    mart = await make_merchant()
    over_http = await mart.api.errors(BALANCE_CHANGED, n="8100000001")
    assert over_http[0]["extensions"]["code"] == "BAD_REQUEST"
    subscriber = await open_subscriber(gateway, mart.api.token)
    try:
        for id_, operation in (("q", "{ viewer { kind } }"), ("m", "mutation { __typename }")):
            await subscriber.subscribe(id_, operation)
            message = await subscriber.receive()
            assert message["id"] == id_ and message["type"] == "error", message  # refused before executing
            assert message["payload"][0]["extensions"]["code"] == "BAD_REQUEST"
    finally:
        await subscriber.socket.close()


async def test_a_subscription_ends_when_its_token_expires(app, db, gateway, make_merchant):
    mart = await make_merchant()
    number = await enroll(mart, random_phone())
    subscriber = await open_subscriber(gateway, await member_token(app, db, number, expires_in=2))
    try:
        await subscriber.subscribe("1", BALANCE_CHANGED, n=number, a="POINTS")
        assert (await subscriber.balance())["balance"]["available"] == 0
        message = await subscriber.receive(timeout=10)
        assert (
            message["type"] == "next"
            and message["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        )
        assert (await subscriber.receive())["type"] == "complete"
    finally:
        await subscriber.socket.close()


async def test_changes_reach_subscribers_of_every_replica(app, db, replica, make_merchant):
    _, replica_url = replica
    mart = await make_merchant(TenantCategory.HOTEL)
    number = await enroll(mart, random_phone())
    subscriber = await open_subscriber(replica_url, await member_token(app, db, number))
    try:
        await subscriber.subscribe("1", BALANCE_CHANGED, n=number, a="POINTS")
        assert (await subscriber.balance())["balance"]["available"] == 0
        await award(mart, number, 25)  # posted through the other gateway (the test client's app)
        assert (await subscriber.balance())["balance"]["available"] == 25
    finally:
        await subscriber.socket.close()


async def test_the_listener_reconnects_and_subscribers_catch_up(app, db, settings, gateway, make_merchant):
    mart = await make_merchant()
    number = await enroll(mart, random_phone())
    subscriber = await open_subscriber(gateway, await member_token(app, db, number))
    hub = app.state.services.balances
    try:
        await subscriber.subscribe("1", BALANCE_CHANGED, n=number, a="POINTS")
        assert (await subscriber.balance())["balance"]["available"] == 0
        listener_pid = hub.connection.get_server_pid()
        engine = create_async_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": listener_pid})
            # Posted while the listener is down or reconnecting: caught up by the re-read after it.
            await award(mart, number, 11)
        finally:
            await engine.dispose()
        assert (await subscriber.balance(timeout=20))["balance"]["available"] == 11
        await award(mart, number, 1)
        assert (await subscriber.balance())["balance"]["available"] == 12
        assert hub.connection.get_server_pid() != listener_pid
    finally:
        await subscriber.socket.close()
