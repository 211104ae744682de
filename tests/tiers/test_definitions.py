"""Tier definitions: the operator's upsert by code, its validation codes, who may read and write."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import AccessContext, run_sql
from tests.conftest import Api
from tests.tiers import DEFINE, TIERS, new_top_tiers, tier_code, tier_input


async def test_define_creates_then_updates_by_code(operator: Api) -> None:
    existing = (await operator(TIERS))["tiers"]
    rank = max(t["rank"] for t in existing) + 1
    points = max(t["qualifyingPoints"] for t in existing) + 1000
    code = tier_code()

    created = await operator(DEFINE, i=tier_input(code, rank, points, "1.5", benefits="  Lounge access  "))
    assert created["defineTier"] == {
        "tier": {
            "code": code,
            "name": f"Tier {code}",
            "rank": rank,
            "qualifyingPoints": points,
            "earnMultiplier": created["defineTier"]["tier"]["earnMultiplier"],
            "benefits": "Lounge access",
        },
        "userErrors": [],
    }
    assert Decimal(created["defineTier"]["tier"]["earnMultiplier"]) == Decimal("1.5")

    updated = await operator(
        DEFINE,
        i=tier_input(code, rank + 1, points + 500, "2.125", name="Platinum", benefits="Suite upgrades"),
    )
    tier = updated["defineTier"]["tier"]
    assert updated["defineTier"]["userErrors"] == []
    assert (tier["name"], tier["rank"], tier["qualifyingPoints"], tier["benefits"]) == (
        "Platinum",
        rank + 1,
        points + 500,
        "Suite upgrades",
    )
    assert Decimal(tier["earnMultiplier"]) == Decimal("2.125")

    listed = (await operator(TIERS))["tiers"]
    assert [t for t in listed if t["code"] == code] == [tier]
    assert [t["rank"] for t in listed] == sorted(t["rank"] for t in listed), "lowest rank first"
    assert listed[0]["rank"] == 0 and listed[0]["qualifyingPoints"] == 0, "the base tier"


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"code": "gold"}, "code", "INVALID_TIER_CODE"),
        ({"code": "G"}, "code", "INVALID_TIER_CODE"),
        ({"code": "1ST"}, "code", "INVALID_TIER_CODE"),
        ({"name": "   "}, "name", "INVALID_NAME"),
        ({"rank": -1}, "rank", "INVALID_RANK"),
        ({"qualifyingPoints": -5}, "qualifyingPoints", "INVALID_QUALIFYING_POINTS"),
        ({"earnMultiplier": "0.5"}, "earnMultiplier", "INVALID_MULTIPLIER"),
        ({"earnMultiplier": "10.5"}, "earnMultiplier", "INVALID_MULTIPLIER"),
        ({"earnMultiplier": "1.2345"}, "earnMultiplier", "INVALID_MULTIPLIER"),
        ({"benefits": "x" * 2001}, "benefits", "TOO_LONG"),
    ],
)
async def test_bad_input_gets_a_stable_code_and_writes_nothing(operator: Api, change, field, code) -> None:
    before = (await operator(TIERS))["tiers"]
    attempt = tier_input(tier_code(), max(t["rank"] for t in before) + 1, 10**8) | change
    data = await operator(DEFINE, i=attempt)
    assert data["defineTier"]["tier"] is None
    assert [(e["field"], e["code"]) for e in data["defineTier"]["userErrors"]] == [(field, code)]
    assert (await operator(TIERS))["tiers"] == before


async def test_ranks_are_unique_and_thresholds_rise_with_rank(operator: Api) -> None:
    (top,) = await new_top_tiers(operator, 1000)
    taken = await operator(DEFINE, i=tier_input(tier_code(), top["rank"], top["qualifyingPoints"] + 1))
    assert [(e["field"], e["code"]) for e in taken["defineTier"]["userErrors"]] == [("rank", "RANK_TAKEN")]
    base_taken = await operator(DEFINE, i=tier_input(tier_code(), 0, 0))
    assert [e["code"] for e in base_taken["defineTier"]["userErrors"]] == ["RANK_TAKEN"]

    # A higher rank needs more points than every lower one, and a lower rank fewer.
    easier = await operator(DEFINE, i=tier_input(tier_code(), top["rank"] + 1, top["qualifyingPoints"]))
    assert [(e["field"], e["code"]) for e in easier["defineTier"]["userErrors"]] == [
        ("qualifyingPoints", "THRESHOLD_OUT_OF_ORDER")
    ]
    below_top = await operator(DEFINE, i=tier_input(top["code"], top["rank"], 1))
    assert [e["code"] for e in below_top["defineTier"]["userErrors"]] == ["THRESHOLD_OUT_OF_ORDER"]


async def test_the_base_tier_stays_the_base(operator: Api) -> None:
    base = (await operator(TIERS))["tiers"][0]
    assert base["rank"] == 0
    moved = await operator(
        DEFINE, i=tier_input(base["code"], 999, 0, base["earnMultiplier"], name=base["name"])
    )
    assert [(e["field"], e["code"]) for e in moved["defineTier"]["userErrors"]] == [
        ("rank", "BASE_TIER_REQUIRED")
    ]
    raised = await operator(
        DEFINE, i=tier_input(base["code"], 0, 10, base["earnMultiplier"], name=base["name"])
    )
    assert [(e["field"], e["code"]) for e in raised["defineTier"]["userErrors"]] == [
        ("qualifyingPoints", "INVALID_QUALIFYING_POINTS")
    ]
    assert (await operator(TIERS))["tiers"][0] == base


async def test_everyone_reads_tiers_only_the_operator_defines_them(operator: Api, make_merchant, db) -> None:
    merchant = await make_merchant()
    listed = (await operator(TIERS))["tiers"]
    assert (await merchant.api(TIERS))["tiers"] == listed

    errors = await merchant.api.errors(DEFINE, i=tier_input(tier_code(), 900, 10**9))
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]

    # Row-level security agrees: a merchant's own transaction cannot write a definition.
    with pytest.raises(DBAPIError):
        async with db.transaction(AccessContext("merchant", tenant_id=merchant.tenant_id)) as session:
            await run_sql(
                session,
                text(
                    "INSERT INTO tiers (code, name, rank, qualifying_points) VALUES (:c, 'x', 901, 999999999)"
                ),
                {"c": tier_code()},
            )
    async with db.transaction(AccessContext("merchant", tenant_id=merchant.tenant_id)) as session:
        assert (await run_sql(session, text("UPDATE tiers SET name = 'hijacked'"))).rowcount == 0
    assert (await operator(TIERS))["tiers"] == listed
