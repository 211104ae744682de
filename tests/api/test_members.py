"""Member enrolment and lookup through GraphQL.

A member is one person across the alliance (keyed by phone); each merchant that enrols them
holds its own reference. A merchant sees only the members it has enrolled.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest
from sqlalchemy import text

from alliance.db import AccessContext
from alliance.db.database import OPERATOR, run_sql
from tests.conftest import random_phone, unique

ENROLL = """
mutation($i: EnrollMemberInput!) {
  enrollMember(input: $i) {
    member { id memberNumber phone name birthday status externalRef }
    created
    userErrors { field code message }
  }
}"""
MEMBER = "query($n: String!) { member(memberNumber: $n) { memberNumber phone externalRef } }"


def spaced_cn_mobile() -> tuple[str, str]:
    """A CN mobile number as a cashier types it ("139 1234 5678"), and its E.164 form."""
    digits = "139" + "".join(secrets.choice("0123456789") for _ in range(8))
    return f"{digits[:3]} {digits[3:7]} {digits[7:]}", "+86" + digits


async def enroll(api, phone: str, ref: str, **extra) -> dict:  # type: ignore[no-untyped-def]
    return (await api(ENROLL, i={"phone": phone, "externalRef": ref} | extra))["enrollMember"]


async def members_with_phone(db, phone: str) -> int:  # type: ignore[no-untyped-def]
    async with db.transaction(OPERATOR) as session:
        result = await run_sql(session, text("SELECT count(*) FROM members WHERE phone = :p"), {"p": phone})
        return result.scalar_one()


async def test_enroll_creates_a_member(make_merchant, operator) -> None:
    m = await make_merchant()
    typed, e164 = spaced_cn_mobile()
    payload = await enroll(m.api, typed, "CUST-1", name=" Li Wei ", birthday="1990-05-17")
    assert payload["userErrors"] == []
    assert payload["created"] is True
    member = payload["member"]
    assert member["memberNumber"]
    assert member["phone"] == e164
    assert member["name"] == "Li Wei"
    assert member["birthday"] == "1990-05-17"
    assert member["status"] == "active"
    assert member["externalRef"] == "CUST-1"
    # The operator finds the same member by number.
    found = (await operator(MEMBER, n=member["memberNumber"]))["member"]
    assert found["phone"] == e164


@pytest.mark.parametrize(
    ("typed", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("138-0013-8000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("0086 13800138000", "+8613800138000"),
        ("+44 20 7183 8750", "+442071838750"),
    ],
)
def test_phone_normalisation(typed: str, e164: str) -> None:
    from alliance.members.phone import normalize_phone

    assert normalize_phone(typed) == e164


async def test_same_phone_at_a_second_merchant_links_the_same_member(make_merchant, db) -> None:
    a, b = await make_merchant(), await make_merchant()
    typed, e164 = spaced_cn_mobile()
    first = await enroll(a.api, typed, "A-1")
    # Typed differently at the second merchant: still the same person.
    second = await enroll(b.api, e164, "B-77")
    assert second["userErrors"] == []
    assert second["created"] is False
    assert second["member"]["memberNumber"] == first["member"]["memberNumber"]
    assert second["member"]["externalRef"] == "B-77"
    assert await members_with_phone(db, e164) == 1
    # Each merchant sees its own reference for the shared member.
    number = first["member"]["memberNumber"]
    assert (await a.api(MEMBER, n=number))["member"]["externalRef"] == "A-1"
    assert (await b.api(MEMBER, n=number))["member"]["externalRef"] == "B-77"


async def test_re_enrolling_is_a_harmless_retry(make_merchant, db) -> None:
    m = await make_merchant()
    phone = random_phone()
    first = await enroll(m.api, phone, "R-1")
    again = await enroll(m.api, phone, "R-1")
    assert again["userErrors"] == []
    assert again["created"] is False
    assert again["member"]["memberNumber"] == first["member"]["memberNumber"]
    assert await members_with_phone(db, phone) == 1


async def test_same_member_under_a_second_reference_is_refused(make_merchant) -> None:
    m = await make_merchant()
    phone = random_phone()
    await enroll(m.api, phone, "R-1")
    payload = await enroll(m.api, phone, "R-2")
    assert payload["member"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("phone", "MEMBER_ALREADY_ENROLLED")]


@pytest.mark.parametrize("phone", ["12345", "not a phone", "+86 123 4567 8901", "23800138000", ""])
async def test_malformed_phone(make_merchant, phone: str) -> None:
    m = await make_merchant()
    payload = await enroll(m.api, phone, unique("r"))
    assert payload["member"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("phone", "INVALID_PHONE")]


async def test_full_width_digits_are_a_user_error_not_an_internal_error(make_merchant) -> None:
    # Full-width digits are what a Chinese IME produces when the cashier forgets to switch.
    m = await make_merchant()
    response = await m.api.post(ENROLL, {"i": {"phone": "13８００１３８０００", "externalRef": unique("r")}})
    body = response.json()
    assert "errors" not in body, body
    payload = body["data"]["enrollMember"]
    normalised = payload["member"] and payload["member"]["phone"] == "+8613800138000"
    assert normalised or [e["code"] for e in payload["userErrors"]] == ["INVALID_PHONE"]


async def test_invalid_external_ref(make_merchant) -> None:
    m = await make_merchant()
    for ref in ("", "has space", "x" * 129):
        payload = await enroll(m.api, random_phone(), ref)
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
            ("externalRef", "INVALID_EXTERNAL_REF")
        ], ref


async def test_external_ref_with_trailing_newline_is_refused(make_merchant) -> None:
    m = await make_merchant()
    payload = await enroll(m.api, random_phone(), "R1\n")
    assert [e["code"] for e in payload["userErrors"]] == ["INVALID_EXTERNAL_REF"]


async def test_external_ref_taken_by_another_member(make_merchant, db) -> None:
    a, b = await make_merchant(), await make_merchant()
    await enroll(a.api, random_phone(), "SHARED")
    second_phone = random_phone()
    payload = await enroll(a.api, second_phone, "SHARED")
    assert payload["member"] is None
    assert payload["created"] is False
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("externalRef", "EXTERNAL_REF_TAKEN")]
    # Nothing was written: no member exists for the second phone...
    assert await members_with_phone(db, second_phone) == 0
    # ...so enrolling it elsewhere creates a brand-new member.
    assert (await enroll(b.api, second_phone, "SHARED"))["created"] is True


async def test_merchant_cannot_see_a_member_it_did_not_enrol(make_merchant, operator) -> None:
    a, b = await make_merchant(), await make_merchant()
    number = (await enroll(b.api, random_phone(), "B-1"))["member"]["memberNumber"]
    response = await a.api.post(MEMBER, {"n": number})
    body = response.json()
    assert body["data"] == {"member": None} and "errors" not in body  # not found, not FORBIDDEN
    assert (await b.api(MEMBER, n=number))["member"]["memberNumber"] == number
    assert (await operator(MEMBER, n=number))["member"]["memberNumber"] == number


async def test_merchant_cannot_refetch_an_unlinked_member_node(make_merchant) -> None:
    a, b = await make_merchant(), await make_merchant()
    member_id = (await enroll(b.api, random_phone(), "B-1"))["member"]["id"]
    query = "query($id: ID!) { node(id: $id) { id } }"
    assert (await b.api(query, id=member_id))["node"] == {"id": member_id}
    assert (await a.api(query, id=member_id))["node"] is None


async def test_unknown_member_number_is_null(operator) -> None:
    assert (await operator(MEMBER, n="0000000000"))["member"] is None


async def test_operator_cannot_enrol(operator, db) -> None:
    phone = random_phone()
    errors = await operator.errors(ENROLL, i={"phone": phone, "externalRef": "OP-1"})
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"]
    assert await members_with_phone(db, phone) == 0


async def test_external_ref_is_the_callers_own(make_merchant, operator) -> None:
    a, b = await make_merchant(), await make_merchant()
    phone = random_phone()
    number = (await enroll(a.api, phone, "MINE-A"))["member"]["memberNumber"]
    await enroll(b.api, phone, "MINE-B")
    assert (await a.api(MEMBER, n=number))["member"]["externalRef"] == "MINE-A"
    assert (await b.api(MEMBER, n=number))["member"]["externalRef"] == "MINE-B"
    # The operator holds no reference of its own.
    assert (await operator(MEMBER, n=number))["member"]["externalRef"] is None


async def _wait_until_enrolment_blocks(db) -> None:  # type: ignore[no-untyped-def]
    """Until another session's enroll_member call is waiting on a row lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query LIKE '%enroll_member%'"
    )
    for _ in range(500):
        async with db.engine.connect() as conn:
            if await conn.scalar(query):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the concurrent enrolment never blocked")


