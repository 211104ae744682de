"""GraphQL for the operator's insights: points flows, liability, merchant health (operator only)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Annotated
from zoneinfo import ZoneInfo

import strawberry

from alliance.api.context import Info
from alliance.api.ledger import BigInt
from alliance.api.tenants import TenantCategory
from alliance.auth.principal import SETTLEMENT_READ
from alliance.insights import operator
from alliance.tenants.models import TenantCategory as TenantCategoryModel


@strawberry.enum
class FlowPeriod(Enum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@strawberry.enum
class FlowGrouping(Enum):
    MERCHANT = "merchant"
    CATEGORY = "category"


@strawberry.enum
class BreakageRateBasis(Enum):
    ISSUER = "issuer"
    ALLIANCE = "alliance"


def _category(value: str | None) -> TenantCategoryModel | None:
    return None if value is None else TenantCategoryModel(value)


@strawberry.type(description="A merchant's (or category's) points in one period, as settlement counts them.")
class PointFlowTotal:
    period_start: date = strawberry.field(
        description="First business day of the period (alliance time zone)."
    )
    party_code: str | None = strawberry.field(
        description="Merchant code; ALLIANCE for points the alliance issued; null when grouped by category."
    )
    category: TenantCategory | None
    issued: BigInt = strawberry.field(description="Points issued (earn, award, compensate) minus clawbacks.")
    redeemed: BigInt = strawberry.field(
        description="Points redeemed at it, whoever issued them, net of refunds."
    )
    cross_redeemed: BigInt = strawberry.field(
        description="Of those, points other merchants issued: its settlement receivable."
    )
    redeemed_elsewhere: BigInt = strawberry.field(
        description="Points it issued redeemed at other merchants: its settlement payable."
    )
    breakage: BigInt = strawberry.field(description="Points it issued that expired.")


@strawberry.type(description="Net points issued by one party and redeemed at another in one period.")
class PointFlowPair:
    period_start: date
    issuer_code: str | None
    issuer_category: TenantCategory | None
    redeemer_code: str | None
    redeemer_category: TenantCategory | None
    points: BigInt


@strawberry.type
class MoneyAmount:
    points: BigInt
    value: Decimal = strawberry.field(
        description="Points at the asset's settlement value in force, to the cent."
    )


@strawberry.type
class IssuerLiability:
    issuer_code: str = strawberry.field(description="Merchant code, or ALLIANCE for its own points.")
    category: TenantCategory | None
    outstanding: MoneyAmount
    lots: BigInt
    breakage_rate: Decimal = strawberry.field(
        description="Share of points that ended by expiring (vs redeemed) in the trailing 12 months,"
        " 4 places."
    )
    rate_basis: BreakageRateBasis = strawberry.field(
        description="ISSUER: its own history; ALLIANCE: too little of its own, the alliance-wide share."
    )
    expected_breakage: MoneyAmount


@strawberry.type
class ExpiryMonthLiability:
    month: date | None = strawberry.field(
        description="Expiry month (first day); null: points that never expire."
    )
    outstanding: MoneyAmount
    expected_breakage: MoneyAmount


@strawberry.type(description="What the alliance owes its members: points outstanding in unexpired lots.")
class Liability:
    asset: str
    as_of: date
    currency: str
    settlement_value: Decimal
    outstanding: MoneyAmount
    expected_breakage: MoneyAmount
    alliance_breakage_rate: Decimal
    by_issuer: list[IssuerLiability]
    by_expiry_month: list[ExpiryMonthLiability]
    refreshed_at: datetime | None = strawberry.field(description="When the summaries were last refreshed.")


@strawberry.type(description="Whole days from a lot's issue to its redemption, weighted by points.")
class RedemptionLatency:
    median_days: int | None
    p90_days: int | None
    points: BigInt = strawberry.field(description="Net points redeemed that the figures are computed from.")


@strawberry.type
class MerchantHealth:
    tenant_code: str
    category: TenantCategory
    issued: BigInt
    redeemed: BigInt
    redemption_ratio: Decimal | None = strawberry.field(description="redeemed / issued, 4 places.")
    issued_share: Decimal | None = strawberry.field(description="Share of the alliance's issuance, 4 places.")
    redeemed_share: Decimal | None = strawberry.field(description="Share of the alliance's redemptions.")
    settlement_lines: int = strawberry.field(description="Settlement lines it is a party to.")
    disputes: int = strawberry.field(description="Disputes raised on those lines.")
    dispute_rate: Decimal | None = strawberry.field(description="disputes / settlement lines, 4 places.")
    latency_as_issuer: RedemptionLatency = strawberry.field(
        description="Its points, redeemed anywhere (all redemptions to date)."
    )
    latency_as_redeemer: RedemptionLatency = strawberry.field(
        description="Points redeemed at it, whoever issued them (all redemptions to date)."
    )


def _money(amount: operator.Money) -> MoneyAmount:
    return MoneyAmount(points=BigInt(amount.points), value=amount.value)


def _latency(latency: operator.Latency) -> RedemptionLatency:
    return RedemptionLatency(
        median_days=latency.median_days, p90_days=latency.p90_days, points=BigInt(latency.points)
    )


DEFAULT_SPAN_DAYS = {FlowPeriod.DAY: 31, FlowPeriod.WEEK: 182, FlowPeriod.MONTH: 365}
# Pairs of every merchant: the last three periods.
DEFAULT_PAIR_SPAN_DAYS = {FlowPeriod.DAY: 3, FlowPeriod.WEEK: 21, FlowPeriod.MONTH: 91}


def _span(
    info: Info,
    from_: date | None,
    to: date | None,
    period: FlowPeriod = FlowPeriod.MONTH,
    defaults: dict[FlowPeriod, int] = DEFAULT_SPAN_DAYS,
) -> tuple[date, date]:
    """[from, to) in business days; by default the periods starting in the last month (days), half
    year (weeks) or year (months) up to today."""
    today = datetime.now(ZoneInfo(info.context.settings.time_zone)).date()
    end = to or today + timedelta(days=1)
    return from_ or end - timedelta(days=defaults[period]), end


FromArg = Annotated[date | None, strawberry.argument(name="from")]


@strawberry.type
class AllianceInsightQueries:
    @strawberry.field(
        description="Per period and merchant (or category): issued, redeemed, cross-redeemed, redeemed"
        " elsewhere, breakage; the periods starting in [from, to) (business days, alliance time zone),"
        " at most 40; default: the last 31 days, 26 weeks or 12 months (operator)."
    )
    async def point_flow_totals(
        self,
        info: Info,
        from_: FromArg = None,
        to: date | None = None,
        asset: str = "POINTS",
        period: FlowPeriod = FlowPeriod.MONTH,
        group_by: FlowGrouping = FlowGrouping.MERCHANT,
    ) -> list[PointFlowTotal]:
        info.context.require(SETTLEMENT_READ, "operator")
        start, end = _span(info, from_, to, period)
        async with info.context.transaction() as session:
            rows = await operator.flow_totals(session, asset, start, end, period.value, group_by.value)
        return [
            PointFlowTotal(
                period_start=r.period_start,
                party_code=r.code,
                category=_category(r.category),
                issued=BigInt(r.issued),
                redeemed=BigInt(r.redeemed),
                cross_redeemed=BigInt(r.cross_redeemed),
                redeemed_elsewhere=BigInt(r.redeemed_elsewhere),
                breakage=BigInt(r.breakage),
            )
            for r in rows
        ]

    @strawberry.field(
        description="Net points redeemed per period from issuer to redeemer (merchants or categories);"
        " cross-merchant pairs are settlement's lines, includeOwn adds points redeemed where issued,"
        " tenantCode keeps one merchant's pairs; periods as pointFlowTotals, but pairs of every merchant"
        " cover at most 3 periods (operator)."
    )
    async def point_flow_pairs(
        self,
        info: Info,
        from_: FromArg = None,
        to: date | None = None,
        asset: str = "POINTS",
        period: FlowPeriod = FlowPeriod.MONTH,
        group_by: FlowGrouping = FlowGrouping.MERCHANT,
        include_own: bool = False,
        tenant_code: str | None = None,
    ) -> list[PointFlowPair]:
        info.context.require(SETTLEMENT_READ, "operator")
        every_pair = group_by == FlowGrouping.MERCHANT and tenant_code is None
        start, end = _span(
            info, from_, to, period, DEFAULT_PAIR_SPAN_DAYS if every_pair else DEFAULT_SPAN_DAYS
        )
        async with info.context.transaction() as session:
            rows = await operator.flow_pairs(
                session, asset, start, end, period.value, group_by.value, include_own, tenant_code
            )
        return [
            PointFlowPair(
                period_start=r.period_start,
                issuer_code=r.issuer_code,
                issuer_category=_category(r.issuer_category),
                redeemer_code=r.redeemer_code,
                redeemer_category=_category(r.redeemer_category),
                points=BigInt(r.points),
            )
            for r in rows
        ]

    @strawberry.field(
        description="Points outstanding by issuer and expiry month, valued, with expected breakage"
        " (operator)."
    )
    async def points_liability(self, info: Info, asset: str = "POINTS") -> Liability:
        info.context.require(SETTLEMENT_READ, "operator")
        async with info.context.transaction() as session:
            report = await operator.liability(session, asset, info.context.settings.time_zone)
        return Liability(
            asset=report.asset,
            as_of=report.as_of,
            currency=report.currency,
            settlement_value=report.settlement_value,
            outstanding=_money(report.outstanding),
            expected_breakage=_money(report.expected_breakage),
            alliance_breakage_rate=report.alliance_breakage_rate,
            by_issuer=[
                IssuerLiability(
                    issuer_code=i.issuer_code,
                    category=_category(i.category),
                    outstanding=_money(i.outstanding),
                    lots=BigInt(i.lots),
                    breakage_rate=i.breakage_rate,
                    rate_basis=BreakageRateBasis(i.rate_basis),
                    expected_breakage=_money(i.expected_breakage),
                )
                for i in report.by_issuer
            ],
            by_expiry_month=[
                ExpiryMonthLiability(
                    month=m.month,
                    outstanding=_money(m.outstanding),
                    expected_breakage=_money(m.expected_breakage),
                )
                for m in report.by_expiry_month
            ],
            refreshed_at=report.refreshed_at,
        )

    @strawberry.field(
        description="Per merchant: issued vs redeemed over the months starting in [from, to), dispute"
        " rate over the settlement batches starting then, redemption latency to date (operator)."
    )
    async def merchant_health(
        self,
        info: Info,
        from_: FromArg = None,
        to: date | None = None,
        asset: str = "POINTS",
        tenant_code: str | None = None,
    ) -> list[MerchantHealth]:
        info.context.require(SETTLEMENT_READ, "operator")
        start, end = _span(info, from_, to)
        async with info.context.transaction() as session:
            rows = await operator.merchant_health(
                session, asset, start, end, info.context.settings.time_zone, tenant_code
            )
        return [
            MerchantHealth(
                tenant_code=r.code,
                category=TenantCategoryModel(r.category),
                issued=BigInt(r.issued),
                redeemed=BigInt(r.redeemed),
                redemption_ratio=r.redemption_ratio,
                issued_share=r.issued_share,
                redeemed_share=r.redeemed_share,
                settlement_lines=r.settlement_lines,
                disputes=r.disputes,
                dispute_rate=r.dispute_rate,
                latency_as_issuer=_latency(r.latency_as_issuer),
                latency_as_redeemer=_latency(r.latency_as_redeemer),
            )
            for r in rows
        ]
