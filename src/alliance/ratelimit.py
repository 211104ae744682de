"""Per-client rate limiting: a leaky bucket of query-cost points per API client (per member for
member tokens), kept in PostgreSQL so that every gateway replica draws from the same bucket.

PostgreSQL rather than Redis: the embedded-PostgreSQL setup has no Redis, and the database is
already on every request's path. The bucket is one row of an UNLOGGED table (no WAL; see
``migrations/sql/0010_limits.sql``), changed by one statement (`_TAKE`): it refills the bucket
for the time elapsed since its last update, applies what this process gives back or still owes,
and takes the requested cost if the bucket holds it.

Leases. A statement per request made a busy client's requests queue on its bucket row (measured:
earnPoints over HTTP at 350/s with the limiter, 563/s without). So a take that the bucket can
afford also takes a *lease*: up to a second of the bucket's restore rate, at most a tenth of its
size. This process spends the lease on the client's next requests without a statement, and
gives back what is left with the next take — at the latest once the lease is a second old. A
bucket smaller than ten points gets no lease and is exact (`lease_size`).
What a lease changes, and why it is acceptable: another replica may throttle the client while
this one holds up to a lease of its points unspent, for at most a second; the total taken from
a bucket never exceeds what it held, so no client gets more than its budget.

A request is charged its requested cost up front and its actual cost in the end. The difference
(a refund, usually: a connection returned fewer nodes than asked for) is settled against the
lease, so settling it adds no round trip either. A replica that stops loses its leases: the
bucket refills by itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import Decimal

from alliance.config import Settings
from alliance.db import Database

# Take $2 (cost) points from bucket $1 in one statement: refill it for the time since its last
# update ($5 points a second, never above the maximum $4), apply $3 (the adjustment: a lease
# given back, or what earlier requests still owe; applied whether or not this one is granted),
# then grant the request if the level covers the cost — and lend $6 points more (the lease) if
# it covers that too. A new bucket starts full. Concurrent takes of one client serialise on its
# row for the length of this statement (autocommit: no longer).
_TAKE = """
    WITH p AS (
      SELECT CAST($1 AS text) AS bucket, CAST($2 AS numeric) AS cost,
        CAST($3 AS numeric) AS adjustment, CAST($4 AS numeric) AS maximum,
        CAST($5 AS numeric) AS restore_rate, CAST($6 AS numeric) AS lease
    )
    INSERT INTO rate_limit_buckets AS b (bucket, available, updated_at, granted, leased)
    SELECT p.bucket, fresh.level - t.taken, now(), t.granted, t.leased
    FROM p, LATERAL (SELECT least(p.maximum, p.maximum + p.adjustment) AS level) fresh,
      LATERAL (SELECT fresh.level >= p.cost AS granted,
                      CASE WHEN fresh.level >= p.cost + p.lease THEN p.lease ELSE 0 END AS leased,
                      CASE WHEN fresh.level >= p.cost + p.lease THEN p.cost + p.lease
                           WHEN fresh.level >= p.cost THEN p.cost ELSE 0 END AS taken) t
    ON CONFLICT (bucket) DO UPDATE SET (available, updated_at, granted, leased) = (
      SELECT refilled.level - t.taken, now(), t.granted, t.leased
      FROM p, LATERAL (
        SELECT least(
          p.maximum,
          least(p.maximum, b.available + round(p.restore_rate * extract(epoch FROM now() - b.updated_at), 3))
            + p.adjustment
        ) AS level
      ) refilled,
      LATERAL (SELECT refilled.level >= p.cost AS granted,
                      CASE WHEN refilled.level >= p.cost + p.lease THEN p.lease ELSE 0 END AS leased,
                      CASE WHEN refilled.level >= p.cost + p.lease THEN p.cost + p.lease
                           WHEN refilled.level >= p.cost THEN p.cost ELSE 0 END AS taken) t
    )
    RETURNING b.granted, b.available, b.leased
"""
LEASE_SECONDS = 1.0  # a lease older than this is given back with the bucket's next take
MAX_LEASES = 10_000  # buckets with a lease (or a difference to settle) in this process


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


def lease_size(size: BucketSize) -> int:
    """Points lent with a take: a second of the restore rate, at most a tenth of the bucket.
    A bucket of fewer than ten points gets none, so the smallest buckets stay exact."""
    return min(size.restore_rate, size.maximum // 10)


@dataclass(slots=True)
class _Lease:
    points: Decimal  # taken from the bucket and not spent yet; negative: owed to the bucket
    bucket_level: Decimal  # the shared bucket's level when it was last seen
    taken_at: float  # time.monotonic() of the take that lent it; 0: give it back at once


@dataclass
class RateLimiter:
    """One per process: the bucket sizes by principal kind, and this process's leases."""

    db: Database
    sizes: dict[str, BucketSize]
    enabled: bool = True
    _leases: dict[str, _Lease] = field(default_factory=dict, init=False, repr=False)
    _leasing: set[str] = field(default_factory=set, init=False, repr=False)  # a lease is on its way

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
        """Take ``cost`` points for ``bucket``: from this process's lease when it covers them,
        else from the shared bucket (one statement, which gives back the old lease)."""
        assert 0 <= cost <= size.maximum, "a cost above the bucket's size is refused before this"
        lease = self._leases.get(bucket)
        if lease is not None and lease.points >= cost and time.monotonic() - lease.taken_at < LEASE_SECONDS:
            lease.points -= cost
            return Take(granted=True, available=lease.bucket_level + lease.points)
        returned = self._leases.pop(bucket).points if lease is not None else Decimal(0)
        # One lease at a time per bucket: requests that miss while one is on its way take their
        # own cost only, so a burst cannot leave a lease per request unspent in this process.
        lend = 0 if bucket in self._leasing else lease_size(size)
        if lend:
            self._leasing.add(bucket)
        try:
            row = await self.db.call_row(_TAKE, bucket, cost, returned, size.maximum, size.restore_rate, lend)
        except BaseException:
            if returned:
                self._held(bucket).points += returned  # not given back: still this process's to return
            raise
        finally:
            if lend:
                self._leasing.discard(bucket)
        leased: Decimal = row["leased"]
        assert 0 <= leased <= lend and (row["granted"] or leased == 0), "a lease comes with a grant"
        if leased:
            held = self._held(bucket)  # refunds may have settled against it meanwhile
            held.points += leased
            held.bucket_level, held.taken_at = row["available"], time.monotonic()
        return Take(granted=row["granted"], available=row["available"] + leased)

    def settle_later(self, bucket: str, adjustment: int) -> None:
        """Credit (positive) or charge (negative) ``bucket``: against this process's lease, which
        goes back to the bucket with its next take."""
        if adjustment == 0:
            return
        self._held(bucket).points += adjustment

    def _held(self, bucket: str) -> _Lease:
        lease = self._leases.get(bucket)
        if lease is None:
            if len(self._leases) >= MAX_LEASES:
                # Bounded memory: forget the oldest lease (a bucket refills by itself anyway).
                self._leases.pop(next(iter(self._leases)))
            lease = self._leases[bucket] = _Lease(Decimal(0), Decimal(0), 0.0)
        return lease
