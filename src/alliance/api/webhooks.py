"""GraphQL for webhooks: a merchant's endpoints, its deliveries (dead letters included), replay.

Secrets leave the server twice only: in the answer of registerWebhookEndpoint and of
rotateWebhookSecret. The operator reads every merchant's endpoints and deliveries and may
replay them (support); registering and changing endpoints is the merchant's own business.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.ledger import pk_of
from alliance.api.mutations import run_in_transaction, user_error
from alliance.api.types import Connection, Node, UserError, build_connection, page_size
from alliance.auth.principal import WEBHOOKS_MANAGE
from alliance.errors import DomainError
from alliance.webhooks import service
from alliance.webhooks.models import DeliveryStatus as DeliveryStatusModel
from alliance.webhooks.models import EndpointStatus as EndpointStatusModel
from alliance.webhooks.models import EventType, WebhookEndpoint

WebhookEventType = strawberry.enum(EventType, name="WebhookEventType")
WebhookEndpointStatus = strawberry.enum(EndpointStatusModel, name="WebhookEndpointStatus")
WebhookDeliveryStatus = strawberry.enum(DeliveryStatusModel, name="WebhookDeliveryStatus")


@strawberry.type(name="WebhookEndpoint", description="Where a merchant receives events, and which.")
class WebhookEndpointNode(Node):
    url: str
    description: str | None
    event_types: list[WebhookEventType]
    status: WebhookEndpointStatus
    secret_rotated_at: datetime
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="Until then the secret before the last rotation signs too (a second v1= signature)."
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_model(cls, endpoint: WebhookEndpoint) -> WebhookEndpointNode:
        return cls(
            id=strawberry.ID(to_global_id("WebhookEndpoint", endpoint.id)),
            url=endpoint.url,
            description=endpoint.description,
            event_types=[EventType(t) for t in endpoint.event_types],
            status=EndpointStatusModel(endpoint.status),
            secret_rotated_at=endpoint.secret_rotated_at,
            previous_secret_expires_at=endpoint.previous_secret_expires_at,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


@strawberry.type(
    name="WebhookDelivery",
    description="One event for one endpoint: PENDING (attempts go on) → DELIVERED | DEAD (a dead letter).",
)
class WebhookDeliveryNode(Node):
    event_id: str = strawberry.field(description="Alliance-Webhook-Id: the same on every attempt and replay.")
    event_type: WebhookEventType
    event_created_at: datetime
    data: JSON = strawberry.field(description="The event's `data`, as in the request body.")
    endpoint: WebhookEndpointNode
    status: WebhookDeliveryStatus
    attempts: int = strawberry.field(description="Attempts in the current cycle (a replay starts a new one).")
    next_attempt_at: datetime | None = strawberry.field(description="When a pending delivery is tried next.")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None = strawberry.field(
        description="Why the last attempt failed (status, answer excerpt)."
    )
    delivered_at: datetime | None
    dead_at: datetime | None
    replays: int
    created_at: datetime

    @classmethod
    def from_row(cls, row: service.DeliveryRow) -> WebhookDeliveryNode:
        d = row.delivery
        pending = d.status == DeliveryStatusModel.PENDING
        return cls(
            id=strawberry.ID(to_global_id("WebhookDelivery", d.id)),
            event_id=str(row.event.id),
            event_type=EventType(row.event.event_type),
            event_created_at=row.event.created_at,
            data=row.event.data,
            endpoint=WebhookEndpointNode.from_model(row.endpoint),
            status=DeliveryStatusModel(d.status),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if pending else None,
            last_attempt_at=d.last_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            delivered_at=d.delivered_at,
            dead_at=d.dead_at,
            replays=d.replays,
            created_at=d.created_at,
        )


# -- inputs and payloads ---------------------------------------------------------------------------


@strawberry.input
class RegisterWebhookEndpointInput:
    url: str = strawberry.field(description="https, on a public host.")
    event_types: list[WebhookEventType]
    description: str | None = None


@strawberry.type
class WebhookSecretPayload:
    endpoint: WebhookEndpointNode | None = None
    secret: str | None = strawberry.field(
        default=None, description="The signing secret: shown this once, never again."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="Only the fields given change; description null clears it.")
class UpdateWebhookEndpointInput:
    endpoint_id: strawberry.ID
    url: str | None = strawberry.UNSET
    event_types: list[WebhookEventType] | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    enabled: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="false stops new events; pending deliveries become dead letters (replayable later).",
    )


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpointNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RotateWebhookSecretInput:
    endpoint_id: strawberry.ID
    previous_secret_valid_hours: int = strawberry.field(
        default=24, description="How long the old secret keeps signing as well (0-168; 0: stop at once)."
    )


@strawberry.input
class ReplayWebhookDeliveryInput:
    delivery_id: strawberry.ID


@strawberry.type
class WebhookDeliveryPayload:
    delivery: WebhookDeliveryNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class WebhookDeliveryFilterInput:
    endpoint_id: strawberry.ID | None = None
    status: WebhookDeliveryStatus | None = strawberry.field(
        default=None, description="DEAD: the dead letters."
    )
    event_type: WebhookEventType | None = None
    event_id: str | None = None


def _changes(input: UpdateWebhookEndpointInput) -> service.EndpointChanges:
    def given(attribute: str, field: str) -> Any:
        value = getattr(input, attribute)
        if value is None:
            raise DomainError("REQUIRED", f"{field} cannot be null", field)
        return None if value is strawberry.UNSET else value

    return service.EndpointChanges(
        url=given("url", "url"),
        event_types=given("event_types", "eventTypes"),
        enabled=given("enabled", "enabled"),
        description=None if input.description is strawberry.UNSET else input.description,
        clear_description=input.description is None,
    )


def _filter(where: WebhookDeliveryFilterInput) -> service.DeliveryFilter:
    event_id = None
    if where.event_id is not None:
        try:
            event_id = uuid.UUID(where.event_id)
        except ValueError as exc:
            raise DomainError("INVALID_ID", "eventId must be a UUID", "eventId") from exc
    return service.DeliveryFilter(
        endpoint_id=pk_of(where.endpoint_id, "WebhookEndpoint", "endpointId") if where.endpoint_id else None,
        status=where.status,
        event_type=where.event_type,
        event_id=event_id,
    )


# -- resolvers -------------------------------------------------------------------------------------


@strawberry.type
class WebhookQueries:
    @strawberry.field(description="The calling merchant's webhook endpoints (all, for the operator).")
    async def webhook_endpoints(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookEndpointNode]:
        info.context.require(WEBHOOKS_MANAGE, "merchant", "operator")
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.list_endpoints(session, after_id, size + 1)
        return build_connection(
            rows, size, lambda e: e.id, WebhookEndpointNode.from_model, after_id is not None
        )

    @strawberry.field(
        description="Deliveries of the calling merchant's events, newest first; filter by status DEAD "
        "for the dead letters."
    )
    async def webhook_deliveries(
        self,
        info: Info,
        filter: WebhookDeliveryFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[WebhookDeliveryNode]:
        info.context.require(WEBHOOKS_MANAGE, "merchant", "operator")
        size = page_size(first, info.context.settings.max_page_size)
        before_id = from_cursor(after)
        criteria = _filter(filter or WebhookDeliveryFilterInput())
        async with info.context.transaction() as session:
            rows = await service.list_deliveries(session, criteria, before_id, size + 1)
        return build_connection(
            rows, size, lambda r: r.delivery.id, WebhookDeliveryNode.from_row, before_id is not None
        )


def _secret_payload(result: service.NewSecret | list[UserError]) -> WebhookSecretPayload:
    if isinstance(result, list):
        return WebhookSecretPayload(user_errors=result)
    return WebhookSecretPayload(
        endpoint=WebhookEndpointNode.from_model(result.endpoint), secret=result.secret
    )


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        description="Register an endpoint for some event types; the answer carries its signing secret, "
        "shown only this once."
    )
    async def register_webhook_endpoint(
        self, info: Info, input: RegisterWebhookEndpointInput
    ) -> WebhookSecretPayload:
        principal = info.context.require(WEBHOOKS_MANAGE, "merchant")
        assert principal.tenant_id is not None
        tenant_id = principal.tenant_id
        allow_insecure = info.context.settings.webhook_allow_insecure_urls

        async def register(session: Any) -> service.NewSecret:
            return await service.register_endpoint(
                session,
                tenant_id,
                url=input.url,
                event_types=list(input.event_types),
                description=input.description,
                allow_insecure=allow_insecure,
            )

        return _secret_payload(await run_in_transaction(info.context, register))

    @strawberry.mutation(description="Change an endpoint's URL, event types or description, or disable it.")
    async def update_webhook_endpoint(
        self, info: Info, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        info.context.require(WEBHOOKS_MANAGE, "merchant")
        try:
            endpoint_id = pk_of(input.endpoint_id, "WebhookEndpoint", "endpointId")
            changes = _changes(input)
        except DomainError as error:
            return WebhookEndpointPayload(user_errors=[user_error(error)])
        allow_insecure = info.context.settings.webhook_allow_insecure_urls

        async def change(session: Any) -> WebhookEndpoint:
            return await service.update_endpoint(session, endpoint_id, changes, allow_insecure)

        result = await run_in_transaction(info.context, change)
        if isinstance(result, list):
            return WebhookEndpointPayload(user_errors=result)
        return WebhookEndpointPayload(endpoint=WebhookEndpointNode.from_model(result))

    @strawberry.mutation(
        description="A new signing secret (shown only this once); the previous one keeps signing as well "
        "for previousSecretValidHours, so receivers can switch over."
    )
    async def rotate_webhook_secret(
        self, info: Info, input: RotateWebhookSecretInput
    ) -> WebhookSecretPayload:
        info.context.require(WEBHOOKS_MANAGE, "merchant")
        try:
            endpoint_id = pk_of(input.endpoint_id, "WebhookEndpoint", "endpointId")
        except DomainError as error:
            return WebhookSecretPayload(user_errors=[user_error(error)])

        async def rotate(session: Any) -> service.NewSecret:
            return await service.rotate_secret(session, endpoint_id, input.previous_secret_valid_hours)

        return _secret_payload(await run_in_transaction(info.context, rotate))

    @strawberry.mutation(
        description="Send a dead letter (or a delivered event) again: same event id and body, a new "
        "cycle of attempts."
    )
    async def replay_webhook_delivery(
        self, info: Info, input: ReplayWebhookDeliveryInput
    ) -> WebhookDeliveryPayload:
        info.context.require(WEBHOOKS_MANAGE, "merchant", "operator")
        try:
            delivery_id = pk_of(input.delivery_id, "WebhookDelivery", "deliveryId")
        except DomainError as error:
            return WebhookDeliveryPayload(user_errors=[user_error(error)])

        async def replay(session: Any) -> service.DeliveryRow:
            return await service.replay_delivery(session, delivery_id)

        result = await run_in_transaction(info.context, replay)
        if isinstance(result, list):
            return WebhookDeliveryPayload(user_errors=result)
        return WebhookDeliveryPayload(delivery=WebhookDeliveryNode.from_row(result))
