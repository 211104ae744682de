"""A small demo alliance: a supermarket, a hotel and a 4S car-service shop, with stores,
members and API clients whose credentials are printed (and fixed, so the README works verbatim).

Seeding is idempotent: running it again reuses what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from alliance.auth.clients import create_client
from alliance.auth.models import ApiClient
from alliance.catalog.models import Reward, RewardKind
from alliance.catalog.service import RewardSpec, create_reward, set_points_payment
from alliance.db import AccessContext, Database
from alliance.db.database import OPERATOR
from alliance.demo_history import ensure_demo_terms, seed_history
from alliance.earning.service import define_rule, forget_cached_rules, list_rules
from alliance.insights.refresh import refresh as refresh_insights
from alliance.insights.segments import SegmentDefinition, create_segment, segment_by_code
from alliance.members.models import Member
from alliance.members.service import enroll_member
from alliance.tenants.models import TenantCategory
from alliance.tenants.service import create_store, store_by_code, tenant_by_code
from alliance.tenants.service import create_tenant as create_tenant_row

DEMO_TENANTS = [
    (
        "sunrise-mart",
        "Sunrise Supermarket",
        TenantCategory.SUPERMARKET,
        [("SM-001", "Sunrise Mart Riverside", "Hangzhou"), ("SM-002", "Sunrise Mart Old Town", "Tonglu")],
    ),
    ("lakeview-hotel", "Lakeview Hotel", TenantCategory.HOTEL, [("HZ-WL", "Lakeview West Lake", "Hangzhou")]),
    (
        "east-4s",
        "East Auto 4S Service",
        TenantCategory.AUTO_SERVICE,
        [("SVC-1", "East 4S Binjiang", "Hangzhou")],
    ),
]
DEMO_MEMBERS = [
    ("+8613800138001", "Li Wei", "1990-05-17"),
    ("+8613800138002", "Wang Fang", "1986-11-02"),
    ("+8613800138003", "Zhang Min", None),
]
OPERATOR_CREDENTIALS = ("demo-operator", "demo-operator-secret")
DEMO_RULES_FROM = datetime(2026, 1, 1, tzinfo=UTC)


def merchant_credentials(code: str) -> tuple[str, str]:
    return (f"demo-{code}", f"demo-{code}-secret")


@dataclass(frozen=True)
class DemoCredential:
    role: str
    tenant: str | None
    client_id: str
    client_secret: str
    tenant_name: str | None = None


@dataclass(frozen=True)
class DemoMember:
    member_id: int
    member_number: str
    name: str | None
    phone: str


def demo_credentials() -> list[DemoCredential]:
    """The demo's API clients with their fixed (public) credentials: the operator, then each merchant."""
    return [
        DemoCredential("operator", None, *OPERATOR_CREDENTIALS),
        *(
            DemoCredential("merchant", code, *merchant_credentials(code), tenant_name=name)
            for code, name, _, _ in DEMO_TENANTS
        ),
    ]


async def demo_members(db: Database) -> list[DemoMember]:
    """The demo members that exist (after seeding), in the demo's order."""
    phones = [phone for phone, _, _ in DEMO_MEMBERS]
    async with db.transaction(OPERATOR) as session:
        rows = (await session.exec(select(Member).where(col(Member.phone).in_(phones)))).all()
    by_phone = {row.phone: row for row in rows if row.status == "active" and row.id is not None}
    return [
        DemoMember(m.id, m.member_number, m.name, m.phone)  # type: ignore[arg-type]
        for m in (by_phone[phone] for phone in phones if phone in by_phone)
    ]


async def _ensure_client(db: Database, role: str, tenant_id: int | None, creds: tuple[str, str]) -> None:
    async with db.transaction(OPERATOR) as session:
        exists = (await session.exec(select(ApiClient.id).where(ApiClient.client_id == creds[0]))).first()
        if exists is None:
            name = f"demo {role} client"
            await create_client(session, role, name, tenant_id, fixed_credentials=creds)


async def seed_demo(db: Database) -> list[DemoCredential]:
    credentials = [DemoCredential("operator", None, *OPERATOR_CREDENTIALS)]
    await _ensure_client(db, "operator", None, OPERATOR_CREDENTIALS)
    tenant_ids: dict[str, int] = {}
    for code, name, category, stores in DEMO_TENANTS:
        async with db.transaction(OPERATOR) as session:
            tenant = await tenant_by_code(session, code) or await create_tenant_row(
                session, code, name, category
            )
            assert tenant.id is not None
            tenant_ids[code] = tenant.id
            for store_code, store_name, city in stores:
                if await store_by_code(session, tenant.id, store_code) is None:
                    await create_store(session, code, store_code, store_name, city)
        creds = merchant_credentials(code)
        await _ensure_client(db, "merchant", tenant.id, creds)
        credentials.append(DemoCredential("merchant", code, *creds))
        merchant = AccessContext("merchant", tenant_id=tenant.id)
        for index, (phone, member_name, birthday) in enumerate(DEMO_MEMBERS):
            async with db.transaction(merchant) as session:
                await enroll_member(
                    session,
                    phone,
                    f"{code}-C{index + 1:04d}",
                    member_name,
                    date.fromisoformat(birthday) if birthday else None,
                )
        async with db.transaction(merchant) as session:
            await _ensure_rules(session, tenant.id, DEMO_RULES.get(code, []))
            await _ensure_rewards(session, tenant.id, DEMO_REWARDS.get(code, []))
            if code == "sunrise-mart":  # "points offset days": 100 points pay 1 CNY, up to half a bill
                await set_points_payment(
                    session, tenant.id, points_per_unit=100, max_share=Decimal("0.5"), enabled=True
                )
    forget_cached_rules()
    await ensure_demo_terms(db, DEMO_RULES_FROM)
    await seed_history(
        db,
        tenant_ids,
        {code: merchant_credentials(code)[0] for code in tenant_ids},
        [member.member_number for member in await demo_members(db)],
        db.settings.time_zone,
    )
    await _ensure_segments(db, tenant_ids)
    # Insights from the demo history (nothing is in flight while the demo seeds: no lag needed).
    await refresh_insights(db, db.settings.model_copy(update={"insights_refresh_lag_seconds": 0}))
    return credentials


