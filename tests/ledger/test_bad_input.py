"""Every bad ledger input is refused with a stable userErrors code and writes nothing to the books."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

AWARD = """mutation($i: AwardPointsInput!) { awardPoints(input: $i) {
  transaction { id kind points } balance { available held } userErrors { field code message } } }"""
HOLD = """mutation($i: HoldPointsInput!) { holdPoints(input: $i) {
  hold { id points status } balance { available held } userErrors { field code message } } }"""
CAPTURE = """mutation($i: CaptureHoldInput!) { captureHold(input: $i) {
  hold { id status } transaction { id kind points } balance { available held } userErrors { field code message } } }"""
RELEASE = """mutation($i: ReleaseHoldInput!) { releaseHold(input: $i) {
  hold { id status } balance { available held } userErrors { field code message } } }"""
REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id kind points shortfall } balance { available held } userErrors { field code message } } }"""
CREATE_STORE = (
    "mutation($i: CreateStoreInput!) { createStore(input: $i) { store { code } userErrors { code } } }"
)


async def books_of(db, number: str) -> dict[str, Any]:
    """Everything the ledger holds about one member, read as the operator."""
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("""
                SELECT ledger_member_balance(m.id, 'POINTS', NULL) AS balance,
                  (SELECT count(*) FROM ledger_transactions t WHERE t.member_id = m.id) AS transactions,
                  (SELECT count(*) FROM ledger_entries e WHERE e.member_id = m.id) AS entries,
                  (SELECT coalesce(sum(l.remaining), 0) FROM lots l WHERE l.member_id = m.id) AS remaining,
                  (SELECT count(*) FROM holds h WHERE h.member_id = m.id) AS holds,
                  (SELECT count(*) FROM holds h WHERE h.member_id = m.id AND h.status = 'active') AS active_holds
                FROM members m WHERE m.member_number = :n"""),
                {"n": number},
            )
        ).one()
    return dict(row._mapping)


async def all_transactions(db) -> int:
    async with db.transaction(OPERATOR) as session:
        return (await run_sql(session, text("SELECT count(*) FROM ledger_transactions"))).scalar_one()


def only_error(payload: dict[str, Any]) -> dict[str, Any]:
    for field in ("transaction", "balance", "hold"):
        assert payload.get(field) is None, payload
    assert len(payload["userErrors"]) == 1, payload
    return payload["userErrors"][0]


@dataclass
class World:
    a: Any  # the merchant the member is enrolled at, with 100 points earned there
    b: Any  # another merchant with its own customer
    number: str
    other_number: str  # enrolled only at b
    earn_id: str  # the global id of the 100-point earn at a


@pytest.fixture
async def world(make_merchant) -> World:
    a = await make_merchant(TenantCategory.SUPERMARKET)
    b = await make_merchant(TenantCategory.HOTEL)
    number = await enroll(a, random_phone())
    other = await enroll(b, random_phone())
    earned = await a.api(
        EARN, i={"memberNumber": number, "amount": "100", "orderRef": "seed", "idempotencyKey": unique("k")}
    )
    assert earned["earnPoints"]["userErrors"] == []
    assert earned["earnPoints"]["balance"]["available"] == 100
    return World(a, b, number, other, earned["earnPoints"]["transaction"]["id"])