async def test_concurrent_retry_of_linking_an_existing_member(make_merchant, db) -> None:
    a, b = await make_merchant(), await make_merchant()
    phone = random_phone()
    await enroll(b.api, phone, "B-1")  # the member already exists in the alliance
    # The original request is mid-transaction (link written, not committed) when the client,
    # having timed out, retries the very same enrolment.
    async with db.transaction(AccessContext("merchant", tenant_id=a.tenant_id)) as session:
        await run_sql(session, text("SELECT * FROM enroll_member(:p, 'A-1', NULL, NULL)"), {"p": phone})
        retry = asyncio.create_task(a.api.post(ENROLL, {"i": {"phone": phone, "externalRef": "A-1"}}))
        await _wait_until_enrolment_blocks(db)
    body = (await retry).json()
    assert "errors" not in body, body
    assert body["data"]["enrollMember"]["userErrors"] == []
    assert body["data"]["enrollMember"]["created"] is False


async def test_concurrent_enrolments_with_the_same_external_ref(make_merchant, db) -> None:
    m = await make_merchant()
    async with db.transaction(AccessContext("merchant", tenant_id=m.tenant_id)) as session:
        await run_sql(
            session, text("SELECT * FROM enroll_member(:p, 'SAME', NULL, NULL)"), {"p": random_phone()}
        )
        racer = asyncio.create_task(
            m.api.post(ENROLL, {"i": {"phone": random_phone(), "externalRef": "SAME"}})
        )
        await _wait_until_enrolment_blocks(db)
    body = (await racer).json()
    assert "errors" not in body, body
    assert [e["code"] for e in body["data"]["enrollMember"]["userErrors"]] == ["EXTERNAL_REF_TAKEN"]


async def test_enrolment_with_an_idempotency_key_replays_the_first_answer(make_merchant):
    merchant = await make_merchant()
    request = {"phone": random_phone(), "externalRef": unique("r"), "idempotencyKey": unique("k")}
    query = "mutation($i: EnrollMemberInput!) { enrollMember(input: $i) { member { memberNumber } created } }"
    first = await merchant.api(query, i=request)
    assert first["enrollMember"]["created"] is True
    assert await merchant.api(query, i=request) == first, "created stays true: the original answer"
