"""The audit trail: operator mutations and money-moving mutations, append-only, scoped by tenant."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from alliance.db.database import OPERATOR, run_sql
from tests.conftest import random_phone, unique
from tests.ledger.test_worked_example import EARN, enroll

LOG = """query($op: String) { auditLog(first: 50, operation: $op) {
  edges { node { principal clientId tenantCode operation outcome codes inputDigest requestId } } } }"""
CREATE = (
    "mutation($i: CreateTenantInput!) { createTenant(input: $i) { tenant { code } userErrors { code } } }"
)


async def test_operator_mutations_are_recorded_with_their_outcome(operator, http):
    code = unique("audited")
    await operator(CREATE, i={"code": code, "name": "Audited", "category": "HOTEL"})
    await operator(CREATE, i={"code": code, "name": "Again", "category": "HOTEL"})  # refused: code taken
    lines = [e["node"] for e in (await operator(LOG, op="mutation:createTenant"))["auditLog"]["edges"]]
    mine = [line for line in lines if line["clientId"] == lines[0]["clientId"]][:2]
    assert [(line["outcome"], line["codes"]) for line in mine] == [
        ("refused", ["TENANT_CODE_TAKEN"]),
        ("ok", []),
    ]
    assert all(len(line["inputDigest"]) == 64 and line["principal"] == "operator" for line in mine)
    assert code not in str(mine), "the audit keeps a digest of the input, not the input"


async def test_money_moving_mutations_are_in_the_log_and_merchants_see_only_theirs(make_merchant, operator):
    merchant, other = await make_merchant(), await make_merchant()
    number = await enroll(merchant, random_phone())
    await merchant.api(
        EARN,
        i={"memberNumber": number, "amount": "10", "orderRef": unique("o"), "idempotencyKey": unique("k")},
    )
    own = [e["node"] for e in (await merchant.api(LOG, op="earn"))["auditLog"]["edges"]]
    assert own and all(line["tenantCode"] == merchant.code for line in own)
    assert own[0]["principal"] == "merchant" and own[0]["outcome"] == "ok"
    assert (await other.api(LOG, op="earn"))["auditLog"]["edges"] == []
    everyone = [e["node"]["tenantCode"] for e in (await operator(LOG, op="earn"))["auditLog"]["edges"]]
    assert merchant.code in everyone


async def test_records_cannot_be_changed_by_the_application(db):
    async with db.transaction(OPERATOR) as session:
        with pytest.raises(DBAPIError):
            await run_sql(session, text("UPDATE audit_records SET outcome = 'ok'"))
