"""Enrolment and lookup of members, always through the caller's row-level-security scope."""

from __future__ import annotations

import re
from contextlib import suppress
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.db.database import run_sql
from alliance.errors import DomainError, NotFound
from alliance.members.models import Member, MemberLink
from alliance.members.phone import normalize_phone

EXTERNAL_REF = re.compile(r"[\x21-\x7e]{1,128}")

_ENROLL = text(
    "SELECT member_id, member_number, created, error_code FROM enroll_member(:phone, :ref, :name, :birthday)"
)

_ENROLL_ERRORS = {
    "EXTERNAL_REF_TAKEN": ("externalRef", "this external reference belongs to another member"),
    "MEMBER_ALREADY_ENROLLED": ("phone", "this member is already enrolled here under another reference"),
}


@dataclass(frozen=True, slots=True)
class Enrolment:
    member: Member
    created: bool


async def enroll_member(
    session: AsyncSession, phone: str, external_ref: str, name: str | None, birthday: date | None
) -> Enrolment:
    """Create the member if the phone is new, else link the existing one to the caller's tenant."""
    e164 = normalize_phone(phone)
    if not EXTERNAL_REF.fullmatch(external_ref):
        raise DomainError(
            "INVALID_EXTERNAL_REF", "externalRef must be 1-128 printable ASCII characters", "externalRef"
        )
    if name is not None:
        name = name.strip() or None
        if name is not None and len(name) > 200:
            raise DomainError("INVALID_NAME", "name must be at most 200 characters", "name")
    if birthday is not None and birthday > date.today():
        raise DomainError("INVALID_BIRTHDAY", "birthday cannot be in the future", "birthday")
    row = (
        await run_sql(
            session, _ENROLL, {"phone": e164, "ref": external_ref, "name": name, "birthday": birthday}
        )
    ).one()
    if row.error_code is not None:
        field, message = _ENROLL_ERRORS[row.error_code]
        raise DomainError(row.error_code, message, field)
    member = await session.get(Member, row.member_id)
    assert member is not None, "an enrolled member is visible to the enrolling merchant"
    return Enrolment(member=member, created=row.created)


async def member_by_number(session: AsyncSession, member_number: str) -> Member:
    """The member, if the caller may see them; otherwise `NotFound` (never 'forbidden')."""
    member = (await session.exec(select(Member).where(Member.member_number == member_number))).first()
    if member is None:
        raise NotFound("member", "memberNumber")
    return member


async def member_by_id(session: AsyncSession, member_id: int) -> Member | None:
    return await session.get(Member, member_id)


async def external_ref_for(session: AsyncSession, tenant_id: int, member_id: int) -> str | None:
    query = select(MemberLink.external_ref).where(
        MemberLink.tenant_id == tenant_id, MemberLink.member_id == member_id
    )
    return (await session.exec(query)).first()


MAX_SEARCH = 128


async def search_members(
    session: AsyncSession, search: str | None, after_id: int | None, limit: int
) -> list[Member]:
    """Members the caller may see (a merchant: those linked to it), in id order; ``search``
    matches a phone number (any accepted spelling), a member number or a customer reference
    exactly (a merchant's own references only: row-level security hides the others)."""
    query = select(Member).order_by(col(Member.id)).limit(limit)
    if after_id is not None:
        query = query.where(col(Member.id) > after_id)
    term = (search or "").strip()
    if len(term) > MAX_SEARCH:
        raise DomainError("INVALID_SEARCH", f"search is at most {MAX_SEARCH} characters", "search")
    if term:
        by_ref = select(MemberLink.member_id).where(MemberLink.external_ref == term)
        matches = [col(Member.member_number) == term, col(Member.id).in_(by_ref)]
        with suppress(DomainError):  # not a phone number: a member number or a reference
            matches.append(col(Member.phone) == normalize_phone(term, "search"))
        query = query.where(or_(*matches))
    return list((await session.exec(query)).all())