# A segment a merchant would start with: members who came back at least twice in two months.
DEMO_SEGMENTS: dict[str, list[tuple[str, str, SegmentDefinition]]] = {
    "sunrise-mart": [("regulars", "Regulars", SegmentDefinition(window_months=2, min_visits=2))],
}


async def _ensure_segments(db: Database, tenant_ids: dict[str, int]) -> None:
    for tenant_code, segments in DEMO_SEGMENTS.items():
        tenant_id = tenant_ids[tenant_code]
        async with db.transaction(AccessContext("merchant", tenant_id=tenant_id)) as session:
            for code, name, definition in segments:
                if await segment_by_code(session, tenant_id, code) is None:
                    await create_segment(session, tenant_id, code, name, definition)


# The supermarket's levers: 1 point per CNY, double points on the county town's market day
# (every 5 days), baby formula 2×, GREEN points on green-labelled goods, a survey bonus and a
# birthday gift pack. The hotel and the 4S shop earn at their own rates.
DEMO_RULES: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "sunrise-mart": [
        ("base", "base", {"rate": "1", "rounding": "floor", "stacking": "highest", "capPerMemberDay": 20000}),
        (
            "market-day-double",
            "multiplier",
            {"multiplier": "2", "schedule": {"every": {"anchor": "2026-11-04", "days": 5}}},
        ),
        ("baby-formula-2x", "category_rate", {"category": "baby_formula", "multiplier": "2"}),
        ("green-label", "tag_rate", {"tag": "green", "asset": "GREEN", "rate": "0.1"}),
        (
            "survey-bonus",
            "event_bonus",
            {"event": "SURVEY", "points": 50, "limit": {"count": 1, "per": "month"}},
        ),
        (
            "birthday-pack",
            "event_bonus",
            {"event": "BIRTHDAY", "points": 500, "limit": {"count": 1, "per": "year"}},
        ),
    ],
    "lakeview-hotel": [("base", "base", {"rate": "2", "rounding": "floor"})],
    "east-4s": [
        ("base", "base", {"rate": "1", "rounding": "floor"}),
        (
            "car-care-talk",
            "event_bonus",
            {"event": "SERVICE_EVENT", "points": 200, "limit": {"count": 2, "per": "year"}},
        ),
    ],
}


# The hotel's upgrades and the 4S shop's maintenance, as their partners' programs describe them.
DEMO_REWARDS: dict[str, list[RewardSpec]] = {
    "lakeview-hotel": [
        RewardSpec(RewardKind.UPGRADE, "Room upgrade", 3000, "One category up, subject to availability"),
        RewardSpec(RewardKind.UPGRADE, "Late checkout until 16:00", 800),
        RewardSpec(RewardKind.SERVICE, "Airport pickup", 4000, stock=20),
        RewardSpec(RewardKind.GOODS, "Afternoon tea for two", 1200, min_tier="SILVER"),
    ],
    "east-4s": [
        RewardSpec(RewardKind.SERVICE, "Basic maintenance (worth 500 CNY)", 5000),
        RewardSpec(
            RewardKind.SERVICE,
            "Air-conditioning clean",
            6000,
            "Anniversary month: 5,000 points",
            sale_points=5000,
            sale_starts_at=datetime(2026, 11, 1, tzinfo=UTC),
            sale_ends_at=datetime(2026, 12, 1, tzinfo=UTC),
        ),
        RewardSpec(RewardKind.GOODS, "A tyre", 10000, stock=40),
        RewardSpec(RewardKind.COUPON, "1,000 CNY insurance voucher", 20000, per_member_limit=1),
    ],
    "sunrise-mart": [
        RewardSpec(RewardKind.GOODS, "5 L peanut oil", 1500, stock=200),
        RewardSpec(RewardKind.GOODS, "Mid-Autumn gift box", 2500, stock=100),
        RewardSpec(RewardKind.GOODS, "Reusable shopping bag", 300, asset="GREEN"),
    ],
}


async def _ensure_rewards(session: AsyncSession, tenant_id: int, rewards: list[RewardSpec]) -> None:
    existing = {
        row.name for row in (await session.exec(select(Reward).where(Reward.tenant_id == tenant_id))).all()
    }
    for spec in rewards:
        if spec.name not in existing:
            await create_reward(session, tenant_id, spec)


async def _ensure_rules(
    session: AsyncSession, tenant_id: int, rules: list[tuple[str, str, dict[str, Any]]]
) -> None:
    existing = {
        rule.code for rule in await list_rules(session, tenant_id, None) if rule.tenant_id == tenant_id
    }
    for code, kind, config in rules:
        if code not in existing:
            await define_rule(session, tenant_id, code, kind, config, "merchant", DEMO_RULES_FROM, None)
