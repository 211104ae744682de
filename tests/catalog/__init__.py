"""Helpers shared by the catalog tests: GraphQL documents, funded members, member tokens, book checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from tests.conftest import Api, random_phone, unique
from tests.ledger.test_worked_example import enroll

REWARD_FIELDS = """id name kind description asset points salePoints saleStartsAt saleEndsAt currentPoints onSale
  stock availableFrom availableUntil minTier perMemberLimit status tenantCode tenantName"""
CREATE = f"""mutation($i: CreateRewardInput!) {{ createReward(input: $i) {{
  reward {{ {REWARD_FIELDS} }} userErrors {{ field code message }} }} }}"""
UPDATE = f"""mutation($i: UpdateRewardInput!) {{ updateReward(input: $i) {{
  reward {{ {REWARD_FIELDS} }} userErrors {{ field code message }} }} }}"""
WITHDRAW = """mutation($i: WithdrawRewardInput!) { withdrawReward(input: $i) {
  reward { id status stock } cancelledRedemptions restoredPoints userErrors { field code message } } }"""
REDEEM_REWARD = """mutation($i: RedeemRewardInput!) { redeemReward(input: $i) {
  redemption { id status quantity points unitPoints asset memberNumber transactionId reversalId
    reward { id name stock currentPoints } }
  transaction { id kind points asset } balance { asset available held } userErrors { field code message } } }"""
FULFIL = """mutation($i: FulfilRedemptionInput!) { fulfilRedemption(input: $i) {
  redemption { id status closedAt } userErrors { field code message } } }"""
CANCEL = """mutation($i: CancelRedemptionInput!) { cancelRedemption(input: $i) {
  redemption { id status reversalId cancelReason reward { id stock } }
  transaction { id kind points reverses } balance { asset available held } userErrors { field code message } } }"""
REWARDS = """query($f: RewardFilterInput, $first: Int, $after: String) { rewards(filter: $f, first: $first, after: $after) {
  edges { node { id name tenantCode points currentPoints asset status kind } } pageInfo { hasNextPage endCursor } } }"""
REWARD = """query($id: ID!) { reward(id: $id) { id name stock status points currentPoints } }"""
REDEMPTIONS = """query($f: RedemptionFilterInput, $first: Int) { redemptions(filter: $f, first: $first) {
  edges { node { id status quantity points memberNumber reward { id name } } } } }"""
BALANCE = """query($n: String!, $a: String!) { member(memberNumber: $n) { balance(asset: $a) { available held } } }"""


def pk(global_id: str) -> int:
    return from_global_id(global_id)[1]


def errors(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["userErrors"]]


async def create_reward(merchant, **fields: Any) -> dict[str, Any]:
    """A reward of ``merchant``'s catalog (GOODS, 1000 points unless told otherwise)."""
    data = await merchant.api(CREATE, i={"kind": "GOODS", "name": unique("reward"), "points": 1000} | fields)
    assert data["createReward"]["userErrors"] == [], data
    return data["createReward"]["reward"]


async def funded_member(merchant, points: int, phone: str | None = None) -> str:
    """A member enrolled at ``merchant`` with ``points`` POINTS earned there (1 point per CNY)."""
    number = await enroll(merchant, phone or random_phone())
    if points:
        await earn(merchant, number, points)
    return number


AWARD = """mutation($i: AwardPointsInput!) { awardPoints(input: $i) {
  transaction { points } userErrors { code } } }"""


async def earn(merchant, number: str, points: int, asset: str = "POINTS") -> None:
    """Fund a member with exactly ``points`` (an award: no earning rule or tier multiplier applies)."""
    data = await merchant.api(
        AWARD,
        i={
            "memberNumber": number,
            "points": points,
            "reason": "test funding",
            "idempotencyKey": unique("k"),
            "asset": asset,
        },
    )
    assert data["awardPoints"]["userErrors"] == [], data
    assert data["awardPoints"]["transaction"]["points"] == points


async def member_id(db, number: str) -> int:
    async with db.transaction(OPERATOR) as session:
        found = await run_sql(session, text("SELECT id FROM members WHERE member_number = :n"), {"n": number})
        return found.scalar_one()


async def member_api(app, http, db, number: str) -> Api:
    """The member app's view: a member token for ``number``."""
    token = app.state.token_issuer.for_member(await member_id(db, number), number).access_token
    return Api(http, token)


async def available(operator, number: str, asset: str = "POINTS") -> int:
    return (await operator(BALANCE, n=number, a=asset))["member"]["balance"]["available"]


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused redemption must leave as it was."""

    lot_points: int
    transactions: int
    movements: int
    redemptions: int
    stock: int | None


async def snapshot(db, number: str, reward_id: str) -> Snapshot:
    async with db.transaction(OPERATOR) as session:
        row = (
            await run_sql(
                session,
                text("""
            SELECT (SELECT coalesce(sum(l.remaining), 0) FROM lots l WHERE l.member_id = m.id) AS lot_points,
                   (SELECT count(*) FROM ledger_transactions t WHERE t.member_id = m.id) AS transactions,
                   (SELECT count(*) FROM lot_movements mv WHERE mv.member_id = m.id) AS movements,
                   (SELECT count(*) FROM reward_redemptions x WHERE x.reward_id = :r) AS redemptions,
                   (SELECT stock FROM rewards WHERE id = :r) AS stock
            FROM members m WHERE m.member_number = :n"""),
                {"n": number, "r": pk(reward_id)},
            )
        ).one()
    return Snapshot(*row)


async def assert_books_balance(db) -> None:
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def redeem(api, reward_id: str, number: str | None, quantity: int = 1, key: str | None = None):
    variables: dict[str, Any] = {
        "rewardId": reward_id,
        "quantity": quantity,
        "idempotencyKey": key or unique("k"),
    }
    if number is not None:
        variables["memberNumber"] = number
    return (await api(REDEEM_REWARD, i=variables))["redeemReward"]
