"""Cross-merchant figures in aggregate only: the k-anonymity threshold (9 members: withheld, 10:
shown), the coalition split, row-level security on every summary table, and no argument that
lets one merchant read another's figures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import AccessContext, run_sql
from alliance.insights.queries import latest_closed_month, month_start
from alliance.tenants.models import TenantCategory
from tests.catalog import earn as award
from tests.conftest import random_phone, unique
from tests.insights.helpers import (
    at_noon,
    business_today,
    date_links,
    date_transactions,
    days_ago,
    earn,
    run_refresh,
)
from tests.ledger.test_worked_example import REDEEM, enroll

CROSS = """query($t: String) { merchantInsights(tenantCode: $t) {
  crossMerchant { month category earnedMembers redeemedMembers suppressed }
  coalitionRetention { redeemsElsewhere { members repeatMembers repeatRate }
    redeemsOnlyHereOrNever { members repeatMembers repeatRate } uplift suppressed } } }"""
MEMBER = """query($n: String!) { merchantInsights { member(memberNumber: $n) { visits } } }"""
TENANT_TABLES = (
    "insights_member_months",
    "insights_member_recent_days",
    "insights_member_categories",
    "insights_member_tags",
    "insights_members",
    "insights_tenant_categories",
    "insights_tenant_tags",
    "insights_rising",
    "insights_reward_redemptions",
    "insights_retention",
    "insights_coalition",
    "insights_cross_categories",
)


@pytest.fixture
async def alliance_of_twenty(settings, make_merchant):
    """O (supermarket) has X1..X10, who also earn at a hotel and redeem at a clothing store in a
    closed month M, and Y1..Y10, who shop only at O. R (retail) has X1..X9. Links to O and R date
    from before M. Repeat visitors at O: X1..X4 and Y1..Y6."""
    observer = await make_merchant(TenantCategory.SUPERMARKET)
    nine = await make_merchant(TenantCategory.RETAIL)
    hotel = await make_merchant(TenantCategory.HOTEL)
    clothing = await make_merchant(TenantCategory.CLOTHING)
    today = business_today(settings)
    month = latest_closed_month(today)
    in_month = at_noon(settings, month + timedelta(days=14))
    xs, ys, dated = [], [], {}
    for index in range(10):
        phone = random_phone()
        number = await enroll(observer, phone)
        await enroll(hotel, phone)
        await enroll(clothing, phone)
        if index < 9:
            await enroll(nine, phone)
        pk, _ = await earn(hotel, number, "100")
        dated[pk] = in_month
        await award(clothing, number, 5)
        redeemed = await clothing.api(
            REDEEM,
            i={"memberNumber": number, "points": 1, "orderRef": unique("r"), "idempotencyKey": unique("k")},
        )
        assert redeemed["redeemPoints"]["userErrors"] == []
        xs.append(number)
    for _ in range(10):
        ys.append(await enroll(observer, random_phone()))
    for number in [*xs[:4], *ys[:6]]:
        for days in (1, 3):
            pk, _ = await earn(observer, number, "10")
            dated[pk] = days_ago(settings, days)
    for number in [*xs[4:], *ys[6:]]:
        await earn(observer, number, "10")
    await date_transactions(settings, dated)
    # The clothing redemptions happened in M too.
    from tests.insights.helpers import as_owner

    await as_owner(
        settings,
        [
            ("ALTER TABLE ledger_transactions DISABLE TRIGGER append_only", {}),
            (
                "UPDATE ledger_transactions SET effective_at = :at WHERE kind = 'redeem' AND tenant_id = :t",
                {"at": in_month, "t": clothing.tenant_id},
            ),
            ("ALTER TABLE ledger_transactions ENABLE TRIGGER append_only", {}),
        ],
    )
    before = at_noon(settings, month_start(month, 1))
    await date_links(settings, observer.tenant_id, [*xs, *ys], before)
    await date_links(settings, nine.tenant_id, xs, before)
    return {"observer": observer, "nine": nine, "hotel": hotel, "month": str(month), "xs": xs, "ys": ys}


async def test_k_threshold_nine_members_withheld_ten_shown(db, settings, operator, alliance_of_twenty):
    world = alliance_of_twenty
    await run_refresh(db, settings)
    month = world["month"]

    seen = (await world["observer"].api(CROSS))["merchantInsights"]
    cells = {(c["month"], c["category"]): c for c in seen["crossMerchant"]}
    assert cells[(month, "HOTEL")] == {
        "month": month,
        "category": "HOTEL",
        "earnedMembers": 10,
        "redeemedMembers": None,
        "suppressed": True,
    }
    assert (
        cells[(month, "CLOTHING")]["redeemedMembers"] == 10
        and cells[(month, "CLOTHING")]["earnedMembers"] is None
    )
    # Members redeeming elsewhere (X: 4 of 10 repeat) against the others (Y: 6 of 10).
    assert seen["coalitionRetention"] == {
        "redeemsElsewhere": {"members": 10, "repeatMembers": 4, "repeatRate": "0.4000"},
        "redeemsOnlyHereOrNever": {"members": 10, "repeatMembers": 6, "repeatRate": "0.6000"},
        "uplift": "-0.2000",
        "suppressed": False,
    }

    nine = (await world["nine"].api(CROSS))["merchantInsights"]
    assert all(c["earnedMembers"] is None and c["redeemedMembers"] is None for c in nine["crossMerchant"])
    assert nine["coalitionRetention"]["suppressed"] is True
    assert nine["coalitionRetention"]["redeemsElsewhere"]["members"] is None
    assert nine["coalitionRetention"]["redeemsOnlyHereOrNever"]["members"] is None
    # The operator, looking at R, gets no more than R does.
    assert (await operator(CROSS, t=world["nine"].code))["merchantInsights"] == nine


async def test_no_argument_reaches_another_merchant(db, settings, alliance_of_twenty):
    world = alliance_of_twenty
    await run_refresh(db, settings)
    nine, observer = world["nine"], world["observer"]
    errors = await nine.api.errors(CROSS, t=observer.code)
    assert errors[0]["extensions"]["code"] == "TENANT_NOT_FOUND"
    # Y1 is O's member, not R's: R gets nothing about them, O does.
    assert (await nine.api(MEMBER, n=world["ys"][0]))["merchantInsights"]["member"] is None
    assert (await observer.api(MEMBER, n=world["ys"][0]))["merchantInsights"]["member"]["visits"] == 2
    # Every cross-merchant and coalition figure any merchant can obtain is withheld or ≥ k.
    for merchant in (nine, observer, world["hotel"]):
        seen = (await merchant.api(CROSS))["merchantInsights"]
        figures = [c[f] for c in seen["crossMerchant"] for f in ("earnedMembers", "redeemedMembers")]
        coalition = seen["coalitionRetention"]
        figures += [coalition[g]["members"] for g in ("redeemsElsewhere", "redeemsOnlyHereOrNever")]
        assert all(f is None or f >= settings.insights_k_anonymity for f in figures), merchant.code


async def test_crossmerchant_takes_no_arguments_to_combine(settings, operator):
    """No period, filter or segment argument: the only cells are fixed closed months × categories."""
    schema = await operator("""{ __type(name: "MerchantInsights") { fields { name args { name } } } }""")
    fields = {f["name"]: f["args"] for f in schema["__type"]["fields"]}
    assert fields["crossMerchant"] == [] and fields["coalitionRetention"] == []


async def test_row_level_security_on_every_summary_table(db, settings, alliance_of_twenty):
    world = alliance_of_twenty
    await run_refresh(db, settings)
    nine = world["nine"]
    async with db.transaction(AccessContext("merchant", tenant_id=nine.tenant_id)) as session:
        for table in TENANT_TABLES:
            others = await run_sql(
                session, text(f"SELECT count(*) FROM {table} WHERE tenant_id <> :t"), {"t": nine.tenant_id}
            )
            assert others.scalar_one() == 0, table
    async with db.transaction(AccessContext("merchant", tenant_id=world["observer"].tenant_id)) as session:
        assert (await run_sql(session, text("SELECT count(*) FROM insights_members"))).scalar_one() == 20
    for table in ("insights_member_redeemers", "insights_watermarks"):
        with pytest.raises(DBAPIError, match="permission denied"):
            async with db.transaction(AccessContext("merchant", tenant_id=nine.tenant_id)) as session:
                await run_sql(session, text(f"SELECT count(*) FROM {table}"))
    with pytest.raises(DBAPIError, match="operator context"):
        async with db.transaction(AccessContext("merchant", tenant_id=nine.tenant_id)) as session:
            await run_sql(session, text("SELECT insights_refresh_retention('Asia/Shanghai', 1)"))
