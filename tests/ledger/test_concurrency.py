"""The ledger under concurrent load: no overspending, no lost updates, no deadlocks."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll

AWARD = """mutation($i: AwardPointsInput!) { awardPoints(input: $i) {
  transaction { id kind points } balance { available held } userErrors { field code message } } }"""
HOLD = """mutation($i: HoldPointsInput!) { holdPoints(input: $i) {
  hold { id points capturedPoints status } balance { available held } userErrors { field code message } } }"""
CAPTURE = """mutation($i: CaptureHoldInput!) { captureHold(input: $i) {
  transaction { id kind points } hold { id points capturedPoints status } balance { available held }
  userErrors { field code message } } }"""
RELEASE = """mutation($i: ReleaseHoldInput!) { releaseHold(input: $i) {
  hold { id points capturedPoints status } balance { available held } userErrors { field code message } } }"""
REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id kind points shortfall } balance { available held } userErrors { field code message } } }"""
BALANCE = "query($n: String!) { member(memberNumber: $n) { balance { available held } } }"


async def assert_books_balance(db) -> None:
    async with db.transaction(OPERATOR) as session:
        assert await verify_ledger(session) == []


async def balance(api, number: str) -> dict[str, int]:
    return (await api(BALANCE, n=number))["member"]["balance"]


