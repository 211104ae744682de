from tests.conftest import random_phone, unique


async def test_operator_creates_tenant_and_merchant_enrolls(operator, make_merchant):
    code = unique("t")
    data = await operator(
        "mutation($i: CreateTenantInput!) { createTenant(input: $i) { tenant { code category status } userErrors { code } } }",
        i={"code": code, "name": "Test", "category": "HOTEL"},
    )
    assert data["createTenant"] == {
        "tenant": {"code": code, "category": "HOTEL", "status": "ACTIVE"},
        "userErrors": [],
    }
    merchant = await make_merchant()
    data = await merchant.api(
        "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber phone } created userErrors { code } } }",
        i={"phone": random_phone(), "externalRef": "C1"},
    )
    assert data["enrollMember"]["created"] is True
