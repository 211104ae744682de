"""GraphQL for merchant insights: ``merchantInsights`` (a merchant's own; the operator names the
merchant with ``tenantCode``) and the segment mutations. Answers come from the summary tables the
insights refresh keeps; see alliance.insights.queries for what each figure means."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import strawberry

from alliance.api.context import Context, Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.mutations import made_once_row, run_in_transaction
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import INSIGHTS_READ, RULES_WRITE
from alliance.errors import DomainError
from alliance.insights import queries, segments
from alliance.insights.models import CustomerSegment
from alliance.tenants.service import tenant_by_code


@strawberry.type
class LabelShare:
    """A category or tag: purchases (visits) and spend."""

    label: str
    visits: int
    spend: Decimal


@strawberry.type
class MemberInsight:
    member_number: str
    visits: int = strawberry.field(description="Purchases at this merchant (net of full reversals).")
    visits_last_90_days: int
    spend: Decimal
    average_spend: Decimal | None = strawberry.field(description="spend / visits, 2 places.")
    points_earned: int
    first_visit: date | None
    last_visit: date | None
    pk: strawberry.Private[int]
    tenant_id: strawberry.Private[int]

    @strawberry.field(description="Top categories over the last 12 months (current month included).")
    async def top_categories(self, info: Info) -> list[LabelShare]:
        return await self._top(info, "category")

    @strawberry.field(description="Top purchase tags over the last 12 months (current month included).")
    async def top_tags(self, info: Info) -> list[LabelShare]:
        return await self._top(info, "tag")

    async def _top(self, info: Info, by: str) -> list[LabelShare]:
        since = queries.month_start(_today(info.context), 11)
        async with info.context.transaction() as session:
            rows = await queries.member_top(session, self.tenant_id, self.pk, by, since)
        return [LabelShare(label=r.label, visits=r.visits, spend=r.spend) for r in rows]

    @classmethod
    def from_row(cls, tenant_id: int, row: Any) -> MemberInsight:
        return cls(
            member_number=row.member_number,
            visits=row.visits,
            visits_last_90_days=row.visits_90,
            spend=row.spend,
            average_spend=row.average_spend,
            points_earned=row.points,
            first_visit=row.first_visit,
            last_visit=row.last_visit,
            pk=row.member_id,
            tenant_id=tenant_id,
        )


@strawberry.type
class SegmentDefinitionShape:
    window_months: int
    category: str | None
    tag: str | None
    min_months: int | None
    min_visits: int | None
    min_spend: Decimal | None


@strawberry.type
class SegmentMember:
    member_number: str
    since: datetime


@strawberry.type(name="CustomerSegment")
class CustomerSegmentNode(Node):
    code: str
    name: str
    status: str
    definition: SegmentDefinitionShape
    member_count: int = strawberry.field(description="As of the last insights refresh.")
    refreshed_at: datetime | None
    pk: strawberry.Private[int]
    tenant_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, segment: CustomerSegment) -> CustomerSegmentNode:
        assert segment.id is not None
        shape = segments.definition_from_json(segment.definition)
        return cls(
            id=strawberry.ID(to_global_id("CustomerSegment", segment.id)),
            code=segment.code,
            name=segment.name,
            status=segment.status.upper(),
            definition=SegmentDefinitionShape(
                window_months=shape.window_months,
                category=shape.category,
                tag=shape.tag,
                min_months=shape.min_months,
                min_visits=shape.min_visits,
                min_spend=shape.min_spend,
            ),
            member_count=segment.member_count,
            refreshed_at=segment.refreshed_at,
            pk=segment.id,
            tenant_id=segment.tenant_id,
        )

    @strawberry.field(description="The segment's members as of the last refresh.")
    async def members(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[SegmentMember]:
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await queries.segment_members(session, self.tenant_id, self.pk, after_id, size + 1)
        return build_connection(
            rows,
            size,
            lambda r: r.member_id,  # type: ignore[attr-defined]
            lambda r: SegmentMember(member_number=r.member_number, since=r.since),  # type: ignore[attr-defined]
            after_id is not None,
        )


@strawberry.type
class RewardRedemptionLine:
    group: str = strawberry.field(description="The tier code or segment code; ALL for every member.")
    reward_id: strawberry.ID
    reward_name: str
    reward_kind: str
    redemptions: int
    quantity: int
    points: int
    members: int


@strawberry.type
class UnredeemedReward:
    reward_id: strawberry.ID
    reward_name: str
    reward_kind: str
    stock: int | None = strawberry.field(description="Null: unlimited.")
    last_redeemed_at: datetime | None


@strawberry.type
class RisingMember:
    member_number: str
    recent_visit_days: int
    baseline_visit_days: int
    expected_visit_days: Decimal = strawberry.field(
        description="λ: the baseline scaled to the recent window."
    )
    recent_points: int
    baseline_points: int
    reason: str = strawberry.field(description="VISITS, POINTS or VISITS_AND_POINTS.")
    score: Decimal = strawberry.field(description="(recent − λ) / √max(λ, 1).")


@strawberry.type
class CohortRetention:
    cohort_month: date
    members: int
    repeat_members: int = strawberry.field(description="Bought here on at least two business days.")
    repeat_rate: Decimal | None


@strawberry.type
class CoalitionGroup:
    members: int | None = strawberry.field(description="Null when suppressed (fewer than k in a group).")
    repeat_members: int | None
    repeat_rate: Decimal | None


@strawberry.type
class CoalitionRetention:
    redeems_elsewhere: CoalitionGroup
    redeems_only_here_or_never: CoalitionGroup
    uplift: Decimal | None = strawberry.field(
        description="Repeat rate of members who also redeem elsewhere minus the others'"
        " (the coalition's value)."
    )
    suppressed: bool


@strawberry.type
class CrossCategoryCell:
    month: date
    category: str
    earned_members: int | None = strawberry.field(description="Null when fewer than k members (suppressed).")
    redeemed_members: int | None
    suppressed: bool = strawberry.field(description="True when either figure is withheld.")


def _today(context: Context) -> date:
    return datetime.now(UTC).astimezone(ZoneInfo(context.settings.time_zone)).date()


@strawberry.type
class MerchantInsights:
    tenant_id: strawberry.Private[int]

    @strawberry.field(
        description="One linked member's profile at this merchant (null if not linked or no purchase)."
    )
    async def member(self, info: Info, member_number: str) -> MemberInsight | None:
        async with info.context.transaction() as session:
            row = await queries.member_profile(session, self.tenant_id, member_number, _today(info.context))
        return None if row is None else MemberInsight.from_row(self.tenant_id, row)

    @strawberry.field(description="Every linked member with a purchase here, by member id.")
    async def members(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[MemberInsight]:
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await queries.member_profiles(
                session, self.tenant_id, after_id, size + 1, _today(info.context)
            )
        return build_connection(
            rows,
            size,
            lambda r: r.member_id,  # type: ignore[attr-defined]
            lambda r: MemberInsight.from_row(self.tenant_id, r),
            after_id is not None,
        )

    @strawberry.field(description="Categories across members, last `months` months (current included).")
    async def top_categories(self, info: Info, months: int = 3) -> list[LabelShare]:
        return await self._top(info, "category", months)

    @strawberry.field(description="Purchase tags across members, last `months` months (current included).")
    async def top_tags(self, info: Info, months: int = 3) -> list[LabelShare]:
        return await self._top(info, "tag", months)

    async def _top(self, info: Info, by: str, months: int) -> list[LabelShare]:
        if not 1 <= months <= 24:
            raise DomainError("INVALID_MONTHS", "months must be 1 to 24", "months")
        since = queries.month_start(_today(info.context), months - 1)
        async with info.context.transaction() as session:
            rows = await queries.tenant_top(session, self.tenant_id, by, since)
        return [LabelShare(label=r.label, visits=r.visits, spend=r.spend) for r in rows]

    @strawberry.field(description="This merchant's segments (archived ones too when asked).")
    async def segments(self, info: Info, include_archived: bool = False) -> list[CustomerSegmentNode]:
        async with info.context.transaction() as session:
            found = await segments.list_segments(session, self.tenant_id, include_archived)
        return [CustomerSegmentNode.from_model(s) for s in found]

    @strawberry.field
    async def segment(self, info: Info, code: str) -> CustomerSegmentNode | None:
        async with info.context.transaction() as session:
            found = await segments.segment_by_code(session, self.tenant_id, code)
        return None if found is None else CustomerSegmentNode.from_model(found)

    @strawberry.field(description="Redemptions of this merchant's rewards by the member's current tier.")
    async def redemptions_by_tier(self, info: Info) -> list[RewardRedemptionLine]:
        async with info.context.transaction() as session:
            rows = await queries.redemptions(session, self.tenant_id, "tier", None)
        return [_redemption_line(row.group_key, row) for row in rows]

    @strawberry.field(description="Redemptions of this merchant's rewards by members of a segment (or all).")
    async def redemptions_by_segment(
        self, info: Info, segment_code: str | None = None
    ) -> list[RewardRedemptionLine]:
        async with info.context.transaction() as session:
            found = await segments.list_segments(session, self.tenant_id, True)
            codes = {str(s.id): s.code for s in found}
            if segment_code is None:
                rows = await queries.redemptions(session, self.tenant_id, "segment", None)
            else:
                key = next((pk for pk, code in codes.items() if code == segment_code), None)
                if key is None:
                    raise DomainError("SEGMENT_NOT_FOUND", f"no segment {segment_code}", "segmentCode")
                rows = await queries.redemptions(session, self.tenant_id, "segment", key)
        return [_redemption_line(codes[row.group_key], row) for row in rows if row.group_key in codes]

    @strawberry.field(description="All redemptions of this merchant's rewards, per reward.")
    async def redemptions(self, info: Info) -> list[RewardRedemptionLine]:
        async with info.context.transaction() as session:
            rows = await queries.redemptions(session, self.tenant_id, "all", "")
        return [_redemption_line("ALL", row) for row in rows]

    @strawberry.field(
        description="Active rewards with stock left that nobody redeemed in the last `days` days."
    )
    async def unredeemed_rewards(self, info: Info, days: int = 90) -> list[UnredeemedReward]:
        if not 1 <= days <= 3650:
            raise DomainError("INVALID_DAYS", "days must be 1 to 3650", "days")
        since = _today(info.context) - timedelta(days=days)
        async with info.context.transaction() as session:
            rows = await queries.unredeemed_rewards(session, self.tenant_id, since)
        return [
            UnredeemedReward(
                reward_id=strawberry.ID(to_global_id("Reward", r.reward_id)),
                reward_name=r.reward_name,
                reward_kind=r.reward_kind.upper(),
                stock=r.stock,
                last_redeemed_at=r.last_redeemed_at,
            )
            for r in rows
        ]

    @strawberry.field(
        description="Members visiting or earning significantly above their own baseline"
        " (see the README's rule)."
    )
    async def rising_members(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[RisingMember]:
        size = page_size(first, info.context.settings.max_page_size)
        offset = from_cursor(after) or 0
        async with info.context.transaction() as session:
            rows = await queries.rising_members(session, self.tenant_id, offset, size + 1)
        positions = [(offset + index + 1, row) for index, row in enumerate(rows)]
        return build_connection(
            positions,
            size,
            lambda p: p[0],  # type: ignore[index]
            lambda p: _rising(p[1]),  # type: ignore[index]
            offset > 0,
        )

    @strawberry.field(description="Repeat-visit rate by enrolment cohort (the month the member linked here).")
    async def retention(self, info: Info) -> list[CohortRetention]:
        async with info.context.transaction() as session:
            rows = await queries.retention(session, self.tenant_id)
        return [
            CohortRetention(
                cohort_month=r.cohort_month,
                members=r.members,
                repeat_members=r.repeat_members,
                repeat_rate=r.repeat_rate,
            )
            for r in rows
        ]

    @strawberry.field(description="Repeat-visit rate of members who also redeem elsewhere vs the others.")
    async def coalition_retention(self, info: Info) -> CoalitionRetention:
        async with info.context.transaction() as session:
            rows = await queries.coalition(
                session, self.tenant_id, info.context.settings.insights_k_anonymity
            )
        groups = {
            r.redeems_elsewhere: CoalitionGroup(
                members=r.members, repeat_members=r.repeat_members, repeat_rate=r.repeat_rate
            )
            for r in rows
        }
        elsewhere, others = groups[True], groups[False]
        uplift = (
            None
            if elsewhere.repeat_rate is None or others.repeat_rate is None
            else elsewhere.repeat_rate - others.repeat_rate
        )
        return CoalitionRetention(
            redeems_elsewhere=elsewhere,
            redeems_only_here_or_never=others,
            uplift=uplift,
            suppressed=elsewhere.members is None,
        )

    @strawberry.field(
        description="Per closed month (last 12) and merchant category: how many of this merchant's members "
        "earned or redeemed at other merchants of that category. Never which merchant; null below k members."
    )
    async def cross_merchant(self, info: Info) -> list[CrossCategoryCell]:
        async with info.context.transaction() as session:
            rows = await queries.cross_categories(
                session, self.tenant_id, info.context.settings.insights_k_anonymity, _today(info.context)
            )
        return [
            CrossCategoryCell(
                month=r.month,
                category=r.category.upper(),
                earned_members=r.earned_members,
                redeemed_members=r.redeemed_members,
                suppressed=r.earned_members is None or r.redeemed_members is None,
            )
            for r in rows
        ]


def _redemption_line(group: str, row: Any) -> RewardRedemptionLine:
    return RewardRedemptionLine(
        group=group,
        reward_id=strawberry.ID(to_global_id("Reward", row.reward_id)),
        reward_name=row.reward_name,
        reward_kind=row.reward_kind.upper(),
        redemptions=row.redemptions,
        quantity=row.quantity,
        points=row.points,
        members=row.members,
    )


def _rising(row: Any) -> RisingMember:
    return RisingMember(
        member_number=row.member_number,
        recent_visit_days=row.recent_visit_days,
        baseline_visit_days=row.baseline_visit_days,
        expected_visit_days=row.expected_visit_days,
        recent_points=row.recent_points,
        baseline_points=row.baseline_points,
        reason=row.reason.upper(),
        score=row.score,
    )


async def _tenant_for(context: Context, tenant_code: str | None) -> int:
    """The merchant asked about: a merchant's own (a tenantCode must be its own), the operator's choice."""
    principal = context.principal
    if principal.kind == "merchant":
        assert principal.tenant_id is not None
        if tenant_code is not None:
            async with context.transaction() as session:
                own = await tenant_by_code(session, tenant_code)  # RLS: a merchant sees only itself
            if own is None or own.id != principal.tenant_id:
                raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
        return principal.tenant_id
    if tenant_code is None:
        raise DomainError("TENANT_REQUIRED", "the operator names the merchant (tenantCode)", "tenantCode")
    async with context.transaction() as session:
        tenant = await tenant_by_code(session, tenant_code)
    if tenant is None or tenant.id is None:
        raise DomainError("TENANT_NOT_FOUND", "tenant not found", "tenantCode")
    return tenant.id


@strawberry.type
class InsightsQueries:
    @strawberry.field(description="A merchant's insights on its own members (operator: any one merchant).")
    async def merchant_insights(self, info: Info, tenant_code: str | None = None) -> MerchantInsights:
        info.context.require(INSIGHTS_READ, "merchant", "operator")
        return MerchantInsights(tenant_id=await _tenant_for(info.context, tenant_code))


@strawberry.input
class SegmentDefinitionInput:
    window_months: int
    category: str | None = None
    tag: str | None = None
    min_months: int | None = None
    min_visits: int | None = None
    min_spend: Decimal | None = None

    def to_domain(self) -> segments.SegmentDefinition:
        return segments.SegmentDefinition(
            window_months=self.window_months,
            category=self.category,
            tag=self.tag,
            min_months=self.min_months,
            min_visits=self.min_visits,
            min_spend=self.min_spend,
        )


@strawberry.input
class CreateSegmentInput:
    code: str
    name: str
    definition: SegmentDefinitionInput
    tenant_code: str | None = strawberry.field(default=None, description="Operator: the merchant.")
    idempotency_key: str | None = retry_key()


@strawberry.input
class UpdateSegmentInput:
    code: str
    name: str | None = None
    definition: SegmentDefinitionInput | None = None
    tenant_code: str | None = None
    idempotency_key: str | None = retry_key()


@strawberry.input
class ArchiveSegmentInput:
    code: str
    tenant_code: str | None = None
    idempotency_key: str | None = retry_key()


@strawberry.type
class SegmentPayload:
    segment: CustomerSegmentNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


async def _segment_mutation(
    info: Info, tenant_code: str | None, key: str | None, change: Any
) -> SegmentPayload:
    """Segments are targeting configuration, like earning rules: they need rules:write."""
    info.context.require(RULES_WRITE, "merchant", "operator")

    async def run(session: Any) -> CustomerSegment:
        tenant_id = await _tenant_for(info.context, tenant_code)
        return await made_once_row(
            session, info.context, key, CustomerSegment, lambda: change(session, tenant_id)
        )

    result = await run_in_transaction(info.context, run)
    if isinstance(result, list):
        return SegmentPayload(user_errors=result)
    return SegmentPayload(segment=CustomerSegmentNode.from_model(result))


@strawberry.type
class InsightsMutations:
    @strawberry.mutation(description="A new segment; its members fill in at the next insights refresh.")
    async def create_segment(self, info: Info, input: CreateSegmentInput) -> SegmentPayload:
        definition = input.definition.to_domain()
        return await _segment_mutation(
            info,
            input.tenant_code,
            input.idempotency_key,
            lambda session, tenant: segments.create_segment(
                session, tenant, input.code, input.name, definition
            ),
        )

    @strawberry.mutation(description="Rename a segment or change its definition.")
    async def update_segment(self, info: Info, input: UpdateSegmentInput) -> SegmentPayload:
        definition = None if input.definition is None else input.definition.to_domain()
        return await _segment_mutation(
            info,
            input.tenant_code,
            input.idempotency_key,
            lambda session, tenant: segments.update_segment(
                session, tenant, input.code, input.name, definition
            ),
        )

    @strawberry.mutation(description="Archive a segment: it keeps its record and loses its members.")
    async def archive_segment(self, info: Info, input: ArchiveSegmentInput) -> SegmentPayload:
        return await _segment_mutation(
            info,
            input.tenant_code,
            input.idempotency_key,
            lambda session, tenant: segments.archive_segment(session, tenant, input.code),
        )
