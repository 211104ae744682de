"""Automatic persisted queries (Apollo's APQ protocol) for the front-end apps.

A client sends ``extensions: {persistedQuery: {version: 1, sha256Hash}}`` without the query; a
known hash runs the stored query, an unknown one answers ``PERSISTED_QUERY_NOT_FOUND`` and the
client sends the query with the hash once, which registers it (after checking the hash, and
only once it has executed: invalid documents are not kept). Works over GET for queries, so a
front end's request is a short URL naming the hash.

Storage is PostgreSQL (``persisted_queries``, shared by every replica, bounded by
``ALLIANCE_PERSISTED_QUERIES_MAX``: the oldest registrations go first). Each process keeps a
small LRU cache in front of it; a hash names its text forever, so the cache is never stale.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLError

from alliance.db import Database

PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_INVALID = "PERSISTED_QUERY_INVALID"
PERSISTED_QUERY_HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"
CACHE_SIZE = 1_000  # queries per process
_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOOKUP = "SELECT (SELECT query FROM persisted_queries WHERE sha256 = $1)"
_REGISTER = "SELECT persisted_query_register($1, $2, $3)"


class PersistedQueryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_graphql_error(self) -> GraphQLError:
        return GraphQLError(self.message, extensions={"code": self.code})


def requested_hash(extensions: dict[str, Any] | None) -> str | None:
    """The SHA-256 a request names in ``extensions.persistedQuery``, or None if it names none."""
    persisted = (extensions or {}).get("persistedQuery")
    if persisted is None:
        return None
    if not isinstance(persisted, dict) or persisted.get("version") != 1:
        raise PersistedQueryError(PERSISTED_QUERY_INVALID, "only persisted query version 1 is supported")
    sha256 = persisted.get("sha256Hash")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise PersistedQueryError(PERSISTED_QUERY_INVALID, "sha256Hash must be 64 lowercase hex digits")
    return sha256


def sha256_of(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


@dataclass
class PersistedQueries:
    db: Database
    limit: int
    _cache: OrderedDict[str, str] = field(default_factory=OrderedDict, init=False, repr=False)

    async def resolve(self, sha256: str, query: str | None) -> str:
        """The query text to run for a request naming ``sha256`` (and sending ``query`` or not)."""
        if query is not None:
            if sha256_of(query) != sha256:
                raise PersistedQueryError(PERSISTED_QUERY_HASH_MISMATCH, "provided sha does not match query")
            return query
        found = self._cache.get(sha256)
        if found is None:
            found = await self.db.call(_LOOKUP, sha256)
            if found is None:
                raise PersistedQueryError(PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")
        self._remember(sha256, found)
        return found

    async def register(self, sha256: str, query: str) -> None:
        """Keep ``query`` under its (verified) hash, for every replica."""
        assert sha256_of(query) == sha256, "the hash is verified by resolve"
        if sha256 in self._cache:
            return
        await self.db.call(_REGISTER, sha256, query, self.limit)
        self._remember(sha256, query)

    def _remember(self, sha256: str, query: str) -> None:
        self._cache[sha256] = query
        self._cache.move_to_end(sha256)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
