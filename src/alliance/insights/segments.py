"""Segment definitions (validated here, evaluated set-based by the refresh) and their lifecycle.

A definition is deliberately small — three shapes, each a question a shopkeeper would ask:

- ``{"category": "baby-formula", "minMonths": 3, "windowMonths": 4}``: bought in the category in
  at least 3 of the last 4 calendar months (the current month included);
- ``{"tag": "denim", "minMonths": 2, "windowMonths": 3}``: the same for a purchase tag;
- ``{"minVisits": 4, "minSpend": "500.00", "windowMonths": 2}``: at least 4 visits and/or at
  least 500 spent in the window (either may be left out, not both).

Membership is recomputed by `alliance insights refresh` (insights_refresh_segments), so a new
or changed segment fills in at the next refresh.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError
from alliance.insights.models import CustomerSegment

MAX_WINDOW_MONTHS = 24
_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{1,62}$")
_LABEL = re.compile(r"^\S.{0,63}$")


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    window_months: int
    category: str | None = None
    tag: str | None = None
    min_months: int | None = None
    min_visits: int | None = None
    min_spend: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        """The stored form (the refresh reads these keys)."""
        values = {
            "category": self.category,
            "tag": self.tag,
            "minMonths": self.min_months,
            "minVisits": self.min_visits,
            "minSpend": None if self.min_spend is None else str(self.min_spend),
            "windowMonths": self.window_months,
        }
        return {key: value for key, value in values.items() if value is not None}


def _refuse(message: str, field: str = "definition") -> DomainError:
    return DomainError("INVALID_SEGMENT_DEFINITION", message, field)


def check_definition(definition: SegmentDefinition) -> SegmentDefinition:
    """The definition if it is one of the three shapes with sensible numbers, else a refusal."""
    if not 1 <= definition.window_months <= MAX_WINDOW_MONTHS:
        raise _refuse(f"windowMonths must be 1 to {MAX_WINDOW_MONTHS}", "definition.windowMonths")
    for name, label in (("category", definition.category), ("tag", definition.tag)):
        if label is not None and not _LABEL.match(label):
            raise _refuse(f"{name} must be 1 to 64 characters", f"definition.{name}")
    by_label = definition.category is not None or definition.tag is not None
    by_activity = definition.min_visits is not None or definition.min_spend is not None
    if definition.category is not None and definition.tag is not None:
        raise _refuse("a segment is by category or by tag, not both")
    if by_label == by_activity:
        raise _refuse("give a category or a tag (with minMonths), or minVisits and/or minSpend")
    if by_label:
        months = definition.min_months
        if months is None or not 1 <= months <= definition.window_months:
            raise _refuse("minMonths must be 1 to windowMonths", "definition.minMonths")
        return definition
    if definition.min_months is not None:
        raise _refuse("minMonths applies to a category or tag", "definition.minMonths")
    if definition.min_visits is not None and not 1 <= definition.min_visits <= 10_000:
        raise _refuse("minVisits must be 1 to 10000", "definition.minVisits")
    spend = definition.min_spend
    if spend is not None:
        try:
            exact = spend == spend.quantize(Decimal("0.01"))
        except InvalidOperation:
            exact = False
        if not (exact and Decimal(0) < spend < Decimal("1e12")):
            raise _refuse("minSpend must be a positive amount with at most 2 decimals", "definition.minSpend")
    return definition


def definition_from_json(stored: dict[str, Any]) -> SegmentDefinition:
    spend = stored.get("minSpend")
    return SegmentDefinition(
        window_months=int(stored["windowMonths"]),
        category=stored.get("category"),
        tag=stored.get("tag"),
        min_months=stored.get("minMonths"),
        min_visits=stored.get("minVisits"),
        min_spend=None if spend is None else Decimal(spend),
    )


async def segment_by_code(session: AsyncSession, tenant_id: int, code: str) -> CustomerSegment | None:
    statement = select(CustomerSegment).where(
        CustomerSegment.tenant_id == tenant_id, CustomerSegment.code == code
    )
    return (await session.exec(statement)).first()


async def list_segments(
    session: AsyncSession, tenant_id: int, include_archived: bool
) -> list[CustomerSegment]:
    statement = select(CustomerSegment).where(CustomerSegment.tenant_id == tenant_id)
    if not include_archived:
        statement = statement.where(CustomerSegment.status == "active")
    return list((await session.exec(statement.order_by(CustomerSegment.code))).all())


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise DomainError("INVALID_NAME", "name must be 1 to 200 characters", "name")
    return name


async def create_segment(
    session: AsyncSession, tenant_id: int, code: str, name: str, definition: SegmentDefinition
) -> CustomerSegment:
    if not _CODE.match(code):
        raise DomainError("INVALID_CODE", "code: 2-63 of a-z, 0-9, _ and -, starting alphanumeric", "code")
    await run_sql(
        session,
        text(
            "SELECT pg_advisory_xact_lock("
            "hashtextextended('customer_segments:' || CAST(CAST(:t AS bigint) AS text), 0))"
        ),
        {"t": tenant_id},
    )
    if await segment_by_code(session, tenant_id, code) is not None:
        raise DomainError("SEGMENT_CODE_TAKEN", f"a segment {code} exists", "code")
    # Only the columns the application role may insert (the rest are the refresh's).
    created = await run_sql(
        session,
        text(
            "INSERT INTO customer_segments (tenant_id, code, name, definition)"
            " VALUES (:tenant, :code, :name, CAST(:definition AS jsonb)) RETURNING id"
        ),
        {
            "tenant": tenant_id,
            "code": code,
            "name": _check_name(name),
            "definition": json.dumps(check_definition(definition).as_json()),
        },
    )
    segment = await session.get(CustomerSegment, created.scalar_one())
    assert segment is not None
    return segment


async def _existing(session: AsyncSession, tenant_id: int, code: str) -> CustomerSegment:
    segment = await segment_by_code(session, tenant_id, code)
    if segment is None:
        raise DomainError("SEGMENT_NOT_FOUND", f"no segment {code}", "code")
    return segment


async def update_segment(
    session: AsyncSession,
    tenant_id: int,
    code: str,
    name: str | None,
    definition: SegmentDefinition | None,
) -> CustomerSegment:
    """A new name and/or definition; membership follows at the next refresh."""
    segment = await _existing(session, tenant_id, code)
    if segment.status == "archived":
        raise DomainError("SEGMENT_ARCHIVED", "an archived segment cannot change", "code")
    if name is not None:
        segment.name = _check_name(name)
    if definition is not None:
        segment.definition = check_definition(definition).as_json()
    segment.updated_at = datetime.now(UTC)
    session.add(segment)
    await session.flush()
    await session.refresh(segment)
    return segment


async def archive_segment(session: AsyncSession, tenant_id: int, code: str) -> CustomerSegment:
    """Archived: kept for the record; the next refresh empties it (offers stop targeting it)."""
    segment = await _existing(session, tenant_id, code)
    if segment.status != "archived":
        segment.status = "archived"
        segment.updated_at = datetime.now(UTC)
        session.add(segment)
        await session.flush()
        await session.refresh(segment)
    return segment
