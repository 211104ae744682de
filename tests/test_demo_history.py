"""The demo's history: last month holds purchases and cross-merchant redemptions to settle."""

from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.demo import seed_demo
from alliance.demo_history import HISTORY, last_month

RUN = """mutation($i: RunSettlementInput!) { runSettlement(input: $i) { batch { status
  lines(first: 50) { edges { node { issuerCode redeemerCode points } } } positions { party netAmount } }
  userErrors { code } } }"""
DEMO_CODES = {"sunrise-mart", "lakeview-hotel", "east-4s"}


async def count_history(db) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction(OPERATOR) as session:
        result = await run_sql(
            session,
            text("SELECT count(*) FROM ledger_transactions WHERE order_ref = ANY(:refs)"),
            {"refs": [p.order_ref for p in HISTORY]},
        )
        return result.scalar_one()


async def test_the_demo_has_a_closed_month_to_settle(settings, db, operator):
    await seed_demo(db)
    await seed_demo(db)  # seeding again posts nothing and moves nothing
    assert await count_history(db) == len(HISTORY)

    zone = ZoneInfo(settings.time_zone)
    month = last_month(datetime.now(zone).date())
    async with db.transaction(OPERATOR) as session:
        rows = await run_sql(
            session,
            text(
                "SELECT t.kind, t.order_ref, (t.effective_at AT TIME ZONE :zone)::date AS day, l.issued_at"
                " FROM ledger_transactions t LEFT JOIN lots l ON l.transaction_id = t.id"
                " WHERE t.order_ref = ANY(:refs)"
            ),
            {"zone": settings.time_zone, "refs": [p.order_ref for p in HISTORY]},
        )
        by_ref = {row.order_ref: row for row in rows}
    for posting in HISTORY:
        row = by_ref[posting.order_ref]
        if posting.day is None:
            assert row.day >= datetime.now(zone).date().replace(day=1)
        else:
            assert row.day == month.replace(day=posting.day)
            if row.kind == "earn":  # the lot is issued when its purchase was made
                assert row.issued_at.astimezone(zone).date() == row.day

    batch = (await operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))["runSettlement"]
    assert batch["userErrors"] == []
    lines = {
        (e["node"]["issuerCode"], e["node"]["redeemerCode"]): e["node"]["points"]
        for e in batch["batch"]["lines"]["edges"]
        if {e["node"]["issuerCode"], e["node"]["redeemerCode"]} <= DEMO_CODES
    }
    # Oldest lots first: the hotel took Sunrise's points then East 4S's; East 4S the hotel's;
    # Sunrise East 4S's 800 before its own.
    sunrise_to_hotel = lines[("sunrise-mart", "lakeview-hotel")]
    assert 1280 <= sunrise_to_hotel <= 2560  # 1 point per CNY, doubled on a market day
    assert lines == {
        ("sunrise-mart", "lakeview-hotel"): sunrise_to_hotel,
        ("east-4s", "lakeview-hotel"): 3000 - sunrise_to_hotel,
        ("lakeview-hotel", "east-4s"): 5000,
        ("east-4s", "sunrise-mart"): 800,
    }
    assert batch["batch"]["status"] == "DRAFT"
