"""GraphQL subscriptions (graphql-transport-ws): ``balanceChanged`` for member apps.

Who may watch whom is who may read whom: a member token only itself (another member is "not
found"), a merchant the members linked to it, the operator anyone. The first messages are the
current balances; after that one message per change, re-read through the caller's own access
context when the ledger's NOTIFY arrives (never taken from the notification itself). The stream
ends with UNAUTHENTICATED when the token it was opened with expires.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import strawberry
from graphql import GraphQLError

from alliance.api.context import Info
from alliance.api.ledger import Balance, BigInt
from alliance.auth.principal import LEDGER_READ
from alliance.ledger import service
from alliance.ledger.service import check_asset
from alliance.members.service import member_by_number


@strawberry.type
class BalanceChange:
    member_number: str
    balance: Balance


async def _balances(info: Info, member_id: int, assets: set[str] | None) -> list[service.Balance]:
    """Every asset's balance (``assets`` None), or those assets'."""
    async with info.context.transaction() as session:
        if assets is None:
            return await service.member_balances(session, member_id, 0)
        return [await service.member_balance(session, member_id, asset, None) for asset in sorted(assets)]


@strawberry.type
class BalanceSubscriptions:
    @strawberry.subscription(
        description="The member's balance whenever it changes (postings, holds): first the current "
        "balance of each asset (or of `asset`), then one message per change. Member tokens: their own "
        "number only; merchants: linked members."
    )
    async def balance_changed(
        self, info: Info, member_number: str, asset: str | None = None
    ) -> AsyncGenerator[BalanceChange, None]:
        info.context.require(LEDGER_READ)
        wanted = None if asset is None else {check_asset(asset)}
        async with info.context.transaction() as session:
            member = await member_by_number(session, member_number)  # NotFound if not visible
        assert member.id is not None
        expires_at = info.context.token_expires_at
        sent: dict[str, tuple[int, int]] = {}
        async with info.context.services.balances.watch(member.id) as watch:
            to_read = wanted
            while True:
                balances = [] if to_read == set() else await _balances(info, member.id, to_read)
                for balance in balances:
                    if sent.get(balance.asset) != (balance.available, balance.held):
                        sent[balance.asset] = (balance.available, balance.held)
                        yield BalanceChange(
                            member_number=member.member_number,
                            balance=Balance(
                                asset=balance.asset,
                                available=BigInt(balance.available),
                                held=BigInt(balance.held),
                                member_pk=member.id,
                            ),
                        )
                remaining = None if expires_at is None else expires_at - time.time()
                try:
                    changed = await asyncio.wait_for(watch.next(), remaining)
                except TimeoutError:
                    raise GraphQLError(
                        "the access token expired", extensions={"code": "UNAUTHENTICATED"}
                    ) from None
                # None: re-read everything watched (the listener reconnected).
                to_read = wanted if changed is None else changed if wanted is None else changed & wanted
