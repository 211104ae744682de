"""GraphQL for members: enrolment by a merchant and lookup within the caller's visibility."""

from __future__ import annotations

from datetime import date, datetime

import strawberry

from alliance.api import ledger, tiers
from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.mutations import made_once, run_in_transaction
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import MEMBERS_READ, MEMBERS_WRITE
from alliance.errors import NotFound
from alliance.members import service
from alliance.members.models import Member


@strawberry.type(name="Member")
class MemberNode(Node):
    member_number: str
    phone: str
    name: str | None
    birthday: date | None
    status: str
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, member: Member) -> MemberNode:
        assert member.id is not None and member.created_at is not None
        return cls(
            id=strawberry.ID(to_global_id("Member", member.id)),
            member_number=member.member_number,
            phone=member.phone,
            name=member.name,
            birthday=member.birthday,
            status=member.status,
            created_at=member.created_at,
            pk=member.id,
        )

    @strawberry.field(description="The calling merchant's own reference for this member (merchants only).")
    async def external_ref(self, info: Info) -> str | None:
        tenant_id = info.context.principal.tenant_id
        if tenant_id is None:
            return None
        async with info.context.transaction() as session:
            return await service.external_ref_for(session, tenant_id, self.pk)

    @strawberry.field(
        description="The unified balance of every asset the member holds, across all merchants."
    )
    async def balances(self, info: Info) -> list[ledger.Balance]:
        return await ledger.member_balances(info, self.pk)

    @strawberry.field(description="One asset's balance now, or the posted balance as of a past instant.")
    async def balance(
        self, info: Info, asset: str = "POINTS", as_of: datetime | None = None
    ) -> ledger.Balance:
        return await ledger.member_balance(info, self.pk, asset, as_of)

    @strawberry.field(description="Ledger history, newest first. Merchants see only their own transactions.")
    async def transactions(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        filter: ledger.TransactionFilterInput | None = None,
    ) -> Connection[ledger.TransactionNode]:
        return await ledger.member_transactions(info, self.pk, first, after, filter)

    @strawberry.field(description="Lots (batches of points with issuer and expiry), in issue order.")
    async def lots(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        asset: str | None = None,
        open_only: bool = False,
    ) -> Connection[ledger.LotNode]:
        return await ledger.member_lots(info, self.pk, first, after, asset, open_only)

    @strawberry.field(description="The member's current alliance tier (merchants: linked members).")
    async def tier(self, info: Info) -> tiers.MemberTier | None:
        return await tiers.member_tier(info, self.pk)

    @strawberry.field(
        description="Progress to the next tier (the member and the operator; null for merchants)."
    )
    async def tier_progress(self, info: Info) -> tiers.TierProgress | None:
        return await tiers.member_tier_progress(info, self.pk)


@strawberry.input
class EnrollMemberInput:
    phone: str = strawberry.field(description="E.164 (+8613800138000) or an 11-digit CN mobile number.")
    external_ref: str = strawberry.field(
        description="The merchant's own customer reference, unique per merchant."
    )
    name: str | None = None
    birthday: date | None = None
    idempotency_key: str | None = retry_key()


@strawberry.type
class EnrollMemberPayload:
    member: MemberNode | None = None
    created: bool = strawberry.field(
        default=False, description="True when a new alliance member was created."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class MemberQueries:
    @strawberry.field(description="A member the caller may see. Unlinked members are simply not found.")
    async def member(self, info: Info, member_number: str) -> MemberNode | None:
        info.context.require(MEMBERS_READ)
        async with info.context.transaction() as session:
            try:
                member = await service.member_by_number(session, member_number)
            except NotFound:
                return None
        return MemberNode.from_model(member)

    @strawberry.field(
        description="Members the caller may see (merchants: linked ones), oldest first; `search` is an"
        " exact phone number, member number or the merchant's own customer reference."
    )
    async def members(
        self, info: Info, first: int | None = None, after: str | None = None, search: str | None = None
    ) -> Connection[MemberNode]:
        info.context.require(MEMBERS_READ, "operator", "merchant")
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.search_members(session, search, after_id, size + 1)
        return build_connection(rows, size, lambda m: m.id, MemberNode.from_model, after_id is not None)


@strawberry.type
class MemberMutations:
    @strawberry.mutation(
        description="Enrol a customer: creates the alliance member or links the existing one."
    )
    async def enroll_member(self, info: Info, input: EnrollMemberInput) -> EnrollMemberPayload:
        info.context.require(MEMBERS_WRITE, "merchant")

        async def enroll(session):  # type: ignore[no-untyped-def]
            async def recalled(earlier):  # type: ignore[no-untyped-def]
                member = await service.member_by_id(session, earlier.entity_id)
                return None if member is None else service.Enrolment(member=member, created=earlier.created)

            return await made_once(
                session,
                info.context,
                input.idempotency_key,
                lambda: service.enroll_member(
                    session, input.phone, input.external_ref, input.name, input.birthday
                ),
                lambda enrolment: (enrolment.member.id, enrolment.created),
                recalled,
            )

        result = await run_in_transaction(info.context, enroll)
        if isinstance(result, list):
            return EnrollMemberPayload(user_errors=result)
        return EnrollMemberPayload(member=MemberNode.from_model(result.member), created=result.created)
