"""Expiry into breakage, compensation, closed periods and cross-period reversals."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from alliance.settlement.service import expire_lots
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.settlement.test_worked_example import RUN, backdate_member_transactions

BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available } } }"


async def owner_sql(settings, sql: str, **params) -> None:
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(sql), params)
    finally:
        await engine.dispose()


async def test_expiry_moves_expired_remainders_to_breakage_once(settings, db, make_merchant):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    for order in ("E-1", "E-2"):
        await merchant.api(
            EARN, i={"memberNumber": number, "amount": "40", "orderRef": order, "idempotencyKey": unique("k")}
        )
    await merchant.api(
        REDEEM, i={"memberNumber": number, "points": 30, "orderRef": "R", "idempotencyKey": unique("k")}
    )
    # The soonest-expiring lot (E-1) gave its 30 first; make it expire now with 10 left.
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = now() - interval '1 second' WHERE transaction_id ="
        " (SELECT min(t.id) FROM ledger_transactions t JOIN members m ON m.id = t.member_id"
        "  WHERE m.member_number = :n AND t.kind = 'earn')",
        n=number,
    )
    assert (await merchant.api(BALANCE, n=number))["member"]["balance"]["available"] == 40

    async def run_twice_concurrently():
        async def run():
            async with db.transaction(OPERATOR) as session:
                return await expire_lots(session, str(uuid.uuid4()), 100_000)

        return await asyncio.gather(run(), run())

    first = await run_twice_concurrently()
    assert sum(r.points for r in first) >= 10
    async with db.transaction(OPERATOR) as session:
        rows = (
            (
                await run_sql(
                    session,
                    text(
                        "SELECT t.points FROM ledger_transactions t JOIN members m ON m.id = t.member_id"
                        " WHERE m.member_number = :n AND t.kind = 'expire'"
                    ),
                    {"n": number},
                )
            )
            .scalars()
            .all()
        )
        assert rows == [10], "exactly one expiry transaction for the member, for the remainder"
        assert await verify_ledger(session) == []
        again = await expire_lots(session, str(uuid.uuid4()), 100_000)
    assert (await merchant.api(BALANCE, n=number))["member"]["balance"]["available"] == 40
    today = datetime.now(UTC).date()
    report = "query($f: Date!, $t: Date!) { breakage(from: $f, to: $t) { issuerCode points } }"
    window = {"f": (today - timedelta(days=1)).isoformat(), "t": (today + timedelta(days=2)).isoformat()}
    own = (await merchant.api(report, **window))["breakage"]
    assert own == [{"issuerCode": merchant.code, "points": 10}], "a merchant sees only its own breakage"
    # Nothing of this member is left to expire.
    async with db.transaction(OPERATOR) as session:
        left = (
            await run_sql(
                session,
                text(
                    "SELECT count(*) FROM lots l JOIN members m ON m.id = l.member_id"
                    " WHERE m.member_number = :n AND l.remaining > 0 AND l.expires_at <= now()"
                ),
                {"n": number},
            )
        ).scalar_one()
    assert left == 0 and again.points >= 0


async def test_compensation_is_reason_coded_and_funded_by_the_right_party(operator, make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    compensate = """mutation($i: CompensatePointsInput!) { compensatePoints(input: $i) {
      transaction { kind points reason } balance { available } userErrors { code } } }"""
    by_merchant = await merchant.api(
        compensate,
        i={
            "memberNumber": number,
            "points": 200,
            "reason": "REWARD_WITHDRAWN",
            "note": "tyre voucher withdrawn",
            "idempotencyKey": unique("k"),
        },
    )
    assert by_merchant["compensatePoints"]["transaction"] == {
        "kind": "COMPENSATE",
        "points": 200,
        "reason": "REWARD_WITHDRAWN: tyre voucher withdrawn",
    }
    by_operator = await operator(
        compensate,
        i={"memberNumber": number, "points": 50, "reason": "SYSTEM_FAILURE", "idempotencyKey": unique("k")},
    )
    assert by_operator["compensatePoints"]["balance"] == {"available": 250}
    async with db.transaction(OPERATOR) as session:
        issuers = (
            (
                await run_sql(
                    session,
                    text(
                        "SELECT l.issuer_tenant_id FROM lots l JOIN members m ON m.id = l.member_id"
                        " WHERE m.member_number = :n ORDER BY l.id"
                    ),
                    {"n": number},
                )
            )
            .scalars()
            .all()
        )
    assert issuers == [merchant.tenant_id, None], (
        "the merchant funds its own; the operator's come from the alliance"
    )
    listed = await operator(
        "query($n: String!) { member(memberNumber: $n) { transactions(filter: {kinds: [COMPENSATE]}) { edges { node { reason } } } } }",
        n=number,
    )
    assert len(listed["member"]["transactions"]["edges"]) == 2


async def test_closed_period_refuses_backdating_and_reversal_lands_in_the_open_period(
    settings, operator, make_merchant
):
    issuer = await make_merchant(TenantCategory.SUPERMARKET)
    redeemer = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(issuer, phone)
    await enroll(redeemer, phone)
    await issuer.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": "100",
            "orderRef": "P-1",
            "asset": "GREEN",
            "idempotencyKey": unique("k"),
        },
    )
    redeemed = await redeemer.api(
        REDEEM,
        i={
            "memberNumber": number,
            "points": 80,
            "orderRef": "P-2",
            "asset": "GREEN",
            "idempotencyKey": unique("k"),
        },
    )

    # GREEN points, so closing a period does not constrain other tests' POINTS terms. The closed
    # period is [20 days ago, 2 days ago) so that a backdated earn (≤ 7 days) can aim into it.
    # Days are the alliance's (settlement periods are dates in its zone), not UTC's: between
    # 16:00 and 24:00 UTC, Shanghai is already on the next day.
    today = datetime.now(ZoneInfo(settings.time_zone)).date()
    closed_start, open_start = today - timedelta(days=20), today - timedelta(days=2)
    await backdate_member_transactions(
        settings, number, datetime.combine(today - timedelta(days=10), datetime.min.time(), UTC)
    )
    period = {"asset": "GREEN", "periodStart": closed_start.isoformat(), "periodEnd": open_start.isoformat()}
    batch = (await operator(RUN, i=period))["runSettlement"]["batch"]
    approved = await operator(
        "mutation($id: ID!) { approveSettlement(input: {batchId: $id}) { batch { status } userErrors { code } } }",
        id=batch["id"],
    )
    assert approved["approveSettlement"]["userErrors"] == [], approved

    # Backdating an earn into the closed period is refused with a clear code, nothing written.
    closed_day = datetime.combine(today - timedelta(days=3), datetime.min.time(), UTC)
    late = await issuer.api(
        EARN,
        i={
            "memberNumber": number,
            "amount": "5",
            "orderRef": "P-3",
            "asset": "GREEN",
            "idempotencyKey": unique("k"),
            "effectiveAt": closed_day.isoformat(),
        },
    )
    assert [e["code"] for e in late["earnPoints"]["userErrors"]] == ["PERIOD_CLOSED"]
    assert (
        await issuer.api(
            'query($n: String!) { member(memberNumber: $n) { balance(asset: "GREEN") { available } } }',
            n=number,
        )
    )["member"]["balance"]["available"] == 20

    # Overlapping the closed period with another batch is refused.
    overlap = await operator(
        RUN,
        i={
            "asset": "GREEN",
            "periodStart": (today - timedelta(days=5)).isoformat(),
            "periodEnd": today.isoformat(),
        },
    )
    assert [e["code"] for e in overlap["runSettlement"]["userErrors"]] == ["PERIOD_OVERLAP"]

    # The refund of that redemption happens now: a negative line in the open (current) period.
    reverse = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) { transaction { kind points } userErrors { code } } }"""
    result = await redeemer.api(
        reverse,
        i={
            "transactionId": redeemed["redeemPoints"]["transaction"]["id"],
            "reason": "booking cancelled",
            "points": 30,
            "idempotencyKey": unique("k"),
        },
    )
    assert result["reverseTransaction"]["transaction"] == {"kind": "REVERSE", "points": 30}
    open_period = {
        "asset": "GREEN",
        "periodStart": open_start.isoformat(),
        "periodEnd": (today + timedelta(days=1)).isoformat(),
    }
    this_month = (await operator(RUN, i=open_period))["runSettlement"]["batch"]
    lines = [
        e["node"]
        for e in this_month["lines"]["edges"]
        if (e["node"]["issuerCode"], e["node"]["redeemerCode"]) == (issuer.code, redeemer.code)
    ]
    assert [line["points"] for line in lines] == [-30]
    assert lines[0]["grossAmount"].startswith("-")
    closed = await operator(
        "query($id: ID!) { settlementBatch(id: $id) { status lines { edges { node { points } } } } }",
        id=batch["id"],
    )
    assert closed["settlementBatch"]["status"] == "APPROVED"
    assert [e["node"]["points"] for e in closed["settlementBatch"]["lines"]["edges"]] == [80]


