"""Qualification: immediate upgrades, the nightly evaluation, the grace period, the audit trail."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.tenants.models import TenantCategory
from tests.conftest import Api, random_phone, unique
from tests.ledger.test_worked_example import enroll
from tests.test_cli import run_cli_async
from tests.tiers import (
    MEMBER_ID,
    REVERSE,
    TIERS,
    backdate_earnings,
    changes,
    earn,
    earn_until,
    evaluate,
    new_top_tiers,
    owner,
    progress,
    rolling_points,
    set_below_since,
    tier_row,
    upgrade_if_qualified,
)

LONG_AGO = datetime.now(UTC) - timedelta(days=400)  # outside the rolling 12 months
BATCH = """mutation($i: EarnPointsBatchInput!) { earnPointsBatch(input: $i) {
  results { index userErrors { code } } userErrors { code } } }"""


async def base_code(operator: Api) -> str:
    return (await operator(TIERS))["tiers"][0]["code"]


async def test_upgrade_is_immediate_on_qualification(make_merchant, operator: Api, settings) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant(TenantCategory.SUPERMARKET)
    number = await enroll(merchant, random_phone())

    points = await earn_until(merchant, operator, number, top["qualifyingPoints"] - 10)
    assert points < top["qualifyingPoints"]
    await upgrade_if_qualified(settings, number)
    before = await progress(operator, number)
    assert before["tier"]["rank"] < top["rank"], "not yet qualified for the new top tier"
    assert before["tierProgress"]["nextCode"] is not None
    assert before["tierProgress"]["pointsToNext"] > 0

    # The purchase that crosses the threshold: the ledger's earn path calls the upgrade.
    await earn(merchant, number, 10)
    await upgrade_if_qualified(settings, number)
    after = await progress(operator, number)
    rolling = after["tierProgress"]["rollingPoints"]
    assert rolling >= top["qualifyingPoints"]
    assert after["tier"]["code"] == top["code"]
    assert after["tier"]["rank"] == top["rank"]
    assert after["tierProgress"]["currentCode"] == top["code"]
    assert after["tierProgress"]["nextCode"] is None and after["tierProgress"]["pointsToNext"] is None
    assert after["tierProgress"]["pointsToKeep"] == 0 and after["tierProgress"]["belowSince"] is None

    # The audit trail: the last change is the qualification into the top tier, with its points.
    (latest, *_) = await changes(operator, number)
    assert (latest["toTier"], latest["reason"], latest["memberNumber"]) == (top["code"], "QUALIFIED", number)
    assert latest["rollingPoints"] == rolling
    # Calling it again (a second earn, a retry) changes nothing.
    audit = await changes(operator, number)
    assert await upgrade_if_qualified(settings, number) is None
    assert await changes(operator, number) == audit


async def test_a_jump_goes_straight_to_the_highest_tier_reached(
    make_merchant, operator: Api, settings
) -> None:
    lower, upper = await new_top_tiers(operator, 1000, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, upper["qualifyingPoints"])
    # (None when the ledger's earn path has already made the move.)
    assert await upgrade_if_qualified(settings, number) in {upper["code"], None}
    assert (await progress(operator, number))["tier"]["code"] == upper["code"]
    (change,) = await changes(operator, number)
    assert (change["fromTier"], change["toTier"]) == (await base_code(operator), upper["code"])
    assert lower["code"] not in {c["toTier"] for c in await changes(operator, number)}


async def test_spending_keeps_points_refunds_and_age_take_them_away(
    make_merchant, operator: Api, settings
) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    shop = await make_merchant()
    hotel = await make_merchant(TenantCategory.HOTEL)
    phone = random_phone()
    number = await enroll(shop, phone)
    await enroll(hotel, phone)
    first = await earn(shop, number, 100)
    second = await earn(shop, number, 200)
    assert await rolling_points(operator, number) == first["points"] + second["points"]

    redeemed = await hotel.api(
        """mutation($i: RedeemPointsInput!) { redeemPoints(input: $i) { userErrors { code } } }""",
        i={"memberNumber": number, "points": 50, "orderRef": unique("r"), "idempotencyKey": unique("k")},
    )
    assert redeemed["redeemPoints"]["userErrors"] == []
    assert await rolling_points(operator, number) == first["points"] + second["points"], "spending keeps them"

    reversed_ = await shop.api(
        REVERSE, i={"transactionId": second["id"], "reason": "refund", "idempotencyKey": unique("k")}
    )
    assert reversed_["reverseTransaction"]["userErrors"] == []
    assert await rolling_points(operator, number) == first["points"], "a refunded purchase does not qualify"
    await backdate_earnings(settings, number, LONG_AGO)
    assert await rolling_points(operator, number) == 0, "older than 12 months"
    assert top["code"] != (await progress(operator, number))["tier"]["code"]


async def test_no_downgrade_before_the_grace_period_then_down(
    make_merchant, operator: Api, settings, db
) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, top["qualifyingPoints"])
    assert await upgrade_if_qualified(settings, number) in {top["code"], None}
    assert (await progress(operator, number))["tier"]["code"] == top["code"]

    # A year later the points have rolled out of the window: below the threshold.
    await backdate_earnings(settings, number, LONG_AGO)
    assert await upgrade_if_qualified(settings, number) is None, "the earn path never moves down"
    assert (await progress(operator, number))["tier"]["code"] == top["code"]

    first = await evaluate(db)
    assert first.grace_started >= 1
    row = await tier_row(settings, number)
    assert row.tier_code == top["code"] and row.below_since is not None, "grace period started, tier kept"
    shown = (await progress(operator, number))["tierProgress"]
    assert shown["belowSince"] is not None and shown["pointsToKeep"] == top["qualifyingPoints"]
    grace_ends = datetime.fromisoformat(shown["graceEndsAt"])
    assert timedelta(days=29) < grace_ends - datetime.now(UTC) <= timedelta(days=30)

    # Evaluating again the same night changes nothing: same tier, same grace start, no audit row.
    audit = await changes(operator, number)
    second = await evaluate(db)
    assert (second.upgraded, second.downgraded, second.grace_started, second.grace_ended) == (0, 0, 0, 0)
    assert await tier_row(settings, number) == row
    assert await changes(operator, number) == audit

    # 29 days into the grace period: still kept.
    await set_below_since(settings, number, datetime.now(UTC) - timedelta(days=29))
    await evaluate(db)
    assert (await progress(operator, number))["tier"]["code"] == top["code"]

    # 31 days: down to the tier the points reach (none: the base tier), audited.
    await set_below_since(settings, number, datetime.now(UTC) - timedelta(days=31))
    third = await evaluate(db)
    assert third.downgraded >= 1
    base = await base_code(operator)
    assert (await progress(operator, number))["tier"]["code"] == base
    row = await tier_row(settings, number)
    assert row.below_since is None
    latest = (await changes(operator, number))[0]
    assert (latest["fromTier"], latest["toTier"], latest["reason"], latest["rollingPoints"]) == (
        top["code"],
        base,
        "GRACE_EXPIRED",
        0,
    )

    # And again: idempotent.
    audit = await changes(operator, number)
    fourth = await evaluate(db)
    assert (fourth.upgraded, fourth.downgraded, fourth.grace_started, fourth.grace_ended) == (0, 0, 0, 0)
    assert await changes(operator, number) == audit


async def test_downgrade_lands_on_the_tier_still_reached(make_merchant, operator: Api, settings, db) -> None:
    lower, upper = await new_top_tiers(operator, 1000, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    kept = await earn(merchant, number, lower["qualifyingPoints"])
    refunded = await earn(merchant, number, upper["qualifyingPoints"] - lower["qualifyingPoints"])
    assert await upgrade_if_qualified(settings, number) in {upper["code"], None}
    assert (await progress(operator, number))["tier"]["code"] == upper["code"]

    data = await merchant.api(
        REVERSE, i={"transactionId": refunded["id"], "reason": "returned", "idempotencyKey": unique("k")}
    )
    assert data["reverseTransaction"]["userErrors"] == []
    assert await rolling_points(operator, number) == kept["points"]
    await evaluate(db)
    await set_below_since(settings, number, datetime.now(UTC) - timedelta(days=31))
    await evaluate(db)
    member = await progress(operator, number)
    assert member["tier"]["code"] == lower["code"]
    assert member["tierProgress"]["nextCode"] == upper["code"]
    assert member["tierProgress"]["pointsToNext"] == upper["qualifyingPoints"] - kept["points"]
    latest = (await changes(operator, number))[0]
    assert (latest["fromTier"], latest["toTier"], latest["reason"], latest["rollingPoints"]) == (
        upper["code"],
        lower["code"],
        "GRACE_EXPIRED",
        kept["points"],
    )


async def test_back_above_ends_the_grace_period(make_merchant, operator: Api, settings, db) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, top["qualifyingPoints"])
    await upgrade_if_qualified(settings, number)
    await backdate_earnings(settings, number, LONG_AGO)
    await evaluate(db)
    assert (await tier_row(settings, number)).below_since is not None

    # Qualifying again: the earn path ends the grace period at once...
    await earn_until(merchant, operator, number, top["qualifyingPoints"])
    assert await upgrade_if_qualified(settings, number) is None, "same tier: no change recorded"
    row = await tier_row(settings, number)
    assert (row.tier_code, row.below_since) == (top["code"], None)

    # ...and so does the nightly evaluation when it finds the member back above.
    await set_below_since(settings, number, datetime.now(UTC) - timedelta(days=40))
    result = await evaluate(db)
    assert result.grace_ended >= 1
    row = await tier_row(settings, number)
    assert (row.tier_code, row.below_since) == (top["code"], None)
    assert [c["reason"] for c in await changes(operator, number)] == ["QUALIFIED"]


async def test_nightly_evaluation_upgrades_too(make_merchant, operator: Api, settings, db) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, top["qualifyingPoints"])
    # Whether or not the earn path already moved the member up, after the evaluation they are there,
    # with exactly one audit row for it.
    await evaluate(db)
    assert (await progress(operator, number))["tier"]["code"] == top["code"]
    moves = [c for c in await changes(operator, number) if c["toTier"] == top["code"]]
    assert [c["reason"] for c in moves] == ["QUALIFIED"]


async def test_concurrent_evaluations_and_upgrades_agree(make_merchant, operator: Api, settings, db) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    numbers = [await enroll(merchant, random_phone()) for _ in range(4)]
    for number in numbers:
        await earn(merchant, number, top["qualifyingPoints"])
    await asyncio.gather(
        evaluate(db), evaluate(db), *(upgrade_if_qualified(settings, number) for number in numbers)
    )
    for number in numbers:
        assert (await progress(operator, number))["tier"]["code"] == top["code"]
        moves = [c for c in await changes(operator, number) if c["toTier"] == top["code"]]
        assert len(moves) == 1, moves


async def test_the_cli_runs_the_evaluation(make_merchant, operator: Api, settings) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, top["qualifyingPoints"])
    result = await run_cli_async(settings, "tiers", "evaluate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("tiers evaluated for ")
    assert (await progress(operator, number))["tier"]["code"] == top["code"]
    again = await run_cli_async(settings, "tiers", "evaluate")
    assert again.returncode == 0, again.stderr
    assert ": 0 up, 0 down (grace expired), 0 entered and 0 left a grace period" in again.stdout


async def test_operator_assignment_is_audited_and_the_rules_take_over(
    make_merchant, operator: Api, settings, db
) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    assign = """mutation($i: AssignMemberTierInput!) { assignMemberTier(input: $i) {
      tier { code rank } previousTierCode userErrors { field code } } }"""
    data = await operator(assign, i={"memberNumber": number, "tierCode": top["code"]})
    assert data["assignMemberTier"] == {
        "tier": {"code": top["code"], "rank": top["rank"]},
        "previousTierCode": await base_code(operator),
        "userErrors": [],
    }
    (change,) = await changes(operator, number)
    assert (change["toTier"], change["reason"]) == (top["code"], "OPERATOR")
    again = await operator(assign, i={"memberNumber": number, "tierCode": top["code"]})
    assert again["assignMemberTier"]["previousTierCode"] is None
    assert len(await changes(operator, number)) == 1

    unknown = await operator(assign, i={"memberNumber": number, "tierCode": "NO_SUCH_TIER"})
    assert [(e["field"], e["code"]) for e in unknown["assignMemberTier"]["userErrors"]] == [
        ("tierCode", "TIER_NOT_FOUND")
    ]
    nobody = await operator(assign, i={"memberNumber": "0000000000", "tierCode": top["code"]})
    assert [e["code"] for e in nobody["assignMemberTier"]["userErrors"]] == ["MEMBER_NOT_FOUND"]
    errors = await merchant.api.errors(assign, i={"memberNumber": number, "tierCode": top["code"]})
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]

    # Not qualified: the nightly evaluation starts the grace period like for anyone else.
    await evaluate(db)
    assert (await tier_row(settings, number)).below_since is not None


async def test_the_audit_trail_is_append_only(make_merchant, operator: Api, settings) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    await earn(merchant, number, top["qualifyingPoints"])
    await upgrade_if_qualified(settings, number)
    for statement in (
        f"UPDATE tier_changes SET reason = 'operator' WHERE member_id = {MEMBER_ID}",
        f"DELETE FROM tier_changes WHERE member_id = {MEMBER_ID}",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with owner(settings) as conn:
                await conn.execute(text(statement), {"n": number})
    assert len(await changes(operator, number)) == 1


async def test_a_batch_upgrades_the_members_it_qualifies_and_only_them(make_merchant, operator: Api) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    merchant = await make_merchant(TenantCategory.SUPERMARKET)
    near, far = await enroll(merchant, random_phone()), await enroll(merchant, random_phone())
    assert await earn_until(merchant, operator, near, top["qualifyingPoints"] - 10) < top["qualifyingPoints"]
    items = [{"memberNumber": member, "amount": "10", "orderRef": unique("o")} for member in (far, near, far)]
    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": unique("k")})
    assert [r["userErrors"] for r in data["earnPointsBatch"]["results"]] == [[], [], []]
    assert (await progress(operator, near))["tier"]["code"] == top["code"]
    assert (await progress(operator, far))["tier"]["rank"] < top["rank"]
    (latest, *_) = await changes(operator, near)
    assert (latest["toTier"], latest["reason"]) == (top["code"], "QUALIFIED")


async def test_a_batch_moves_each_member_as_a_single_earn_would(
    make_merchant, operator: Api, settings, db
) -> None:
    """One batch, five kinds of member: the moves are decided together but member by member."""
    middle, top = await new_top_tiers(operator, 1000, 1000)
    first = (await operator(TIERS))["tiers"][1]  # the lowest tier above the base
    merchant = await make_merchant(TenantCategory.SUPERMARKET)
    fresh, climber, jumper, recovering, refunded = [await enroll(merchant, random_phone()) for _ in range(5)]
    # fresh: base tier, no tier row yet, 10 points short of the first tier above it.
    await earn_until(merchant, operator, fresh, first["qualifyingPoints"] - 10)
    assert await tier_row(settings, fresh) is None
    # climber: already moved up to the middle tier, 10 points short of the top one.
    await earn_until(merchant, operator, climber, top["qualifyingPoints"] - 10)
    assert (await progress(operator, climber))["tier"]["code"] == middle["code"]
    # jumper: below the middle tier; its batch item reaches the top tier at once.
    await earn_until(merchant, operator, jumper, middle["qualifyingPoints"] - 10)
    # recovering: top tier, in its grace period, 10 points short of keeping it.
    await earn_until(merchant, operator, recovering, top["qualifyingPoints"])
    await backdate_earnings(settings, recovering, LONG_AGO)
    await evaluate(db)
    await earn_until(merchant, operator, recovering, top["qualifyingPoints"] - 10)
    assert (await tier_row(settings, recovering)).below_since is not None
    # refunded: its credits in the window reach the middle tier, but one of them was refunded.
    await earn_until(merchant, operator, refunded, middle["qualifyingPoints"] - 100)
    refund = await earn(merchant, refunded, 50)
    reversed_ = await merchant.api(
        REVERSE, i={"transactionId": refund["id"], "reason": "refund", "idempotencyKey": unique("k")}
    )
    assert reversed_["reverseTransaction"]["userErrors"] == []
    tiers_before = {n: (await progress(operator, n))["tier"]["code"] for n in (fresh, jumper, refunded)}
    changes_before = {n: await changes(operator, n) for n in (recovering, refunded)}

    amounts = {fresh: 10, climber: 10, jumper: top["qualifyingPoints"], recovering: 10, refunded: 60}
    items = [{"memberNumber": n, "amount": str(a), "orderRef": unique("o")} for n, a in amounts.items()]
    data = await merchant.api(BATCH, i={"items": items, "idempotencyKey": unique("k")})
    assert [r["userErrors"] for r in data["earnPointsBatch"]["results"]] == [[]] * 5

    for number, (from_tier, to_tier) in {
        fresh: (tiers_before[fresh], first["code"]),
        climber: (middle["code"], top["code"]),
        jumper: (tiers_before[jumper], top["code"]),
    }.items():
        member = await progress(operator, number)
        assert member["tier"]["code"] == to_tier, number
        (latest, *_) = await changes(operator, number)
        assert (latest["fromTier"], latest["toTier"], latest["reason"]) == (from_tier, to_tier, "QUALIFIED")
        assert latest["rollingPoints"] == member["tierProgress"]["rollingPoints"]
    assert tiers_before[fresh] == await base_code(operator)
    assert middle["code"] not in {c["toTier"] for c in await changes(operator, jumper)}
    row = await tier_row(settings, recovering)
    assert (row.tier_code, row.below_since) == (top["code"], None), "back at the threshold: grace ends"
    assert (await progress(operator, refunded))["tier"]["code"] == tiers_before[refunded], "still below"
    assert {n: await changes(operator, n) for n in (recovering, refunded)} == changes_before
