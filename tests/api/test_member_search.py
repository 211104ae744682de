"""`members(search:)`: a merchant finds its own members by phone, member number or its reference."""

from __future__ import annotations

from tests.api.test_members import enroll, spaced_cn_mobile
from tests.conftest import unique

SEARCH = """query($s: String, $first: Int, $after: String) { members(search: $s, first: $first, after: $after) {
  edges { node { memberNumber phone externalRef } } pageInfo { hasNextPage endCursor } } }"""


def numbers(data: dict) -> list[str]:
    return [edge["node"]["memberNumber"] for edge in data["members"]["edges"]]


async def test_a_merchant_finds_its_members_and_only_its_own(make_merchant, operator) -> None:
    shop, other = await make_merchant(), await make_merchant()
    typed, e164 = spaced_cn_mobile()
    ref = unique("CUST")
    number = (await enroll(shop.api, typed, ref))["member"]["memberNumber"]
    other_phone, other_e164 = spaced_cn_mobile()
    other_ref = unique("VIP")
    stranger = (await enroll(other.api, other_phone, other_ref))["member"]["memberNumber"]

    for term in (typed, e164, e164[3:], number, ref):  # any spelling of the phone, the number, the ref
        found = (await shop.api(SEARCH, s=term))["members"]["edges"]
        assert [edge["node"] for edge in found] == [
            {"memberNumber": number, "phone": e164, "externalRef": ref}
        ]

    # Another merchant's member is not found by any of its keys, nor listed.
    for term in (other_phone, other_e164, stranger, other_ref):
        assert numbers(await shop.api(SEARCH, s=term)) == []
    assert numbers(await shop.api(SEARCH, s=None)) == [number]
    # The operator finds either, by a merchant's reference too.
    assert numbers(await operator(SEARCH, s=other_ref)) == [stranger]


async def test_member_listing_is_paged_and_search_is_bounded(make_merchant) -> None:
    shop = await make_merchant()
    enrolled = [
        (await enroll(shop.api, spaced_cn_mobile()[0], unique("c")))["member"]["memberNumber"]
        for _ in range(3)
    ]
    first = await shop.api(SEARCH, first=2)
    assert numbers(first) == enrolled[:2] and first["members"]["pageInfo"]["hasNextPage"] is True
    rest = await shop.api(SEARCH, first=2, after=first["members"]["pageInfo"]["endCursor"])
    assert numbers(rest) == enrolled[2:] and rest["members"]["pageInfo"]["hasNextPage"] is False

    errors = await shop.api.errors(SEARCH, s="x" * 129)
    assert errors[0]["extensions"]["code"] == "INVALID_SEARCH"
