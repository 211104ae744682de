"""API clients: creation, secret hashing and client authentication.

Client secrets are 256-bit random values, so a fast SHA-256 digest is as strong as a slow
password hash here (there is no dictionary to attack) and keeps `/oauth/token` cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.auth.models import ApiClient
from alliance.auth.principal import DEFAULT_SCOPES
from alliance.errors import DomainError, NotFound
from alliance.tenants.models import Tenant

MAX_NAME = 200


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
    grantor_scopes: Collection[str] | None = None,
) -> IssuedCredentials:
    """A new client and its secret. ``fixed_credentials`` exists for the demo alliance only,
    whose README walk-through needs credentials known in advance. A client made by another
    client (``grantor_scopes``) gets no scope its maker lacks: by default, the role's scopes
    the maker holds."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME:
        raise DomainError("INVALID_NAME", f"name must be 1-{MAX_NAME} characters", "name")
    if role not in ("operator", "merchant"):
        raise DomainError("INVALID_ROLE", "role must be operator or merchant", "role")
    if (role == "merchant") != (tenant_id is not None):
        raise DomainError(
            "INVALID_TENANT", "a merchant client needs a tenant; an operator has none", "tenant"
        )
    allowed = DEFAULT_SCOPES[role]
    if scopes is None:
        granted = sorted(allowed if grantor_scopes is None else allowed & set(grantor_scopes))
    else:
        granted = sorted(set(scopes))
    unknown = set(granted) - allowed
    if unknown:
        raise DomainError("INVALID_SCOPE", f"not allowed for {role}: {', '.join(sorted(unknown))}", "scopes")
    beyond = set(granted) - set(grantor_scopes) if grantor_scopes is not None else set()
    if beyond:
        raise DomainError(
            "INVALID_SCOPE", f"you cannot grant what you lack: {', '.join(sorted(beyond))}", "scopes"
        )
    if not granted:
        raise DomainError("INVALID_SCOPE", "a client needs at least one scope", "scopes")
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


async def list_clients(
    session: AsyncSession, after_id: int | None, limit: int, status: str | None = None
) -> list[ApiClient]:
    """The clients the caller may see (row-level security: a merchant its own tenant's), newest
    first; ``after_id`` is the last id of the previous page."""
    query = select(ApiClient).order_by(col(ApiClient.id).desc()).limit(limit)
    if after_id is not None:
        query = query.where(col(ApiClient.id) < after_id)
    if status is not None:
        query = query.where(ApiClient.status == status)
    return list((await session.exec(query)).all())


async def tenant_codes(session: AsyncSession, clients: list[ApiClient]) -> dict[int, str]:
    """The codes of these clients' tenants, by tenant id (one query)."""
    ids = {client.tenant_id for client in clients if client.tenant_id is not None}
    if not ids:
        return {}
    rows = (await session.exec(select(Tenant.id, Tenant.code).where(col(Tenant.id).in_(ids)))).all()
    return {tenant_id: code for tenant_id, code in rows if tenant_id is not None}


async def client_by_client_id(session: AsyncSession, client_id: str) -> ApiClient:
    """The client, if the caller may see it; otherwise `NotFound` (another tenant's is absent)."""
    client = (await session.exec(select(ApiClient).where(ApiClient.client_id == client_id))).first()
    if client is None:
        raise NotFound("client", "clientId")
    return client


async def rotate_secret(session: AsyncSession, client_id: str) -> IssuedCredentials:
    """A new secret for an active client; the old one stops working at once. Tokens already
    issued stay valid until they expire (they prove the old secret was known, not that it still is)."""
    client = await client_by_client_id(session, client_id)
    if client.status != "active":
        raise DomainError("CLIENT_REVOKED", "a revoked client cannot get a new secret", "clientId")
    secret = secrets.token_urlsafe(32)
    client.secret_hash = hash_secret(secret)
    client.secret_rotated_at = datetime.now(UTC)
    session.add(client)
    await session.flush()
    return IssuedCredentials(client=client, client_secret=secret)


async def revoke_client(session: AsyncSession, client_id: str, revoked_by: str | None) -> ApiClient:
    """Revoke a client for good: no new tokens, and its live tokens are refused (`RevokedClients`).
    A client cannot revoke itself (the caller would lock itself out mid-request); revoking a
    revoked client is a harmless retry."""
    client = await client_by_client_id(session, client_id)
    if client.client_id == revoked_by:
        raise DomainError(
            "CANNOT_REVOKE_SELF", "a client cannot revoke itself; use another client", "clientId"
        )
    if client.status != "revoked":
        client.status = "revoked"
        client.revoked_at = datetime.now(UTC)
        session.add(client)
        await session.flush()
    return client


async def recently_revoked(session: AsyncSession, since: datetime) -> set[str]:
    """Client ids revoked at or after ``since`` (an operator-context read: every tenant's)."""
    query = select(ApiClient.client_id).where(col(ApiClient.revoked_at) >= since)
    return set((await session.exec(query)).all())
