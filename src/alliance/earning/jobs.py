"""Scheduled earning jobs. ``alliance birthdays`` runs daily (a CronJob): every merchant with a
birthday gift pack grants it to its members whose birthday month it is, once per year."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlmodel import select

from alliance.db import AccessContext, Database
from alliance.db.database import OPERATOR, run_sql
from alliance.earning.models import EarningRule
from alliance.ledger.service import Poster, award_event_bonus

MAX_MEMBERS_PER_TENANT_RUN = 100_000


@dataclass(frozen=True, slots=True)
class BirthdayRun:
    tenants: int
    granted: int
    already_granted: int


async def grant_birthday_gifts(db: Database, time_zone: str, now: datetime | None = None) -> BirthdayRun:
    """Idempotent: the key is per member and year, and the rule's limit (once a year) is enforced
    by the ledger under a lock, so two overlapping runs grant each gift once."""
    at = now or datetime.now(UTC)
    local = at.astimezone(ZoneInfo(time_zone))
    async with db.transaction(OPERATOR) as session:
        rules = (await session.exec(select(EarningRule).where(EarningRule.kind == "event_bonus"))).all()
    tenants = sorted(
        {
            r.tenant_id
            for r in rules
            if r.config.get("event") == "BIRTHDAY"
            and r.effective_from <= at
            and (r.effective_until is None or at < r.effective_until)
        }
    )
    granted = already = 0
    for tenant_id in tenants:
        async with db.transaction(AccessContext("merchant", tenant_id=tenant_id)) as session:
            numbers = (
                (
                    await run_sql(
                        session,
                        text(
                            "SELECT m.member_number FROM members m JOIN member_links l ON l.member_id = m.id"
                            " WHERE l.tenant_id = :t AND m.status = 'active'"
                            " AND extract(month FROM m.birthday) = :month ORDER BY m.id LIMIT :limit"
                        ),
                        {"t": tenant_id, "month": local.month, "limit": MAX_MEMBERS_PER_TENANT_RUN},
                    )
                )
                .scalars()
                .all()
            )
        poster = Poster(scope=f"job:birthdays:{tenant_id}", tenant_id=tenant_id)
        for number in numbers:
            payload = await award_event_bonus(
                db,
                poster,
                idempotency_key=f"birthday-{local.year}-{number}",
                member_number=number,
                event="BIRTHDAY",
                note=str(local.year),
                time_zone=time_zone,
                at=at,
            )
            if payload["userErrors"] or payload.get("replayed"):
                already += 1
            else:
                granted += 1
    return BirthdayRun(len(tenants), granted, already)
