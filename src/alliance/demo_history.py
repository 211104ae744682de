"""The demo alliance's history: last month's purchases and cross-merchant redemptions, and a few
purchases this month — so the console has a closed period to settle (a bilateral matrix with
four cells) and the member app a history to show.

Every posting goes through the ordinary ledger functions as the demo merchant's client, under a
fixed idempotency key, so seeding again posts nothing new. The ledger refuses business times
more than 7 days back (a POS that was offline, not a time machine), so last month's postings are
then moved into last month as the database owner: their transactions' `effective_at` and their
lots' `issued_at`, with the append-only trigger lifted for that one statement. Only the demo does
this; nothing else may rewrite the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import text

from alliance.db import Database
from alliance.db.database import OPERATOR
from alliance.errors import DomainError
from alliance.ledger.service import EarnItem, Poster, earn_points, redeem_points
from alliance.settlement.service import set_terms, terms_in_force

KEY_PREFIX = "demo-history-"
DEMO_FEE_BPS = 200  # the operator keeps 2 % of what a redeeming merchant receives (DESIGN.md's example)


@dataclass(frozen=True, slots=True)
class Posting:
    merchant: str  # tenant code
    member: int  # index into demo.DEMO_MEMBERS
    day: int | None  # day of last month; None: now (this month)
    amount: Decimal | None = None  # a purchase (CNY), or
    points: int | None = None  # a redemption
    store: str | None = None
    order_ref: str = ""


# Oldest lots are spent first (all expire together), so each redemption's provenance is fixed:
# the hotel receives Sunrise's and East 4S's points, East 4S the hotel's, Sunrise East 4S's.
HISTORY = [
    Posting("sunrise-mart", 0, 3, amount=Decimal("1280.00"), store="SM-001", order_ref="SM-R-10231"),
    Posting("east-4s", 0, 5, amount=Decimal("3600.00"), store="SVC-1", order_ref="E4S-SVC-0871"),
    Posting("lakeview-hotel", 1, 6, amount=Decimal("2600.00"), store="HZ-WL", order_ref="LV-F-5520"),
    Posting("east-4s", 2, 8, amount=Decimal("800.00"), store="SVC-1", order_ref="E4S-TYRE-0412"),
    Posting("sunrise-mart", 1, 9, amount=Decimal("860.50"), store="SM-002", order_ref="SM-O-20877"),
    Posting("sunrise-mart", 2, 11, amount=Decimal("2400.00"), store="SM-001", order_ref="SM-R-10988"),
    Posting("lakeview-hotel", 0, 14, points=3000, store="HZ-WL", order_ref="LV-UPGRADE-7731"),
    Posting("east-4s", 1, 18, points=5000, store="SVC-1", order_ref="E4S-MAINT-1180"),
    Posting("sunrise-mart", 2, 22, points=1500, store="SM-001", order_ref="SM-OIL-3309"),
    Posting("sunrise-mart", 0, None, amount=Decimal("356.80"), store="SM-002", order_ref="SM-O-21406"),
    Posting("lakeview-hotel", 2, None, amount=Decimal("980.00"), store="HZ-WL", order_ref="LV-F-5698"),
]


def last_month(today: date) -> date:
    """The first day of the month before ``today``'s."""
    first = today.replace(day=1)
    return (first - timedelta(days=1)).replace(day=1)


async def ensure_demo_terms(db: Database, since: datetime) -> None:
    """POINTS settle monthly at 0.01 CNY with the operator's 2 % fee, from ``since`` on — unless
    terms from ``since`` on exist already (this demo's, or ones the operator set since)."""
    async with db.transaction(OPERATOR) as session:
        terms = await terms_in_force(session, "POINTS", since)
        if terms.effective_from < since:
            await set_terms(
                session,
                "POINTS",
                "provenance_netting",
                Decimal("0.01"),
                "CNY",
                DEMO_FEE_BPS,
                "monthly",
                since,
            )


async def seed_history(
    db: Database,
    tenants: dict[str, int],
    clients: dict[str, str],
    member_numbers: list[str],
    time_zone: str,
) -> None:
    """Post the history (again: a replay) and move last month's part into last month."""
    zone = ZoneInfo(time_zone)
    month = last_month(datetime.now(zone).date())
    backdated: dict[int, datetime] = {}
    for index, posting in enumerate(HISTORY):
        poster = Poster(clients[posting.merchant], tenants[posting.merchant])
        key = f"{KEY_PREFIX}{index}"
        number = member_numbers[posting.member]
        if posting.amount is not None:
            item = EarnItem(number, posting.amount, posting.order_ref, store_code=posting.store)
            payload = await earn_points(db, poster, idempotency_key=key, item=item, time_zone=time_zone)
        else:
            assert posting.points is not None
            payload = await redeem_points(
                db,
                poster,
                idempotency_key=key,
                member_number=number,
                points=posting.points,
                order_ref=posting.order_ref,
                store_code=posting.store,
                asset="POINTS",
            )
        if payload["userErrors"]:
            raise DomainError("DEMO_HISTORY_REFUSED", f"demo posting {index}: {payload['userErrors']}")
        if posting.day is not None:
            at = datetime.combine(month.replace(day=posting.day), time(10 + index % 8, 15), zone)
            backdated[payload["transaction"]["id"]] = at
    this_month = datetime.combine(datetime.now(zone).date().replace(day=1), time(), zone)
    await _move_into_the_past(db, backdated, this_month)


async def _move_into_the_past(db: Database, when: dict[int, datetime], this_month: datetime) -> None:
    """Set business times, as the owner; postings moved before (out of this month) stay put."""
    engine = db.owner_engine()
    try:
        async with engine.begin() as connection:
            pending = (
                await connection.execute(
                    text(
                        "SELECT id FROM ledger_transactions WHERE id = ANY(:ids) AND effective_at >= :start"
                    ),
                    {"ids": list(when), "start": this_month},
                )
            ).scalars()
            moves = [{"id": tx_id, "at": when[tx_id]} for tx_id in pending]
            if not moves:
                return
            await connection.execute(text("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only"))
            await connection.execute(
                text("UPDATE ledger_transactions SET effective_at = :at WHERE id = :id"), moves
            )
            await connection.execute(text("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only"))
            await connection.execute(
                text("UPDATE lots SET issued_at = :at WHERE transaction_id = :id"), moves
            )
    finally:
        await engine.dispose()
