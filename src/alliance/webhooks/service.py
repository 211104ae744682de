"""Managing webhook endpoints and reading deliveries, in the caller's scoped transaction.

A merchant registers, changes, disables, rotates and replays only its own (row-level security
hides the rest: another merchant's endpoint is "not found"). The operator may read every
merchant's endpoints and deliveries and replay them, for support; it registers none.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, text, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError, NotFound
from alliance.webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from alliance.webhooks.signing import new_secret

MAX_ACTIVE_ENDPOINTS = 10  # per merchant
MAX_URL = 2000
MAX_DESCRIPTION = 200
MAX_REPLAYS = 20  # per delivery
MAX_PREVIOUS_SECRET_HOURS = 7 * 24
LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


# -- URL safety ----------------------------------------------------------------------------------


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet (not loopback, private, link-local...)."""
    return ipaddress.ip_address(address.split("%", 1)[0]).is_global


def check_url(url: str, allow_insecure: bool) -> str:
    """An absolute http(s) URL without credentials or fragment; outside development, https to a
    public host only (a merchant must not make the worker call into the alliance's network)."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise DomainError("TOO_LONG", f"url must be at most {MAX_URL} characters", "url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError as exc:
        raise DomainError("INVALID_URL", "url is not a valid URL", "url") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DomainError("INVALID_URL", "url must be an absolute http(s) URL", "url")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise DomainError("INVALID_URL", "url may not carry credentials or a fragment", "url")
    if allow_insecure:
        return url
    if parts.scheme != "https":
        raise DomainError("INSECURE_URL", "webhook endpoints must use https", "url")
    host = parts.hostname.lower().rstrip(".")
    try:
        public = is_public_address(host)
    except ValueError:  # a name, not an address: refuse the obvious local ones here
        public = host != "localhost" and "." in host and not host.endswith(LOCAL_SUFFIXES)
    if not public:
        raise DomainError("PRIVATE_URL", "webhook endpoints must be on a public host", "url")
    return url


# -- endpoints -----------------------------------------------------------------------------------


def _event_types(event_types: list[EventType]) -> list[str]:
    if not event_types:
        raise DomainError("REQUIRED", "subscribe to at least one event type", "eventTypes")
    chosen = set(event_types)
    return [t.value for t in EventType if t in chosen]  # canonical order, no duplicates


def _description(description: str | None) -> str | None:
    description = (description or "").strip() or None
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise DomainError(
            "TOO_LONG", f"description must be at most {MAX_DESCRIPTION} characters", "description"
        )
    return description


async def _check_room(session: AsyncSession, tenant_id: int) -> None:
    """At most MAX_ACTIVE_ENDPOINTS active endpoints; concurrent registrations are serialised."""
    await run_sql(
        session,
        text("SELECT pg_advisory_xact_lock(hashtext('webhook_endpoints:' || CAST(:t AS bigint)))"),
        {"t": tenant_id},
    )
    active = (
        await session.exec(
            select(func.count())
            .select_from(WebhookEndpoint)
            .where(WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.status == EndpointStatus.ACTIVE)
        )
    ).one()
    if active >= MAX_ACTIVE_ENDPOINTS:
        raise DomainError(
            "TOO_MANY_ENDPOINTS", f"a merchant has at most {MAX_ACTIVE_ENDPOINTS} active endpoints"
        )


@dataclass(frozen=True, slots=True)
class NewSecret:
    endpoint: WebhookEndpoint
    secret: str  # shown once, never again


async def register_endpoint(
    session: AsyncSession,
    tenant_id: int,
    *,
    url: str,
    event_types: list[EventType],
    description: str | None,
    allow_insecure: bool,
) -> NewSecret:
    """A new active endpoint of the merchant, with a fresh signing secret."""
    values = {
        "tenant": tenant_id,
        "url": check_url(url, allow_insecure),
        "types": _event_types(event_types),
        "description": _description(description),
        "secret": new_secret(),
    }
    await _check_room(session, tenant_id)
    created = await run_sql(
        session,
        text(
            "INSERT INTO webhook_endpoints (tenant_id, url, description, event_types, secret)"
            " VALUES (:tenant, :url, :description, :types, :secret) RETURNING id"
        ),
        values,
    )
    endpoint = await session.get(WebhookEndpoint, created.scalar_one())
    assert endpoint is not None
    return NewSecret(endpoint, values["secret"])


async def endpoint_by_id(session: AsyncSession, endpoint_id: int) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id)
    endpoint = (await session.exec(query.execution_options(populate_existing=True))).first()
    if endpoint is None:
        raise NotFound("endpoint", "endpointId", "ENDPOINT_NOT_FOUND")
    return endpoint


@dataclass(frozen=True, slots=True)
class EndpointChanges:
    url: str | None = None
    event_types: list[EventType] | None = None
    description: str | None = None
    clear_description: bool = False
    enabled: bool | None = None


async def update_endpoint(
    session: AsyncSession, endpoint_id: int, changes: EndpointChanges, allow_insecure: bool
) -> WebhookEndpoint:
    """Change an endpoint. Disabling it stops new events for it, and its pending deliveries go
    to the dead letters (replayable once it is enabled again)."""
    endpoint = await endpoint_by_id(session, endpoint_id)
    values: dict[str, Any] = {}
    if changes.url is not None:
        values["url"] = check_url(changes.url, allow_insecure)
    if changes.event_types is not None:
        values["event_types"] = _event_types(changes.event_types)
    if changes.description is not None or changes.clear_description:
        values["description"] = _description(changes.description)
    if changes.enabled is True and endpoint.status != EndpointStatus.ACTIVE:
        await _check_room(session, endpoint.tenant_id)
        values["status"] = EndpointStatus.ACTIVE.value
    if changes.enabled is False and endpoint.status != EndpointStatus.DISABLED:
        values["status"] = EndpointStatus.DISABLED.value
        await run_sql(
            session,
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.endpoint_id) == endpoint_id,
                col(WebhookDelivery.status) == DeliveryStatus.PENDING,
            )
            .values(status=DeliveryStatus.DEAD.value, dead_at=func.now(), last_error="endpoint disabled"),
        )
    if values:
        await run_sql(
            session,
            update(WebhookEndpoint)
            .where(col(WebhookEndpoint.id) == endpoint_id)
            .values(**values, updated_at=func.now()),
        )
    return await endpoint_by_id(session, endpoint_id)


async def rotate_secret(session: AsyncSession, endpoint_id: int, previous_valid_hours: int) -> NewSecret:
    """A new signing secret; the previous one keeps signing too for ``previous_valid_hours``
    (0: it stops at once), so receivers can switch without dropping deliveries."""
    if not 0 <= previous_valid_hours <= MAX_PREVIOUS_SECRET_HOURS:
        raise DomainError(
            "INVALID_HOURS",
            f"previousSecretValidHours must be 0-{MAX_PREVIOUS_SECRET_HOURS}",
            "previousSecretValidHours",
        )
    await endpoint_by_id(session, endpoint_id)
    secret = new_secret()
    until = datetime.now(UTC) + timedelta(hours=previous_valid_hours) if previous_valid_hours else None
    rotated = await run_sql(
        session,
        text("SELECT webhook_rotate_secret(:endpoint, :secret, :until)"),
        {"endpoint": endpoint_id, "secret": secret, "until": until},
    )
    if not rotated.scalar_one():  # the operator sees endpoints but rotates none
        raise NotFound("endpoint", "endpointId", "ENDPOINT_NOT_FOUND")
    return NewSecret(await endpoint_by_id(session, endpoint_id), secret)


async def list_endpoints(session: AsyncSession, after_id: int | None, limit: int) -> list[WebhookEndpoint]:
    """The caller's endpoints (every merchant's for the operator) in id order."""
    query = select(WebhookEndpoint)
    if after_id is not None:
        query = query.where(col(WebhookEndpoint.id) > after_id)
    return list((await session.exec(query.order_by(col(WebhookEndpoint.id)).limit(limit))).all())


# -- deliveries ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery: WebhookDelivery
    event: WebhookEvent
    endpoint: WebhookEndpoint


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    endpoint_id: int | None = None
    status: DeliveryStatus | None = None
    event_type: EventType | None = None
    event_id: uuid.UUID | None = None


def _deliveries() -> Any:
    return (
        select(WebhookDelivery, WebhookEvent, WebhookEndpoint)
        .join(WebhookEvent, col(WebhookEvent.id) == col(WebhookDelivery.event_id))
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))
    )


async def list_deliveries(
    session: AsyncSession, where: DeliveryFilter, before_id: int | None, limit: int
) -> list[DeliveryRow]:
    """The caller's deliveries, newest first (keyset on the id)."""
    query = _deliveries()
    if where.endpoint_id is not None:
        query = query.where(col(WebhookDelivery.endpoint_id) == where.endpoint_id)
    if where.status is not None:
        query = query.where(col(WebhookDelivery.status) == where.status.value)
    if where.event_type is not None:
        query = query.where(col(WebhookEvent.event_type) == where.event_type.value)
    if where.event_id is not None:
        query = query.where(col(WebhookDelivery.event_id) == where.event_id)
    if before_id is not None:
        query = query.where(col(WebhookDelivery.id) < before_id)
    query = query.order_by(col(WebhookDelivery.id).desc()).limit(limit)
    rows = (await session.exec(query.execution_options(populate_existing=True))).all()
    return [DeliveryRow(*row) for row in rows]


