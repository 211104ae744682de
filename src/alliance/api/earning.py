"""GraphQL for earning rules (merchants' rules, operators' campaigns) and event bonuses."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from alliance.api.context import Info
from alliance.api.ids import to_global_id
from alliance.api.ledger import AwardPointsPayload, posted, poster
from alliance.api.mutations import made_once_row, run_in_transaction
from alliance.api.types import Node, UserError, retry_key
from alliance.auth.principal import POINTS_EARN, RULES_WRITE, TENANTS_READ
from alliance.earning import service
from alliance.earning.models import EarningRule
from alliance.ledger import service as ledger


@strawberry.enum
class EarningRuleKind(Enum):
    BASE = "base"
    CATEGORY_RATE = "category_rate"
    TAG_RATE = "tag_rate"
    MULTIPLIER = "multiplier"
    EVENT_BONUS = "event_bonus"


@strawberry.enum
class EarnEvent(Enum):
    ENROLMENT = "ENROLMENT"
    BIRTHDAY = "BIRTHDAY"
    SURVEY = "SURVEY"
    FEEDBACK = "FEEDBACK"
    SUGGESTION = "SUGGESTION"
    SERVICE_EVENT = "SERVICE_EVENT"
    GREEN_SHARING = "GREEN_SHARING"
    REFERRAL = "REFERRAL"


@strawberry.enum
class Funding(Enum):
    MERCHANT = "merchant"
    ALLIANCE = "alliance"


@strawberry.type(name="EarningRule")
class EarningRuleNode(Node):
    code: str
    kind: EarningRuleKind
    config: JSON
    funded_by: Funding
    campaign: bool = strawberry.field(description="An operator's alliance-wide rule.")
    effective_from: datetime
    effective_until: datetime | None

    @classmethod
    def from_model(cls, rule: EarningRule) -> EarningRuleNode:
        assert rule.id is not None
        return cls(
            id=strawberry.ID(to_global_id("EarningRule", rule.id)),
            code=rule.code,
            kind=EarningRuleKind(rule.kind),
            config=rule.config,
            funded_by=Funding(rule.funded_by),
            campaign=rule.tenant_id is None,
            effective_from=rule.effective_from,
            effective_until=rule.effective_until,
        )


@strawberry.input
class DefineEarningRuleInput:
    code: str = strawberry.field(
        description="Stable name shown in every breakdown, e.g. `market-day-double`."
    )
    kind: EarningRuleKind
    config: JSON = strawberry.field(description="See README, 'Earning rules', for each kind's config.")
    funded_by: Funding = Funding.MERCHANT
    effective_from: datetime | None = None
    effective_until: datetime | None = None
    idempotency_key: str | None = retry_key()


@strawberry.type
class EarningRulePayload:
    rule: EarningRuleNode | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class RetireEarningRuleInput:
    code: str
    at: datetime | None = None
    idempotency_key: str | None = retry_key()


@strawberry.input
class AwardEventBonusInput:
    member_number: str
    event: EarnEvent
    idempotency_key: str
    note: str | None = None


def _rule_owner(info: Info) -> int | None:
    """A merchant defines its own rules; the operator's rules are alliance campaigns."""
    principal = info.context.require(RULES_WRITE, "merchant", "operator")
    return principal.tenant_id


@strawberry.type
class EarningQueries:
    @strawberry.field(
        description="The caller's earning rules (every version, or those in force at `at`), "
        "with the alliance campaigns."
    )
    async def earning_rules(self, info: Info, at: datetime | None = None) -> list[EarningRuleNode]:
        principal = info.context.require(TENANTS_READ, "merchant", "operator")
        async with info.context.transaction() as session:
            rows = await service.list_rules(session, principal.tenant_id, at)
        return [EarningRuleNode.from_model(row) for row in rows]


@strawberry.type
class EarningMutations:
    @strawberry.mutation(description="A new version of an earning rule (merchant) or campaign (operator).")
    async def define_earning_rule(self, info: Info, input: DefineEarningRuleInput) -> EarningRulePayload:
        tenant_id = _rule_owner(info)
        config: dict[str, Any] = input.config if isinstance(input.config, dict) else {}

        async def define(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                EarningRule,
                lambda: service.define_rule(
                    session,
                    tenant_id,
                    input.code,
                    input.kind.value,
                    config,
                    input.funded_by.value,
                    input.effective_from,
                    input.effective_until,
                ),
            )

        result = await run_in_transaction(info.context, define)
        if isinstance(result, list):
            return EarningRulePayload(user_errors=result)
        service.forget_cached_rules()  # committed: this process sees it now, other replicas within seconds
        return EarningRulePayload(rule=EarningRuleNode.from_model(result))

    @strawberry.mutation(description="End the version of a rule in force (from `at`, default now).")
    async def retire_earning_rule(self, info: Info, input: RetireEarningRuleInput) -> EarningRulePayload:
        tenant_id = _rule_owner(info)

        async def retire(session):  # type: ignore[no-untyped-def]
            return await made_once_row(
                session,
                info.context,
                input.idempotency_key,
                EarningRule,
                lambda: service.retire_rule(session, tenant_id, input.code, input.at),
            )

        result = await run_in_transaction(info.context, retire)
        if isinstance(result, list):
            return EarningRulePayload(user_errors=result)
        service.forget_cached_rules()
        return EarningRulePayload(rule=EarningRuleNode.from_model(result))

    @strawberry.mutation(description="The bonus of a merchant's event rule (survey, class, referral...).")
    async def award_event_bonus(self, info: Info, input: AwardEventBonusInput) -> AwardPointsPayload:
        principal = info.context.require(POINTS_EARN, "merchant")
        return await posted(
            AwardPointsPayload,
            lambda: ledger.award_event_bonus(
                info.context.services.db,
                poster(principal),
                idempotency_key=input.idempotency_key,
                member_number=input.member_number,
                event=input.event.value,
                note=input.note,
                time_zone=info.context.settings.time_zone,
            ),
        )
