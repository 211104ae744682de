"""redeemReward: one atomic call; fulfilment; cancellation restoring points and stock; refusals write nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from alliance.api.ids import to_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.tenants.models import TenantCategory
from tests.catalog import (
    CANCEL,
    FULFIL,
    REDEMPTIONS,
    REWARD,
    assert_books_balance,
    available,
    create_reward,
    earn,
    errors,
    funded_member,
    member_api,
    member_id,
    pk,
    redeem,
    snapshot,
)
from tests.conftest import unique
from tests.ledger.test_worked_example import enroll
from tests.settlement.test_expiry_and_periods import owner_sql


def iso(at: datetime) -> str:
    return at.isoformat()


async def test_redeem_fulfil_and_replay(make_merchant, operator, db):
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    number = await funded_member(shop, 12_000)
    service = await create_reward(shop, kind="SERVICE", name="Basic maintenance", points=5000, stock=3)

    key = unique("k")
    first = await redeem(shop.api, service["id"], number, key=key)
    assert first["userErrors"] == []
    assert first["transaction"]["kind"] == "REDEEM" and first["transaction"]["points"] == 5000
    assert first["balance"] == {"asset": "POINTS", "available": 7000, "held": 0}
    redemption = first["redemption"]
    assert redemption["status"] == "PENDING" and redemption["quantity"] == 1 and redemption["points"] == 5000
    assert redemption["memberNumber"] == number
    assert redemption["reward"]["name"] == "Basic maintenance" and redemption["reward"]["stock"] == 2
    assert redemption["transactionId"] == first["transaction"]["id"]

    # Same key, same request: the original answer and no second posting.
    again = await redeem(shop.api, service["id"], number, key=key)
    assert again == first
    assert await available(operator, number) == 7000
    # Same key, different request: refused.
    other = await redeem(shop.api, service["id"], number, quantity=2, key=key)
    assert errors(other) == ["IDEMPOTENCY_KEY_REUSED"]

    fulfilled = await shop.api(FULFIL, i={"redemptionId": redemption["id"]})
    assert fulfilled["fulfilRedemption"]["userErrors"] == []
    assert fulfilled["fulfilRedemption"]["redemption"]["status"] == "FULFILLED"
    assert fulfilled["fulfilRedemption"]["redemption"]["closedAt"] is not None
    twice = await shop.api(FULFIL, i={"redemptionId": redemption["id"]})
    assert errors(twice["fulfilRedemption"]) == ["REDEMPTION_NOT_PENDING"]
    cancel = await shop.api(CANCEL, i={"redemptionId": redemption["id"], "idempotencyKey": unique("k")})
    assert errors(cancel["cancelRedemption"]) == ["REDEMPTION_NOT_PENDING"]

    listed = await shop.api(REDEMPTIONS, f={"rewardId": service["id"]})
    assert [(e["node"]["id"], e["node"]["status"]) for e in listed["redemptions"]["edges"]] == [
        (redemption["id"], "FULFILLED")
    ]
    # Settlement sees an ordinary redemption at the reward's merchant, with provenance.
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("""SELECT t.kind, t.tenant_id, t.order_ref,
                          (SELECT -sum(mv.points) FROM lot_movements mv WHERE mv.transaction_id = t.id) AS consumed
                        FROM ledger_transactions t WHERE t.id = :t"""),
                {"t": pk(first["transaction"]["id"])},
            )
        ).one()
    assert (row.kind, row.tenant_id, row.consumed) == ("redeem", shop.tenant_id, 5000)
    assert row.order_ref == f"redemption-{pk(redemption['id'])}"
    await assert_books_balance(db)


async def test_quantity_multiplies_the_price_and_the_stock_taken(make_merchant, operator, db):
    mart = await make_merchant()
    number = await funded_member(mart, 1000)
    rice = await create_reward(mart, name="Rice 5kg", points=200, stock=10)
    result = await redeem(mart.api, rice["id"], number, quantity=3)
    assert result["userErrors"] == []
    assert result["redemption"]["points"] == 600 and result["redemption"]["unitPoints"] == 200
    assert result["redemption"]["reward"]["stock"] == 7
    assert await available(operator, number) == 400
    await assert_books_balance(db)


async def test_every_refusal_writes_nothing(make_merchant, operator, db):
    hotel = await make_merchant(TenantCategory.HOTEL)
    other = await make_merchant(TenantCategory.RETAIL)
    number = await funded_member(hotel, 3000)
    now = datetime.now(UTC)
    cases: list[tuple[str, dict, dict]] = []  # (code, reward fields, redeem overrides)

    upgrade = await create_reward(hotel, kind="UPGRADE", name="Suite upgrade", points=1000, stock=5)
    cases.append(("INVALID_QUANTITY", upgrade, {"quantity": 0}))
    cases.append(("INVALID_QUANTITY", upgrade, {"quantity": 101}))
    cases.append(("INSUFFICIENT_POINTS", upgrade, {"quantity": 4}))
    scarce = await create_reward(hotel, name="Last tea set", points=100, stock=1)
    cases.append(("OUT_OF_STOCK", scarce, {"quantity": 2}))
    later = await create_reward(
        hotel, name="Spring festival box", points=100, availableFrom=iso(now + timedelta(days=3))
    )
    cases.append(("OUTSIDE_WINDOW", later, {}))
    ended = await create_reward(
        hotel,
        name="Mid-autumn box",
        points=100,
        availableFrom=iso(now - timedelta(days=10)),
        availableUntil=iso(now - timedelta(days=1)),
    )
    cases.append(("OUTSIDE_WINDOW", ended, {}))
    gold = await create_reward(hotel, kind="UPGRADE", name="Late checkout", points=100, minTier="GOLD")
    cases.append(("TIER_TOO_LOW", gold, {}))
    limited = await create_reward(hotel, kind="SERVICE", name="Airport pickup", points=100, perMemberLimit=2)
    cases.append(("MEMBER_LIMIT_REACHED", limited, {"quantity": 3}))
    withdrawn = await create_reward(hotel, name="Old guide", points=100)
    data = await hotel.api(
        "mutation($i: WithdrawRewardInput!) { withdrawReward(input: $i) { userErrors { code } } }",
        i={"rewardId": withdrawn["id"], "idempotencyKey": unique("k")},
    )
    assert data["withdrawReward"]["userErrors"] == []
    cases.append(("REWARD_WITHDRAWN", withdrawn, {}))
    elsewhere = await create_reward(other, name="Not the hotel's", points=100)
    cases.append(("REWARD_NOT_FOUND", elsewhere, {}))  # a merchant redeems only its own rewards

    for code, reward, overrides in cases:
        before = await snapshot(db, number, reward["id"])
        result = await redeem(hotel.api, reward["id"], number, **overrides)
        assert errors(result) == [code], (code, result)
        assert result["redemption"] is None and result["transaction"] is None
        assert await snapshot(db, number, reward["id"]) == before, code
    assert await available(operator, number) == 3000

    # Limits count what was already redeemed: 2 fit, a third does not.
    assert (await redeem(hotel.api, limited["id"], number, quantity=2))["userErrors"] == []
    before = await snapshot(db, number, limited["id"])
    assert errors(await redeem(hotel.api, limited["id"], number)) == ["MEMBER_LIMIT_REACHED"]
    assert await snapshot(db, number, limited["id"]) == before
    # A GOLD member may take the late checkout.
    async with db.transaction(OPERATOR) as session:
        await run_sql(session, text("SELECT tier_assign(:m, 'GOLD')"), {"m": await member_id(db, number)})
    assert (await redeem(hotel.api, gold["id"], number))["userErrors"] == []
    # A member not enrolled at the merchant, and a reward id that does not exist.
    stranger = await funded_member(other, 500)
    before = await snapshot(db, stranger, upgrade["id"])
    assert errors(await redeem(hotel.api, upgrade["id"], stranger)) == ["MEMBER_NOT_FOUND"]
    assert await snapshot(db, stranger, upgrade["id"]) == before
    missing = to_global_id("Reward", 999_999_999)
    assert errors(await redeem(hotel.api, missing, number)) == ["REWARD_NOT_FOUND"]
    await assert_books_balance(db)


async def test_sale_price_applies_only_inside_its_window(make_merchant, operator, db):
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    number = await funded_member(shop, 20_000)
    now = datetime.now(UTC)
    week = {
        "salePoints": 5000,
        "saleStartsAt": iso(now + timedelta(days=7)),
        "saleEndsAt": iso(now + timedelta(days=14)),
    }
    clean = await create_reward(shop, kind="SERVICE", name="Air-conditioning clean", points=6000, **week)
    assert clean["onSale"] is False and clean["currentPoints"] == 6000
    before = await redeem(shop.api, clean["id"], number)
    assert before["redemption"]["points"] == 6000

    update = """mutation($i: UpdateRewardInput!) { updateReward(input: $i) {
      reward { currentPoints onSale salePoints } userErrors { code } } }"""
    moved = await shop.api(
        update,
        i={
            "rewardId": clean["id"],
            "saleStartsAt": iso(now - timedelta(days=1)),
            "saleEndsAt": iso(now + timedelta(days=6)),
        },
    )
    assert moved["updateReward"]["reward"] == {"currentPoints": 5000, "onSale": True, "salePoints": 5000}
    during = await redeem(shop.api, clean["id"], number)
    assert during["redemption"]["points"] == 5000 and during["redemption"]["unitPoints"] == 5000

    ended = await shop.api(
        update,
        i={
            "rewardId": clean["id"],
            "saleStartsAt": iso(now - timedelta(days=8)),
            "saleEndsAt": iso(now - timedelta(seconds=1)),
        },
    )
    assert ended["updateReward"]["reward"]["onSale"] is False
    after = await redeem(shop.api, clean["id"], number)
    assert after["redemption"]["points"] == 6000
    assert await available(operator, number) == 20_000 - 6000 - 5000 - 6000
    await assert_books_balance(db)


async def test_fifty_concurrent_redemptions_of_ten_in_stock(make_merchant, db):
    hotel = await make_merchant(TenantCategory.HOTEL)
    members = [await funded_member(hotel, 1000) for _ in range(10)]
    tea = await create_reward(hotel, kind="SERVICE", name="Afternoon tea", points=100, stock=10)

    async def attempt(n: int) -> dict:
        return await redeem(hotel.api, tea["id"], members[n % len(members)])

    results = await asyncio.gather(*(attempt(n) for n in range(50)))
    outcomes = Counter(
        result["userErrors"][0]["code"] if result["userErrors"] else "OK" for result in results
    )
    assert outcomes == {"OK": 10, "OUT_OF_STOCK": 40}
    assert (await hotel.api(REWARD, id=tea["id"]))["reward"]["stock"] == 0
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("""SELECT count(*) AS n, sum(points) AS points, sum(quantity) AS quantity
                        FROM reward_redemptions WHERE reward_id = :r"""),
                {"r": pk(tea["id"])},
            )
        ).one()
    assert (row.n, row.points, row.quantity) == (10, 1000, 10)
    await assert_books_balance(db)


async def test_cancel_restores_points_into_the_same_lots_and_the_stock(make_merchant, settings, operator, db):
    mart = await make_merchant()
    four_s = await make_merchant(TenantCategory.AUTO_SERVICE)
    number = await funded_member(mart, 300)
    assert await enroll(four_s, await _phone(db, number)) == number
    await earn(four_s, number, 200)
    box = await create_reward(mart, name="Festival gift box", points=450, stock=4)

    redeemed = await redeem(mart.api, box["id"], number)
    assert redeemed["balance"]["available"] == 50
    lots_before = await _lots(db, number)

    cancelled = await mart.api(
        CANCEL,
        i={
            "redemptionId": redeemed["redemption"]["id"],
            "idempotencyKey": unique("k"),
            "reason": "out of rice",
        },
    )
    payload = cancelled["cancelRedemption"]
    assert payload["userErrors"] == []
    assert payload["redemption"]["status"] == "CANCELLED"
    assert payload["redemption"]["reward"]["stock"] == 4
    assert payload["redemption"]["cancelReason"] == "REDEMPTION_CANCELLED: out of rice"
    assert payload["transaction"]["kind"] == "REVERSE" and payload["transaction"]["points"] == 450
    assert payload["transaction"]["reverses"] == redeemed["transaction"]["id"]
    assert payload["redemption"]["reversalId"] == payload["transaction"]["id"]
    assert payload["balance"]["available"] == 500
    # The very lots they came from, nothing new.
    lots_after = await _lots(db, number)
    assert [lot[:2] for lot in lots_after] == [lot[:2] for lot in lots_before]
    assert sorted(lot[2] for lot in lots_after) == [200, 300]
    again = await mart.api(
        CANCEL, i={"redemptionId": redeemed["redemption"]["id"], "idempotencyKey": unique("k")}
    )
    assert errors(again["cancelRedemption"]) == ["REDEMPTION_NOT_PENDING"]
    assert await available(operator, number) == 500
    await assert_books_balance(db)


async def test_cancel_after_the_lots_expired_gives_fresh_validity(make_merchant, settings, operator, db):
    mart = await make_merchant()
    number = await funded_member(mart, 800)
    oil = await create_reward(mart, name="Cooking oil", points=500, stock=2)
    redeemed = await redeem(mart.api, oil["id"], number)
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = now() - interval '1 second'"
        " WHERE member_id = (SELECT id FROM members WHERE member_number = :n)",
        n=number,
    )
    assert await available(operator, number) == 0
    cancelled = await mart.api(
        CANCEL, i={"redemptionId": redeemed["redemption"]["id"], "idempotencyKey": unique("k")}
    )
    assert cancelled["cancelRedemption"]["userErrors"] == []
    # The merchant's cancellation must not cost the member: the 500 come back, valid again.
    assert await available(operator, number) == 500
    async with db.transaction(OPERATOR) as session:
        fresh = (
            await run_sql(
                session,
                text("""SELECT l.amount, l.issuer_tenant_id, l.expires_at > now() AS valid FROM lots l
                        JOIN members m ON m.id = l.member_id
                        WHERE m.member_number = :n AND l.restored_from_lot_id IS NOT NULL"""),
                {"n": number},
            )
        ).all()
    assert [(r.amount, r.issuer_tenant_id, r.valid) for r in fresh] == [(500, mart.tenant_id, True)]
    await assert_books_balance(db)


async def test_cancel_after_a_direct_partial_refund_restores_only_the_rest(make_merchant, operator, db):
    mart = await make_merchant()
    number = await funded_member(mart, 1000)
    box = await create_reward(mart, name="Detergent", points=400)
    redeemed = await redeem(mart.api, box["id"], number)
    reverse = (
        """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) { userErrors { code } } }"""
    )
    refunded = await mart.api(
        reverse,
        i={
            "transactionId": redeemed["transaction"]["id"],
            "points": 150,
            "reason": "partial refund",
            "idempotencyKey": unique("k"),
        },
    )
    assert refunded["reverseTransaction"]["userErrors"] == []
    assert await available(operator, number) == 750
    cancelled = await mart.api(
        CANCEL, i={"redemptionId": redeemed["redemption"]["id"], "idempotencyKey": unique("k")}
    )
    assert cancelled["cancelRedemption"]["userErrors"] == []
    assert cancelled["cancelRedemption"]["transaction"]["points"] == 250
    assert await available(operator, number) == 1000
    await assert_books_balance(db)


async def test_a_member_redeems_from_its_own_wallet_at_any_merchant(make_merchant, app, http, operator, db):
    mart = await make_merchant()
    hotel = await make_merchant(TenantCategory.HOTEL)
    number = await funded_member(mart, 2000)
    someone_else = await funded_member(mart, 2000)
    upgrade = await create_reward(hotel, kind="UPGRADE", name="Room upgrade", points=1500)
    me = await member_api(app, http, db, number)

    # Not enrolled at the hotel: the member app still redeems there, for itself only.
    result = await redeem(me, upgrade["id"], None)
    assert result["userErrors"] == [], result
    assert result["redemption"]["memberNumber"] == number
    assert result["balance"]["available"] == 500
    before = await snapshot(db, someone_else, upgrade["id"])
    assert errors(await redeem(me, upgrade["id"], someone_else)) == ["MEMBER_NOT_FOUND"]
    assert await snapshot(db, someone_else, upgrade["id"]) == before
    # The hotel sees and fulfils it; the member sees its own redemptions.
    listed = await hotel.api(REDEMPTIONS, f={"status": "PENDING"})
    assert [e["node"]["memberNumber"] for e in listed["redemptions"]["edges"]] == [number]
    mine = await me(REDEMPTIONS, f={})
    assert [e["node"]["id"] for e in mine["redemptions"]["edges"]] == [result["redemption"]["id"]]
    assert (await hotel.api(FULFIL, i={"redemptionId": result["redemption"]["id"]}))["fulfilRedemption"][
        "userErrors"
    ] == []
    # Members cannot fulfil, cancel or manage.
    denied = await me.errors(FULFIL, i={"redemptionId": result["redemption"]["id"]})
    assert denied[0]["extensions"]["code"] == "FORBIDDEN"
    await assert_books_balance(db)


async def test_green_rewards_take_only_green_points(make_merchant, operator, db):
    mart = await make_merchant()
    number = await funded_member(mart, 5000)
    bag = await create_reward(mart, name="Reusable bag", points=300, asset="GREEN")
    before = await snapshot(db, number, bag["id"])
    assert errors(await redeem(mart.api, bag["id"], number)) == ["INSUFFICIENT_POINTS"]
    assert await snapshot(db, number, bag["id"]) == before
    await earn(mart, number, 400, asset="GREEN")
    result = await redeem(mart.api, bag["id"], number)
    assert result["userErrors"] == []
    assert result["balance"] == {"asset": "GREEN", "available": 100, "held": 0}
    assert await available(operator, number) == 5000  # POINTS untouched
    await assert_books_balance(db)


async def _phone(db, number: str) -> str:
    async with db.transaction(OPERATOR) as session:
        found = await run_sql(
            session, text("SELECT phone FROM members WHERE member_number = :n"), {"n": number}
        )
        return found.scalar_one()


async def _lots(db, number: str) -> list[tuple[int, int | None, int]]:
    async with db.transaction(OPERATOR) as session:
        rows = await run_sql(
            session,
            text("""SELECT l.id, l.issuer_tenant_id, l.remaining FROM lots l JOIN members m ON m.id = l.member_id
                    WHERE m.member_number = :n ORDER BY l.id"""),
            {"n": number},
        )
        return [(r.id, r.issuer_tenant_id, r.remaining) for r in rows]


async def test_a_fulfilment_retried_under_its_key_gets_the_first_answer(make_merchant):
    shop = await make_merchant(TenantCategory.BABY_GOODS)
    number = await funded_member(shop, 2_000)
    gift = await create_reward(shop, kind="GOODS", name="Teether", points=500, stock=5)
    first_redemption = (await redeem(shop.api, gift["id"], number, key=unique("k")))["redemption"]
    second_redemption = (await redeem(shop.api, gift["id"], number, key=unique("k")))["redemption"]

    key = unique("k")
    fulfil = {"redemptionId": first_redemption["id"], "idempotencyKey": key}
    first = (await shop.api(FULFIL, i=fulfil))["fulfilRedemption"]
    assert first["userErrors"] == [] and first["redemption"]["status"] == "FULFILLED"
    assert (await shop.api(FULFIL, i=fulfil))["fulfilRedemption"] == first, "the lost response, replayed"

    # Under another key (or none) a second fulfilment is still refused; the key cannot be reused
    # for another redemption.
    other_key = {"redemptionId": first_redemption["id"], "idempotencyKey": unique("k")}
    assert errors((await shop.api(FULFIL, i=other_key))["fulfilRedemption"]) == ["REDEMPTION_NOT_PENDING"]
    reused = {"redemptionId": second_redemption["id"], "idempotencyKey": key}
    assert errors((await shop.api(FULFIL, i=reused))["fulfilRedemption"]) == ["IDEMPOTENCY_KEY_REUSED"]
    listed = await shop.api(REDEMPTIONS, f={"rewardId": gift["id"]})
    assert sorted(e["node"]["status"] for e in listed["redemptions"]["edges"]) == ["FULFILLED", "PENDING"]
