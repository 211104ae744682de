"""Who sees a member's tier, progress and tier changes: the API and row-level security agree."""

from __future__ import annotations

from sqlalchemy import text

from alliance.db.database import AccessContext, run_sql
from tests.conftest import Api, random_phone
from tests.ledger.test_worked_example import enroll
from tests.tiers import MEMBER_TIER, earn, new_top_tiers, upgrade_if_qualified

CHANGES_OF = """query($n: String) { tierChanges(memberNumber: $n, first: 50) {
  edges { node { memberNumber toTier reason rollingPoints } } } }"""


async def member_pk(db, number: str) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction(AccessContext("operator")) as session:
        query = text("SELECT id FROM members WHERE member_number = :n")
        return (await run_sql(session, query, {"n": number})).scalar_one()


async def member_token(app, http, db, number: str) -> Api:  # type: ignore[no-untyped-def]
    return Api(http, app.state.token_issuer.for_member(await member_pk(db, number), number).access_token)


def numbers_in(data) -> set[str]:  # type: ignore[no-untyped-def]
    return {edge["node"]["memberNumber"] for edge in data["tierChanges"]["edges"]}


async def test_visibility_of_tiers_and_their_changes(
    app, http, db, make_merchant, operator: Api, settings
) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    linked = await make_merchant()
    stranger = await make_merchant()
    number = await enroll(linked, random_phone())
    other = await enroll(stranger, random_phone())
    await earn(linked, number, top["qualifyingPoints"])
    await upgrade_if_qualified(settings, number)

    # The operator sees everything, rolling points included.
    seen = await operator(CHANGES_OF, n=number)
    assert [e["node"]["toTier"] for e in seen["tierChanges"]["edges"]] == [top["code"]]
    assert seen["tierChanges"]["edges"][0]["node"]["rollingPoints"] >= top["qualifyingPoints"]
    assert number in numbers_in(await operator(CHANGES_OF, n=None))

    # The linked merchant sees the tier and its changes, but not the points earned elsewhere.
    as_linked = (await linked.api(MEMBER_TIER, n=number))["member"]
    assert as_linked["tier"]["code"] == top["code"]
    assert as_linked["tierProgress"] is None
    changes = await linked.api(CHANGES_OF, n=number)
    assert [(e["node"]["toTier"], e["node"]["rollingPoints"]) for e in changes["tierChanges"]["edges"]] == [
        (top["code"], None)
    ]
    assert numbers_in(await linked.api(CHANGES_OF, n=None)) <= {number}

    # A merchant the member never enrolled with sees nothing at all.
    assert (await stranger.api(MEMBER_TIER, n=number))["member"] is None
    assert (await stranger.api(CHANGES_OF, n=number))["tierChanges"]["edges"] == []
    assert number not in numbers_in(await stranger.api(CHANGES_OF, n=None))
    pk = await member_pk(db, number)
    async with db.transaction(AccessContext("merchant", tenant_id=stranger.tenant_id)) as session:
        for table in ("member_tiers", "tier_changes"):
            query = text(f"SELECT count(*) FROM {table} WHERE member_id = :m")
            assert (await run_sql(session, query, {"m": pk})).scalar_one() == 0, table
        # Nothing of any member the stranger has not enrolled.
        unlinked = text(
            "SELECT count(*) FROM tier_changes t WHERE NOT EXISTS (SELECT 1 FROM member_links l"
            " WHERE l.member_id = t.member_id AND l.tenant_id = :tenant)"
        )
        assert (await run_sql(session, unlinked, {"tenant": stranger.tenant_id})).scalar_one() == 0
    # Progress is not a merchant's to read, even by calling the function directly.
    async with db.transaction(AccessContext("merchant", tenant_id=linked.tenant_id)) as session:
        progress = await run_sql(session, text("SELECT count(*) FROM tier_progress(:m)"), {"m": pk})
        assert progress.scalar_one() == 0

    # The member sees their own tier, progress and changes (their own by default)...
    member = await member_token(app, http, db, number)
    own = (await member(MEMBER_TIER, n=number))["member"]
    assert own["tier"]["code"] == top["code"]
    assert own["tierProgress"]["currentCode"] == top["code"]
    assert own["tierProgress"]["rollingPoints"] >= top["qualifyingPoints"]
    assert numbers_in(await member(CHANGES_OF, n=None)) == {number}
    assert numbers_in(await member(CHANGES_OF, n=number)) == {number}
    # ...and nothing of anyone else's.
    assert (await member(CHANGES_OF, n=other))["tierChanges"]["edges"] == []
    assert (await member(MEMBER_TIER, n=other))["member"] is None
    stranger_member = await member_token(app, http, db, other)
    assert (await stranger_member(CHANGES_OF, n=number))["tierChanges"]["edges"] == []
    assert (await stranger_member(CHANGES_OF, n=None))["tierChanges"]["edges"] == []


async def test_a_member_never_moved_holds_the_base_tier(make_merchant, operator: Api) -> None:
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    tiers = (await operator("{ tiers { code rank } }"))["tiers"]
    member = (await merchant.api(MEMBER_TIER, n=number))["member"]
    assert (member["tier"]["code"], member["tier"]["rank"]) == (tiers[0]["code"], 0)
    assert member["tier"]["since"] is not None
    shown = (await operator(MEMBER_TIER, n=number))["member"]["tierProgress"]
    assert shown["currentCode"] == tiers[0]["code"]
    assert shown["rollingPoints"] == 0
    assert shown["nextCode"] == tiers[1]["code"]


async def test_tier_changes_page_with_cursors(make_merchant, operator: Api, settings) -> None:
    tiers = await new_top_tiers(operator, 1000, 1000, 1000)
    merchant = await make_merchant()
    number = await enroll(merchant, random_phone())
    for tier in tiers:
        await earn(merchant, number, tier["qualifyingPoints"] - (await _rolling(operator, number)))
        await upgrade_if_qualified(settings, number)
    query = """query($n: String, $after: String) { tierChanges(memberNumber: $n, first: 2, after: $after) {
      edges { node { toTier } } pageInfo { hasNextPage endCursor } } }"""
    first = (await operator(query, n=number, after=None))["tierChanges"]
    assert [e["node"]["toTier"] for e in first["edges"]] == [tiers[2]["code"], tiers[1]["code"]]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = (await operator(query, n=number, after=first["pageInfo"]["endCursor"]))["tierChanges"]
    assert [e["node"]["toTier"] for e in rest["edges"]] == [tiers[0]["code"]]
    assert rest["pageInfo"]["hasNextPage"] is False
    errors = await operator.errors("{ tierChanges(first: 1000) { edges { cursor } } }")
    assert [e["extensions"]["code"] for e in errors] == ["INVALID_PAGE_SIZE"]


async def _rolling(operator: Api, number: str) -> int:
    return (await operator(MEMBER_TIER, n=number))["member"]["tierProgress"]["rollingPoints"]
