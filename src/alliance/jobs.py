"""Runs of the scheduled jobs, recorded in PostgreSQL.

The jobs (``alliance settle``, ``expire``, ``birthdays``, ``tiers evaluate``, ``ledger verify``,
``insights refresh``) run as Kubernetes CronJobs, each in a pod that exits when it is done: a
metric kept in that process would leave with it. So every run is a ``job_runs`` row — inserted when it starts,
finished with its outcome and counts — and the gateway's /metrics reads the latest ones at
scrape time (`latest_runs`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db import Database
from alliance.db.database import OPERATOR, run_sql

JOBS = ("settle", "expire", "birthdays", "tiers_evaluate", "ledger_verify", "insights_refresh")
_START = text("INSERT INTO job_runs (job) VALUES (:job) RETURNING id")
_FINISH = text(
    "UPDATE job_runs SET finished_at = clock_timestamp(), outcome = :outcome, counts = CAST(:counts AS jsonb)"
    " WHERE id = :id"
)


@dataclass
class JobRun:
    """The run in progress: the job fills in its counts, and marks a failure it reports itself."""

    job: str
    id: int
    counts: dict[str, int] = field(default_factory=dict)
    failed: bool = False


@asynccontextmanager
async def recorded_run(db: Database, job: str) -> AsyncIterator[JobRun]:
    """Record a run of ``job``: started now, finished when the block ends — ``failed`` if it
    raised or set ``failed``, else ``succeeded``. Each write is its own short transaction, so
    the run is visible (as running) while it works."""
    assert job in JOBS, f"unknown job {job!r}"
    async with db.transaction(OPERATOR) as session:
        run = JobRun(job, (await run_sql(session, _START, {"job": job})).scalar_one())
    outcome = "failed"
    try:
        yield run
        outcome = "failed" if run.failed else "succeeded"
    finally:
        async with db.transaction(OPERATOR) as session:
            params = {"id": run.id, "outcome": outcome, "counts": json.dumps(run.counts)}
            await run_sql(session, _FINISH, params)


@dataclass(frozen=True, slots=True)
class JobSummary:
    job: str
    last_duration_seconds: float | None  # of the latest finished run
    last_failed: bool | None  # whether the latest finished run failed
    last_success_at: datetime | None


_LATEST = text(
    """
    SELECT j.job,
      extract(epoch FROM last.finished_at - last.started_at)::float8 AS duration,
      last.outcome = 'failed' AS failed,
      (SELECT s.finished_at FROM job_runs s WHERE s.job = j.job AND s.outcome = 'succeeded'
       ORDER BY s.started_at DESC LIMIT 1) AS succeeded_at
    FROM unnest(CAST(:jobs AS text[])) AS j(job)
    LEFT JOIN LATERAL (
      SELECT r.started_at, r.finished_at, r.outcome FROM job_runs r
      WHERE r.job = j.job AND r.outcome <> 'running'
      ORDER BY r.started_at DESC LIMIT 1
    ) last ON true
    """
)


async def latest_runs(session: AsyncSession) -> list[JobSummary]:
    """Each job's latest finished run and last success (index scans on (job, started_at))."""
    rows = (await run_sql(session, _LATEST, {"jobs": list(JOBS)})).all()
    return [JobSummary(row.job, row.duration, row.failed, row.succeeded_at) for row in rows]
