"""GraphQL for API clients: the operator manages every client, a merchant its own tenant's.

A secret is shown once, in the payload of the mutation that made it. Every change is audited
(merchants' too: these are credentials).
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.mutations import run_in_transaction
from alliance.api.types import Connection, Node, UserError, build_connection, page_size
from alliance.auth import clients as service
from alliance.auth.models import ApiClient
from alliance.auth.principal import CLIENTS_MANAGE
from alliance.errors import DomainError
from alliance.tenants.service import tenant_by_code


@strawberry.enum
class ApiClientRole(Enum):
    OPERATOR = "operator"
    MERCHANT = "merchant"


@strawberry.enum
class ApiClientStatus(Enum):
    ACTIVE = "active"
    REVOKED = "revoked"


@strawberry.type(name="ApiClient")
class ApiClientNode(Node):
    client_id: str
    name: str
    role: ApiClientRole
    tenant_code: str | None
    scopes: list[str]
    status: ApiClientStatus
    created_at: datetime
    secret_rotated_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, client: ApiClient, tenant_code: str | None) -> ApiClientNode:
        assert client.id is not None and client.created_at is not None
        return cls(
            id=strawberry.ID(to_global_id("ApiClient", client.id)),
            client_id=client.client_id,
            name=client.name,
            role=ApiClientRole(client.role),
            tenant_code=tenant_code,
            scopes=sorted(client.scopes),
            status=ApiClientStatus(client.status),
            created_at=client.created_at,
            secret_rotated_at=client.secret_rotated_at,
            revoked_at=client.revoked_at,
        )


async def _nodes(session, rows: list[ApiClient]) -> list[ApiClientNode]:  # type: ignore[no-untyped-def]
    codes = await service.tenant_codes(session, rows)
    return [
        ApiClientNode.from_model(row, None if row.tenant_id is None else codes[row.tenant_id]) for row in rows
    ]


@strawberry.input
class ApiClientFilter:
    status: ApiClientStatus | None = None


@strawberry.input
class CreateApiClientInput:
    name: str
    role: ApiClientRole = strawberry.field(
        default=ApiClientRole.MERCHANT, description="Operators only may create OPERATOR clients."
    )
    tenant_code: str | None = strawberry.field(
        default=None, description="The merchant client's tenant (operator); a merchant's is its own."
    )
    scopes: list[str] | None = strawberry.field(
        default=None, description="Default: every scope of the role that the caller itself holds."
    )


@strawberry.type
class CreateApiClientPayload:
    client: ApiClientNode | None = None
    client_secret: str | None = strawberry.field(
        default=None, description="Shown once, here; only its digest is stored."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RotateApiClientSecretInput:
    client_id: str


@strawberry.type
class RotateApiClientSecretPayload:
    client: ApiClientNode | None = None
    client_secret: str | None = strawberry.field(
        default=None, description="The new secret, shown once; the old one no longer works."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RevokeApiClientInput:
    client_id: str


@strawberry.type
class RevokeApiClientPayload:
    client: ApiClientNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ApiClientQueries:
    @strawberry.field(
        description="API clients, newest first: every client for the operator, a merchant's own tenant's."
    )
    async def api_clients(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        filter: ApiClientFilter | None = None,
    ) -> Connection[ApiClientNode]:
        info.context.require(CLIENTS_MANAGE, "operator", "merchant")
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        status = filter.status.value if filter and filter.status else None
        async with info.context.transaction() as session:
            rows = await service.list_clients(session, after_id, size + 1, status)
            nodes = await _nodes(session, rows)
        by_id = {node.client_id: node for node in nodes}
        return build_connection(
            rows, size, lambda row: row.id, lambda row: by_id[row.client_id], after_id is not None
        )


@strawberry.type
class ApiClientMutations:
    @strawberry.mutation(description="A new API client; its secret is in the payload, once.")
    async def create_api_client(self, info: Info, input: CreateApiClientInput) -> CreateApiClientPayload:
        principal = info.context.require(CLIENTS_MANAGE, "operator", "merchant")

        async def create(session):  # type: ignore[no-untyped-def]
            tenant_id = principal.tenant_id
            if principal.kind == "merchant":
                if input.role != ApiClientRole.MERCHANT:
                    raise DomainError("INVALID_ROLE", "a merchant creates merchant clients only", "role")
                if input.tenant_code is not None:  # another tenant's code is invisible: not found
                    tenant = await tenant_by_code(session, input.tenant_code)
                    if tenant is None or tenant.id != tenant_id:
                        raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
            elif input.tenant_code is not None:
                tenant = await tenant_by_code(session, input.tenant_code)
                if tenant is None:
                    raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
                tenant_id = tenant.id
            issued = await service.create_client(
                session,
                input.role.value,
                input.name,
                tenant_id,
                scopes=input.scopes,
                grantor_scopes=principal.scopes,
            )
            return (await _nodes(session, [issued.client]))[0], issued.client_secret

        result = await run_in_transaction(info.context, create, audit_merchants=True)
        if isinstance(result, list):
            return CreateApiClientPayload(user_errors=result)
        node, secret = result
        return CreateApiClientPayload(client=node, client_secret=secret)

    @strawberry.mutation(description="A new secret for a client, shown once; the old secret stops working.")
    async def rotate_api_client_secret(
        self, info: Info, input: RotateApiClientSecretInput
    ) -> RotateApiClientSecretPayload:
        info.context.require(CLIENTS_MANAGE, "operator", "merchant")

        async def rotate(session):  # type: ignore[no-untyped-def]
            issued = await service.rotate_secret(session, input.client_id)
            return (await _nodes(session, [issued.client]))[0], issued.client_secret

        result = await run_in_transaction(info.context, rotate, audit_merchants=True)
        if isinstance(result, list):
            return RotateApiClientSecretPayload(user_errors=result)
        node, secret = result
        return RotateApiClientSecretPayload(client=node, client_secret=secret)

    @strawberry.mutation(
        description="Revoke a client: no new tokens; its live tokens are refused (within 30 s everywhere)."
    )
    async def revoke_api_client(self, info: Info, input: RevokeApiClientInput) -> RevokeApiClientPayload:
        principal = info.context.require(CLIENTS_MANAGE, "operator", "merchant")

        async def revoke(session):  # type: ignore[no-untyped-def]
            client = await service.revoke_client(session, input.client_id, principal.client_id)
            return (await _nodes(session, [client]))[0]

        result = await run_in_transaction(info.context, revoke, audit_merchants=True)
        if isinstance(result, list):
            return RevokeApiClientPayload(user_errors=result)
        info.context.request.app.state.revoked_clients.add(result.client_id)
        return RevokeApiClientPayload(client=result)
