"""`viewer` (who the token is) and `node(id)` (refetch any object by its global ID)."""

from __future__ import annotations

from enum import Enum

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_global_id
from alliance.api.members import MemberNode
from alliance.api.tenants import TenantNode
from alliance.api.types import Node
from alliance.members.models import Member
from alliance.tenants.models import Store, Tenant


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
        )

    @strawberry.field(description="Any object by its global ID, if the caller may see it.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        from alliance.api.tenants import StoreNode

        type_name, pk = from_global_id(str(id))
        model = {"Tenant": Tenant, "Store": Store, "Member": Member}.get(type_name)
        if model is None:
            return None
        async with info.context.transaction() as session:
            row = await session.get(model, pk)
        if row is None:
            return None
        shape = {"Tenant": TenantNode, "Store": StoreNode, "Member": MemberNode}[type_name]
        return shape.from_model(row)
