"""GraphQL for tenants and stores: thin wrappers over `alliance.tenants.service`."""

from __future__ import annotations

from datetime import datetime

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.mutations import made_once, run_in_transaction
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import STORES_WRITE, TENANTS_READ, TENANTS_WRITE
from alliance.tenants import green, service
from alliance.tenants.models import Store, Tenant
from alliance.tenants.models import TenantCategory as TenantCategoryModel
from alliance.tenants.models import TenantStatus as TenantStatusModel

TenantCategory = strawberry.enum(TenantCategoryModel, name="TenantCategory")
TenantStatus = strawberry.enum(TenantStatusModel, name="TenantStatus")


@strawberry.type(name="Store")
class StoreNode(Node):
    code: str
    name: str
    city: str | None
    created_at: datetime

    @classmethod
    def from_model(cls, store: Store) -> StoreNode:
        assert store.id is not None and store.created_at is not None
        return cls(
            id=strawberry.ID(to_global_id("Store", store.id)),
            code=store.code,
            name=store.name,
            city=store.city,
            created_at=store.created_at,
        )


@strawberry.type
class GreenAward:
    points: int
    reason: str
    created_at: datetime | None


@strawberry.type(name="Tenant")
class TenantNode(Node):
    code: str
    name: str
    category: TenantCategory
    status: TenantStatus
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, tenant: Tenant) -> TenantNode:
        assert tenant.id is not None and tenant.created_at is not None
        return cls(
            id=strawberry.ID(to_global_id("Tenant", tenant.id)),
            code=tenant.code,
            name=tenant.name,
            category=TenantCategoryModel(tenant.category),
            status=TenantStatusModel(tenant.status),
            created_at=tenant.created_at,
            pk=tenant.id,
        )

    @strawberry.field(
        description="GREEN points the operator awarded this tenant for environmental cooperation."
    )
    async def green_points(self, info: Info) -> int:
        async with info.context.transaction() as session:
            return await green.tenant_green_total(session, self.pk)

    @strawberry.field(description="The latest green-cooperation awards, newest first.")
    async def green_awards(self, info: Info, last: int = 20) -> list[GreenAward]:
        size = page_size(last, info.context.settings.max_page_size)
        async with info.context.transaction() as session:
            rows = await green.list_tenant_green_awards(session, self.pk, size)
        return [GreenAward(points=row.points, reason=row.reason, created_at=row.created_at) for row in rows]

    @strawberry.field(description="The tenant's stores, in creation order.")
    async def stores(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[StoreNode]:
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.list_stores(session, self.pk, after_id, size + 1)
        return build_connection(rows, size, lambda s: s.id, StoreNode.from_model, after_id is not None)


@strawberry.input
class CreateTenantInput:
    code: str = strawberry.field(description="Unique lowercase slug, e.g. `sunrise-supermarket`.")
    name: str
    category: TenantCategory
    idempotency_key: str | None = retry_key()


@strawberry.type
class CreateTenantPayload:
    tenant: TenantNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class AwardTenantGreenPointsInput:
    tenant_code: str
    points: int
    reason: str = strawberry.field(description="E.g. 'packaging take-back programme, Q3'.")
    idempotency_key: str


@strawberry.type
class AwardTenantGreenPointsPayload:
    award: GreenAward | None = None
    tenant: TenantNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CreateStoreInput:
    tenant_code: str | None = strawberry.field(
        default=None, description="Required for operators; a merchant may omit it (its own tenant)."
    )
    code: str
    name: str
    city: str | None = None
    idempotency_key: str | None = retry_key()


@strawberry.type
class CreateStorePayload:
    store: StoreNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def own_tenant_code(info: Info) -> str | None:
    principal = info.context.principal
    if principal.tenant_id is None:
        return None
    async with info.context.transaction() as session:
        tenant = await service.tenant_by_id(session, principal.tenant_id)
    return tenant.code if tenant else None


@strawberry.type
class TenantQueries:
    @strawberry.field(description="A tenant by code. Merchants see only their own.")
    async def tenant(self, info: Info, code: str) -> TenantNode | None:
        info.context.require(TENANTS_READ)
        async with info.context.transaction() as session:
            tenant = await service.tenant_by_code(session, code)
        return TenantNode.from_model(tenant) if tenant else None

    @strawberry.field(description="Tenants visible to the caller: all for operators, itself for a merchant.")
    async def tenants(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[TenantNode]:
        info.context.require(TENANTS_READ)
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.list_tenants(session, after_id, size + 1)
        return build_connection(rows, size, lambda t: t.id, TenantNode.from_model, after_id is not None)


@strawberry.type
class TenantMutations:
    @strawberry.mutation(description="Onboard a partner merchant (operator).")
    async def create_tenant(self, info: Info, input: CreateTenantInput) -> CreateTenantPayload:
        info.context.require(TENANTS_WRITE, "operator")

        async def create(session):  # type: ignore[no-untyped-def]
            return await made_once(
                session,
                info.context,
                input.idempotency_key,
                lambda: service.create_tenant(session, input.code.strip(), input.name, input.category),
                lambda tenant: (tenant.id, True),
                lambda earlier: service.tenant_by_id(session, earlier.entity_id),
            )

        result = await run_in_transaction(info.context, create)
        if isinstance(result, list):
            return CreateTenantPayload(user_errors=result)
        return CreateTenantPayload(tenant=TenantNode.from_model(result))

    @strawberry.mutation(description="GREEN points for a partner's B2B environmental cooperation (operator).")
    async def award_tenant_green_points(
        self, info: Info, input: AwardTenantGreenPointsInput
    ) -> AwardTenantGreenPointsPayload:
        principal = info.context.require(TENANTS_WRITE, "operator")

        async def award(session):  # type: ignore[no-untyped-def]
            row = await green.award_tenant_green_points(
                session,
                principal.idempotency_scope,
                input.idempotency_key,
                input.tenant_code,
                input.points,
                input.reason,
            )
            return row, await service.tenant_by_id(session, row.tenant_id)

        result = await run_in_transaction(info.context, award)
        if isinstance(result, list):
            return AwardTenantGreenPointsPayload(user_errors=result)
        row, tenant = result
        return AwardTenantGreenPointsPayload(
            award=GreenAward(points=row.points, reason=row.reason, created_at=row.created_at),
            tenant=TenantNode.from_model(tenant) if tenant else None,
        )

    @strawberry.mutation(description="Add a store to a tenant (operator, or a merchant for its own tenant).")
    async def create_store(self, info: Info, input: CreateStoreInput) -> CreateStorePayload:
        principal = info.context.require(STORES_WRITE, "operator", "merchant")
        # A merchant names no tenant (or its own); any other code is invisible to it under
        # row-level security, so it gets TENANT_NOT_FOUND exactly as for a code that does not exist.
        tenant_code = input.tenant_code
        if tenant_code is None and principal.kind == "merchant":
            tenant_code = await own_tenant_code(info)
        if tenant_code is None:
            return CreateStorePayload(
                user_errors=[
                    UserError(field="tenantCode", code="TENANT_REQUIRED", message="tenantCode is required")
                ]
            )

        async def create(session):  # type: ignore[no-untyped-def]
            return await made_once(
                session,
                info.context,
                input.idempotency_key,
                lambda: service.create_store(session, tenant_code, input.code, input.name, input.city),
                lambda store: (store.id, True),
                lambda earlier: session.get(Store, earlier.entity_id),
            )

        result = await run_in_transaction(info.context, create)
        if isinstance(result, list):
            return CreateStorePayload(user_errors=result)
        return CreateStorePayload(store=StoreNode.from_model(result))
