"""Webhook rows. Endpoints are written by their merchant (row-level security keeps each to its
own; the signing secret is not even readable by the application role), events only by the
outbox triggers, deliveries' progress by the worker."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel


class EventType(StrEnum):
    POINTS_EARNED = "points.earned"
    POINTS_REDEEMED = "points.redeemed"
    POINTS_REVERSED = "points.reversed"
    POINTS_EXPIRING = "points.expiring"
    HOLD_EXPIRED = "hold.expired"
    SETTLEMENT_READY = "settlement.ready"
    SETTLEMENT_DISPUTED = "settlement.disputed"


class EndpointStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookEndpoint(SQLModel, table=True):
    """An endpoint without its secret: the columns the application role may read."""

    __tablename__ = "webhook_endpoints"

    id: int = Field(primary_key=True)
    tenant_id: int
    url: str
    description: str | None
    event_types: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    status: str
    secret_rotated_at: datetime
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookEvent(SQLModel, table=True):
    __tablename__ = "webhook_events"

    id: uuid.UUID = Field(primary_key=True)
    tenant_id: int
    event_type: str
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"

    id: int = Field(primary_key=True)
    event_id: uuid.UUID
    endpoint_id: int
    tenant_id: int
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    dead_at: datetime | None
    replays: int
    replayed_at: datetime | None
    created_at: datetime
