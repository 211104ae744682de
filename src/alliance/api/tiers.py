"""GraphQL for member tiers: the operator's definitions, a member's tier and progress, the audit.

Everyone with a token reads the definitions; the operator defines them and may set a member's
tier. A member's tier is part of the member record (merchants see it for linked members); the
rolling points behind it are the member's and the operator's only, since they would tell a
merchant what the member earned elsewhere.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.ledger import BigInt
from alliance.api.mutations import run_in_transaction
from alliance.api.types import Connection, Node, PageInfo, UserError, build_connection, page_size
from alliance.auth.principal import LEDGER_READ, TIERS_READ, TIERS_WRITE
from alliance.errors import NotFound
from alliance.members import service as members
from alliance.tiers import service
from alliance.tiers.models import Tier, TierChangeRow


@strawberry.type(name="Tier", description="An alliance-wide member tier, defined by the operator.")
class TierType:
    code: str
    name: str
    rank: int = strawberry.field(description="0 is the base tier every member starts in; higher is better.")
    qualifying_points: int = strawberry.field(
        description="Points earned over a rolling 12 months that qualify a member for this tier."
    )
    earn_multiplier: Decimal = strawberry.field(description="Applied to points earned at every merchant.")
    benefits: str

    @classmethod
    def from_model(cls, tier: Tier) -> TierType:
        return cls(
            code=tier.code,
            name=tier.name,
            rank=tier.rank,
            qualifying_points=tier.qualifying_points,
            earn_multiplier=tier.earn_multiplier,
            benefits=tier.benefits,
        )


@strawberry.type(description="A member's current tier.")
class MemberTier:
    code: str
    name: str
    rank: int
    earn_multiplier: Decimal
    since: datetime = strawberry.field(description="When the member entered this tier (or enrolled).")


@strawberry.type(description="Where a member stands: their rolling points and what the next tier needs.")
class TierProgress:
    current_code: str
    next_code: str | None = strawberry.field(description="The next tier up; null at the top.")
    rolling_points: BigInt = strawberry.field(
        description="Qualifying points earned over the rolling 12 months."
    )
    points_to_next: BigInt | None = strawberry.field(description="Points still to earn for the next tier.")
    points_to_keep: BigInt = strawberry.field(
        description="Points still to earn to stay above the current tier's threshold (0 when above)."
    )
    below_since: datetime | None = strawberry.field(
        description="Set while below the current tier's threshold: the grace period started then."
    )
    grace_ends_at: datetime | None = strawberry.field(
        description="The first nightly evaluation after this moves the member down, if still below."
    )


@strawberry.enum
class TierChangeReason(Enum):
    QUALIFIED = "qualified"
    GRACE_EXPIRED = "grace_expired"
    OPERATOR = "operator"


@strawberry.type(name="TierChange", description="One tier change of a member (the audit trail).")
class TierChangeNode(Node):
    member_number: str
    from_tier: str
    to_tier: str
    reason: TierChangeReason
    rolling_points: BigInt | None = strawberry.field(
        description="The member's rolling points at the change (null for merchants)."
    )
    created_at: datetime

    @classmethod
    def from_row(cls, row: TierChangeRow, show_points: bool) -> TierChangeNode:
        change = row.change
        return cls(
            id=strawberry.ID(to_global_id("TierChange", change.id)),
            member_number=row.member_number,
            from_tier=change.from_tier,
            to_tier=change.to_tier,
            reason=TierChangeReason(change.reason),
            rolling_points=BigInt(change.rolling_points) if show_points else None,
            created_at=change.created_at,
        )


@strawberry.input
class DefineTierInput:
    code: str = strawberry.field(description="2-32 capitals, digits or '_' (e.g. GOLD); the upsert key.")
    name: str
    rank: int
    qualifying_points: int
    earn_multiplier: Decimal = strawberry.field(description='Between "1" and "10", at most 3 decimals.')
    benefits: str = ""


@strawberry.type
class DefineTierPayload:
    tier: TierType | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class AssignMemberTierInput:
    member_number: str
    tier_code: str


@strawberry.type
class AssignMemberTierPayload:
    tier: MemberTier | None = None
    previous_tier_code: str | None = strawberry.field(
        default=None, description="The tier before; null when the member already had this one."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def member_tier(info: Info, member_pk: int) -> MemberTier | None:
    """``Member.tier``: the member's current tier (visible wherever the member is)."""
    async with info.context.transaction() as session:
        status = await service.member_tier(session, member_pk)
    if status is None:
        return None
    return MemberTier(
        code=status.code,
        name=status.name,
        rank=status.rank,
        earn_multiplier=status.earn_multiplier,
        since=status.since,
    )


