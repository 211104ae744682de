"""Settlement periods: calendar days, ISO weeks or months in the alliance's time zone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from alliance.errors import DomainError

PERIOD_LENGTHS = ("daily", "weekly", "monthly")


def period_bounds(
    start: date, length: str, time_zone: str, end: date | None = None
) -> tuple[datetime, datetime]:
    """[start, end) as instants. ``start`` must begin a period of ``length``; ``end`` overrides."""
    assert length in PERIOD_LENGTHS, length
    zone = ZoneInfo(time_zone)
    if end is None:
        if length == "monthly":
            if start.day != 1:
                raise DomainError("INVALID_PERIOD", "a monthly period starts on the 1st", "periodStart")
            end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
        elif length == "weekly":
            if start.isoweekday() != 1:
                raise DomainError("INVALID_PERIOD", "a weekly period starts on a Monday", "periodStart")
            end = start + timedelta(days=7)
        else:
            end = start + timedelta(days=1)
    if end <= start:
        raise DomainError("INVALID_PERIOD", "periodEnd must be after periodStart", "periodEnd")
    if (end - start).days > 366:
        raise DomainError("INVALID_PERIOD", "a period is at most a year", "periodEnd")
    return datetime.combine(start, time(), zone), datetime.combine(end, time(), zone)


def parse_month(text: str) -> date:
    """``2026-11`` → 1 November 2026 (for ``alliance settle --period``)."""
    try:
        year, month = (int(part) for part in text.split("-"))
        return date(year, month, 1)
    except ValueError as exc:
        raise DomainError("INVALID_PERIOD", "period must look like 2026-11", "period") from exc
