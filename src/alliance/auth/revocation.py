"""Refusing the live tokens of revoked API clients without a database read per request.

Access tokens are self-contained JWTs, so revoking a client alone would leave its tokens valid
until they expire. Each process keeps the set of clients revoked within the longest token
lifetime (older revocations cannot have live tokens), reloads it every 30 s, and adds a client
at once when it revokes one itself: a revoked client's tokens are refused at once by the replica
that revoked it and within 30 s by every other.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.auth.clients import recently_revoked

RELOAD_INTERVAL_SECONDS = 30.0


class RevokedClients:
    def __init__(self, max_token_ttl_seconds: int) -> None:
        self.max_token_ttl = timedelta(seconds=max_token_ttl_seconds)
        self._client_ids: frozenset[str] = frozenset()
        self.loaded_at = float("-inf")
        self.reloading = asyncio.Lock()

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._client_ids

    def is_stale(self) -> bool:
        return time.monotonic() - self.loaded_at > RELOAD_INTERVAL_SECONDS

    def add(self, client_id: str) -> None:
        """This process revoked ``client_id``: refuse its tokens now, not at the next reload."""
        self._client_ids = self._client_ids | {client_id}

    async def load(self, session: AsyncSession) -> None:
        """Read in an operator context (every tenant's clients)."""
        since = datetime.now(UTC) - self.max_token_ttl
        self._client_ids = frozenset(await recently_revoked(session, since))
        self.loaded_at = time.monotonic()