async def delivery_by_id(session: AsyncSession, delivery_id: int) -> DeliveryRow | None:
    query = _deliveries().where(col(WebhookDelivery.id) == delivery_id)
    row = (await session.exec(query.execution_options(populate_existing=True))).first()
    return None if row is None else DeliveryRow(*row)


async def replay_delivery(session: AsyncSession, delivery_id: int) -> DeliveryRow:
    """Send a finished delivery (a dead letter, or one delivered) again, as a fresh cycle of
    attempts: the same event id and body, a new timestamp and signature."""
    locked = await session.exec(
        select(WebhookDelivery).where(WebhookDelivery.id == delivery_id).with_for_update()
    )
    delivery = locked.first()
    if delivery is None:
        raise NotFound("delivery", "deliveryId", "DELIVERY_NOT_FOUND")
    if delivery.status == DeliveryStatus.PENDING:
        raise DomainError("DELIVERY_PENDING", "this delivery is still being attempted", "deliveryId")
    if delivery.replays >= MAX_REPLAYS:
        raise DomainError("REPLAY_LIMIT_REACHED", f"a delivery is replayed at most {MAX_REPLAYS} times")
    endpoint = await endpoint_by_id(session, delivery.endpoint_id)
    if endpoint.status != EndpointStatus.ACTIVE:
        raise DomainError("ENDPOINT_DISABLED", "enable the endpoint before replaying to it", "deliveryId")
    await run_sql(
        session,
        update(WebhookDelivery)
        .where(col(WebhookDelivery.id) == delivery_id)
        .values(
            status=DeliveryStatus.PENDING.value,
            attempts=0,
            next_attempt_at=func.now(),
            delivered_at=None,
            dead_at=None,
            replays=WebhookDelivery.replays + 1,
            replayed_at=func.now(),
        ),
    )
    row = await delivery_by_id(session, delivery_id)
    assert row is not None
    return row
