"""Settlement properties over random ledger histories (DESIGN.md: ledger rules 2, 3 and 6, settlement economics).

A seeded generator drives earns, redemptions, partial and full reversals, expiry and compensation
through the GraphQL API for members enrolled at four fresh merchants, while an in-memory model of
the lots decides independently which issuer's points every redemption consumed (soonest-expiring
first, then oldest) and which lots every reversal gives back (the reverse of consumption order).
The members' postings are then moved into two consecutive past months of their own, so that
reversals after the cut of redemptions before it land in the second month as negative
obligations, and both months are settled and checked against the model to the cent.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from alliance.api.ids import from_global_id
from alliance.db.database import OPERATOR, run_sql
from alliance.ledger.service import verify_ledger
from alliance.settlement.service import expire_lots
from alliance.tenants.models import TenantCategory
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, REDEEM, enroll
from tests.settlement.test_worked_example import TERMS

ZONE = ZoneInfo("Asia/Shanghai")  # the alliance's (and the POINTS terms') time zone
CENT = Decimal("0.01")
OPERATOR_PARTY = "OPERATOR"
ALLIANCE = "ALLIANCE"
REASONS = ("MERCHANT_FAULT", "SYSTEM_FAILURE", "REWARD_WITHDRAWN", "STORE_CLOSED", "GOODWILL")

REVERSE = """mutation($i: ReverseTransactionInput!) { reverseTransaction(input: $i) {
  transaction { id kind points } balance { asset available held } userErrors { field code message } } }"""
COMPENSATE = """mutation($i: CompensatePointsInput!) { compensatePoints(input: $i) {
  transaction { id kind points } balance { asset available held } userErrors { field code message } } }"""
EXTEND = """mutation($i: ExtendExpiryInput!) { extendExpiry(input: $i) { extendedLots points userErrors { code } } }"""
BATCH_FIELDS = """batch { id status linePoints crossRedeemedPoints reversedPoints grossAmount feeAmount
  lines(first: 100) { edges { node { issuerCode redeemerCode points grossAmount feeAmount netAmount } }
    pageInfo { hasNextPage } }
  positions { party receivable payable netAmount } instructions { party direction amount } }
  userErrors { field code message }"""
RUN = "mutation($i: RunSettlementInput!) { runSettlement(input: $i) { " + BATCH_FIELDS + " } }"
TERMS_IN_FORCE = """query($at: DateTime!) { settlementTerms(asset: "POINTS", at: $at) {
  model feeBps settlementValue effectiveFrom } }"""
RECONCILE = """query($id: ID!) { settlementReconciliation(batchId: $id) {
  matches differences { issuerCode redeemerCode batchPoints ledgerPoints } } }"""
BREAKAGE = 'query($f: Date!, $t: Date!) { breakage(from: $f, to: $t, asset: "POINTS") { issuerCode points } }'

# Months already taken by this module in this session (each seed settles two consecutive ones).
_USED_MONTHS: set[date] = set()


def pk(global_id: str) -> int:
    return from_global_id(global_id)[1]


def month_start(month: date) -> datetime:
    return datetime.combine(month, time(), ZONE)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def price(points: int, value: Decimal, fee_bps: int) -> tuple[Decimal, Decimal, Decimal]:
    """A line priced as DESIGN.md says: half-even to the cent, the fee taken from what the redeemer gets."""
    gross = (points * value).quantize(CENT, rounding=ROUND_HALF_EVEN)
    fee = (gross * fee_bps / Decimal(10000)).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return gross, fee, gross - fee


# -- the model -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Lot:
    id: int  # the ledger's lot id: identity only, the model decides what happens to it
    issuer: str | None  # merchant code; None for alliance-funded (operator compensation)
    amount: int
    remaining: int
    expires_at: datetime | None
    seq: int  # issue order
    expired: bool = False

    def consumption_key(self) -> tuple[bool, datetime, int]:
        """Soonest-expiring first (never-expiring last), then oldest."""
        return (self.expires_at is None, self.expires_at or datetime.max.replace(tzinfo=UTC), self.seq)


@dataclass(eq=False)
class Redemption:
    tx: str  # global id
    member: str
    redeemer: str
    points: int
    consumed: list[tuple[Lot, int]]  # in consumption order
    restored: Counter[int] = field(default_factory=Counter)  # original lot id -> points given back
    reversed: int = 0

    @property
    def left(self) -> int:
        return self.points - self.reversed


@dataclass
class Model:
    lots: dict[str, list[Lot]] = field(default_factory=dict)
    redemptions: list[Redemption] = field(default_factory=list)
    period: int = 0  # 0: month M, 1: month M+1
    seq: int = 0
    consumed: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # (period, issuer, redeemer)
    restored: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    breakage: Counter[tuple[int, str]] = field(default_factory=Counter)  # (period, issuer or ALLIANCE)

    def available(self, member: str) -> int:
        return sum(lot.remaining for lot in self.lots[member] if not lot.expired)

    def add_lot(
        self, member: str, lot_id: int, issuer: str | None, points: int, expires: datetime | None
    ) -> Lot:
        self.seq += 1
        lot = Lot(lot_id, issuer, points, points, expires, self.seq)
        self.lots[member].append(lot)
        return lot

    def consumption_plan(self, member: str, points: int) -> list[tuple[Lot, int]]:
        plan, left = [], points
        for lot in sorted(
            (lot for lot in self.lots[member] if lot.remaining > 0 and not lot.expired),
            key=Lot.consumption_key,
        ):
            if left == 0:
                break
            take = min(left, lot.remaining)
            plan.append((lot, take))
            left -= take
        assert left == 0, "the generator never redeems more than the model says is available"
        return plan

    def redeem(self, redemption: Redemption) -> None:
        for lot, take in redemption.consumed:
            lot.remaining -= take
            if lot.issuer is not None and lot.issuer != redemption.redeemer:
                self.consumed[self.period, lot.issuer, redemption.redeemer] += take
        self.redemptions.append(redemption)

    @staticmethod
    def restore_plan(redemption: Redemption, points: int) -> list[tuple[Lot, int]]:
        """Which consumed lots a reversal of ``points`` gives back to, and how much to each: the most
        recently consumed points first (the reverse of consumption order, whatever happened to the
        lots' expiry since)."""
        consumed = list(reversed(redemption.consumed))
        plan, left = [], points
        for lot, take in consumed:
            if left == 0:
                break
            restorable = take - redemption.restored[lot.id]
            if restorable > 0:
                plan.append((lot, min(left, restorable)))
                left -= min(left, restorable)
        assert left == 0
        return plan

    def reverse(self, redemption: Redemption, plan: list[tuple[Lot, int]]) -> list[tuple[Lot, int]]:
        """Apply a reversal; returns the expired lots whose share comes back as a fresh lot (and how much)."""
        fresh = []
        for lot, take in plan:
            redemption.restored[lot.id] += take
            redemption.reversed += take
            if lot.expired:
                fresh.append((lot, take))
            else:
                lot.remaining += take
            if lot.issuer is not None and lot.issuer != redemption.redeemer:
                self.restored[self.period, lot.issuer, redemption.redeemer] += take
        return fresh

    def expected_lines(self, period: int) -> dict[tuple[str, str], int]:
        pairs = {(i, r) for (p, i, r) in self.consumed | self.restored if p == period}
        lines = {(i, r): self.consumed[period, i, r] - self.restored[period, i, r] for i, r in pairs}
        return {pair: points for pair, points in lines.items() if points != 0}


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class World:
    settings: Any
    db: Any
    operator: Any
    owner: AsyncEngine
    merchants: dict[str, Any]  # code -> Merchant
    codes_by_id: dict[int, str]
    members: list[str]
    model: Model
    rng: random.Random
    redeemers: list[str] = field(default_factory=list)  # merchants taking points (default: all)

    async def lots_of(self, transaction: str) -> list[Any]:
        async with self.db.transaction(OPERATOR) as session:
            return (
                await run_sql(
                    session,
                    text(
                        "SELECT id, issuer_tenant_id, amount, remaining, expires_at, restored_from_lot_id"
                        " FROM lots WHERE transaction_id = :t ORDER BY id"
                    ),
                    {"t": pk(transaction)},
                )
            ).all()

    async def movements_of(self, transaction: str, kind: str) -> dict[int, int]:
        async with self.db.transaction(OPERATOR) as session:
            rows = await run_sql(
                session,
                text("SELECT lot_id, points FROM lot_movements WHERE transaction_id = :t AND kind = :k"),
                {"t": pk(transaction), "k": kind},
            )
            return {row.lot_id: abs(row.points) for row in rows}

    def issuer_code(self, tenant_id: int | None) -> str | None:
        return None if tenant_id is None else self.codes_by_id[tenant_id]

    async def mutate(self, api: Any, query: str, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Post with an idempotency key; sometimes retry it, which must answer the same and post nothing."""
        request = {**request, "idempotencyKey": unique("k")}
        payload = (await api(query, i=request))[name]
        assert payload["userErrors"] == [], (name, request, payload)
        if self.rng.random() < 0.1:
            assert (await api(query, i=request))[name] == payload, "a retry answers the original result"
        return payload

    async def credit(self, api: Any, query: str, name: str, member: str, request: dict[str, Any]) -> Lot:
        payload = await self.mutate(api, query, name, request)
        (row,) = await self.lots_of(payload["transaction"]["id"])
        points = payload["transaction"]["points"]
        assert (row.amount, row.remaining) == (points, points)
        lot = self.model.add_lot(
            member, row.id, self.issuer_code(row.issuer_tenant_id), points, row.expires_at
        )
        assert payload["balance"]["available"] == self.model.available(member)
        return lot

    async def earn(self) -> None:
        code, member = self.rng.choice(list(self.merchants)), self.rng.choice(self.members)
        amount = Decimal(self.rng.randint(100, 60000)) / 100
        request = {"memberNumber": member, "amount": f"{amount:.2f}", "orderRef": unique("o")}
        lot = await self.credit(self.merchants[code].api, EARN, "earnPoints", member, request)
        assert (lot.issuer, lot.amount) == (code, int(amount)), "1 point per CNY, floored"

    async def compensate(self) -> None:
        member = self.rng.choice(self.members)
        code = self.rng.choice([*self.merchants, None])
        api = self.operator if code is None else self.merchants[code].api
        request = {
            "memberNumber": member,
            "points": self.rng.randint(1, 400),
            "reason": self.rng.choice(REASONS),
        }
        lot = await self.credit(api, COMPENSATE, "compensatePoints", member, request)
        assert lot.issuer == code, "a merchant funds its own compensation, the operator the alliance's"

    async def redeem(self) -> None:
        members = [m for m in self.members if self.model.available(m) > 0]
        if not members:
            return await self.earn()
        member = self.rng.choice(members)
        available = self.model.available(member)
        points = available if self.rng.random() < 0.15 else self.rng.randint(1, max(1, available * 2 // 3))
        code = self.rng.choice(self.redeemers or list(self.merchants))
        request = {"memberNumber": member, "points": points, "orderRef": unique("r")}
        payload = await self.mutate(self.merchants[code].api, REDEEM, "redeemPoints", request)
        plan = self.model.consumption_plan(member, points)
        consumed = await self.movements_of(payload["transaction"]["id"], "consume")
        assert consumed == {lot.id: take for lot, take in plan}, "soonest-expiring first, then oldest"
        self.model.redeem(Redemption(payload["transaction"]["id"], member, code, points, plan))
        assert payload["balance"]["available"] == self.model.available(member)

    async def reverse(self, redemption: Redemption | None = None, full: bool = False) -> None:
        if redemption is None:
            open_ = [r for r in self.model.redemptions if r.left > 0]
            if not open_:
                return await self.redeem()
            redemption = self.rng.choice(open_)
        points = redemption.left if full or self.rng.random() < 0.4 else self.rng.randint(1, redemption.left)
        plan = self.model.restore_plan(redemption, points)
        request: dict[str, Any] = {"transactionId": redemption.tx, "reason": "refund"}
        if points < redemption.left or self.rng.random() < 0.5:
            request["points"] = points  # else: "all that is left"
        by_operator = self.rng.random() < 0.2
        api = self.operator if by_operator else self.merchants[redemption.redeemer].api
        payload = await self.mutate(api, REVERSE, "reverseTransaction", request)
        assert (payload["transaction"]["kind"], payload["transaction"]["points"]) == ("REVERSE", points)
        fresh = self.model.reverse(redemption, plan)
        restored = await self.movements_of(payload["transaction"]["id"], "restore")
        new_lots = {row.restored_from_lot_id: row for row in await self.lots_of(payload["transaction"]["id"])}
        assert sorted((row.restored_from_lot_id, row.amount) for row in new_lots.values()) == sorted(
            (lot.id, n) for lot, n in fresh
        ), "an expired lot's share comes back as a fresh lot"
        expected = {lot.id: n for lot, n in plan if not lot.expired}
        for lot, n in fresh:
            row = new_lots[lot.id]
            assert self.issuer_code(row.issuer_tenant_id) == lot.issuer, "same issuer"
            assert row.expires_at is None or row.expires_at > datetime.now(UTC), "fresh validity"
            self.model.add_lot(redemption.member, row.id, lot.issuer, n, row.expires_at)
            expected[row.id] = n
        assert restored == expected, "restored into the same lots, most recently consumed first"
        assert payload["balance"]["available"] == self.model.available(redemption.member)

    async def expire(self) -> None:
        # Half the time a lot an open redemption consumed: its refund then comes back as a fresh lot.
        spent = [
            (r.member, lot)
            for r in self.model.redemptions
            for lot, n in r.consumed
            if n > r.restored[lot.id] and not lot.expired
        ]
        if spent and self.rng.random() < 0.5:
            member, lot = self.rng.choice(spent)
        else:
            member = self.rng.choice(self.members)
            lots = [lot for lot in self.model.lots[member] if not lot.expired]
            if not lots:
                return await self.earn()
            lot = self.rng.choice(lots)
        async with self.owner.begin() as conn:
            lot.expires_at = (
                await conn.execute(
                    text(
                        "UPDATE lots SET expires_at = now() - interval '1 second' WHERE id = :id RETURNING expires_at"
                    ),
                    {"id": lot.id},
                )
            ).scalar_one()
        async with self.db.transaction(OPERATOR) as session:
            run = await expire_lots(session, str(uuid.uuid4()), 100_000)
        assert run.points >= lot.remaining
        lot.expired = True
        if lot.remaining:
            self.model.breakage[self.model.period, lot.issuer or ALLIANCE] += lot.remaining
        lot.remaining = 0
        balance = await self.operator(
            "query($n: String!) { member(memberNumber: $n) { balance { available } } }", n=member
        )
        assert balance["member"]["balance"]["available"] == self.model.available(member)

    async def step(self) -> None:
        operation = self.rng.choices(
            [self.earn, self.redeem, self.reverse, self.expire, self.compensate], weights=[30, 30, 16, 9, 10]
        )[0]
        await operation()


async def pick_months(db: Any, rng: random.Random) -> date:
    """Month M such that M and M+1 are settled by nobody else: 1901-1939 (no LMT, no DST in
    Asia/Shanghai), no POINTS batch nearby, no terms version starting nearby."""
    async with db.transaction(OPERATOR) as session:
        starts = [
            row[0]
            for row in await run_sql(
                session,
                text(
                    "SELECT period_start FROM settlement_batches WHERE asset = 'POINTS'"
                    " UNION ALL SELECT effective_from FROM settlement_terms WHERE asset = 'POINTS'"
                ),
            )
        ]
    for _ in range(1000):
        year = rng.choice([y for y in range(1901, 1940) if y != 1919])
        month = date(year, rng.randint(1, 11), 1)
        window = (
            month_start(month) - timedelta(days=70),
            month_start(next_month(next_month(month))) + timedelta(days=70),
        )
        if any(abs((month - used).days) < 120 for used in _USED_MONTHS):
            continue
        if any(window[0] <= start < window[1] for start in starts):
            continue
        _USED_MONTHS.add(month)
        return month
    raise AssertionError("no free month in 1901-1939")


async def backdate(world: World, cut: int, month: date) -> None:
    """Move the members' postings (business time) into M (up to the cut) and M+1 (after it), as the owner."""
    first, second = (datetime(m.year, m.month, 15, 4, tzinfo=UTC) for m in (month, next_month(month)))
    async with world.owner.begin() as conn:
        await conn.execute(text("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only"))
        await conn.execute(
            text(
                "UPDATE ledger_transactions SET effective_at = CASE WHEN id <= :cut THEN CAST(:first AS timestamptz) ELSE CAST(:second AS timestamptz) END"
                " WHERE member_id IN (SELECT id FROM members WHERE member_number = ANY(:numbers))"
            ),
            {"cut": cut, "first": first, "second": second, "numbers": world.members},
        )
        await conn.execute(text("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only"))


async def terms_for(world: World, month: date, fee_bps: int) -> list[tuple[int, Decimal]]:
    """Set POINTS terms from just before M; return (feeBps, settlementValue) in force for M and M+1."""
    effective = month_start(month) - timedelta(days=1)
    result = (
        await world.operator(
            TERMS,
            i={
                "asset": "POINTS",
                "settlementValue": "0.01",
                "feeBps": fee_bps,
                "effectiveFrom": effective.astimezone(UTC).isoformat(),
            },
        )
    )["setSettlementTerms"]
    codes = [e["code"] for e in result["userErrors"]]
    # An approved POINTS batch ending after effectiveFrom (another test's, in a later period) makes
    # the API refuse any earlier terms version; then settle under the terms in force there.
    assert codes in ([], ["PERIOD_CLOSED"]), result
    if codes == []:
        assert (result["terms"]["feeBps"], Decimal(result["terms"]["settlementValue"])) == (fee_bps, CENT)
    in_force = []
    for start in (month, next_month(month)):
        response = await world.operator.post(
            TERMS_IN_FORCE, {"at": month_start(start).astimezone(UTC).isoformat()}
        )
        body = response.json()
        if body.get("errors"):
            # No terms at all that far back: put ours in place as the owner (fixture set-up).
            async with world.owner.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO settlement_terms (asset, settlement_value, fee_bps, effective_from)"
                        " VALUES ('POINTS', 0.01, :fee, :from_) ON CONFLICT DO NOTHING"
                    ),
                    {"fee": fee_bps, "from_": effective},
                )
            body = (
                await world.operator.post(
                    TERMS_IN_FORCE, {"at": month_start(start).astimezone(UTC).isoformat()}
                )
            ).json()
        terms = body["data"]["settlementTerms"]
        assert terms["model"] == "PROVENANCE_NETTING", terms
        if codes == []:
            assert terms["feeBps"] == fee_bps and Decimal(terms["settlementValue"]) == CENT, terms
        in_force.append((terms["feeBps"], Decimal(terms["settlementValue"])))
    return in_force


