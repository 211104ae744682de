"""API clients (hashed secrets) and the platform's token-signing keys."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Text
from sqlmodel import Field, SQLModel


class ApiClient(SQLModel, table=True):
    __tablename__ = "api_clients"

    id: int | None = Field(default=None, primary_key=True)
    client_id: str
    secret_hash: str
    name: str
    role: str  # operator | merchant
    tenant_id: int | None = Field(default=None, foreign_key="tenants.id")
    scopes: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    status: str = "active"
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
    revoked_at: datetime | None = None
    secret_rotated_at: datetime | None = None


class SigningKey(SQLModel, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True)
    private_jwk: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column_kwargs={"server_default": "now()"})
    retired_at: datetime | None = None
