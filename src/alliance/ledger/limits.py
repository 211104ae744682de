"""Explicit bounds on every ledger input, so nothing unbounded reaches the books."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

MAX_POINTS = 1_000_000_000  # one posting: far above any real purchase, and a GraphQL Int
MAX_AMOUNT = Decimal("1000000000.00")  # one purchase, in currency units
AMOUNT_DECIMALS = 2
MAX_IDEMPOTENCY_KEY = 200
MAX_ORDER_REF = 128
MAX_REASON = 500
MAX_BACKDATE = timedelta(days=7)  # effectiveAt may be this far in the past, never in the future
HOLD_TIMEOUT_DEFAULT_SECONDS = 24 * 3600
HOLD_TIMEOUT_MAX_SECONDS = 30 * 24 * 3600
EXPIRING_DAYS_MAX = 366