def line_key(line: dict[str, Any]) -> tuple[str, str]:
    return line["issuerCode"], line["redeemerCode"]


async def check_batch(world: World, month: date, period: int, fee_bps: int, value: Decimal) -> None:
    payload = (await world.operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))[
        "runSettlement"
    ]
    assert payload["userErrors"] == [], payload
    batch = payload["batch"]
    assert batch["status"] == "DRAFT"
    assert batch["lines"]["pageInfo"]["hasNextPage"] is False
    lines = [edge["node"] for edge in batch["lines"]["edges"]]
    mine = set(world.merchants)
    own = {line_key(line): line for line in lines if {line["issuerCode"], line["redeemerCode"]} <= mine}
    assert len(own) == len(lines), "the period is this test's alone: no lines of other merchants"

    # (1) points: consumption minus restoration per pair, from the model's provenance; (2) pricing.
    expected = world.model.expected_lines(period)
    assert {pair: line["points"] for pair, line in own.items()} == expected
    for pair, points in expected.items():
        gross, fee, net = price(points, value, fee_bps)
        line = own[pair]
        assert (Decimal(line["grossAmount"]), Decimal(line["feeAmount"]), Decimal(line["netAmount"])) == (
            gross,
            fee,
            net,
        ), (pair, points, fee_bps, line)

    # (3) positions: receivables (net as redeemer) − payables (gross as issuer); the operator's fees.
    receivable: Counter[str] = Counter()
    payable: Counter[str] = Counter()
    for (issuer, redeemer), points in expected.items():
        gross, fee, net = price(points, value, fee_bps)
        receivable[redeemer] += net
        payable[issuer] += gross
        receivable[OPERATOR_PARTY] += fee
    parties = {party for pair in expected for party in pair} | ({OPERATOR_PARTY} if expected else set())
    positions = {
        p["party"]: (Decimal(p["receivable"]), Decimal(p["payable"]), Decimal(p["netAmount"]))
        for p in batch["positions"]
    }
    assert positions == {
        party: (
            Decimal(receivable[party]),
            Decimal(payable[party]),
            Decimal(receivable[party]) - Decimal(payable[party]),
        )
        for party in parties
    }
    assert sum(net for _, _, net in positions.values()) == 0, "positions sum to zero"
    assert positions.get(OPERATOR_PARTY, (0, 0, 0))[2] == sum(Decimal(line["feeAmount"]) for line in lines)

    # (4) one payment per party: PAY what it owes, RECEIVE what it is owed, nothing for zero.
    instructions = sorted((i["party"], i["direction"], Decimal(i["amount"])) for i in batch["instructions"])
    assert instructions == sorted(
        (party, "PAY" if net < 0 else "RECEIVE", abs(net))
        for party, (_, _, net) in positions.items()
        if net != 0
    )

    # (5) totals: Σ line points = cross-merchant redeemed − reversed; amounts add up.
    consumed = sum(n for (p, _, _), n in world.model.consumed.items() if p == period)
    restored = sum(n for (p, _, _), n in world.model.restored.items() if p == period)
    assert (batch["crossRedeemedPoints"], batch["reversedPoints"]) == (consumed, restored)
    assert batch["linePoints"] == sum(line["points"] for line in lines) == consumed - restored
    assert Decimal(batch["grossAmount"]) == sum((Decimal(line["grossAmount"]) for line in lines), Decimal(0))
    assert Decimal(batch["feeAmount"]) == sum((Decimal(line["feeAmount"]) for line in lines), Decimal(0))

    # (6) the stored batch matches a fresh recomputation from the ledger.
    recon = (await world.operator(RECONCILE, id=batch["id"]))["settlementReconciliation"]
    assert recon == {"matches": True, "differences": []}

    # Expired points create no obligation; they are reported as breakage per issuer.
    breakage = await world.operator(BREAKAGE, f=month.isoformat(), t=next_month(month).isoformat())
    assert {
        b["issuerCode"]: b["points"] for b in breakage["breakage"] if b["issuerCode"] in mine | {ALLIANCE}
    } == {issuer: n for (p, issuer), n in world.model.breakage.items() if p == period and n}

    # (8) running the period again rebuilds the same draft: same id, nothing counted twice.
    again = (await world.operator(RUN, i={"asset": "POINTS", "periodStart": month.isoformat()}))[
        "runSettlement"
    ]
    assert again["userErrors"] == []

    def normal(b: dict[str, Any]) -> dict[str, Any]:
        return {**b, "lines": sorted((e["node"] for e in b["lines"]["edges"]), key=line_key)}

    assert normal(again["batch"]) == normal(batch)


