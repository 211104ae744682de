"""Metrics (Prometheus) and structured JSON logs (structlog), shared by the gateway and the jobs.

Every log line carries the request id (from ``X-Request-ID`` or generated), and the tenant and
client of the caller once known. Phone numbers never reach a log: a processor masks anything
shaped like one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from alliance.jobs import JobSummary
from alliance.members.phone import mask_phone

GRAPHQL_REQUESTS = Counter(
    "alliance_graphql_requests_total", "GraphQL operations by name and outcome", ["operation", "outcome"]
)
GRAPHQL_LATENCY = Histogram(
    "alliance_graphql_request_seconds",
    "GraphQL operation latency",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LEDGER_POSTINGS = Counter(
    "alliance_ledger_postings_total",
    "Ledger postings by operation and outcome (posted, refused, replayed)",
    ["operation", "outcome"],
)
EARN_GROUP_SIZE = Histogram(
    "alliance_earn_group_size",
    "Earns per group posted by ledger_earn_group (alliance.ledger.groups)",
    buckets=(2, 4, 8, 16, 32, 64, 128, 256, 1000),
)
EARN_GROUPS_FAILED = Counter(
    "alliance_earn_groups_failed_total", "Earn groups whose call failed as a whole (their earns went alone)"
)


def count_posting(operation: str, payload: dict[str, Any]) -> None:
    """Count one posting's answer under ``operation`` (a ledger function)."""
    outcome = "replayed" if payload.get("replayed") else "refused" if payload["userErrors"] else "posted"
    LEDGER_POSTINGS.labels(operation, outcome).inc()


WEBHOOK_DELIVERIES = Counter(
    "alliance_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, dead; superseded: a lapsed claim's late result)",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "alliance_webhook_request_seconds",
    "Time for a webhook endpoint to answer",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WEBHOOK_EVENTS_SWEPT = Counter(
    "alliance_webhook_swept_events_total", "Events written by the webhook sweep, by type", ["event_type"]
)
WEBHOOK_WORKER_HEARTBEAT = Gauge(
    "alliance_webhook_worker_heartbeat_seconds", "Unix time of the webhook worker's latest loop"
)


class _JobRuns(Collector):
    """The scheduled jobs' latest runs, as read from ``job_runs`` for one scrape."""

    def __init__(self, summaries: list[JobSummary]) -> None:
        self.summaries = summaries

    def collect(self) -> Iterator[GaugeMetricFamily]:
        duration = GaugeMetricFamily(
            "alliance_job_last_duration_seconds", "Duration of the job's latest finished run", labels=["job"]
        )
        failed = GaugeMetricFamily(
            "alliance_job_last_run_failed",
            "1 if the job's latest finished run failed, else 0",
            labels=["job"],
        )
        success = GaugeMetricFamily(
            "alliance_job_last_success_timestamp_seconds",
            "When the job last finished successfully (Unix time)",
            labels=["job"],
        )
        for summary in self.summaries:
            if summary.last_duration_seconds is not None:
                duration.add_metric([summary.job], summary.last_duration_seconds)
                failed.add_metric([summary.job], 1.0 if summary.last_failed else 0.0)
            if summary.last_success_at is not None:
                success.add_metric([summary.job], summary.last_success_at.timestamp())
        yield from (duration, failed, success)


def job_metrics(summaries: list[JobSummary]) -> bytes:
    """The jobs' gauges in Prometheus' text format (appended to the process's own metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobRuns(summaries))
    return generate_latest(registry)


_PHONE = re.compile(r"\+?\b1[3-9]\d{9}\b|\+[1-9]\d{7,14}\b")


def _mask_phones(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str) and _PHONE.search(value):
            event[key] = _PHONE.sub(lambda m: mask_phone(m.group(0)), value)
    return event


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stdout; standard-library loggers (uvicorn, alembic) go through the same pipe."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_phones,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
