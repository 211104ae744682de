"""GraphQL for targeted offers: merchants create, list, withdraw and measure them; members see
the offers made to them (`myOffers`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum

import strawberry

from alliance.api.context import Info
from alliance.api.ids import from_cursor, to_global_id
from alliance.api.mutations import made_once_row, run_in_transaction
from alliance.api.types import Connection, Node, UserError, build_connection, page_size, retry_key
from alliance.auth.principal import RULES_WRITE, TENANTS_READ
from alliance.earning import service as earning_rules
from alliance.errors import DomainError
from alliance.offers import results, service
from alliance.offers.models import Offer


@strawberry.enum
class OfferKind(Enum):
    CATEGORY = "category_rate"
    TAG = "tag_rate"
    EVERY_PURCHASE = "multiplier"


@strawberry.enum
class OfferStatus(Enum):
    SCHEDULED = "scheduled"
    LIVE = "live"
    ENDED = "ended"
    WITHDRAWN = "withdrawn"


def _target(offer: Offer, kind: str) -> str | None:
    return offer.target if offer.kind == kind else None


@strawberry.type(
    name="Offer", description="A merchant's earning bonus for the members of one of its segments."
)
class OfferNode(Node):
    code: str = strawberry.field(
        description="Also the code of its earning rule and breakdown line `offer:<code>`."
    )
    segment_code: str
    title: str
    description: str
    kind: OfferKind
    category: str | None
    tag: str | None
    multiplier: Decimal
    starts_at: datetime
    ends_at: datetime
    withdrawn_at: datetime | None
    status: OfferStatus

    @classmethod
    def from_view(cls, view: service.OfferView) -> OfferNode:
        offer = view.offer
        assert offer.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Offer", offer.id)),
            code=offer.code,
            segment_code=view.segment_code,
            title=offer.title,
            description=offer.description,
            kind=OfferKind(offer.kind),
            category=_target(offer, "category_rate"),
            tag=_target(offer, "tag_rate"),
            multiplier=Decimal(offer.multiplier),
            starts_at=offer.starts_at,
            ends_at=offer.ends_at,
            withdrawn_at=offer.withdrawn_at,
            status=OfferStatus(service.status_of(offer, datetime.now(UTC))),
        )


@strawberry.type(description="An offer as its member sees it: no segment, the merchant's name.")
class MemberOffer:
    id: strawberry.ID
    merchant_name: str
    title: str
    description: str
    kind: OfferKind
    category: str | None
    tag: str | None
    multiplier: Decimal
    starts_at: datetime
    ends_at: datetime

    @classmethod
    def from_view(cls, view: service.OfferView) -> MemberOffer:
        offer = view.offer
        assert offer.id is not None
        return cls(
            id=strawberry.ID(to_global_id("Offer", offer.id)),
            merchant_name=view.merchant_name,
            title=offer.title,
            description=offer.description,
            kind=OfferKind(offer.kind),
            category=_target(offer, "category_rate"),
            tag=_target(offer, "tag_rate"),
            multiplier=Decimal(offer.multiplier),
            starts_at=offer.starts_at,
            ends_at=offer.ends_at,
        )


@strawberry.type(
    name="OfferResults",
    description="How an offer did. Window: start to the earliest of end, withdrawal and now; baseline: "
    "the equally long window before the start. Spend compares the segment members' own spend at this "
    "merchant in the two windows; reversed earns count nowhere.",
)
class OfferResultsNode:
    window_start: datetime
    window_end: datetime
    baseline_start: datetime
    segment_size: int = strawberry.field(description="Members of the segment now.")
    members_earned: int = strawberry.field(description="Segment members who earned a bonus under the offer.")
    uptake: Decimal = strawberry.field(description="membersEarned / segmentSize, 4 decimals.")
    spend_in_window: Decimal
    spend_in_baseline: Decimal
    extra_spend: Decimal = strawberry.field(description="spendInWindow - spendInBaseline.")
    points_cost: int = strawberry.field(description="The offer's breakdown lines summed: the bonus it paid.")
    merchant_funded_points: int
    alliance_funded_points: int
    refreshed_at: datetime | None = strawberry.field(
        description="When the insights refresh measured it; null: measured now (not refreshed yet)."
    )


@strawberry.input
class CreateOfferInput:
    segment_code: str
    title: str = strawberry.field(description="What members see, e.g. `Dresses: double points`.")
    description: str = ""
    kind: OfferKind
    category: str | None = strawberry.field(default=None, description="For kind CATEGORY.")
    tag: str | None = strawberry.field(default=None, description="For kind TAG.")
    multiplier: Decimal = strawberry.field(description='Above 1, at most 10, e.g. "2".')
    starts_at: datetime
    ends_at: datetime
    code: str | None = strawberry.field(
        default=None, description="Optional slug; also the earning rule's code (default offer-<random>)."
    )
    idempotency_key: str | None = retry_key()


@strawberry.input
class WithdrawOfferInput:
    code: str
    idempotency_key: str | None = retry_key()


@strawberry.type
class OfferPayload:
    offer: OfferNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class OfferResultsPayload:
    results: OfferResultsNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


def _merchant(info: Info, scope: str) -> int:
    principal = info.context.require(scope, "merchant")
    assert principal.tenant_id is not None
    return principal.tenant_id


async def _node(info: Info, offer: Offer) -> OfferNode:
    assert offer.id is not None
    async with info.context.transaction() as session:
        view = await service.get_offer(session, offer.id)
    assert view is not None
    return OfferNode.from_view(view)


@strawberry.type
class OfferQueries:
    @strawberry.field(
        description="The calling merchant's offers (every merchant's, for the operator), newest first."
    )
    async def offers(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[OfferNode]:
        principal = info.context.require(TENANTS_READ, "merchant", "operator")
        size = page_size(first, info.context.settings.max_page_size)
        after_id = from_cursor(after)
        async with info.context.transaction() as session:
            rows = await service.list_offers(session, principal.tenant_id, after_id, size + 1)
        return build_connection(
            rows,
            size,
            lambda view: view.offer.id,
            OfferNode.from_view,
            after_id is not None,  # type: ignore[attr-defined]
        )

    @strawberry.field(
        description="The offers made to the calling member now (those of segments they are in)."
    )
    async def my_offers(self, info: Info) -> list[MemberOffer]:
        principal = info.context.require(TENANTS_READ, "member")
        assert principal.member_id is not None
        async with info.context.transaction() as session:
            views = await service.member_offers(session, principal.member_id, datetime.now(UTC))
        return [MemberOffer.from_view(view) for view in views]

    @strawberry.field(description="How one of the calling merchant's offers did, measured now.")
    async def offer_results(self, info: Info, code: str) -> OfferResultsPayload:
        tenant_id = _merchant(info, TENANTS_READ)
        try:
            async with info.context.transaction() as session:
                measured = await results.offer_results(session, tenant_id, code, datetime.now(UTC))
        except DomainError as error:
            return OfferResultsPayload(
                user_errors=[UserError(field=error.field, code=error.code, message=error.message)]
            )
        return OfferResultsPayload(
            results=OfferResultsNode(
                **{
                    name: getattr(measured, name)
                    for name in results.OfferResults.__slots__  # type: ignore[attr-defined]
                }
            )
        )


@strawberry.type
class OfferMutations:
    @strawberry.mutation(
        description="Make an offer to one of the merchant's segments: an earning rule restricted to the "
        "segment over the window, with the title and text its members see."
    )
    async def create_offer(self, info: Info, input: CreateOfferInput) -> OfferPayload:
        tenant_id = _merchant(info, RULES_WRITE)
        target = input.category if input.kind is OfferKind.CATEGORY else input.tag
        if input.kind is OfferKind.EVERY_PURCHASE:
            target = input.category or input.tag
        draft = service.OfferDraft(
            segment_code=input.segment_code,
            title=input.title,
            description=input.description,
            kind=input.kind.value,
            target=target,
            multiplier=input.multiplier,
            starts_at=input.starts_at,
            ends_at=input.ends_at,
            code=input.code,
        )

        async def create(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                Offer,
                lambda: service.create_offer(session, tenant_id, draft),
            )

        result = await run_in_transaction(info.context, create)
        if isinstance(result, list):
            return OfferPayload(user_errors=result)
        earning_rules.forget_cached_rules()  # committed: the rule applies in this process now
        return OfferPayload(offer=await _node(info, result))

    @strawberry.mutation(description="End an offer now (a scheduled one never starts); points earned stay.")
    async def withdraw_offer(self, info: Info, input: WithdrawOfferInput) -> OfferPayload:
        tenant_id = _merchant(info, RULES_WRITE)

        async def withdraw(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                Offer,
                lambda: service.withdraw_offer(session, tenant_id, input.code),
            )

        result = await run_in_transaction(info.context, withdraw)
        if isinstance(result, list):
            return OfferPayload(user_errors=result)
        earning_rules.forget_cached_rules()
        return OfferPayload(offer=await _node(info, result))