@pytest.mark.parametrize("seed", [7, 1234, 90210])
async def test_random_histories_settle_to_their_provenance(seed, settings, db, operator, make_merchant):
    rng = random.Random(seed)
    categories = [
        TenantCategory.SUPERMARKET,
        TenantCategory.AUTO_SERVICE,
        TenantCategory.HOTEL,
        TenantCategory.BABY_GOODS,
    ]
    merchants = [await make_merchant(category) for category in categories]
    members = []
    for _ in range(6):
        phone = random_phone()
        numbers = {await enroll(merchant, phone) for merchant in merchants}
        assert len(numbers) == 1, "one member across the alliance"
        members.append(numbers.pop())
    owner = create_async_engine(settings.database_url)
    world = World(
        settings,
        db,
        operator,
        owner,
        {m.code: m for m in merchants},
        {m.tenant_id: m.code for m in merchants},
        members,
        Model(lots={member: [] for member in members}),
        rng,
        [m.code for m in merchants],
    )
    try:
        for _ in range(8):  # everyone starts with some points
            await world.earn()
        for _ in range(rng.randint(20, 28)):
            await world.step()

        # The cut: everything posted so far settles in M, the rest in M+1.
        async with db.transaction(OPERATOR) as session:
            cut = (await run_sql(session, text("SELECT max(id) FROM ledger_transactions"))).scalar_one()
        world.model.period = 1

        def refundable_across(r: Redemption) -> int:
            return sum(
                n - r.restored[lot.id] for lot, n in r.consumed if lot.issuer not in (None, r.redeemer)
            )

        refunded = max(world.model.redemptions, key=refundable_across)
        assert refundable_across(refunded), "a cross-merchant redemption before the cut"
        # Its merchant takes no points in M+1 (say, closed for the season) but refunds one in M:
        # a negative obligation in M+1 for every issuer whose points come back.
        world.redeemers.remove(refunded.redeemer)
        await world.reverse(refunded, full=True)
        for _ in range(rng.randint(26, 32)):
            await world.step()
        assert any(points < 0 for points in world.model.expected_lines(1).values())

        # Lot by lot, the ledger holds what the model says.
        async with db.transaction(OPERATOR) as session:
            rows = (
                await run_sql(
                    session,
                    text(
                        "SELECT l.id, l.issuer_tenant_id, l.amount, l.remaining FROM lots l JOIN members m ON m.id = l.member_id"
                        " WHERE m.member_number = ANY(:numbers) AND l.asset = 'POINTS'"
                    ),
                    {"numbers": members},
                )
            ).all()
        assert {r.id: (world.issuer_code(r.issuer_tenant_id), r.amount, r.remaining) for r in rows} == {
            lot.id: (lot.issuer, lot.amount, lot.remaining)
            for lots in world.model.lots.values()
            for lot in lots
        }

        month = await pick_months(db, random.Random(f"{seed}:{secrets.token_hex(8)}"))
        await backdate(world, cut, month)
        fee_bps = rng.choice([0, 1, 25, 99, 150, 200, 250, 275, 300, rng.randint(0, 300)])
        in_force = await terms_for(world, month, fee_bps)
        for period, start in enumerate((month, next_month(month))):
            fee, value = in_force[period]
            await check_batch(world, start, period, fee, value)

        # (7) the books hold every invariant.
        async with db.transaction(OPERATOR) as session:
            assert await verify_ledger(session) == []
    finally:
        await owner.dispose()


