"""API clients: creation, secret hashing and client authentication.

Client secrets are 256-bit random values, so a fast SHA-256 digest is as strong as a slow
password hash here (there is no dictionary to attack) and keeps `/oauth/token` cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.auth.models import ApiClient
from alliance.auth.principal import DEFAULT_SCOPES
from alliance.errors import DomainError


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    client: ApiClient
    client_secret: str  # shown once, never stored


def hash_secret(secret: str) -> str:
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


async def create_client(
    session: AsyncSession,
    role: str,
    name: str,
    tenant_id: int | None,
    scopes: list[str] | None = None,
    fixed_credentials: tuple[str, str] | None = None,
) -> IssuedCredentials:
    """A new client and its secret. ``fixed_credentials`` exists for the demo alliance only,
    whose README walk-through needs credentials known in advance."""
    if role not in ("operator", "merchant"):
        raise DomainError("INVALID_ROLE", "role must be operator or merchant", "role")
    if (role == "merchant") != (tenant_id is not None):
        raise DomainError(
            "INVALID_TENANT", "a merchant client needs a tenant; an operator has none", "tenant"
        )
    allowed = DEFAULT_SCOPES[role]
    granted = sorted(allowed if scopes is None else set(scopes))
    unknown = set(granted) - allowed
    if unknown:
        raise DomainError("INVALID_SCOPE", f"not allowed for {role}: {', '.join(sorted(unknown))}", "scopes")
    prefix = "op" if role == "operator" else "mc"
    client_id, secret = fixed_credentials or (f"{prefix}_{secrets.token_hex(12)}", secrets.token_urlsafe(32))
    client = ApiClient(
        client_id=client_id,
        secret_hash=hash_secret(secret),
        name=name,
        role=role,
        tenant_id=tenant_id,
        scopes=granted,
    )
    session.add(client)
    await session.flush()
    await session.refresh(client)
    return IssuedCredentials(client=client, client_secret=secret)


async def authenticate_client(session: AsyncSession, client_id: str, client_secret: str) -> ApiClient | None:
    """The active client with these credentials, or None. Constant-time on the secret."""
    client = (await session.exec(select(ApiClient).where(ApiClient.client_id == client_id))).first()
    expected = client.secret_hash if client is not None else hash_secret(secrets.token_hex(16))
    matches = hmac.compare_digest(expected, hash_secret(client_secret))
    if client is None or not matches or client.status != "active":
        return None
    return client
