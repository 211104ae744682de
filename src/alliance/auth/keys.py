"""Token-signing keys (ES256) kept in the database so every gateway replica signs and verifies alike.

Rotation adds a new key and retires the old one; a retired key stays published in the JWKS
(and accepted) until every token it signed has expired, then drops out.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime, timedelta

from joserfc.jwk import ECKey, KeySet
from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.auth.models import SigningKey
from alliance.db.database import run_sql

ALGORITHM = "ES256"
RELOAD_INTERVAL_SECONDS = 30.0


def generate_key() -> ECKey:
    kid = datetime.now(UTC).strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"})


async def rotate_signing_key(session: AsyncSession) -> str:
    """Make a new key current; the previous ones are retired (still valid for verification)."""
    key = generate_key()
    await run_sql(session, text("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL"))
    session.add(SigningKey(kid=key.kid, private_jwk=key.as_dict(private=True)))
    await session.flush()
    assert key.kid is not None
    return key.kid


async def ensure_signing_key(session: AsyncSession) -> None:
    """Create the first key on a fresh database. Serialised so two replicas cannot both create one."""
    await run_sql(session, text("SELECT pg_advisory_xact_lock(hashtext('alliance.signing_keys'))"))
    current = await session.exec(select(SigningKey.kid).where(col(SigningKey.retired_at).is_(None)))
    if current.first() is None:
        await rotate_signing_key(session)


class KeyRing:
    """The current signing key and the set of keys tokens may be verified with, cached briefly."""

    def __init__(self, max_token_ttl_seconds: int) -> None:
        self.max_token_ttl = timedelta(seconds=max_token_ttl_seconds)
        self.signing_key: ECKey | None = None
        self.verification_keys = KeySet([])
        self.loaded_at = 0.0

    def is_stale(self) -> bool:
        return time.monotonic() - self.loaded_at > RELOAD_INTERVAL_SECONDS

    async def load(self, session: AsyncSession) -> None:
        cutoff = datetime.now(UTC) - self.max_token_ttl
        rows = (
            await session.exec(
                select(SigningKey)
                .where(col(SigningKey.retired_at).is_(None) | (col(SigningKey.retired_at) > cutoff))
                .order_by(col(SigningKey.created_at).desc())
            )
        ).all()
        keys = [ECKey.import_key(row.private_jwk) for row in rows]
        current = [key for key, row in zip(keys, rows, strict=True) if row.retired_at is None]
        assert current, "no current signing key: run `alliance db upgrade` / start the server once"
        self.signing_key = current[0]
        self.verification_keys = KeySet(keys)
        self.loaded_at = time.monotonic()

    def knows(self, kid: str) -> bool:
        return any(key.kid == kid for key in self.verification_keys.keys)

    def public_jwks(self) -> dict[str, object]:
        return self.verification_keys.as_dict(private=False)