async def test_concurrent_redemptions_never_overspend(make_merchant, db):
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    earned = await merchant.api(
        EARN, i={"memberNumber": number, "amount": "500", "orderRef": "E-1", "idempotencyKey": unique("k")}
    )
    assert earned["earnPoints"]["balance"]["available"] == 500

    async def redeem(n: int) -> dict[str, Any]:
        response = await merchant.api.post(
            REDEEM,
            {
                "i": {
                    "memberNumber": number,
                    "points": 10,
                    "orderRef": f"R-{n}",
                    "idempotencyKey": unique("k"),
                }
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]["redeemPoints"]

    results = await asyncio.gather(*(redeem(n) for n in range(100)))
    succeeded = [r for r in results if not r["userErrors"]]
    refused = [r for r in results if r["userErrors"]]
    assert len(succeeded) == 50
    assert Counter(e["code"] for r in refused for e in r["userErrors"]) == {"INSUFFICIENT_POINTS": 50}
    assert all(r["transaction"] is None for r in refused)
    # Every success saw a consistent, non-negative balance, each one different (serialised).
    seen = sorted(r["balance"]["available"] for r in succeeded)
    assert seen == list(range(0, 500, 10))
    assert await balance(merchant.api, number) == {"available": 0, "held": 0}
    async with db.transaction(OPERATOR) as session:
        posted = (
            await run_sql(
                session,
                text("""SELECT count(*), sum(t.points) FROM ledger_transactions t JOIN members m ON m.id = t.member_id
                        WHERE m.member_number = :n AND t.kind = 'redeem'"""),
                {"n": number},
            )
        ).one()
    assert tuple(posted) == (50, 500)
    await assert_books_balance(db)


async def test_concurrent_holds_and_redemptions_share_one_balance(make_merchant, db):
    merchant = await make_merchant(TenantCategory.HOTEL)
    number = await enroll(merchant, random_phone())
    await merchant.api(
        EARN, i={"memberNumber": number, "amount": "300", "orderRef": "E-1", "idempotencyKey": unique("k")}
    )

    async def call(n: int) -> dict[str, Any]:
        mutation, name = (HOLD, "holdPoints") if n % 2 else (REDEEM, "redeemPoints")
        data = await merchant.api(
            mutation,
            i={"memberNumber": number, "points": 10, "orderRef": f"X-{n}", "idempotencyKey": unique("k")},
        )
        return data[name]

    results = await asyncio.gather(*(call(n) for n in range(60)))
    assert sum(1 for r in results if not r["userErrors"]) == 30
    holds = sum(1 for n, r in enumerate(results) if n % 2 and not r["userErrors"])
    assert await balance(merchant.api, number) == {"available": 0, "held": 10 * holds}
    await assert_books_balance(db)


ALLOWED_REFUSALS = {
    "earn": set(),
    "award": set(),
    "redeem": {"INSUFFICIENT_POINTS"},
    "hold": {"INSUFFICIENT_POINTS"},
    "capture": {"HOLD_NOT_ACTIVE", "CAPTURE_EXCEEDS_HOLD"},
    "release": {"HOLD_NOT_ACTIVE"},
    "reverse": {"POINTS_ALREADY_SPENT", "REVERSAL_EXCEEDS_ORIGINAL"},
}
MUTATIONS = {
    "earn": (EARN, "earnPoints"),
    "award": (AWARD, "awardPoints"),
    "redeem": (REDEEM, "redeemPoints"),
    "hold": (HOLD, "holdPoints"),
    "capture": (CAPTURE, "captureHold"),
    "release": (RELEASE, "releaseHold"),
    "reverse": (REVERSE, "reverseTransaction"),
}


@dataclass
class Op:
    kind: str
    merchant: int
    member: int
    variables: dict[str, Any]
    target: Any = None  # what a reversal reverses: ("credit" | "debit", transaction id)


@dataclass
class Model:
    """What each member's balance must be, from the answers the API gave (order-independent deltas)."""

    available: list[int]
    held: list[int]
    credits: list[tuple[int, int, str]] = field(default_factory=list)  # (merchant, member, transaction id)
    debits: list[tuple[int, int, str]] = field(default_factory=list)
    holds: dict[str, tuple[int, int]] = field(default_factory=dict)  # hold id -> (merchant, member)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)  # idempotency key -> first answer
    refusals: Counter[str] = field(default_factory=Counter)

    def apply(self, op: Op, payload: dict[str, Any]) -> None:
        if payload["userErrors"]:
            codes = {e["code"] for e in payload["userErrors"]}
            assert codes <= ALLOWED_REFUSALS[op.kind], (op, payload)
            self.refusals.update(codes)
            return
        assert payload["balance"]["available"] >= 0, (op, payload)
        m = op.member
        if op.kind in ("earn", "award"):
            self.available[m] += payload["transaction"]["points"]
            self.credits.append((op.merchant, m, payload["transaction"]["id"]))
        elif op.kind == "redeem":
            self.available[m] -= payload["transaction"]["points"]
            self.debits.append((op.merchant, m, payload["transaction"]["id"]))
        elif op.kind == "hold":
            self.available[m] -= payload["hold"]["points"]
            self.held[m] += payload["hold"]["points"]
            self.holds[payload["hold"]["id"]] = (op.merchant, m)
        elif op.kind in ("capture", "release"):
            hold = payload["hold"]
            self.held[m] -= hold["points"]
            self.available[m] += hold["points"] - hold["capturedPoints"]
            del self.holds[hold["id"]]
            if op.kind == "capture":
                assert payload["transaction"]["points"] == hold["capturedPoints"]
                self.debits.append((op.merchant, m, payload["transaction"]["id"]))
        else:
            direction, _ = op.target
            points = payload["transaction"]["points"]
            self.available[m] += points if direction == "debit" else -points


def plan_batch(rng: random.Random, model: Model, size: int, merchants: int, members: int) -> list[Op]:
    ops: list[Op] = []
    picked_holds: set[str] = set()
    while len(ops) < size:
        kind = rng.choices(
            ["earn", "award", "redeem", "hold", "capture", "release", "reverse"], [25, 8, 22, 15, 10, 7, 13]
        )[0]
        merchant, member = rng.randrange(merchants), rng.randrange(members)
        key = unique("k")
        if kind == "earn":
            amount = f"{rng.randint(1, 200)}.{rng.randint(0, 99):02d}"
            ops.append(
                Op(kind, merchant, member, {"amount": amount, "orderRef": unique("o"), "idempotencyKey": key})
            )
        elif kind == "award":
            ops.append(
                Op(
                    kind,
                    merchant,
                    member,
                    {"points": rng.randint(1, 50), "reason": "survey", "idempotencyKey": key},
                )
            )
        elif kind == "redeem":
            points = rng.randint(1, max(1, model.available[member] // 3 + 30))
            ops.append(
                Op(kind, merchant, member, {"points": points, "orderRef": unique("r"), "idempotencyKey": key})
            )
        elif kind == "hold":
            points = rng.randint(1, max(1, model.available[member] // 4 + 20))
            ops.append(
                Op(kind, merchant, member, {"points": points, "orderRef": unique("h"), "idempotencyKey": key})
            )
        elif kind in ("capture", "release"):
            open_holds = sorted(set(model.holds) - picked_holds)
            if not open_holds:
                continue
            hold_id = rng.choice(open_holds)
            if rng.random() < 0.8:  # now and then, two closings race for one hold
                picked_holds.add(hold_id)
            merchant, member = model.holds[hold_id]
            variables: dict[str, Any] = {"holdId": hold_id, "idempotencyKey": key}
            if kind == "capture" and rng.random() < 0.5:
                variables["points"] = rng.randint(1, 60)  # sometimes more than held
            ops.append(Op(kind, merchant, member, variables))
        else:
            candidates = [("credit", c) for c in model.credits] + [("debit", d) for d in model.debits]
            if not candidates:
                continue
            direction, (merchant, member, tx) = rng.choice(candidates)
            variables = {"transactionId": tx, "reason": "refund", "idempotencyKey": key}
            if rng.random() < 0.5:
                variables["points"] = rng.randint(1, 40)
            ops.append(Op(kind, merchant, member, variables, (direction, tx)))
    return ops


async def test_random_mix_matches_the_model(make_merchant, db):
    rng = random.Random(20261124)
    merchants = [
        await make_merchant(category)
        for category in (TenantCategory.SUPERMARKET, TenantCategory.HOTEL, TenantCategory.AUTO_SERVICE)
    ]
    numbers = []
    for _ in range(5):
        phone = random_phone()
        enrolled = {await enroll(merchant, phone) for merchant in merchants}
        assert len(enrolled) == 1
        numbers.append(enrolled.pop())
    model = Model(available=[0] * len(numbers), held=[0] * len(numbers))
    done: list[Op] = []

    async def run(op: Op) -> dict[str, Any]:
        mutation, name = MUTATIONS[op.kind]
        variables = dict(op.variables)
        if op.kind in ("earn", "award", "redeem", "hold"):
            variables["memberNumber"] = numbers[op.member]
        response = await merchants[op.merchant].api.post(mutation, {"i": variables})
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, (op, body)
        return body["data"][name]

    total = 0
    while total < 300:
        batch = plan_batch(rng, model, 20, len(merchants), len(numbers))
        # Retries: repeat a few requests of this batch and of earlier ones, same key and input.
        retries = [rng.choice(batch) for _ in range(2)]
        if done:
            retries += [rng.choice(done) for _ in range(2)]
        batch += retries
        rng.shuffle(batch)
        payloads = await asyncio.gather(*(run(op) for op in batch))
        by_key: dict[str, list[tuple[Op, dict[str, Any]]]] = {}
        for op, payload in zip(batch, payloads, strict=True):
            by_key.setdefault(op.variables["idempotencyKey"], []).append((op, payload))
        for key, answers in by_key.items():
            first_op, first = answers[0]
            assert all(payload == first for _, payload in answers), answers
            if key in model.answers:
                assert first == model.answers[key], (first_op, first, model.answers[key])
                continue
            model.answers[key] = first
            model.apply(first_op, first)
            done.append(first_op)
        total += len(batch)

    for index, number in enumerate(numbers):
        assert await balance(merchants[0].api, number) == {
            "available": model.available[index],
            "held": model.held[index],
        }, index
    # The mix really exercised the ledger: every kind posted, and concurrency caused refusals.
    kinds = Counter(op.kind for op in done if not model.answers[op.variables["idempotencyKey"]]["userErrors"])
    assert set(kinds) == set(MUTATIONS), kinds
    assert model.refusals["INSUFFICIENT_POINTS"] > 0, model.refusals
    await assert_books_balance(db)


async def test_hot_merchant_takes_many_concurrent_earns(make_merchant, db):
    merchant = await make_merchant()
    numbers = [await enroll(merchant, random_phone()) for _ in range(5)]
    before = await issued_by(db, merchant.tenant_id)

    async def earn(n: int) -> dict[str, Any]:
        response = await merchant.api.post(
            EARN,
            {
                "i": {
                    "memberNumber": numbers[n % 5],
                    "amount": str(n + 1),
                    "orderRef": f"O-{n}",
                    "idempotencyKey": unique("k"),
                }
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body
        return body["data"]["earnPoints"]

    results = await asyncio.gather(*(earn(n) for n in range(200)))
    assert [r["userErrors"] for r in results] == [[]] * 200
    assert sum(r["transaction"]["points"] for r in results) == sum(range(1, 201))
    for index, number in enumerate(numbers):
        expected = sum(n + 1 for n in range(200) if n % 5 == index)
        assert await balance(merchant.api, number) == {"available": expected, "held": 0}
    assert await issued_by(db, merchant.tenant_id) - before == sum(range(1, 201))
    await assert_books_balance(db)


async def issued_by(db, tenant_id: int) -> int:
    """Points the tenant's issuance account has given out (its entries are debits)."""
    async with db.transaction(OPERATOR) as session:
        return (
            await run_sql(
                session,
                text("""SELECT coalesce(-sum(e.amount), 0) FROM ledger_entries e JOIN accounts a ON a.id = e.account_id
                        WHERE a.kind = 'tenant_issuance' AND a.tenant_id = :t"""),
                {"t": tenant_id},
            )
        ).scalar_one()


async def test_concurrent_earns_for_one_order_post_once(make_merchant, db, settings):
    """Two POS retries of one purchase under different keys, racing: only one may post.

    The race is made deterministic: as the owner, lock the merchant's issuance account, so every
    earn stops at its first ledger entry (after the duplicate check), then let them all go at once.
    """
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())

    async def earn(order: str) -> dict[str, Any]:
        data = await merchant.api(
            EARN, i={"memberNumber": number, "amount": "10", "orderRef": order, "idempotencyKey": unique("k")}
        )
        return data["earnPoints"]

    assert (await earn("warm-up"))["userErrors"] == []  # creates the accounts the earns will touch
    owner = create_async_engine(settings.database_url)
    try:
        async with owner.connect() as conn:
            gate = await conn.begin()
            locked = await conn.execute(
                text("SELECT id FROM accounts WHERE kind = 'tenant_issuance' AND tenant_id = :t FOR UPDATE"),
                {"t": merchant.tenant_id},
            )
            assert len(locked.all()) == 1
            racing = [asyncio.create_task(earn("POS-1")) for _ in range(5)]
            for _ in range(200):  # until all five wait on a lock (at most ~10 s)
                waiting = await conn.scalar(
                    text(
                        "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
                    )
                )
                if waiting >= 5:
                    break
                await asyncio.sleep(0.05)
            await gate.rollback()
        results = await asyncio.gather(*racing)
    finally:
        await owner.dispose()
    assert {e["code"] for r in results for e in r["userErrors"]} <= {"DUPLICATE_ORDER"}
    assert sum(1 for r in results if not r["userErrors"]) == 1, results
    await assert_books_balance(db)