async def test_extend_expiry_is_audited_and_reported(settings, db, operator, make_merchant):
    merchant, other = await make_merchant(), await make_merchant()
    phone = random_phone()
    number = await enroll(merchant, phone)
    await enroll(other, phone)
    await merchant.api(
        EARN, i={"memberNumber": number, "amount": "70", "orderRef": "X-1", "idempotencyKey": unique("k")}
    )
    await other.api(
        EARN, i={"memberNumber": number, "amount": "30", "orderRef": "X-2", "idempotencyKey": unique("k")}
    )
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = now() + interval '3 days' WHERE member_id ="
        " (SELECT id FROM members WHERE member_number = :n)",
        n=number,
    )
    report = (
        "query($d: Int!) { expiringPoints(days: $d, first: 100) { edges { node { memberNumber points } } } }"
    )
    seen = [
        e["node"]
        for e in (await merchant.api(report, d=7))["expiringPoints"]["edges"]
        if e["node"]["memberNumber"] == number
    ]
    assert seen == [{"memberNumber": number, "points": 100}]

    extend = """mutation($i: ExtendExpiryInput!) { extendExpiry(input: $i) { extendedLots points userErrors { code } } }"""
    result = await merchant.api(
        extend,
        i={"memberNumber": number, "days": 30, "reason": "STORE_CLOSED", "idempotencyKey": unique("k")},
    )
    # A merchant extends only the lots it issued: 70 of the member's 100 points.
    assert result["extendExpiry"] == {"extendedLots": 1, "points": 70, "userErrors": []}
    seen = [
        e["node"]
        for e in (await operator(report, d=7))["expiringPoints"]["edges"]
        if e["node"]["memberNumber"] == number
    ]
    assert seen == [{"memberNumber": number, "points": 30}]
    async with db.transaction(OPERATOR) as session:
        audit = (
            await run_sql(
                session,
                text(
                    "SELECT reason, new_expires_at - old_expires_at AS added FROM lot_expiry_extensions x"
                    " JOIN members m ON m.id = x.member_id WHERE m.member_number = :n"
                ),
                {"n": number},
            )
        ).all()
    assert [(a.reason, a.added.days) for a in audit] == [("STORE_CLOSED", 30)]
    both = await merchant.api(
        extend,
        i={
            "memberNumber": number,
            "days": 3,
            "newExpiry": "2099-01-01T00:00:00Z",
            "reason": "GOODWILL",
            "idempotencyKey": unique("k"),
        },
    )
    assert both["extendExpiry"]["userErrors"] == [{"code": "INVALID_EXTENSION"}]


