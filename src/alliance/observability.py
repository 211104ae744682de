"""Metrics (Prometheus) and structured JSON logs (structlog), shared by the gateway and the jobs.

Every log line carries the request id (from ``X-Request-ID`` or generated), and the tenant and
client of the caller once known. Phone numbers never reach a log: a processor masks anything
shaped like one.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import structlog
from prometheus_client import Counter, Gauge, Histogram

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
JOB_DURATION = Histogram(
    "alliance_job_seconds", "Duration of scheduled jobs", ["job"], buckets=(0.1, 1, 5, 15, 60, 300, 900, 3600)
)
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