async def member_tier_progress(info: Info, member_pk: int) -> TierProgress | None:
    """``Member.tierProgress``: for the member themself and the operator; null for merchants."""
    if info.context.principal.kind == "merchant":
        return None
    info.context.require(LEDGER_READ)
    async with info.context.transaction() as session:
        progress = await service.tier_progress(session, member_pk)
    if progress is None:
        return None
    return TierProgress(
        current_code=progress.current_code,
        next_code=progress.next_code,
        rolling_points=BigInt(progress.rolling_points),
        points_to_next=None if progress.points_to_next is None else BigInt(progress.points_to_next),
        points_to_keep=BigInt(progress.points_to_keep),
        below_since=progress.below_since,
        grace_ends_at=progress.grace_ends_at,
    )


def _empty() -> Connection[TierChangeNode]:
    page = PageInfo(has_next_page=False, has_previous_page=False, start_cursor=None, end_cursor=None)
    return Connection(edges=[], page_info=page)


@strawberry.type
class TierQueries:
    @strawberry.field(description="Every tier of the alliance, base tier (rank 0) first.")
    async def tiers(self, info: Info) -> list[TierType]:
        async with info.context.transaction() as session:
            rows = await service.list_tiers(session)
        return [TierType.from_model(tier) for tier in rows]

    @strawberry.field(
        description="Tier changes, newest first: of one member (a member token: their own by default), "
        "or all the caller may see (operator: every member; merchant: its linked members)."
    )
    async def tier_changes(
        self, info: Info, member_number: str | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[TierChangeNode]:
        principal = info.context.require(TIERS_READ)
        size = page_size(first, info.context.settings.max_page_size)
        before_id = from_cursor(after)
        async with info.context.transaction() as session:
            member_id = principal.member_id
            if member_number is not None:
                try:
                    member_id = (await members.member_by_number(session, member_number)).id
                except NotFound:
                    return _empty()
            rows = await service.list_changes(session, member_id, before_id, size + 1)
        show_points = principal.kind != "merchant"
        return build_connection(
            rows,
            size,
            lambda row: row.change.id,  # type: ignore[attr-defined]
            lambda row: TierChangeNode.from_row(row, show_points),  # type: ignore[arg-type]
            before_id is not None,
        )


@strawberry.type
class TierMutations:
    @strawberry.mutation(description="Create or update (by code) a tier definition. Operator only.")
    async def define_tier(self, info: Info, input: DefineTierInput) -> DefineTierPayload:
        info.context.require(TIERS_WRITE, "operator")

        async def define(session):  # type: ignore[no-untyped-def]
            return await service.define_tier(
                session,
                input.code,
                input.name,
                input.rank,
                input.qualifying_points,
                input.earn_multiplier,
                input.benefits,
            )

        result = await run_in_transaction(info.context, define)
        if isinstance(result, list):
            return DefineTierPayload(user_errors=result)
        return DefineTierPayload(tier=TierType.from_model(result))

    @strawberry.mutation(
        description="Set a member's tier (audited as OPERATOR). Operator only. It stands until the rules "
        "move it: the next qualification up, the nightly evaluation down after the grace period."
    )
    async def assign_member_tier(self, info: Info, input: AssignMemberTierInput) -> AssignMemberTierPayload:
        info.context.require(TIERS_WRITE, "operator")

        async def assign(session):  # type: ignore[no-untyped-def]
            member_id, previous = await service.assign_tier(session, input.member_number, input.tier_code)
            status = await service.member_tier(session, member_id)
            return status, previous

        result = await run_in_transaction(info.context, assign)
        if isinstance(result, list):
            return AssignMemberTierPayload(user_errors=result)
        status, previous = result
        assert status is not None
        return AssignMemberTierPayload(
            tier=MemberTier(
                code=status.code,
                name=status.name,
                rank=status.rank,
                earn_multiplier=status.earn_multiplier,
                since=status.since,
            ),
            previous_tier_code=previous,
        )