async def test_a_run_skips_wallets_another_run_holds_instead_of_stopping(settings, db, make_merchant):
    async def expire_chunk(size: int):
        async with db.transaction(OPERATOR) as session:
            return await expire_lots(session, str(uuid.uuid4()), size)

    while (await expire_chunk(100_000)).members:  # nothing else left to expire: only this test's lots
        pass
    merchant = await make_merchant()
    numbers = [await enroll(merchant, random_phone()) for _ in range(6)]
    for number in numbers:
        await merchant.api(
            EARN,
            i={
                "memberNumber": number,
                "amount": "10",
                "orderRef": unique("o"),
                "idempotencyKey": unique("k"),
            },
        )
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = now() - interval '1 second' WHERE member_id IN"
        " (SELECT id FROM members WHERE member_number = ANY(:n))",
        n=numbers,
    )

    # Another run holds the first two members' wallets (as a concurrent `alliance expire` would).
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.connect() as holder:
            await holder.execute(
                text(
                    "SELECT a.id FROM accounts a JOIN members m ON m.id = a.member_id WHERE m.member_number = ANY(:n)"
                    " AND a.kind = 'member_wallet' ORDER BY a.member_id LIMIT 2 FOR UPDATE"
                ),
                {"n": numbers},
            )
            chunk = await expire_chunk(2)
            assert (chunk.members, chunk.points) == (2, 20), "the next two wallets, not a premature 'done'"
            await holder.rollback()
    finally:
        await engine.dispose()
    while (await expire_chunk(2)).members:
        pass
    async with db.transaction(OPERATOR) as session:
        left = (
            await run_sql(
                session,
                text(
                    "SELECT count(*) FROM lots l JOIN members m ON m.id = l.member_id"
                    " WHERE m.member_number = ANY(:n) AND l.remaining > 0"
                ),
                {"n": numbers},
            )
        ).scalar_one()
        assert await verify_ledger(session) == []
    assert left == 0
