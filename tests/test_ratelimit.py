"""The rate limiter's leases: spent without a statement, given back, never more than the bucket."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import asyncpg
import pytest

from alliance.db import Database
from alliance.ratelimit import LEASE_SECONDS, BucketSize, RateLimiter, lease_size
from tests.conftest import terminate_backend


async def bucket_row(db: Database, bucket: str) -> tuple[Decimal, object]:
    row = await db.call_row("SELECT available, updated_at FROM rate_limit_buckets WHERE bucket = $1", bucket)
    return row["available"], row["updated_at"]


def limiter(db: Database, size: BucketSize) -> RateLimiter:
    return RateLimiter(db, {"merchant": size})


async def test_a_lease_is_spent_without_a_statement_and_its_rest_given_back(db: Database) -> None:
    size = BucketSize(maximum=100_000, restore_rate=100)
    assert lease_size(size) == 100
    limits, bucket = limiter(db, size), f"test-{uuid.uuid4()}"

    first = await limits.take(bucket, 50_000, size)  # drain half, so refills do not hit the cap
    assert first.granted and first.available == 50_000, "the caller sees the lease as its own"
    lent, seen = await bucket_row(db, bucket)
    assert lent == 100_000 - 50_000 - 100, "the bucket lent one lease beyond the cost"

    second = await limits.take(bucket, 1, size)
    assert second.granted and second.available == 49_999
    assert await bucket_row(db, bucket) == (lent, seen), "spent from the lease: no statement"

    await asyncio.sleep(LEASE_SECONDS + 0.05)
    third = await limits.take(bucket, 1, size)
    after, _ = await bucket_row(db, bucket)
    # Given back 99, refilled ~105 over the second, took 1 + a new lease of 100.
    assert third.granted and after > lent + 99 - 101, "the unspent lease went back to the bucket"


async def test_replicas_with_leases_never_take_more_than_the_bucket_holds(db: Database) -> None:
    size = BucketSize(maximum=200, restore_rate=10)  # leases of 10 points
    replicas, bucket = [limiter(db, size), limiter(db, size)], f"test-{uuid.uuid4()}"
    started = time.monotonic()
    takes = await asyncio.gather(*(replicas[i % 2].take(bucket, 1, size) for i in range(400)))
    elapsed = time.monotonic() - started
    granted = sum(take.granted for take in takes)
    refilled = size.restore_rate * elapsed
    assert granted <= size.maximum + refilled, (granted, elapsed)
    # Leases held unspent (at most one per replica) are the only points not granted.
    assert granted >= size.maximum - 2 * lease_size(size)


async def test_a_refund_settles_against_the_lease(db: Database) -> None:
    size = BucketSize(maximum=1_000, restore_rate=50)
    limits, bucket = limiter(db, size), f"test-{uuid.uuid4()}"
    await limits.take(bucket, 24, size)
    lent, seen = await bucket_row(db, bucket)
    limits.settle_later(bucket, 20)  # asked for 24, used 4
    refunded = await limits.take(bucket, 60, size)  # 50 left in the lease + the 20 refunded
    assert refunded.granted and refunded.available == 1_000 - 24 + 20 - 60
    assert await bucket_row(db, bucket) == (lent, seen)


async def test_a_lease_survives_a_take_that_fails(settings) -> None:
    """What this process holds is not lost when the statement giving it back fails."""
    own = Database(settings.database_url, settings.model_copy(update={"pool_size": 1}))
    size = BucketSize(maximum=100_000, restore_rate=100)
    limits, bucket = limiter(own, size), f"test-{uuid.uuid4()}"
    try:
        await limits.take(bucket, 50_000, size)
        await limits.take(bucket, 1, size)  # 99 left in the lease
        await asyncio.sleep(LEASE_SECONDS + 0.05)  # due to go back with the next take
        await terminate_backend(own, await own.call("SELECT pg_backend_pid()"))
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await limits.take(bucket, 1, size)
        assert limits._leases[bucket].points == 99, "still held, to give back with the next take"
        retried = await limits.take(bucket, 1, size)  # a new connection gives the 99 back
        assert retried.granted and limits._leases[bucket].points == 100, "a fresh lease, the old one returned"
    finally:
        await own.close()