async def refused(
    db, world: World, call, field: str, code: str, numbers: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run ``call`` (returns the mutation payload); it must be refused with ``code`` and change nothing."""
    watched = (world.number, world.other_number, *numbers)
    before = [await books_of(db, n) for n in watched]
    total = await all_transactions(db)
    error = only_error(await call())
    assert error["code"] == code, error
    assert error["field"] == field, error
    assert error["message"]
    assert [await books_of(db, n) for n in watched] == before
    assert await all_transactions(db) == total
    return error


def earn_input(number: str, **overrides: Any) -> dict[str, Any]:
    return {
        "memberNumber": number,
        "amount": "10",
        "orderRef": unique("o"),
        "idempotencyKey": unique("k"),
    } | overrides


async def test_unknown_member(db, world):
    async def call():
        return (await world.a.api(EARN, i=earn_input("M0000000000")))["earnPoints"]

    await refused(db, world, call, "memberNumber", "MEMBER_NOT_FOUND")

    async def redeem():
        data = await world.a.api(
            REDEEM, i={"memberNumber": "nobody", "points": 1, "orderRef": "r", "idempotencyKey": unique("k")}
        )
        return data["redeemPoints"]

    await refused(db, world, redeem, "memberNumber", "MEMBER_NOT_FOUND")


async def test_member_of_another_merchant_is_not_found(db, world):
    """A merchant cannot learn that a member it has not enrolled exists: same code as an unknown one."""
    for mutation, name, variables in [
        (EARN, "earnPoints", earn_input(world.other_number)),
        (
            AWARD,
            "awardPoints",
            {
                "memberNumber": world.other_number,
                "points": 5,
                "reason": "survey",
                "idempotencyKey": unique("k"),
            },
        ),
        (
            REDEEM,
            "redeemPoints",
            {"memberNumber": world.other_number, "points": 1, "orderRef": "r", "idempotencyKey": unique("k")},
        ),
        (
            HOLD,
            "holdPoints",
            {"memberNumber": world.other_number, "points": 1, "orderRef": "h", "idempotencyKey": unique("k")},
        ),
    ]:

        async def call(mutation=mutation, name=name, variables=variables):
            return (await world.a.api(mutation, i=variables))[name]

        error = await refused(db, world, call, "memberNumber", "MEMBER_NOT_FOUND")
        assert error["message"] == "no such member is enrolled at this merchant"


@pytest.mark.parametrize("points", [0, -1, -100])
async def test_non_positive_points(db, world, points):
    async def award():
        data = await world.a.api(
            AWARD,
            i={
                "memberNumber": world.number,
                "points": points,
                "reason": "survey",
                "idempotencyKey": unique("k"),
            },
        )
        return data["awardPoints"]

    async def redeem():
        data = await world.a.api(
            REDEEM,
            i={
                "memberNumber": world.number,
                "points": points,
                "orderRef": "r",
                "idempotencyKey": unique("k"),
            },
        )
        return data["redeemPoints"]

    async def hold():
        data = await world.a.api(
            HOLD,
            i={
                "memberNumber": world.number,
                "points": points,
                "orderRef": "h",
                "idempotencyKey": unique("k"),
            },
        )
        return data["holdPoints"]

    async def reverse():
        data = await world.a.api(
            REVERSE,
            i={
                "transactionId": world.earn_id,
                "points": points,
                "reason": "refund",
                "idempotencyKey": unique("k"),
            },
        )
        return data["reverseTransaction"]

    for call in (award, redeem, hold, reverse):
        await refused(db, world, call, "points", "INVALID_POINTS")


@pytest.mark.parametrize("amount", ["10.001", "0.125", "99.999"])
async def test_amount_with_more_than_two_decimals(db, world, amount):
    async def call():
        return (await world.a.api(EARN, i=earn_input(world.number, amount=amount)))["earnPoints"]

    error = await refused(db, world, call, "amount", "INVALID_AMOUNT")
    assert "decimal" in error["message"]


@pytest.mark.parametrize("amount", ["0", "-5", "0.00"])
async def test_non_positive_amount(db, world, amount):
    async def call():
        return (await world.a.api(EARN, i=earn_input(world.number, amount=amount)))["earnPoints"]

    await refused(db, world, call, "amount", "INVALID_AMOUNT")


@pytest.mark.parametrize("asset", ["NOPE", "nope", "P", "POINTS!", "", "X" * 40])
async def test_unknown_asset(db, world, asset):
    """Well-formed but unknown (checked against the books) and malformed (checked before) alike."""

    async def earn():
        return (await world.a.api(EARN, i=earn_input(world.number, asset=asset)))["earnPoints"]

    async def award():
        data = await world.a.api(
            AWARD,
            i={
                "memberNumber": world.number,
                "points": 5,
                "reason": "survey",
                "asset": asset,
                "idempotencyKey": unique("k"),
            },
        )
        return data["awardPoints"]

    async def redeem():
        data = await world.a.api(
            REDEEM,
            i={
                "memberNumber": world.number,
                "points": 1,
                "orderRef": "r",
                "asset": asset,
                "idempotencyKey": unique("k"),
            },
        )
        return data["redeemPoints"]

    async def hold():
        data = await world.a.api(
            HOLD,
            i={
                "memberNumber": world.number,
                "points": 1,
                "orderRef": "h",
                "asset": asset,
                "idempotencyKey": unique("k"),
            },
        )
        return data["holdPoints"]

    for call in (earn, award, redeem, hold):
        await refused(db, world, call, "asset", "UNKNOWN_ASSET")


async def test_unknown_store(db, world):
    created = await world.a.api(CREATE_STORE, i={"code": "S1", "name": "Main street"})
    assert created["createStore"]["userErrors"] == []
    other = await world.b.api(CREATE_STORE, i={"code": "B-ONLY", "name": "Hotel lobby"})
    assert other["createStore"]["userErrors"] == []

    # A store of the merchant itself is accepted (so the refusals below are about the store).
    ok = await world.a.api(EARN, i=earn_input(world.number, storeCode="S1"))
    assert ok["earnPoints"]["userErrors"] == []

    for store in ("NOPE", "B-ONLY"):  # unknown, and another merchant's

        async def earn(store=store):
            return (await world.a.api(EARN, i=earn_input(world.number, storeCode=store)))["earnPoints"]

        async def redeem(store=store):
            data = await world.a.api(
                REDEEM,
                i={
                    "memberNumber": world.number,
                    "points": 1,
                    "orderRef": "r",
                    "storeCode": store,
                    "idempotencyKey": unique("k"),
                },
            )
            return data["redeemPoints"]

        async def hold(store=store):
            data = await world.a.api(
                HOLD,
                i={
                    "memberNumber": world.number,
                    "points": 1,
                    "orderRef": "h",
                    "storeCode": store,
                    "idempotencyKey": unique("k"),
                },
            )
            return data["holdPoints"]

        for call in (earn, redeem, hold):
            await refused(db, world, call, "storeCode", "UNKNOWN_STORE")


async def test_reversing_beyond_the_original(db, world):
    first = await world.a.api(
        REVERSE,
        i={"transactionId": world.earn_id, "points": 60, "reason": "refund", "idempotencyKey": unique("k")},
    )
    assert first["reverseTransaction"]["userErrors"] == []
    assert first["reverseTransaction"]["transaction"]["points"] == 60

    async def again_60():
        data = await world.a.api(
            REVERSE,
            i={
                "transactionId": world.earn_id,
                "points": 60,
                "reason": "refund",
                "idempotencyKey": unique("k"),
            },
        )
        return data["reverseTransaction"]

    error = await refused(db, world, again_60, "points", "REVERSAL_EXCEEDS_ORIGINAL")
    assert "60 of 100" in error["message"]

    rest = await world.a.api(
        REVERSE, i={"transactionId": world.earn_id, "reason": "refund", "idempotencyKey": unique("k")}
    )
    assert rest["reverseTransaction"]["transaction"]["points"] == 40
    assert rest["reverseTransaction"]["balance"]["available"] == 0

    async def again_all():
        data = await world.a.api(
            REVERSE, i={"transactionId": world.earn_id, "reason": "refund", "idempotencyKey": unique("k")}
        )
        return data["reverseTransaction"]

    async def again_one():
        data = await world.a.api(
            REVERSE,
            i={
                "transactionId": world.earn_id,
                "points": 1,
                "reason": "refund",
                "idempotencyKey": unique("k"),
            },
        )
        return data["reverseTransaction"]

    await refused(db, world, again_all, "points", "REVERSAL_EXCEEDS_ORIGINAL")
    await refused(db, world, again_one, "points", "REVERSAL_EXCEEDS_ORIGINAL")


async def test_capturing_a_released_hold(db, world):
    held = await world.a.api(
        HOLD, i={"memberNumber": world.number, "points": 30, "orderRef": "h", "idempotencyKey": unique("k")}
    )
    hold_id = held["holdPoints"]["hold"]["id"]
    released = await world.a.api(RELEASE, i={"holdId": hold_id, "idempotencyKey": unique("k")})
    assert released["releaseHold"]["hold"]["status"] == "RELEASED"
    assert released["releaseHold"]["balance"] == {"available": 100, "held": 0}

    async def capture():
        return (await world.a.api(CAPTURE, i={"holdId": hold_id, "idempotencyKey": unique("k")}))[
            "captureHold"
        ]

    async def capture_part():
        return (
            await world.a.api(CAPTURE, i={"holdId": hold_id, "points": 10, "idempotencyKey": unique("k")})
        )["captureHold"]

    async def release():
        return (await world.a.api(RELEASE, i={"holdId": hold_id, "idempotencyKey": unique("k")}))[
            "releaseHold"
        ]

    for call in (capture, capture_part, release):
        error = await refused(db, world, call, "holdId", "HOLD_NOT_ACTIVE")
        assert "released" in error["message"]


async def test_reusing_an_idempotency_key_with_different_input(db, world):
    key = unique("k")
    first = await world.a.api(
        REDEEM, i={"memberNumber": world.number, "points": 10, "orderRef": "r1", "idempotencyKey": key}
    )
    assert first["redeemPoints"]["userErrors"] == []

    variants = [
        (
            REDEEM,
            "redeemPoints",
            {"memberNumber": world.number, "points": 11, "orderRef": "r1", "idempotencyKey": key},
        ),
        (
            REDEEM,
            "redeemPoints",
            {"memberNumber": world.number, "points": 10, "orderRef": "r2", "idempotencyKey": key},
        ),
        # Same key for another operation is a different request too.
        (
            HOLD,
            "holdPoints",
            {"memberNumber": world.number, "points": 10, "orderRef": "r1", "idempotencyKey": key},
        ),
        (EARN, "earnPoints", earn_input(world.number, idempotencyKey=key)),
    ]
    for mutation, name, variables in variants:

        async def call(mutation=mutation, name=name, variables=variables):
            return (await world.a.api(mutation, i=variables))[name]

        await refused(db, world, call, "idempotencyKey", "IDEMPOTENCY_KEY_REUSED")


async def test_redeem_more_than_available(db, world):
    async def redeem():
        data = await world.a.api(
            REDEEM,
            i={"memberNumber": world.number, "points": 101, "orderRef": "r", "idempotencyKey": unique("k")},
        )
        return data["redeemPoints"]

    async def hold():
        data = await world.a.api(
            HOLD,
            i={"memberNumber": world.number, "points": 101, "orderRef": "h", "idempotencyKey": unique("k")},
        )
        return data["holdPoints"]

    for call in (redeem, hold):
        error = await refused(db, world, call, "points", "INSUFFICIENT_POINTS")
        assert error["message"] == "100 points available, 101 requested"

    # Held points are not available either.
    held = await world.a.api(
        HOLD, i={"memberNumber": world.number, "points": 70, "orderRef": "h", "idempotencyKey": unique("k")}
    )
    assert held["holdPoints"]["balance"] == {"available": 30, "held": 70}

    async def redeem_31():
        data = await world.a.api(
            REDEEM,
            i={"memberNumber": world.number, "points": 31, "orderRef": "r", "idempotencyKey": unique("k")},
        )
        return data["redeemPoints"]

    await refused(db, world, redeem_31, "points", "INSUFFICIENT_POINTS")


async def test_reversing_another_merchants_transaction(db, world):
    async def call():
        data = await world.b.api(
            REVERSE, i={"transactionId": world.earn_id, "reason": "refund", "idempotencyKey": unique("k")}
        )
        return data["reverseTransaction"]

    await refused(db, world, call, "transactionId", "TRANSACTION_NOT_FOUND")

    # The same for a transaction that does not exist at all.
    from alliance.api.ids import to_global_id

    async def missing():
        data = await world.a.api(
            REVERSE,
            i={
                "transactionId": to_global_id("LedgerTransaction", 2**53),
                "reason": "refund",
                "idempotencyKey": unique("k"),
            },
        )
        return data["reverseTransaction"]

    await refused(db, world, missing, "transactionId", "TRANSACTION_NOT_FOUND")


async def test_capturing_another_merchants_hold(db, world):
    held = await world.a.api(
        HOLD, i={"memberNumber": world.number, "points": 30, "orderRef": "h", "idempotencyKey": unique("k")}
    )
    hold_id = held["holdPoints"]["hold"]["id"]

    async def capture():
        return (await world.b.api(CAPTURE, i={"holdId": hold_id, "idempotencyKey": unique("k")}))[
            "captureHold"
        ]

    async def release():
        return (await world.b.api(RELEASE, i={"holdId": hold_id, "idempotencyKey": unique("k")}))[
            "releaseHold"
        ]

    for call in (capture, release):
        await refused(db, world, call, "holdId", "HOLD_NOT_FOUND")


async def test_duplicate_order_at_the_same_merchant(db, world):
    async def call():
        return (await world.a.api(EARN, i=earn_input(world.number, orderRef="seed")))["earnPoints"]

    error = await refused(db, world, call, "orderRef", "DUPLICATE_ORDER")
    assert error["message"] == "points were already earned for this order"

    # The same order reference at another merchant is another order.
    await world.b.api(
        "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { userErrors { code } } }",
        i={"phone": await phone_of(db, world.number), "externalRef": unique("c")},
    )
    elsewhere = await world.b.api(EARN, i=earn_input(world.number, orderRef="seed"))
    assert elsewhere["earnPoints"]["userErrors"] == []


async def phone_of(db, number: str) -> str:
    async with db.transaction(OPERATOR) as session:
        return (
            await run_sql(session, text("SELECT phone FROM members WHERE member_number = :n"), {"n": number})
        ).scalar_one()


@pytest.mark.parametrize(
    "effective_at",
    [
        lambda: (datetime.now(UTC) + timedelta(minutes=5)).isoformat(),
        lambda: (datetime.now(UTC) + timedelta(days=400)).isoformat(),
        lambda: (datetime.now(UTC) - timedelta(days=8)).isoformat(),  # too far back
        lambda: datetime.now().replace(tzinfo=None).isoformat(),  # no offset
    ],
    ids=["minutes-ahead", "next-year", "backdated-8-days", "naive"],
)
async def test_invalid_effective_at(db, world, effective_at):
    async def call():
        return (await world.a.api(EARN, i=earn_input(world.number, effectiveAt=effective_at())))["earnPoints"]

    await refused(db, world, call, "effectiveAt", "INVALID_EFFECTIVE_AT")


async def test_backdated_within_a_week_is_accepted(world):
    when = datetime.now(UTC) - timedelta(days=6)
    ok = await world.a.api(EARN, i=earn_input(world.number, effectiveAt=when.isoformat()))
    assert ok["earnPoints"]["userErrors"] == []
    assert datetime.fromisoformat(ok["earnPoints"]["transaction"]["effectiveAt"]) == when


async def test_merchant_cannot_force_a_reversal(db, world):
    async def call():
        data = await world.a.api(
            REVERSE,
            i={
                "transactionId": world.earn_id,
                "reason": "fraud",
                "force": True,
                "idempotencyKey": unique("k"),
            },
        )
        return data["reverseTransaction"]

    await refused(db, world, call, "force", "FORCE_REQUIRES_OPERATOR")


async def test_operator_cannot_earn(db, world, operator):
    for mutation, variables in [
        (EARN, earn_input(world.number)),
        (
            AWARD,
            {"memberNumber": world.number, "points": 5, "reason": "survey", "idempotencyKey": unique("k")},
        ),
        (REDEEM, {"memberNumber": world.number, "points": 1, "orderRef": "r", "idempotencyKey": unique("k")}),
        (HOLD, {"memberNumber": world.number, "points": 1, "orderRef": "h", "idempotencyKey": unique("k")}),
    ]:
        before = await books_of(db, world.number)
        total = await all_transactions(db)
        response = await operator.post(mutation, {"i": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["data"] is None
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
        assert await books_of(db, world.number) == before
        assert await all_transactions(db) == total


async def test_invalid_idempotency_key(db, world):
    for key in ("", "k" * 201):

        async def call(key=key):
            return (await world.a.api(EARN, i=earn_input(world.number, idempotencyKey=key)))["earnPoints"]

        await refused(db, world, call, "idempotencyKey", "INVALID_IDEMPOTENCY_KEY")
