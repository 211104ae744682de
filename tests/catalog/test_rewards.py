"""Managing rewards: create, update, withdraw (cancelling pending redemptions), and who sees which catalog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import OPERATOR, AccessContext, run_sql
from alliance.tenants.models import TenantCategory
from tests.catalog import (
    CREATE,
    FULFIL,
    REWARD,
    REWARDS,
    UPDATE,
    WITHDRAW,
    assert_books_balance,
    available,
    create_reward,
    errors,
    funded_member,
    member_api,
    pk,
    redeem,
    snapshot,
)
from tests.conftest import unique
from tests.settlement.test_expiry_and_periods import owner_sql


async def all_rewards(api, **filter_) -> list[dict]:
    """Every page of ``rewards`` under ``filter_``."""
    nodes: list[dict] = []
    after = None
    while True:
        data = await api(REWARDS, f=filter_, first=100, after=after)
        nodes += [edge["node"] for edge in data["rewards"]["edges"]]
        if not data["rewards"]["pageInfo"]["hasNextPage"]:
            return nodes
        after = data["rewards"]["pageInfo"]["endCursor"]


async def test_create_reward_with_every_field(make_merchant):
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    now = datetime.now(UTC).replace(microsecond=0)
    reward = await create_reward(
        shop,
        kind="COUPON",
        name="  Insurance voucher 1,000 CNY ",
        description="Valid on the next renewal.",
        points=20_000,
        salePoints=18_000,
        saleStartsAt=now.isoformat(),
        saleEndsAt=(now + timedelta(days=7)).isoformat(),
        stock=50,
        availableFrom=(now - timedelta(days=1)).isoformat(),
        availableUntil=(now + timedelta(days=365)).isoformat(),
        minTier="SILVER",
        perMemberLimit=1,
    )
    assert reward["name"] == "Insurance voucher 1,000 CNY"
    assert reward["kind"] == "COUPON" and reward["asset"] == "POINTS" and reward["status"] == "ACTIVE"
    assert reward["points"] == 20_000 and reward["currentPoints"] == 18_000 and reward["onSale"] is True
    assert reward["stock"] == 50 and reward["minTier"] == "SILVER" and reward["perMemberLimit"] == 1
    assert reward["tenantCode"] == shop.code
    assert datetime.fromisoformat(reward["saleEndsAt"]) == now + timedelta(days=7)


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"name": " "}, "INVALID_NAME", "name"),
        ({"points": 0}, "INVALID_POINTS", "points"),
        ({"description": "x" * 2001}, "TOO_LONG", "description"),
        ({"asset": "MILES"}, "UNKNOWN_ASSET", "asset"),
        ({"asset": "bad asset"}, "UNKNOWN_ASSET", "asset"),
        ({"stock": -1}, "INVALID_STOCK", "stock"),
        ({"perMemberLimit": 0}, "INVALID_LIMIT", "perMemberLimit"),
        ({"minTier": "PLATINUM"}, "UNKNOWN_TIER", "minTier"),
        ({"salePoints": 500}, "INVALID_SALE", "salePoints"),
        (
            {
                "salePoints": 1500,
                "saleStartsAt": "2030-01-01T00:00:00+08:00",
                "saleEndsAt": "2030-01-08T00:00:00+08:00",
            },
            "INVALID_SALE_PRICE",
            "salePoints",
        ),
        (
            {
                "salePoints": 500,
                "saleStartsAt": "2030-01-08T00:00:00+08:00",
                "saleEndsAt": "2030-01-01T00:00:00+08:00",
            },
            "INVALID_SALE_WINDOW",
            "saleEndsAt",
        ),
        (
            {"availableFrom": "2030-01-08T00:00:00Z", "availableUntil": "2030-01-01T00:00:00Z"},
            "INVALID_WINDOW",
            "availableUntil",
        ),
        ({"availableFrom": "2030-01-08T00:00:00"}, "INVALID_DATETIME", "availableFrom"),
    ],
)
async def test_bad_rewards_are_refused(make_merchant, fields, code, field):
    mart = await make_merchant()
    data = await mart.api(CREATE, i={"kind": "GOODS", "name": "Rice", "points": 1000} | fields)
    assert data["createReward"]["reward"] is None
    assert [(e["code"], e["field"]) for e in data["createReward"]["userErrors"]] == [(code, field)]
    listed = await mart.api(REWARDS, f={})
    assert listed["rewards"]["edges"] == []


async def test_update_changes_only_the_given_fields(make_merchant):
    hotel = await make_merchant(TenantCategory.HOTEL)
    reward = await create_reward(
        hotel, kind="UPGRADE", name="Late checkout", points=800, stock=5, perMemberLimit=2
    )
    data = await hotel.api(
        UPDATE, i={"rewardId": reward["id"], "points": 700, "stock": None, "perMemberLimit": None}
    )
    updated = data["updateReward"]["reward"]
    assert data["updateReward"]["userErrors"] == []
    assert (updated["name"], updated["points"], updated["stock"], updated["perMemberLimit"]) == (
        "Late checkout",
        700,
        None,
        None,
    )
    assert updated["kind"] == "UPGRADE"
    # Checked as a whole: a sale price must stay below the (new) regular price.
    bad = await hotel.api(
        UPDATE,
        i={
            "rewardId": reward["id"],
            "salePoints": 900,
            "saleStartsAt": "2030-01-01T00:00:00Z",
            "saleEndsAt": "2030-01-02T00:00:00Z",
        },
    )
    assert errors(bad["updateReward"]) == ["INVALID_SALE_PRICE"]
    null_name = await hotel.api(UPDATE, i={"rewardId": reward["id"], "name": None})
    assert errors(null_name["updateReward"]) == ["REQUIRED"]
    assert (await hotel.api(REWARD, id=reward["id"]))["reward"]["points"] == 700


async def test_a_merchant_cannot_touch_another_merchants_reward(make_merchant, db):
    mart = await make_merchant()
    hotel = await make_merchant(TenantCategory.HOTEL)
    reward = await create_reward(hotel, name="Airport pickup", kind="SERVICE", points=3000, stock=3)

    data = await mart.api(UPDATE, i={"rewardId": reward["id"], "points": 1, "stock": 1000})
    assert errors(data["updateReward"]) == ["REWARD_NOT_FOUND"]
    withdrawn = await mart.api(WITHDRAW, i={"rewardId": reward["id"], "idempotencyKey": unique("k")})
    assert errors(withdrawn["withdrawReward"]) == ["REWARD_NOT_FOUND"]
    assert (await mart.api(REWARD, id=reward["id"]))["reward"] is None
    assert reward["id"] not in [r["id"] for r in await all_rewards(mart.api)]
    unchanged = (await hotel.api(REWARD, id=reward["id"]))["reward"]
    assert (unchanged["points"], unchanged["stock"], unchanged["status"]) == (3000, 3, "ACTIVE")

    # Row-level security underneath the API: the merchant's raw UPDATE touches nothing, and it
    # cannot insert a reward for another tenant or change a reward's status itself.
    async with db.transaction(AccessContext("merchant", tenant_id=mart.tenant_id)) as session:
        result = await run_sql(
            session, text("UPDATE rewards SET points = 1 WHERE id = :r"), {"r": pk(reward["id"])}
        )
        assert result.rowcount == 0
    with pytest.raises(DBAPIError, match="row-level security"):
        async with db.transaction(AccessContext("merchant", tenant_id=mart.tenant_id)) as session:
            await run_sql(
                session,
                text("INSERT INTO rewards (tenant_id, kind, name, points) VALUES (:t, 'goods', 'x', 1)"),
                {"t": hotel.tenant_id},
            )
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.transaction(AccessContext("merchant", tenant_id=hotel.tenant_id)) as session:
            await run_sql(
                session,
                text("UPDATE rewards SET status = 'withdrawn' WHERE id = :r"),
                {"r": pk(reward["id"])},
            )


async def test_a_member_sees_the_whole_alliance_catalog(make_merchant, app, http, db):
    mart = await make_merchant()
    hotel = await make_merchant(TenantCategory.HOTEL)
    shop = await make_merchant(TenantCategory.AUTO_SERVICE)
    number = await funded_member(mart, 5000)
    now = datetime.now(UTC)
    rice = await create_reward(mart, name="Rice", points=300)
    upgrade = await create_reward(hotel, kind="UPGRADE", name="Suite", points=6000)
    clean = await create_reward(
        shop,
        kind="SERVICE",
        name="AC clean",
        points=6000,
        salePoints=4800,
        saleStartsAt=(now - timedelta(hours=1)).isoformat(),
        saleEndsAt=(now + timedelta(days=6)).isoformat(),
    )
    tyre = await create_reward(shop, kind="GOODS", name="Tyre", points=10_000)
    bag = await create_reward(mart, name="Green bag", points=100, asset="GREEN")
    gone = await create_reward(hotel, name="Old map", points=10)
    await hotel.api(WITHDRAW, i={"rewardId": gone["id"], "idempotencyKey": unique("k")})
    ours = {r["id"] for r in (rice, upgrade, clean, tyre, bag, gone)}

    me = await member_api(app, http, db, number)

    async def mine(**filter_) -> set[str]:
        return {r["id"] for r in await all_rewards(me, **filter_)} & ours

    # Every merchant's active rewards, in one query, without being enrolled anywhere but the mart.
    assert await mine() == {rice["id"], upgrade["id"], clean["id"], tyre["id"], bag["id"]}
    assert await mine(tenantCode=shop.code) == {clean["id"], tyre["id"]}
    assert await mine(kind="UPGRADE") == {upgrade["id"]}
    assert await mine(maxPoints=5000) == {rice["id"], clean["id"], bag["id"]}  # the sale price counts
    # 5000 POINTS and no GREEN: the sale makes the AC clean affordable, the green bag is not.
    assert await mine(affordable=True) == {rice["id"], clean["id"]}
    assert await mine(affordable=False) == {upgrade["id"], tyre["id"], bag["id"]}
    assert await mine(affordable=True, tenantCode=shop.code) == {clean["id"]}
    assert all(r["status"] == "ACTIVE" for r in await all_rewards(me))

    # A merchant sees its own catalog only, withdrawn rewards included; `affordable` needs a member.
    assert {r["id"] for r in await all_rewards(hotel.api)} == {upgrade["id"], gone["id"]}
    assert {r["id"] for r in await all_rewards(hotel.api, status="WITHDRAWN")} == {gone["id"]}
    refused = await hotel.api.errors(REWARDS, f={"affordable": True})
    assert refused[0]["extensions"]["code"] == "MEMBER_TOKEN_REQUIRED"
    # Members read the catalog but never manage it.
    denied = await me.errors(UPDATE, i={"rewardId": rice["id"], "points": 1})
    assert denied[0]["extensions"]["code"] == "FORBIDDEN"


async def test_paging_through_rewards(make_merchant):
    mart = await make_merchant()
    created = [(await create_reward(mart, name=f"Item {n}", points=100 + n))["id"] for n in range(5)]
    first = await mart.api(REWARDS, f={}, first=2)
    assert [e["node"]["id"] for e in first["rewards"]["edges"]] == created[:2]
    assert first["rewards"]["pageInfo"]["hasNextPage"] is True
    rest = await mart.api(REWARDS, f={}, first=10, after=first["rewards"]["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in rest["rewards"]["edges"]] == created[2:]
    assert rest["rewards"]["pageInfo"]["hasNextPage"] is False


async def test_withdraw_cancels_pending_redemptions_and_restores_their_points(
    make_merchant, settings, operator, db
):
    hotel = await make_merchant(TenantCategory.HOTEL)
    alice = await funded_member(hotel, 2000)
    bob = await funded_member(hotel, 2000)
    guide = await create_reward(hotel, kind="SERVICE", name="Local travel guide", points=600, stock=10)
    pending_alice = await redeem(hotel.api, guide["id"], alice, quantity=2)
    pending_bob = await redeem(hotel.api, guide["id"], bob)
    fulfilled_bob = await redeem(hotel.api, guide["id"], bob)
    await hotel.api(FULFIL, i={"redemptionId": fulfilled_bob["redemption"]["id"]})
    assert await available(operator, alice) == 800
    assert await available(operator, bob) == 800
    # Alice's points expire while she waits: the withdrawal is the merchant's doing, she keeps them.
    await owner_sql(
        settings,
        "UPDATE lots SET expires_at = now() - interval '1 second'"
        " WHERE member_id = (SELECT id FROM members WHERE member_number = :n)",
        n=alice,
    )
    assert await available(operator, alice) == 0

    key = unique("k")
    data = await hotel.api(
        WITHDRAW, i={"rewardId": guide["id"], "idempotencyKey": key, "note": "guide retired"}
    )
    payload = data["withdrawReward"]
    assert payload["userErrors"] == []
    assert payload["reward"]["status"] == "WITHDRAWN"
    assert payload["cancelledRedemptions"] == 2 and payload["restoredPoints"] == 1800
    assert payload["reward"]["stock"] == 9  # the fulfilled one stays taken
    assert await available(operator, alice) == 1200  # fresh validity for the restored 1200
    assert await available(operator, bob) == 1400
    # Retrying the withdrawal replays it; withdrawing again is refused; so is redeeming it.
    assert (
        await hotel.api(WITHDRAW, i={"rewardId": guide["id"], "idempotencyKey": key, "note": "guide retired"})
    )["withdrawReward"] == payload
    again = await hotel.api(WITHDRAW, i={"rewardId": guide["id"], "idempotencyKey": unique("k")})
    assert errors(again["withdrawReward"]) == ["REWARD_WITHDRAWN"]
    update = await hotel.api(UPDATE, i={"rewardId": guide["id"], "points": 1})
    assert errors(update["updateReward"]) == ["REWARD_WITHDRAWN"]
    before = await snapshot(db, bob, guide["id"])
    assert errors(await redeem(hotel.api, guide["id"], bob)) == ["REWARD_WITHDRAWN"]
    assert await snapshot(db, bob, guide["id"]) == before

    async with db.transaction(OPERATOR) as session:
        rows = (
            await run_sql(
                session,
                text("""SELECT x.id, x.status, t.reason FROM reward_redemptions x
                        LEFT JOIN ledger_transactions t ON t.id = x.reversal_id
                        WHERE x.reward_id = :r ORDER BY x.id"""),
                {"r": pk(guide["id"])},
            )
        ).all()
    assert [(r.status, r.reason) for r in rows] == [
        ("cancelled", "REWARD_WITHDRAWN: guide retired"),
        ("cancelled", "REWARD_WITHDRAWN: guide retired"),
        ("fulfilled", None),
    ]
    assert [r.id for r in rows][:2] == [
        pk(pending_alice["redemption"]["id"]),
        pk(pending_bob["redemption"]["id"]),
    ]
    await assert_books_balance(db)


async def test_a_retried_create_reward_makes_one_reward(make_merchant):
    mart = await make_merchant()
    request = {"kind": "GOODS", "name": "Rice", "points": 1000, "idempotencyKey": unique("k")}
    first = await mart.api(CREATE, i=request)
    again = await mart.api(CREATE, i=request)
    assert first == again and first["createReward"]["reward"] is not None, "the retry gets the same reward"
    assert len(await all_rewards(mart.api)) == 1
    reused = await mart.api(CREATE, i=request | {"name": "Noodles"})
    assert errors(reused["createReward"]) == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(await all_rewards(mart.api)) == 1, "a refused request makes nothing"