# -- partial refunds after a consumed lot's expiry changed ------------------------------------------


# Regression: ledger_reverse once ordered restoration by the lots' *current* expires_at DESC,
# issued_at DESC instead of the reverse of consumption order, so after a consumed lot expired or
# was extended a partial refund gave back another issuer's points (and moved the wrong issuer's
# obligation in settlement). lot_movements.seq now records the consumption order.
@pytest.mark.parametrize("change", ["expire_last_consumed_lot", "extend_first_consumed_lot"])
async def test_partial_reversal_gives_back_the_most_recently_consumed_points(
    change, settings, db, make_merchant
):
    x, y, redeemer = (
        await make_merchant(TenantCategory.SUPERMARKET),
        await make_merchant(TenantCategory.AUTO_SERVICE),
        await make_merchant(TenantCategory.HOTEL),
    )
    phone = random_phone()
    number = await enroll(x, phone)
    await enroll(y, phone)
    await enroll(redeemer, phone)

    async def post(api, query, name, **request):  # type: ignore[no-untyped-def]
        payload = (await api(query, i={"memberNumber": number, "idempotencyKey": unique("k"), **request}))[
            name
        ]
        assert payload["userErrors"] == [], payload
        return payload["transaction"]["id"]

    await post(x.api, EARN, "earnPoints", amount="100", orderRef="A")  # issued first
    await post(y.api, EARN, "earnPoints", amount="100", orderRef="B")  # same expiry, issued later
    if change == "extend_first_consumed_lot":
        first = await post(redeemer.api, REDEEM, "redeemPoints", points=50, orderRef="R0")  # A: 50 left
    refunded = await post(
        redeemer.api,
        REDEEM,
        "redeemPoints",
        points=150 if change.startswith("expire") else 100,
        orderRef="R1",
    )
    # R1 consumed A's points first and B's last; B's are the most recently consumed.
    if change == "expire_last_consumed_lot":
        engine = create_async_engine(settings.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE lots SET expires_at = now() - interval '1 second' WHERE issuer_tenant_id = :y"
                        " AND member_id = (SELECT id FROM members WHERE member_number = :n)"
                    ),
                    {"y": y.tenant_id, "n": number},
                )
        finally:
            await engine.dispose()
        async with db.transaction(OPERATOR) as session:
            await expire_lots(session, str(uuid.uuid4()), 100_000)
    else:
        # Give R0's points back to A, then A's merchant extends A (its only open lot of this member).
        reversed_ = (
            await redeemer.api(
                REVERSE, i={"transactionId": first, "reason": "refund", "idempotencyKey": unique("k")}
            )
        )["reverseTransaction"]
        assert reversed_["userErrors"] == []
        extended = (
            await x.api(
                EXTEND,
                i={
                    "memberNumber": number,
                    "days": 90,
                    "reason": "STORE_CLOSED",
                    "idempotencyKey": unique("k"),
                },
            )
        )["extendExpiry"]
        assert extended == {"extendedLots": 1, "points": 50, "userErrors": []}, extended
    refund = (
        await redeemer.api(
            REVERSE,
            i={"transactionId": refunded, "reason": "refund", "points": 30, "idempotencyKey": unique("k")},
        )
    )["reverseTransaction"]
    assert refund["userErrors"] == []
    async with db.transaction(OPERATOR) as session:
        issuers = (
            await run_sql(
                session,
                text(
                    "SELECT l.issuer_tenant_id, mv.points FROM lot_movements mv JOIN lots l ON l.id = mv.lot_id"
                    " WHERE mv.transaction_id = :t AND mv.kind = 'restore'"
                ),
                {"t": pk(refund["transaction"]["id"])},
            )
        ).all()
    # The refund gives back B's points (consumed last), so settlement moves Y's obligation, not X's.
    assert [(r.issuer_tenant_id, r.points) for r in issuers] == [(y.tenant_id, 30)]
