"""GraphQL for points flow between merchant categories (operator)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import strawberry

from alliance.api.context import Info
from alliance.api.tenants import TenantCategory
from alliance.auth.principal import SETTLEMENT_READ
from alliance.settlement import flows
from alliance.tenants.models import TenantCategory as TenantCategoryModel


@strawberry.type
class CategoryFlow:
    period_start: datetime
    issuer_category: TenantCategory
    redeemer_category: TenantCategory
    points: int = strawberry.field(
        description="Points issued in the first category redeemed in the second, net of refunds."
    )


@strawberry.type
class FlowQueries:
    @strawberry.field(
        description="Points redeemed across merchant categories, per settled period with a batch"
        " starting in [from, to) (operator; default: the last year)."
    )
    async def points_flow(
        self,
        info: Info,
        from_: Annotated[date | None, strawberry.argument(name="from")] = None,
        to: date | None = None,
        asset: str = "POINTS",
    ) -> list[CategoryFlow]:
        info.context.require(SETTLEMENT_READ, "operator")
        today = datetime.now(ZoneInfo(info.context.settings.time_zone)).date()
        end = to or today + timedelta(days=1)
        start = from_ or end - timedelta(days=366)
        async with info.context.transaction() as session:
            rows = await flows.category_flows(session, asset, start, end, info.context.settings.time_zone)
        return [
            CategoryFlow(
                period_start=row.period_start,
                issuer_category=TenantCategoryModel(row.issuer_category),
                redeemer_category=TenantCategoryModel(row.redeemer_category),
                points=row.points,
            )
            for row in rows
        ]
