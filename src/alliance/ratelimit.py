"""Per-client rate limiting: a leaky bucket of query-cost points per API client (per member for
member tokens), kept in PostgreSQL so that every gateway replica draws from the same bucket.

PostgreSQL rather than Redis: the embedded-PostgreSQL setup has no Redis, and the database is
already on every request's path. The bucket is one row of an UNLOGGED table (no WAL; see
``migrations/sql/0010_limits.sql``), and a request costs one statement (`_TAKE`): it refills the
bucket for the time elapsed since its last update, applies what earlier requests still owe or
are owed, and takes the requested cost if the bucket holds it.

A request is charged its requested cost up front and its actual cost in the end. The difference
(a refund, usually: a connection returned fewer nodes than asked for) is not written at once:
it waits in this process and rides along with the same bucket's next take, so settling it adds
no round trip. A replica that stops holds at most one request's difference per bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from alliance.config import Settings
from alliance.db import Database

# Take $2 (cost) points from bucket $1 in one statement: refill it for the time since its last
# update ($5 points a second, never above the maximum $4), apply $3 (the adjustment: what earlier requests
# still owe or are owed; applied whether or not this one is granted), then grant the request if
# the level covers the cost. A new bucket starts full. Concurrent requests of one client serialise
# on its row for the length of this statement (autocommit: no longer).
_TAKE = """
    WITH p AS (
      SELECT CAST($1 AS text) AS bucket, CAST($2 AS numeric) AS cost,
        CAST($3 AS numeric) AS adjustment, CAST($4 AS numeric) AS maximum,
        CAST($5 AS numeric) AS restore_rate
    )
    INSERT INTO rate_limit_buckets AS b (bucket, available, updated_at, granted)
    SELECT p.bucket, fresh.level - CASE WHEN fresh.level >= p.cost THEN p.cost ELSE 0 END, now(),
      fresh.level >= p.cost
    FROM p, LATERAL (SELECT least(p.maximum, p.maximum + p.adjustment) AS level) fresh
    ON CONFLICT (bucket) DO UPDATE SET (available, updated_at, granted) = (
      SELECT refilled.level - CASE WHEN refilled.level >= p.cost THEN p.cost ELSE 0 END, now(),
        refilled.level >= p.cost
      FROM p, LATERAL (
        SELECT least(
          p.maximum,
          least(p.maximum, b.available + round(p.restore_rate * extract(epoch FROM now() - b.updated_at), 3))
            + p.adjustment
        ) AS level
      ) refilled
    )
    RETURNING b.granted, b.available
"""
MAX_PENDING_BUCKETS = 10_000  # differences waiting for their bucket's next request, per process


@dataclass(frozen=True, slots=True)
class BucketSize:
    maximum: int  # the most points a bucket holds (and the largest cost a request may have)
    restore_rate: int  # points restored per second

    def __post_init__(self) -> None:
        assert self.maximum > 0 and self.restore_rate > 0, "a bucket holds and restores something"


@dataclass(frozen=True, slots=True)
class Take:
    granted: bool
    available: Decimal  # the bucket's level after the take (unchanged when refused)

    def seconds_until(self, cost: int, size: BucketSize) -> int:
        """Whole seconds until the bucket holds ``cost`` again (at least 1): the retry hint."""
        return max(1, math.ceil((cost - self.available) / size.restore_rate))


@dataclass
class RateLimiter:
    """One per process: the bucket sizes by principal kind, and the differences owed to buckets."""

    db: Database
    sizes: dict[str, BucketSize]
    enabled: bool = True
    _pending: dict[str, Decimal] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> RateLimiter:
        sizes = {
            kind: BucketSize(
                maximum=getattr(settings, f"rate_limit_{kind}_maximum"),
                restore_rate=getattr(settings, f"rate_limit_{kind}_restore_rate"),
            )
            for kind in ("operator", "merchant", "member")
        }
        return cls(db, sizes, enabled=settings.rate_limit_enabled)

    async def take(self, bucket: str, cost: int, size: BucketSize) -> Take:
        """Take ``cost`` points from ``bucket`` if it holds them (one statement)."""
        assert 0 <= cost <= size.maximum, "a cost above the bucket's size is refused before this"
        adjustment = self._pending.pop(bucket, Decimal(0))
        row = await self.db.call_row(_TAKE, bucket, cost, adjustment, size.maximum, size.restore_rate)
        return Take(granted=row["granted"], available=row["available"])

    def settle_later(self, bucket: str, adjustment: int) -> None:
        """Credit (positive) or charge (negative) ``bucket`` with its next take."""
        if adjustment == 0:
            return
        if bucket not in self._pending and len(self._pending) >= MAX_PENDING_BUCKETS:
            # Bounded memory: forget the oldest difference (a bucket refills by itself anyway).
            self._pending.pop(next(iter(self._pending)))
        self._pending[bucket] = self._pending.get(bucket, Decimal(0)) + adjustment
