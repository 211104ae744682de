"""`viewer` (who the token is) and `node(id)` (refetch any object by its global ID)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

import strawberry
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.api.catalog import RewardNode
from alliance.api.clients import ApiClientNode
from alliance.api.context import Info
from alliance.api.earning import EarningRuleNode
from alliance.api.ids import from_global_id
from alliance.api.ledger import LotNode, TransactionNode
from alliance.api.members import MemberNode
from alliance.api.offers import OfferNode
from alliance.api.settlement import SettlementBatchNode
from alliance.api.tenants import StoreNode, TenantNode
from alliance.api.types import Node
from alliance.api.webhooks import WebhookDeliveryNode, WebhookEndpointNode
from alliance.auth.clients import tenant_codes
from alliance.auth.models import ApiClient
from alliance.catalog import service as catalog_service
from alliance.earning.models import EarningRule
from alliance.ledger.models import LedgerTransaction, Lot
from alliance.members.models import Member
from alliance.offers import service as offer_service
from alliance.settlement.models import SettlementBatch
from alliance.tenants.models import Store, Tenant
from alliance.webhooks import service as webhook_service
from alliance.webhooks.models import WebhookEndpoint


@strawberry.enum
class PrincipalKind(Enum):
    OPERATOR = "operator"
    MERCHANT = "merchant"
    MEMBER = "member"


@strawberry.type
class Viewer:
    kind: PrincipalKind
    subject: str
    client_id: str | None
    scopes: list[str]
    tenant: TenantNode | None
    member: MemberNode | None
    time_zone: str = strawberry.field(description="The alliance's time zone (IANA), for showing dates.")


@strawberry.type
class ViewerQueries:
    @strawberry.field(description="The caller, as its token identifies it.")
    async def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        tenant = member = None
        async with info.context.transaction() as session:
            if principal.tenant_id is not None:
                row = await session.get(Tenant, principal.tenant_id)
                tenant = TenantNode.from_model(row) if row else None
            if principal.member_id is not None:
                found = await session.get(Member, principal.member_id)
                member = MemberNode.from_model(found) if found else None
        return Viewer(
            kind=PrincipalKind(principal.kind),
            subject=principal.subject,
            client_id=principal.client_id,
            scopes=sorted(principal.scopes),
            tenant=tenant,
            member=member,
            time_zone=info.context.settings.time_zone,
        )

    @strawberry.field(description="Any object by its global ID, if the caller may see it.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        type_name, pk = from_global_id(str(id))
        loader = NODE_LOADERS.get(type_name)
        if loader is None:
            return None
        async with info.context.transaction() as session:
            return await loader(session, pk)


async def _by_model(session: AsyncSession, model: Any, pk: int, shape: Any) -> Node | None:
    row = await session.get(model, pk)  # row-level security: invisible rows are simply not found
    return None if row is None else shape.from_model(row)


async def _reward(session: AsyncSession, pk: int) -> Node | None:
    row = await catalog_service.reward_by_id(session, pk)
    return None if row is None else RewardNode.from_row(row)


async def _api_client(session: AsyncSession, pk: int) -> Node | None:
    row = await session.get(ApiClient, pk)
    if row is None:
        return None
    codes = await tenant_codes(session, [row])
    return ApiClientNode.from_model(row, None if row.tenant_id is None else codes[row.tenant_id])


async def _webhook_delivery(session: AsyncSession, pk: int) -> Node | None:
    row = await webhook_service.delivery_by_id(session, pk)
    return None if row is None else WebhookDeliveryNode.from_row(row)


async def _offer(session: AsyncSession, pk: int) -> Node | None:
    view = await offer_service.get_offer(session, pk)
    return None if view is None else OfferNode.from_view(view)


NodeLoader = Callable[[AsyncSession, int], Awaitable[Node | None]]
NODE_LOADERS: dict[str, NodeLoader] = {
    "Tenant": lambda session, pk: _by_model(session, Tenant, pk, TenantNode),
    "Store": lambda session, pk: _by_model(session, Store, pk, StoreNode),
    "Member": lambda session, pk: _by_model(session, Member, pk, MemberNode),
    "LedgerTransaction": lambda session, pk: _by_model(session, LedgerTransaction, pk, TransactionNode),
    "Lot": lambda session, pk: _by_model(session, Lot, pk, LotNode),
    "SettlementBatch": lambda session, pk: _by_model(session, SettlementBatch, pk, SettlementBatchNode),
    "EarningRule": lambda session, pk: _by_model(session, EarningRule, pk, EarningRuleNode),
    "Reward": _reward,
    "ApiClient": _api_client,
    "WebhookEndpoint": lambda session, pk: _by_model(session, WebhookEndpoint, pk, WebhookEndpointNode),
    "WebhookDelivery": _webhook_delivery,
    "Offer": _offer,
}
