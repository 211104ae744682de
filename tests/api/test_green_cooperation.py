"""GREEN points the operator awards a partner for environmental cooperation."""

from tests.conftest import unique

AWARD = """mutation($i: AwardTenantGreenPointsInput!) { awardTenantGreenPoints(input: $i) {
  award { points reason } tenant { code greenPoints } userErrors { field code } } }"""


async def test_operator_awards_green_points_visible_to_that_tenant_only(operator, make_merchant):
    partner, other = await make_merchant(), await make_merchant()
    key = unique("k")
    request = {
        "tenantCode": partner.code,
        "points": 800,
        "reason": "packaging take-back, Q3",
        "idempotencyKey": key,
    }
    first = await operator(AWARD, i=request)
    assert first["awardTenantGreenPoints"]["tenant"] == {"code": partner.code, "greenPoints": 800}
    again = await operator(AWARD, i=request)
    assert again == first, "a retry under the same key awards nothing more"
    reused = await operator(AWARD, i=request | {"points": 900})
    assert reused["awardTenantGreenPoints"]["userErrors"] == [
        {"field": "idempotencyKey", "code": "IDEMPOTENCY_KEY_REUSED"}
    ]
    invalid = await operator(AWARD, i=request | {"points": 0, "idempotencyKey": unique("k")})
    assert invalid["awardTenantGreenPoints"]["userErrors"] == [{"field": "points", "code": "INVALID_POINTS"}]

    seen = await partner.api("{ viewer { tenant { greenPoints greenAwards { points reason } } } }")
    assert seen["viewer"]["tenant"] == {
        "greenPoints": 800,
        "greenAwards": [{"points": 800, "reason": "packaging take-back, Q3"}],
    }
    assert (await other.api("{ viewer { tenant { greenPoints } } }"))["viewer"]["tenant"]["greenPoints"] == 0
    forbidden = await partner.api.errors(AWARD, i=request | {"idempotencyKey": unique("k")})
    assert forbidden[0]["extensions"]["code"] == "FORBIDDEN"
